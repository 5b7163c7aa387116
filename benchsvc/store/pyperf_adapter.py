"""pyperf results as stored values: the one reading of a pyperf benchmark, used by the runner (the files its
workers write) and by ``benchsvc import`` (a pyperf JSON file from anywhere).

A benchmark becomes :class:`PyperfTimings`: one :class:`~benchsvc.records.ProcessValues` per pyperf run
that has values (calibration runs, which have only warmups, are left out), the metadata common to those
runs, and pyperf's own stability warnings.

**Loops.** pyperf stores each value already divided by the iterations it timed: ``loops`` (the outer loop
of the worker) times ``inner_loops`` (iterations inside one timed call, 1 unless the benchmark sets it).
``Run.get_loops()`` is nothing but the run's ``loops`` metadata (default 1), so the two readings the
runner and the importer used to take are the same number; both miss ``inner_loops``. What a stored value
averages over is :meth:`pyperf.Run.get_total_loops` (``loops`` × ``inner_loops``), the factor that turns a
value back into the raw time of a timed call: that is what ``loops`` holds. Warmup values are stored
without their (calibration) loop counts, as before.

**Metadata.** Only JSON scalars are kept (strings, integers, booleans and finite floats): a NaN or an
infinity is dropped wherever it appears (the benchmark's or a run's metadata), because neither JSON
export nor PostgreSQL's JSON can hold it. The same rule applies to both levels and to both callers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchsvc.records import ProcessValues

#: kept with every process even when all processes agree: what pairing and the interleaving checks read
PROCESS_KEYS = (
    "benchsvc_measurement",
    "benchsvc_cpus",
    "benchsvc_warmup_cpus",
    "benchsvc_side",
    "benchsvc_edge",
    "benchsvc_block",
    "benchsvc_process",
    "benchsvc_phase",
    "benchsvc_clock",
    "benchsvc_started",
    "benchsvc_ended",
    "cpu_affinity",
    "date",
    "duration",
)


@dataclass(frozen=True)
class PyperfTimings:
    """A pyperf benchmark as stored: its worker processes, common metadata and stability warnings."""

    processes: tuple[ProcessValues, ...]
    metadata: dict[str, Any]
    warnings: tuple[str, ...]


def storable(value: Any) -> bool:
    """Whether a metadata value is stored: a string, integer, boolean or finite float."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


def stored_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The storable entries of a metadata mapping (:func:`storable`)."""
    return {k: v for k, v in metadata.items() if storable(v)}


def _common(metadatas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The entries that every mapping holds with the same value."""
    if not metadatas:
        return {}
    first, *rest = metadatas
    return {k: v for k, v in first.items() if all(k in m and m[k] == v for m in rest)}


def timings(bench: Any, *, ignore_checks: Iterable[str] = ()) -> PyperfTimings:
    """A ``pyperf.Benchmark`` as stored values.

    Each process keeps the metadata of its own that differs from the common metadata, and
    :data:`PROCESS_KEYS` always. ``ignore_checks``: pyperf warnings that do not apply to how the values
    were measured (left out when a line contains one of them)."""
    runs = [r for r in bench.get_runs() if r.values]
    own = [stored_metadata(r.get_metadata()) for r in runs]
    common = _common(own)
    processes = tuple(
        ProcessValues(
            values=tuple(float(x) for x in r.values),
            warmups=tuple(float(x) for _, x in r.warmups),
            loops=int(r.get_total_loops()),
            metadata={k: v for k, v in md.items() if k in PROCESS_KEYS or common.get(k) != v},
        )
        for r, md in zip(runs, own, strict=True)
    )
    ignored = tuple(ignore_checks)
    warnings = tuple(w for w in pyperf_warnings(bench) if not any(n in w for n in ignored))
    return PyperfTimings(processes, common, warnings)


def pyperf_warnings(bench: Any) -> list[str]:
    """pyperf's stability warnings for a benchmark (the ``* ...`` lines of its own check)."""
    try:
        from pyperf._cli import format_checks  # not public API; pyperf is pinned
    except ImportError:  # pragma: no cover
        return []
    return [line[2:] for line in format_checks(bench) if line.startswith("* ")]


def load_timings(path: str | Path) -> PyperfTimings:
    """The one benchmark of a pyperf JSON file a worker wrote (``benchsvc.runner.worker -o``)."""
    import pyperf

    suite = pyperf.BenchmarkSuite.load(str(path))
    return timings(suite.get_benchmarks()[0])


#: pyperf warnings the paired design expects, with what they mean there. A value of a block is one
#: interleaved trial of many zap calls; the timing intervals come from per-process paired ratios (or
#: per-process means), never from the spread of the raw values, so these say nothing about a comparison.
EXPECTED_WARNINGS: dict[str, str] = {
    "the standard deviation": "the spread of the raw values is 10% of the mean or more: the versions are "
    "measured interleaved in random order (caches and frequency differ trial by trial) and the interval "
    "compares them pairwise within each worker process, which cancels that spread",
    "Not enough samples": "pyperf's own rule of thumb for an unpaired mean to within 1%; the paired ratios "
    "need fewer processes (their interval and the run's A/A noise floor say how precise they are)",
}


def expected_warning(text: str) -> str | None:
    """The key of :data:`EXPECTED_WARNINGS` that ``text`` is an instance of, or None (an unexpected warning:
    outliers, a value far from the mean, anything else, which stays loud)."""
    return next((key for key in EXPECTED_WARNINGS if text.startswith(key)), None)
