"""Gather the pre-aggregated DataFrames one report shows (:class:`~benchsvc.report.site.ReportData`) through
the store's query functions (:mod:`benchsvc.store.report_data`, :mod:`benchsvc.store.queries`); no SQL here."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchsvc.analysis.changepoints import DEFAULT_NEW_NIGHTS
from benchsvc.records import OPEN_REGRESSION_STATUSES
from benchsvc.report.site import MachineNight, ReportData

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

CANARY_ENGINE = "canary"


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


def _version_date(vid: str) -> str:
    """When the version was posted or released (from the engine's registry; "" for one it does not know)."""
    from benchsvc.engine.versions import registry

    engine = registry().get(vid)
    return str(getattr(engine, "date", "") or "") if engine is not None else ""


def _history_intervals(hist: pd.DataFrame) -> pd.DataFrame:
    """The nightly means in ms with a 95% interval per night: ``mean ± t(p-1) · stdev / sqrt(p)`` over the
    ``p`` worker processes of the result. The stored standard deviation is that of all values, which includes
    the spread within each process, so the interval is wider than the one over process means (conservative).
    Nights of a mode whose sampling does not support timing intervals (quick, debug), and results of one
    process, get none."""
    from scipy import stats

    from benchsvc.runner.blocks import supports_timing_inference

    if hist.empty:
        return hist.assign(mode=None, mean_ms=None, low_ms=None, high_ms=None)
    mean = hist["mean_s"].astype(float) * 1e3
    p = pd.to_numeric(hist["n_processes"], errors="coerce").fillna(0).astype(float)
    sd = pd.to_numeric(hist["stdev_s"], errors="coerce").astype(float) * 1e3
    ok = (p >= 2) & sd.notna() & hist["mode"].map(lambda m: supports_timing_inference(str(m)))
    t = pd.Series(stats.t.ppf(0.975, p.where(ok, 2.0) - 1), index=hist.index)
    half = (t * sd / np.sqrt(p.where(ok, 1.0))).where(ok)
    return hist.assign(mean_ms=mean, low_ms=mean - half, high_ms=mean + half)


def _machine_night(
    session: Session, hostname: str, regs: pd.DataFrame, since: dt.datetime | None
) -> tuple[MachineNight, pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """One machine's latest night, with its results, samples and history (the caller reuses them)."""
    from benchsvc.analysis.noise import noise_floor
    from benchsvc.store.queries import run_histories, run_results, run_samples
    from benchsvc.store.report_data import latest_run, run_summary

    run = latest_run(session, hostname)
    results = run_results(session, run.id)
    samples = run_samples(session, run.id)
    hist = run_histories(session, run, since=since, all_modes=True, processes=True)
    canary = int((results["engine"] == CANARY_ENGINE).sum()) if not results.empty else 0
    sim_hist = hist[hist["engine"] != CANARY_ENGINE] if not hist.empty else hist
    if not sim_hist.empty:  # the nights of this run's mode: the series the nightly comparison reads
        sim_hist = sim_hist[sim_hist["mode"] == run.mode]
    mine = (
        regs[(regs["machine"] == hostname) & regs["axis"].isin(["nightly", "machine"])]
        if not regs.empty
        else regs
    )
    if not mine.empty:
        # tonight's: recorded by tonight's analysis (or later), at a night still new for the detector (a
        # change point is stored on the night of the change, which may be a few nights back)
        recent = {run.id, *(int(r) for r in sim_hist["run_id"].drop_duplicates().tail(DEFAULT_NEW_NIGHTS))}
        tonight = (
            (mine["detected_at"] >= run.started_at)
            & mine["run_id"].isin(recent)
            & ((mine["axis"] == "nightly") | (mine["run_id"] == run.id))
        )
        earlier = mine[~tonight & mine["status"].isin(list(OPEN_REGRESSION_STATUSES))]
        mine = mine[tonight]
    else:
        earlier = mine
    night = MachineNight(
        run=run_summary(run),
        results=len(results) - canary,
        canary=canary,
        noise=noise_floor(results, samples),
        nights=int(sim_hist["run_id"].nunique()) if not sim_hist.empty else 0,
        changes=mine[mine["axis"] == "nightly"].reset_index(drop=True) if not mine.empty else mine,
        events=mine[mine["axis"] == "machine"].reset_index(drop=True) if not mine.empty else mine,
        open_earlier=earlier.reset_index(drop=True),
    )
    return night, results, samples, hist, run.id


def collect(session: Session, *, since: dt.datetime | None = None, machine: str | None = None) -> ReportData:
    from benchsvc.analysis.describe import machine_event_text
    from benchsvc.engine.versions import version_ids
    from benchsvc.findings import lineage_for_run
    from benchsvc.store.queries import NotFound, list_runs, run_hostnames
    from benchsvc.store.regressions import list_regressions
    from benchsvc.store.report_data import latest_run, versions_frame, workloads_frame
    from benchsvc.workload import parse_workload

    runs = list_runs(session, 50)
    if machine is not None:
        runs = runs[runs["machine"] == machine]
    try:
        primary = latest_run(session, machine)
    except NotFound:
        empty = pd.DataFrame()
        return ReportData(
            None, runs, empty, pd.DataFrame(columns=["name"]), empty, empty, empty, empty, empty
        )
    runs = runs.assign(started_at=runs["started_at"].dt.strftime("%Y-%m-%d %H:%M"))
    all_regs = list_regressions(session, since=since)
    hosts = [machine] if machine is not None else run_hostnames(session)
    hosts = [primary.machine.hostname, *(h for h in hosts if h != primary.machine.hostname)]
    nights, histories = [], []
    results = samples = pd.DataFrame()
    for host in hosts:
        night, res, smp, hist, run_id = _machine_night(session, host, all_regs, since)
        nights.append(night)
        histories.append(hist.assign(machine=host))
        if run_id == primary.id:
            results, samples = res, smp
    order = {vid: i for i, vid in enumerate(version_ids())}
    versions = versions_frame(session)
    versions = versions[versions["id"].isin(set(results["version"]))]
    versions = versions.assign(date=[_version_date(v) for v in versions["id"]])
    versions = versions.sort_values(
        "id", key=lambda s: s.map(lambda v: (order.get(v, 1_000), v))
    ).reset_index(drop=True)
    keys = sorted(set(zip(results["workload"], results["workload_hash"], strict=True)))
    workloads = workloads_frame(session, keys)
    canary_names = set(results.loc[results["engine"] == CANARY_ENGINE, "workload"])
    tags = []
    for w in workloads.itertuples(index=False):
        try:
            tags.append(list(parse_workload(w.definition.encode("utf-8"), name=w.name).tags))
        except Exception:  # a stored definition that no longer parses (or the canary's) still gets its page
            tags.append([])
    workloads = workloads.assign(tags=tags, canary=workloads["name"].isin(canary_names))
    results = results.merge(_timing_intervals(samples), on="result_id", how="left")
    lineage = lineage_for_run(session, primary.id)
    hist = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
    history = _history_intervals(hist)[
        [
            "machine",
            "engine",
            "workload",
            "version",
            "run_id",
            "started_at",
            "mode",
            "mean_ms",
            "low_ms",
            "high_ms",
        ]
    ]
    regs = (
        all_regs[all_regs["status"].isin(list(OPEN_REGRESSION_STATUSES))].reset_index(drop=True)
        if not all_regs.empty
        else all_regs
    )
    if machine is not None and not regs.empty:
        regs = regs[regs["machine"] == machine].reset_index(drop=True)
    marks = ["machine", "workload", "version", "run_id", "started_at", "label", "kind"]
    changes = pd.DataFrame(columns=marks)
    if not all_regs.empty:
        nightly = all_regs[(all_regs["axis"] == "nightly") & (all_regs["metric"] == "time")]
        events = all_regs[all_regs["axis"] == "machine"]
        changes = pd.concat(
            [
                nightly.assign(
                    label=[
                        f"{r.version}: simulator CPU time {r.effect - 1:+.1%} ({r.status})"
                        for r in nightly.itertuples()
                    ],
                    kind="change",
                )[marks],
                events.assign(
                    label=[machine_event_text(r.effect, r.details or {}) for r in events.itertuples()],
                    kind="machine",
                )[marks],
            ],
            ignore_index=True,
        )
    return ReportData(
        nights[0], runs, versions, workloads, lineage, results, history, changes, regs, nights=nights
    )
