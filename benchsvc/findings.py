"""Analyse a run and record what regressed: the glue between the store and the (pure) analysis layer.

Two axes (docs/design.md#analysis):

* **lineage**: each version against its parent inside the run (:mod:`benchsvc.analysis.lineage`);
* **nightly**: each series of the run (machine × environment × engine × version × workload hash × mode)
  against its own history: change points of the timing summaries, with false-discovery control across the
  night's series (:mod:`benchsvc.analysis.changepoints`), and exact counter changes between the last two
  nights of a series, with the benchsvc commits on both sides.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchsvc.analysis.changepoints import DEFAULT_SETTINGS, DetectorSettings
from benchsvc.records import Direction, EngineKind, RegressionAxis, ResultStatus, SeriesChange
from benchsvc.runner.blocks import supports_timing_inference

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session

    from benchsvc.store.models import Run

CANARY_ENGINE = EngineKind.CANARY


@dataclass
class RunFindings:
    run_id: int
    lineage_new: int = 0
    lineage_fixed: int = 0
    nightly_new: int = 0
    machine_new: int = 0
    #: another benchsvc recorded the run's analysis while this one planned it: nothing was recorded
    analysed_meanwhile: bool = False


def lineage_for_run(
    session: Session,
    run_id: int,
    *,
    base: str | None = None,
    min_effect: float | None = None,
    metrics: list[str] | None = None,
) -> pd.DataFrame:
    from benchsvc.analysis.lineage import DEFAULT_MIN_EFFECT, compare_lineage
    from benchsvc.store.queries import run_results, run_samples

    return compare_lineage(
        run_results(session, run_id),
        run_samples(session, run_id),
        base=base,
        metrics=metrics,
        min_effect=DEFAULT_MIN_EFFECT if min_effect is None else min_effect,
    )


def nightly_series(
    session: Session, run: Run, results: pd.DataFrame
) -> dict[tuple[str, str, int], pd.DataFrame]:
    """The timing history of every ok result of ``run`` in its own series (same provenance and mode), from
    one query (:func:`benchsvc.store.queries.run_histories`); nights without timing values are left out."""
    from benchsvc.store.queries import run_histories

    ok = results[results["status"] == ResultStatus.OK]
    wanted = set(zip(ok["engine"], ok["version"], ok["workload"], ok["workload_hash"], strict=True))
    hist = run_histories(session, run).rename(columns={"mean_s": "value"})
    out = {}
    for (engine, version, workload, chash, wid), series in hist.groupby(
        ["engine", "version", "workload", "workload_hash", "workload_id"], sort=False
    ):
        if (engine, version, workload, chash) in wanted:
            out[(engine, version, int(wid))] = series.reset_index(drop=True)
    return out


def counter_changes(session: Session, run: Run, results: pd.DataFrame) -> list[SeriesChange]:
    """Exact counter differences between this run and the previous run of each series."""
    from benchsvc.store.queries import previous_run, run_results

    prev = previous_run(session, run)
    if prev is None:
        return []
    before = run_results(session, prev.id)
    key = ["engine", "version", "workload", "workload_hash"]
    merged = results[results["status"] == ResultStatus.OK].merge(
        before[before["status"] == ResultStatus.OK], on=key, suffixes=("", "_prev")
    )
    findings = []
    for name in sorted(c for c in results.columns if c.startswith("c_")):
        if f"{name}_prev" not in merged.columns:
            continue
        changed = merged[merged[name].astype("Float64") != merged[f"{name}_prev"].astype("Float64")]
        for r in changed.itertuples(index=False):
            now, was = getattr(r, name), getattr(r, f"{name}_prev")
            if pd.isna(now) or pd.isna(was):
                continue
            findings.append(
                SeriesChange(
                    engine=EngineKind(r.engine),
                    version=str(r.version),
                    workload=str(r.workload),
                    workload_hash=str(r.workload_hash),
                    metric=name[2:],
                    direction=Direction.WORSE if now > was else Direction.BETTER,
                    # the ratio; from zero it is undefined, and the delta stands in (details say which)
                    effect=float(now) / float(was) if was else float(now) - float(was),
                    baseline_run_id=prev.id,
                    details={
                        "kind": "counter",
                        "effect_is_delta": not was,
                        "value": int(now),
                        "previous_value": int(was),
                        "delta": int(now) - int(was),
                        "commit": run.git_commit,
                        "previous_commit": prev.git_commit,
                    },
                )
            )
    return findings


@dataclass(frozen=True)
class TimingKey:
    """A suspected timing cell: a lineage comparison (``baseline`` set) or a nightly series (``baseline``
    None). The runner re-measures these cells and passes the keys that held to :func:`record_run`."""

    axis: RegressionAxis
    engine: EngineKind
    version: str
    workload: str
    workload_hash: str
    baseline: str | None = None


@dataclass
class PendingChange:
    """A nightly timing change point that would be recorded at run ``change_run_id``."""

    key: TimingKey
    change_run_id: int
    finding: SeriesChange


@dataclass
class PendingCreep:
    """A creep of a nightly series seen tonight (run ``run_id``), which started at run ``start_run_id``: recorded
    as a new finding, or as an update of the same series' stored creep (:func:`record_creep`)."""

    key: TimingKey
    run_id: int
    start_run_id: int
    finding: SeriesChange


@dataclass
class PendingMachineEvent:
    run_id: int
    effect: float
    details: dict[str, Any]


@dataclass
class RunAnalysis:
    """What analysing a run would record, computed without writing (:func:`plan_run`)."""

    run_id: int
    settings: DetectorSettings
    lineage: pd.DataFrame
    nightly: list[PendingChange] = field(default_factory=list)
    machine_event: PendingMachineEvent | None = None
    counters: list[SeriesChange] = field(default_factory=list)
    creeps: list[PendingCreep] = field(default_factory=list)
    #: the run's sampling mode; a mode without timing inference records no timing finding of any kind
    mode: str = "default"

    @property
    def timing_inference(self) -> bool:
        """Whether this run's mode is sampled enough for timing findings
        (:func:`benchsvc.runner.blocks.supports_timing_inference`)."""
        return supports_timing_inference(self.mode)

    def suspected(self) -> set[TimingKey]:
        """The timing cells to re-measure before recording: significant lineage timing findings and nightly
        timing change points (none for a mode without timing inference)."""
        keys = {c.key for c in self.nightly}
        if not self.timing_inference:
            return keys
        if not self.lineage.empty:
            rows = self.lineage[(self.lineage["metric"] == "time") & self.lineage["significant"]]
            keys |= {
                TimingKey(
                    RegressionAxis.LINEAGE, r.engine, r.version, r.workload, r.workload_hash, r.baseline
                )
                for r in rows.itertuples(index=False)
            }
        return keys


def _night_matrix(
    hist: pd.DataFrame,
) -> tuple[list[int], list[tuple[str, str, int]], np.ndarray, np.ndarray | None]:
    """Nights (run ids, oldest first), series keys, the series x nights matrix of mean_s (NaN = no value),
    and the canary's series (engine "canary"), from :func:`benchsvc.store.queries.run_histories`."""
    nights = list(dict.fromkeys(int(r) for r in hist["run_id"]))
    col = {r: i for i, r in enumerate(nights)}
    canary_rows = hist["engine"] == CANARY_ENGINE
    canary: np.ndarray | None = None
    if canary_rows.any():
        canary = np.full(len(nights), np.nan)
        first = hist[canary_rows].groupby("run_id")["mean_s"].first()
        for run_id, value in first.items():
            canary[col[int(run_id)]] = float(value)
    rest = hist[~canary_rows]
    keys: list[tuple[str, str, int]] = []
    values = np.full((0, len(nights)), np.nan)
    if not rest.empty:
        groups = list(rest.groupby(["engine", "version", "workload_id"], sort=False))
        values = np.full((len(groups), len(nights)), np.nan)
        for i, ((eng, version, wid), g) in enumerate(groups):
            keys.append((str(eng), str(version), int(wid)))
            values[i, [col[int(r)] for r in g["run_id"]]] = g["mean_s"].to_numpy(float)
    return nights, keys, values, canary


def plan_run(
    db: Engine, run_id: int, settings: DetectorSettings | None = None, *, confirmed: bool = False
) -> RunAnalysis:
    """Everything analysing ``run_id`` would record, without writing: lineage findings, the nightly timing
    change points at the new night (:func:`benchsvc.analysis.nightly.decide_night`), tonight's machine
    event, counter changes. ``confirmed``: the caller will re-measure the suspected cells, so the shorter
    ``min_nights_after_confirmed`` applies."""
    from benchsvc.analysis.nightly import decide_night
    from benchsvc.store.db import read_session
    from benchsvc.store.models import Run
    from benchsvc.store.queries import run_codes, run_histories, run_results

    settings = settings or DEFAULT_SETTINGS
    with read_session(db) as s:
        run = s.get(Run, run_id)
        if run is None:
            return RunAnalysis(run_id, settings, pd.DataFrame())
        plan = RunAnalysis(run_id, settings, lineage_for_run(s, run_id), mode=run.mode)
        results = run_results(s, run_id)
        plan.counters = counter_changes(s, run, results)
        if not supports_timing_inference(run.mode):
            # too few samples for timing intervals: no nightly timing finding, creep or machine event from
            # this run (its counters are exact and still compared); docs/detection.md "Modes"
            return plan
        hist = run_histories(s, run)
        if hist.empty or int(hist["run_id"].iloc[-1]) != run_id:
            return plan
        nights, keys, values, canary = _night_matrix(hist)
        codes = run_codes(s, nights)
        info = (
            hist.drop_duplicates("run_id").set_index("run_id")[["started_at", "git_commit"]].to_dict("index")
        )
        # the simulated versions of one workload are measured in one block (benchsvc/runner/blocks.py)
        blocks = [(eng, wid) if eng == EngineKind.SIM else None for eng, _, wid in keys]
        decision = decide_night(
            values,
            [codes.get(r) for r in nights],
            settings,
            canary=canary,
            confirmed=confirmed,
            blocks=blocks,
        )
        hashes = dict(zip(hist["workload_id"], hist["workload_hash"], strict=False))
        names = dict(zip(hist["workload_id"], hist["workload"], strict=False))
        for row, cp in decision.findings:
            eng, version, wid = keys[row]
            series_nights = [nights[i] for i in np.flatnonzero(np.isfinite(values[row]))]
            if cp.index >= len(series_nights) or cp.index < 1:
                continue
            after, before = series_nights[cp.index], series_nights[cp.index - 1]
            # the reported change night can move by one as nights arrive: a finding of the same series at a
            # neighbouring night is the same change
            neighbours = series_nights[max(0, cp.index - 1) : cp.index + 2]
            key = TimingKey(
                RegressionAxis.NIGHTLY, EngineKind(eng), version, str(names[wid]), str(hashes[wid])
            )
            plan.nightly.append(
                PendingChange(
                    key=key,
                    change_run_id=after,
                    finding=SeriesChange(
                        engine=key.engine,
                        version=version,
                        workload=key.workload,
                        workload_hash=key.workload_hash,
                        metric="time",
                        direction=Direction.WORSE if cp.effect > 1 else Direction.BETTER,
                        effect=cp.effect,
                        ci_low=cp.ci_low,
                        ci_high=cp.ci_high,
                        baseline_run_id=before,
                        same_as_runs=tuple(neighbours),
                        details={
                            "kind": "changepoint",
                            "p_value": float(cp.p_value),
                            "mean_before": float(cp.mean_before),
                            "mean_after": float(cp.mean_after),
                            "nights_before": int(cp.nights_before),
                            "nights_after": int(cp.nights_after),
                            "relative_to": settings.machine_factor,
                            # tonight's value in the same (machine- and block-corrected) units as the two
                            # means, for a confirmation that compares its re-measurement with both levels
                            "value_tonight": float(
                                decision.tonight[row]
                                if decision.tonight is not None
                                else values[row, -1] / decision.factors[-1]
                            ),
                            "night_before": str(info[before]["started_at"]),
                            "night_after": str(info[after]["started_at"]),
                            "commit_before": info[before]["git_commit"],
                            "commit_after": info[after]["git_commit"],
                        },
                    ),
                )
            )
        for row, creep in decision.creeps:
            eng, version, wid = keys[row]
            series_nights = [nights[i] for i in np.flatnonzero(np.isfinite(values[row]))]
            start = series_nights[min(creep.start, len(series_nights) - 1)]
            key = TimingKey(
                RegressionAxis.NIGHTLY, EngineKind(eng), version, str(names[wid]), str(hashes[wid])
            )
            plan.creeps.append(
                PendingCreep(
                    key=key,
                    run_id=run_id,
                    start_run_id=start,
                    finding=SeriesChange(
                        engine=key.engine,
                        version=version,
                        workload=key.workload,
                        workload_hash=key.workload_hash,
                        metric="time",
                        direction=Direction.WORSE if creep.total > 1 else Direction.BETTER,
                        effect=creep.total,
                        baseline_run_id=start,
                        # a creep stored for this series that started or was last seen on one of this creep's
                        # nights (from creep_min_nights before its start on) is this one
                        same_as_runs=tuple(
                            series_nights[
                                max(0, min(creep.start, len(series_nights) - 1) - settings.creep_min_nights) :
                            ]
                        ),
                        details={
                            "kind": "creep",
                            "rate": float(creep.rate),
                            "total": float(creep.total),
                            "nights": int(creep.nights),
                            "p_value": float(creep.p_value),
                            "level_before": float(creep.level_before),
                            "level_now": float(creep.level_now),
                            "relative_to": settings.machine_factor,
                            "night_start": str(info[start]["started_at"]),
                            "last_seen_run": run_id,
                            "last_seen": str(info[run_id]["started_at"]),
                            "commit_start": info[start]["git_commit"],
                            "commit_now": info[run_id]["git_commit"],
                        },
                    ),
                )
            )
        ev = decision.machine_event
        if ev is not None:
            plan.machine_event = PendingMachineEvent(
                run_id=run_id,
                effect=ev.effect,
                details={
                    "kind": "machine",
                    "series_moved": ev.series_moved,
                    "series_total": ev.series_total,
                    "canary_ratio": ev.canary_ratio,
                    "baseline_nights": ev.baseline_nights,
                    "wander": ev.wander,
                    "wander_nights": ev.wander_nights,
                    "sigmas": ev.sigmas,
                    "code": codes.get(run_id),
                },
            )
    return plan


def record_run(
    db: Engine,
    plan: RunAnalysis,
    confirmed: set[TimingKey] | None = None,
    *,
    only_unanalysed: bool = False,
) -> RunFindings:
    """Record what :func:`plan_run` found and mark the run analysed. With ``confirmed`` (the timing cells
    whose re-measurement held), a timing finding (lineage or nightly) is recorded only when its key is in it;
    counter findings and machine events are always recorded.

    The run's row is locked first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write transaction
    already excludes every other writer), so two processes analysing one run record it one after the other,
    never interleaved. With ``only_unanalysed``, the one that comes second finds the run analysed and
    records nothing (``analysed_meanwhile``)."""
    from benchsvc.store.db import write_session
    from benchsvc.store.models import Run
    from benchsvc.store.models import RunAnalysis as RunAnalysisRow
    from benchsvc.store.regressions import (
        mark_analysed,
        record_change,
        record_creep,
        record_lineage,
        record_machine_event,
    )

    findings = RunFindings(plan.run_id)
    with write_session(db) as s:
        run = s.get(Run, plan.run_id, with_for_update=True)
        if run is None:
            return findings
        if only_unanalysed and s.get(RunAnalysisRow, run.id) is not None:
            findings.analysed_meanwhile = True
            return findings
        lineage = plan.lineage
        if not plan.timing_inference and not lineage.empty and "metric" in lineage.columns:
            # neither recorded nor taken as evidence that a stored timing finding is fixed: a quick night
            # never marks a default-mode finding fixed
            lineage = lineage[lineage["metric"] != "time"]
        if confirmed is not None and not lineage.empty:
            lineage = lineage.copy()
            timing = (lineage["metric"] == "time") & lineage["significant"]
            for i in lineage.index[timing]:
                r = lineage.loc[i]
                key = TimingKey(
                    RegressionAxis.LINEAGE, r.engine, r.version, r.workload, r.workload_hash, r.baseline
                )
                if key not in confirmed:
                    lineage.loc[i, "significant"] = False
        if not lineage.empty:
            findings.lineage_new, findings.lineage_fixed = record_lineage(s, run, lineage)
        for pending in plan.nightly:
            if confirmed is not None and pending.key not in confirmed:
                continue
            change_run = s.get(Run, pending.change_run_id)
            assert change_run is not None
            findings.nightly_new += int(record_change(s, change_run, pending.finding))
        for change in plan.counters:
            findings.nightly_new += int(record_change(s, run, change))
        for creep in plan.creeps:
            # a creep is a trend over many nights: one night's re-measurement says nothing about it, so it is
            # recorded whatever was confirmed
            start_run = s.get(Run, creep.start_run_id)
            assert start_run is not None
            findings.nightly_new += int(record_creep(s, run, start_run, creep.finding))
        if plan.machine_event is not None:
            findings.machine_new += int(
                record_machine_event(s, run, plan.machine_event.effect, plan.machine_event.details)
            )
        mark_analysed(s, run.id, dataclasses.asdict(plan.settings))
    return findings


def analyze_run(
    db: Engine, run_id: int, settings: DetectorSettings | None = None, *, only_unanalysed: bool = False
) -> RunFindings:
    """Analyse one stored run on both axes and record the findings (idempotent); ``only_unanalysed``: record
    nothing when another process recorded the run's analysis meanwhile (:func:`record_run`)."""
    return record_run(db, plan_run(db, run_id, settings), only_unanalysed=only_unanalysed)


def analyze_stored(
    db: Engine,
    *,
    run_ref: str | None = None,
    since: dt.datetime | None = None,
    force: bool = False,
    settings: DetectorSettings | None = None,
) -> list[tuple[int, RunFindings | None]]:
    """``benchsvc analyze``: analyse stored runs in night order (oldest first) — one run (``run_ref``), the
    runs started since ``since``, or every run. A run already analysed is skipped (None) unless ``force``."""
    from benchsvc.store.db import read_session
    from benchsvc.store.queries import analysed_runs, get_run, runs_in_order

    with read_session(db) as s:
        ids = [get_run(s, run_ref).id] if run_ref is not None else runs_in_order(s, since=since)
        done = analysed_runs(s, ids)
    out: list[tuple[int, RunFindings | None]] = []
    for run_id in ids:
        if run_id in done and not force:
            out.append((run_id, None))
            continue
        out.append((run_id, analyze_run(db, run_id, settings, only_unanalysed=not force)))
    return out


def new_lineage_differences(session: Session, latest: Run, baseline: Run) -> pd.DataFrame:
    """The lineage rows of ``latest`` where a version is significantly worse than its parent and the run
    ``baseline`` showed no such difference (same engine, workload content, version, parent and metric): a
    version's new character, for ``regressions --fail-on-regression --lineage-baseline``. Timing rows count
    only when both runs' modes support timing inference."""
    from benchsvc.runner.blocks import supports_timing_inference

    key = ["engine", "workload", "workload_hash", "version", "baseline", "metric"]
    timing_ok = supports_timing_inference(latest.mode) and supports_timing_inference(baseline.mode)

    def worse(run: Run) -> pd.DataFrame:
        df = lineage_for_run(session, run.id)
        df = df[df["significant"] & (df["direction"] == "worse")]
        return df if timing_ok else df[df["metric"] != "time"]

    now, before = worse(latest), worse(baseline)
    known = set(before[key].itertuples(index=False, name=None))
    return now[[tuple(r) not in known for r in now[key].itertuples(index=False, name=None)]]


def runs_side_by_side(
    results: pd.DataFrame,
    samples: pd.DataFrame,
    other_results: pd.DataFrame,
    other_samples: pd.DataFrame,
    other_id: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two runs' results and samples as one frame for :func:`benchsvc.analysis.lineage.compare_lineage`
    (``compare --against``): each version of the first run has as its parent the same version of the other
    run, labelled ``VERSION@RUN``. The runs' measurement blocks are unrelated, so nothing is paired (the
    interval is the bootstrap over processes)."""
    label = {v: f"{v}@{other_id}" for v in set(other_results["version"])}
    mine = results.assign(parent=[label.get(v) for v in results["version"]])
    theirs = other_results.assign(version=other_results["version"].map(label), parent=None)
    both = pd.concat(
        [samples, other_samples.assign(version=other_samples["version"].map(label))], ignore_index=True
    )
    if "block" in both.columns:
        both = both.assign(block=None)
    return pd.concat([mine, theirs], ignore_index=True), both
