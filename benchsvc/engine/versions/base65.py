"""base65: v6.5-rc2 with the large-anon-folio series, before "Optimize large folio interaction with deferred split".

``zap_pte_range()`` walks one PTE at a time and calls ``page_remove_rmap()`` for every page; only PMD-order
anon folios are eligible for the deferred split queue (``folio_test_pmd_mappable()`` in ``page_remove_rmap``).
Source: v6.5-rc2 (mm/memory.c, mm/rmap.c), as quoted in the v1 cover letter
<20230717143110.260162-1-ryan.roberts@arm.com> (docs/kernel-history.md#base65).
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
        addr, cleared, force_flush = self.zap_ptes_one_by_one(tlb, addr, end)
        if cleared:
            tlb.cleared_ptes = True
            c.ptes_cleared += cleared
            self.rss_anon -= cleared  # add_mm_rss_vec()
        if force_flush:
            # tlb_flush_mmu_tlbonly() under the PTL, then tlb_flush_mmu() after the unlock: one tlb_flush_mmu()
            tlb.tlb_flush_mmu()
        return addr

    def zap_ptes_one_by_one(self, tlb: MmuGather, addr: int, end: int) -> tuple[int, int, bool]:
        """The v6.5 loop of ``zap_pte_range()`` over ``[addr, end)``: per present PTE, clear it,
        ``page_remove_rmap(page, vma, false)``, check ``page_mapcount() < 0`` and gather the page (one slot);
        stop after the page that fills the gather. Returns (next address, PTEs cleared, gather full).

        Every page is still handled on its own, in order; only the per-page function calls are folded into
        this loop (``page_remove_rmap()`` and ``__tlb_remove_page()``, whose slot accounting is kept in
        ``room`` and written back), and the counters are summed locally and added once at the end.
        """
        c = self.counters
        pte = self.pte
        mapcount = self.mapcount
        page_folio = self.page_folio
        f_emc = self.f_emc
        f_nr = self.f_nr
        nrpm = self.f_nrpm
        f_order = self.f_order
        f_queued = self.f_queued
        ds_min_order = self.ds_min_order
        deferred_split_folio = self.deferred_split_folio
        gathered = tlb.entries
        room = tlb.active_max - tlb.active_nr
        cleared = nrpm_atomics = stat_updates = ds_early = bad = 0
        full = False
        f = large = eligible = low = -1  # the folio of the previous page, and what depends only on it
        while addr < end:
            ent = pte[addr]
            if ent <= 0:
                if ent < 0:
                    self.zap_nonpresent(addr)
                addr += 1
                continue
            pfn = ent - 1
            pte[addr] = 0  # ptep_get_and_clear_full()
            cleared += 1  # tlb_remove_tlb_entry()
            addr += 1
            if page_folio[pfn] != f:
                f = page_folio[pfn]
                large = f_nr[f] > 1
                eligible = f_order[f] >= ds_min_order  # folio_test_{pmd_mappable,large} && folio_test_anon
                low = -2 - f_emc[f]  # page_mapcount() = _mapcount + 1 + entire_mapcount + 1 < 0
            # page_remove_rmap(): atomic_add_negative(-1, &page->_mapcount) ...
            left = mapcount[pfn] - 1
            mapcount[pfn] = left
            if left < 0:  # ... true: the page is no longer mapped anywhere
                mapped = 0
                if large:
                    mapped = nrpm[f] - 1  # atomic_dec_return_relaxed(&folio->_nr_pages_mapped)
                    nrpm[f] = mapped
                    nrpm_atomics += 1
                if mapped < ENTIRELY_MAPPED:  # else still PMD-mapped: nothing more to do
                    stat_updates += 1  # __lruvec_stat_mod_folio(NR_ANON_MAPPED, -1)
                    if eligible:
                        if f_queued[f]:  # deferred_split_folio(): the lockless list_empty() early return
                            ds_early += 1
                        else:
                            deferred_split_folio(f)
            if left < low:  # page_mapcount(page) < 0
                bad += 1
            # __tlb_remove_page(): one slot per page
            gathered.append(pfn)
            room -= 1
            if room == 0:
                tlb.active_nr = tlb.active_max
                if not tlb.tlb_next_batch():
                    full = True
                    break
                room = tlb.active_max - tlb.active_nr
        if not full:
            tlb.active_nr = tlb.active_max - room
        c.rmap_calls += cleared
        c.mapcount_atomics += cleared
        c.nr_pages_mapped_atomics += nrpm_atomics
        c.stat_updates += stat_updates
        c.ds_calls += ds_early
        c.bad_pte += bad
        return addr, cleared, full

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
