"""The nightly axis end to end: a stored series with a step is found by analyze_run and recorded once, with
the nights and commits on both sides; a counter change between two nights is recorded exactly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pytest

from benchsvc.findings import analyze_run
from benchsvc.records import EnvironmentInfo, MachineInfo, ProcessValues, ResultRecord, RunRecord, WorkloadRef
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.ingest import ingest, registry_versions
from benchsvc.store.regressions import list_regressions

MACHINE = MachineInfo("bench-01", "test cpu", 2, "6.18", "x86_64")
ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0"})
REF = WorkloadRef("a-munmap-aligned", "h" * 64, "definition", "test workload")
STEP_NIGHT = 30
NIGHTS = 33


def _night(
    night: int, level: float, rng: np.random.Generator, counters: dict[str, int]
) -> tuple[RunRecord, list[ResultRecord]]:
    run = RunRecord(
        uuid=str(uuid.UUID(int=night + 1)),
        started_at=dt.datetime(2026, 1, 1, 2) + dt.timedelta(days=night),
        machine=MACHINE,
        environment=ENV,
        benchsvc_version="0.1.0",
        git_commit=f"{night:040x}",
        mode="default",
        trigger="nightly",
        status="complete",
    )
    offset = 1 + rng.normal(0, 0.005)  # night-to-night noise 0.5%
    procs = tuple(
        ProcessValues(tuple(float(level * offset * (1 + e)) for e in rng.normal(0, 0.01, 5)))
        for _ in range(10)
    )
    result = ResultRecord("sim", "up612", REF, counters=counters, modeled_ns=1.0, processes=procs)
    return run, [result]


@pytest.fixture
def store(tmp_path: Path):
    engine = open_store(str(tmp_path / "x.db"))
    yield engine
    engine.dispose()


def _ingest_nights(engine, nights: range, level_at, counters_at, rng) -> None:
    for night in nights:
        run, results = _night(night, level_at(night), rng, counters_at(night))
        with write_session(engine) as s:
            ingest(s, run, results, registry_versions() if night == 0 else ())


def test_a_step_is_found_on_its_night_and_recorded_once(store) -> None:
    rng = np.random.default_rng(7)
    level = lambda n: 0.010 * (1.08 if n >= STEP_NIGHT else 1.0)  # noqa: E731 - +8% from night 30
    _ingest_nights(store, range(NIGHTS), level, lambda n: {"ds_lock": 0}, rng)
    for run_id in range(STEP_NIGHT - 2, NIGHTS + 1):  # analyse each night as it arrived
        analyze_run(store, run_id)
    with read_session(store) as s:
        regs = list_regressions(s, axis="nightly")
    assert len(regs) == 1, regs[["run_id", "metric", "effect"]]
    reg = regs.iloc[0]
    assert reg["metric"] == "time" and reg["direction"] == "worse" and reg["status"] == "new"
    assert abs(int(reg["run_id"]) - (STEP_NIGHT + 1)) <= 1  # run ids start at 1: night 30 is run 31
    assert reg["ci_low"] < 1.08 < reg["ci_high"] or abs(reg["effect"] - 1.08) < 0.01
    details = reg["details"]
    assert details["commit_after"] != details["commit_before"]
    assert details["nights_before"] >= STEP_NIGHT - 2


def test_quiet_series_gives_no_nightly_finding(store) -> None:
    rng = np.random.default_rng(3)
    _ingest_nights(store, range(NIGHTS), lambda n: 0.010, lambda n: {"ds_lock": 0}, rng)
    for run_id in range(1, NIGHTS + 1):
        analyze_run(store, run_id)
    with read_session(store) as s:
        assert list_regressions(s, axis="nightly").empty


def test_counter_change_between_nights_is_exact_with_both_commits(store) -> None:
    rng = np.random.default_rng(5)
    _ingest_nights(store, range(3), lambda n: 0.010, lambda n: {"ds_lock": 64 if n == 2 else 0}, rng)
    found = analyze_run(store, 3)
    assert found.nightly_new == 1
    with read_session(store) as s:
        regs = list_regressions(s, axis="nightly")
    reg = regs.iloc[0]
    assert (reg["metric"], reg["direction"]) == ("ds_lock", "worse")
    assert reg["details"]["delta"] == 64 and reg["details"]["previous_value"] == 0
    assert reg["details"]["commit"] == f"{2:040x}" and reg["details"]["previous_commit"] == f"{1:040x}"
    assert analyze_run(store, 3).nightly_new == 0  # analysing again adds nothing


def test_lineage_finding_is_fixed_when_it_disappears(store) -> None:
    base = dataclasses.replace(REF)

    def run_with(night: int, p1_adds: int) -> None:
        run, _ = _night(night, 0.01, np.random.default_rng(night), {})
        results = [
            ResultRecord("sim", "base65", base, counters={"ds_adds": 0}, modeled_ns=1.0),
            ResultRecord("sim", "base65-p1", base, counters={"ds_adds": p1_adds}, modeled_ns=1.0),
        ]
        with write_session(store) as s:
            ingest(s, run, results, registry_versions())

    run_with(0, 1024)
    assert analyze_run(store, 1).lineage_new == 1
    run_with(1, 1024)
    again = analyze_run(store, 2)
    assert (again.lineage_new, again.lineage_fixed) == (0, 0)  # confirmed, not duplicated
    run_with(2, 0)
    assert analyze_run(store, 3).lineage_fixed == 1
    with read_session(store) as s:
        regs = list_regressions(s, axis="lineage")
    assert regs["status"].tolist() == ["fixed"]
    assert regs.iloc[0]["details"]["fixed_in_run"] == 3


def test_a_timing_finding_is_fixed_only_when_a_night_shows_it_gone(store) -> None:
    """base65-p1 10% slower than base65: recorded. A night whose interval is too wide to call it (two noisy
    processes) does not mark it fixed; a night that measures both equal, tightly, does."""

    def processes(level: float, noise: float, rng: np.random.Generator, n: int) -> tuple[ProcessValues, ...]:
        return tuple(
            ProcessValues(tuple(float(level * (1 + e)) for e in rng.normal(0, noise, 5))) for _ in range(n)
        )

    def run_with(night: int, ratio: float, noise: float, n: int) -> None:
        rng = np.random.default_rng(night)
        run, _ = _night(night, 0.01, rng, {})
        results = [
            ResultRecord("sim", "base65", REF, modeled_ns=1.0, processes=processes(0.01, noise, rng, n)),
            ResultRecord(
                "sim", "base65-p1", REF, modeled_ns=1.0, processes=processes(0.01 * ratio, noise, rng, n)
            ),
        ]
        with write_session(store) as s:
            ingest(s, run, results, registry_versions())

    run_with(0, 1.10, 0.002, 10)
    assert analyze_run(store, 1).lineage_new == 1
    run_with(1, 1.10, 0.30, 2)  # too noisy to see anything: neither significant nor settled
    assert analyze_run(store, 2).lineage_fixed == 0
    run_with(2, 1.00, 0.002, 10)  # measured equal, within ±3%
    assert analyze_run(store, 3).lineage_fixed == 1
    with read_session(store) as s:
        regs = list_regressions(s, axis="lineage")
    assert regs["status"].tolist() == ["fixed"] and regs.iloc[0]["details"]["fixed_in_run"] == 3
