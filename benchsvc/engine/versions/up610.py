"""up610: upstream v6.10 and v6.11: no deferred split queueing of fully unmapped folios.

Zi Yan's "mm/rmap: do not add fully unmapped large folio to deferred split list" makes
``__folio_remove_rmap()`` queue a large anon folio only when it is still partially mapped after the removal
(``partially_mapped = nr && atomic_read(mapped)``) and not already on the list; ``folio->_large_mapcount``
is decremented once per batch; consecutive swap entries are freed as one batch.
Source: <20240502132852.862138-1-zi.yan@sent.com> (v6 of the fix) (docs/kernel-history.md#up610).
"""

from __future__ import annotations

from typing import ClassVar

from benchsvc.engine.model import ENTIRELY_MAPPED, FOLIO_PAGES_MAPPED, HPAGE_PMD_NR, dec_mapcounts
from benchsvc.engine.versions.up69 import RmapQueue, Up69


class Up610(Up69):
    id = "up610"
    parent = "up69"
    title = "upstream v6.10-6.11: queue only partially mapped folios"
    source = "<20240502132852.862138-1-zi.yan@sent.com>"
    date = "2024-05-12"
    has_large_mapcount = True
    rmap_queue: ClassVar[RmapQueue] = "unqueued"
    batch_swap_entries = True

    def folio_remove_rmap_ptes(self, f: int, pfn: int, nr_pages: int) -> None:
        """6.10 ``__folio_remove_rmap(RMAP_LEVEL_PTE)``."""
        c = self.counters
        mapcount = self.mapcount
        if self.f_nr[f] == 1:
            mapcount[pfn] -= 1
            if mapcount[pfn] < 0:
                c.stat_updates += 1
            return
        self.f_lmc[f] -= nr_pages  # atomic_sub(nr_pages, &folio->_large_mapcount)
        c.large_mapcount_atomics += 1
        nrpm = self.f_nrpm
        nr, _ = dec_mapcounts(mapcount, pfn, nr_pages)
        if nr:  # per page that became unmapped, in turn: atomic_dec_return_relaxed(mapped)
            before = nrpm[f]
            nrpm[f] = before - nr
            c.nr_pages_mapped_atomics += nr
            nr -= min(nr, max(0, before - ENTIRELY_MAPPED))
        if nr:
            c.stat_updates += 1
            if nrpm[f] and not self.f_queued[f]:  # partially_mapped && list_empty(&folio->_deferred_list)
                self.deferred_split_folio(f)

    def remove_rmap_pmd(self, f: int) -> None:
        c = self.counters
        c.rmap_calls += 1
        self.f_lmc[f] -= 1
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
            if nr < nr_pmdmapped and not self.f_queued[f]:
                self.deferred_split_folio(f)
