"""The engine's counters (docs/kernel-history.md#counters).

Names are fixed: tests, the database and reports rely on them.
"""

from __future__ import annotations

COUNTER_NAMES: tuple[str, ...] = (
    "ptes_cleared",
    "nonpresent_cleared",
    "rmap_calls",
    "mapcount_atomics",
    "nr_pages_mapped_atomics",
    "large_mapcount_atomics",
    "large_mapcount_locks",
    "refcount_atomics",
    "stat_updates",
    "ds_calls",
    "ds_adds",
    "ds_spurious",
    "ds_lock",
    "split_deferred",
    "tlb_flushes",
    "gather_flushes",
    "ptl_acquisitions",
    "pages_freed",
    "folios_freed",
    "bad_pte",
    "partially_mapped_after",
    # beyond the zap loop: what a call costs around it (docs/cost-model.md#counters-beyond-the-zap-loop)
    "syscalls",
    "mmap_lock_acquisitions",
    "vma_splits",
    "vmas_removed",
    "pt_pages_freed",
    "pmd_zaps",
    "pmd_splits",
    "puts_without_free",
    "measured_steps",
    "forked_children",
)


class Counters:
    """Integer counters of the measured zap work, one attribute per name in :data:`COUNTER_NAMES`."""

    __slots__ = COUNTER_NAMES

    ptes_cleared: int
    nonpresent_cleared: int
    rmap_calls: int
    mapcount_atomics: int
    nr_pages_mapped_atomics: int
    large_mapcount_atomics: int
    large_mapcount_locks: int
    refcount_atomics: int
    stat_updates: int
    ds_calls: int
    ds_adds: int
    ds_spurious: int
    ds_lock: int
    split_deferred: int
    tlb_flushes: int
    gather_flushes: int
    ptl_acquisitions: int
    pages_freed: int
    folios_freed: int
    bad_pte: int
    partially_mapped_after: int
    syscalls: int
    mmap_lock_acquisitions: int
    vma_splits: int
    vmas_removed: int
    pt_pages_freed: int
    pmd_zaps: int
    pmd_splits: int
    puts_without_free: int
    measured_steps: int
    forked_children: int

    def __init__(self) -> None:
        for name in COUNTER_NAMES:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}

    def add(self, other: Counters) -> None:
        for name in COUNTER_NAMES:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def __repr__(self) -> str:
        nonzero = ", ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"Counters({nonzero})"
