"""Reading the store: everything comes back as pandas DataFrames (analysis and reports never see SQL).

Metrics: ``time`` (the pyperf mean of a result, seconds), ``modeled_ns``, or any counter name.
"""

from __future__ import annotations

import datetime as dt
import math
import sys

import pandas as pd
from sqlalchemy import Executable, String, func, select, type_coerce
from sqlalchemy.orm import Session

from benchsvc.errors import BenchsvcError
from benchsvc.records import (
    FINISHED_RUN_STATUSES,
    OPEN_REGRESSION_STATUSES,
    EngineKind,
    ProcessValues,
    RegressionAxis,
    ResultStatus,
)
from benchsvc.store.models import Counter, Environment, Machine, Result, Run, Sample, Version, Workload
from benchsvc.store.result_schema import MAX_VALUE_S

TIME_METRIC = "time"
#: The largest id the database stores (a signed 64-bit integer in SQLite and PostgreSQL).
MAX_ID = 2**63 - 1


class NotFound(BenchsvcError):
    """A run, workload or series that is not in the database."""


def frame(session: Session, stmt: Executable) -> pd.DataFrame:
    """Execute ``stmt`` and return its rows as a DataFrame (the store's one way to build frames)."""
    # Core execution on the session's connection, and plain tuples for pandas: ORM result handling and
    # pandas probing each Row for namedtuple fields cost more than the query itself.
    result = session.connection().execute(stmt)
    columns = list(result.keys())
    return pd.DataFrame.from_records([tuple(row) for row in result.fetchall()], columns=columns)


#: the warnings about unusable rows already given by this process (each is given once)
_noted: set[str] = set()


def _note_skipped(message: str) -> None:
    """Say on stderr, once per process, that rows were left out (the store holds something no analysis can
    use: an older benchsvc's import, or rows written by hand)."""
    if message not in _noted:
        _noted.add(message)
        print(f"warning: {message}", file=sys.stderr)


def usable_time(value: object) -> bool:
    """Whether a stored timing (seconds) is one an analysis can divide by and take the logarithm of: a
    finite number, more than 0 and at most the import's :data:`MAX_VALUE_S`."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and 0.0 < value <= MAX_VALUE_S


def usable_values(values: object) -> bool:
    """Whether a stored process's ``values`` is a non-empty list of :func:`usable_time` values."""
    return isinstance(values, list) and bool(values) and all(usable_time(v) for v in values)


def _unusable_times(column: pd.Series) -> pd.Series:
    """The rows of a timing column holding a value that is not NULL and not :func:`usable_time`."""
    x = pd.to_numeric(column, errors="coerce").astype(float)
    return column.notna() & ~((x > 0.0) & (x <= MAX_VALUE_S))


def _drop_unusable_times(df: pd.DataFrame, column: str, where: str) -> pd.DataFrame:
    bad = _unusable_times(df[column]) if not df.empty else pd.Series(False, index=df.index)
    if bad.any():
        _note_skipped(
            f"{where}: {int(bad.sum())} stored results have a timing that is not a time in seconds (0, "
            f"negative, not finite or more than {MAX_VALUE_S:g}); they are left out — the database holds rows "
            "benchsvc import would refuse"
        )
        df = df[~bad].reset_index(drop=True)
    return df


def plain_frame(session: Session, stmt: Executable) -> pd.DataFrame:
    """:func:`frame` for a statement whose columns SQLAlchemy does not convert (strings, integers, floats, and
    timestamps coerced to strings): the driver's rows go to pandas as they are, without a result row object
    each (a third of the time of a machine's year of history)."""
    result = session.connection().execute(stmt)
    try:
        columns = list(result.keys())
        return pd.DataFrame.from_records(result.cursor.fetchall(), columns=columns)
    finally:
        result.close()


def find_workload(session: Session, name: str, content_hash: str) -> Workload | None:
    """The stored workload of this name and content hash (a workload's natural key), or None."""
    return session.scalar(
        select(Workload).where(Workload.name == name, Workload.content_hash == content_hash)
    )


def previous_run(session: Session, run: Run) -> Run | None:
    """The finished run (complete or failed) before ``run`` of the same machine, environment and mode."""
    return session.scalar(
        select(Run)
        .where(
            Run.machine_id == run.machine_id,
            Run.environment_id == run.environment_id,
            Run.mode == run.mode,
            Run.started_at < run.started_at,
            Run.status.in_(FINISHED_RUN_STATUSES),
        )
        .order_by(Run.started_at.desc())
        .limit(1)
    )


def series_history(
    session: Session,
    *,
    workload: str,
    version: str,
    metric: str = TIME_METRIC,
    engine: EngineKind | str = EngineKind.SIM,
    machine: str | None = None,
    since: dt.datetime | None = None,
    mode: str | None = None,
) -> pd.DataFrame:
    """One row per run that has an ``ok`` result for (workload, version, engine), oldest first.

    Columns: run_id, started_at, mode, git_commit, machine (hostname), machine_fp, environment_fp,
    workload_hash, value, plus mean_s, median_s, stdev_s, n_values for the time metric. The provenance
    columns let a caller split rows of different provenance into separate series; ``machine`` filters by
    hostname or fingerprint prefix."""
    if metric == TIME_METRIC:
        value_cols = [
            Result.mean_s.label("value"),
            Result.mean_s,
            Result.median_s,
            Result.stdev_s,
            Result.n_values,
        ]
    elif metric == "modeled_ns":
        value_cols = [Result.modeled_ns.label("value")]
    else:
        value_cols = [Counter.value.label("value")]
    workload_ids = {
        wid: chash
        for wid, chash in session.execute(
            select(Workload.id, Workload.content_hash).where(Workload.name == workload)
        )
    }
    machines = {
        mid: (host, fp)
        for mid, host, fp in session.execute(select(Machine.id, Machine.hostname, Machine.fingerprint))
    }
    if machine is not None:
        machines = {k: v for k, v in machines.items() if v[0] == machine or v[1].startswith(machine)}
    stmt = (
        select(
            Run.id.label("run_id"),
            # raw column values, parsed below by pandas in one vectorised call (SQLAlchemy would parse the
            # SQLite text of each row in Python)
            type_coerce(Run.started_at, String).label("started_at"),
            Run.mode,
            Run.git_commit,
            Run.machine_id,
            Run.environment_id,
            Result.workload_id,
            *value_cols,
        )
        .select_from(Result)
        .join(Run, Result.run_id == Run.id)
        .where(
            Result.workload_id.in_(list(workload_ids)),
            Result.version_id == version,
            Result.engine == engine,
            Result.status == ResultStatus.OK,
        )
        .order_by(Run.started_at, Run.id)
    )
    if metric not in (TIME_METRIC, "modeled_ns"):
        stmt = stmt.join(Counter, (Counter.result_id == Result.id) & (Counter.name == metric))
    if machine is not None:
        stmt = stmt.where(Run.machine_id.in_(list(machines)))
    if since is not None:
        stmt = stmt.where(Run.started_at >= since)
    if mode is not None:
        stmt = stmt.where(Run.mode == mode)
    df = frame(session, stmt)
    df["started_at"] = pd.to_datetime(df["started_at"], format="ISO8601")
    environments = {eid: fp for eid, fp in session.execute(select(Environment.id, Environment.fingerprint))}
    provenance = pd.DataFrame(
        {
            "machine": df["machine_id"].map(lambda m: machines[m][0]),
            "machine_fp": df["machine_id"].map(lambda m: machines[m][1]),
            "environment_fp": df["environment_id"].map(environments),
            "workload_hash": df["workload_id"].map(workload_ids),
        },
        index=df.index,
    )
    if metric == TIME_METRIC:
        keep = ~_unusable_times(df["mean_s"]) if not df.empty else pd.Series(True, index=df.index)
        if not keep.all():
            _note_skipped(
                f"history of {workload} {version}: {int((~keep).sum())} stored results have a timing that is "
                f"not a time in seconds (0, negative, not finite or more than {MAX_VALUE_S:g}); they are "
                "left out — the database holds rows benchsvc import would refuse"
            )
            df, provenance = df[keep].reset_index(drop=True), provenance[keep].reset_index(drop=True)
    head = df[["run_id", "started_at", "mode", "git_commit"]]
    value_names = (
        ["value", "mean_s", "median_s", "stdev_s", "n_values"] if metric == TIME_METRIC else ["value"]
    )
    return pd.concat([head, provenance, df[value_names]], axis=1)


#: the engine of the canary's results (benchsvc/runner/canary.py)
CANARY_ENGINE = EngineKind.CANARY


def list_runs(session: Session, limit: int = 20, machine_ids: list[int] | None = None) -> pd.DataFrame:
    """The most recent runs, newest first, with their result counts by status (``limit`` >= 0; the canary's
    result, measured beside the planned ones, is not counted); only those of ``machine_ids`` when given."""
    if limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    ok = func.count(Result.id).filter(Result.status == ResultStatus.OK)
    # the runs first, then their results counted (counting every run's results and keeping 50 reads the
    # whole store)
    latest = select(Run.id).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
    if machine_ids is not None:
        latest = latest.where(Run.machine_id.in_(machine_ids))
    chosen = latest.subquery()
    stmt = (
        select(
            Run.id.label("run_id"),
            Run.uuid.label("run_uuid"),
            Run.started_at,
            Run.finished_at,
            Run.status,
            Run.mode,
            Run.trigger,
            Run.git_commit,
            Machine.hostname.label("machine"),
            func.count(Result.id).label("results"),
            ok.label("ok"),
        )
        .select_from(Run)
        .join(chosen, chosen.c.id == Run.id)
        .join(Machine, Run.machine_id == Machine.id)
        .outerjoin(Result, (Result.run_id == Run.id) & (Result.engine != CANARY_ENGINE))
        .group_by(Run.id, Machine.hostname)
        .order_by(Run.started_at.desc(), Run.id.desc())
    )
    df = frame(session, stmt)
    # typed even when there are no runs (a new database), so that callers can format the columns
    df["started_at"] = pd.to_datetime(df["started_at"])
    df["finished_at"] = pd.to_datetime(df["finished_at"])
    df["failed"] = df["results"] - df["ok"]
    return df


def run_hostnames(session: Session) -> list[str]:
    """The hostnames of the machines that have runs, sorted."""
    stmt = select(Machine.hostname).join(Run, Run.machine_id == Machine.id).distinct()
    return sorted(session.scalars(stmt))


def get_run(session: Session, ref: str | int | None = None) -> Run:
    """A run by id, by uuid (or a unique uuid prefix), or the latest one when ``ref`` is None."""
    if ref is None:
        run = session.scalar(select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(1))
        if run is None:
            raise NotFound("the database has no runs yet — run benchsvc run first")
        return run
    text = str(ref)
    if text.isdigit() and int(text) <= MAX_ID:  # larger numbers are no id (and overflow the database)
        run = session.get(Run, int(text))
        if run is not None:
            return run
    matches = session.scalars(select(Run).where(Run.uuid.startswith(text, autoescape=True)).limit(2)).all()
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise NotFound(f"run {text!r} is ambiguous: give more of its uuid")
    raise NotFound(f"no run {text!r} in this database — see benchsvc runs")


def run_results(session: Session, run_id: int) -> pd.DataFrame:
    """One row per result of a run, counters as columns (``c_<name>``), lineage order not applied."""
    stmt = (
        select(
            Result.id.label("result_id"),
            Result.engine,
            Result.version_id.label("version"),
            Version.parent,
            Workload.name.label("workload"),
            Workload.content_hash.label("workload_hash"),
            Result.status,
            Result.error,
            Result.modeled_ns,
            Result.n_values,
            Result.mean_s,
            Result.median_s,
            Result.stdev_s,
            Result.warnings,
        )
        .join(Version, Result.version_id == Version.id)
        .join(Workload, Result.workload_id == Workload.id)
        .where(Result.run_id == run_id)
        .order_by(Result.id)
    )
    df = frame(session, stmt)
    bad = _unusable_times(df["mean_s"]) if not df.empty else pd.Series(False, index=df.index)
    if bad.any():
        _note_skipped(
            f"run {run_id}: {int(bad.sum())} results have a stored timing that is not a time in seconds (0, "
            f"negative, not finite or more than {MAX_VALUE_S:g}); their timing is shown as missing"
        )
        df = df.astype({"mean_s": float, "median_s": float, "stdev_s": float})
        df.loc[bad, ["mean_s", "median_s", "stdev_s"]] = math.nan
    counters = frame(
        session,
        select(Counter.result_id, Counter.name, Counter.value)
        .join(Result, Counter.result_id == Result.id)
        .where(Result.run_id == run_id),
    )
    if not counters.empty:
        # nullable integers: a counter missing from some results must not turn the column into floats
        counters["value"] = counters["value"].astype("Int64")
        wide = counters.pivot(index="result_id", columns="name", values="value").add_prefix("c_")
        df = df.merge(wide, left_on="result_id", right_index=True, how="left")
    return df


SAMPLE_COLUMNS = [
    "result_id",
    "engine",
    "version",
    "workload",
    "process",
    "block",
    "block_process",
    "phase",
    "value_index",
    "value_s",
]


def open_lineage_findings(session: Session, run_id: int) -> set[tuple[str, str, str, str, str, str, str]]:
    """The lineage findings still open (new or acknowledged) on the machine of run ``run_id``, as keys
    (engine, workload, workload hash, version, baseline, metric, direction)."""
    from benchsvc.store.models import Regression

    machine_id = session.scalar(select(Run.machine_id).where(Run.id == run_id))
    stmt = (
        select(
            Regression.engine,
            Workload.name,
            Workload.content_hash,
            Regression.version_id,
            Regression.baseline_version_id,
            Regression.metric,
            Regression.direction,
        )
        .join(Workload, Regression.workload_id == Workload.id)
        .where(
            Regression.axis == RegressionAxis.LINEAGE,
            Regression.machine_id == machine_id,
            Regression.status.in_(OPEN_REGRESSION_STATUSES),
        )
    )
    return {tuple(str(x) for x in row) for row in session.execute(stmt)}  # type: ignore[misc]


def run_process_values(
    session: Session, run_id: int, *, phase: str, engine: str
) -> dict[tuple[str, str, str], list[ProcessValues]]:
    """The worker processes of one phase ("primary" or "confirm") of a run's results of ``engine``, by
    (version, workload, workload hash), with their metadata."""
    stmt = (
        select(
            Result.version_id,
            Workload.name,
            Workload.content_hash,
            Sample.values,
            Sample.warmups,
            Sample.loops,
            Sample.meta,
        )
        .join(Result, Sample.result_id == Result.id)
        .join(Workload, Result.workload_id == Workload.id)
        .where(Result.run_id == run_id, Result.engine == engine)
        .order_by(Sample.result_id, Sample.process)
    )
    out: dict[tuple[str, str, str], list[ProcessValues]] = {}
    skipped = 0
    for version, name, chash, values, warmups, loops, meta in session.execute(stmt):
        if not usable_values(values):
            skipped += 1
            continue
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("benchsvc_phase", "primary") != phase:
            continue
        out.setdefault((version, name, chash), []).append(
            ProcessValues(tuple(values), tuple(warmups or ()), int(loops), dict(meta))
        )
    _note_unusable_processes(run_id, skipped)
    return out


def _note_unusable_processes(run_id: int, skipped: int) -> None:
    if skipped:
        _note_skipped(
            f"run {run_id}: {skipped} stored worker processes have values that are not times in seconds "
            f"(none, 0, negative, not finite or more than {MAX_VALUE_S:g}); they are left out — the database "
            "holds rows benchsvc import would refuse"
        )


def result_id(
    session: Session, run_id: int, engine: str, version: str, workload: str, content_hash: str
) -> int | None:
    """The id of one result of a run, or None."""
    return session.scalar(
        select(Result.id)
        .join(Workload, Result.workload_id == Workload.id)
        .where(
            Result.run_id == run_id,
            Result.engine == engine,
            Result.version_id == version,
            Workload.name == workload,
            Workload.content_hash == content_hash,
        )
    )


def run_samples(session: Session, run_id: int) -> pd.DataFrame:
    """The raw values of a run, long: result_id, engine, version, workload, process, block, block_process and
    phase (from the process's metadata: its measurement block, its process index within the block, and
    "primary" or "confirm"; None for older rows), value_index, value_s."""
    stmt = (
        select(
            Sample.result_id,
            Result.engine,
            Result.version_id.label("version"),
            Workload.name.label("workload"),
            Sample.process,
            Sample.meta,
            Sample.values,
        )
        .join(Result, Sample.result_id == Result.id)
        .join(Workload, Result.workload_id == Workload.id)
        .where(Result.run_id == run_id)
        .order_by(Sample.result_id, Sample.process)
    )
    df = frame(session, stmt)
    if not df.empty:
        ok = df["values"].map(usable_values).astype(bool)
        _note_unusable_processes(run_id, int((~ok).sum()))
        df = df[ok].reset_index(drop=True)
    if df.empty:
        return pd.DataFrame(columns=SAMPLE_COLUMNS)
    meta = [m if isinstance(m, dict) else {} for m in df.pop("meta")]
    df["block"] = [m.get("benchsvc_block") for m in meta]
    df["block_process"] = [m.get("benchsvc_process") for m in meta]
    df["phase"] = [m.get("benchsvc_phase", "primary") for m in meta]
    df = df.explode("values")
    df["value_index"] = df.groupby(["result_id", "process"]).cumcount()
    return df.rename(columns={"values": "value_s"}).astype({"value_s": float}).reset_index(drop=True)


def version_comparison(session: Session, run_id: int, metric: str = TIME_METRIC) -> pd.DataFrame:
    """Each ok result of a run beside its parent version's result on the same workload and engine.

    Columns: engine, workload, version, parent, value, parent_value (NaN where the parent was not run)."""
    df = run_results(session, run_id)
    column = {TIME_METRIC: "mean_s", "modeled_ns": "modeled_ns"}.get(metric, f"c_{metric}")
    if df.empty or column not in df.columns:
        return pd.DataFrame(columns=["engine", "workload", "version", "parent", "value", "parent_value"])
    ok = df[df["status"] == ResultStatus.OK][["engine", "workload", "version", "parent", column]].rename(
        columns={column: "value"}
    )
    parents = ok[["engine", "workload", "version", "value"]].rename(
        columns={"version": "parent", "value": "parent_value"}
    )
    return ok.merge(parents, on=["engine", "workload", "parent"], how="left").reset_index(drop=True)


def run_histories(
    session: Session,
    run: Run,
    *,
    since: dt.datetime | None = None,
    all_modes: bool = False,
    processes: bool = False,
) -> pd.DataFrame:
    """The timing history of every series of ``run`` in one query: same machine, environment, engine and mode,
    the run's workload contents; one row per (series, night) up to the run, oldest first. ``all_modes``: the
    nights of every mode (the ``mode`` column tells them apart: a series is never spliced across modes).

    Columns: engine, workload, workload_hash, workload_id, version, run_id, started_at, git_commit, mean_s,
    mode, stdev_s; with ``processes``, n_processes (the result's worker processes, for an interval)."""
    workload_ids = select(Result.workload_id).where(Result.run_id == run.id).distinct()
    n_processes = (
        select(func.count(Sample.process))
        .where(Sample.result_id == Result.id)
        .correlate(Result)
        .scalar_subquery()
        if processes
        else None
    )
    stmt = (
        select(
            Result.engine,
            Workload.name.label("workload"),
            Workload.content_hash.label("workload_hash"),
            Result.workload_id,
            Result.version_id.label("version"),
            Run.id.label("run_id"),
            type_coerce(Run.started_at, String).label("started_at"),
            Run.git_commit,
            Result.mean_s,
            Run.mode,
            Result.stdev_s,
            *([n_processes.label("n_processes")] if n_processes is not None else []),
        )
        .select_from(Result)
        .join(Run, Result.run_id == Run.id)
        .join(Workload, Result.workload_id == Workload.id)
        .where(
            Run.machine_id == run.machine_id,
            Run.environment_id == run.environment_id,
            Run.started_at <= run.started_at,
            Result.workload_id.in_(workload_ids),
            Result.status == ResultStatus.OK,
            Result.mean_s.is_not(None),
        )
        .order_by(Run.started_at, Run.id)
    )
    if not all_modes:
        stmt = stmt.where(Run.mode == run.mode)
    if since is not None:
        stmt = stmt.where(Run.started_at >= since)
    df = _drop_unusable_times(plain_frame(session, stmt), "mean_s", f"history of run {run.id}")
    df["started_at"] = pd.to_datetime(df["started_at"], format="ISO8601")
    return df


ENGINE_HASH_KEY = "benchsvc_engine_hash"


def run_codes(session: Session, run_ids: list[int]) -> dict[int, str | None]:
    """The engine-code identity of each run: the ``benchsvc_engine_hash`` of its results' pyperf metadata,
    or the run's git commit when no result carries one (None when neither is known)."""
    if not run_ids:
        return {}
    out: dict[int, str | None] = {
        rid: commit
        for rid, commit in session.execute(select(Run.id, Run.git_commit).where(Run.id.in_(run_ids)))
    }
    hashes = session.execute(
        select(Result.run_id, Result.pyperf_metadata[ENGINE_HASH_KEY].as_string())
        .where(Result.run_id.in_(run_ids), Result.engine != EngineKind.CANARY)
        .order_by(Result.run_id, Result.id)
    )
    seen: set[int] = set()
    for rid, h in hashes:
        if h and rid not in seen:
            out[rid] = f"engine:{h}"
            seen.add(rid)
    return out


def runs_in_order(session: Session, *, since: dt.datetime | None = None) -> list[int]:
    """Ids of the finished runs (complete or failed), oldest first, started on or after ``since``."""
    stmt = select(Run.id).where(Run.status.in_(FINISHED_RUN_STATUSES)).order_by(Run.started_at, Run.id)
    if since is not None:
        stmt = stmt.where(Run.started_at >= since)
    return [int(r) for r in session.scalars(stmt)]


def analysed_runs(session: Session, run_ids: list[int] | None = None) -> set[int]:
    """The runs the nightly analysis has recorded (of ``run_ids``, or all)."""
    from benchsvc.store.models import RunAnalysis

    stmt = select(RunAnalysis.run_id)
    if run_ids is not None:
        stmt = stmt.where(RunAnalysis.run_id.in_(run_ids))
    return {int(r) for r in session.scalars(stmt)}
