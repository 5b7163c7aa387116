"""A run's life in the store: open (or reopen to resume) with this machine's lock, commit results, append a
confirmation's processes, heartbeat, close; and the run ``--resume`` picks.

Each function is one write transaction, so a run killed at any point leaves whole blocks of results and the
run ``running`` under its lock, which :func:`benchsvc.store.lock.recover` later marks ``interrupted``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchsvc.errors import BenchsvcError
from benchsvc.records import (
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    VersionInfo,
    WorkloadRef,
)
from benchsvc.store import lock
from benchsvc.store.db import write_session
from benchsvc.store.ingest import (
    add_processes,
    add_result,
    create_run,
    finish_run,
    get_or_create_workload,
    upsert_version,
)
from benchsvc.store.models import Machine, Result, Run, Workload
from benchsvc.store.queries import find_workload, get_run, result_id

#: a result's key within a run: (engine, version, workload name, workload content hash)
ResultKey = tuple[str, str, str, str]


class RunStoreError(BenchsvcError):
    """A run that cannot be opened, written or resumed as asked."""


@dataclass
class OpenedRun:
    run_id: int
    uuid: str
    notes: list[str] = field(default_factory=list)
    #: the keys of the results already committed (a resumed run), and how many of those failed
    done: set[ResultKey] = field(default_factory=set)
    failed_before: int = 0


def open_run(
    engine: Engine,
    record: RunRecord,
    versions: Sequence[VersionInfo],
    workloads: Sequence[WorkloadRef],
    resume_run_id: int | None = None,
    on_open: Callable[[int], None] | None = None,
) -> OpenedRun:
    """Create the run (or reopen ``resume_run_id``) and take this host's lock in one write transaction.

    Every planned workload's text is stored now, so ``--resume`` never depends on the files. Raises
    :class:`~benchsvc.store.lock.RunLocked` when this host has a live run in the database. ``on_open`` is
    called with the run's id before the transaction commits (the machine lock's file names the run before
    anyone can see the run in the database)."""
    with write_session(engine) as s:
        for info in versions:
            upsert_version(s, info)
        if resume_run_id is None:
            run = create_run(s, record)
            for ref in workloads:
                get_or_create_workload(s, ref)
            opened = OpenedRun(0, run.uuid)
        else:
            found = s.get(Run, resume_run_id)
            if found is None:
                raise RunStoreError(f"no run {resume_run_id} to resume")
            run = found
            run.status, run.finished_at = "running", None
            opened = OpenedRun(0, run.uuid)
            committed = (
                select(Result.engine, Result.version_id, Workload.name, Workload.content_hash, Result.status)
                .join(Workload, Result.workload_id == Workload.id)
                .where(Result.run_id == run.id)
            )
            for engine_, version, name, chash, status in s.execute(committed):
                opened.done.add((engine_, version, name, chash))
                opened.failed_before += status == "failed"
        note = lock.take(s, run)
        if note:
            opened.notes.append(note)
        opened.run_id = run.id
        if on_open is not None:
            on_open(run.id)
        return opened


def _running(s: Session, run_id: int) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise RunStoreError(f"run {run_id} disappeared from the database")
    return run


def commit_results(engine: Engine, run_id: int, records: Sequence[ResultRecord]) -> None:
    """Store a block of results together, with a heartbeat."""
    with write_session(engine) as s:
        run = _running(s, run_id)
        for record in records:
            add_result(s, run, record)
        lock.heartbeat(s, run_id)


def append_processes(
    engine: Engine,
    run_id: int,
    engine_name: str,
    workload: WorkloadRef,
    processes: dict[str, list[ProcessValues]],
) -> None:
    """Append a confirmation's worker processes to the run's results of ``workload``, by version."""
    with write_session(engine) as s:
        _running(s, run_id)
        for version, pvs in processes.items():
            rid = result_id(s, run_id, engine_name, version, workload.name, workload.content_hash)
            if rid is not None:
                add_processes(s, rid, pvs)
        lock.heartbeat(s, run_id)


def heartbeat(engine: Engine, run_id: int) -> None:
    with write_session(engine) as s:
        lock.heartbeat(s, run_id)


def close_run(engine: Engine, run_id: int, status: str) -> None:
    """End the run with ``status`` and release this host's lock."""
    with write_session(engine) as s:
        run = s.get(Run, run_id)
        if run is not None:
            finish_run(s, run, status)
            lock.release(s, run_id)


@contextlib.contextmanager
def heartbeats(engine: Engine, run_id: int, every_s: float = lock.HEARTBEAT_EVERY_S) -> Iterator[None]:
    """Refresh the run's heartbeat every ``every_s`` seconds from a thread while the body runs (a worker can
    take longer than :data:`~benchsvc.store.lock.STALE_AFTER` between two committed blocks)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            # a failed beat (database briefly away) is retried at the next tick; the run's own commits
            # report real trouble
            with contextlib.suppress(Exception):
                heartbeat(engine, run_id)

    thread = threading.Thread(target=beat, name=f"benchsvc-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@dataclass(frozen=True)
class ResumableRun:
    """A run to finish: its record, and its plan with each workload's stored text."""

    run_id: int
    record: RunRecord
    #: the plan's entries ({"engine", "version", "workload", "workload_hash"}) with the workload's text
    plan: list[tuple[dict[str, Any], str]]


def resumable_run(
    session: Session, run_ref: str | None, machine: MachineInfo, environment: EnvironmentInfo
) -> ResumableRun:
    """The run ``--resume`` finishes on ``machine`` in ``environment``: ``run_ref``, or the latest
    interrupted run of this host. A run is resumed where it started (same machine and environment)."""
    if run_ref is None:
        run = session.scalar(
            select(Run)
            .join(Machine, Run.machine_id == Machine.id)
            .where(Run.status == "interrupted", Machine.hostname == machine.hostname)
            .order_by(Run.started_at.desc(), Run.id.desc())
            .limit(1)
        )
        if run is None:
            raise RunStoreError("no interrupted run to resume (see benchsvc runs)")
    else:
        run = get_run(session, run_ref)
    if run.status != "interrupted":
        raise RunStoreError(
            f"run {run.id} is {run.status}, not interrupted: only interrupted runs can be resumed"
        )
    if not run.plan:
        raise RunStoreError(f"run {run.id} has no stored plan (it was imported or made by an older benchsvc)")
    if machine.fingerprint != run.machine.fingerprint:
        raise RunStoreError(
            f"run {run.id} was started on {run.machine.hostname} ({run.machine.fingerprint[:12]}), "
            f"this is {machine.hostname} ({machine.fingerprint[:12]}): resume it where it started"
        )
    if environment.fingerprint != run.environment.fingerprint:
        raise RunStoreError(
            f"run {run.id} was started with another environment (Python or key package versions "
            f"differ: {run.environment.fingerprint[:12]} vs {environment.fingerprint[:12]}): resume it there"
        )
    plan = []
    for entry in run.plan:
        row = find_workload(session, entry["workload"], entry["workload_hash"])
        if row is None:
            raise RunStoreError(
                f"run {run.id}: workload {entry['workload']} of its plan is not in the database"
            )
        plan.append((dict(entry), row.definition))
    record = RunRecord(
        uuid=run.uuid,
        started_at=run.started_at,
        machine=machine,
        environment=environment,
        benchsvc_version=run.benchsvc_version,
        git_commit=run.git_commit,
        mode=run.mode,
        trigger=run.trigger,
        pyperf_settings=dict(run.pyperf_settings),
        plan=list(run.plan),
    )
    return ResumableRun(run.id, record, plan)


def finished_runs(session: Session, uuids: Sequence[str]) -> list[int]:
    """The ids of the finished runs (complete or failed) among ``uuids``, oldest night first (the order the
    nightly analysis needs: each night is judged against the nights before it)."""
    if not uuids:
        return []
    stmt = (
        select(Run.id)
        .where(Run.uuid.in_(list(dict.fromkeys(uuids))), Run.status.in_(("complete", "failed")))
        .order_by(Run.started_at, Run.id)
    )
    return [int(r) for r in session.scalars(stmt)]
