"""v3: the series v3 (20 Jul 2023), taken into mm-unstable / linux-next.

Only patch 2/3 changed (reworked at Yu Zhao's request so that ``page_remove_rmap()`` forwards to
``folio_remove_rmap_range()`` and both share ``__remove_rmap_finish()``); patches 1/3 and 3/3 are unchanged,
so the counting is identical to v2. Kept so that the lineage is complete. linux-next 20230726 carried it as
652555287069 (1/3), 9a7c14665a56 (2/3), 904d9713b3b0 (3/3).
Source: <20230720112955.643283-1-ryan.roberts@arm.com> (docs/kernel-history.md#v3).
"""

from __future__ import annotations

from benchsvc.engine.versions.v2 import V2


class V3(V2):
    id = "v3"
    parent = "v2"
    title = "v3 (linux-next): refactor of 2/3 only"
    source = "<20230720112955.643283-1-ryan.roberts@arm.com>"
    date = "2023-07-20"
