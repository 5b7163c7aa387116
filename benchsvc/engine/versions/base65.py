"""base65: v6.5-rc2 with the large-anon-folio series, before "Optimize large folio interaction with deferred split".

``zap_pte_range()`` walks one PTE at a time and calls ``page_remove_rmap()`` for every page; only PMD-order
anon folios are eligible for the deferred split queue (``folio_test_pmd_mappable()`` in ``page_remove_rmap``).
Source: v6.5-rc2 (mm/memory.c, mm/rmap.c), as quoted in the v1 cover letter
<20230717143110.260162-1-ryan.roberts@arm.com> (K§1.2, K§2.4, K§2.5).
"""

from __future__ import annotations

from benchsvc.engine.gather import MmuGather
from benchsvc.engine.model import (
    ENTIRELY_MAPPED,
    FOLIO_PAGES_MAPPED,
    HPAGE_PMD_NR,
    HPAGE_PMD_ORDER,
    ZapEngine,
)


class Base65(ZapEngine):
    id = "base65"
    title = "v6.5-rc2 + large anon folios, before the series"
    source = "v6.5-rc2 (mm/memory.c zap_pte_range, mm/rmap.c page_remove_rmap)"
    date = "2023-07-16"

    #: lowest folio order ``page_remove_rmap()`` may queue for deferred split (PMD order only before patch 1/3)
    ds_min_order = HPAGE_PMD_ORDER

    def zap_pte_range(self, tlb: MmuGather, addr: int, end: int) -> int:
        c = self.counters
        c.ptl_acquisitions += 1
        pte = self.pte
        mapcount = self.mapcount
        page_folio = self.page_folio
        f_emc = self.f_emc
        page_remove_rmap = self.page_remove_rmap
        tlb_remove_page = tlb.tlb_remove_page
        force_flush = False
        cleared = 0
        while addr < end:
            ent = pte[addr]
            if ent == 0:
                addr += 1
                continue
            if ent > 0:
                pfn = ent - 1
                pte[addr] = 0  # ptep_get_and_clear_full()
                cleared += 1  # tlb_remove_tlb_entry()
                page_remove_rmap(pfn)
                if mapcount[pfn] + 1 + f_emc[page_folio[pfn]] + 1 < 0:  # page_mapcount(page) < 0
                    c.bad_pte += 1
                if tlb_remove_page(pfn):
                    force_flush = True
                    addr += 1
                    break
            else:
                self.zap_nonpresent(addr)
            addr += 1
        if cleared:
            tlb.cleared_ptes = True
            c.ptes_cleared += cleared
            self.rss_anon -= cleared  # add_mm_rss_vec()
        if force_flush:
            tlb.tlb_flush_mmu_tlbonly()
            tlb.tlb_flush_mmu()
        return addr

    def page_remove_rmap(self, pfn: int) -> None:
        """``page_remove_rmap(page, vma, compound=false)`` (v6.5)."""
        c = self.counters
        c.rmap_calls += 1
        c.mapcount_atomics += 1
        mapcount = self.mapcount
        left = mapcount[pfn] - 1
        mapcount[pfn] = left
        if left >= 0:  # atomic_add_negative() false: still mapped elsewhere
            return
        f = self.page_folio[pfn]
        if self.f_nr[f] > 1:
            nrpm = self.f_nrpm
            mapped = nrpm[f] - 1  # atomic_dec_return_relaxed(mapped)
            nrpm[f] = mapped
            c.nr_pages_mapped_atomics += 1
            if mapped >= ENTIRELY_MAPPED:
                return
        c.stat_updates += 1  # __lruvec_stat_mod_folio(NR_ANON_MAPPED, -1)
        if self.f_order[f] >= self.ds_min_order:  # folio_test_{pmd_mappable,large} && folio_test_anon
            self.deferred_split_folio(f)  # !compound: always

    def remove_rmap_pmd(self, f: int) -> None:
        """``page_remove_rmap(page, vma, compound=true)`` (v6.5)."""
        c = self.counters
        c.rmap_calls += 1
        self.f_emc[f] -= 1
        c.mapcount_atomics += 1
        if self.f_emc[f] != -1:
            return
        self.f_nrpm[f] -= ENTIRELY_MAPPED
        c.nr_pages_mapped_atomics += 1
        nr_pmdmapped = HPAGE_PMD_NR
        nr = nr_pmdmapped - (self.f_nrpm[f] & FOLIO_PAGES_MAPPED)
        c.stat_updates += 1  # NR_ANON_THPS
        if nr:
            c.stat_updates += 1  # NR_ANON_MAPPED
            if nr < nr_pmdmapped and self.f_order[f] >= self.ds_min_order:
                self.deferred_split_folio(f)
