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


def test_run_records_lineage_findings_as_character_not_failing_ci(lineage_db: Path) -> None:
    """The first night's lineage differences are what the versions are: filed with status character, not
    queued for acknowledgement, and --fail-on-regression passes (it fails on new nightly regressions)."""
    proc = _cli("regressions", "--format", "json", "--axis", "lineage", db=lineage_db)
    assert proc.returncode == 0, proc.stderr
    regs = pd.DataFrame(json.loads(proc.stdout))
    mine = regs[(regs["version"] == "v2") & (regs["metric"] == "tlb_flushes")]
    assert len(mine) == 1 and mine.iloc[0]["status"] == "character"
    assert mine.iloc[0]["effect"] == pytest.approx(TLB_V2 / TLB_65)
    assert (regs["direction"] == "worse").all()
    assert set(regs["status"]) == {"character"}
    assert _cli("regressions", "--fail-on-regression", db=lineage_db).returncode == 0
    new = _cli("regressions", "--status", "new", "--format", "json", db=lineage_db)
    assert json.loads(new.stdout) == []


def test_ack_takes_several_ids_or_a_filter_and_the_note_is_shown(lineage_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    db.write_bytes(lineage_db.read_bytes())
    regs = pd.DataFrame(json.loads(_cli("regressions", "--format", "json", db=db).stdout))
    v2 = regs[regs["version"] == "v2"].sort_values("id")
    first, second = (str(int(i)) for i in v2["id"].iloc[:2])
    ack = _cli("regressions", "ack", first, second, "--note", "known: forced flush in v2-v4", db=db)
    assert ack.returncode == 0, ack.stderr
    assert [line.split()[1] for line in ack.stdout.splitlines()] == [first, second]
    acked = json.loads(_cli("regressions", "--format", "json", "--status", "acknowledged", db=db).stdout)
    assert sorted(str(r["id"]) for r in acked) == sorted([first, second])
    assert {r["note"] for r in acked} == {"known: forced flush in v2-v4"}
    table = _cli("regressions", "--status", "acknowledged", db=db).stdout
    assert "known: forced flush in v2-v4" in table and "note" in table.splitlines()[1]
    # a filter: every open finding of v4 (character ones included, since a version filter is given)
    by_filter = _cli("regressions", "ack", "--version", "v4", "--note", "v4 as designed", db=db)
    assert by_filter.returncode == 0, by_filter.stderr
    after = pd.DataFrame(json.loads(_cli("regressions", "--format", "json", "--all", db=db).stdout))
    v4 = after[after["version"] == "v4"]
    assert not v4.empty and set(v4["status"]) == {"acknowledged"}
    assert set(after[after["version"] == "v2"]["status"]) == {"acknowledged", "character"}
    nothing = _cli("regressions", "ack", "--all-new", "--note", "x", db=db)
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == "Error: no open finding matches those filters — see benchsvc regressions"
    both = _cli("regressions", "ack", first, "--version", "v4", "--note", "x", db=db)
    assert both.returncode == 1 and both.stderr.startswith("Error: give ids or a filter")
    missing = _cli("regressions", "ack", "999999", "--note", "x", db=db)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "Error: no regression 999999 — see benchsvc regressions"


def test_lineage_baseline_fails_on_a_new_lineage_difference(lineage_db: Path, tmp_path: Path) -> None:
    """Against itself a run shows no new lineage difference; against a run of only the versions before v2,
    v2's forced TLB flushes (+1,023 against v1) are new."""
    db = tmp_path / "copy.db"
    db.write_bytes(lineage_db.read_bytes())
    same = _cli("regressions", "--fail-on-regression", "--lineage-baseline", "1", db=db)
    assert same.returncode == 0, same.stderr
    assert "0 new differences" in same.stderr
    older = _cli(
        "run", "--mode", "quick", "-w", "a-munmap-aligned", "-V", "base65,base65-p1,v1", "--no-report", db=db
    )
    assert older.returncode == 0, older.stderr
    # the latest run is the older series; the baseline (run 1) has v2: nothing of run 2 is new
    assert _cli("regressions", "--fail-on-regression", "--lineage-baseline", "1", db=db).returncode == 0
    again = _cli("run", "--mode", "quick", "-w", "a-munmap-aligned", "-V", "all", "--no-report", db=db)
    assert again.returncode == 0, again.stderr
    gate = _cli("regressions", "--fail-on-regression", "--lineage-baseline", "2", db=db)
    assert gate.returncode == 2, gate.stderr
    assert f"v2 vs v1 on a-munmap-aligned: tlb_flushes +{TLB_V2 - TLB_65:,}" in gate.stderr


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


def test_run_fail_on_regression_exits_2_on_a_new_nightly_regression(tmp_path: Path) -> None:
    """A previous night of v1 whose ds_lock was lower (an engine change between the nights, as far as the
    store can tell): tonight's run records the counter change as a new nightly regression and, with
    --fail-on-regression, exits 2. The same run without that history exits 0."""
    source, db = tmp_path / "source.db", tmp_path / "gated.db"
    first = _cli(
        "run",
        "--mode",
        "quick",
        "-w",
        "a-munmap-aligned",
        "-V",
        "v1",
        "--no-report",
        "--fail-on-regression",
        db=source,
    )
    assert first.returncode == 0, first.stderr  # a first night: nothing to regress against
    exported = tmp_path / "night.jsonl"
    assert _cli("export", "-o", str(exported), db=source).returncode == 0
    lines = []
    for line in exported.read_text().splitlines():
        d = json.loads(line)
        d["run"]["uuid"] = "00000000-0000-4000-8000-000000000001"
        for key in ("started_at", "finished_at"):
            d["run"][key] = "2020-01-01" + d["run"][key][10:]
        if d["engine"] == "sim":
            assert (
                d["counters"]["ds_lock"] == 2
            )  # v1: docs/kernel-history.md, one deferred split, lock taken twice
            d["counters"]["ds_lock"] = 1
        lines.append(json.dumps(d))
    crafted = tmp_path / "earlier.jsonl"
    crafted.write_text("\n".join(lines) + "\n")
    imported = _cli("import", str(crafted), db=db)
    assert imported.returncode == 0, imported.stderr
    gated = _cli(
        "run",
        "--mode",
        "quick",
        "-w",
        "a-munmap-aligned",
        "-V",
        "v1",
        "--no-report",
        "--fail-on-regression",
        db=db,
    )
    assert gated.returncode == 2, gated.stderr
    assert "1 new nightly regressions" in gated.stderr
    regs = json.loads(_cli("regressions", "--status", "new", "--format", "json", db=db).stdout)
    assert [(r["version"], r["metric"], r["axis"]) for r in regs] == [("v1", "ds_lock", "nightly")]
    assert _cli("regressions", "--fail-on-regression", db=db).returncode == 2
