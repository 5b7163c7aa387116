"""Writing runs and results. The session is passed in; the caller owns the transaction.

Provenance rows (machines, environments, workloads, versions) are found by their natural keys
(fingerprint; name + content hash; version id) and created when missing, so the same machine or workload
file is stored once however many runs refer to it. Results are keyed by (run, engine, version, workload):
adding one twice is an error, except through :func:`ingest`, which skips what is already there (importing the
same file twice adds nothing).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from benchsvc.records import (
    FINISHED_RUN_STATUSES,
    EngineKind,
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    RunStatus,
    VersionInfo,
    WorkloadRef,
    utcnow,
)
from benchsvc.store.db import StoreError
from benchsvc.store.models import (
    Counter,
    Environment,
    Machine,
    Result,
    Run,
    Sample,
    Version,
    Workload,
)
from benchsvc.store.queries import find_workload

T = TypeVar("T")


def _get_or_create(session: Session, find: Callable[[], T | None], make: Callable[[], T]) -> T:
    """The row ``find()`` returns, else a new one from ``make()``.

    The insert runs in a savepoint: when a concurrent writer inserted the same natural key first (a unique
    violation on PostgreSQL), the savepoint is rolled back and that writer's row is returned."""
    row = find()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = make()
            session.add(row)
    except IntegrityError:
        row = find()
        if row is None:
            raise
    return row


def get_or_create_machine(session: Session, info: MachineInfo) -> Machine:
    fp = info.fingerprint
    return _get_or_create(
        session,
        lambda: session.scalar(select(Machine).where(Machine.fingerprint == fp)),
        lambda: Machine(fingerprint=fp, first_seen=utcnow(), **info.as_dict()),
    )


def get_or_create_environment(session: Session, info: EnvironmentInfo) -> Environment:
    fp = info.fingerprint
    return _get_or_create(
        session,
        lambda: session.scalar(select(Environment).where(Environment.fingerprint == fp)),
        lambda: Environment(
            fingerprint=fp,
            python_version=info.python_version,
            packages=dict(info.packages),
            first_seen=utcnow(),
        ),
    )


def get_or_create_workload(session: Session, ref: WorkloadRef) -> Workload:
    return _get_or_create(
        session,
        lambda: find_workload(session, ref.name, ref.content_hash),
        lambda: Workload(
            name=ref.name,
            content_hash=ref.content_hash,
            definition=ref.definition,
            description=ref.description,
        ),
    )


def upsert_version(session: Session, info: VersionInfo) -> Version:
    """Create the version row, or bring its title/source/parent up to date (ids are stable)."""
    row = _get_or_create(
        session,
        lambda: session.get(Version, info.id),
        lambda: Version(
            id=info.id, engine=info.engine, parent=info.parent, title=info.title, source=info.source
        ),
    )
    if info.title or info.source:  # a full description (a bare VersionInfo(id, engine) changes nothing)
        row.engine, row.parent, row.title, row.source = info.engine, info.parent, info.title, info.source
    return row


def registry_versions() -> list[VersionInfo]:
    """The simulated engine's versions, as stored."""
    from benchsvc.engine.versions import all_versions

    return [VersionInfo(v.id, EngineKind.SIM, v.parent, v.title, v.source) for v in all_versions()]


def create_run(session: Session, record: RunRecord) -> Run:
    run = Run(
        uuid=record.uuid,
        machine=get_or_create_machine(session, record.machine),
        environment=get_or_create_environment(session, record.environment),
        benchsvc_version=record.benchsvc_version,
        git_commit=record.git_commit,
        mode=record.mode,
        trigger=record.trigger,
        pyperf_settings=dict(record.pyperf_settings),
        plan=list(record.plan) if record.plan is not None else None,
        status=record.status,
        started_at=record.started_at,
        finished_at=record.finished_at,
    )
    session.add(run)
    session.flush()
    return run


def finish_run(session: Session, run: Run, status: RunStatus | str) -> None:
    run.status = RunStatus(status)  # ValueError for a status that is none
    run.finished_at = utcnow()


def add_result(
    session: Session, run: Run, record: ResultRecord, version: VersionInfo | None = None
) -> Result:
    """Store one result with its raw values and counters (the version row must exist or be given)."""
    if version is not None:
        upsert_version(session, version)
    elif session.get(Version, record.version) is None:
        upsert_version(session, VersionInfo(record.version, record.engine))
    values = record.values
    result = Result(
        run=run,
        engine=record.engine,
        version_id=record.version,
        workload=get_or_create_workload(session, record.workload),
        status=record.status,
        error=record.error,
        modeled_ns=record.modeled_ns,
        n_values=len(values),
        mean_s=statistics.fmean(values) if values else None,
        median_s=statistics.median(values) if values else None,
        stdev_s=statistics.stdev(values) if len(values) > 1 else None,
        min_s=min(values) if values else None,
        max_s=max(values) if values else None,
        warnings=list(record.warnings),
        pyperf_metadata=dict(record.pyperf_metadata),
        started_at=record.started_at,
        finished_at=record.finished_at,
    )
    result.samples = [
        Sample(
            process=i, loops=p.loops, values=list(p.values), warmups=list(p.warmups), meta=p.metadata or None
        )
        for i, p in enumerate(record.processes)
    ]
    result.counters = [Counter(name=name, value=int(value)) for name, value in record.counters.items()]
    session.add(result)
    session.flush()
    return result


def add_processes(
    session: Session, result_id: int, processes: Sequence[ProcessValues], first: int | None = None
) -> None:
    """Append worker processes to a stored result (a confirmation re-measurement), numbered from ``first``
    (default: after the result's last stored process; a duet result holds a process per edge it is in).

    The result's summary (mean, median, ...) stays that of the values it was stored with: the appended
    processes carry their phase in their metadata and are read apart (:mod:`benchsvc.analysis.lineage`)."""
    if first is None:
        last = session.scalar(select(func.max(Sample.process)).where(Sample.result_id == result_id))
        first = 0 if last is None else last + 1
    for i, p in enumerate(processes):
        session.add(
            Sample(
                result_id=result_id,
                process=first + i,
                loops=p.loops,
                values=list(p.values),
                warmups=list(p.warmups),
                meta=p.metadata or None,
            )
        )
    session.flush()


def ingest(
    session: Session,
    run_record: RunRecord,
    results: Iterable[ResultRecord],
    versions: Iterable[VersionInfo] = (),
) -> tuple[Run, int]:
    """Store a run and its results; a run (by uuid) or result (by key) already stored is not added again.

    Returns the run and the number of results added."""
    for info in versions:
        upsert_version(session, info)
    run = session.scalar(select(Run).where(Run.uuid == run_record.uuid))
    if run is None:
        run = create_run(session, run_record)
    else:
        if (
            run.machine.fingerprint != run_record.machine.fingerprint
            or run.environment.fingerprint != run_record.environment.fingerprint
        ):
            raise StoreError(
                f"run {run_record.uuid} is already stored with another machine or environment: "
                "its results cannot be added to it"
            )
        if (
            run.status in (RunStatus.RUNNING, RunStatus.INTERRUPTED)
            and run_record.status in FINISHED_RUN_STATUSES
        ):
            run.status, run.finished_at = run_record.status, run_record.finished_at
    existing = {
        (engine, version, name, chash)
        for engine, version, name, chash in session.execute(
            select(Result.engine, Result.version_id, Workload.name, Workload.content_hash)
            .join(Workload, Result.workload_id == Workload.id)
            .where(Result.run_id == run.id)
        )
    }
    added = 0
    for record in results:
        key = (record.engine, record.version, record.workload.name, record.workload.content_hash)
        if key in existing:
            continue
        add_result(session, run, record)
        existing.add(key)
        added += 1
    return run, added
