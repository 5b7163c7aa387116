"""up69: upstream v6.9, "mm/memory: optimize unmap/zap with PTE-mapped THP" (David Hildenbrand).

``zap_present_ptes()`` batches the present PTEs that map consecutive pages of one large folio with
``folio_pte_batch()`` (capped at ``max_nr = (end - addr) / PAGE_SIZE`` and at the folio's end), clears them
with ``clear_full_ptes()``, removes their rmap with one ``folio_remove_rmap_ptes()`` call and gathers them as
one page + nr entry (two slots; a single page takes one). ``__folio_remove_rmap()`` still updates
``_nr_pages_mapped`` once per page that became unmapped, and at PTE level it calls ``deferred_split_folio()``
whenever a large anon folio lost any mapped page, even when the batch unmapped the whole folio.
Source: commit 10ebac4f95e7 (series <20240214204435.167852-1-david@redhat.com>), rmap from b06dc281aa99 (docs/kernel-history.md#up69).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from benchsvc.engine.gather import MmuGather
from benchsvc.engine.model import (
    ENTIRELY_MAPPED,
    FOLIO_PAGES_MAPPED,
    HPAGE_PMD_NR,
    NEG_RUNS,
    NR_BITS,
    ONE_RUNS,
    SWAP_PTE,
    ZERO_RUNS,
    ZapEngine,
    dec_mapcounts,
    pte_run,
)

RmapQueue = Literal["always", "unqueued", "unflagged"]


class Up69(ZapEngine):
    id = "up69"
    parent = "base65-p1"
    title = "upstream v6.9: folio_pte_batch, page+nr gather entries"
    source = "commit 10ebac4f95e7 (<20240214204435.167852-1-david@redhat.com>)"
    date = "2024-03-10"
    gather_entries_are_batches = True
    #: which large folios ``__folio_remove_rmap()`` hands to ``deferred_split_folio()`` after a PTE-level
    #: removal left pages unmapped: 6.9 ``always``; 6.10 ``unqueued`` (partially mapped and not on the list);
    #: 6.12+ ``unflagged`` (partially mapped and not yet flagged PG_partially_mapped)
    rmap_queue: ClassVar[RmapQueue] = "always"
    #: False: call :meth:`folio_remove_rmap_ptes` per batch instead of its inlined copy in
    #: :meth:`zap_pte_range` (the tests check that both count the same)
    inline_rmap: ClassVar[bool] = True
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
        folio_remove_rmap_ptes = None if self.inline_rmap else self.folio_remove_rmap_ptes
        # what the inlined __folio_remove_rmap(RMAP_LEVEL_PTE) of this version does (see its method)
        nrpm = self.f_nrpm
        lmc = self.has_large_mapcount
        batched = self.nr_pages_mapped_batched
        queue = self.rmap_queue
        f_queued = self.f_queued if queue == "unqueued" else self.f_pmapped
        deferred_split_folio = self.deferred_split_folio
        stat_updates = nrpm_atomics = lmc_updates = 0
        ident = self.ident
        gathered = tlb.entries
        active_nr, active_max = tlb.active_nr, tlb.active_max
        force_flush = False
        cleared = bad = batches = 0
        while addr < end:
            ent = pte[addr]
            if ent <= 0:
                if ent == 0:
                    addr += 1
                    continue
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
            nf = f_nr[f]
            nr = 1
            if nf > 1 and end - addr != 1:
                # folio_pte_batch(): same folio, consecutive pfns, compatible bits; max_nr and folio end caps
                limit = addr + f_head[f] + nf - pfn
                if limit > end:
                    limit = end
                n = limit - addr
                if pte[limit - 1] == ent + n - 1 and (n < 3 or pte[addr:limit] == ident[ent : ent + n]):
                    nr = n  # every PTE up to the cap maps the next page (checked, one comparison)
                else:
                    nr = pte_run(pte, addr, limit, ent)
            # zap_present_folio_ptes()
            pte[addr : addr + nr] = ZERO_RUNS[nr]  # clear_full_ptes(); tlb_remove_tlb_entries()
            cleared += nr
            batches += 1  # one rmap call, nr _mapcount atomics: counted below
            if folio_remove_rmap_ptes is not None:
                folio_remove_rmap_ptes(f, pfn, nr)
            elif nf == 1:  # a small folio: its one _mapcount
                left = mapcount[pfn] = mapcount[pfn] - 1
                stat_updates += left < 0
            else:
                # folio_remove_rmap_ptes() of a large folio, inlined: see the version's method
                if lmc:
                    f_lmc[f] -= nr
                    lmc_updates += 1
                seg = mapcount[pfn : pfn + nr]
                if seg == ZERO_RUNS[nr]:  # each page mapped once: each becomes unmapped
                    mapcount[pfn : pfn + nr] = NEG_RUNS[nr]
                    unmapped = nr
                elif seg == ONE_RUNS[nr]:  # each page mapped twice (fork): none becomes unmapped
                    mapcount[pfn : pfn + nr] = ZERO_RUNS[nr]
                    unmapped = 0
                else:
                    unmapped, _ = dec_mapcounts(mapcount, pfn, nr)
                if unmapped:
                    before = nrpm[f]
                    after = nrpm[f] = before - unmapped
                    if batched:  # 6.12+: one atomic_sub_return_relaxed(last, mapped)
                        nrpm_atomics += 1
                        unmapped = unmapped if after < ENTIRELY_MAPPED else 0
                    else:  # one atomic_dec_return_relaxed(mapped) per page, in turn
                        nrpm_atomics += unmapped
                        unmapped -= min(unmapped, max(0, before - ENTIRELY_MAPPED))
                    if unmapped:
                        stat_updates += 1
                        if queue == "always":  # 6.9: any large folio that lost a mapped page
                            deferred_split_folio(f)
                        elif after and not f_queued[f]:  # 6.10: not queued yet; 6.12+: not flagged yet
                            deferred_split_folio(f, True)
            if folio_mapcount_check:  # 6.15+: folio_mapcount(folio) < 0
                if (f_lmc[f] if nf > 1 else mapcount[pfn]) + 1 < 0:
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
        c.stat_updates += stat_updates
        c.nr_pages_mapped_atomics += nrpm_atomics
        if self.large_mapcount_locked:
            c.large_mapcount_locks += lmc_updates
        else:
            c.large_mapcount_atomics += lmc_updates
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
