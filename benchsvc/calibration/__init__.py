"""Calibrate the cost model on this machine's live kernel (docs/cost-model.md).

Library API (no printing)::

    from benchsvc.calibration import calibrate

    cal = calibrate(rounds=9, progress=lambda done, total, secs: ...)
    cal.model            # a CostModel of kind "calibrated", with hold-out error and provenance
    cal.fit              # coefficients, bootstrap intervals, merged counters, fit quality

``benchsvc calibrate`` runs it and stores the model (:mod:`benchsvc.store.cost_models`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import statistics
from dataclasses import dataclass

from benchsvc.calibration.fitting import FitResult, fit
from benchsvc.calibration.measure import Measurements, Progress, env_description, measure
from benchsvc.calibration.suite import holdout, suite, suite_hash
from benchsvc.engine.cost import CostModel
from benchsvc.errors import BenchsvcError
from benchsvc.workload import WorkloadSpec

#: rounds of the suite: every layout measured this many times, interleaved (about 5 s a round here)
DEFAULT_ROUNDS = 9


class CalibrationError(BenchsvcError):
    """The suite could not be measured well enough to fit (too many layouts not reproduced)."""


@dataclass(frozen=True)
class Calibration:
    model: CostModel
    fit: FitResult
    measurements: Measurements
    version: str
    kernel_release: str
    hostname: str
    created_at: dt.datetime
    suite_hash: str
    load: str


def counters_of(specs: list[WorkloadSpec], version: str) -> list[dict[str, int]]:
    from benchsvc.engine import simulate

    return [simulate(s, version).counters for s in specs]


def calibrate(
    rounds: int = DEFAULT_ROUNDS,
    progress: Progress | None = None,
    specs: list[WorkloadSpec] | None = None,
    bootstrap: int | None = None,
) -> Calibration:
    """Measure the suite on the live kernel, fit the version that models it, return the calibrated model.

    Raises :class:`~benchsvc.errors.KernelUnavailable` before changing anything when the kernel cannot be
    used, :class:`CalibrationError` when fewer than 3/4 of the layouts could be measured."""
    from benchsvc.crosscheck import sim_version

    layouts = specs if specs is not None else suite()
    release = os.uname().release
    version = sim_version(release)
    load = env_description()
    m = measure(layouts, rounds=rounds, progress=progress)
    usable = [s for s in layouts if m.times_ns.get(s.name)]
    if len(usable) < max(3, 3 * len(layouts) // 4):
        reasons = "; ".join(f"{k}: {v}" for k, v in list(m.failures.items())[:3])
        raise CalibrationError(
            f"only {len(usable)} of {len(layouts)} calibration layouts could be measured ({reasons}) — "
            "check that nothing else changes the mTHP settings, then run benchsvc calibrate again"
        )
    y = [m.median_ns(s.name) for s in usable]
    kwargs = {} if bootstrap is None else {"bootstrap": bootstrap}
    result = fit(counters_of(usable, version), y, [s.name for s in usable], **kwargs)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    host = socket.gethostname()
    digest = suite_hash(layouts)
    model = CostModel(
        coefficients=result.coefficients,
        source=f"calibrated on {host}",
        kind="calibrated",
        holdout_median=result.holdout_median,
        holdout_worst=result.holdout_worst,
        provenance={
            "machine": host,
            "kernel": release,
            "date": now.strftime("%Y-%m-%d %H:%M"),
            "suite": digest,
            "version": version,
        },
    )
    return Calibration(model, result, m, version, release, host, now, digest, load)


def predicted_vs_measured(
    model: CostModel, specs: list[WorkloadSpec], m: Measurements, version: str
) -> list[tuple[str, float, float]]:
    """(layout, predicted ns, measured median ns) for every measured layout."""
    out = []
    for spec, counters in zip(specs, counters_of(specs, version), strict=True):
        if m.times_ns.get(spec.name):
            out.append(
                (spec.name, model.modeled_ns(counters), float(statistics.median(m.times_ns[spec.name])))
            )
    return out


__all__ = [
    "DEFAULT_ROUNDS",
    "Calibration",
    "CalibrationError",
    "calibrate",
    "holdout",
    "measure",
    "predicted_vs_measured",
    "suite",
    "suite_hash",
]
