"""Every registered version against the expected counters of the canonical workloads (a)-(g).

The expected numbers are *derived* here from the formulas of
docs/kernel-history.md#canonical-workloads-and-expected-counters (and from the zap-path semantics of the same
document where a formula leaves a gap), in terms of the workload's dimensions, which are computed from the
parsed workload, never from the engine:

    n   pages per large folio              N   large folios          P = N·n  pages in large folios
    Ns  order-0 pages (workload (e))       T   page tables touched   S   folios straddling a 2 MiB boundary
    M   v1 gather-full events that land mid-folio
    G65 = 9698 pages per gather flush up to 6.8; G69e = 4849 page+nr entries, G69p = 9678 single pages (6.9+)

Every version in the registry must have an expectation for every workload: a new version without one FAILS.
Where a plain formula leaves out a term that the kernel semantics put in, the test uses the full value and
says so with ``# Correction: see docs/engine-notes.md#5-corrections-to-the-expected-counters``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from conftest import load_variant

from benchsvc.engine import COUNTER_NAMES, simulate
from benchsvc.engine.versions import get_version, version_ids
from benchsvc.workload import PAGE_SIZE, WorkloadSpec

G65 = 9698  # 8 + 19*510 pages, one slot each (<= 6.8, v1-v4)
G69E = 4849  # 4 + 19*255 page+nr entries (6.9+)
G69P = 9678  # 7 + 19*509 single pages (6.9+)
PTRS = 512  # PTEs per page table
TABLE_BATCH = 509  # page tables per struct mmu_table_batch: (4096 - 24) / 8


def mm_id(row: dict[str, int]) -> dict[str, int]:
    """6.15+ with CONFIG_MM_ID: the same ``_large_mapcount`` updates, each made under
    ``folio_lock_large_mapcount()`` with ``atomic_set()`` (a lock acquisition, no atomic RMW)."""
    return {**row, "large_mapcount_atomics": 0, "large_mapcount_locks": row.get("large_mapcount_atomics", 0)}


# ---------------------------------------------------------------------------------------------- dimensions
@dataclass(frozen=True)
class Dims:
    """The quantities (n, N, Ns, P, T, S, M) of one workload, from its layout (sequential, order-0 pages first in (e))."""

    n: int  # pages per large folio
    N: int  # large folios
    Ns: int  # order-0 pages
    base: int  # va_offset in pages (the region starts this far past a 2 MiB boundary)

    @property
    def P(self) -> int:  # pages in large folios
        return self.N * self.n

    @property
    def pages(self) -> int:  # every page of the region
        return self.Ns + self.P

    @property
    def end(self) -> int:  # page index (from the 2 MiB boundary below the start) where the region ends
        return self.base + self.pages

    @property
    def T(self) -> int:  # page tables the region touches = zap_pte_range() calls without early breaks
        return -(-self.end // PTRS) - self.base // PTRS

    def boundaries(self) -> list[int]:
        """The 2 MiB boundaries strictly inside the region."""
        return list(range((self.base // PTRS + 1) * PTRS, self.end, PTRS))

    @property
    def S(self) -> int:  # large folios that cross a 2 MiB boundary
        first = self.base + self.Ns
        return sum(1 for b in self.boundaries() if b > first and (b - first) % self.n)

    # --- up to 6.8 (one slot per page): the k-th "full" is reported on the (G65·k)-th page gathered
    def fulls65(self, pages: int | None = None) -> list[int]:
        """Page numbers (1-based, in address order) at which the gather reports full (no forced flushes)."""
        return [G65 * k for k in range(1, (self.pages if pages is None else pages) // G65 + 1)]

    def reenters(self, page_end: int) -> bool:
        """An early break after the page ending at index ``page_end`` re-enters the same page table."""
        return page_end % PTRS != 0 and page_end != self.end

    def mid_folio(self, page_no: int) -> bool:
        """Page number ``page_no`` (1-based) is inside a large folio and not its last page."""
        return page_no > self.Ns and (page_no - self.Ns) % self.n != 0

    def straddles(self, page_no: int) -> bool:
        """The large folio holding page number ``page_no`` (1-based) crosses a 2 MiB boundary."""
        j = (page_no - self.Ns - 1) // self.n
        lo = self.base + self.Ns + j * self.n
        return any(lo < b < lo + self.n for b in self.boundaries())

    def ptl65(self) -> int:
        """PTL acquisitions of base65 / base65-p1 / v1: one per page table, plus one per mid-table full."""
        return self.T + sum(1 for p in self.fulls65() if self.reenters(self.base + p))

    @property
    def M(self) -> int:
        """v1 fulls that land mid-folio (9698k mod n != 0), i.e. that cut a span in two.

        A full on the last page of a straddling folio's first piece (a 2 MiB boundary) cuts nothing: the
        span ends there anyway."""
        return sum(1 for p in self.fulls65() if self.mid_folio(p) and (self.base + p) % PTRS)

    # --- 6.9+: the stream of gather entries (one per batch, batches never cross a page table)
    def entries69(self) -> list[tuple[int, int]]:
        """(end page index, pages) of every batch in address order; order-0 pages are single entries."""
        out = [(self.base + i + 1, 1) for i in range(self.Ns)]
        start = self.base + self.Ns
        cuts = sorted({start + self.n * j for j in range(1, self.N + 1)} | set(self.boundaries()))
        prev = start
        for c in cuts:
            if c > start:
                out.append((c, c - prev))
                prev = c
        return out

    def fulls69(self) -> list[int]:
        """Indexes (1-based) of the entries on which the 6.9+ gather reports full.

        docs/kernel-history.md#the-mmu_gather-and-its-capacity, slot by slot: a single page takes 1 slot, page+nr takes 2; after adding, full
        is checked as ``nr >= max - 1``; the local bundle has 8 slots, each batch page 510, at most 19 batch
        pages, which are kept (and reused) after a flush."""
        fulls, nr, cap, batch = [], 0, 8, 0
        for i, (_, pages) in enumerate(self.entries69(), 1):
            nr += 1 if pages == 1 else 2
            if nr >= cap - 1:
                if batch < 19:
                    batch, nr, cap = batch + 1, 0, 510
                else:
                    fulls.append(i)
                    batch, nr, cap = 0, 0, 8
        return fulls

    def ptl69(self) -> int:
        ents = self.entries69()
        return self.T + sum(1 for i in self.fulls69() if self.reenters(ents[i - 1][0]))


def dims_of(spec: WorkloadSpec) -> Dims:
    counts = dict(spec.folio_counts())
    assert spec.arrangement == "sequential"
    large = [(s, c) for s, c in spec.folio_counts() if s > PAGE_SIZE]
    assert len(large) == 1
    if PAGE_SIZE in counts:  # (e): the order-0 block must come first, as (e) is derived
        assert spec.folios[0][0] == PAGE_SIZE
    fsize, nfolios = large[0]
    d = Dims(
        n=fsize // PAGE_SIZE, N=nfolios, Ns=counts.get(PAGE_SIZE, 0), base=spec.va_offset_bytes // PAGE_SIZE
    )
    assert d.pages * PAGE_SIZE == spec.size_bytes
    return d


# ---------------------------------------------------------------------------- the expected-counter tables
Expect = dict[str, int]
Table = dict[str, Callable[[Dims], Expect]]

ZERO_DS = {"ds_calls": 0, "ds_adds": 0, "ds_spurious": 0, "ds_lock": 0, "split_deferred": 0}


def ds(calls: int, adds: int, spurious: int, lock: int, split_deferred: int | None = None) -> Expect:
    return {
        "ds_calls": calls,
        "ds_adds": adds,
        "ds_spurious": spurious,
        "ds_lock": lock,
        # versions before the per-size stat existed: split_deferred == ds_adds (docs/kernel-history.md#counters)
        "split_deferred": adds if split_deferred is None else split_deferred,
    }


def munmap_common(d: Dims) -> Expect:
    return {
        "ptes_cleared": d.pages,
        "nonpresent_cleared": 0,
        "mapcount_atomics": d.pages,  # one _mapcount atomic per page in every version
        "pages_freed": d.pages,
        "folios_freed": d.N + d.Ns,
        "bad_pte": 0,
        "partially_mapped_after": 0,
    }


def tables(d: Dims) -> int:
    """TLB flushes forced by the page-table batch of a munmap: freeing the T page tables fills a batch of
    TABLE_BATCH = 509 (MMU_GATHER_RCU_TABLE_FREE) floor(T / 509) times, and ``tlb_table_flush()`` flushes the
    TLB before handing a full batch to RCU (see docs/engine-notes.md; the live kernel showed
    5 flushes, not 4, for 1 GiB in 6.18)."""
    return d.T // TABLE_BATCH


def tlb65(d: Dims) -> int:
    """<= 6.8 without forced flushes: floor(pages/G65) + 1 (the final flush always runs: munmap frees tables),
    plus the table-batch flushes."""
    return d.pages // G65 + 1 + tables(d)


def gather65(d: Dims) -> int:
    """Gather passes with pages: one per full, plus the final one if pages were gathered after the last."""
    return d.pages // G65 + (1 if d.pages % G65 else 0)


def tlb69(d: Dims) -> int:
    return len(d.fulls69()) + 1 + tables(d)


def gather69(d: Dims) -> int:
    fulls = d.fulls69()
    return len(fulls) + (1 if len(d.entries69()) > (fulls[-1] if fulls else 0) else 0)


# (a), (c), (d), (g): munmap of a region of one large folio size (sequential, maybe offset: (c)).
# Spans / batches: a folio crossing a 2 MiB boundary is zapped in two pieces, so N + S of them.
def munmap_large(d: Dims) -> Table:
    assert d.Ns == 0
    N, P, S, M = d.N, d.P, d.S, d.M
    # M counts only cuts of non-straddling folios (a cut inside a straddler would add a ds call, no add)
    assert not any(d.straddles(p) for p in d.fulls65() if d.mid_folio(p) and (d.base + p) % PTRS)
    R = N + S  # spans (v2-v4) = batches (6.9+) = rmap calls without gather-full cuts
    c = munmap_common(d)
    base = {
        **c,
        "rmap_calls": P,
        "nr_pages_mapped_atomics": P,
        "large_mapcount_atomics": 0,
        "refcount_atomics": P,
        "stat_updates": P,  # one NR_ANON_MAPPED update per page
        "tlb_flushes": tlb65(d),
        "gather_flushes": gather65(d),
        "ptl_acquisitions": d.ptl65(),
    }
    # base65: only PMD-order folios are queued; a PTE-mapped THP is queued on its first page and
    # deferred_split_folio() is called for every page that became unmapped (512 calls per THP)
    base65 = {**base, **(ds(P, N, N, 2 * N) if d.n == 512 else ZERO_DS)}
    # base65-p1: every large folio is queued on its first page, all spurious, add + removal at free
    base65p1 = {**base, **ds(P, N, N, 2 * N)}
    # v1: a span per folio piece, cut once more by each mid-folio gather-full (M); the first piece of a cut
    # folio and of a straddling folio leaves it partially mapped: queued, spurious, add + free locks.
    # Correction: see docs/engine-notes.md#5-corrections-to-the-expected-counters.
    # Two plain formulas leave M out where the kernel semantics put it in:
    #  (c) v1 ds_lock is written "2S", but its ds_adds cell is "S (+ mid-folio gather-full events)" and each
    #      such add is also dequeued at free: 2(S + M) (66, not 64, at the shipped 64 MiB, where M = 1);
    #  (g) v1 ds_adds / ds_lock are written 0 / 0 (only ds_calls has the "unless a gather-full lands inside"
    #      caveat); at 64 MiB the first full (page 9698 = page 482 of THP 19) does land inside: M = 1, so
    #      ds_calls = ds_adds = ds_spurious = 1 and ds_lock = 2 (add + free), as in (a).
    v1 = {**base, "rmap_calls": R + M, "stat_updates": R + M, **ds(S + M, S + M, S + M, 2 * (S + M))}
    # v2/v3: forced flush + break after every span (the v2-v4 forced flush): one TLB flush, one gather pass and one
    # zap_pte_range() entry per span, plus the final flush (page tables freed); one _nr_pages_mapped atomic
    v2 = {
        **base,
        "rmap_calls": R,
        "stat_updates": R,
        "nr_pages_mapped_atomics": R,
        "tlb_flushes": R + 1 + tables(d),
        "gather_flushes": R,
        "ptl_acquisitions": R,
        **ds(S, S, S, 2 * S),
    }
    v4 = {**v2, "refcount_atomics": P + 2 * R}  # + folio_get()/folio_put() per span
    # 6.9+: one batch per folio piece, one page+nr gather entry (2 slots) each, folios_put_refs per entry.
    # (c): up610/up612 flushes are roughly (N+S)/4849 + 1; the exact value used here comes from the gather's
    # slot rule (Dims.fulls69): every piece, also a straddler's half, is a page+nr entry of 2 slots, so a full
    # every 4849 entries: floor((N+S)/4849) + 1 (the final flush always runs: page tables are freed).
    up = {
        **c,
        "rmap_calls": R,
        "stat_updates": R,
        "nr_pages_mapped_atomics": P,  # 6.9-6.11: per page that became unmapped
        "large_mapcount_atomics": 0,
        "refcount_atomics": R,
        "tlb_flushes": tlb69(d),
        "gather_flushes": gather69(d),
        "ptl_acquisitions": d.ptl69(),
    }
    up69 = {**up, **ds(R, N, N, 2 * N)}  # every PTE-level removal calls deferred_split_folio()
    up610 = {**up, "large_mapcount_atomics": R, **ds(S, S, S, 2 * S)}
    if d.n == 512:
        # (g) up612: PMD-order THPs are queued at fault (shrink_underused=1), so nothing is added during
        # the zap; a ds_lock of "1 at fault + 1 at free" would count the fault, which is not part of the measured
        # munmap: the zap itself takes the lock once per folio, to dequeue it at free (N)
        assert S == 0
        up612_ds = ds(0, 0, 0, N, 0)
    else:
        up612_ds = ds(S, S, S, 2 * S, S)  # the first flagging takes the lock; free takes it again
    up612 = {**up610, "nr_pages_mapped_atomics": R, **up612_ds}  # _nr_pages_mapped once per batch
    return {
        "base65": lambda _: base65,
        "base65-p1": lambda _: base65p1,
        "v1": lambda _: v1,
        "v2": lambda _: v2,
        "v3": lambda _: v2,
        "v4": lambda _: v4,
        "up69": lambda _: up69,
        "up610": lambda _: up610,
        "up612": lambda _: up612,
        "up615": lambda _: mm_id(up612),
    }


def table_a(d: Dims) -> Table:
    return munmap_large(d)


def table_b(d: Dims) -> Table:
    """(b): MADV_DONTNEED of the first page of each folio: N calls, each 1 PTL, 1 PTE, 1 rmap call, 1 TLB
    flush (no page tables freed; v2-v4's forced flush is the only flush of the call), 0 pages freed."""
    N = d.N
    common = {
        "ptes_cleared": N,
        "nonpresent_cleared": 0,
        "rmap_calls": N,
        "mapcount_atomics": N,
        "nr_pages_mapped_atomics": N,
        "large_mapcount_atomics": 0,
        "refcount_atomics": N,  # the gather drops the PTE's reference: one put per page / per entry
        "stat_updates": N,
        "tlb_flushes": N,
        "gather_flushes": N,
        "ptl_acquisitions": N,
        "pages_freed": 0,
        "folios_freed": 0,
        "bad_pte": 0,
        "partially_mapped_after": N,  # a layout fact: every folio keeps n-1 mapped pages
    }
    genuine = {**common, **ds(N, N, 0, N)}  # one genuine add per folio, lock once, no free
    return {
        "base65": lambda _: {**common, **ZERO_DS},  # order 4 is not PMD order: not eligible
        "base65-p1": lambda _: genuine,
        "v1": lambda _: genuine,
        "v2": lambda _: genuine,
        "v3": lambda _: genuine,
        "v4": lambda _: {**genuine, "refcount_atomics": 3 * N},  # + folio_get()/folio_put() of the span
        "up69": lambda _: genuine,
        "up610": lambda _: {**genuine, "large_mapcount_atomics": N},
        "up612": lambda _: {**genuine, "large_mapcount_atomics": N, **ds(N, N, 0, N, N)},
        "up615": lambda _: mm_id({**genuine, "large_mapcount_atomics": N, **ds(N, N, 0, N, N)}),
    }


def table_e(d: Dims) -> Table:
    """(e): Ns order-0 pages, then N large folios, one munmap, no boundary crossings."""
    Ns, N, P = d.Ns, d.N, d.P
    assert d.S == 0 and Ns % PTRS == 0
    M = d.M
    c = munmap_common(d)
    base = {
        **c,
        "rmap_calls": Ns + P,
        "nr_pages_mapped_atomics": P,
        "large_mapcount_atomics": 0,
        "refcount_atomics": Ns + P,
        "stat_updates": Ns + P,
        "tlb_flushes": tlb65(d),  # floor((Ns+P)/9698) + 1
        "gather_flushes": gather65(d),
        "ptl_acquisitions": d.ptl65(),
    }
    v2 = {
        **base,
        "rmap_calls": Ns + N,
        "stat_updates": Ns + N,
        "nr_pages_mapped_atomics": N,  # order-0 spans have no _nr_pages_mapped
        "tlb_flushes": Ns + N + 1 + tables(d),
        "gather_flushes": Ns + N,
        "ptl_acquisitions": Ns + N,
        **ZERO_DS,
    }
    # v4: order-0 pages take the baseline per-PTE path (no forced flush): floor(Ns/9698) fulls; every large
    # span forces a flush. "N + floor(Ns/9698) + 1" is exact when the first large
    # span is not cut by a full, i.e. (Ns mod 9698) + n <= 9698 (asserted), since later spans start with an
    # empty gather.
    assert Ns % G65 + d.n <= G65
    fulls0 = d.fulls65(Ns)
    v4 = {
        **v2,
        "refcount_atomics": Ns + P + 2 * N,
        "tlb_flushes": len(fulls0) + N + 1 + tables(d),
        "gather_flushes": len(fulls0) + N,
        "ptl_acquisitions": Ns // PTRS + sum(1 for p in fulls0 if d.reenters(d.base + p)) + N,
    }
    # 6.9+: "slot-accurate: order-0 = 1 slot, large = 2 slots; +1", counted by Dims.fulls69()
    up = {
        **c,
        "rmap_calls": Ns + N,
        "stat_updates": Ns + N,
        "nr_pages_mapped_atomics": P,
        "large_mapcount_atomics": 0,
        "refcount_atomics": Ns + N,
        "tlb_flushes": tlb69(d),
        "gather_flushes": gather69(d),
        "ptl_acquisitions": d.ptl69(),
    }
    return {
        "base65": lambda _: {**base, **ZERO_DS},
        "base65-p1": lambda _: {**base, **ds(P, N, N, 2 * N)},
        "v1": lambda _: {
            **base,
            "rmap_calls": Ns + N + M,
            "stat_updates": Ns + N + M,
            **ds(M, M, M, 2 * M),
        },
        "v2": lambda _: v2,
        "v3": lambda _: v2,
        "v4": lambda _: v4,
        "up69": lambda _: {**up, **ds(N, N, N, 2 * N)},
        "up610": lambda _: {**up, "large_mapcount_atomics": N, **ZERO_DS},
        "up612": lambda _: {**up, "large_mapcount_atomics": N, "nr_pages_mapped_atomics": N, **ZERO_DS},
        "up615": lambda _: mm_id(
            {**up, "large_mapcount_atomics": N, "nr_pages_mapped_atomics": N, **ZERO_DS}
        ),
    }


def table_f(d: Dims) -> Table:
    """(f): fork, then munmap in the child. Every page goes from _mapcount 1 to 0: nothing becomes
    unmapped, no _nr_pages_mapped change, no stat update, no deferred split call, nothing freed."""
    N, P, M = d.N, d.P, d.M
    c = {
        **munmap_common(d),
        "pages_freed": 0,
        "folios_freed": 0,
        "stat_updates": 0,
        "nr_pages_mapped_atomics": 0,
        "large_mapcount_atomics": 0,
        **ZERO_DS,
    }
    base = {
        **c,
        "rmap_calls": P,
        "refcount_atomics": P,
        "tlb_flushes": tlb65(d),
        "gather_flushes": gather65(d),
        "ptl_acquisitions": d.ptl65(),
    }
    # v2-v4: the forced flush fires whether or not anything is freed (N + 1 flushes); the v2 rmap range
    # does its one atomic_sub_return() on _nr_pages_mapped even when nr_unmapped == 0
    v2 = {
        **base,
        "rmap_calls": N,
        "nr_pages_mapped_atomics": N,
        "tlb_flushes": N + 1 + tables(d),
        "gather_flushes": N,
        "ptl_acquisitions": N,
    }
    up = {
        **c,
        "rmap_calls": N,
        "refcount_atomics": N,
        "tlb_flushes": tlb69(d),
        "gather_flushes": gather69(d),
        "ptl_acquisitions": d.ptl69(),
    }
    return {
        "base65": lambda _: base,
        "base65-p1": lambda _: base,
        # Correction: see docs/engine-notes.md#5-corrections-to-the-expected-counters. The plain formula is
        # "rmap calls: N (all batching versions)", but in v1 a gather-full still cuts a span mid-folio (the
        # full test does not depend on the mapcount), so v1 makes N + M calls, exactly as in (a); only the
        # deferred split is absent.
        "v1": lambda _: {**base, "rmap_calls": N + M},
        "v2": lambda _: v2,
        "v3": lambda _: v2,
        "v4": lambda _: {**v2, "refcount_atomics": P + 2 * N},
        "up69": lambda _: up,
        "up610": lambda _: {**up, "large_mapcount_atomics": N},  # atomic_sub on _large_mapcount per batch
        "up612": lambda _: {**up, "large_mapcount_atomics": N},  # "if (last && ...)": no _nr_pages_mapped op
        "up615": lambda _: mm_id({**up, "large_mapcount_atomics": N}),
    }


TABLES: dict[str, Callable[[Dims], Table]] = {
    "a": table_a,
    "b": table_b,
    "c": munmap_large,
    "d": munmap_large,
    "e": table_e,
    "f": table_f,
    "g": munmap_large,
}

STEMS = {
    "a": "a-munmap-aligned",
    "b": "b-dontneed-first-page",
    "c": "c-straddle-munmap",
    "d": "d-gather-full-mid-folio",
    "e": "e-mixed-order0-large",
    "f": "f-fork-child-munmap",
    "g": "g-pte-mapped-thp",
}

# (workload, file stem, layout.size override, va_offset override): every canonical workload at its shipped
# size and at least one other
CASES = [
    ("a", "a-munmap-aligned", None, None),
    ("a", "a-munmap-aligned", "100032KiB", None),  # not a multiple of 2 MiB: a last partial page table
    ("a", "a-munmap-aligned-1g", None, None),
    ("b", "b-dontneed-first-page", None, None),
    ("b", "b-dontneed-first-page", "10304KiB", None),
    ("c", "c-straddle-munmap", None, None),
    ("c", "c-straddle-munmap", "100MiB", None),
    ("c", "c-straddle-munmap", None, "2040KiB"),
    ("d", "d-gather-full-mid-folio", None, None),
    ("d", "d-gather-full-mid-folio", "76MiB", None),
    ("e", "e-mixed-order0-large", None, None),
    ("e", "e-mixed-order0-large", "96MiB", None),
    ("f", "f-fork-child-munmap", None, None),
    ("f", "f-fork-child-munmap", "100032KiB", None),
    ("g", "g-pte-mapped-thp", None, None),
    ("g", "g-pte-mapped-thp", "100MiB", None),
]


def _case_id(case: tuple[str, str, str | None, str | None]) -> str:
    _, stem, size, off = case
    return stem + (f"@{size}" if size else "") + (f"+{off}" if off else "")


_SPECS: dict[tuple[str, str | None, str | None], WorkloadSpec] = {}


def _spec(stem: str, size: str | None, off: str | None) -> WorkloadSpec:
    key = (stem, size, off)
    if key not in _SPECS:
        _SPECS[key] = load_variant(stem, size=size, va_offset=off)
    return _SPECS[key]


@pytest.mark.parametrize("version", version_ids())
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_canonical_counters(case: tuple[str, str, str | None, str | None], version: str) -> None:
    letter, stem, size, off = case
    spec = _spec(stem, size, off)
    d = dims_of(spec)
    table = TABLES[letter](d)
    assert version in table, (
        f"version {version!r} has no expectation for workload ({letter}): derive one in {__file__}"
    )
    expected = table[version](d)
    got = simulate(spec, version).counters
    diff = {k: (v, got[k]) for k, v in expected.items() if got[k] != v}
    assert not diff, f"({letter}) {spec.name} {version}: counter: (expected, engine) {diff} [{d}]"


@pytest.mark.parametrize("letter", sorted(TABLES))
def test_every_version_has_expectations(letter: str) -> None:
    """Every registered version has an expectation for every canonical workload, and no row is stale."""
    d = dims_of(_spec(STEMS[letter], None, None))
    table = TABLES[letter](d)
    assert set(table) == set(version_ids())
    for vid in table:
        assert set(table[vid](d)) <= set(COUNTER_NAMES)
        get_version(vid)


def test_canonical_dimensions() -> None:
    """The shipped canonical files have the shapes docs/kernel-history.md describes."""
    a = dims_of(_spec("a-munmap-aligned-1g", None, None))
    assert (a.P, a.N, a.T, a.n) == (262144, 16384, 512, 16)
    assert len(a.fulls65()) == 27 and a.M == 24  # (a): k = 8, 16, 24 are folio-aligned
    c = dims_of(_spec("c-straddle-munmap", None, None))
    assert c.S == 32  # the live kernel: split_deferred +32 on 6.18, one per straddled page-table boundary
    d = dims_of(_spec("d-gather-full-mid-folio", None, None))
    assert d.pages == 9728 and d.fulls65() == [G65]
    assert (G65 - 1) // d.n + 1 == 607 and (G65 - 1) % d.n + 1 == 2  # 2nd page of folio 607
    g = dims_of(_spec("g-pte-mapped-thp", None, None))
    assert g.n == 512 and G65 % 512 == 482 and g.M == 1
    e = dims_of(_spec("e-mixed-order0-large", None, None))
    assert (e.Ns, e.N, e.n) == (4096, 256, 16)


def test_gather_capacities() -> None:
    """The slot rule used for 6.9+ reproduces the gather's capacities: 4849 entries, 9678 single pages."""
    assert Dims(n=16, N=G69E, Ns=0, base=0).fulls69() == [G69E]
    assert Dims(n=16, N=G69E - 1, Ns=0, base=0).fulls69() == []
    singles = Dims(n=16, N=0, Ns=2 * G69P, base=0)
    assert singles.fulls69() == [G69P, 2 * G69P]


# docs/kernel-history.md#headline-numbers: (a) at 1 GiB of 64 KiB folios (P = 262144, N = 16384, T = 512)
HEADLINE = {
    # tlb_flushes: one more than the page-table-blind derivation, the flush of the full page-table batch
    # (512 tables > 509)
    "base65": (262144, 0, 0, 29, 539),
    "base65-p1": (262144, 16384, 32768, 29, 539),
    "v1": (16408, 24, 48, 29, 539),
    "v2": (16384, 0, 0, 16386, 16384),
    "v3": (16384, 0, 0, 16386, 16384),
    "v4": (16384, 0, 0, 16386, 16384),
    "up69": (16384, 16384, 32768, 5, 515),
    "up610": (16384, 0, 0, 5, 515),
    "up612": (16384, 0, 0, 5, 515),
    "up615": (16384, 0, 0, 5, 515),
}


@pytest.mark.parametrize("version", version_ids())
def test_headline_1g(version: str) -> None:
    assert version in HEADLINE, f"version {version!r} has no headline row"
    got = simulate(_spec("a-munmap-aligned-1g", None, None), version).counters
    rmap, adds, lock, tlb, ptl = HEADLINE[version]
    assert (got["rmap_calls"], got["ds_adds"], got["ds_spurious"], got["ds_lock"]) == (rmap, adds, adds, lock)
    assert (got["tlb_flushes"], got["ptl_acquisitions"]) == (tlb, ptl)
    assert (got["pages_freed"], got["folios_freed"]) == (262144, 16384)


@pytest.mark.parametrize("size", [None, "76MiB"])
def test_gather_full_lands_mid_folio(size: str | None) -> None:
    """(d): in v1 the k-th full lands on page 9698k; the first on the 2nd page of folio 607, so exactly
    that folio (index 606) is queued, with 16 - 2 pages still mapped."""
    spec = _spec("d-gather-full-mid-folio", size, None)
    d = dims_of(spec)
    expected = [((p - 1) // d.n, d.n - ((p - 1) % d.n + 1)) for p in d.fulls65()]
    assert expected[0] == (606, 14)
    for vid in version_ids():
        engine = get_version(vid)(spec)
        queued: list[tuple[int, int]] = []
        original = engine.deferred_split_folio

        def spy(f: int, *args: object, _orig=original, _e=engine, _q=queued, **kw: object) -> None:
            _q.append((f, _e.f_nrpm[f]))
            _orig(f, *args, **kw)

        engine.deferred_split_folio = spy  # type: ignore[method-assign]
        engine.run()
        if vid == "v1":
            assert queued == expected
        elif vid in ("base65-p1", "up69"):  # these queue every folio anyway (on its first page / batch)
            assert len({f for f, _ in queued}) == d.N
        else:
            assert queued == [], vid
