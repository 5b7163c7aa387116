"""The simulated zap engine: deterministic counters and modelled cost per version.

What it models: docs/kernel-history.md; how: docs/engine-notes.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from benchsvc.engine.cost import CostModel
from benchsvc.engine.counters import COUNTER_NAMES, Counters
from benchsvc.engine.versions import get_version
from benchsvc.workload import WorkloadSpec

__all__ = ["COUNTER_NAMES", "CostModel", "Counters", "SimResult", "simulate", "time_measured_zaps"]


@dataclass(frozen=True)
class SimResult:
    workload: str
    version: str
    counters: dict[str, int]
    modeled_ns: float

    def as_json(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "version": self.version,
            "counters": self.counters,
            "modeled_ns": self.modeled_ns,
        }


def simulate(spec: WorkloadSpec, version: str, cost: CostModel | None = None) -> SimResult:
    """Run one deterministic simulation of ``spec`` in ``version``."""
    engine = get_version(version)(spec)
    engine.run()
    counters = engine.counters.as_dict()
    model = cost or CostModel.default()
    return SimResult(spec.name, version, counters, model.modeled_ns(counters))


def time_measured_zaps(
    spec: WorkloadSpec, version: str, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Build the address space (untimed), run the steps, return seconds spent in the measured zap calls
    (``clock``: wall time by default; ``time.thread_time`` for CPU time, which other load does not stretch)."""
    engine = get_version(version)(spec)
    return engine.run(timer=clock)
