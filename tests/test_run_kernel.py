"""``benchsvc run --engine kernel|all``: the live kernel as an engine under pyperf (issue 7, docs/design.md#engines).

The live tests run the CLI as a subprocess with real pyperf workers, a real SQLite file and the real kernel,
and skip with :func:`benchsvc.kernel.unavailable_reason` where it cannot serve. Expected counters come from
docs/kernel-history.md#per-size-mthp-stats, (a), (b), (f): the stat deltas a layout of N folios must give, never from a previous run.
Every live test checks that every ``enabled`` value in sysfs is back as it was. Planning (which workloads
the kernel can take, what a kernel that cannot serve does to the plan) is tested without a kernel.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_run import Bench, _env, _one_error_line

from benchsvc.kernel import (
    STORED_COUNTERS,
    enabled_snapshot,
    settled_snapshot,
    unavailable_reason,
    version_id,
)
from benchsvc.kernel.trace import trace_unavailable_reason
from benchsvc.kernel.worker import TEST_HOOK_ENV
from benchsvc.runner.matrix import MODES, MatrixItem, RunError, measure, plan_engines, pyperf_args
from benchsvc.workload import resolve

KIB, MIB = 1024, 1024 * 1024
REASON = unavailable_reason() or trace_unavailable_reason()
live = pytest.mark.skipif(
    REASON is not None, reason=f"live kernel (or its tracepoints) unavailable: {REASON}"
)
KERNEL = version_id()
FOLIOS_64M_64K = 64 * MIB // (64 * KIB)  # the 64 MiB regions of 64 KiB folios of (a), (b), (f)


@pytest.fixture
def sysfs_unchanged() -> Iterator[dict[str, str]]:
    before = settled_snapshot()
    yield before
    assert settled_snapshot() == before, "per-size mTHP sysfs values were not restored"


def _kernel_results(bench: Bench, run_id: int = 1) -> dict[str, dict[str, object]]:
    return {r["workload"]: r for r in bench.results(run_id) if r["engine"] == "kernel"}


# ------------------------------------------------------------------------------------------- planning
def test_plan_all_puts_the_kernel_after_each_workloads_versions_and_notes_what_it_cannot_express(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchsvc.kernel

    monkeypatch.setattr(benchsvc.kernel, "unavailable_reason", lambda size: None)
    specs = [resolve("a-munmap-aligned"), resolve("exit-mixed"), resolve("g-pte-mapped-thp")]
    items, notes = plan_engines(specs, ["v4", "up612"], "all")
    assert [(i.engine, i.version, i.spec.name) for i in items] == [
        ("sim", "v4", "a-munmap-aligned"),
        ("sim", "up612", "a-munmap-aligned"),
        ("kernel", KERNEL, "a-munmap-aligned"),
        ("sim", "v4", "exit-mixed"),
        ("sim", "up612", "exit-mixed"),
        ("sim", "v4", "g-pte-mapped-thp"),
        ("sim", "up612", "g-pte-mapped-thp"),
        ("kernel", KERNEL, "g-pte-mapped-thp"),
    ]
    (note,) = notes
    assert note.startswith("kernel: exit-mixed left out, not expressible on the kernel: a shuffled mix")
    items, _ = plan_engines(specs, ["v4", "up612"], "kernel")
    assert [(i.engine, i.spec.name) for i in items] == [
        ("kernel", "a-munmap-aligned"),
        ("kernel", "g-pte-mapped-thp"),
    ]


def test_plan_without_a_kernel_skips_it_with_all_and_refuses_kernel_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchsvc.kernel

    monkeypatch.setattr(
        benchsvc.kernel, "unavailable_reason", lambda size: f"not root (test, {size // KIB}kB)"
    )
    specs = [resolve("a-munmap-aligned"), resolve("f-fork-child-munmap")]
    items, notes = plan_engines(specs, ["up612"], "all")
    assert [(i.engine, i.spec.name) for i in items] == [
        ("sim", "a-munmap-aligned"),
        ("sim", "f-fork-child-munmap"),
    ]
    assert notes == [
        "kernel: the live kernel cannot be used for a-munmap-aligned, f-fork-child-munmap: not root (test, 64kB)"
    ]
    with pytest.raises(RunError, match=r"no workload can run on the live kernel here:\n  kernel: .*not root"):
        plan_engines(specs, ["up612"], "kernel")
    with pytest.raises(RunError, match="unknown engine 'qemu'"):
        plan_engines(specs, ["up612"], "qemu")


def test_kernel_results_loop_a_fixed_number_of_times_instead_of_calibrating_to_min_time() -> None:
    # every kernel loop rebuilds a real region, so --min-time calibration (100+ loops) is replaced by --loops
    assert pyperf_args("default", "kernel") == (*MODES["default"][:-2], "--loops", "4")
    assert "--min-time" not in pyperf_args("rigorous", "kernel")
    assert pyperf_args("rigorous", "kernel")[-2:] == ("--loops", "8")
    for mode in MODES:
        assert pyperf_args(mode, "sim") == MODES[mode]
    assert pyperf_args("quick", "kernel") == MODES["quick"]  # already one loop per value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--engine", "qemu"], "unknown engine 'qemu' (one of: sim, kernel, all)"),
        (["--engine", "kernel", "-V", "up612"], "--versions selects simulated versions"),
        (["--engine", "kernel", "-w", "exit-mixed"], "no workload can run on the live kernel here"),
    ],
    ids=["unknown-engine", "kernel-with-versions", "kernel-nothing-expressible"],
)
def test_engine_errors_are_one_line_and_start_no_run(bench: Bench, args: list[str], message: str) -> None:
    line = _one_error_line(bench.cli("run", "--mode", "debug", *args))
    assert message in line
    if bench.db.exists():
        assert bench.query("SELECT count(*) FROM runs") == [(0,)]


# ------------------------------------------------------------------------------------------- live kernel
@pytest.mark.kernel
@live
def test_run_engine_kernel_stores_the_stat_deltas_under_the_kernel_version(
    bench: Bench, sysfs_unchanged: dict[str, str]
) -> None:
    cp = bench.cli(
        "run", "--engine", "kernel", "--quick", "-w", "a-munmap-aligned", "-w", "b-dontneed-first-page"
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "run 1 complete: 2 ok, 0 failed" in cp.stdout
    got = _kernel_results(bench)
    assert set(got) == {"a-munmap-aligned", "b-dontneed-first-page"}
    n = FOLIOS_64M_64K
    # (a): every folio unmapped whole and freed -> nothing queued, nothing left partially mapped; one munmap,
    # fewer page+nr entries than the gather holds -> one TLB flush (the tracepoint counters, engine names)
    assert got["a-munmap-aligned"]["counters"] == {
        "split_deferred": 0,
        "partially_mapped_after": 0,
        "nr_anon": -n,
        "anon_fault_alloc": n,
        "tlb_flushes": 1,
        "folios_freed": n,
        "pages_freed": n * 16,
    }
    # (b): the first page of every folio dropped -> every folio queued and partially mapped; one MADV_DONTNEED
    # call (and flush) per folio, nothing freed
    assert got["b-dontneed-first-page"]["counters"] == {
        "split_deferred": n,
        "partially_mapped_after": n,
        "nr_anon": 0,
        "anon_fault_alloc": n,
        "tlb_flushes": n,
        "folios_freed": 0,
        "pages_freed": 0,
    }
    for r in got.values():
        assert r["version"] == KERNEL == f"kernel-{os.uname().release}"
        assert r["status"] == "ok" and r["error"] is None
        assert r["modeled_ns"] is None  # the kernel has no cost model
        assert set(r["counters"]) == set(STORED_COUNTERS)
        # quick mode: 2 worker processes x 4 values, each the time of the measured zap calls
        assert [len(s["values"]) for s in r["samples"]] == [4, 4]
        assert all(v > 0 for s in r["samples"] for v in s["values"])
        meta = r["metadata"]
        assert meta["benchsvc_engine"] == "kernel"
        assert meta["benchsvc_kernel_release"] == os.uname().release
        # what was changed for the run, and (checked by the fixture) put back after it
        was = sysfs_unchanged["hugepages-64kB/enabled"]
        if was != "madvise":
            assert f"hugepages-64kB/enabled: {was} -> madvise" in meta["kernel_sysfs_changes"]
        else:
            assert "hugepages-64kB" not in meta["kernel_sysfs_changes"]
    (version,) = bench.query("SELECT id, engine, parent FROM versions WHERE engine = 'kernel'")
    assert version == (KERNEL, "kernel", None)  # not a step of the patch lineage


@pytest.mark.kernel
@live
def test_run_engine_all_measures_sim_and_kernel_side_by_side(bench: Bench, sysfs_unchanged: object) -> None:
    cp = bench.cli(
        "run",
        "--engine",
        "all",
        "--mode",
        "debug",
        "-V",
        "up612",
        "-w",
        "f-fork-child-munmap",
        "-w",
        "exit-mixed",
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "note: kernel: exit-mixed left out, not expressible on the kernel" in cp.stderr
    assert [(k[0], k[1], k[2]) for k in bench.plan_keys(1)] == [
        ("sim", "up612", "f-fork-child-munmap"),
        ("kernel", KERNEL, "f-fork-child-munmap"),
        ("sim", "up612", "exit-mixed"),
    ]
    results = {(r["engine"], r["workload"]): r for r in bench.results(1)}
    sim, kern = results[("sim", "f-fork-child-munmap")], results[("kernel", "f-fork-child-munmap")]
    # (f): the parent keeps every folio mapped, so the child's munmap queues and frees nothing
    assert sim["counters"]["split_deferred"] == kern["counters"]["split_deferred"] == 0
    assert sim["counters"]["partially_mapped_after"] == kern["counters"]["partially_mapped_after"] == 0
    for name in ("tlb_flushes", "folios_freed", "pages_freed"):  # the tracepoint counters, row by row
        assert sim["counters"][name] == kern["counters"][name], name
    assert kern["counters"]["nr_anon"] == 0
    assert kern["counters"]["anon_fault_alloc"] == FOLIOS_64M_64K
    shown = json.loads(bench.cli("show", "1", "--format", "json").stdout)["results"]
    assert {(r["engine"], r["version"]) for r in shown} == {("sim", "up612"), ("kernel", KERNEL)}


@pytest.mark.kernel
@live
def test_failure_injected_in_a_kernel_worker_is_recorded_and_sysfs_restored(
    bench: Bench, sysfs_unchanged: object
) -> None:
    env = _env(**{TEST_HOOK_ENV: "fail-bench:populate"})
    cp = bench.cli("run", "--engine", "kernel", "--mode", "debug", "-w", "a-munmap-aligned", env=env)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert "run 1 failed: 0 ok, 1 failed" in cp.stdout
    (r,) = bench.results(1)
    assert r["status"] == "failed"
    assert "kernel run failed: RuntimeError: injected failure after population" in r["error"]
    # the counter run (before pyperf) did finish: its counters are kept with the failed result
    assert r["counters"]["anon_fault_alloc"] == FOLIOS_64M_64K


@pytest.mark.kernel
@live
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_in_the_middle_of_a_kernel_pyperf_run_restores_sysfs_and_resume_finishes_it(
    bench: Bench, tmp_path: Path, sig: int, sysfs_unchanged: dict[str, str]
) -> None:
    paused = tmp_path / "paused"
    env = _env(**{TEST_HOOK_ENV: f"pause-bench:{paused}"})
    proc = bench.spawn("run", "--engine", "kernel", "--mode", "debug", "-w", "a-munmap-aligned", env=env)
    # the hook creates the file, then writes its pid: wait for the pid
    bench.poll(lambda: paused.exists() and paused.read_text() != "", "a pyperf worker to pause", proc=proc)
    worker_pid = int(paused.read_text())
    during = enabled_snapshot()
    assert during["hugepages-64kB/enabled"] == "madvise"  # changed while the kernel was measured ...
    assert during["hugepages-2048kB/enabled"] == "never"
    os.kill(proc.pid, sig)
    rc, _, err = bench.finish(proc)
    assert rc == 130, err
    assert "interrupted: the run is marked interrupted" in err
    assert settled_snapshot() == sysfs_unchanged  # ... and put back by the interrupted run
    assert bench.runs()[1]["status"] == "interrupted"
    deadline = time.monotonic() + 10
    while _alive(worker_pid):  # the paused pyperf worker dies with its master (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, f"pyperf worker {worker_pid} outlived the interrupted run"
        time.sleep(0.05)
    cp = bench.cli("run", "--resume")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    (r,) = bench.results(1)
    assert (r["engine"], r["version"], r["status"]) == ("kernel", KERNEL, "ok")
    assert bench.runs()[1]["status"] == "complete"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.kernel
@live
def test_layout_not_reproduced_fails_the_result_instead_of_comparing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sysfs_unchanged: dict[str, str]
) -> None:
    from benchsvc.kernel import MthpSettings

    # leave hugepages-64kB as it is (never here): the kernel falls back to 4 KiB pages
    if sysfs_unchanged["hugepages-64kB/enabled"] != "never":
        pytest.skip("hugepages-64kB is not 'never' on this machine, so the layout would be reproduced")
    monkeypatch.setattr(MthpSettings, "plan", lambda self: [])
    record = measure(MatrixItem("kernel", KERNEL, resolve("a-munmap-aligned")), "debug", tmp_path)
    assert record.status == "failed"
    assert record.error is not None
    assert "did not reproduce the layout: anon_fault_alloc expected 1024, got 0" in record.error
    assert record.counters == {} and not record.processes  # nothing measured from another layout
