"""Gather, from the store, the pre-aggregated DataFrames one report shows (:class:`~benchsvc.report.site.ReportData`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd

from benchsvc.report.site import ReportData


def _timing_intervals(samples: pd.DataFrame) -> pd.DataFrame:
    """Per result: 95% t-interval of the mean over worker-process means (NaN with fewer than two processes)."""
    from scipy import stats

    if samples.empty:
        return pd.DataFrame(columns=["result_id", "ci_low_s", "ci_high_s"])
    per = samples.groupby(["result_id", "process"])["value_s"].mean().reset_index()
    rows = []
    for rid, grp in per.groupby("result_id"):
        m = grp["value_s"].to_numpy(float)
        if len(m) < 2:
            rows.append((rid, np.nan, np.nan))
            continue
        half = stats.t.ppf(0.975, len(m) - 1) * m.std(ddof=1) / np.sqrt(len(m))
        rows.append((rid, m.mean() - half, m.mean() + half))
    return pd.DataFrame(rows, columns=["result_id", "ci_low_s", "ci_high_s"])


def collect(session: Any, *, since: dt.datetime | None = None, machine: str | None = None) -> ReportData:
    from sqlalchemy import select

    from benchsvc.analysis.noise import noise_floor
    from benchsvc.engine.versions import version_ids
    from benchsvc.findings import lineage_for_run
    from benchsvc.store.models import Machine, Run, Version, Workload
    from benchsvc.store.queries import NotFound, get_run, list_runs, run_histories, run_results, run_samples
    from benchsvc.store.regressions import list_regressions
    from benchsvc.workload import parse_workload

    runs = list_runs(session, 50)
    if machine is not None:
        runs = runs[runs["machine"] == machine]
    try:
        if machine is None:
            run = get_run(session)
        else:
            run_id = session.scalar(
                select(Run.id)
                .join(Machine)
                .where(Machine.hostname == machine)
                .order_by(Run.started_at.desc())
                .limit(1)
            )
            if run_id is None:
                raise NotFound(f"no run from machine {machine!r}")
            run = get_run(session, run_id)
    except NotFound:
        empty = pd.DataFrame()
        return ReportData(
            None, runs, empty, pd.DataFrame(columns=["name"]), empty, empty, empty, empty, empty
        )
    runs = runs.assign(started_at=runs["started_at"].dt.strftime("%Y-%m-%d %H:%M"))
    results = run_results(session, run.id)
    latest = {
        "id": run.id,
        "started_at": f"{run.started_at:%Y-%m-%d %H:%M}",
        "status": run.status,
        "mode": run.mode,
        "results": len(results),
        "benchsvc_version": run.benchsvc_version,
        "git_commit": run.git_commit,
        "hostname": run.machine.hostname,
        "cpu_model": run.machine.cpu_model,
        "cpu_count": run.machine.cpu_count,
        "kernel": run.machine.kernel,
        "arch": run.machine.arch,
        "python_version": run.environment.python_version,
        "packages": dict(run.environment.packages),
    }
    order = {vid: i for i, vid in enumerate(version_ids())}
    versions = pd.DataFrame(
        [(v.id, v.parent, v.title, v.source) for v in session.scalars(select(Version))],
        columns=["id", "parent", "title", "source"],
    )
    versions = versions[versions["id"].isin(set(results["version"]))]
    versions = versions.sort_values(
        "id", key=lambda s: s.map(lambda v: (order.get(v, 1_000), v))
    ).reset_index(drop=True)
    wl_rows = []
    for name, chash in sorted(set(zip(results["workload"], results["workload_hash"], strict=True))):
        w = session.scalar(select(Workload).where(Workload.name == name, Workload.content_hash == chash))
        try:
            tags = list(parse_workload(w.definition.encode("utf-8"), name=name).tags)
        except Exception:  # a stored definition that no longer parses still gets its page
            tags = []
        wl_rows.append((name, chash, w.description, tags, w.definition))
    workloads = pd.DataFrame(wl_rows, columns=["name", "content_hash", "description", "tags", "definition"])
    samples = run_samples(session, run.id)
    latest["noise_floor"] = noise_floor(results, samples).describe()
    results = results.merge(_timing_intervals(samples), on="result_id", how="left")
    lineage = lineage_for_run(session, run.id)
    hist = run_histories(session, run, since=since)
    history = hist.assign(mean_ms=hist["mean_s"] * 1e3)[
        ["workload", "version", "run_id", "started_at", "mean_ms"]
    ]
    regs = list_regressions(session, since=since)
    regs = (
        regs[regs["status"].isin(["new", "acknowledged"])].reset_index(drop=True) if not regs.empty else regs
    )
    all_regs = list_regressions(session, since=since, axis="nightly")
    changes = (
        all_regs[all_regs["metric"] == "time"].assign(
            label=lambda d: d.apply(
                lambda r: f"{r['version']}: {r['effect'] - 1:+.1%} ({r['status']})", axis=1
            )
        )[["workload", "version", "run_id", "started_at", "label"]]
        if not all_regs.empty
        else pd.DataFrame(columns=["workload", "version", "run_id", "started_at", "label"])
    )
    return ReportData(latest, runs, versions, workloads, lineage, results, history, changes, regs)
