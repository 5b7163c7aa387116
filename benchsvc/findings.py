"""Analyse a run and record what regressed: the glue between the store and the (pure) analysis layer.

Two axes (DESIGN §5):

* **lineage**: each version against its parent inside the run (:mod:`benchsvc.analysis.lineage`);
* **nightly**: each series of the run (machine × environment × engine × version × workload hash × mode)
  against its own history: change points of the timing summaries, with false-discovery control across the
  night's series (:mod:`benchsvc.analysis.changepoints`), and exact counter changes between the last two
  nights of a series, with the benchsvc commits on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass
class RunFindings:
    run_id: int
    lineage_new: int = 0
    lineage_fixed: int = 0
    nightly_new: int = 0


def lineage_for_run(
    session: Any,
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


def nightly_series(session: Any, run: Any, results: pd.DataFrame) -> dict[tuple[str, str, int], pd.DataFrame]:
    """The timing history of every ok result of ``run`` in its own series (same provenance and mode), from
    one query (:func:`benchsvc.store.queries.run_histories`); nights without timing values are left out."""
    from benchsvc.store.queries import run_histories

    ok = results[results["status"] == "ok"]
    wanted = set(zip(ok["engine"], ok["version"], ok["workload"], ok["workload_hash"], strict=True))
    hist = run_histories(session, run).rename(columns={"mean_s": "value"})
    out = {}
    for (engine, version, workload, chash, wid), series in hist.groupby(
        ["engine", "version", "workload", "workload_hash", "workload_id"], sort=False
    ):
        if (engine, version, workload, chash) in wanted:
            out[(engine, version, int(wid))] = series.reset_index(drop=True)
    return out


def counter_changes(session: Any, run: Any, results: pd.DataFrame) -> list[dict[str, Any]]:
    """Exact counter differences between this run and the previous run of each series."""
    from sqlalchemy import select

    from benchsvc.store.models import Run
    from benchsvc.store.queries import run_results

    prev = session.scalar(
        select(Run)
        .where(
            Run.machine_id == run.machine_id,
            Run.environment_id == run.environment_id,
            Run.mode == run.mode,
            Run.started_at < run.started_at,
            Run.status.in_(("complete", "failed")),
        )
        .order_by(Run.started_at.desc())
        .limit(1)
    )
    if prev is None:
        return []
    before = run_results(session, prev.id)
    key = ["engine", "version", "workload", "workload_hash"]
    merged = results[results["status"] == "ok"].merge(
        before[before["status"] == "ok"], on=key, suffixes=("", "_prev")
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
                {
                    "engine": r.engine,
                    "version": r.version,
                    "workload": r.workload,
                    "workload_hash": r.workload_hash,
                    "metric": name[2:],
                    "direction": "worse" if now > was else "better",
                    # the ratio; from zero it is undefined, and the delta stands in (details say which)
                    "effect": float(now) / float(was) if was else float(now) - float(was),
                    "baseline_run_id": prev.id,
                    "details": {
                        "kind": "counter",
                        "effect_is_delta": not was,
                        "value": int(now),
                        "previous_value": int(was),
                        "delta": int(now) - int(was),
                        "commit": run.git_commit,
                        "previous_commit": prev.git_commit,
                    },
                }
            )
    return findings


def analyze_run(engine: Any, run_id: int) -> RunFindings:
    """Analyse one stored run on both axes and record the findings (idempotent)."""
    from sqlalchemy import select

    from benchsvc.analysis.changepoints import analyze_night
    from benchsvc.store.db import write_session
    from benchsvc.store.models import Run, Workload
    from benchsvc.store.queries import run_results
    from benchsvc.store.regressions import record_change, record_lineage

    findings = RunFindings(run_id)
    with write_session(engine) as s:
        run = s.get(Run, run_id)
        if run is None:
            return findings
        findings.lineage_new, findings.lineage_fixed = record_lineage(s, run, lineage_for_run(s, run_id))
        results = run_results(s, run_id)
        histories = nightly_series(s, run, results)
        series = {k: h["value"].to_numpy(float) for k, h in histories.items() if len(h) >= 2}
        for (eng, version, wid), cp in analyze_night(series):
            hist = histories[(eng, version, wid)]
            if hist["run_id"].iloc[-1] != run_id or cp.index >= len(hist):
                continue
            first_after, last_before = hist.iloc[cp.index], hist.iloc[cp.index - 1]
            # the reported change night can move by one as nights arrive: a finding of the same series at a
            # neighbouring night is the same change
            neighbours = [int(x) for x in hist["run_id"].iloc[max(0, cp.index - 1) : cp.index + 2]]
            change_run = s.get(Run, int(first_after["run_id"]))
            assert change_run is not None
            added = record_change(
                s,
                change_run,
                {
                    "engine": eng,
                    "version": version,
                    "workload_id": wid,
                    "metric": "time",
                    "direction": "worse" if cp.effect > 1 else "better",
                    "effect": cp.effect,
                    "ci_low": cp.ci_low,
                    "ci_high": cp.ci_high,
                    "baseline_run_id": int(last_before["run_id"]),
                    "same_as_runs": neighbours,
                    "details": {
                        "kind": "changepoint",
                        "p_value": float(cp.p_value),
                        "mean_before": float(cp.mean_before),
                        "mean_after": float(cp.mean_after),
                        "nights_before": int(cp.nights_before),
                        "nights_after": int(cp.nights_after),
                        "night_before": str(last_before["started_at"]),
                        "night_after": str(first_after["started_at"]),
                        "commit_before": last_before["git_commit"],
                        "commit_after": first_after["git_commit"],
                    },
                },
            )
            findings.nightly_new += int(added)
        for change in counter_changes(s, run, results):
            change["workload_id"] = s.scalar(
                select(Workload.id).where(
                    Workload.name == change["workload"], Workload.content_hash == change["workload_hash"]
                )
            )
            findings.nightly_new += int(record_change(s, run, change))
    return findings
