"""up615: upstream v6.15 ... 6.18 with CONFIG_MM_ID (as on this project's machines): the large mapcount under
a per-folio lock.

With ``CONFIG_MM_ID`` (selected by THP from 6.15) ``folio_add_large_mapcount()`` and
``folio_sub_large_mapcount()`` take ``folio_lock_large_mapcount()`` (a bit spinlock in ``folio->_mm_ids``),
read ``_large_mapcount``, ``atomic_set()`` the new value and update the per-MM mapcount slots before
unlocking: one lock acquisition per update and no atomic read-modify-write on ``_large_mapcount``. The
bad-PTE check after the rmap removal in ``zap_present_folio_ptes()`` reads ``folio_mapcount(folio) < 0``
instead of ``page_mapcount(page) < 0``. Everything else (``_nr_pages_mapped`` once per batch with
``CONFIG_PAGE_MAPCOUNT``, the partially-mapped flag, queueing PMD-order THPs at fault) is as in 6.12.
Source: mm/rmap.c, include/linux/rmap.h and mm/memory.c of v6.15 (David Hildenbrand's "mm: MM owner
tracking for large folios (!hugetlb) + CONFIG_NO_PAGE_MAPCOUNT" series); checked against this machine's 6.18.
"""

from __future__ import annotations

from benchsvc.engine.versions.up612 import Up612


class Up615(Up612):
    id = "up615"
    parent = "up612"
    title = "upstream v6.15-6.18 with CONFIG_MM_ID: large mapcount under the per-folio lock"
    source = "v6.15 mm/rmap.c, include/linux/rmap.h (folio_lock_large_mapcount); this machine's 6.18"
    date = "2025-05-25"
    large_mapcount_locked = True
    bad_pte_reads_folio_mapcount = True
