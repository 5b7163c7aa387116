"""The modelled cost of a zap, from its counters (docs/kernel-history.md#cost-model-inputs).

``modeled_ns = sum(coefficient[name] * counter[name])`` over the counters below. The defaults are a model of
an x86-64 server core, calibrated so that ``up612`` against ``base65-p1`` reproduces the direction and rough
size of David Hildenbrand's per-folio-size munmap table
(docs/kernel-history.md#the-munmap-table-the-cost-model-is-calibrated-on; ``benchmarks/calibrate_cost.py``
prints the comparison). Each coefficient's source is in :data:`DEFAULT_COEFFICIENTS_DOC`; override any of them with a
TOML file of ``name = nanoseconds`` lines (``benchsvc simulate --cost FILE``).

These are the *reference* coefficients. ``benchsvc calibrate`` fits them to the machine's own kernel
(docs/cost-model.md) and stores the result; what is shown is priced with the machine's latest calibrated
model (:func:`benchsvc.store.cost_models.cost_model_for`), the reference model only without one.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from benchsvc.errors import CostModelError

#: counter -> (default ns per event, where the number comes from)
DEFAULT_COEFFICIENTS_DOC: dict[str, tuple[float, str]] = {
    "ptes_cleared": (
        20.0,
        "per present PTE: loop, vm_normal_page(), xchg clear; fitted so that up69 at 2 MiB folios gives "
        "David's 9.9 ms per GiB (37.8 ns/page)",
    ),
    "nonpresent_cleared": (60.0, "per swap entry: free_swap_and_cache() swap-slot release; assumption"),
    "rmap_calls": (15.0, "call, sanity checks and branches of the rmap function; assumption"),
    "mapcount_atomics": (8.0, "uncontended atomic RMW, ~20 cycles at 2.5 GHz (assumption)"),
    "nr_pages_mapped_atomics": (8.0, "as mapcount_atomics"),
    "large_mapcount_atomics": (8.0, "as mapcount_atomics"),
    "large_mapcount_locks": (
        10.0,
        "folio_lock_large_mapcount(): one test_and_set_bit_lock() (an atomic RMW) plus the unlock's release "
        "store; the atomic_read()/atomic_set() inside are plain accesses; assumption",
    ),
    "refcount_atomics": (8.0, "as mapcount_atomics"),
    "stat_updates": (20.0, "__lruvec_stat_mod_folio(): memcg + node per-cpu stats; assumption"),
    "ds_calls": (3.0, "deferred_split_folio() entry and lockless list_empty() probe; assumption"),
    "ds_lock": (
        60.0,
        "spin_lock_irqsave pair plus list update; fitted with the large-folio per-folio cost of David's "
        "mm-unstable column (about 300 ns per folio against 130 for order-0)",
    ),
    "tlb_flushes": (
        1000.0,
        "local full TLB flush plus x86 flush_tlb_mm_range() overhead, no remote CPU (assumption)",
    ),
    "gather_flushes": (200.0, "one tlb_batch_pages_flush() pass: cond_resched, batch walk; assumption"),
    "ptl_acquisitions": (30.0, "pte_offset_map_lock/unlock, lazy MMU mode, add_mm_rss_vec(); assumption"),
    "folios_freed": (
        130.0,
        "freeing one folio (uncharge, LRU removal, buddy): David's 4 KiB column minus the 2 MiB one, "
        "58.1 ms - 23.8 ms over 262144 folios",
    ),
    "pages_freed": (0.0, "page freeing is charged per folio (folios_freed)"),
}


@dataclass(frozen=True)
class CostModel:
    """Nanoseconds per counted event; counters not named cost nothing.

    ``kind`` says which model priced a cost: ``"reference"`` (the shipped coefficients, not fitted to any
    machine's kernel) or ``"calibrated"`` (fitted by ``benchsvc calibrate`` on one machine's live kernel).
    A calibrated model carries its hold-out error (relative error of predicted against measured kernel time
    on layouts left out of the fit: median and worst) and its provenance (machine, kernel release, date,
    suite hash). Every cost shown to a reader names its model through :meth:`label`.
    """

    coefficients: Mapping[str, float] = field(default_factory=dict)
    source: str = "default"
    kind: str = "reference"
    holdout_median: float | None = None
    holdout_worst: float | None = None
    provenance: Mapping[str, str] = field(default_factory=dict)

    def label(self) -> str:
        """One line naming the model that priced a cost, and how well it predicts the kernel."""
        if self.kind != "calibrated":
            return f"reference model ({self.source}; not fitted to this machine's kernel)"
        where = ", ".join(
            f"{k} {v}" for k, v in self.provenance.items() if k in ("machine", "kernel", "date")
        )
        err = ""
        if self.holdout_median is not None and self.holdout_worst is not None:
            err = f"; hold-out error {self.holdout_median:.0%} median, {self.holdout_worst:.0%} worst"
        stale = ""
        if self.stale:
            stale = (
                f"; STALE: fitted on kernel {self.provenance.get('kernel', '?')}, running "
                f"{self.provenance.get('running_kernel', '?')} (run benchsvc calibrate)"
            )
        return f"calibrated model ({where}{err}{stale})"

    @property
    def stale(self) -> bool:
        """A calibrated model fitted on another (older) kernel release than the one running now: set by
        :func:`benchsvc.store.cost_models.cost_model_for` as ``provenance["stale"] == "yes"``."""
        return self.kind == "calibrated" and self.provenance.get("stale") == "yes"

    @classmethod
    def default(cls) -> CostModel:
        return cls({name: ns for name, (ns, _) in DEFAULT_COEFFICIENTS_DOC.items()}, "default")

    @classmethod
    def from_file(cls, path: str | Path) -> CostModel:
        """Defaults overridden by a TOML file of ``counter_name = ns_per_event`` (unknown names rejected)."""
        from benchsvc.engine.counters import COUNTER_NAMES

        label = str(path)
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CostModelError(f"{label}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CostModelError(f"{label}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise CostModelError(f"{label}: not valid TOML: {exc}") from None
        coefficients = dict(cls.default().coefficients)
        for name, value in doc.items():
            if name not in COUNTER_NAMES:
                raise CostModelError(f"{label}: {name}: not a counter name (see benchsvc simulate --json)")
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise CostModelError(f"{label}: {name}: {value!r} is not a non-negative number of ns")
            coefficients[name] = float(value)
        return cls(coefficients, label)

    def modeled_ns(self, counters: Mapping[str, int]) -> float:
        return float(sum(ns * counters.get(name, 0) for name, ns in self.coefficients.items()))
