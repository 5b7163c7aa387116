"""One worker process of a paired ("duet") measurement: ``python -m benchsvc.runner.duet JOB.json OUT.json``.

Duet benchmarking (Bulej et al., 2020) measures two artifacts **at the same moment** on one machine, so that
what the machine does to one during a trial (a neighbour's burst, the frequency, memory bandwidth) it does to
the other too, and compares them trial by trial. This driver measures the lineage edges of one workload
(each a version and its parent) for one process index: for every edge, in a random order, it forks two
children (``multiprocessing``, fork context), one per side, each pinned to its own CPU with
``os.sched_setaffinity``. Every timed call is preceded by the untimed rebuild of the side's address space and
then a barrier, so both sides start their timed zap calls together and the synchronisation itself is never
timed. The two CPUs are swapped between trials (side 0 runs trial ``t`` on ``cpus[(s + t) % 2]``, side 1 on
the other, ``s`` random per edge), so a difference between the two CPUs cancels over a process instead of
showing as a difference between the versions.

Each child also times the canary once per trial (after its zap calls, again behind a barrier), so a duet run
has its canary series like an interleaved one. The clock is the one of :mod:`benchsvc.runner.interleave`
(the thread's CPU time), and the garbage collector is off during each timed call.

The result has the shape of an interleaved worker's: a pyperf ``BenchmarkSuite`` with one benchmark per
version (one ``pyperf.Run`` per edge the version takes part in) and one for the canary (one run per side of
every edge). Each run's metadata names its measurement block (``benchsvc_block``: one id per edge and
process, given by the job), process index, phase, side, edge, the CPU of every value (``benchsvc_cpus``,
e.g. ``"0,1,0,1,0,1"``) and of every warmup (``benchsvc_warmup_cpus``), start and end.

The job file (written by :mod:`benchsvc.runner.blocks`) is JSON: ``workload_file``, ``edges`` (a list of
``{"versions": [a, b] or [a], "block": id}``), ``values``, ``warmups``, ``loops``, ``seed``, ``process``,
``phase``, ``cpus`` (the two CPUs), ``canary`` and ``extra_metadata``. An edge with one version measures it
alone on the first CPU (a version with no lineage partner in the selection, or a version measured again
alone after a failure).
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from benchsvc.runner.interleave import CLOCK, CLOCK_DESCRIPTION, CLOCK_NAME, _now
from benchsvc.runner.worker import ERROR_PREFIX, NAME_FORMAT

#: the measurement scheme's name, as stored in the run's settings and every process's metadata
DUET = "duet"
#: a side waiting longer than this for its partner at a barrier gives up (the partner died)
BARRIER_TIMEOUT_S = 600.0


class DuetUnavailable(Exception):
    """This process may not use two CPUs; the message says how many it has."""


def duet_cpus() -> tuple[int, int]:
    """The two CPUs a duet pins its sides to: the first two this process may run on."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        raise DuetUnavailable(
            f"this process may use {len(usable)} CPU ({', '.join(map(str, usable))})"
            if len(usable) == 1
            else "this process may use no CPU"
        )
    return usable[0], usable[1]


@dataclass(frozen=True)
class Edge:
    """Versions measured side by side (two: a lineage edge; one: measured alone), in their own block."""

    versions: tuple[str, ...]
    block: str


@dataclass(frozen=True)
class Job:
    workload_file: str
    edges: tuple[Edge, ...]
    values: int
    warmups: int
    loops: int
    seed: int
    process: int
    cpus: tuple[int, int]
    engine: str = "sim"
    canary: bool = True
    phase: str = "primary"
    extra_metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "workload_file": self.workload_file,
                "edges": [{"versions": list(e.versions), "block": e.block} for e in self.edges],
                "values": self.values,
                "warmups": self.warmups,
                "loops": self.loops,
                "seed": self.seed,
                "process": self.process,
                "cpus": list(self.cpus),
                "engine": self.engine,
                "canary": self.canary,
                "phase": self.phase,
                "extra_metadata": self.extra_metadata,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        cpus = tuple(int(c) for c in d["cpus"])
        if len(cpus) != 2:
            raise ValueError(f"a duet job takes two CPUs, not {cpus}")
        return cls(
            workload_file=d["workload_file"],
            edges=tuple(Edge(tuple(e["versions"]), str(e["block"])) for e in d["edges"]),
            values=int(d["values"]),
            warmups=int(d["warmups"]),
            loops=int(d["loops"]),
            seed=int(d["seed"]),
            process=int(d["process"]),
            cpus=(cpus[0], cpus[1]),
            engine=d.get("engine", "sim"),
            canary=bool(d.get("canary", True)),
            phase=d.get("phase", "primary"),
            extra_metadata=dict(d.get("extra_metadata", {})),
        )


@dataclass
class SideResult:
    """What one side (child) measured: per trial its CPU, the mean seconds per zap call and the canary."""

    version: str
    side: int
    values: list[float] = field(default_factory=list)
    warmups: list[float] = field(default_factory=list)
    canary: list[float] = field(default_factory=list)
    canary_warmups: list[float] = field(default_factory=list)
    cpus: list[int] = field(default_factory=list)
    warmup_cpus: list[int] = field(default_factory=list)
    started: str = ""
    ended: str = ""
    pid: int = 0
    duration_s: float = 0.0


def side_cpu(cpus: tuple[int, int], start: int, side: int, trial: int) -> int:
    """The CPU of ``side`` in ``trial``: the two sides on different CPUs, swapped from one trial to the next."""
    return cpus[(start + side + trial) % 2]


def _side(job: Job, spec: Any, version: str, side: int, start: int, barrier: Any, conn: Any) -> None:
    """A child: measure ``version`` on its CPU, trial by trial, in step with its partner; send the result."""
    from benchsvc.engine.versions import get_version
    from benchsvc.kernel.worker import die_with_parent
    from benchsvc.runner.canary import canary_work

    try:
        die_with_parent()
        cls = get_version(version)
        out = SideResult(version, side, started=_now(), pid=os.getpid())
        t0 = time.perf_counter()
        for trial in range(job.warmups + job.values):
            cpu = side_cpu(job.cpus, start, side, trial)
            os.sched_setaffinity(0, {cpu})
            total = 0.0
            for _ in range(job.loops):
                engine = cls(spec)  # the rebuild, untimed
                barrier.wait()
                gc.disable()
                try:
                    total += engine.run(timer=CLOCK)
                finally:
                    gc.enable()
            canary = float("nan")
            if job.canary:
                barrier.wait()
                gc.disable()
                try:
                    c0 = CLOCK()
                    canary_work()
                    canary = CLOCK() - c0
                finally:
                    gc.enable()
            if trial < job.warmups:
                out.warmups.append(total / job.loops)
                out.canary_warmups.append(canary)
                out.warmup_cpus.append(cpu)
            else:
                out.values.append(total / job.loops)
                out.canary.append(canary)
                out.cpus.append(cpu)
        out.duration_s = time.perf_counter() - t0
        out.ended = _now()
        conn.send(("ok", out))
    except BaseException as exc:  # the partner must not wait forever at the barrier
        barrier.abort()
        conn.send(("error", f"{version}: {exc!r}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def measure_edge(job: Job, spec: Any, edge: Edge, rng: random.Random) -> list[SideResult]:
    """Fork one child per side of ``edge``, pinned and in step; returns their results in side order."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(edge.versions), timeout=BARRIER_TIMEOUT_S)
    start = rng.randrange(2)
    children = []
    for side, version in enumerate(edge.versions):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_side, args=(job, spec, version, side, start, barrier, send), daemon=True)
        proc.start()
        send.close()
        children.append((proc, recv))
    results: list[SideResult] = []
    errors: list[str] = []
    for proc, recv in children:
        try:
            status, payload = recv.recv()
        except EOFError:
            proc.join()
            errors.append(f"a side of {'/'.join(edge.versions)} died (exit code {proc.exitcode})")
            continue
        proc.join()
        if status == "ok":
            results.append(payload)
        else:
            errors.append(str(payload))
    if errors:
        # the side that failed first is the cause; the other one saw a broken barrier
        cause = next((e for e in errors if "BrokenBarrierError" not in e), errors[0])
        raise RuntimeError(cause)
    return results


def run_job(job: Job) -> Any:
    """Measure the job's edges (in a random order) in child processes; returns a pyperf BenchmarkSuite."""
    import pyperf

    from benchsvc.runner.canary import ENGINE as CANARY_ENGINE
    from benchsvc.runner.canary import VERSION as CANARY_VERSION
    from benchsvc.runner.canary import WORKLOAD as CANARY_WORKLOAD
    from benchsvc.workload import load_workload

    if job.engine != "sim":
        raise SystemExit(f"{ERROR_PREFIX}duet measurement takes the sim engine, not {job.engine!r}")
    spec = load_workload(job.workload_file)
    hook = os.environ.get("BENCHSVC_TEST_FAIL_WORKER")
    if hook and hook in {f"{v}/{spec.name}" for e in job.edges for v in e.versions}:
        raise SystemExit(f"{ERROR_PREFIX}injected failure for {hook} (BENCHSVC_TEST_FAIL_WORKER)")
    rng = random.Random(job.seed)
    order = list(job.edges)
    rng.shuffle(order)
    runs: dict[str, list[Any]] = {}
    canary_name = NAME_FORMAT.format(engine=CANARY_ENGINE, version=CANARY_VERSION, workload=CANARY_WORKLOAD)
    clock = CLOCK_DESCRIPTION.format(time.get_clock_info("thread_time").resolution * 1e9)
    for edge in order:
        try:
            sides = measure_edge(job, spec, edge, rng)
        except RuntimeError as exc:
            raise SystemExit(f"{ERROR_PREFIX}duet worker failed: {str(exc).splitlines()[0]}") from None
        for r in sides:
            partner = [v for v in edge.versions if v != r.version]
            metadata = {
                "loops": job.loops,
                "duration": r.duration_s,
                "benchsvc_measurement": DUET,
                "benchsvc_block": edge.block,
                "benchsvc_process": job.process,
                "benchsvc_phase": job.phase,
                "benchsvc_seed": job.seed,
                "benchsvc_started": r.started,
                "benchsvc_ended": r.ended,
                "benchsvc_edge": "/".join(edge.versions),
                "benchsvc_side": r.side,
                "benchsvc_cpus": ",".join(map(str, r.cpus)),
                "cpu_affinity": ",".join(str(c) for c in sorted(set(r.cpus + r.warmup_cpus))),
                "timer": clock,
                "benchsvc_clock": CLOCK_NAME,
                "benchsvc_pid": r.pid,
                **job.extra_metadata,
            }
            # pyperf refuses empty metadata values: no partner (measured alone), no warmups
            if partner:
                metadata["benchsvc_paired_with"] = partner[0]
            if r.warmup_cpus:
                metadata["benchsvc_warmup_cpus"] = ",".join(map(str, r.warmup_cpus))
            name = NAME_FORMAT.format(engine=job.engine, version=r.version, workload=spec.name)
            runs.setdefault(name, []).append(
                pyperf.Run(
                    r.values,
                    warmups=[(job.loops, w) for w in r.warmups],
                    metadata={**metadata, "name": name},
                )
            )
            if job.canary:
                runs.setdefault(canary_name, []).append(
                    pyperf.Run(
                        r.canary,
                        warmups=[(1, w) for w in r.canary_warmups],
                        metadata={**metadata, "loops": 1, "name": canary_name},
                    )
                )
    return pyperf.BenchmarkSuite([pyperf.Benchmark(rs) for rs in runs.values()])


def main(argv: list[str] | None = None) -> None:
    from benchsvc.runner.interleave import serve

    serve("benchsvc.runner.duet", lambda text: run_job(Job.from_json(text)), argv)


if __name__ == "__main__":
    main()
