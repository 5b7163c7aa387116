"""Interleaved measurement blocks: every simulated version of one workload, and the canary, measured together.

A **block** is one workload's simulated versions of a run. It is measured by ``processes`` worker processes
(:mod:`benchsvc.runner.interleave`) one after the other, each interleaving every version and the canary call by
call in a fresh random order (docs/measurement.md). What comes back is, per version, one
:class:`~benchsvc.records.ProcessValues` per worker process with that process's metadata (block id, process
index, phase, CPU affinity, start and end), and the canary's values of the same processes.

When a block's worker fails, each version is measured again alone (with the canary) so that only the version
that fails is recorded as failed.

With the ``duet`` pairing (:mod:`benchsvc.runner.duet`) a block is measured edge by edge instead: every lineage
edge (version, parent) among the block's versions is measured by two pinned processes at the same moment,
each edge and worker process in a measurement block of its own (:func:`duet_edges` says which edges).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchsvc.records import ProcessValues
from benchsvc.runner.duet import DUET
from benchsvc.runner.interleave import INTERLEAVED
from benchsvc.store.pyperf_adapter import timings

#: a worker process of a block never takes longer than this
BLOCK_WORKER_TIMEOUT_S = 1800
#: pyperf's check of the shortest raw value is about timing a whole loop with one clock read; our values are
#: sums of individually timed zap calls, each read with perf_counter(), so it does not apply and is dropped
_NOT_APPLICABLE_CHECKS = ("shortest raw value",)


@dataclass(frozen=True)
class Sampling:
    """How much one block measures: worker processes, values per process, warmup values, zap calls per value.

    A value is the mean of ``loops`` individually timed zap calls (a fixed count: no calibration, so a tiny zap
    costs no more start-up than a large one)."""

    processes: int
    values: int
    warmups: int
    loops: int

    def as_dict(self) -> dict[str, int]:
        return {
            "processes": self.processes,
            "values": self.values,
            "warmups": self.warmups,
            "loops": self.loops,
        }


#: the sampling of each mode (docs/running.md and docs/measurement.md)
SAMPLING: dict[str, Sampling] = {
    "quick": Sampling(processes=2, values=3, warmups=1, loops=2),
    "default": Sampling(processes=6, values=6, warmups=1, loops=4),
    "rigorous": Sampling(processes=12, values=8, warmups=1, loops=6),
    "debug": Sampling(processes=1, values=1, warmups=0, loops=1),
}
#: modes whose sampling supports timing intervals, timing findings and machine events. A run of any other
#: mode stores its timings and counters, and its counters are analysed, but no timing interval is drawn
#: and no timing finding or machine event is recorded from it (docs/measurement.md).
TIMING_INFERENCE_MODES: frozenset[str] = frozenset({"default", "rigorous"})


def supports_timing_inference(mode: str) -> bool:
    """Whether a run of ``mode`` is sampled enough for timing intervals, timing findings and machine events."""
    return mode in TIMING_INFERENCE_MODES


#: extra worker processes of a confirmation re-measurement, per mode
CONFIRM_PROCESSES: dict[str, int] = {"quick": 3, "default": 4, "rigorous": 8, "debug": 1}


class BlockWorkerFailed(Exception):
    """A worker process of a block failed; the message says why (stored as the result's error)."""


@dataclass
class BlockTimings:
    """What a block's worker processes measured: per version (and the canary) one entry per process."""

    processes: dict[str, list[ProcessValues]] = field(default_factory=dict)
    warnings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    canary: list[ProcessValues] = field(default_factory=list)


def engine_code_hash() -> str:
    """sha256 of the simulated engine's source files: the identity of the code whose timings are measured."""
    root = Path(__file__).resolve().parent.parent / "engine"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def _run_worker(job: Any, workdir: Path) -> Any:
    """Run one worker process (interleaved, or a duet driver); returns its pyperf BenchmarkSuite."""
    import pyperf

    from benchsvc.runner.worker import failure

    wdir = Path(tempfile.mkdtemp(dir=workdir))
    job_file, out = wdir / "job.json", wdir / "result.json"
    job_file.write_text(job.to_json())
    module = "benchsvc.runner.duet" if hasattr(job, "edges") else "benchsvc.runner.interleave"
    cmd = [sys.executable, "-m", module, str(job_file), str(out)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=BLOCK_WORKER_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        raise BlockWorkerFailed(f"worker timed out after {BLOCK_WORKER_TIMEOUT_S} s") from None
    if proc.returncode != 0 or not out.exists():
        raise BlockWorkerFailed(failure(proc))
    return pyperf.BenchmarkSuite.load(str(out))


def measure_block(
    workload_text: str,
    workload_name: str,
    versions: Sequence[str],
    sampling: Sampling,
    workdir: Path,
    rng: random.Random,
    *,
    phase: str = "primary",
    first_process: int = 0,
    processes: int | None = None,
    extra_metadata: dict[str, Any] | None = None,
    pairing: str = INTERLEAVED,
) -> BlockTimings:
    """Measure ``versions`` of one workload with the canary in ``processes`` worker processes: interleaved,
    or with ``pairing="duet"`` edge by edge on two pinned CPUs (:func:`duet_edges`).

    A version whose measurement fails is in ``errors`` (the others are measured without it)."""
    from benchsvc.runner.interleave import Job

    wdir = Path(tempfile.mkdtemp(dir=workdir))
    workload_file = wdir / f"{workload_name}.toml"
    workload_file.write_bytes(workload_text.encode("utf-8"))
    block_id = str(uuid.uuid4())
    n_processes = sampling.processes if processes is None else processes

    def job(vs: Sequence[str], process: int, alone: str | None) -> Any:
        return Job(
            workload_file=str(workload_file),
            versions=tuple(vs),
            values=sampling.values,
            warmups=sampling.warmups,
            loops=sampling.loops,
            seed=rng.randrange(2**32),
            block=block_id if alone is None else f"{block_id}/{alone}",
            process=process,
            phase=phase,
            extra_metadata=dict(extra_metadata or {}),
        )

    if pairing == DUET:
        return _measure_duet(
            workload_file, versions, sampling, workdir, rng, phase, first_process, n_processes, extra_metadata
        )
    return _run_processes(job, versions, n_processes, first_process, workdir)


def _run_processes(
    job: Callable[[Sequence[str], int, str | None], Any],
    versions: Sequence[str],
    n_processes: int,
    first_process: int,
    workdir: Path,
) -> BlockTimings:
    """Run ``n_processes`` worker processes of ``job(versions, process, None)`` one after the other. When one
    fails, measure each version alone (``job([version], process, version)``, with the canary), so only the
    version that fails is recorded as failed."""
    out = BlockTimings()
    runs: dict[str, list[Any]] = {}

    def collect(suite: Any) -> None:
        for bench in suite.get_benchmarks():
            version = bench.get_name().split("/")[1]
            runs.setdefault(version, []).extend(bench.get_runs())

    try:
        for p in range(n_processes):
            collect(_run_worker(job(versions, first_process + p, None), workdir))
    except BlockWorkerFailed:
        runs.clear()
        for version in versions:
            try:
                for p in range(n_processes):
                    collect(_run_worker(job([version], first_process + p, version), workdir))
            except BlockWorkerFailed as exc:
                out.errors[version] = str(exc)
                runs.pop(version, None)
    return _timings(runs, out)


def _timings(runs: dict[str, list[Any]], out: BlockTimings) -> BlockTimings:
    """Fill ``out`` with the pyperf runs of each version (and the canary), one ProcessValues per run."""
    import pyperf

    from benchsvc.runner.canary import VERSION as CANARY_VERSION

    for version, vruns in runs.items():
        read = timings(pyperf.Benchmark(vruns), ignore_checks=_NOT_APPLICABLE_CHECKS)
        if version == CANARY_VERSION:
            out.canary = list(read.processes)
            continue
        out.processes[version] = list(read.processes)
        out.warnings[version] = read.warnings
        out.metadata[version] = read.metadata
    return out


#: the measurement schemes ``benchsvc run --pairing`` takes (docs/measurement.md)
PAIRINGS = (INTERLEAVED, DUET)
#: the default scheme: the one with the narrower A/A interval as measured here (docs/measurement.md)
DEFAULT_PAIRING = INTERLEAVED


def duet_edges(versions: Sequence[str]) -> list[tuple[str, ...]]:
    """The pairs a duet measures for ``versions`` (lineage order): every lineage edge (version, parent) with
    both in the selection; a version in no such edge is paired with its nearest neighbour in the selection
    (the one before it, or after it for the first), and measured alone only when it is the only version."""
    from benchsvc.engine.versions import get_version

    chosen = list(versions)
    edges: list[tuple[str, ...]] = []
    for v in chosen:
        parent = get_version(v).parent
        if parent is not None and parent in chosen:
            edges.append((v, parent))
    covered = {v for e in edges for v in e}
    for i, v in enumerate(chosen):
        if v in covered:
            continue
        if len(chosen) == 1:
            edges.append((v,))
        else:
            partner = chosen[i - 1] if i > 0 else chosen[1]
            edges.append((v, partner))
            covered.update((v, partner))
    return edges


def _measure_duet(
    workload_file: Path,
    versions: Sequence[str],
    sampling: Sampling,
    workdir: Path,
    rng: random.Random,
    phase: str,
    first_process: int,
    n_processes: int,
    extra_metadata: dict[str, Any] | None,
) -> BlockTimings:
    """The duet scheme: one driver process per process index measuring every edge in its own block."""
    from benchsvc.runner.duet import Edge, Job, duet_cpus

    cpus = duet_cpus()

    def job(vs: Sequence[str], process: int, alone: str | None) -> Any:
        return Job(
            workload_file=str(workload_file),
            edges=tuple(Edge(e, str(uuid.uuid4())) for e in duet_edges(vs)),
            values=sampling.values,
            warmups=sampling.warmups,
            loops=sampling.loops,
            seed=rng.randrange(2**32),
            process=process,
            cpus=cpus,
            phase=phase,
            extra_metadata=dict(extra_metadata or {}),
        )

    return _run_processes(job, versions, n_processes, first_process, workdir)


def canary_warnings(processes: Sequence[ProcessValues]) -> tuple[str, ...]:
    """pyperf's checks of the canary's values gathered over the run's blocks."""
    import pyperf

    from benchsvc.runner.canary import ENGINE, VERSION, WORKLOAD

    name = f"{ENGINE}/{VERSION}/{WORKLOAD}"
    runs = [
        pyperf.Run(
            list(p.values),
            warmups=[(p.loops, w) for w in p.warmups],
            metadata={"name": name, "loops": p.loops},
            collect_metadata=False,
        )
        for p in processes
        if p.values
    ]
    return timings(pyperf.Benchmark(runs), ignore_checks=_NOT_APPLICABLE_CHECKS).warnings if runs else ()
