"""One pyperf file, two paths: what the runner stores from its worker's file and what ``benchsvc import``
stores from the same file are the same values (benchsvc/store/pyperf_adapter.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchsvc.records import EngineKind, ResultRecord
from benchsvc.runner.matrix import MODES, MatrixItem, run_pyperf
from benchsvc.store.exchange import read_import_file
from benchsvc.store.pyperf_adapter import load_timings
from benchsvc.workload import resolve

WORKLOAD = "a-munmap-aligned"


def _imported(path: Path) -> ResultRecord:
    batch = read_import_file(path)
    [group] = batch.runs
    [result] = group.results
    return result


def _option(mode: str, name: str) -> int:
    args = MODES[mode]
    return int(args[args.index(name) + 1])


@pytest.fixture(scope="module")
def worker_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple]:  # type: ignore[type-arg]
    """A real pyperf worker run of the quick mode, and what the runner made of it."""
    workdir = tmp_path_factory.mktemp("worker")
    stored = run_pyperf(MatrixItem(EngineKind.SIM, "v1", resolve(WORKLOAD)), "quick", workdir)
    [path] = workdir.rglob("result.json")
    return path, stored


def test_the_runner_and_import_store_the_same_values(worker_file: tuple) -> None:  # type: ignore[type-arg]
    path, (processes, warnings, metadata) = worker_file
    # what the quick mode asks pyperf for: processes, values and warmups per process, loops per value
    assert len(processes) == _option("quick", "--processes")
    for p in processes:
        assert len(p.values) == _option("quick", "--values")
        assert len(p.warmups) == _option("quick", "--warmups")
        assert p.loops == _option("quick", "--loops")
        assert "date" in p.metadata  # each process keeps when it ran
    assert metadata["benchsvc_zap_version"] == "v1" and metadata["benchsvc_workload"] == WORKLOAD

    imported = _imported(path)
    assert imported.processes == processes
    assert imported.pyperf_metadata == metadata
    assert imported.warnings == warnings


def test_inner_loops_and_non_finite_metadata_are_read_alike(
    worker_file: tuple,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    """A file with ``inner_loops`` and a NaN and an infinity in its metadata: both paths store the total
    loops (loops × inner_loops) and drop the non-finite values, at the benchmark's and at a run's level."""
    source, _ = worker_file
    doc = json.loads(source.read_text())
    inner = 3
    bench = doc["benchmarks"][0]
    bench.setdefault("metadata", {})["benchsvc_noise"] = float("nan")
    for run in bench["runs"]:
        run.setdefault("metadata", {})["inner_loops"] = inner
    bench["runs"][-1]["metadata"]["benchsvc_spike"] = float("inf")
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(doc))  # Python's json writes NaN and Infinity, as pyperf's files may hold

    runner = load_timings(path)
    imported = _imported(path)
    assert imported.processes == runner.processes
    assert imported.pyperf_metadata == runner.metadata
    assert imported.warnings == runner.warnings
    assert [p.loops for p in runner.processes] == [_option("quick", "--loops") * inner] * len(
        runner.processes
    )
    assert "benchsvc_noise" not in runner.metadata
    assert runner.metadata["inner_loops"] == inner
    for p in runner.processes:
        assert "benchsvc_spike" not in p.metadata
        assert all(not isinstance(v, float) or math.isfinite(v) for v in p.metadata.values())
