"""up69: upstream v6.9, "mm/memory: optimize unmap/zap with PTE-mapped THP" (David Hildenbrand).

``zap_present_ptes()`` batches the present PTEs that map consecutive pages of one large folio with
``folio_pte_batch()`` (capped at ``max_nr = (end - addr) / PAGE_SIZE`` and at the folio's end), clears them
with ``clear_full_ptes()``, removes their rmap with one ``folio_remove_rmap_ptes()`` call and gathers them as
one page + nr entry (two slots; a single page takes one). ``__folio_remove_rmap()`` still updates
``_nr_pages_mapped`` once per page that became unmapped, and at PTE level it calls ``deferred_split_folio()``
whenever a large anon folio lost any mapped page, even when the batch unmapped the whole folio.
Source: commit 10ebac4f95e7 (series <20240214204435.167852-1-david@redhat.com>), rmap from b06dc281aa99 (K§1.7).
"""

from __future__ import annotations

from benchsvc.engine.gather import MmuGather
from benchsvc.engine.model import (
    ENTIRELY_MAPPED,
    FOLIO_PAGES_MAPPED,
    HPAGE_PMD_NR,
    NR_BITS,
    SWAP_PTE,
    ZapEngine,
    dec_mapcounts,
    pte_run,
)


class Up69(ZapEngine):
    id = "up69"
    parent = "base65-p1"
    title = "upstream v6.9: folio_pte_batch, page+nr gather entries"
    source = "commit 10ebac4f95e7 (<20240214204435.167852-1-david@redhat.com>)"
    date = "2024-03-10"
    gather_entries_are_batches = True
    #: 6.10+: consecutive swap entries are freed as one batch (swap_pte_batch, free_swap_and_cache_nr)
    batch_swap_entries = False

    def zap_pte_range(self, tlb: MmuGather, addr: int, end: int) -> int:
        """``zap_pte_range()`` with ``zap_present_ptes()``: one batch at a time, in address order.

        Only Python's per-call overhead is folded: ``__tlb_remove_folio_pages()``'s slot accounting is kept in
        locals (``active_nr``, ``active_max``) and written back, and the bad-PTE and PTE-clear counts are
        summed locally and added once."""
        c = self.counters
        c.ptl_acquisitions += 1
        pte = self.pte
        page_folio = self.page_folio
        f_head = self.f_head
        f_nr = self.f_nr
        f_lmc = self.f_lmc
        f_emc = self.f_emc
        mapcount = self.mapcount
        folio_mapcount_check = self.bad_pte_reads_folio_mapcount
        folio_remove_rmap_ptes = self.folio_remove_rmap_ptes
        ident = self.ident
        gathered = tlb.entries
        active_nr, active_max = tlb.active_nr, tlb.active_max
        force_flush = False
        cleared = bad = batches = 0
        while addr < end:
            ent = pte[addr]
            if ent == 0:
                addr += 1
                continue
            if ent < 0:
                nr = 1
                if self.batch_swap_entries:
                    while addr + nr < end and pte[addr + nr] == SWAP_PTE:
                        nr += 1
                for a in range(addr, addr + nr):
                    self.zap_nonpresent(a)
                addr += nr
                continue
            # zap_present_ptes()
            pfn = ent - 1
            f = page_folio[pfn]
            nr = 1
            if f_nr[f] > 1 and end - addr != 1:
                # folio_pte_batch(): same folio, consecutive pfns, compatible bits; max_nr and folio end caps
                limit = min(end, addr + f_head[f] + f_nr[f] - pfn)
                n = limit - addr
                if pte[limit - 1] == ent + n - 1 and (n < 3 or pte[addr:limit] == ident[ent : ent + n]):
                    nr = n  # every PTE up to the cap maps the next page (checked, one comparison)
                else:
                    nr = pte_run(pte, addr, limit, ent)
            # zap_present_folio_ptes()
            pte[addr : addr + nr] = [0] * nr  # clear_full_ptes(); tlb_remove_tlb_entries()
            cleared += nr
            folio_remove_rmap_ptes(f, pfn, nr)  # counted below: one call, nr _mapcount atomics
            batches += 1
            if folio_mapcount_check:  # 6.15+: folio_mapcount(folio) < 0
                if (f_lmc[f] if f_nr[f] > 1 else mapcount[pfn]) + 1 < 0:
                    bad += 1
            elif mapcount[pfn] + 1 + f_emc[f] + 1 < 0:  # page_mapcount(first page) < 0
                bad += 1
            addr += nr
            # __tlb_remove_folio_pages(): one slot for a single page, two for page + nr
            gathered.append(pfn << NR_BITS | nr)
            active_nr += 1 if nr == 1 else 2
            if active_nr >= active_max - 1:
                tlb.active_nr = active_nr
                if not tlb.tlb_next_batch():
                    force_flush = True  # force_flush = force_break = true
                    break
                active_nr, active_max = tlb.active_nr, tlb.active_max
        tlb.active_nr = active_nr
        c.bad_pte += bad
        c.rmap_calls += batches
        c.mapcount_atomics += cleared
        if cleared:
            tlb.cleared_ptes = True
            c.ptes_cleared += cleared
            self.rss_anon -= cleared
        if force_flush:
            # tlb_flush_mmu_tlbonly() under the PTL, then tlb_flush_mmu() after the unlock: one tlb_flush_mmu()
            tlb.tlb_flush_mmu()
        return addr

    def folio_remove_rmap_ptes(self, f: int, pfn: int, nr_pages: int) -> None:
        """6.9 ``__folio_remove_rmap(RMAP_LEVEL_PTE)``: per page ``_mapcount`` and ``_nr_pages_mapped``."""
        c = self.counters
        mapcount = self.mapcount
        large = self.f_nr[f] > 1
        nr, _ = dec_mapcounts(mapcount, pfn, nr_pages)  # per page: atomic_add_negative(-1, &page->_mapcount)
        if nr and large:
            # per page that became unmapped, in turn: atomic_dec_return_relaxed(mapped); those that leave it
            # below ENTIRELY_MAPPED count
            nrpm = self.f_nrpm
            before = nrpm[f]
            nrpm[f] = before - nr
            c.nr_pages_mapped_atomics += nr
            nr -= min(nr, max(0, before - ENTIRELY_MAPPED))
        if nr:
            c.stat_updates += 1
            if large:  # level == RMAP_LEVEL_PTE: always
                self.deferred_split_folio(f)

    def remove_rmap_pmd(self, f: int) -> None:
        """6.9 ``folio_remove_rmap_pmd()`` = ``__folio_remove_rmap(RMAP_LEVEL_PMD)``."""
        c = self.counters
        c.rmap_calls += 1
        self.f_emc[f] -= 1
        c.mapcount_atomics += 1
        if self.f_emc[f] >= 0:
            return
        self.f_nrpm[f] -= ENTIRELY_MAPPED
        c.nr_pages_mapped_atomics += 1
        nr_pmdmapped = HPAGE_PMD_NR
        nr = nr_pmdmapped - (self.f_nrpm[f] & FOLIO_PAGES_MAPPED)
        c.stat_updates += 1  # NR_ANON_THPS
        if nr:
            c.stat_updates += 1
            if nr < nr_pmdmapped:
                self.deferred_split_folio(f)
