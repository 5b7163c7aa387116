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
    NR_BITS,
    ZERO_RUNS,
    ZapEngine,
    dec_mapcounts,
    pte_run,
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

        Every page is still handled on its own, in order; what is folded is Python's per-page overhead: a run
        of PTEs that map consecutive pages of one folio is handled as one list operation per step (each page's
        ``_mapcount`` decremented, the pages that became unmapped counted, each taking its
        ``_nr_pages_mapped`` decrement, stat update and deferred-split call in turn), the run being cut at
        the page that fills the gather. The gathered pages of a run are kept as one ``pfn << NR_BITS | n``
        entry (still one slot per page); the counters are summed locally and added once at the end.
        """
        c = self.counters
        pte = self.pte
        mapcount = self.mapcount
        page_folio = self.page_folio
        f_emc = self.f_emc
        f_nr = self.f_nr
        f_head = self.f_head
        nrpm = self.f_nrpm
        f_order = self.f_order
        f_queued = self.f_queued
        ds_min_order = self.ds_min_order
        deferred_split_folio = self.deferred_split_folio
        ident = self.ident
        gathered = tlb.entries
        room = tlb.active_max - tlb.active_nr
        cleared = nrpm_atomics = stat_updates = ds_early = bad = 0
        full = False
        while addr < end:
            ent = pte[addr]
            if ent <= 0:
                if ent < 0:
                    self.zap_nonpresent(addr)
                addr += 1
                continue
            pfn = ent - 1
            f = page_folio[pfn]
            n = 1
            if f_nr[f] > 1:  # the run of PTEs mapping the next pages of this folio, up to its end or `end`
                limit = addr + f_head[f] + f_nr[f] - pfn
                if limit > end:
                    limit = end
                n = limit - addr
                if not (pte[limit - 1] == ent + n - 1 and (n < 3 or pte[addr:limit] == ident[ent : ent + n])):
                    n = pte_run(pte, addr, limit, ent)
            if n >= room:
                n = room  # __tlb_remove_page() reports the batch full on the page that takes its last slot
            pte[addr : addr + n] = ZERO_RUNS[n]  # ptep_get_and_clear_full(), page by page
            cleared += n  # tlb_remove_tlb_entry()
            addr += n
            # page_remove_rmap(): atomic_add_negative(-1, &page->_mapcount) on each page
            unmapped, lowest = dec_mapcounts(mapcount, pfn, n)
            if unmapped:  # those pages are no longer mapped anywhere
                if f_nr[f] > 1:
                    # atomic_dec_return_relaxed(&folio->_nr_pages_mapped) for each, in turn; the ones that leave
                    # it below ENTIRELY_MAPPED (not still PMD-mapped) go on
                    before = nrpm[f]
                    nrpm[f] = before - unmapped
                    nrpm_atomics += unmapped
                    unmapped -= min(unmapped, max(0, before - ENTIRELY_MAPPED))
                if unmapped:
                    stat_updates += unmapped  # __lruvec_stat_mod_folio(NR_ANON_MAPPED, -1) per page
                    if f_order[f] >= ds_min_order:  # folio_test_{pmd_mappable,large} && folio_test_anon
                        if not f_queued[f]:
                            deferred_split_folio(f)  # the first of them queues it ...
                            unmapped -= 1
                        ds_early += unmapped  # ... the others take the lockless list_empty() early return
            low = -2 - f_emc[f]  # page_mapcount() = _mapcount + 1 + entire_mapcount + 1 < 0
            if lowest < low:
                bad += sum(1 for m in mapcount[pfn : pfn + n] if m < low)
            # __tlb_remove_page(): one slot per page
            gathered.append(pfn << NR_BITS | n)
            room -= n
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
