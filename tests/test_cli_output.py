"""What the commands print: numbers that read right, strict JSON from every ``--format json``, CSV cells no
spreadsheet runs as formulas, and no terminal control character from a stored string.

The database is real: a quick ``benchsvc run`` of one workload, its export imported back as a second night,
and an import of the same night crafted with hostile strings (hostname, trigger, commit, warnings) and an
acknowledgement note that holds a formula and escape sequences.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from benchsvc.cli.output import (
    Format,
    Interval,
    clean,
    count,
    csv_cell,
    duration,
    interval,
    json_value,
    quantity,
    significant,
    time_unit,
)

WORKLOAD = "a-munmap-aligned"
# docs/kernel-history.md (a-aligned-full-munmap, 64 MiB of 64 KiB folios): v1 drops base65-p1's spurious
# deferred-split queueing, ds_adds 1,024 -> 1 (-1,023)
DS_ADDS_P1, DS_ADDS_V1 = 1024, 1

ESC = "\x1b"
HOSTILE_HOST = f'=HYPERLINK("http://x"){ESC}]0;owned\x07{ESC}[2J\x9b31mhost'
HOSTILE_TRIGGER = "+SUM(1+1)\x07"
HOSTILE_COMMIT = f"@evil{ESC}[31mcommit\x85"
HOSTILE_WARNING = f"-2+3 the maximum {ESC}P1;2q{ESC}\\is odd\x9d0;title\x07"
HOSTILE_NOTE = f"=cmd|' /C calc'!A0 {ESC}[2J[red]not markup[/]"
#: what a terminal acts on: C0 controls but tab and newline, DEL, C1 controls (ESC is among the C0)
CONTROL = {chr(c) for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)]}


def _env(runtime: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHSVC_")}
    env.update(BENCHSVC_RUNTIME_DIR=str(runtime), COLUMNS="250", TERM="dumb", PYTHONIOENCODING="utf-8")
    return env


def _cli(db: Path, *args: str, runtime: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(runtime),
    )


def _hostile(line: str) -> str:
    """One exported result moved to another night of another machine whose strings are hostile."""
    d = json.loads(line)
    d["run"]["uuid"] = str(uuid.UUID(int=7, version=4))
    d["run"]["trigger"] = HOSTILE_TRIGGER
    d["run"]["git_commit"] = HOSTILE_COMMIT
    d["machine"]["hostname"] = HOSTILE_HOST
    del d["machine"]["fingerprint"]  # computed from the fields on import: another machine
    if d["engine"] == "sim":
        d["warnings"] = [HOSTILE_WARNING]
    return json.dumps(d)


def _second_night(line: str) -> str:
    """The same result as a second night of the same machine (a history with two nights)."""
    d = json.loads(line)
    d["run"]["uuid"] = str(uuid.UUID(int=8, version=4))
    for key in ("started_at", "finished_at"):
        d["run"][key] = d["run"][key].replace(d["run"][key][:10], "2099-01-01")
    return json.dumps(d)


class Store:
    def __init__(self, db: Path, runtime: Path) -> None:
        self.db, self.runtime = db, runtime

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = _cli(self.db, *args, runtime=self.runtime)
        if ok:
            assert proc.returncode == 0, f"{args}: {proc.stderr}"
            assert "Traceback" not in proc.stderr, proc.stderr
        return proc


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A quick run of every version on one workload, a second night of it, and a hostile machine's night."""
    root = tmp_path_factory.mktemp("output")
    s = Store(root / "bench.db", root / "runtime")
    s.runtime.mkdir()
    s.cli("run", "--mode", "quick", "-w", WORKLOAD, "-V", "all", "--no-report", "-q")
    exported = root / "export.jsonl"
    s.cli("export", "-o", str(exported))
    lines = exported.read_text().splitlines()
    (root / "night2.jsonl").write_text("\n".join(_second_night(line) for line in lines) + "\n")
    (root / "hostile.jsonl").write_text("\n".join(_hostile(line) for line in lines) + "\n")
    s.cli("import", str(root / "night2.jsonl"))
    s.cli("import", str(root / "hostile.jsonl"))
    listed = json.loads(s.cli("regressions", "--all", "--format", "json").stdout)
    hostile = next(r for r in listed if r["machine"] == HOSTILE_HOST)
    s.cli("regressions", "ack", str(hostile["id"]), "--note", HOSTILE_NOTE)
    return s


def _strict(text: str) -> Any:
    """RFC 8259: NaN, Infinity and -Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# --- numbers that read right (the formatting rules, docs/formats.md) ---------------------------------------


def test_ratios_and_intervals_have_three_significant_digits() -> None:
    assert significant(1.04) == "1.04"
    assert significant(1.26) == "1.26"
    assert significant(0.946) == "0.946"
    assert significant(12.34) == "12.3"
    assert significant(0.0597) == "0.0597"
    assert interval(0.946, 0.990) == "[0.946, 0.990]"
    assert interval(1.2, 1.321) == "[1.20, 1.32]"


def test_counters_are_integers_with_separators() -> None:
    assert count(1024.0) == "1,024"
    assert count(1024) == "1,024"
    assert count(-2046) == "-2,046"
    assert quantity(16384.0, "ds_lock") == "16,384"


def test_durations_pick_their_unit() -> None:
    assert duration(5.97e-05) == "59.7 µs"
    assert duration(0.00130) == "1.30 ms"
    assert duration(4.2e-8) == "42.0 ns"
    assert quantity(1_430_846.0, "modeled_ns") == "1.43 ms"
    assert time_unit([2e-3, 3e-3, 4e-5]) == ("ms", 1e-3)  # the column's median magnitude


def test_json_values_are_strict() -> None:
    import numpy as np
    import pandas as pd

    assert json_value(float("nan")) is None
    assert json_value(float("inf")) is None
    assert json_value(np.float64("nan")) is None
    assert json_value(pd.NaT) is None
    assert json_value(np.int64(3)) == 3
    assert json_value(pd.Timestamp("2026-12-07 22:43")) == "2026-12-07T22:43:00+00:00"
    assert json_value(Interval(float("nan"), 1.0)) == [None, 1.0]


def test_csv_cells_that_start_a_formula_are_neutralised() -> None:
    for text in ("=1+1", "+1", "-1+A1", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text
    assert csv_cell(-1023) == -1023  # a number stays a number
    assert csv_cell(-0.5) == -0.5
    assert csv_cell("a=b") == "a=b"
    assert csv_cell(float("nan")) == ""


def test_control_characters_are_stripped() -> None:
    assert clean(HOSTILE_HOST) == '=HYPERLINK("http://x")host'
    assert clean(f"a{ESC}[1;31mb{ESC}[0m\tc\nd") == "ab\tc\nd"
    assert not set(clean(HOSTILE_WARNING)) & CONTROL
    assert clean("µs, ±, ∞ stay") == "µs, ±, ∞ stay"


def test_compare_prints_ratios_and_counters_as_they_read(store: Store) -> None:
    out = store.cli("compare", "--run", "1", "-w", WORKLOAD, "-V", "v1", "-m", "ds_adds").stdout
    row = next(line for line in out.splitlines() if "ds_adds" in line)
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    # value, parent's value, difference, ratio: 1 / 1,024 = 0.000977
    assert cells[5:9] == [f"{DS_ADDS_V1:,}", f"{DS_ADDS_P1:,}", f"-{DS_ADDS_P1 - DS_ADDS_V1:,}", "0.000977"]
    assert "1,024.0" not in row and "1.0 " not in row


def test_quick_mode_prints_no_timing_interval(store: Store) -> None:
    out = store.cli("compare", "--run", "1", "-m", "time", "--all").stdout
    assert "quick mode: no timing intervals" in out
    assert "[" not in "".join(line for line in out.splitlines() if " time " in line)
    rows = _strict(store.cli("compare", "--run", "1", "-m", "time", "--all", "-f", "json").stdout)
    assert rows and all(r["ci_low"] is None and r["significant"] is False for r in rows)
    # docs/measurement.md: the confirmation's verdict is a column of compare's JSON
    assert all("confirmed" in r and "paired" in r for r in rows)


# --- strict JSON from every command ----------------------------------------------------------------------


def _commands_with_format() -> set[str]:
    """Every command whose --format takes json (walking the real command tree)."""
    import typer.main

    from benchsvc.cli.app import app

    found: set[str] = set()

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        for p in getattr(cmd, "params", []):
            annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            choices = (
                [str(getattr(c, "value", c)) for c in annotation]
                if isinstance(annotation, type(Format))
                else []
            )
            if "--format" in getattr(p, "opts", []) and "json" in choices:
                found.add(" ".join(path))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


#: each command with --format json, and the invocations that exercise it on the populated database
JSON_INVOCATIONS: dict[str, list[list[str]]] = {
    "runs": [["runs"]],
    "show": [["show", "1"], ["show", "2", "-w", WORKLOAD, "-V", "v1"]],
    "compare": [
        ["compare", "--run", "1", "--all"],
        ["compare", "--run", "2", "--against", "1", "--all"],
        ["compare", "--run", "1", "-V", "v2"],
    ],
    "history": [
        ["history", "-w", WORKLOAD, "-V", "v1"],
        ["history", "-w", WORKLOAD, "-V", "v1", "-m", "ds_adds"],
        ["history", "-w", WORKLOAD, "-V", "v1", "--compare-machines"],
    ],
    "regressions": [["regressions", "--all"], ["regressions", "--status", "acknowledged"]],
    "evaluate": [
        ["evaluate", "--noise", "0.01", "--step", "0.05", "--trials", "3"],
        ["evaluate", "-w", WORKLOAD, "-V", "v1"],
    ],
    "versions": [["versions"]],
    "workloads list": [["workloads", "list"]],
    "scale": [["scale", WORKLOAD, "--cpus", "1,2,64"]],
}
#: commands with --format json that are not run here, and why
NOT_RUN = {
    "crosscheck": "needs the live kernel and its run lock (tests/test_crosscheck.py)",
    "calibrate": "measures the live kernel; its JSON is parsed strictly in tests/test_calibration.py",
}


def test_every_json_command_is_covered() -> None:
    assert _commands_with_format() == set(JSON_INVOCATIONS) | set(NOT_RUN)


@pytest.mark.parametrize(
    "args",
    [a for runs in JSON_INVOCATIONS.values() for a in runs],
    ids=lambda a: " ".join(a),
)
def test_json_output_is_strict_rfc8259(store: Store, args: list[str]) -> None:
    if args[0] in ("versions", "workloads", "scale"):  # they read no database
        proc = subprocess.run(
            [sys.executable, "-m", "benchsvc", *args, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(store.runtime),
        )
        assert proc.returncode == 0, proc.stderr
    else:
        proc = store.cli(*args, "--format", "json")
    data = _strict(proc.stdout)
    assert data, f"{args}: empty output"
    _check_timestamps(data)


def _check_timestamps(data: Any) -> None:
    """Every timestamp is ISO 8601 with its zone."""
    import datetime as dt

    if isinstance(data, dict):
        for k, v in data.items():
            if k.endswith("_at") or k in ("last_night",):
                if v is not None:
                    parsed = dt.datetime.fromisoformat(v)
                    assert parsed.tzinfo is not None, f"{k}: {v} has no zone"
            else:
                _check_timestamps(v)
    elif isinstance(data, list):
        for v in data:
            _check_timestamps(v)


def test_show_json_carries_the_noise_floor_and_the_run(store: Store) -> None:
    shown = _strict(store.cli("show", "1", "--format", "json").stdout)
    assert shown["run"]["mode"] == "quick" and shown["run"]["timing_intervals"] is False
    assert shown["noise_floor"] is None  # quick mode: its sampling supports no interval
    assert {r["version"] for r in shown["results"]} >= {"v1", "base65-p1"}
    v1 = next(r for r in shown["results"] if r["version"] == "v1")
    assert v1["c_ds_adds"] == DS_ADDS_V1


def test_simulate_json_is_strict() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchsvc", "simulate", WORKLOAD, "-V", "v1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert _strict(proc.stdout)["counters"]["ds_adds"] == DS_ADDS_V1


# --- hostile imported strings: CSV cells and the terminal ------------------------------------------------


HOSTILE_OUTPUTS = [
    ["runs"],
    ["show", "3"],
    ["regressions", "--all"],
    ["regressions", "--status", "acknowledged"],
    ["history", "-w", WORKLOAD, "-V", "v1"],
    ["compare", "--run", "3", "-V", "v1"],
]


@pytest.mark.parametrize("args", HOSTILE_OUTPUTS, ids=lambda a: " ".join(a))
def test_tables_carry_no_control_characters(store: Store, args: list[str]) -> None:
    out = store.cli(*args).stdout
    assert not set(out) & CONTROL, repr(out)
    if args[0] in ("runs", "show", "regressions"):
        assert "host" in out  # the hostile string is shown, only stripped


def test_the_acknowledged_table_shows_the_note_as_text(store: Store) -> None:
    out = store.cli("regressions", "--status", "acknowledged").stdout
    assert "[red]not markup[/]" in out  # never read as rich markup
    assert "=cmd|' /C calc'!A0" in out


@pytest.mark.parametrize("args", HOSTILE_OUTPUTS, ids=lambda a: " ".join(a))
def test_csv_cells_never_start_a_formula(store: Store, args: list[str]) -> None:
    out = store.cli(*args, "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) > 1
    for row in rows:
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)  # only a number may start so (a negative number stays numeric)
    if args[0] == "runs":
        hosts = {r[rows[0].index("machine")] for r in rows[1:]}
        assert clean(HOSTILE_HOST) not in hosts and "'" + HOSTILE_HOST in hosts
    if args[0] == "show":
        warnings = {r[rows[0].index("warning_text")] for r in rows[1:]}
        assert "'" + HOSTILE_WARNING in warnings


# --- pyperf warnings: the expected ones summarised, the others loud --------------------------------------


def test_expected_pyperf_warnings_are_told_apart() -> None:
    from benchsvc.store.pyperf_adapter import expected_warning

    assert expected_warning("the standard deviation (554 us) is 19% of the mean (2.90 ms)") is not None
    assert (
        expected_warning(
            "Not enough samples to get a stable result (95% certainty of less than 1% variation)"
        )
        is not None
    )
    assert expected_warning("the maximum (4.12 ms) is 60% greater than the mean (2.57 ms)") is None


def test_show_lists_an_unexpected_warning_under_its_result(store: Store) -> None:
    out = store.cli("show", "3", "-V", "v1").stdout
    assert f"pyperf warning on v1/{WORKLOAD}: {clean(HOSTILE_WARNING)}" in out
    row = next(line for line in out.splitlines() if line.startswith("│") and " v1 " in line)
    assert row.rstrip("│ ").rsplit("│", 1)[1].strip() == "1"  # the warnings column counts the unexpected one


def test_export_csv_neutralises_formula_cells(store: Store) -> None:
    out = store.cli("export", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    header = rows[0]
    hostile = [r for r in rows[1:] if r[header.index("machine")] == "'" + HOSTILE_HOST]
    assert hostile, "the hostile machine's results are exported, neutralised"
    assert {r[header.index("trigger")] for r in hostile} == {"'" + HOSTILE_TRIGGER}
    assert {r[header.index("git_commit")] for r in hostile} == {"'" + HOSTILE_COMMIT}
    for row in rows:
        for cell in row:
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)
