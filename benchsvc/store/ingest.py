"""Writing runs and results. The session is passed in; the caller owns the transaction.

Provenance rows (machines, environments, workloads, versions) are found by their natural keys
(fingerprint; name + content hash; version id) and created when missing, so the same machine or workload
file is stored once however many runs refer to it. Results are keyed by (run, engine, version, workload):
adding one twice is an error, except through :func:`ingest`, which skips what is already there (importing the
same file twice adds nothing).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchsvc.records import (
    EnvironmentInfo,
    MachineInfo,
    ResultRecord,
    RunRecord,
    VersionInfo,
    WorkloadRef,
    utcnow,
)
from benchsvc.store.models import (
    RESULT_STATUSES,
    RUN_STATUSES,
    Counter,
    Environment,
    Machine,
    Result,
    Run,
    Sample,
    Version,
    Workload,
)


def get_or_create_machine(session: Session, info: MachineInfo) -> Machine:
    fp = info.fingerprint
    row = session.scalar(select(Machine).where(Machine.fingerprint == fp))
    if row is None:
        row = Machine(fingerprint=fp, first_seen=utcnow(), **info.as_dict())
        session.add(row)
        session.flush()
    return row


def get_or_create_environment(session: Session, info: EnvironmentInfo) -> Environment:
    fp = info.fingerprint
    row = session.scalar(select(Environment).where(Environment.fingerprint == fp))
    if row is None:
        row = Environment(
            fingerprint=fp,
            python_version=info.python_version,
            packages=dict(info.packages),
            first_seen=utcnow(),
        )
        session.add(row)
        session.flush()
    return row


def get_or_create_workload(session: Session, ref: WorkloadRef) -> Workload:
    row = session.scalar(
        select(Workload).where(Workload.name == ref.name, Workload.content_hash == ref.content_hash)
    )
    if row is None:
        row = Workload(
            name=ref.name,
            content_hash=ref.content_hash,
            definition=ref.definition,
            description=ref.description,
        )
        session.add(row)
        session.flush()
    return row


def upsert_version(session: Session, info: VersionInfo) -> Version:
    """Create the version row, or bring its title/source/parent up to date (ids are stable)."""
    row = session.get(Version, info.id)
    if row is None:
        row = Version(
            id=info.id, engine=info.engine, parent=info.parent, title=info.title, source=info.source
        )
        session.add(row)
        session.flush()
    else:
        row.parent, row.title, row.source = info.parent, info.title or row.title, info.source or row.source
    return row


def registry_versions() -> list[VersionInfo]:
    """The simulated engine's versions, as stored."""
    from benchsvc.engine.versions import all_versions

    return [VersionInfo(v.id, "sim", v.parent, v.title, v.source) for v in all_versions()]


def create_run(session: Session, record: RunRecord) -> Run:
    if record.status not in RUN_STATUSES:
        raise ValueError(f"run status {record.status!r} is not one of {RUN_STATUSES}")
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


def finish_run(session: Session, run: Run, status: str) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
    run.status = status
    run.finished_at = utcnow()


def add_result(
    session: Session, run: Run, record: ResultRecord, version: VersionInfo | None = None
) -> Result:
    """Store one result with its raw values and counters (the version row must exist or be given)."""
    if record.status not in RESULT_STATUSES:
        raise ValueError(f"result status {record.status!r} is not one of {RESULT_STATUSES}")
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
        Sample(process=i, loops=p.loops, values=list(p.values), warmups=list(p.warmups))
        for i, p in enumerate(record.processes)
    ]
    result.counters = [Counter(name=name, value=int(value)) for name, value in record.counters.items()]
    session.add(result)
    session.flush()
    return result


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
