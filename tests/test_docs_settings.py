"""The documentation and ``run --help`` say what the code does: the mode tables of README, docs/running.md
and docs/measurement.md against the runner's settings, and the shipped matrix's size against the shipped
workloads and versions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchsvc.cli.app import app
from benchsvc.engine.versions import version_ids
from benchsvc.runner.blocks import CONFIRM_PROCESSES, SAMPLING, supports_timing_inference
from benchsvc.runner.matrix import CONFIRMING_MODES, pyperf_args
from benchsvc.workload import OPT_IN_TAGS, discover, load_workload

ROOT = Path(__file__).resolve().parent.parent
ROW_NAMES = {
    "quick": "`--quick`",
    "default": "default",
    "rigorous": "`--rigorous`",
    "debug": "`--mode debug`",
}


def _table_row(text: str, first_cell: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r}")


@pytest.mark.parametrize("mode", ["quick", "default", "rigorous", "debug"])
def test_running_md_mode_table(mode: str) -> None:
    s = SAMPLING[mode]
    cells = _table_row((ROOT / "docs/running.md").read_text(), ROW_NAMES[mode])
    sampling, values, pyperf_options = cells[1], cells[2], cells[3]
    if mode == "debug":
        assert sampling.startswith(f"{s.processes} process × {s.values} value, {s.loops} zap call")
    else:
        assert sampling.startswith(
            f"{s.processes} processes × {s.values} values (+{s.warmups} warmup), {s.loops} zap calls per value; "
            f"{_confirmation(mode)}"
        )
    assert ("too few for timing intervals" in sampling) == (not supports_timing_inference(mode))
    assert int(values) == s.processes * s.values
    assert pyperf_options == f"`{' '.join(pyperf_args(mode, 'kernel'))}`"


@pytest.mark.parametrize("mode", ["quick", "default", "rigorous", "debug"])
def test_measurement_md_sampling_table(mode: str) -> None:
    s = SAMPLING[mode]
    cells = _table_row((ROOT / "docs/measurement.md").read_text(), ROW_NAMES[mode])
    confirm = str(CONFIRM_PROCESSES[mode]) if mode in CONFIRMING_MODES else "(none)"
    assert cells[1:6] == [str(s.processes), str(s.values), str(s.warmups), str(s.loops), confirm]


@pytest.mark.parametrize("mode", ["quick", "default", "rigorous"])
def test_readme_mode_table(mode: str) -> None:
    s = SAMPLING[mode]
    cells = _table_row((ROOT / "README.md").read_text(), ROW_NAMES[mode])
    assert cells[1] == (
        f"{s.processes} processes × {s.values} values × {s.loops} zap calls; {_confirmation(mode)}"
    )


def _confirmation(mode: str) -> str:
    """What the docs say of a mode's confirmation re-measurement (runner.matrix.CONFIRMING_MODES)."""
    return (
        f"{CONFIRM_PROCESSES[mode]} confirmation processes" if mode in CONFIRMING_MODES else "no confirmation"
    )


def test_run_help_describes_the_modes_from_the_settings() -> None:
    out = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400", "TERM": "dumb"}).output
    flat = " ".join(out.split())
    for mode in ("quick", "default", "rigorous", "debug"):
        s = SAMPLING[mode]
        assert f"{s.processes} worker processes x {s.values} values x {s.loops} zap calls per value" in flat
    assert "2 processes x 4 values" not in flat and "pyperf --rigorous." not in flat
    # a confirmation re-measurement is promised for the modes that make one, and no other
    assert flat.count("more processes to confirm a suspected timing change") == len(CONFIRMING_MODES)
    assert "machine" in flat.split("--wait", 1)[1][:200]  # the lock --wait waits for is the machine's


def test_the_shipped_matrix_size_is_stated_as_it_is() -> None:
    default = [s for s in (load_workload(p) for p in discover()) if not set(OPT_IN_TAGS) & set(s.tags)]
    workloads, versions = len(default), len(version_ids())
    stated = re.compile(r"shipped matrix \((\d+) workloads × (\d+) versions = (\d+) results")
    found = stated.findall((ROOT / "docs/running.md").read_text())
    assert found == [(str(workloads), str(versions), str(workloads * versions))]


def test_no_doc_calls_the_paired_interval_a_bootstrap() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "95% bootstrap interval" not in path.read_text(), path.name
