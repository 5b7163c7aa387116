"""One worker process of an interleaved measurement: ``python -m benchsvc.runner.interleave JOB.json OUT.json``.

pyperf's ``Runner`` measures one benchmark in its own processes, then the next one: "one alternative, then the
other", the scheme that reports identical systems as tens of percent apart on shared machines (Abedi & Brecht,
ICPE 2017). This worker measures **every version of one workload, and the canary, inside each trial**, in the
finest interleaving the work allows: for every zap call of a value, the versions (and the canary) take their
turn in a fresh random order, each rebuilding its address space untimed and then timing its measured zap
calls. A burst of a neighbour or a slow minute therefore lands on all of them alike, and the value ``j`` of
two versions in one process were measured side by side (the lineage analysis pairs them).

The clock is the thread's CPU time (``CLOCK_THREAD_CPUTIME_ID``), not wall time: the simulation is one
deterministic, single-threaded computation, and on a shared machine the dominant noise of a wall clock is the
time the thread spends preempted by a neighbour, which is not the simulator's cost (measured here with three
busy neighbours on two cores: per-trial spread of the v3/v2 ratio 43% on the wall clock, 1.5% on the thread's
CPU clock). What a neighbour still does to the CPU time (caches, memory bandwidth, frequency) the
interleaving spreads over all versions alike, and the canary records.

The result keeps pyperf's shape: a pyperf ``BenchmarkSuite`` file with one benchmark per version, each holding
one ``pyperf.Run`` of this process (values per call, warmups, pyperf's own system metadata plus ours: block,
process index, phase, clock, CPU affinity, start and end). The garbage collector is off during each timed call,
as in ``timeit``: a collection triggered by an earlier allocation is not the work being measured.

The job file (written by :mod:`benchsvc.runner.matrix`) is JSON: ``workload_file``, ``engine`` (``sim``),
``versions``, ``canary`` (bool), ``values``, ``warmups``, ``loops``, ``seed``, ``block``, ``process``,
``phase`` and optionally ``cpus`` (CPU affinity to set).
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchsvc.runner.worker import ERROR_PREFIX, NAME_FORMAT

#: the measurement schemes (docs/measurement.md)
INTERLEAVED = "interleaved"
#: the clock of the simulated versions and the canary: the calling thread's CPU time
CLOCK = time.thread_time
CLOCK_NAME = "thread_cpu"
CLOCK_DESCRIPTION = "clock_gettime(CLOCK_THREAD_CPUTIME_ID), resolution: {:.2f} ns"


@dataclass(frozen=True)
class Job:
    workload_file: str
    versions: tuple[str, ...]
    values: int
    warmups: int
    loops: int
    seed: int
    block: str
    process: int
    engine: str = "sim"
    canary: bool = True
    phase: str = "primary"
    cpus: tuple[int, ...] = ()
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "workload_file": self.workload_file,
                "versions": list(self.versions),
                "values": self.values,
                "warmups": self.warmups,
                "loops": self.loops,
                "seed": self.seed,
                "block": self.block,
                "process": self.process,
                "engine": self.engine,
                "canary": self.canary,
                "phase": self.phase,
                "cpus": list(self.cpus),
                "extra_metadata": self.extra_metadata,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        return cls(
            workload_file=d["workload_file"],
            versions=tuple(d["versions"]),
            values=int(d["values"]),
            warmups=int(d["warmups"]),
            loops=int(d["loops"]),
            seed=int(d["seed"]),
            block=str(d["block"]),
            process=int(d["process"]),
            engine=d.get("engine", "sim"),
            canary=bool(d.get("canary", True)),
            phase=d.get("phase", "primary"),
            cpus=tuple(d.get("cpus", ())),
            extra_metadata=dict(d.get("extra_metadata", {})),
        )


def sim_timer(spec: Any, version: str) -> Callable[[], float]:
    """One zap call of ``version``: build its address space untimed, return the seconds of its measured zaps."""
    from benchsvc.engine.versions import get_version

    cls = get_version(version)

    def one_call() -> float:
        engine = cls(spec)  # the rebuild, untimed
        gc.disable()
        try:
            return engine.run(timer=CLOCK)
        finally:
            gc.enable()

    return one_call


def canary_timer() -> Callable[[], float]:
    from benchsvc.runner.canary import time_canary

    def one_call() -> float:
        gc.disable()
        try:
            return time_canary(CLOCK)
        finally:
            gc.enable()

    return one_call


#: a value's zap calls cover at least this much measured time: after the warm-up trial, the loops of a tiny zap
#: are multiplied by a power of two (at most :data:`MAX_LOOPS_FACTOR`). Measured on pmd-mapped-thp-munmap (37 us
#: a call): 4 calls a value gave a 4.7-5.2% process-to-process spread of the v3/v2 ratio, 32 calls 1.8-2.6%
MIN_VALUE_S = 1e-3
MAX_LOOPS_FACTOR = 16


def loops_factor(seconds_per_call: float, loops: int, min_value_s: float = MIN_VALUE_S) -> int:
    """The power of two (1 to :data:`MAX_LOOPS_FACTOR`) that makes ``loops`` calls of ``seconds_per_call``
    last at least ``min_value_s``; 1 for a zap that already does, or an unknown duration."""
    if not seconds_per_call > 0 or loops * seconds_per_call >= min_value_s:
        return 1
    return min(MAX_LOOPS_FACTOR, 2 ** math.ceil(math.log2(min_value_s / (loops * seconds_per_call))))


def measure(
    timers: dict[str, Callable[[], float]],
    values: int,
    warmups: int,
    loops: int,
    rng: random.Random,
    min_value_s: float = 0.0,
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Interleave the timers call by call: for each of ``loops`` calls of each of ``warmups + values`` trials,
    every timer runs once, in a fresh random order. With ``min_value_s`` and at least one warm-up trial, the
    value trials make ``loops * loops_factor(...)`` calls (the median per-call time of the warm-up). Returns
    (values, warmups) per timer, in seconds per call, and the calls per value."""
    names = list(timers)
    out: dict[str, list[float]] = {n: [] for n in names}
    warm: dict[str, list[float]] = {n: [] for n in names}
    calls = loops
    for trial in range(warmups + values):
        if trial == warmups and warmups and min_value_s > 0:
            calls = loops * loops_factor(statistics.median(w[-1] for w in warm.values()), loops, min_value_s)
        sums = dict.fromkeys(names, 0.0)
        for _ in range(calls):
            order = names[:]
            rng.shuffle(order)
            for name in order:
                sums[name] += timers[name]()
        target = warm if trial < warmups else out
        for name in names:
            target[name].append(sums[name] / calls)
    return out, warm, calls


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="microseconds")


def run_job(job: Job) -> Any:
    """Measure the job in this process; returns a pyperf BenchmarkSuite."""
    import pyperf

    from benchsvc.runner.canary import ENGINE as CANARY_ENGINE
    from benchsvc.runner.canary import VERSION as CANARY_VERSION
    from benchsvc.runner.canary import WORKLOAD as CANARY_WORKLOAD
    from benchsvc.workload import load_workload

    if job.engine != "sim":
        raise SystemExit(f"{ERROR_PREFIX}interleaved measurement takes the sim engine, not {job.engine!r}")
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    spec = load_workload(job.workload_file)
    # Test hook: BENCHSVC_TEST_FAIL_WORKER="<version>/<workload>" makes this worker fail (tests of failures)
    hook = os.environ.get("BENCHSVC_TEST_FAIL_WORKER")
    if hook and hook in {f"{v}/{spec.name}" for v in job.versions}:
        raise SystemExit(f"{ERROR_PREFIX}injected failure for {hook} (BENCHSVC_TEST_FAIL_WORKER)")
    timers: dict[str, Callable[[], float]] = {v: sim_timer(spec, v) for v in job.versions}
    names = {v: NAME_FORMAT.format(engine=job.engine, version=v, workload=spec.name) for v in job.versions}
    if job.canary:
        timers[CANARY_VERSION] = canary_timer()
        names[CANARY_VERSION] = NAME_FORMAT.format(
            engine=CANARY_ENGINE, version=CANARY_VERSION, workload=CANARY_WORKLOAD
        )
    started = _now()
    t0 = time.perf_counter()
    values, warmups, loops = measure(
        timers, job.values, job.warmups, job.loops, random.Random(job.seed), MIN_VALUE_S
    )
    duration = time.perf_counter() - t0
    common = {
        "loops": loops,
        "duration": duration,
        "benchsvc_measurement": INTERLEAVED,
        "benchsvc_block": job.block,
        "benchsvc_process": job.process,
        "benchsvc_phase": job.phase,
        "benchsvc_seed": job.seed,
        "benchsvc_started": started,
        "benchsvc_ended": _now(),
        "benchsvc_interleaved_with": ",".join(timers),
        "cpu_affinity": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))),
        "timer": CLOCK_DESCRIPTION.format(time.get_clock_info("thread_time").resolution * 1e9),
        "benchsvc_clock": CLOCK_NAME,
        "benchsvc_pid": os.getpid(),
        **job.extra_metadata,
    }
    benchmarks = []
    for key, name in names.items():
        run = pyperf.Run(
            values[key],
            warmups=[(job.loops, w) for w in warmups[key]],
            metadata={**common, "name": name},
        )
        benchmarks.append(pyperf.Benchmark([run]))
    return pyperf.BenchmarkSuite(benchmarks)


def serve(module: str, measure_job: Callable[[str], Any], argv: list[str] | None = None) -> None:
    """The body of a measuring worker process: ``python -m MODULE JOB.json OUT.json``; ``measure_job`` takes
    the job file's text and returns the pyperf BenchmarkSuite written to OUT.json."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        raise SystemExit(f"usage: python -m {module} JOB.json OUT.json")
    text = Path(args[0]).read_text()
    from benchsvc.kernel.worker import die_with_parent

    die_with_parent()  # no worker outlives a killed run
    measure_job(text).dump(args[1], replace=True)


def main(argv: list[str] | None = None) -> None:
    serve("benchsvc.runner.interleave", lambda text: run_job(Job.from_json(text)), argv)


if __name__ == "__main__":
    main()
