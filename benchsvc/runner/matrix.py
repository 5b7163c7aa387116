"""The orchestrator of ``benchsvc run``: plan the matrix, measure each result, commit it, end the run cleanly.

For each (engine, version, workload) of the plan: counters (and, for the simulation, the modelled cost) from
one deterministic simulation in this process -- or, for the ``kernel`` engine, from one run on the live
kernel with the layout's per-size mTHP settings held (and restored) around both it and the timing -- then
timings from worker processes. The simulated versions of one workload are timed together, interleaved call by
call with each other and with the canary (:mod:`benchsvc.runner.blocks`); the kernel is timed by pyperf's own
runner (:mod:`benchsvc.runner.worker`). The workload's definition text, the exact bytes that were hashed, is
handed to the workers in a temporary file.
A run first takes the machine's lock, then its host's row in the database (:mod:`benchsvc.store.lock`); the
run's rows are written through :mod:`benchsvc.store.runs`. The results of a workload are committed together
as soon as they are measured, with a heartbeat (also sent every minute from a thread), and the canary's result
at the end of the run; a failing result is recorded as failed with its error and the run goes on. The run ends
``complete`` (every result ok), ``failed`` (some failed) or ``interrupted`` (Ctrl-C / SIGTERM, or found dead
later); ``resume`` finishes an interrupted run without redoing what it committed. Nothing here prints:
progress goes to a callback, and the run's course to the ``benchsvc.run`` logger.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

from benchsvc.errors import BenchsvcError
from benchsvc.records import (
    EngineKind,
    ProcessValues,
    ResultRecord,
    ResultStatus,
    RunRecord,
    SeriesChange,
    VersionInfo,
    WorkloadRef,
    utcnow,
)
from benchsvc.workload import WorkloadSpec, parse_workload

#: start, each result, failures, the end and what was found: the unattended run's record (docs/fleet.md)
log = logging.getLogger("benchsvc.run")
log.addHandler(logging.NullHandler())  # nothing on stderr unless the caller configures logging

#: pyperf options of each mode for the kernel engine, which pyperf's runner times (docs/running.md); the
#: simulated versions are sampled as :data:`benchsvc.runner.blocks.SAMPLING` says
MODES: dict[str, tuple[str, ...]] = {
    "quick": ("--processes", "2", "--values", "4", "--warmups", "1", "--loops", "1"),
    "default": ("--processes", "12", "--values", "5", "--warmups", "1", "--min-time", "0.02"),
    "rigorous": ("--rigorous", "--min-time", "0.05"),
    "debug": ("--debug-single-value",),
}
WORKER_TIMEOUT_S = 1800
#: loops per value of the kernel engine, instead of the mode's ``--min-time`` calibration: a kernel value is
#: the sum of individually timed zap calls (0.1 ms and more, far above the clock's resolution), while every
#: loop rebuilds a real region (milliseconds of faults and zeroing), so calibrating to 20 ms per value would
#: cost minutes per result (measured: 7 min 43 s for the 8 shipped kernel results in default mode)
KERNEL_LOOPS = {"default": 4, "rigorous": 8}
#: what ``benchsvc run --engine`` takes: the simulation, the live kernel, or both
ENGINE_CHOICES = ("sim", "kernel", "all")


def pyperf_args(mode: str, engine: str = "sim") -> tuple[str, ...]:
    """The pyperf options of one result: the mode's, with a fixed ``--loops`` for the kernel engine."""
    args = MODES[mode]
    if engine != "kernel" or mode not in KERNEL_LOOPS:
        return args
    kept = [a for i, a in enumerate(args) if a != "--min-time" and (i == 0 or args[i - 1] != "--min-time")]
    return (*kept, "--loops", str(KERNEL_LOOPS[mode]))


class RunError(BenchsvcError):
    """A run that cannot start or resume as asked."""


class InterruptedBeforeStart(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while waiting for the machine (its lock, or its run in the database): no run was
    created or reopened."""


@dataclass(frozen=True)
class MatrixItem:
    engine: EngineKind
    version: str
    spec: WorkloadSpec

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", EngineKind(self.engine))

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.engine, self.version, self.spec.name, self.spec.content_hash)

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.version}/{self.spec.name}"

    def plan_entry(self) -> dict[str, str]:
        return {
            "engine": self.engine,
            "version": self.version,
            "workload": self.spec.name,
            "workload_hash": self.spec.content_hash,
        }


@dataclass
class Progress:
    """What the callback is told: ``event`` is "start", "done" (then ``result`` is set) or "confirm" (a
    re-measurement of ``versions`` of ``item``'s workload at the end of the run; ``index`` of ``total``)."""

    event: str
    index: int
    total: int
    item: MatrixItem
    result: ResultRecord | None = None
    skipped: int = 0
    #: with "confirm": the versions of ``item``'s workload measured again
    versions: tuple[str, ...] = ()


@dataclass
class RunSummary:
    run_id: int
    run_uuid: str
    status: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    #: failed results a resumed run had already committed (they keep the run from ending "complete")
    failed_before: int = 0
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    #: where the wall time went: simulations, pyperf worker processes (whole), database commits
    simulate_s: float = 0.0
    pyperf_s: float = 0.0
    commit_s: float = 0.0
    #: the timing findings whose re-measurement held (None: nothing was re-measured; record as found)
    confirmed: set[Any] | None = None


def plan(specs: Sequence[WorkloadSpec], versions: Sequence[str], engine: str = "sim") -> list[MatrixItem]:
    """Workloads in the given order, each in every version (lineage order)."""
    return [MatrixItem(EngineKind(engine), v, spec) for spec in specs for v in versions]


def check_engine(engine: str) -> None:
    """Refuse an ``--engine`` value that is not one of :data:`ENGINE_CHOICES`."""
    if engine not in ENGINE_CHOICES:
        raise RunError(f"unknown engine {engine!r} (one of: {', '.join(ENGINE_CHOICES)})")


def plan_engines(
    specs: Sequence[WorkloadSpec], versions: Sequence[str], engine: str
) -> tuple[list[MatrixItem], list[str]]:
    """The matrix of ``--engine sim|kernel|all`` and a note for each thing left out.

    ``kernel`` adds, after each workload's simulated versions, one result on the live kernel (version
    ``kernel-<uname -r>``) for every workload the kernel can express and serve here. With ``all``, a kernel
    that cannot serve is skipped with a note; with ``kernel`` alone that is an error."""
    check_engine(engine)
    sim_versions = versions if engine in ("sim", "all") else ()
    if engine == "sim":
        return plan(specs, sim_versions), []
    from benchsvc.kernel import ENGINE, expressible_reason, unavailable_reason, version_id

    notes: list[str] = []
    unavailable: dict[str, list[str]] = {}
    kernel_specs: set[str] = set()
    for spec in specs:
        reason = expressible_reason(spec)
        if reason is not None:
            notes.append(f"kernel: {spec.name} left out, not expressible on the kernel: {reason}")
            continue
        assert spec.single_folio_size is not None
        reason = unavailable_reason(spec.single_folio_size)
        if reason is not None:
            unavailable.setdefault(reason, []).append(spec.name)
            continue
        kernel_specs.add(spec.content_hash)
    for reason, names in unavailable.items():
        notes.append(f"kernel: the live kernel cannot be used for {', '.join(names)}: {reason}")
    items = [
        item
        for spec in specs
        for item in (
            *plan([spec], sim_versions),
            *([MatrixItem(ENGINE, version_id(), spec)] if spec.content_hash in kernel_specs else []),
        )
    ]
    if engine == "kernel" and not items:
        raise RunError(
            "--engine kernel: no workload can run on the live kernel here:\n  " + "\n  ".join(notes)
        )
    return items, notes


def check_pairing(pairing: str) -> None:
    """Refuse a ``--pairing`` that is unknown, or ``duet`` where this process may not use two CPUs."""
    from benchsvc.runner.blocks import PAIRINGS
    from benchsvc.runner.duet import DUET, DuetUnavailable, duet_cpus

    if pairing not in PAIRINGS:
        raise RunError(f"unknown pairing {pairing!r} (one of: {', '.join(PAIRINGS)})")
    if pairing == DUET:
        try:
            duet_cpus()
        except DuetUnavailable as exc:
            raise RunError(
                f"--pairing duet needs two CPUs to pin its two sides to, but {exc} — "
                "use --pairing interleaved, or allow the run more CPUs"
            ) from None


def run_settings(mode: str, items: Sequence[MatrixItem], pairing: str | None = None) -> dict[str, Any]:
    """How a run measures, as stored with it: the scheme (``pairing``, default
    :data:`~benchsvc.runner.blocks.DEFAULT_PAIRING`), the sampling of the simulated versions, the canary, and
    the pyperf options of the kernel engine when it takes part."""
    from benchsvc.runner.blocks import DEFAULT_PAIRING, SAMPLING
    from benchsvc.runner.canary import VERSION

    settings: dict[str, Any] = {}
    if any(i.engine == "sim" for i in items):
        settings.update(
            measurement=pairing or DEFAULT_PAIRING, sampling=SAMPLING[mode].as_dict(), canary=VERSION
        )
    if any(i.engine == "kernel" for i in items):
        settings["kernel_args"] = list(pyperf_args(mode, "kernel"))
    return settings


def version_infos(items: Sequence[MatrixItem]) -> list[VersionInfo]:
    from benchsvc.engine.versions import get_version
    from benchsvc.runner import canary

    seen: dict[str, VersionInfo] = {}
    if any(i.engine == "sim" for i in items):
        seen[canary.VERSION] = canary.version_info()
    for item in items:
        if item.version in seen:
            continue
        if item.engine == "sim":
            cls = get_version(item.version)
            seen[item.version] = VersionInfo(cls.id, EngineKind.SIM, cls.parent, cls.title, cls.source)
        elif item.engine == "kernel":
            release = item.version.removeprefix("kernel-")
            # no parent: the live kernel is not a step of the patch lineage, so lineage analysis skips it
            seen[item.version] = VersionInfo(
                item.version, EngineKind.KERNEL, None, f"Linux {release}, the live kernel", "uname -r"
            )
    return list(seen.values())


def _engine_session(item: MatrixItem) -> AbstractContextManager[Any]:
    """What must hold while an item is measured: for the kernel, its per-size mTHP settings."""
    if item.engine != "kernel":
        return nullcontext()
    from benchsvc.kernel import kernel_session, version_id

    if item.version != version_id():
        raise RunError(
            f"{item.label} was planned for {item.version}, but this machine now runs {version_id()}"
        )
    return kernel_session(item.spec)


def with_scale_metrics(counters: dict[str, int], modeled_ns: float) -> dict[str, int]:
    """A simulated result's counters and, beside them, the contention model's modelled wait per zap stream on
    1..256 CPUs (``scale_added_ns_n<N>``, docs/contention.md): stored like counters, so every night tracks them
    across versions."""
    from benchsvc.analysis.contention import stored_metrics

    return {**counters, **stored_metrics(counters, modeled_ns)}


def _counters(item: MatrixItem, session: Any) -> tuple[dict[str, int], float | None, dict[str, Any]]:
    """The result's counters, modelled cost (None for the kernel) and extra metadata."""
    if item.engine == "kernel":
        from benchsvc.kernel import run_in_session

        kres = run_in_session(item.spec, session)
        changes = "; ".join(f"{path}: {was} -> {ours}" for path, was, ours in kres.sysfs_changes)
        return kres.stored_counters(), None, {"kernel_sysfs_changes": changes or "none"}
    from benchsvc.engine import simulate

    sim = simulate(item.spec, item.version)
    return with_scale_metrics(sim.counters, sim.modeled_ns), sim.modeled_ns, {}


def measure(
    item: MatrixItem,
    mode: str,
    workdir: Path,
    clock: dict[str, float] | None = None,
    pairing: str | None = None,
) -> ResultRecord:
    """Count once (simulate, or run on the kernel) and time; any failure becomes a failed result carrying the
    error, except a sysfs value that could not be restored (that stops the run). A simulated version is timed
    as a block of its own (with the canary, whose values are dropped here)."""
    from benchsvc.kernel import SysfsRestoreError

    if item.engine == "sim":
        records, _ = measure_block([item], mode, workdir, random.Random(), clock, pairing=pairing)
        return records[0]

    started = utcnow()
    ref = WorkloadRef(item.spec.name, item.spec.content_hash, item.spec.source_text, item.spec.description)
    counters: dict[str, int] = {}
    modeled: float | None = None
    try:
        with _engine_session(item) as session:
            t0 = time.perf_counter()
            counters, modeled, extra = _counters(item, session)
            t1 = time.perf_counter()
            processes, warnings, metadata = run_pyperf(item, mode, workdir)
            metadata.update(extra)
        if clock is not None:
            clock["simulate_s"] += t1 - t0
            clock["pyperf_s"] += time.perf_counter() - t1
    except SysfsRestoreError:
        raise
    except (BenchsvcError, WorkerFailed) as exc:
        return ResultRecord(
            item.engine,
            item.version,
            ref,
            status=ResultStatus.FAILED,
            error=str(exc),
            counters=counters,
            modeled_ns=modeled,
            started_at=started,
            finished_at=utcnow(),
        )
    return ResultRecord(
        item.engine,
        item.version,
        ref,
        counters=counters,
        modeled_ns=modeled,
        processes=processes,
        warnings=warnings,
        pyperf_metadata=metadata,
        started_at=started,
        finished_at=utcnow(),
    )


def measure_block(
    items: Sequence[MatrixItem],
    mode: str,
    workdir: Path,
    rng: random.Random,
    clock: dict[str, float] | None = None,
    engine_hash: str | None = None,
    pairing: str | None = None,
) -> tuple[list[ResultRecord], list[ProcessValues]]:
    """The simulated versions of one workload: counters from one simulation each, timings interleaved with
    each other and with the canary (:func:`benchsvc.runner.blocks.measure_block`). Returns the results in the
    order of ``items`` and the canary's values of the block's worker processes."""
    from benchsvc import __version__
    from benchsvc.engine import simulate
    from benchsvc.runner.blocks import DEFAULT_PAIRING, SAMPLING
    from benchsvc.runner.blocks import measure_block as time_block

    spec = items[0].spec
    assert all(i.engine == "sim" and i.spec.content_hash == spec.content_hash for i in items)
    started = utcnow()
    ref = WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
    counted: dict[str, tuple[dict[str, int], float]] = {}
    errors: dict[str, str] = {}
    t0 = time.perf_counter()
    for item in items:
        try:
            sim = simulate(spec, item.version)
        except BenchsvcError as exc:
            errors[item.version] = str(exc)
            continue
        counted[item.version] = (with_scale_metrics(sim.counters, sim.modeled_ns), sim.modeled_ns)
    t1 = time.perf_counter()
    timings = time_block(
        spec.source_text,
        spec.name,
        [i.version for i in items if i.version in counted],
        SAMPLING[mode],
        workdir,
        rng,
        pairing=pairing or DEFAULT_PAIRING,
    )
    if clock is not None:
        clock["simulate_s"] += t1 - t0
        clock["pyperf_s"] += time.perf_counter() - t1
    errors.update(timings.errors)
    finished = utcnow()
    records = []
    for item in items:
        counters, modeled = counted.get(item.version, ({}, None))
        if item.version in errors:
            records.append(
                ResultRecord(
                    item.engine,
                    item.version,
                    ref,
                    status=ResultStatus.FAILED,
                    error=errors[item.version],
                    counters=counters,
                    modeled_ns=modeled,
                    started_at=started,
                    finished_at=finished,
                )
            )
            continue
        metadata = {
            **timings.metadata[item.version],
            "benchsvc_version": __version__,
            "benchsvc_engine": item.engine,
            "benchsvc_zap_version": item.version,
            "benchsvc_workload": spec.name,
            "benchsvc_workload_hash": spec.content_hash,
        }
        if engine_hash:
            metadata["benchsvc_engine_hash"] = engine_hash
        records.append(
            ResultRecord(
                item.engine,
                item.version,
                ref,
                counters=counters,
                modeled_ns=modeled,
                processes=tuple(timings.processes[item.version]),
                warnings=timings.warnings[item.version],
                pyperf_metadata=metadata,
                started_at=started,
                finished_at=finished,
            )
        )
    return records, timings.canary


def blocks(items: Sequence[MatrixItem]) -> list[list[MatrixItem]]:
    """The measurement units of a plan, in its order: the simulated versions of one workload together, each
    kernel item alone."""
    out: list[list[MatrixItem]] = []
    for item in items:
        if (
            item.engine == "sim"
            and out
            and out[-1][0].engine == "sim"
            and out[-1][0].spec.content_hash == item.spec.content_hash
        ):
            out[-1].append(item)
        else:
            out.append([item])
    return out


def canary_record(
    processes: Sequence[ProcessValues], started: Any, engine_hash: str | None, pairing: str | None = None
) -> ResultRecord:
    """The canary's result of a run: its values from every worker process of every block."""
    from benchsvc.runner import canary
    from benchsvc.runner.blocks import DEFAULT_PAIRING, canary_warnings

    metadata: dict[str, Any] = {"benchsvc_measurement": pairing or DEFAULT_PAIRING}
    if engine_hash:
        metadata["benchsvc_engine_hash"] = engine_hash
    return ResultRecord(
        canary.ENGINE,
        canary.VERSION,
        canary.workload_ref(),
        processes=tuple(processes),
        warnings=canary_warnings(processes),
        pyperf_metadata=metadata,
        started_at=started,
        finished_at=utcnow(),
    )


class WorkerFailed(Exception):
    """The pyperf worker failed; the message is stored as the result's error."""


def run_pyperf(
    item: MatrixItem, mode: str, workdir: Path
) -> tuple[tuple[ProcessValues, ...], tuple[str, ...], dict[str, Any]]:
    from benchsvc.store.pyperf_adapter import load_timings

    wdir = Path(tempfile.mkdtemp(dir=workdir))
    workload_file = wdir / f"{item.spec.name}.toml"
    workload_file.write_bytes(item.spec.source_text.encode("utf-8"))
    out = wdir / "result.json"
    cmd = [
        sys.executable,
        "-m",
        "benchsvc.runner.worker",
        "--workload",
        str(workload_file),
        "--zap-version",
        item.version,
        "--engine",
        item.engine,
        "--quiet",
        "-o",
        str(out),
        *pyperf_args(mode, item.engine),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(f"pyperf worker timed out after {WORKER_TIMEOUT_S} s") from None
    if proc.returncode != 0 or not out.exists():
        from benchsvc.runner.worker import failure

        raise WorkerFailed(f"pyperf {failure(proc)}")
    read = load_timings(out)
    return read.processes, read.warnings, dict(read.metadata)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (systemd stopping the timer's service, kill) ends the run like Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(
    engine: Any,
    items: Sequence[MatrixItem],
    run_record: RunRecord,
    mode: str,
    on_progress: Callable[[Progress], None] | None = None,
    *,
    wait: bool = False,
    wait_poll_s: float = 5.0,
    resume_run_id: int | None = None,
    confirm: bool = True,
    pairing: str | None = None,
) -> RunSummary:
    """Run the matrix into the store behind ``engine`` (a SQLAlchemy Engine).

    With ``confirm`` (and in a mode of :data:`CONFIRMING_MODES`), the cells whose timing looks changed are
    measured again at the end of the run before anything is recorded (:func:`_confirm`). ``pairing``: how
    the simulated versions are measured, ``interleaved`` or ``duet`` (default
    :data:`~benchsvc.runner.blocks.DEFAULT_PAIRING`).

    On Ctrl-C or SIGTERM the run is marked ``interrupted`` (its committed results stay) and the
    KeyboardInterrupt propagates."""
    from benchsvc.store.lock import RunLocked, lock_machine
    from benchsvc.store.runs import close_run, commit_results, heartbeats, open_run

    if mode not in MODES:
        raise RunError(f"unknown mode {mode!r} (one of: {', '.join(MODES)})")
    if pairing is not None:
        check_pairing(pairing)
    t0 = time.monotonic()
    workloads = [
        WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
        for spec in {i.spec.content_hash: i.spec for i in items}.values()
    ]
    record = (
        replace(run_record, plan=[i.plan_entry() for i in items]) if resume_run_id is None else run_record
    )
    while True:
        machine = None
        try:
            # this machine first (whatever database), then this host's row in the database
            machine = lock_machine(_db_label(engine))
            opened = open_run(
                engine, record, version_infos(items), workloads, resume_run_id, on_open=machine.record
            )
            break
        except RunLocked:
            if machine is not None:
                machine.release()
            if not wait:
                raise
            try:
                with _sigterm_as_interrupt():
                    time.sleep(wait_poll_s)
            except KeyboardInterrupt:
                raise InterruptedBeforeStart from None
        except BaseException:
            if machine is not None:
                machine.release()
            raise
    assert machine is not None
    _test_hold_machine()
    run_id = opened.run_id
    todo = [i for i in items if i.key not in opened.done]
    summary = RunSummary(
        run_id,
        opened.uuid,
        "running",
        skipped=len(items) - len(todo),
        notes=opened.notes,
        failed_before=opened.failed_before,
    )
    log.info(
        "run %d %s on %s: %d results to measure (%d already done), %s mode, database %s",
        run_id,
        "started" if resume_run_id is None else "resumed",
        record.machine.hostname,
        len(todo),
        summary.skipped,
        mode,
        _db_label(engine),
    )
    for note in opened.notes:
        log.warning("run %d: %s", run_id, note)
    clock = {"simulate_s": 0.0, "pyperf_s": 0.0, "commit_s": 0.0}
    status = "interrupted"
    rng = random.Random()
    canary: list[ProcessValues] = []
    started = utcnow()
    engine_hash: str | None = None
    if any(i.engine == "sim" for i in todo):
        from benchsvc.runner.blocks import engine_code_hash

        engine_hash = engine_code_hash()
    try:
        with (
            _sigterm_as_interrupt(),
            heartbeats(engine, run_id),
            tempfile.TemporaryDirectory(prefix="benchsvc-run-") as tmp,
        ):
            index = 0
            for block in blocks(todo):
                if on_progress:
                    on_progress(Progress("start", index, len(todo), block[0], skipped=summary.skipped))
                if block[0].engine == "sim":
                    records, block_canary = measure_block(
                        block, mode, Path(tmp), rng, clock, engine_hash, pairing
                    )
                    canary.extend(block_canary)
                else:
                    records = [measure(item, mode, Path(tmp), clock, pairing) for item in block]
                t_commit = time.perf_counter()
                commit_results(engine, run_id, records)
                clock["commit_s"] += time.perf_counter() - t_commit
                for item, result in zip(block, records, strict=True):
                    if result.status == "ok":
                        summary.ok += 1
                    else:
                        summary.failed += 1
                    _log_result(run_id, index, len(todo), item, result)
                    if on_progress:
                        on_progress(Progress("done", index, len(todo), item, result, skipped=summary.skipped))
                    index += 1
            if confirm and mode in CONFIRMING_MODES and any(i.engine == "sim" for i in items):
                again, summary.confirmed = _confirm(
                    engine, run_id, items, mode, Path(tmp), rng, on_progress, clock, canary, pairing
                )
                canary.extend(again)
            if canary:
                commit_results(engine, run_id, [canary_record(canary, started, engine_hash, pairing)])
        status = "complete" if summary.failed + summary.failed_before == 0 else "failed"
    finally:
        try:
            close_run(engine, run_id, status)
        finally:
            machine.release()
        summary.status = status
        summary.elapsed_s = time.monotonic() - t0
        summary.simulate_s, summary.pyperf_s, summary.commit_s = (
            clock["simulate_s"],
            clock["pyperf_s"],
            clock["commit_s"],
        )
        (log.info if status == "complete" else log.warning)(
            "run %d %s: %d ok, %d failed, %d already done, in %.0f s",
            run_id,
            status,
            summary.ok,
            summary.failed,
            summary.skipped,
            summary.elapsed_s,
        )
    return summary


def _db_label(engine: Any) -> str:
    """The database for messages: a SQLite file's path, else the URL without its password."""
    from benchsvc.store.db import describe

    url = str(engine.url)
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else describe(url)


def _log_result(run_id: int, index: int, total: int, item: MatrixItem, result: ResultRecord) -> None:
    if result.status == "ok":
        values = result.values
        mean_ms = sum(values) / len(values) * 1e3 if values else float("nan")
        log.info(
            "run %d [%d/%d] %s: %.4f ms mean of %d values",
            run_id,
            index + 1,
            total,
            item.label,
            mean_ms,
            len(values),
        )
    else:
        log.error("run %d [%d/%d] %s FAILED: %s", run_id, index + 1, total, item.label, result.error)


#: modes whose timing findings are re-measured before they are recorded: those that draw timing findings at
#: all (``blocks.supports_timing_inference``; a quick or debug run files none, so there is nothing to confirm)
CONFIRMING_MODES = ("default", "rigorous")


def confirmation_cells(session: Any, run_id: int, lineage: Any) -> dict[str, set[str]]:
    """What to re-measure: per workload hash, the simulated versions of every lineage timing comparison of
    ``lineage`` (the run's :func:`benchsvc.findings.lineage_for_run`) that looks significant, was not
    re-measured yet, and is not already an open finding of this machine in the same direction (a finding
    confirmed on an earlier night needs no new confirmation to stay open)."""
    from benchsvc.store.queries import open_lineage_findings

    if lineage.empty:
        return {}
    rows = lineage[lineage["metric"] == "time"]
    known = open_lineage_findings(session, run_id)
    suspect = rows[(rows["engine"] == "sim") & rows["significant"].astype(bool) & rows["confirmed"].isna()]
    cells: dict[str, set[str]] = {}
    for r in suspect.itertuples(index=False):
        key = ("sim", r.workload, r.workload_hash, r.version, r.baseline, "time", r.direction)
        if tuple(str(x) for x in key) in known:
            continue
        cells.setdefault(str(r.workload_hash), set()).update((str(r.version), str(r.baseline)))
    return cells


def _confirm(
    engine: Any,
    run_id: int,
    items: Sequence[MatrixItem],
    mode: str,
    workdir: Path,
    rng: random.Random,
    on_progress: Callable[[Progress], None] | None,
    clock: dict[str, float],
    canary: Sequence[ProcessValues],
    pairing: str | None = None,
) -> tuple[list[ProcessValues], set[Any]]:
    """Re-measure the suspected cells of the run before anything is recorded: the lineage timing comparisons
    that look significant (:func:`confirmation_cells`) and the series whose timing makes a change point
    tonight (:func:`benchsvc.findings.plan_run`). Per workload, the versions involved are measured again,
    interleaved with the canary, in fresh worker processes of phase ``confirm`` appended to the stored
    results. Returns the canary's values of those processes and the timing keys that held (to pass to
    :func:`benchsvc.findings.record_run`): a lineage comparison holds when its confirmation interval agrees
    (:mod:`benchsvc.analysis.lineage`), a nightly change when :func:`nightly_change_held`."""
    from benchsvc.findings import RunAnalysis, lineage_for_run, plan_run
    from benchsvc.runner.blocks import CONFIRM_PROCESSES, DEFAULT_PAIRING, SAMPLING
    from benchsvc.runner.blocks import measure_block as time_block
    from benchsvc.store.db import read_session
    from benchsvc.store.runs import append_processes

    plan = plan_run(engine, run_id, confirmed=True)
    with read_session(engine) as s:
        cells = confirmation_cells(s, run_id, plan.lineage)
    nightly = {p.key: p for p in plan.nightly}
    specs = {i.spec.content_hash: i.spec for i in items if i.engine == "sim"}
    for key in nightly:
        if key.engine == "sim" and key.workload_hash in specs:
            cells.setdefault(key.workload_hash, set()).add(key.version)
    order = [i.version for i in items if i.engine == "sim"]
    new_canary: list[ProcessValues] = []
    remeasured: dict[tuple[str, str], list[ProcessValues]] = {}
    todo = [(h, vs) for h, vs in cells.items() if h in specs]
    for index, (chash, versions) in enumerate(todo):
        spec = specs[chash]
        ordered = sorted(versions, key=lambda v: order.index(v) if v in order else len(order))
        if on_progress:
            item = MatrixItem(EngineKind.SIM, ordered[0], spec)
            on_progress(Progress("confirm", index, len(todo), item, versions=tuple(ordered)))
        t0 = time.perf_counter()
        timings = time_block(
            spec.source_text,
            spec.name,
            ordered,
            SAMPLING[mode],
            workdir,
            rng,
            phase="confirm",
            first_process=SAMPLING[mode].processes,
            processes=CONFIRM_PROCESSES[mode],
            pairing=pairing or DEFAULT_PAIRING,
        )
        clock["pyperf_s"] += time.perf_counter() - t0
        new_canary.extend(timings.canary)
        for version, pvs in timings.processes.items():
            remeasured[chash, version] = pvs
        append_processes(
            engine,
            run_id,
            "sim",
            WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description),
            timings.processes,
        )
    # the lineage comparisons that still look significant now that the confirmation processes are stored
    # (lineage alone: the nightly decision was taken above, and is recorded after the canary is stored)
    with read_session(engine) as s:
        lineage = lineage_for_run(s, run_id, metrics=["time"])
    held: set[Any] = set(RunAnalysis(run_id, plan.settings, lineage, mode=plan.mode).suspected())
    primary = _primary_values(engine, run_id)
    for key, pending in nightly.items():
        if key.engine != "sim":
            held.add(key)  # the kernel engine is not re-measured here: its change points stand as found
            continue
        again = remeasured.get((key.workload_hash, key.version))
        first = primary.get((key.version, key.workload, key.workload_hash))
        if again and first and nightly_change_held(pending.finding, first, again, canary, new_canary):
            held.add(key)
    return new_canary, held


def _primary_values(engine: Any, run_id: int) -> dict[tuple[str, str, str], list[ProcessValues]]:
    """The primary processes of the run's simulated results, by (version, workload, workload hash)."""
    from benchsvc.store.db import read_session
    from benchsvc.store.queries import run_process_values

    with read_session(engine) as s:
        return run_process_values(s, run_id, phase="primary", engine="sim")


def _block_mean(processes: Sequence[ProcessValues], blocks: set[Any]) -> float | None:
    values = [v for p in processes if p.metadata.get("benchsvc_block") in blocks for v in p.values]
    return sum(values) / len(values) if values else None


def again_ratio(
    first: Sequence[ProcessValues],
    again: Sequence[ProcessValues],
    canary: Sequence[ProcessValues],
    canary_again: Sequence[ProcessValues],
) -> float | None:
    """The re-measured mean over tonight's first mean, corrected by how the canary moved between the two
    measurements (the canary of the same worker processes); None without values."""
    m_first = _block_mean(first, {p.metadata.get("benchsvc_block") for p in first})
    m_again = _block_mean(again, {p.metadata.get("benchsvc_block") for p in again})
    if not m_first or not m_again:
        return None
    c_first = _block_mean(canary, {p.metadata.get("benchsvc_block") for p in first})
    c_again = _block_mean(canary_again, {p.metadata.get("benchsvc_block") for p in again})
    drift = c_again / c_first if c_first and c_again else 1.0
    return (m_again / drift) / m_first


def nightly_change_held(
    finding: SeriesChange,
    first: Sequence[ProcessValues],
    again: Sequence[ProcessValues],
    canary: Sequence[ProcessValues],
    canary_again: Sequence[ProcessValues],
) -> bool:
    """Whether a re-measurement confirms tonight's change point (``finding``: the pending nightly finding):
    tonight's value, re-measured (:func:`again_ratio`), must be nearer to the change point's new level than to
    the level before (:func:`benchsvc.analysis.nightly.confirmation_holds`, the test the detector's
    evaluation measures as the "levels" path)."""
    from benchsvc.analysis.nightly import confirmation_holds

    ratio = again_ratio(first, again, canary, canary_again)
    details = finding.details
    tonight = details.get("value_tonight")
    if ratio is None or tonight is None:
        return False
    return confirmation_holds(
        float(details["mean_before"]), float(details["mean_after"]), float(tonight), ratio
    )


def resume_plan(engine: Any, run_ref: str | None) -> tuple[int, RunRecord, list[MatrixItem], str]:
    """The run to resume (this host's latest interrupted one by default), its record, its full plan and its
    mode."""
    from benchsvc.records import EnvironmentInfo, MachineInfo
    from benchsvc.store.db import read_session
    from benchsvc.store.runs import resumable_run

    with read_session(engine) as s:
        found = resumable_run(s, run_ref, MachineInfo.current(), EnvironmentInfo.current())
    items = [
        MatrixItem(
            entry["engine"], entry["version"], parse_workload(text.encode("utf-8"), name=entry["workload"])
        )
        for entry, text in found.plan
    ]
    return found.run_id, found.record, items, found.record.mode


def _test_hold_machine() -> None:
    """Test hook: with ``BENCHSVC_TEST_RUN_HOLD=<file>``, once the run holds the machine, create that file and
    wait (up to a minute) until the test removes it, so that a test meets a run that holds the machine however
    fast the run itself would be."""
    marker = os.environ.get("BENCHSVC_TEST_RUN_HOLD")
    if not marker:
        return
    Path(marker).touch()
    deadline = time.monotonic() + 60
    while Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
