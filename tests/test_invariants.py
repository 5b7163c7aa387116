"""Property tests (the invariants of docs/kernel-history.md#invariants) over random valid workloads, for every version in the registry.

Workloads are generated as TOML text and go through the real loader. Regions stay at or below 8 MiB so that an
example (all versions) takes a few milliseconds. The state checks compare the ``ZapEngine`` state after
``run()`` with a snapshot taken before it; expectations come from the workload (which virtual pages the zap
steps cover), not from another run of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchsvc.engine import simulate
from benchsvc.engine.model import ENTIRELY_MAPPED, FOLIO_PAGES_MAPPED, HPAGE_PMD_NR, PTRS_PER_PTE, ZapEngine
from benchsvc.engine.versions import get_version, version_ids
from benchsvc.workload import PAGE_SIZE, WorkloadSpec, format_size, parse_workload

KIB = 1024
MIB = 1024 * KIB
MAX_REGION = 8 * MIB
PMD_SIZE = 2 * MIB
#: anonymous folio sizes: 4 KiB and 16 KiB ... 2 MiB (order 1, 8 KiB, is shmem-only)
FOLIO_SIZES = [4 * KIB << k for k in (0, 2, 3, 4, 5, 6, 7, 8, 9)]
#: drawn with extra weight on order 0 (swap entries) and 2 MiB (PMD mappings, up612's queue-at-fault)
WEIGHTED_SIZES = [*FOLIO_SIZES, 4 * KIB, 2 * 1024 * KIB, 2 * 1024 * KIB]
SWAP_PTE = -1

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------------------------------------- strategies
@st.composite
def workload_toml(draw: st.DrawFn) -> str:
    """A random valid workload file: 1-3 folio sizes whose shares are exact binary fractions (c/D, D a power
    of two), so they sum to exactly 1.0 and each share is a whole number of folios."""
    sizes = sorted(draw(st.lists(st.sampled_from(WEIGHTED_SIZES), min_size=1, max_size=3, unique=True)))
    biggest = sizes[-1]
    k = len(sizes)
    denom = draw(st.sampled_from([d for d in (1, 2, 4, 8) if d >= k and biggest * d <= MAX_REGION]))
    q = draw(st.integers(1, MAX_REGION // (biggest * denom)))
    size = biggest * denom * q  # D blocks of biggest*q bytes, each a whole number of folios of any size
    # split the D blocks among the k sizes, each at least one block
    cuts: list[int] = []
    if k > 1:
        cuts = sorted(draw(st.lists(st.integers(1, denom - 1), min_size=k - 1, max_size=k - 1, unique=True)))
    blocks = [b - a for a, b in zip([0, *cuts], [*cuts, denom], strict=True)]
    order = draw(st.permutations(sizes))
    folios = ", ".join(f'"{format_size(s)}" = {b / denom!r}' for s, b in zip(order, blocks, strict=True))

    lines = [f'description = "generated {draw(st.integers(0, 10**6))}"', "", "[layout]"]
    size_text = draw(st.sampled_from([format_size(size), str(size)]))
    lines.append(f'size = "{size_text}"' if not size_text.isdigit() else f"size = {size_text}")
    if draw(st.booleans()):
        lines.append(f'va_offset = "{draw(st.integers(0, 511)) * 4}KiB"')
    elif draw(st.booleans()):
        lines.append('va_offset = "0KiB"')
    lines.append(f"folios = {{ {folios} }}")
    if draw(st.booleans()):
        lines.append('arrangement = "shuffled"')
        lines.append(f"seed = {draw(st.integers(0, 1000))}")
    if PMD_SIZE in sizes and draw(st.booleans()):
        lines.append("pmd_mapped = true")
    if draw(st.integers(0, 3)) == 0:
        lines.append("fork = true")
    if 4 * KIB in sizes and draw(st.booleans()):
        lines.append(f"swap_share = {draw(st.sampled_from([0.25, 0.5, 1.0]))}")

    pages = size // PAGE_SIZE
    nsteps = draw(st.integers(1, 3))
    for i in range(nsteps):
        calls = ["munmap", "madvise_dontneed"] + (["exit"] if i == nsteps - 1 else [])
        call = draw(st.sampled_from(calls))
        lines += ["", "[[zap]]", f'call = "{call}"']
        if call == "exit":  # only ever the last step
            continue
        start = draw(st.integers(0, pages - 1))
        if start:
            lines.append(f'start = "{start * 4}KiB"')
        if draw(st.booleans()):
            length = draw(st.integers(1, pages - start))
            lines.append(f'length = "{length * 4}KiB"')
        else:
            length = pages - start
        if draw(st.booleans()):
            # at most ~64 calls per step: keeps every example fast
            lo = max(1, -(-(pages - start) // 64))
            every = draw(st.integers(lo, max(lo, pages)))
            lines.append(f'every = "{every * 4}KiB"')
        if i < nsteps - 1 and draw(st.integers(0, 3)) == 0:
            lines.append("measure = false")
    return "\n".join(lines) + "\n"


def parse(text: str) -> WorkloadSpec:
    return parse_workload(text.encode(), name="generated")


# ---------------------------------------------------------------------------------------------- snapshots
@dataclass
class Snapshot:
    """What each virtual page maps before the zap steps: pfn (present PTE or PMD-mapped THP), swap, none."""

    pfn_at: dict[int, int]  # page index -> pfn
    swap_at: set[int]
    page_mapcount: list[int]  # per pfn: _mapcount + 1 + (entire mapcount + 1) = number of mappings
    rss: int


def page_mapcounts(e: ZapEngine) -> list[int]:
    out = [0] * len(e.mapcount)
    for f in range(len(e.f_head)):
        head, n = e.f_head[f], e.f_nr[f]
        for pfn in range(head, head + n):
            out[pfn] = e.mapcount[pfn] + 1 + e.f_emc[f] + 1
    return out


def snapshot(e: ZapEngine) -> Snapshot:
    pfn_at: dict[int, int] = {}
    swap_at: set[int] = set()
    for a, ent in enumerate(e.pte):
        if ent > 0:
            pfn_at[a] = ent - 1
        elif ent == SWAP_PTE:
            swap_at.add(a)
    for t, f in enumerate(e.pmd_folio):
        if f >= 0:
            for i in range(HPAGE_PMD_NR):
                pfn_at[t * PTRS_PER_PTE + i] = e.f_head[f] + i
    return Snapshot(pfn_at, swap_at, page_mapcounts(e), e.rss_anon + e.rss_swap)


def zapped_pages(e: ZapEngine) -> set[int]:
    """Page indices covered by any zap step (all steps, measured or not)."""
    out: set[int] = set()
    for step in e.spec.zaps:
        for start, end in step.ranges(e.spec.size_bytes):
            out.update(range(e.base + start // PAGE_SIZE, e.base + end // PAGE_SIZE))
    return out


def mapped_now(e: ZapEngine, a: int) -> int | None:
    """The pfn page ``a`` maps now, or None."""
    ent = e.pte[a]
    if ent > 0:
        return ent - 1
    f = e.pmd_folio[a // PTRS_PER_PTE]
    if f >= 0:
        return e.f_head[f] + a % PTRS_PER_PTE
    return None


# ---------------------------------------------------------------------------------------------- properties
def check_state(vid: str, spec: WorkloadSpec) -> dict[str, int]:
    e = get_version(vid)(spec)
    before = snapshot(e)
    e.run()
    gone = zapped_pages(e)
    c = e.counters.as_dict()
    where = f"{vid}\n{spec.source_text}"

    # after a full unmap every PTE (and PMD) in the range is none; everything else maps what it mapped
    for a in range(len(e.pte)):
        if a in gone:
            assert e.pte[a] == 0 and mapped_now(e, a) is None, f"page {a} still mapped: {where}"
        elif a in before.pfn_at:
            assert mapped_now(e, a) == before.pfn_at[a], f"page {a} lost its mapping: {where}"
        elif a in before.swap_at:
            assert e.pte[a] == SWAP_PTE, f"swap entry {a} lost: {where}"
        else:
            assert e.pte[a] == 0

    # every page's mapcount = pre-zap value minus its unmapped mappings (after fork, the parent's remains)
    unmapped = [0] * len(e.mapcount)
    for a, pfn in before.pfn_at.items():
        if a in gone:
            unmapped[pfn] += 1
    after = page_mapcounts(e)
    for f in range(len(e.f_head)):
        head, n = e.f_head[f], e.f_nr[f]
        for pfn in range(head, head + n):
            assert after[pfn] == before.page_mapcount[pfn] - unmapped[pfn], f"mapcount of pfn {pfn}: {where}"
        mapped_pages = sum(1 for pfn in range(head, head + n) if e.mapcount[pfn] >= 0)
        if e.f_freed[f]:
            assert all(after[pfn] == 0 for pfn in range(head, head + n)), where
            continue
        # the folio fields agree with the pages: _nr_pages_mapped, refcount = mappings, _large_mapcount
        if n > 1:
            assert e.f_nrpm[f] & FOLIO_PAGES_MAPPED == mapped_pages, f"_nr_pages_mapped of folio {f}: {where}"
            assert (e.f_nrpm[f] >= ENTIRELY_MAPPED) == (e.f_emc[f] >= 0), where
        mappings = sum(e.mapcount[pfn] + 1 for pfn in range(head, head + n)) + e.f_emc[f] + 1
        assert e.f_ref[f] == mappings, f"refcount of folio {f}: {where}"
        if e.has_large_mapcount and n > 1:
            assert e.f_lmc[f] + 1 == mappings, f"_large_mapcount of folio {f}: {where}"

    # a folio is freed exactly when its last mapping is gone (never after fork: the parent keeps it)
    for f in range(len(e.f_head)):
        head, n = e.f_head[f], e.f_nr[f]
        all_gone = all(before.page_mapcount[pfn] - unmapped[pfn] == 0 for pfn in range(head, head + n))
        assert e.f_freed[f] == all_gone, f"folio {f} freed={e.f_freed[f]}: {where}"

    # rss falls by exactly the present pages and swap entries unmapped
    dropped = sum(1 for a in before.pfn_at if a in gone) + sum(1 for a in before.swap_at if a in gone)
    assert before.rss - (e.rss_anon + e.rss_swap) == dropped, where

    # no fully unmapped folio remains on the deferred split queue. No exception is needed for up612's
    # 2 MiB folios queued at fault: while any page is mapped they are not "fully unmapped", and once the
    # last mapping goes the folio is freed at the gather flush, which takes it off the queue.
    for f in range(len(e.f_head)):
        if e.f_queued[f]:
            assert not e.f_freed[f], where
            assert e.f_nrpm[f] != 0, f"fully unmapped folio {f} still queued: {where}"
            # stronger: a queued folio is partially mapped, or is a PMD-order THP queued at fault (up612)
            n = e.f_nr[f]
            partial = 0 < e.f_nrpm[f] < n
            assert partial or (e.queue_pmd_thp_at_fault and n == HPAGE_PMD_NR), f"folio {f} queued: {where}"
        if e.f_pmapped[f]:
            assert e.f_queued[f], where

    assert c["bad_pte"] == 0, where
    assert 0 <= c["ds_spurious"] <= c["ds_adds"], where
    assert c["ds_adds"] <= c["ds_calls"], where
    return c


@SETTINGS
@given(workload_toml())
def test_invariants_every_version(text: str) -> None:
    spec = parse(text)
    freed = {}
    for vid in version_ids():
        c = check_state(vid, spec)
        freed[vid] = (c["pages_freed"], c["folios_freed"])
    assert len(set(freed.values())) == 1, f"pages/folios freed differ across versions: {freed}\n{text}"


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(workload_toml())
def test_deterministic(text: str) -> None:
    spec = parse(text)
    for vid in version_ids():
        first = simulate(spec, vid).counters
        again = simulate(parse(text), vid).counters
        assert first == again, vid


# Hand-picked larger layouts (> 9698 pages) so that gather-full events, and v1's mid-folio cuts, happen too.
LARGE_EXAMPLES = {
    "mix-partial-munmap": """description = "x"
[layout]
size = "40MiB"
va_offset = "32KiB"
folios = { "4KiB" = 0.25, "64KiB" = 0.5, "2MiB" = 0.25 }
arrangement = "shuffled"
seed = 5
swap_share = 0.5
[[zap]]
call = "madvise_dontneed"
start = "4KiB"
length = "60KiB"
every = "1MiB"
[[zap]]
call = "munmap"
start = "1MiB"
length = "38MiB"
""",
    "pmd-fork-exit": """description = "x"
[layout]
size = "40MiB"
folios = { "2MiB" = 0.5, "16KiB" = 0.5 }
pmd_mapped = true
fork = true
[[zap]]
call = "munmap"
start = "1MiB"
length = "2MiB"
measure = false
[[zap]]
call = "exit"
""",
    "pmd-partial-then-munmap": """description = "x"
[layout]
size = "48MiB"
folios = { "2MiB" = 0.5, "4KiB" = 0.5 }
pmd_mapped = true
swap_share = 0.25
[[zap]]
call = "madvise_dontneed"
start = "512KiB"
every = "4MiB"
length = "8KiB"
[[zap]]
call = "munmap"
""",
}


@pytest.mark.parametrize("name", sorted(LARGE_EXAMPLES))
def test_invariants_larger_layouts(name: str) -> None:
    spec = parse(LARGE_EXAMPLES[name])
    freed = {
        vid: (c["pages_freed"], c["folios_freed"]) for vid in version_ids() for c in [check_state(vid, spec)]
    }
    assert len(set(freed.values())) == 1, freed


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(workload_toml())
def test_up615_is_up612_with_the_large_mapcount_under_its_lock(text: str) -> None:
    """6.15 (CONFIG_MM_ID) changes how ``_large_mapcount`` is updated, not when: every atomic of up612 on it
    is one lock acquisition in up615, and every other counter is the same."""
    spec = parse(text)
    a, b = simulate(spec, "up612").counters, simulate(spec, "up615").counters
    assert (b["large_mapcount_atomics"], b["large_mapcount_locks"]) == (0, a["large_mapcount_atomics"])
    assert a["large_mapcount_locks"] == 0
    rest = set(a) - {"large_mapcount_atomics", "large_mapcount_locks"}
    assert {k: a[k] for k in rest} == {k: b[k] for k in rest}


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(workload_toml())
def test_inlined_rmap_counts_like_the_versions_rmap_function(text: str) -> None:
    """The 6.9+ zap loop inlines ``__folio_remove_rmap(RMAP_LEVEL_PTE)`` for speed; with ``inline_rmap``
    off it calls each version's ``folio_remove_rmap_ptes()`` instead. Both must count the same."""
    spec = parse(text)
    for vid in version_ids():
        cls = get_version(vid)
        if not hasattr(cls, "inline_rmap"):
            continue
        inlined = simulate(spec, vid).counters
        reference = type("Reference", (cls,), {"inline_rmap": False, "id": ""})
        engine = reference(spec)
        engine.run()
        assert engine.counters.as_dict() == inlined, vid
