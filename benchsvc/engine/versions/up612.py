"""up612: upstream v6.12 ... 6.14 (CONFIG_PAGE_MAPCOUNT=y; 6.15+ with CONFIG_MM_ID is ``up615``).

``__folio_remove_rmap()`` updates ``_nr_pages_mapped`` once per batch (David Hildenbrand, "mm/rmap: minimize
folio->_nr_pages_mapped updates when batching PTE (un)mapping"), and ``deferred_split_folio(folio, true)`` is
called only for a partially mapped folio whose PG_partially_mapped flag is not yet set. The call takes
``split_queue_lock`` unconditionally, sets the flag, counts the per-size ``split_deferred`` stat and adds the
folio unless it is already queued. PMD-order THPs are queued at fault (``shrink_underused=1``, "mm: split
underused THPs"), so a PTE-mapped 2 MiB folio takes the lock once more when it is freed.
Source: mm-stable-2024-09-20-02-31 (v6.12 merge window); 6.12+ mm/rmap.c, mm/huge_memory.c (docs/kernel-history.md#up612).
"""

from __future__ import annotations

from typing import ClassVar

from benchsvc.engine.model import ENTIRELY_MAPPED, FOLIO_PAGES_MAPPED, HPAGE_PMD_NR, dec_mapcounts
from benchsvc.engine.versions.up69 import RmapQueue
from benchsvc.engine.versions.up610 import Up610


class Up612(Up610):
    id = "up612"
    parent = "up610"
    title = "upstream v6.12-6.14: partially-mapped flag, per-size stats"
    source = "mm-stable-2024-09-20-02-31 (v6.12)"
    date = "2024-11-17"
    queue_pmd_thp_at_fault = True
    nr_pages_mapped_batched = True
    rmap_queue: ClassVar[RmapQueue] = "unflagged"

    def folio_remove_rmap_ptes(self, f: int, pfn: int, nr_pages: int) -> None:
        """6.12+ ``__folio_remove_rmap(RMAP_LEVEL_PTE)`` with CONFIG_PAGE_MAPCOUNT."""
        c = self.counters
        mapcount = self.mapcount
        if self.f_nr[f] == 1:
            mapcount[pfn] -= 1
            if mapcount[pfn] < 0:
                c.stat_updates += 1
            return
        self.f_lmc[f] -= nr_pages  # folio_sub_large_mapcount()
        if self.large_mapcount_locked:
            c.large_mapcount_locks += 1
        else:
            c.large_mapcount_atomics += 1
        last, _ = dec_mapcounts(
            mapcount, pfn, nr_pages
        )  # per page: atomic_add_negative(-1, &page->_mapcount)
        nr = 0
        if last:
            self.f_nrpm[f] -= last  # atomic_sub_return_relaxed(last, mapped)
            c.nr_pages_mapped_atomics += 1
            if self.f_nrpm[f] < ENTIRELY_MAPPED:
                nr = last
        if nr:
            c.stat_updates += 1  # __folio_mod_stat()
            if self.f_nrpm[f] and not self.f_pmapped[f]:  # partially_mapped && !folio_test_partially_mapped()
                self.deferred_split_folio(f, partially_mapped=True)

    def remove_rmap_pmd(self, f: int) -> None:
        c = self.counters
        c.rmap_calls += 1
        self.f_lmc[f] -= 1  # folio_dec_large_mapcount()
        if self.large_mapcount_locked:
            c.large_mapcount_locks += 1
        else:
            c.large_mapcount_atomics += 1
        self.f_emc[f] -= 1
        c.mapcount_atomics += 1
        if self.f_emc[f] >= 0:
            return
        self.f_nrpm[f] -= ENTIRELY_MAPPED
        c.nr_pages_mapped_atomics += 1
        nr_pmdmapped = HPAGE_PMD_NR
        nr = nr_pmdmapped - (self.f_nrpm[f] & FOLIO_PAGES_MAPPED)
        c.stat_updates += 1
        if nr:
            c.stat_updates += 1
            if nr < nr_pmdmapped and not self.f_pmapped[f]:
                self.deferred_split_folio(f, partially_mapped=True)

    def deferred_split_folio(self, f: int, partially_mapped: bool = True) -> None:
        """6.12+ ``deferred_split_folio(folio, partially_mapped)``: no lockless pre-check."""
        c = self.counters
        c.ds_calls += 1
        c.ds_lock += 1
        if partially_mapped and not self.f_pmapped[f]:
            self.f_pmapped[f] = True
            c.split_deferred += 1  # count_mthp_stat(order, MTHP_STAT_SPLIT_DEFERRED)
            self.nr_anon_partially_mapped += 1
        if not self.f_queued[f]:
            self.f_queued[f] = True
            c.ds_adds += 1
            self._inserted.append(f)
