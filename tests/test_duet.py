"""``benchsvc run --pairing duet``: a version and its parent measured at the same moment on two pinned CPUs.

Real CLI runs (subprocess) into a real SQLite file; what is checked is what the stored data shows: the
per-process metadata (CPU of every trial, block, side, start and end), the blocks the two results of an edge
share, the lineage analysis pairing them, the canary. Timings are never asserted on. Also: the refusal where
fewer than two CPUs are usable, the pairing of results that share only some blocks, the edges chosen for a
selection, and appended (confirmation) processes numbered after the stored ones (SQLite and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchsvc.analysis.lineage import compare_lineage, paired_log_ratios
from benchsvc.records import ProcessValues
from benchsvc.runner.blocks import SAMPLING, duet_edges
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.queries import run_results, run_samples

W = "a-munmap-aligned"
TWO_CPUS = len(os.sched_getaffinity(0)) >= 2
needs_two_cpus = pytest.mark.skipif(not TWO_CPUS, reason="a duet needs two usable CPUs")


def _stored(db: Path, run_id: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's results and raw values, read through the store API."""
    engine = open_store(str(db))
    try:
        with read_session(engine) as s:
            return run_results(s, run_id), run_samples(s, run_id)
    finally:
        engine.dispose()


def _metas(bench: Any) -> list[tuple[str, str, int, dict[str, Any]]]:
    """(engine, version, stored process, metadata) of every stored process."""
    rows = bench.query(
        "SELECT r.engine, r.version_id, s.process, s.meta FROM samples s JOIN results r ON s.result_id = r.id"
    )
    return [(e, v, p, json.loads(m)) for e, v, p, m in rows]


@needs_two_cpus
def test_duet_run_pins_the_two_sides_apart_swaps_them_and_pairs_each_edge(bench: Any) -> None:
    cp = bench.cli("run", "-w", W, "-V", "v2,v3,v4", "--quick", "--pairing", "duet", "--no-report")
    assert cp.returncode == 0, cp.stderr
    settings = json.loads(bench.query("SELECT pyperf_settings FROM runs")[0][0])
    assert settings["measurement"] == "duet"
    sampling = SAMPLING["quick"]

    metas = _metas(bench)
    assert {m["benchsvc_measurement"] for *_, m in metas} == {"duet"}
    sims = [(v, m) for e, v, _, m in metas if e == "sim" and m["benchsvc_phase"] == "primary"]
    by_block: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for v, m in sims:
        by_block.setdefault(m["benchsvc_block"], []).append((v, m))
    # one block per (edge, process): the edges v3/v2 and v4/v3, each in every worker process
    assert len(by_block) == 2 * sampling.processes
    edges = sorted(tuple(sorted(v for v, _ in sides)) for sides in by_block.values())
    assert edges == sorted([("v2", "v3")] * sampling.processes + [("v3", "v4")] * sampling.processes)
    for sides in by_block.values():
        (_, a), (_, b) = sides
        assert {a["benchsvc_side"], b["benchsvc_side"]} == {0, 1}
        assert a["benchsvc_process"] == b["benchsvc_process"]
        cpus_a = [int(c) for c in a["benchsvc_cpus"].split(",")]
        cpus_b = [int(c) for c in b["benchsvc_cpus"].split(",")]
        assert len(cpus_a) == len(cpus_b) == sampling.values
        # every trial on two different CPUs, and each side on the other CPU in the next trial
        assert all(x != y for x, y in zip(cpus_a, cpus_b, strict=True))
        assert all(x != y for x, y in itertools.pairwise(cpus_a))
        assert set(cpus_a) == set(cpus_b) and len(set(cpus_a)) == 2
        assert set(cpus_a) <= os.sched_getaffinity(0)
        # measured at the same moment: the two sides' spans overlap, and they are two processes
        start_a, end_a = (dt.datetime.fromisoformat(a[k]) for k in ("benchsvc_started", "benchsvc_ended"))
        start_b, end_b = (dt.datetime.fromisoformat(b[k]) for k in ("benchsvc_started", "benchsvc_ended"))
        assert start_a < end_b and start_b < end_a
        assert a["benchsvc_pid"] != b["benchsvc_pid"]

    results, samples = _stored(bench.db)
    primary = samples[samples["phase"] == "primary"]  # a confirmation may have added processes
    blocks = {v: set(primary[primary["version"] == v]["block"]) for v in ("v2", "v3", "v4")}
    assert len(blocks["v3"]) == 2 * sampling.processes  # v3 is in two edges
    assert len(blocks["v3"] & blocks["v2"]) == len(blocks["v3"] & blocks["v4"]) == sampling.processes
    assert not blocks["v2"] & blocks["v4"]
    timing = compare_lineage(results, samples, metrics=["time"]).set_index("version")
    assert set(timing.index) == {"v3", "v4"}
    assert timing["paired"].tolist() == [True, True]
    assert (timing["baseline"].to_dict()) == {"v3": "v2", "v4": "v3"}

    canary = primary[primary["engine"] == "canary"]
    assert not canary.empty and (canary["value_s"] > 0).all()
    # each side of each edge timed the canary in every trial of every process
    assert canary.groupby("result_id")["process"].nunique().tolist() == [2 * 2 * sampling.processes]
    shown = bench.cli("show")
    assert shown.returncode == 0, shown.stderr
    # a quick run: the canary's spread, and no A/A interval (its sampling supports none)
    assert "noise floor: quick mode: no timing intervals" in shown.stdout and "canary spread" in shown.stdout


@needs_two_cpus
def test_a_failing_version_in_a_duet_fails_alone(bench: Any) -> None:
    from test_run import _env

    env = _env(BENCHSVC_TEST_FAIL_WORKER=f"v3/{W}")
    cp = bench.cli("run", "-w", W, "-V", "v2,v3,v4", "--mode", "debug", "--pairing", "duet", env=env)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    status = dict(bench.query("SELECT version_id, status FROM results WHERE engine = 'sim'"))
    assert status == {"v2": "ok", "v3": "failed", "v4": "ok"}
    (error,) = bench.query("SELECT error FROM results WHERE version_id = 'v3'")[0]
    assert f"injected failure for v3/{W}" in error
    alone = [m for e, v, _, m in _metas(bench) if e == "sim"]
    assert {m.get("benchsvc_edge") for m in alone} == {"v2", "v4"}  # measured alone after the failure


@pytest.mark.parametrize("how", ["taskset", "affinity"])
def test_duet_on_one_cpu_is_refused_in_one_line(bench: Any, how: str) -> None:
    import shutil
    import subprocess
    import sys

    from test_run import _env

    cpu = min(os.sched_getaffinity(0))
    args = ["run", "-w", W, "--mode", "debug", "--pairing", "duet", "--db", str(bench.db)]
    if how == "taskset":
        if shutil.which("taskset") is None:
            pytest.skip("no taskset here")
        cmd = ["taskset", "-c", str(cpu), sys.executable, "-m", "benchsvc", *args]
        preexec = None
    else:
        cmd = [sys.executable, "-m", "benchsvc", *args]

        def preexec() -> None:
            os.sched_setaffinity(0, {cpu})

    cp = subprocess.run(
        cmd, cwd=bench.dir, env=_env(), capture_output=True, text=True, timeout=60, preexec_fn=preexec
    )
    assert cp.returncode == 1
    lines = cp.stderr.strip().splitlines()
    assert len(lines) == 1, cp.stderr
    assert lines[0].startswith("Error: --pairing duet needs two CPUs"), lines[0]
    assert f"may use 1 CPU ({cpu})" in lines[0] and "--pairing interleaved" in lines[0]
    assert cp.stdout == ""
    assert not bench.db.exists()  # refused before anything was written


def test_unknown_pairing_is_refused_in_one_line(bench: Any) -> None:
    cp = bench.cli("run", "-w", W, "--mode", "debug", "--pairing", "triplet")
    assert cp.returncode == 1
    assert cp.stderr.strip().splitlines() == ["Error: unknown pairing 'triplet' (one of: interleaved, duet)"]


# --- the pieces, without worker processes ---


def _samples(
    blocks: list[tuple[str, int]], values: list[list[float]], process_offset: int = 0
) -> pd.DataFrame:
    """Samples of one result: for each (block, process in block) its values; stored process numbers follow
    the result's own order (from ``process_offset``), as a duet result's do."""
    rows = []
    for i, ((block, bp), vals) in enumerate(zip(blocks, values, strict=True)):
        for j, v in enumerate(vals):
            rows.append(
                {
                    "block": block,
                    "block_process": bp,
                    "process": process_offset + i,
                    "value_index": j,
                    "value_s": v,
                }
            )
    return pd.DataFrame(rows)


def test_paired_on_the_blocks_two_results_share() -> None:
    # v3 in edges v3/v2 (blocks e1, e2, e3) and v4/v3 (f1, f2, f3); v2 in v2/v1 (g1, g2) and v3/v2
    v3 = _samples(
        [("e1", 0), ("e2", 1), ("e3", 2), ("f1", 0), ("f2", 1), ("f3", 2)],
        [[1.0, 1.1], [1.2, 1.3], [1.0, 1.0], [5.0, 5.0], [5.0, 5.0], [5.0, 5.0]],
    )
    v2 = _samples(
        [("g1", 0), ("g2", 1), ("e1", 0), ("e2", 1), ("e3", 2)],
        [[9.0, 9.0], [9.0, 9.0], [2.0, 2.2], [2.4, 2.6], [2.0, 2.0]],
    )
    d = paired_log_ratios(v3, v2)
    assert d is not None and len(d) == 3  # the three shared blocks only
    assert np.allclose(d, np.log(0.5))  # each v3 value is half its partner's; g* and f* play no part

    # one shared block of several: not enough to pair
    one = _samples([("e1", 0), ("h1", 0)], [[2.0, 2.2], [1.0, 1.0]])
    assert paired_log_ratios(v3, one) is None
    # none shared: not paired (the comparison falls back to unpaired)
    assert paired_log_ratios(v3, _samples([("x", 0), ("y", 1)], [[1.0], [1.0]])) is None


def test_interleaved_pairing_is_unchanged() -> None:
    # interleaved: one block, both results hold all of its processes; a single process still pairs
    a = _samples([("b", 0)], [[1.0, 2.0, 3.0]])
    b = _samples([("b", 0)], [[2.0, 2.0, 2.0]])
    d = paired_log_ratios(a, b)
    assert d is not None and np.allclose(d, [np.median(np.log([0.5, 1.0, 1.5]))])
    # without the block_process column (older frames) the stored process number is the unit
    d2 = paired_log_ratios(a.drop(columns="block_process"), b.drop(columns="block_process"))
    assert d2 is not None and np.allclose(d2, d)
    # a version with a process the other lacks, sharing only one: not paired, as before
    a2 = _samples([("b", 0), ("b", 1)], [[1.0], [1.0]])
    assert paired_log_ratios(a2, b) is None


def test_duet_edges_of_a_selection() -> None:
    from benchsvc.engine.versions import get_version, version_ids

    every = duet_edges(version_ids())
    assert all(len(e) == 2 and get_version(e[0]).parent == e[1] for e in every)
    assert {v for e in every for v in e} == set(version_ids())
    assert ("v3", "v2") in every and ("v4", "v3") in every
    # no parent in the selection: paired with the neighbour in the selection; alone when it is the only one
    assert duet_edges(["v1", "up69"]) == [("v1", "up69")]
    assert duet_edges(["v2", "v3", "up610"]) == [("v3", "v2"), ("up610", "v3")]
    assert duet_edges(["v2"]) == [("v2",)]


def test_appended_processes_are_numbered_after_the_stored_ones(store_url: str) -> None:
    from test_store import run_record, sim_result

    from benchsvc.store.ingest import add_processes, add_result, create_run
    from benchsvc.store.models import Run

    meta = {"benchsvc_block": "e1", "benchsvc_process": 0, "benchsvc_phase": "primary"}
    pvs = tuple(ProcessValues((1e-3, 2e-3), (), 1, {**meta, "benchsvc_block": f"e{i}"}) for i in range(5))
    engine = open_store(store_url)
    try:
        with write_session(engine) as s:
            run = create_run(s, run_record())
            run_id = run.id
            result = add_result(s, s.get(Run, run_id), sim_result(W, "v3", processes=pvs))
            rid = result.id
        confirm = {**meta, "benchsvc_block": "c1", "benchsvc_process": 6, "benchsvc_phase": "confirm"}
        with write_session(engine) as s:
            add_processes(s, rid, [ProcessValues((3e-3,), (), 1, confirm)] * 2)
        with read_session(engine) as s:
            samples = run_samples(s, run_id)
    finally:
        engine.dispose()
    per_process = samples.groupby("process").first()
    assert per_process.index.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert per_process["phase"].tolist() == ["primary"] * 5 + ["confirm"] * 2
    assert per_process["block"].tolist() == ["e0", "e1", "e2", "e3", "e4", "c1", "c1"]
    assert per_process["block_process"].tolist() == [0] * 5 + [6, 6]


@needs_two_cpus
def test_resume_finishes_a_duet_run_as_a_duet(bench: Any) -> None:
    import signal

    proc = bench.spawn(
        "run", "-w", W, "-w", "c-straddle-munmap", "-V", "v2,v3", "--quick", "--pairing", "duet"
    )
    bench.poll(lambda: bench.result_count(1) >= 1, "a committed result", proc=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    bench.kill_group(proc)  # the orphaned duet driver and its children
    if bench.result_count(1) != 2:
        pytest.fail("expected the kill in the middle of the run")
    refused = bench.cli("run", "--resume", "--pairing", "interleaved")
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("Error: --pairing is not taken with --resume")
    resumed = bench.cli("run", "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("run 1 complete: 2 ok, 0 failed, 2 already done")
    metas = _metas(bench)
    assert {m["benchsvc_measurement"] for *_, m in metas} == {"duet"}
    workloads = {
        w
        for (w,) in bench.query(
            "SELECT DISTINCT w.name FROM results r JOIN workloads w ON r.workload_id = w.id WHERE r.engine = 'sim'"
        )
    }
    assert workloads == {W, "c-straddle-munmap"}
    assert all(m["benchsvc_edge"] == "v3/v2" for e, _, _, m in metas if e == "sim")
