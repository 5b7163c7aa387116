"""How ``benchsvc run`` measures: interleaved blocks with a canary, pairing, confirmation, the noise floor.

What is asserted is what the stored data shows (per-process metadata, blocks, phases, the canary's result),
through real worker processes and a real SQLite file; never a timing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import json
import random
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchsvc.analysis.lineage import compare_lineage, paired_log_ratios
from benchsvc.analysis.noise import AA_PAIR
from benchsvc.engine.versions import get_version
from benchsvc.records import Direction, EngineKind, ProcessValues, SeriesChange, WorkloadRef
from benchsvc.runner.blocks import CONFIRM_PROCESSES, SAMPLING
from benchsvc.runner.canary import VERSION as CANARY_VERSION
from benchsvc.runner.interleave import MAX_LOOPS_FACTOR, loops_factor, measure
from benchsvc.runner.matrix import nightly_change_held
from benchsvc.workload import resolve

W1 = "a-munmap-aligned"
W2 = "pmd-mapped-thp-munmap"
#: v4 against v3 on the mixed workload: a large real difference (v4 sends each of the 4096 order-0 pages
#: through the baseline's per-PTE path, one call each; it measures about 2x slower), so quick mode flags it
#: and confirms it
REAL = "e-mixed-order0-large"


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args, "--db", str(tmp / "x.db")],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _samples(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            'SELECT r.engine, r.version_id, w.name, s.process, s.meta, s."values", s.loops FROM samples s'
            " JOIN results r ON r.id = s.result_id JOIN workloads w ON w.id = r.workload_id"
        ).fetchall()
    finally:
        con.close()
    return [
        {
            "engine": e,
            "version": v,
            "workload": w,
            "process": p,
            "meta": (json.loads(m) if m else None) or {},
            "values": json.loads(vals),
            "loops": loops,
        }
        for e, v, w, p, m, vals, loops in rows
    ]


def test_the_aa_pair_runs_the_same_code() -> None:
    """v3 is the run's A/A pair against v2 only if the model runs exactly v2's code for it."""
    v2, v3 = get_version(AA_PAIR[1]), get_version(AA_PAIR[0])
    assert issubclass(v3, v2) and v3.parent == v2.id
    own = {
        name for name, value in vars(v3).items() if inspect.isfunction(value) or isinstance(value, property)
    }
    assert own == set(), f"{v3.id} overrides {own}: it is no longer an A/A pair for {v2.id}"


def test_measure_interleaves_every_timer_in_each_call_in_a_fresh_random_order() -> None:
    calls: list[str] = []

    def timer(name: str) -> Any:
        def one() -> float:
            calls.append(name)
            return 0.001

        return one

    names = ["a", "b", "c", "canary"]
    values, warmups, loops = measure(
        {n: timer(n) for n in names}, values=5, warmups=1, loops=3, rng=random.Random(7)
    )
    assert loops == 3  # no minimum duration asked for
    rounds = [calls[i : i + len(names)] for i in range(0, len(calls), len(names))]
    assert len(rounds) == (5 + 1) * 3
    assert all(sorted(r) == sorted(names) for r in rounds), "every timer once per call round"
    assert len({tuple(r) for r in rounds}) > 1, "the order is drawn afresh"
    assert all(len(values[n]) == 5 and len(warmups[n]) == 1 for n in names)


def test_paired_intervals_see_through_noise_that_hits_both_sides() -> None:
    """A 5% difference under ±30% trial-to-trial noise shared by both sides: paired, the interval is tight and
    finds it; the unpaired bootstrap over the same values cannot."""
    rng = np.random.default_rng(1)
    rows = []
    for process in range(6):
        shared = np.exp(rng.normal(0, 0.3, size=6))
        for version, factor in (("new", 1.05), ("old", 1.0)):
            for j, s in enumerate(shared):
                value = 0.01 * factor * s * np.exp(rng.normal(0, 0.005))
                rows.append((1 if version == "new" else 2, version, process, "blk", j, value))
    samples = pd.DataFrame(
        rows, columns=["result_id", "version", "process", "block", "value_index", "value_s"]
    )
    samples = samples.assign(engine="sim", workload="w", phase="primary")
    results = pd.DataFrame(
        {
            "result_id": [1, 2],
            "engine": "sim",
            "workload": "w",
            "workload_hash": "h",
            "version": ["new", "old"],
            "parent": ["old", None],
            "status": "ok",
            "mean_s": samples.groupby("result_id")["value_s"].mean().to_numpy(),
            "modeled_ns": 0.0,
        }
    )
    paired = compare_lineage(results, samples, metrics=["time"]).iloc[0]
    assert paired["paired"] and paired["significant"] and paired["direction"] == "worse"
    assert paired["ci_low"] > 1.03 and paired["ci_high"] < 1.07
    unpaired = compare_lineage(results, samples.assign(block=None), metrics=["time"]).iloc[0]
    assert not unpaired["paired"] and not unpaired["significant"]
    d = paired_log_ratios(samples[samples.result_id == 1], samples[samples.result_id == 2])
    assert d is not None and len(d) == 6


def test_a_run_stores_interleaved_blocks_with_the_canary(tmp_path: Path) -> None:
    cp = _cli(tmp_path, "run", "-w", W1, "-w", W2, "-V", "v2,v3,up612", "--quick", "--no-report")
    assert cp.returncode == 0, cp.stderr
    con = sqlite3.connect(tmp_path / "x.db")
    settings = json.loads(con.execute("SELECT pyperf_settings FROM runs").fetchone()[0])
    con.close()
    assert settings["measurement"] == "interleaved" and settings["sampling"] == SAMPLING["quick"].as_dict()
    rows = [r for r in _samples(tmp_path / "x.db") if r["meta"]["benchsvc_phase"] == "primary"]
    shape = SAMPLING["quick"]
    for workload in (W1, W2):
        mine = [r for r in rows if r["workload"] == workload]
        assert {r["version"] for r in mine} == {"v2", "v3", "up612"}
        blocks = {r["meta"]["benchsvc_block"] for r in mine}
        assert len(blocks) == 1, "one block per workload: its versions were measured together"
        for process in range(shape.processes):
            same = [r for r in mine if r["process"] == process]
            assert len(same) == 3 and all(len(r["values"]) == shape.values for r in same)
            # the same worker process: identical start, end and pid for every version
            spans = {(r["meta"]["benchsvc_started"], r["meta"]["benchsvc_ended"]) for r in same}
            assert len(spans) == 1
            assert all(r["meta"]["benchsvc_clock"] == "thread_cpu" for r in same)
            assert all(r["meta"]["cpu_affinity"] for r in same)
        starts = sorted(r["meta"]["benchsvc_started"] for r in mine if r["version"] == "v2")
        ends = sorted(r["meta"]["benchsvc_ended"] for r in mine if r["version"] == "v2")
        assert all(e <= s for e, s in zip(ends, starts[1:], strict=False)), "processes one after the other"
    # W2 zaps 32 PMD-mapped THPs (tens of microseconds a call): its values are means of more calls than the
    # mode's loops, and its metadata says how many; W1's 64 MiB munmap keeps the mode's
    tiny = {r["loops"] for r in rows if r["workload"] == W2}
    assert tiny and all(n > shape.loops and n % shape.loops == 0 for n in tiny)
    assert {r["loops"] for r in rows if r["workload"] == W1} == {shape.loops}
    canary = [r for r in rows if r["engine"] == "canary"]
    assert {r["version"] for r in canary} == {CANARY_VERSION}
    # the canary was measured in every worker process of every block
    assert len(canary) == 2 * shape.processes
    assert {r["meta"]["benchsvc_block"] for r in canary} == {
        r["meta"]["benchsvc_block"] for r in rows if r["engine"] == "sim"
    }
    shown = _cli(tmp_path, "show")
    # a quick run: the canary's spread, and no A/A interval (its sampling supports none)
    assert shown.returncode == 0 and "noise floor: quick mode: no timing intervals" in shown.stdout
    assert "canary spread" in shown.stdout and "A/A v3/v2" not in shown.stdout


def test_a_real_difference_is_measured_again_and_confirmed(tmp_path: Path) -> None:
    # the default mode: a quick run draws no timing finding, so it re-measures nothing (next test)
    cp = _cli(tmp_path, "run", "-w", REAL, "-V", "v2,v3,v4", "--no-report")
    assert cp.returncode == 0, cp.stderr
    assert f"[confirm 1/1] confirming {REAL}: measuring" in cp.stderr
    rows = _samples(tmp_path / "x.db")
    confirm = [r for r in rows if r["meta"]["benchsvc_phase"] == "confirm"]
    versions = {r["version"] for r in confirm if r["engine"] == "sim"}
    assert {"v3", "v4"} <= versions
    first = SAMPLING["default"].processes
    for version in versions:
        mine = sorted(r["process"] for r in confirm if r["version"] == version)
        assert mine == list(range(first, first + CONFIRM_PROCESSES["default"]))
    compared = _cli(tmp_path, "compare", "-m", "time", "--all", "-f", "json")
    assert compared.returncode == 0, compared.stderr
    by = {(r["version"], r["baseline"]): r for r in json.loads(compared.stdout)}
    v4 = by["v4", "v3"]
    assert v4["significant"] and v4["direction"] == "worse" and v4["confirmed"]
    assert by["v3", "v2"]["significant"] is False


def test_a_quick_run_re_measures_nothing_and_files_no_timing_finding(tmp_path: Path) -> None:
    """Quick mode's sampling does not support timing inference: the same real difference (v4 against v3) is
    neither re-measured nor filed as a timing finding; the counters still are compared."""
    cp = _cli(tmp_path, "run", "-w", REAL, "-V", "v2,v3,v4", "--quick", "--no-report")
    assert cp.returncode == 0, cp.stderr
    assert "[confirm" not in cp.stderr
    assert all(r["meta"]["benchsvc_phase"] == "primary" for r in _samples(tmp_path / "x.db"))
    found = _cli(tmp_path, "regressions", "--all", "-f", "json")
    assert found.returncode == 0, found.stderr
    rows = json.loads(found.stdout)
    assert not [r for r in rows if r["metric"] == "time"]
    assert [r for r in rows if r["metric"] != "time"]  # v4's counter differences against v3 are filed


def test_no_confirm_leaves_the_first_measurement_alone(tmp_path: Path) -> None:
    cp = _cli(tmp_path, "run", "-w", REAL, "-V", "v3,v4", "--quick", "--no-report", "--no-confirm")
    assert cp.returncode == 0, cp.stderr
    assert all(r["meta"]["benchsvc_phase"] == "primary" for r in _samples(tmp_path / "x.db"))


def test_a_tiny_zap_gets_more_calls_per_value_after_the_warm_up() -> None:
    """Timers that report 20 us a call, 2 calls a value, at least 1 ms a value: 1 ms / 40 us = 25, so the
    next power of two, 32, capped at MAX_LOOPS_FACTOR = 16: 32 calls a value; the warm-up keeps 2."""
    calls: list[str] = []

    def timer(name: str) -> Any:
        def one() -> float:
            calls.append(name)
            return 20e-6

        return one

    names = ["v2", "v3", "canary"]
    values, warmups, loops = measure(
        {n: timer(n) for n in names}, values=3, warmups=1, loops=2, rng=random.Random(1), min_value_s=1e-3
    )
    assert MAX_LOOPS_FACTOR == 16 and loops == 2 * 16
    assert len(calls) == len(names) * (1 * 2 + 3 * 32)
    assert all(v == pytest.approx(20e-6) for n in names for v in values[n] + warmups[n])
    assert loops_factor(20e-6, 2, 1e-3) == 16 and loops_factor(20e-6, 2, 0.5e-3) == 16
    assert loops_factor(100e-6, 2, 1e-3) == 8  # 1 ms / 200 us = 5 -> 8
    assert loops_factor(1e-3, 2, 1e-3) == 1 and loops_factor(0.0, 2, 1e-3) == 1


@pytest.mark.parametrize("mode", list(SAMPLING))
def test_every_mode_has_a_fixed_loop_count(mode: str) -> None:
    s = SAMPLING[mode]
    assert s.loops >= 1 and s.values >= 1 and s.processes >= 1
    assert mode in CONFIRM_PROCESSES


def _pv(values: list[float], block: str) -> ProcessValues:
    return ProcessValues(tuple(values), metadata={"benchsvc_block": block})


@pytest.mark.parametrize(
    "again, canary_again, held",
    [
        (1.50, 1.0, True),  # the new level holds
        (1.02, 1.0, False),  # back to the level before: tonight's first value was a fluke
        (1.65, 1.10, True),  # the machine got 10% slower meanwhile: the canary corrects it
        (1.10, 1.0, False),  # nearer the level before than the new one
        (1.30, 1.0, True),  # nearer the new level
    ],
)
def test_a_nightly_change_holds_only_when_the_remeasurement_stays_on_the_new_level(
    again: float, canary_again: float, held: bool
) -> None:
    # tonight measured 1.5 against a level of 1.0 before: a change point from 1.0 to 1.5
    finding = SeriesChange(
        engine=EngineKind.SIM,
        version="v2",
        workload=W1,
        workload_hash="0" * 64,
        metric="time",
        direction=Direction.WORSE,
        effect=1.5,
        details={"mean_before": 1.0, "mean_after": 1.5, "value_tonight": 1.5},
    )
    first = [_pv([1.5, 1.5], "p")]
    canary = [_pv([0.2, 0.2], "p")]
    remeasured = [_pv([again, again], "c")]
    canary_remeasured = [_pv([0.2 * canary_again] * 2, "c")]
    assert nightly_change_held(finding, first, remeasured, canary, canary_remeasured) is held


def test_a_nightly_change_at_the_new_night_is_measured_again_and_recorded(tmp_path: Path) -> None:
    """A history in which v2 ran 40% faster than it does now, then a real run: the change point at tonight is
    re-measured before it is recorded, and recorded because the re-measurement holds."""
    from benchsvc.records import EnvironmentInfo, MachineInfo, ResultRecord, RunRecord
    from benchsvc.runner.blocks import engine_code_hash
    from benchsvc.store.db import open_store, write_session
    from benchsvc.store.ingest import ingest
    from benchsvc.store.queries import run_process_values

    db = tmp_path / "x.db"
    versions = "base65-p1,v1,v2,v3,up612"
    first = _cli(tmp_path, "run", "-w", W1, "-V", versions, "--no-report", "--no-confirm")
    assert first.returncode == 0, first.stderr
    engine = open_store(str(db))
    try:
        with write_session(engine) as s:
            measured = run_process_values(s, 1, phase="primary", engine="sim")
        rng = np.random.default_rng(3)
        for night in range(10):
            record = RunRecord.new(mode="default", trigger="nightly")
            record = dataclasses.replace(
                record,
                started_at=dt.datetime(2026, 1, 1) + dt.timedelta(days=night),
                machine=MachineInfo.current(),
                environment=EnvironmentInfo.current(),
                status="complete",
            )
            results = []
            for (version, name, chash), pvs in measured.items():
                level = statistics.fmean(v for p in pvs for v in p.values) * (0.6 if version == "v2" else 1.0)
                values = tuple(level * (1 + e) for e in rng.normal(0, 0.005, 3))
                spec = resolve(name)
                assert spec.content_hash == chash
                ref = WorkloadRef(name, chash, spec.source_text, spec.description)
                results.append(
                    ResultRecord(
                        "sim",
                        version,
                        ref,
                        processes=(ProcessValues(values),),
                        # the same engine code as tonight: the machine factor then takes out how much
                        # faster or slower the whole machine is tonight than when the levels were measured
                        pyperf_metadata={"benchsvc_engine_hash": engine_code_hash()},
                    )
                )
            with write_session(engine) as s:
                ingest(s, record, results)
    finally:
        engine.dispose()
    tonight = _cli(tmp_path, "run", "-w", W1, "-V", versions, "--no-report")
    assert tonight.returncode == 0, tonight.stderr
    assert "[confirm" in tonight.stderr and "v2" in tonight.stderr, tonight.stderr
    rows = _samples(db)
    assert any(r["version"] == "v2" and r["meta"].get("benchsvc_phase") == "confirm" for r in rows)
    found = _cli(tmp_path, "regressions", "--axis", "nightly", "-f", "json")
    assert found.returncode == 0, found.stderr
    nightly = [r for r in json.loads(found.stdout) if r["version"] == "v2" and r["metric"] == "time"]
    assert len(nightly) == 1 and nightly[0]["direction"] == "worse", (found.stdout, tonight.stdout)
