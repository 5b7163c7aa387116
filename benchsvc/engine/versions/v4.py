"""v4: the series v4 (27 Jul 2023): the s390 fix, batch only large folios.

``try_zap_anon_pte_range()`` pins the folio with ``folio_get()`` before the span and ``folio_put()`` after the
rmap removal (on ``MMU_GATHER_NO_GATHER`` the gather dropped the page's reference too early), and the batch
path is taken only when ``folio_test_large()``; small anon folios go through the baseline per-PTE path. The
always-true ``nr_pages < nr_pages_req`` test is unchanged, so every large span still forces a flush.
Source: <20230727141837.3386072-4-ryan.roberts@arm.com> (docs/kernel-history.md#v4).
"""

from __future__ import annotations

from benchsvc.engine.versions.v3 import V3


class V4(V3):
    id = "v4"
    parent = "v3"
    title = "v4: s390 fix (folio_get/put per span), batch only large folios"
    source = "<20230727141837.3386072-1-ryan.roberts@arm.com> (v4 0/3; 3/3 is ...-4-...)"
    date = "2023-07-27"
    batch_small_folios = False
    pin_span = True
