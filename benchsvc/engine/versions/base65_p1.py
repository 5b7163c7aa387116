"""base65-p1: base65 + patch 1/3 "mm: Allow deferred splitting of arbitrary large anon folios".

A one-line change in ``page_remove_rmap()``: ``folio_test_pmd_mappable()`` becomes ``folio_test_large()``, so
any large anon folio is queued the first time one of its pages loses its last PTE mapping, which with per-page
rmap removal also happens when the whole folio is unmapped (a spurious queueing).
Source: <20230717143110.260162-2-ryan.roberts@arm.com> (docs/kernel-history.md#base65-p1); merged for v6.8 in the mTHP series.
"""

from __future__ import annotations

from benchsvc.engine.versions.base65 import Base65


class Base65P1(Base65):
    id = "base65-p1"
    parent = "base65"
    title = "+ patch 1/3: any large anon folio can be queued"
    source = "<20230717143110.260162-2-ryan.roberts@arm.com>"
    date = "2023-07-17"
    ds_min_order = 2
