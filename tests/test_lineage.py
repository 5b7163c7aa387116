"""Along the lineage: exact counter differences, the timing bootstrap, regression records, the commands.

Expected counter differences come from docs/kernel-history.md#a-aligned-full-munmap at 64 MiB of 64 KiB folios: P = 16384 pages, N = 1024 folios,
T = 32 page tables, one gather-full at page 9698 (G65), which lands mid-folio (9698 mod 16 = 2), so M = 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchsvc.analysis.lineage import bootstrap_ratio, compare_lineage

P, N, T, M, G65 = 16384, 1024, 32, 1, 9698
TLB_65 = P // G65 + 1  # base65, base65-p1, v1: 2
TLB_V2 = N + 1  # v2-v4: a forced flush per folio, plus the final one
PTL_65 = T + P // G65  # one re-entry per gather-full: 33
PTL_V2 = N  # one zap_pte_range() entry per span


def _cli(*args: str, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def lineage_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("lineage") / "x.db"
    proc = _cli("run", "--mode", "quick", "-w", "a-munmap-aligned", "-V", "all", db=db)
    assert proc.returncode == 0, proc.stderr
    return db


def _changes(db: Path, *extra: str) -> pd.DataFrame:
    proc = _cli("compare", "--format", "json", *extra, db=db)
    assert proc.returncode == 0, proc.stderr
    return pd.DataFrame(json.loads(proc.stdout))


def _row(df: pd.DataFrame, version: str, metric: str) -> pd.Series:
    rows = df[(df["version"] == version) & (df["metric"] == metric)]
    assert len(rows) == 1, f"{version} {metric}: {rows}"
    return rows.iloc[0]


def test_forced_flush_regression_of_v2_against_v1(lineage_db: Path) -> None:
    df = _changes(lineage_db)
    tlb = _row(df, "v2", "tlb_flushes")
    assert (tlb["baseline"], tlb["direction"]) == ("v1", "worse")
    assert (tlb["value"], tlb["baseline_value"], tlb["delta"]) == (TLB_V2, TLB_65, TLB_V2 - TLB_65)
    ptl = _row(df, "v2", "ptl_acquisitions")
    assert (ptl["direction"], ptl["delta"]) == ("worse", PTL_V2 - PTL_65)
    assert _row(df, "v2", "modeled_ns")["direction"] == "worse"


def test_spurious_queueing_added_by_p1_and_removed_by_v1_and_up610(lineage_db: Path) -> None:
    df = _changes(lineage_db)
    adds = _row(df, "base65-p1", "ds_adds")  # every folio queued once, as in (a)
    assert (adds["baseline"], adds["direction"], adds["delta"]) == ("base65", "worse", N)
    lock = _row(df, "base65-p1", "ds_lock")
    assert (lock["direction"], lock["delta"]) == ("worse", 2 * N)
    v1 = _row(df, "v1", "ds_adds")  # v1 keeps only the M mid-folio cuts
    assert (v1["baseline"], v1["direction"], v1["delta"]) == ("base65-p1", "better", M - N)
    up610 = _row(df, "up610", "ds_lock")
    assert (up610["baseline"], up610["direction"], up610["delta"]) == ("up69", "better", -2 * N)
    for version in ("base65-p1", "v2"):
        assert _row(df, version, "modeled_ns")["direction"] == "worse"
    for version in ("v1", "up610"):
        assert _row(df, version, "modeled_ns")["direction"] == "better"


def test_unchanged_counters_are_not_reported(lineage_db: Path) -> None:
    df = _changes(lineage_db)
    v3 = df[(df["version"] == "v3") & (df["kind"] == "exact")]
    assert v3.empty  # v3 only refactors 2/3: counting identical to v2
    everything = _changes(lineage_db, "--all")
    assert len(everything[(everything["version"] == "v3") & (everything["kind"] == "exact")]) > 10


def test_base_option_compares_with_one_version(lineage_db: Path) -> None:
    df = _changes(lineage_db, "--base", "base65", "--metric", "ds_adds")
    assert set(df["baseline"]) == {"base65"}
    assert _row(df, "up69", "ds_adds")["delta"] == N  # 6.9 still queues every folio


def test_run_records_lineage_findings_and_fail_on_regression(lineage_db: Path) -> None:
    proc = _cli("regressions", "--format", "json", "--axis", "lineage", db=lineage_db)
    assert proc.returncode == 0, proc.stderr
    regs = pd.DataFrame(json.loads(proc.stdout))
    mine = regs[(regs["version"] == "v2") & (regs["metric"] == "tlb_flushes")]
    assert len(mine) == 1 and mine.iloc[0]["status"] == "new"
    assert (regs["direction"] == "worse").all()
    assert _cli("regressions", "--fail-on-regression", db=lineage_db).returncode == 2
    reg_id = int(mine.iloc[0]["id"])
    ack = _cli("regressions", "ack", str(reg_id), "--note", "known: forced flush in v2-v4", db=lineage_db)
    assert ack.returncode == 0, ack.stderr
    proc = _cli("regressions", "--format", "json", "--status", "acknowledged", db=lineage_db)
    acked = json.loads(proc.stdout)
    assert [r["id"] for r in acked] == [reg_id] and acked[0]["note"] == "known: forced flush in v2-v4"
    missing = _cli("regressions", "ack", "999999", "--note", "x", db=lineage_db)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no regression 999999 — see benchsvc regressions"


def _results(rows: list[tuple[str, str, str | None, dict[str, int]]]) -> pd.DataFrame:
    out = []
    for rid, (workload, version, parent, counters) in enumerate(rows, 1):
        out.append(
            {
                "result_id": rid,
                "engine": "sim",
                "version": version,
                "parent": parent,
                "workload": workload,
                "workload_hash": "h",
                "status": "ok",
                "modeled_ns": 1.0,
                "mean_s": 1.0,
                **{f"c_{k}": v for k, v in counters.items()},
            }
        )
    return pd.DataFrame(out)


def _samples(per_result: dict[int, list[list[float]]]) -> pd.DataFrame:
    rows = []
    for rid, procs in per_result.items():
        for p, values in enumerate(procs):
            rows += [{"result_id": rid, "process": p, "value_s": v} for v in values]
    return pd.DataFrame(rows)


def test_timing_bootstrap_separates_a_real_step_from_noise() -> None:
    rng = np.random.default_rng(1)
    results = _results([("w", "a", None, {}), ("w", "b", "a", {}), ("w", "c", "a", {})])

    def procs(level: float) -> list[list[float]]:  # 10 processes, each with its own offset, 5 values each
        return [list(level * (1 + rng.normal(0, 0.01)) * (1 + rng.normal(0, 0.01, 5))) for _ in range(10)]

    samples = _samples({1: procs(1.0), 2: procs(1.10), 3: procs(1.0)})
    df = compare_lineage(results, samples, metrics=["time"]).set_index("version")
    assert df.loc["b", "significant"] and df.loc["b", "direction"] == "worse"
    assert df.loc["b", "ci_low"] < 1.10 < df.loc["b", "ci_high"] or abs(df.loc["b", "ratio"] - 1.10) < 0.02
    assert not df.loc["c", "significant"] and df.loc["c", "direction"] == "same"
    assert df.loc["c", "ci_low"] < 1 < df.loc["c", "ci_high"]


def test_timing_needs_two_processes_and_the_minimum_effect() -> None:
    one = (np.array([1.0]), np.array([5.0]))
    ratio, lo, hi = bootstrap_ratio(one, one, 100, 0)
    assert ratio == 1.0 and np.isnan(lo) and np.isnan(hi)
    results = _results([("w", "a", None, {}), ("w", "b", "a", {})])
    tight = {1: [[1.0, 1.0]] * 4, 2: [[1.01, 1.01]] * 4}  # a certain +1% is below the 3% minimum
    df = compare_lineage(results, _samples(tight), metrics=["time"])
    assert not df.iloc[0]["significant"]
    df = compare_lineage(results, _samples(tight), metrics=["time"], min_effect=0.005)
    assert df.iloc[0]["significant"] and df.iloc[0]["direction"] == "worse"


def test_same_seed_same_interval() -> None:
    results = _results([("w", "a", None, {}), ("w", "b", "a", {})])
    samples = _samples({1: [[1.0, 1.1], [0.9, 1.0], [1.05, 1.0]], 2: [[1.2, 1.1], [1.0, 1.3], [1.1, 1.1]]})
    first = compare_lineage(results, samples, metrics=["time"])
    second = compare_lineage(results, samples, metrics=["time"])
    pd.testing.assert_frame_equal(first, second)


def test_counters_from_zero_and_workload_content_must_match() -> None:
    results = _results([("w", "a", None, {"ds_adds": 0}), ("w", "b", "a", {"ds_adds": 5})])
    row = compare_lineage(results, _samples({}), metrics=["ds_adds"]).iloc[0]
    assert (row["delta"], row["ratio"], row["direction"]) == (5, float("inf"), "worse")
    results.loc[1, "workload_hash"] = "other"  # another workload content is never compared
    assert compare_lineage(results, _samples({}), metrics=["ds_adds"]).empty
