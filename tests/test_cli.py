"""The command line: help texts, README coverage, JSON output, error edge, lazy imports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from benchsvc.cli.app import app
from benchsvc.engine.counters import COUNTER_NAMES
from benchsvc.engine.versions import version_ids
from benchsvc.kernel import unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner(env={"COLUMNS": "200", "TERM": "dumb"})


def _commands(group: typer.Typer, prefix: str = "") -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for info in group.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        out.append((f"{prefix}{name}", info.callback))
    for sub in group.registered_groups:
        out.extend(_commands(sub.typer_instance, f"{prefix}{sub.name} "))
    return out


COMMANDS = _commands(app)


def test_every_command_is_listed():
    names = {name for name, _ in COMMANDS}
    assert {"versions", "simulate", "workloads list", "workloads show", "workloads validate"} <= names


@pytest.mark.parametrize("name,callback", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_command_has_help_and_is_in_readme(name: str, callback: object) -> None:
    assert callback is not None and (callback.__doc__ or "").strip(), f"{name} has no help text"
    result = runner.invoke(app, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"benchsvc {name}" in readme, f"README.md does not mention `benchsvc {name}`"


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from benchsvc.cli.app import app; "
        "print(','.join(m for m in ('pandas', 'sqlalchemy', 'altair', 'pyperf', 'alembic', 'numpy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_versions_json_lists_the_registry():
    result = runner.invoke(app, ["versions", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    sim = [r for r in rows if r["engine"] == "sim"]
    assert [r["id"] for r in sim] == version_ids()
    ids = {r["id"] for r in sim}
    for r in sim:
        assert r["parent"] == "" or r["parent"] in ids
        assert r["title"] and r["source"]
    # then the live kernel, one version named after uname -r, with whether it can serve here
    (kernel,) = [r for r in rows if r["engine"] == "kernel"]
    assert rows[-1] == kernel
    assert kernel["id"] == f"kernel-{os.uname().release}" and kernel["parent"] == ""
    reason = unavailable_reason()
    assert kernel["title"].endswith("usable here" if reason is None else f"not usable here: {reason}")


def test_simulate_json_single_version_is_an_object():
    result = runner.invoke(app, ["simulate", "a-munmap-aligned", "--version", "up612", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"workload", "version", "counters", "modeled_ns", "cost_model"}
    assert doc["workload"] == "a-munmap-aligned" and doc["version"] == "up612"
    assert list(doc["counters"]) == list(COUNTER_NAMES)
    assert all(isinstance(v, int) for v in doc["counters"].values())
    assert isinstance(doc["modeled_ns"], float)
    # (a) for up612 at 64 MiB of 64 KiB folios: one rmap call per folio, no queueing
    assert doc["counters"]["rmap_calls"] == 64 * 1024 // 64
    assert doc["counters"]["ds_adds"] == 0


def test_simulate_json_all_versions_is_a_list_in_lineage_order():
    path = ROOT / "workloads" / "c-straddle-munmap.toml"
    result = runner.invoke(app, ["simulate", str(path), "--version", "all", "--json"])
    assert result.exit_code == 0, result.output
    docs = json.loads(result.stdout)
    assert [d["version"] for d in docs] == version_ids()


def test_simulate_version_comma_list_and_repeat():
    result = runner.invoke(app, ["simulate", "a-munmap-aligned", "-V", "v1,v2", "-V", "up69", "--json"])
    assert result.exit_code == 0, result.output
    assert [d["version"] for d in json.loads(result.stdout)] == ["v1", "v2", "up69"]


def test_simulate_table_shows_every_counter():
    result = runner.invoke(app, ["simulate", "a-munmap-aligned", "-V", "base65"])
    assert result.exit_code == 0, result.output
    for name in (*COUNTER_NAMES, "modeled_ns"):
        assert name in result.stdout


def test_cost_file_overrides_coefficients(tmp_path: Path):
    cost = tmp_path / "cost.toml"
    zeros = [f"{n} = 0" for n in COUNTER_NAMES if n != "tlb_flushes"]
    cost.write_text("\n".join([*zeros, "tlb_flushes = 1000", ""]))
    result = runner.invoke(app, ["simulate", "a-munmap-aligned", "-V", "v2", "--json", "--cost", str(cost)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["modeled_ns"] == 1000.0 * doc["counters"]["tlb_flushes"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,pattern",
    [
        (["simulate", "no-such-workload"], r"^Error: no workload named 'no-such-workload'"),
        (
            ["simulate", "a-munmap-aligned", "--version", "v9"],
            r"^Error: unknown version 'v9' \(known: base65,",
        ),
        (
            ["simulate", "a-munmap-aligned", "--cost", "/nonexistent.toml"],
            r"^Error: /nonexistent.toml: no such file",
        ),
    ],
)
def test_user_errors_are_one_line_exit_1(args: list[str], pattern: str):
    proc = _cli(*args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.match(pattern, lines[0]), lines[0]


def test_bad_cost_key_is_named(tmp_path: Path):
    cost = tmp_path / "c.toml"
    cost.write_text("tlb_flush = 3\n")
    proc = _cli("simulate", "a-munmap-aligned", "--cost", str(cost))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"Error: {cost}: tlb_flush: not a counter name (see benchsvc simulate --json)"
    )


def test_workloads_list_and_show():
    result = runner.invoke(app, ["workloads", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    names = [r["name"] for r in json.loads(result.stdout)]
    assert names == sorted(p.stem for p in (ROOT / "workloads").glob("*.toml"))
    result = runner.invoke(app, ["workloads", "list", "--tag", "canonical", "--format", "csv"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("name,size,folios")
    shown = runner.invoke(app, ["workloads", "show", "c-straddle-munmap"])
    assert shown.exit_code == 0
    assert 'va_offset = "32KiB"' in shown.stdout
