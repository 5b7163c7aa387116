"""PMD-mapped THPs split by a partial zap: the rmap atomics of ``__split_huge_pmd()`` per kernel release.

Splitting a PMD-mapped THP maps each of its ``n`` = 512 pages by PTE and then removes the PMD mapping. How
the PTE mappings are added differs by release (mm/huge_memory.c ``__split_huge_pmd_locked()``):

* up to 6.7 ``page_add_anon_rmap(page + i)`` for every page: one ``_mapcount`` increment and, because the
  page was not mapped by PTE before, one ``atomic_inc_return_relaxed(&folio->_nr_pages_mapped)`` each;
* 6.8-6.11 one ``folio_add_anon_rmap_ptes(folio, page, 512)``, whose loop still does the
  ``_nr_pages_mapped`` increment page by page (and 6.10+ one ``atomic_add`` on ``_large_mapcount``);
* from 6.12 the loop only counts the pages, then one ``atomic_add_return_relaxed(first, mapped)``.

The expected numbers are derived here from those three shapes, per THP, never taken from the engine.
"""

from __future__ import annotations

import pytest
from conftest import load_variant

from benchsvc.engine import simulate
from benchsvc.engine.versions import get_version, version_ids

PMD_NR = 512  # pages of a 2 MiB THP
#: versions whose split adds _nr_pages_mapped once per batch (6.12 and later)
BATCHED_ADD = {"up612", "up615"}
#: versions that have _large_mapcount (6.10 and later)
HAS_LARGE_MAPCOUNT = {"up610", "up612", "up615"}
#: versions whose _large_mapcount is set under the per-folio lock (6.15+ with CONFIG_MM_ID)
LOCKED_LARGE_MAPCOUNT = {"up615"}


def test_every_version_is_classified() -> None:
    """A new version must say here which split it models (the sets above name existing versions only)."""
    assert set(version_ids()) >= BATCHED_ADD | HAS_LARGE_MAPCOUNT
    for vid in version_ids():
        cls = get_version(vid)
        assert cls.nr_pages_mapped_batched == (vid in BATCHED_ADD), vid
        assert cls.has_large_mapcount == (vid in HAS_LARGE_MAPCOUNT), vid


@pytest.mark.parametrize("version", version_ids())
def test_munmap_first_page_of_pmd_mapped_thps(version: str) -> None:
    """``sizes-2m-munmap-first-page``: 32 PMD-mapped THPs, munmap of the first 4 KiB of each.

    Per THP: the split (``_mapcount`` +1 on 512 pages; ``_nr_pages_mapped`` +512 in 512 atomics before 6.12,
    in one from 6.12), the PMD rmap removal (``_entire_mapcount`` -1, ``_nr_pages_mapped -=
    ENTIRELY_MAPPED``: one atomic each), then the PTE of the first page is zapped (``_mapcount`` -1 and
    ``_nr_pages_mapped`` -1: one atomic each, in every version, per-page or batched alike).
    So ``_nr_pages_mapped`` takes 512 + 1 + 1 = 514 atomics per THP before 6.12 and 1 + 1 + 1 = 3 after.
    ``_large_mapcount`` (6.10+): +512 at the split, -1 for the PMD, -1 for the PTE: 3 updates per THP.
    """
    spec = load_variant("sizes-2m-munmap-first-page")
    thps = spec.size_bytes // (PMD_NR * 4096)
    assert thps == 32
    split_add = 1 if version in BATCHED_ADD else PMD_NR
    expected = {
        "nr_pages_mapped_atomics": thps * (split_add + 1 + 1),
        "mapcount_atomics": thps * (PMD_NR + 1 + 1),
        "rmap_calls": thps * 2,  # the PMD removal and the first page's PTE removal (adds are not counted)
        "tlb_flushes": thps * 2,  # per munmap call: pmdp_invalidate()'s flush, then the call's own
        "ptes_cleared": thps,
        "pages_freed": 0,
        "folios_freed": 0,
    }
    lmc_updates = thps * 3 if version in HAS_LARGE_MAPCOUNT else 0
    if version in LOCKED_LARGE_MAPCOUNT:
        expected |= {"large_mapcount_atomics": 0, "large_mapcount_locks": lmc_updates}
    else:
        expected |= {"large_mapcount_atomics": lmc_updates, "large_mapcount_locks": 0}
    got = simulate(spec, version).counters
    assert {k: got[k] for k in expected} == expected
    if version not in BATCHED_ADD:
        assert got["nr_pages_mapped_atomics"] == 514 * 32  # the "about 514 per THP before 6.12"


@pytest.mark.parametrize("version", version_ids())
def test_whole_pmd_unmap_takes_no_split(version: str) -> None:
    """``pmd-mapped-thp-munmap``: every PMD is zapped whole (``zap_huge_pmd()``), nothing is split, so the
    release makes no difference: one ``_nr_pages_mapped -= ENTIRELY_MAPPED`` and one ``_entire_mapcount``
    decrement per THP, and every THP is freed."""
    spec = load_variant("pmd-mapped-thp-munmap")
    thps = spec.size_bytes // (PMD_NR * 4096)
    got = simulate(spec, version).counters
    assert (got["nr_pages_mapped_atomics"], got["mapcount_atomics"]) == (thps, thps)
    assert (got["folios_freed"], got["pages_freed"]) == (thps, thps * PMD_NR)
