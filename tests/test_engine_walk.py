"""The page-table walk that jumps over emptied tables and PTEs (issue 22, bounded work).

The jumps (``ZapEngine.fast_walk``) must change nothing but the time: every counter and the whole final state
of the address space equal those of the plain walk, which visits every table and PTE, on workloads made to
revisit emptied ranges (calls sweeping to the end of the region, overlapping calls, holes, PMD-mapped THPs
split by partial zaps, forked children, swap entries, an unaligned start)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from benchsvc.engine.model import ZapEngine
from benchsvc.engine.versions import get_version, version_ids
from benchsvc.workload import parse_workload


def _spec(layout: str, zaps: list[dict[str, str]]) -> Any:
    lines = ['description = "walk"', "tags = []", "", "[layout]", layout, ""]
    for z in zaps:
        lines.append("[[zap]]")
        lines.extend(f"{k} = {v!r}".replace("'", '"') for k, v in z.items())
        lines.append("")
    return parse_workload("\n".join(lines).encode(), name="walk")


def _plain(cls: type[ZapEngine]) -> type[ZapEngine]:
    return type(f"Plain{cls.__name__}", (cls,), {"fast_walk": False})


def _state(e: ZapEngine) -> dict[str, Any]:
    return {
        "counters": e.counters.as_dict(),
        "pte": e.pte,
        "pmd_folio": e.pmd_folio,
        "pt_present": e.pt_present,
        "vmas": e.vmas,
        "mapcount": e.mapcount,
        "f_ref": e.f_ref,
        "f_nrpm": e.f_nrpm,
        "f_queued": e.f_queued,
        "f_freed": e.f_freed,
        "rss": (e.rss_anon, e.rss_swap, e.nr_anon_partially_mapped),
    }


LAYOUTS = [
    'size = "4MiB"\nfolios = { "64KiB" = 1.0 }',
    'size = "4MiB"\nfolios = { "2MiB" = 1.0 }\npmd_mapped = true',
    'size = "4MiB"\nfolios = { "2MiB" = 1.0 }\npmd_mapped = true\nfork = true',
    'size = "4MiB"\nfolios = { "4KiB" = 0.5, "64KiB" = 0.5 }\narrangement = "shuffled"\nseed = 5\nswap_share = 0.25',
    'size = "4MiB"\nva_offset = "12KiB"\nfolios = { "16KiB" = 0.5, "2MiB" = 0.5 }\nfork = true',
]


def _random_zaps(rng: random.Random, size_kib: int) -> list[dict[str, str]]:
    zaps = []
    for _ in range(rng.randint(1, 3)):
        call = rng.choice(["munmap", "madvise_dontneed", "madvise_dontneed"])
        every = rng.choice([4, 8, 12, 64, 2048])
        start = rng.randrange(0, size_kib // 2, 4)
        z = {"call": call, "start": f"{start}KiB", "every": f"{every}KiB"}
        length = rng.choice([None, 4, 8, 2048, 3000 // 4 * 4])
        if length is not None:
            z["length"] = f"{min(length, size_kib - start)}KiB"
        zaps.append(z)
    if rng.random() < 0.3:
        zaps.append({"call": "exit"})
    return zaps


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
def test_fast_walk_changes_nothing_but_the_time(layout: int) -> None:
    rng = random.Random(layout)
    size_kib = 4096
    for _ in range(3):
        spec = _spec(LAYOUTS[layout], _random_zaps(rng, size_kib))
        for vid in version_ids():
            cls = get_version(vid)
            fast, plain = cls(spec), _plain(cls)(spec)
            fast.run()
            plain.run()
            assert _state(fast) == _state(plain), (vid, spec.source_text)


@pytest.mark.parametrize("vid", ["base65", "v2", "up612"])
@pytest.mark.parametrize("tables", [1, 3, 8])
def test_sweep_to_the_end_counts_every_page_table_lock(vid: str, tables: int) -> None:
    """MADV_DONTNEED of [k, end) for every page k: the first call clears every PTE, each later call still
    takes the lock of every page table from its own to the last (the tables stay: madvise frees none), so
    call k takes T - k // 512 locks and the whole sweep 512 * T (T + 1) / 2. v2 ends every span of a folio
    (16 pages) with a forced flush and re-enters the table after it: 31 more locks per table in the first
    call."""
    spec = _spec(
        f'size = "{2 * tables}MiB"\nfolios = {{ "64KiB" = 1.0 }}',
        [{"call": "madvise_dontneed", "start": "0", "every": "4KiB"}],
    )
    e = get_version(vid)(spec)
    e.run()
    pages = tables * 512
    reentries = tables * (512 // 16 - 1) if vid == "v2" else 0
    assert e.counters.ptl_acquisitions - reentries == 512 * tables * (tables + 1) // 2
    assert e.counters.ptes_cleared == pages
    assert e.counters.pages_freed == pages
    assert not any(e.pte)


FIXED = [
    # holes first, then one munmap across all of them (many VMA pieces, page tables freed after each)
    [
        {"call": "munmap", "start": "0", "length": "4KiB", "every": "8KiB"},
        {"call": "munmap", "start": "4KiB", "length": "4092KiB"},
        {"call": "madvise_dontneed", "start": "0", "every": "4KiB"},
    ],
    # overlapping calls, each one page further: every call but the first finds one new page
    [{"call": "madvise_dontneed", "start": "0", "length": "2MiB", "every": "4KiB"}],
    # a PMD-mapped THP split by a partial zap, then swept
    [
        {"call": "madvise_dontneed", "start": "2MiB", "length": "8KiB"},
        {"call": "madvise_dontneed", "start": "0", "every": "4KiB"},
        {"call": "munmap", "start": "0", "every": "1MiB", "length": "3MiB"},
    ],
]


@pytest.mark.parametrize("zaps", range(len(FIXED)))
@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
def test_fast_walk_on_revisiting_workloads(layout: int, zaps: int) -> None:
    spec = _spec(LAYOUTS[layout], FIXED[zaps])
    for vid in version_ids():
        cls = get_version(vid)
        fast, plain = cls(spec), _plain(cls)(spec)
        fast.run()
        plain.run()
        assert _state(fast) == _state(plain), vid
