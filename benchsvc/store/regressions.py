"""Regressions (and improvements) as records with a status: new, acknowledged, fixed, character.

A lineage finding (a version against its baseline, inside a run) is a property of the two versions on one
workload content and machine: it is recorded once, at the first run that shows it, and each later run that
analyses the same comparison either confirms it (``details.last_seen_run``) or, when the change is gone,
marks it ``fixed``. A lineage finding is the versions' character, not a regression to acknowledge: it is
filed with status ``character`` (it may still be acknowledged, to attach a note). A nightly finding (a change point in a series) is recorded once per series and change
night. The analysis decides what is a finding; this module only stores, lists and acknowledges.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from benchsvc.errors import BenchsvcError
from benchsvc.records import (
    OPEN_REGRESSION_STATUSES,
    Direction,
    EngineKind,
    RegressionAxis,
    RegressionStatus,
    SeriesChange,
    utcnow,
)
from benchsvc.store.models import (
    Machine,
    Regression,
    Result,
    Run,
    RunAnalysis,
    Version,
    Workload,
)
from benchsvc.store.queries import MAX_ID, find_workload, frame


class RegressionNotFound(BenchsvcError):
    """No regression with that id."""


def record_lineage(session: Session, run: Run, comparison: pd.DataFrame) -> tuple[int, int]:
    """Store the significant rows of a lineage comparison of ``run``; mark vanished ones fixed.

    Returns (new records, records marked fixed)."""
    workloads = {
        (w.name, w.content_hash): w.id
        for w in session.scalars(
            select(Workload).where(Workload.content_hash.in_(set(comparison.get("workload_hash", []))))
        )
    }
    existing = {
        _lineage_key(r): r
        for r in session.scalars(
            select(Regression).where(
                Regression.axis == RegressionAxis.LINEAGE,
                Regression.machine_id == run.machine_id,
                Regression.status.in_(OPEN_REGRESSION_STATUSES),
            )
        )
    }
    analysed: set[tuple[Any, ...]] = set()
    added = 0
    for row in comparison.itertuples(index=False):
        wid = workloads.get((row.workload, row.workload_hash))
        if wid is None:
            continue
        key = (row.engine, wid, row.version, row.baseline, row.metric)
        analysed.add(key)
        if not row.significant:
            continue
        if key in existing:
            existing[key].details = {**existing[key].details, "last_seen_run": run.id}
            continue
        session.add(
            Regression(
                axis=RegressionAxis.LINEAGE,
                run_id=run.id,
                machine_id=run.machine_id,
                environment_id=run.environment_id,
                engine=row.engine,
                version_id=row.version,
                baseline_version_id=row.baseline,
                workload_id=wid,
                metric=row.metric,
                direction=row.direction,
                # the ratio; from a zero baseline it is undefined and the delta stands in (details say so)
                effect=_finite(row.ratio) if _finite(row.ratio) is not None else float(row.delta),
                ci_low=_finite(row.ci_low),
                ci_high=_finite(row.ci_high),
                details={
                    "kind": row.kind,
                    "value": _plain(row.value),
                    "baseline_value": _plain(row.baseline_value),
                    "delta": _plain(row.delta),
                    "effect_is_delta": _finite(row.ratio) is None,
                    "last_seen_run": run.id,
                },
                status=RegressionStatus.CHARACTER,
                detected_at=utcnow(),
            )
        )
        added += 1
    fixed = 0
    # a finding is fixed only when this run shows it gone: for a timing comparison, its interval lies within
    # the minimum effect ("settled"), not merely that it was too wide to call the change significant tonight
    has_settled = "settled" in comparison.columns
    gone = {
        (r.engine, workloads.get((r.workload, r.workload_hash)), r.version, r.baseline, r.metric)
        for r in comparison.itertuples(index=False)
        if not r.significant and (bool(r.settled) if has_settled else True)
    }
    for key, reg in existing.items():
        if key in analysed and key in gone:
            reg.status = RegressionStatus.FIXED
            reg.details = {**reg.details, "fixed_in_run": run.id}
            fixed += 1
    session.flush()
    return added, fixed


def record_change(session: Session, run: Run, change: SeriesChange) -> bool:
    """Store one nightly change unless the same series already has it (True if added).

    "The same" is the same night, or any run listed in ``change.same_as_runs`` (a change point's night can
    move by one as later nights arrive)."""
    workload = find_workload(session, change.workload, change.workload_hash)
    if workload is None:
        raise ValueError(f"workload {change.workload} ({change.workload_hash[:12]}) is not stored")
    same = session.scalar(
        select(Regression.id).where(
            Regression.axis == RegressionAxis.NIGHTLY,
            Regression.run_id.in_(change.same_as_runs or [run.id]),
            Regression.machine_id == run.machine_id,
            Regression.environment_id == run.environment_id,
            Regression.engine == change.engine,
            Regression.version_id == change.version,
            Regression.workload_id == workload.id,
            Regression.metric == change.metric,
        )
    )
    if same is not None:
        return False
    session.add(_nightly_row(run, run.id, workload.id, change, dict(change.details), with_interval=True))
    session.flush()
    return True


def _nightly_row(
    run: Run,
    run_id: int,
    workload_id: int,
    change: SeriesChange,
    details: dict[str, Any],
    *,
    with_interval: bool,
) -> Regression:
    """A new nightly finding of ``change`` on ``run``'s machine and environment, filed at night ``run_id``."""
    return Regression(
        axis=RegressionAxis.NIGHTLY,
        run_id=run_id,
        machine_id=run.machine_id,
        environment_id=run.environment_id,
        engine=change.engine,
        version_id=change.version,
        baseline_version_id=None,
        baseline_run_id=change.baseline_run_id,
        workload_id=workload_id,
        metric=change.metric,
        direction=change.direction,
        effect=float(change.effect),
        ci_low=_finite(change.ci_low) if with_interval else None,
        ci_high=_finite(change.ci_high) if with_interval else None,
        details=details,
        status=RegressionStatus.NEW,
        detected_at=utcnow(),
    )


def record_creep(session: Session, run: Run, start_run: Run, change: SeriesChange) -> bool:
    """Store a creep of one series (axis nightly, ``details.kind`` "creep") found tonight in ``run``, or update
    the one already stored (True if added).

    A creep is one finding while it continues: a stored creep of the same series that started or was last
    seen on one of ``change.same_as_runs`` (this creep's nights) is the same creep, and gets tonight's rate,
    total so far and ``last_seen_run`` (its status, note and first night are kept). Otherwise the creep is
    new, recorded at its first night ``start_run``."""
    workload = find_workload(session, change.workload, change.workload_hash)
    if workload is None:
        raise ValueError(f"workload {change.workload} ({change.workload_hash[:12]}) is not stored")
    recent = set(change.same_as_runs) | {run.id}
    stored = session.scalars(
        select(Regression)
        .where(
            Regression.axis == RegressionAxis.NIGHTLY,
            Regression.machine_id == run.machine_id,
            Regression.environment_id == run.environment_id,
            Regression.engine == change.engine,
            Regression.version_id == change.version,
            Regression.workload_id == workload.id,
            Regression.metric == change.metric,
        )
        .order_by(Regression.id.desc())
    )
    for reg in stored:
        d = reg.details or {}
        if d.get("kind") == "creep" and (d.get("last_seen_run") in recent or reg.run_id in recent):
            first_start = d.get("night_start", change.details.get("night_start"))
            reg.details = {
                **d,
                **{k: _plain(v) for k, v in change.details.items()},
                "night_start": first_start,
                "updates": int(d.get("updates", 0)) + 1,
            }
            reg.effect = float(change.effect)
            reg.direction = change.direction
            session.flush()
            return False
    details = {**{k: _plain(v) for k, v in change.details.items()}, "updates": 0}
    session.add(_nightly_row(run, start_run.id, workload.id, change, details, with_interval=False))
    session.flush()
    return True


CANARY_ENGINE = EngineKind.CANARY
CANARY_VERSION = "canary-1"
CANARY_WORKLOAD = "canary"
#: the content hash of the placeholder "canary" workload row a machine event hangs on when the store has no
#: canary results (runs made before the canary existed, imported runs)
NO_CANARY_HASH = "0" * 64


def _canary_rows(session: Session, run: Run) -> tuple[str, int]:
    """The version and workload rows a machine event is stored under: the canary's ("canary-1", workload
    "canary": the run's canary workload, or the latest one stored), created when the store has none."""
    if session.get(Version, CANARY_VERSION) is None:
        session.add(
            Version(
                id=CANARY_VERSION,
                engine=CANARY_ENGINE,
                parent=None,
                title="canary: fixed calibration benchmark (machine events)",
                source="",
            )
        )
    wid = session.scalar(
        select(Workload.id)
        .join(Result, Result.workload_id == Workload.id)
        .where(Result.run_id == run.id, Result.engine == CANARY_ENGINE)
        .limit(1)
    )
    if wid is None:
        wid = session.scalar(
            select(Workload.id).where(Workload.name == CANARY_WORKLOAD).order_by(Workload.id.desc()).limit(1)
        )
    if wid is None:
        w = Workload(
            name=CANARY_WORKLOAD,
            content_hash=NO_CANARY_HASH,
            definition="",
            description="placeholder for machine events of runs without a canary",
        )
        session.add(w)
        session.flush()
        wid = w.id
    session.flush()
    return CANARY_VERSION, int(wid)


def record_machine_event(session: Session, run: Run, effect: float, details: dict[str, Any]) -> bool:
    """Store tonight's machine event of ``run`` (axis "machine", metric "time") unless it is stored (True
    if added). ``effect``: the median over series of tonight's value over the series' own level."""
    same = session.scalar(
        select(Regression.id).where(
            Regression.axis == RegressionAxis.MACHINE,
            Regression.run_id == run.id,
            Regression.machine_id == run.machine_id,
        )
    )
    if same is not None:
        return False
    version, wid = _canary_rows(session, run)
    session.add(
        Regression(
            axis=RegressionAxis.MACHINE,
            run_id=run.id,
            machine_id=run.machine_id,
            environment_id=run.environment_id,
            engine=CANARY_ENGINE,
            version_id=version,
            baseline_version_id=None,
            baseline_run_id=None,
            workload_id=wid,
            metric="time",
            direction=Direction.WORSE if effect > 1 else Direction.BETTER,
            effect=float(effect),
            ci_low=None,
            ci_high=None,
            details={k: _plain(v) for k, v in details.items()},
            status=RegressionStatus.NEW,
            detected_at=utcnow(),
        )
    )
    session.flush()
    return True


def mark_analysed(session: Session, run_id: int, settings: dict[str, Any]) -> None:
    """Remember that the nightly analysis recorded ``run_id`` (with these detector settings)."""
    from benchsvc import __version__

    row = session.get(RunAnalysis, run_id)
    if row is None:
        row = RunAnalysis(run_id=run_id)
        session.add(row)
    row.analysed_at = utcnow()
    row.benchsvc_version = __version__
    row.settings = {k: _plain(v) for k, v in settings.items()}
    session.flush()


def series_marks(
    session: Session, *, run_ids: list[int], engine: str, version: str, workload: str
) -> pd.DataFrame:
    """What the nightly analysis recorded on these runs for one series: its timing change points (axis
    nightly, metric time) and the machine events of those runs. Columns: run_id, axis, effect, details."""
    workload_ids = list(session.scalars(select(Workload.id).where(Workload.name == workload)))
    stmt = (
        select(Regression.run_id, Regression.axis, Regression.effect, Regression.details)
        .where(Regression.run_id.in_(run_ids), Regression.metric == "time")
        .where(
            (Regression.axis == RegressionAxis.MACHINE)
            | (
                (Regression.axis == RegressionAxis.NIGHTLY)
                & (Regression.engine == engine)
                & (Regression.version_id == version)
                & (Regression.workload_id.in_(workload_ids))
            )
        )
        .order_by(Regression.run_id, Regression.id)
    )
    return frame(session, stmt)


def list_regressions(
    session: Session,
    *,
    since: dt.datetime | None = None,
    status: str | None = None,
    axis: str | None = None,
    direction: str | None = None,
    machine_ids: list[int] | None = None,
) -> pd.DataFrame:
    """Regressions and improvements, newest first, with the run's start and machine (only those of
    ``machine_ids`` when given)."""
    baseline = aliased(Version)
    stmt = (
        select(
            Regression.id,
            Regression.axis,
            Regression.status,
            Regression.direction,
            Run.id.label("run_id"),
            Run.started_at,
            Machine.hostname.label("machine"),
            Regression.engine,
            Workload.name.label("workload"),
            Regression.version_id.label("version"),
            Regression.baseline_version_id.label("baseline"),
            Regression.metric,
            Regression.effect,
            Regression.ci_low,
            Regression.ci_high,
            Regression.details,
            Regression.note,
            Regression.detected_at,
        )
        .join(Run, Regression.run_id == Run.id)
        .join(Machine, Regression.machine_id == Machine.id)
        .join(Workload, Regression.workload_id == Workload.id)
        .outerjoin(baseline, Regression.baseline_version_id == baseline.id)
        .order_by(Run.started_at.desc(), Regression.id)
    )
    if since is not None:
        stmt = stmt.where(Run.started_at >= since)
    if status is not None:
        if status not in tuple(RegressionStatus):
            raise BenchsvcError(f"unknown status {status!r} — give one of: {', '.join(RegressionStatus)}")
        stmt = stmt.where(Regression.status == status)
    if axis is not None:
        if axis not in tuple(RegressionAxis):
            raise BenchsvcError(f"unknown axis {axis!r} — give one of: {', '.join(RegressionAxis)}")
        stmt = stmt.where(Regression.axis == axis)
    if direction is not None:
        stmt = stmt.where(Regression.direction == direction)
    if machine_ids is not None:
        stmt = stmt.where(Regression.machine_id.in_(machine_ids))
    return frame(session, stmt)


def acknowledge(session: Session, regression_id: int, note: str) -> Regression:
    reg = session.get(Regression, regression_id) if 0 <= regression_id <= MAX_ID else None
    if reg is None:
        raise RegressionNotFound(f"no regression {regression_id} — see benchsvc regressions")
    reg.status = RegressionStatus.ACKNOWLEDGED
    reg.note = note
    return reg


def open_matching(
    session: Session,
    *,
    only_new: bool = False,
    workload: str | None = None,
    version: str | None = None,
    axis: str | None = None,
    metric: str | None = None,
) -> list[int]:
    """Ids of the findings ``benchsvc regressions ack`` selects by filter: not acknowledged or fixed (status
    new; also character unless ``only_new``), matching every filter given."""
    if axis is not None and axis not in tuple(RegressionAxis):
        raise BenchsvcError(f"unknown axis {axis!r} — give one of: {', '.join(RegressionAxis)}")
    statuses = [RegressionStatus.NEW] if only_new else [RegressionStatus.NEW, RegressionStatus.CHARACTER]
    stmt = (
        select(Regression.id)
        .join(Workload, Regression.workload_id == Workload.id)
        .where(Regression.status.in_(statuses))
        .order_by(Regression.id)
    )
    if workload is not None:
        stmt = stmt.where(Workload.name == workload)
    if version is not None:
        stmt = stmt.where(Regression.version_id == version)
    if axis is not None:
        stmt = stmt.where(Regression.axis == axis)
    if metric is not None:
        stmt = stmt.where(Regression.metric == metric)
    return list(session.scalars(stmt))


def _lineage_key(r: Regression) -> tuple[Any, ...]:
    return (r.engine, r.workload_id, r.version_id, r.baseline_version_id, r.metric)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if x == x and x not in (float("inf"), float("-inf")) else None


def _plain(x: Any) -> Any:
    if isinstance(x, float | int):
        return x
    try:
        return x.item()  # numpy / pandas scalars
    except AttributeError:
        return x
