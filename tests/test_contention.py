"""The split-queue lock contention model (docs/contention.md): the simulation against exact MVA and the
closed-model bounds, the per-workload curves from the engine's counters, ``benchsvc scale``, and the memory
cgroups of the kernel measurement."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchsvc.analysis.contention import (
    DEFAULT_CPUS,
    STORED_NAMES,
    LockParams,
    mva,
    n_star_of,
    parse_cpus,
    scale_curve,
    simulate_lock,
    stored_metrics,
    sweep,
    throughput_bound,
    throughput_from_stored,
)
from benchsvc.cli.app import app
from benchsvc.engine import simulate
from benchsvc.errors import ScaleInputError
from benchsvc.runner.matrix import with_scale_metrics
from benchsvc.workload import resolve

runner = CliRunner(env={"COLUMNS": "200", "TERM": "dumb"})

# the textbook illustration of the closed model: think 560 ns, hold 60 ns
Z, S = 560.0, 60.0


# ------------------------------------------------------------------------------------------ exact MVA
def test_mva_by_hand_for_two_clients():
    # n = 1: R = S, X = 1/(Z+S), Q = S/(Z+S); n = 2: R = S(1 + S/(Z+S)), X = 2/(Z+R)
    q1 = S / (Z + S)
    r2 = S * (1 + q1)
    x2 = 2 / (Z + r2)
    m = mva(2, Z, S)
    assert m.response_ns[0] == pytest.approx(S)
    assert m.response_ns[1] == pytest.approx(r2)
    assert m.throughput[1] == pytest.approx(x2)
    assert m.utilisation[1] == pytest.approx(x2 * S)
    # the illustration's round numbers: about 6 ns of wait and the lock busy 19% at N = 2
    assert 5 < r2 - S < 7 and 0.18 < x2 * S < 0.20


def test_mva_respects_the_bounds_and_saturates():
    m = mva(64, Z, S)
    for n in range(1, 65):
        assert m.throughput[n - 1] <= throughput_bound(n, Z, S) * (1 + 1e-12)
    assert m.throughput[-1] == pytest.approx(1 / S, rel=1e-3)


# ------------------------------------------------------------------------------------------ simulation
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_simulation_with_exponential_holds_matches_mva(n: int) -> None:
    p = LockParams(hold_ns=S, handoff_ns=0.0, hold_dist="exponential", acquisitions=40_000)
    st = simulate_lock(n, Z, p)
    m = mva(n, Z, S)
    assert st.acquisition_rate == pytest.approx(m.throughput[n - 1], rel=0.03)
    assert st.mean_wait_ns + S == pytest.approx(m.response_ns[n - 1], rel=0.05, abs=1.0)
    assert st.utilisation == pytest.approx(m.utilisation[n - 1], rel=0.03, abs=0.005)


@pytest.mark.parametrize("hold_dist", ["deterministic", "exponential"])
@pytest.mark.parametrize("n", [1, 2, 3, 8, 12, 40, 256])
def test_simulation_respects_the_bounds(hold_dist: str, n: int) -> None:
    p = LockParams(hold_ns=S, handoff_ns=25.0, hold_dist=hold_dist, acquisitions=8000)  # type: ignore[arg-type]
    st = simulate_lock(n, Z, p)
    # the sample of a finite run may sit a little above the bound; 2% covers it
    assert st.acquisition_rate <= throughput_bound(n, Z, S) * 1.02
    assert 0.0 <= st.p_wait <= 1.0 and st.p99_wait_ns >= st.mean_wait_ns * (0.0 if n == 1 else 1.0)


def test_saturated_lock_hands_off_at_hold_plus_handoff():
    # deep saturation: the lock never idles and every acquisition pays hold + hand-off
    p = LockParams(hold_ns=S, handoff_ns=25.0, acquisitions=8000)
    st = simulate_lock(64, Z, p)
    assert st.acquisition_rate == pytest.approx(1 / (S + 25.0), rel=0.01)
    assert st.utilisation == pytest.approx(1.0, abs=0.01)
    assert st.p_wait > 0.99


def test_one_client_never_waits_and_deterministic_seeded():
    p = LockParams(hold_ns=S, handoff_ns=25.0, acquisitions=3000)
    alone = simulate_lock(1, Z, p)
    assert alone.p_wait == 0.0 and alone.mean_wait_ns == 0.0
    a = simulate_lock.__wrapped__(4, Z, p)  # type: ignore[attr-defined]  # bypass the cache
    b = simulate_lock.__wrapped__(4, Z, p)  # type: ignore[attr-defined]
    assert a == b
    c = simulate_lock.__wrapped__(4, Z, LockParams(hold_ns=S, handoff_ns=25.0, acquisitions=3000, seed=1))  # type: ignore[attr-defined]
    assert c != a


def test_shrinker_adds_wait():
    quiet = simulate_lock(2, Z, LockParams(acquisitions=20_000))
    busy = simulate_lock(2, Z, LockParams(acquisitions=20_000, shrinker=True, shrinker_period_ns=20_000.0))
    assert busy.mean_wait_ns > quiet.mean_wait_ns
    assert busy.utilisation > quiet.utilisation


# ------------------------------------------------------------------------------------------ per workload
def test_curve_from_counters_n_star_and_cost_split():
    # 1,024 acquisitions in a 1,024 us stream: Z + S = 1,000 ns per acquisition
    p = LockParams(hold_ns=40.0, handoff_ns=25.0)
    curve = scale_curve("w", "v", {"ds_lock": 1024}, (1, 2, 256), params=p, op_ns=1024 * 1000.0)
    assert curve.think_ns == pytest.approx(960.0)
    assert curve.n_star == pytest.approx(1000.0 / 65.0)
    one, two, many = curve.points
    assert one.speedup == pytest.approx(1.0) and one.added_ns_per_op == 0.0
    assert 1.9 < two.speedup < 2.0 and two.added_ns_per_op > 0
    # the ceiling: one acquisition per hold + hand-off
    assert many.throughput_ops_s == pytest.approx(1e9 / 65.0 / 1024, rel=0.02)
    assert curve.saturates_at == 256


def test_spreading_over_memcgs_removes_contention():
    p = LockParams(hold_ns=40.0, handoff_ns=25.0)
    curve = scale_curve("w", "v", {"ds_lock": 1024}, (8, 64), memcgs=64, params=p, op_ns=1024 * 200.0)
    eight, sixty_four = curve.points
    assert eight.speedup == pytest.approx(8.0) and eight.p_wait == 0.0
    assert sixty_four.speedup == pytest.approx(64.0)


def test_stream_without_the_lock_scales_linearly():
    spec = resolve("a-munmap-aligned")
    sim = simulate(spec, "up612")
    assert sim.counters["ds_lock"] == 0  # a fully unmapped folio is not queued from 6.10
    curve = scale_curve(spec.name, "up612", sim.counters)
    assert curve.n_star is None and curve.saturates_at is None
    assert [p.speedup for p in curve.points] == [float(n) for n in DEFAULT_CPUS]


def test_canonical_anchors_queueing_versions_saturate_and_v1_does_not():
    """base65-p1 queues and dequeues every folio of a munmap of 64 KiB folios (2 acquisitions per folio);
    v1 takes the lock twice per 64 MiB; on the partially unmapped workload every version queues each
    folio once (docs/kernel-history.md)."""
    a = resolve("a-munmap-aligned")
    b = resolve("b-dontneed-first-page")
    ca = {c.version: c for c in sweep(a, ["base65-p1", "v1"])}
    cb = {c.version: c for c in sweep(b, ["base65-p1", "v1"])}
    assert ca["base65-p1"].acquisitions_per_op == 2048 and ca["v1"].acquisitions_per_op == 2
    assert cb["base65-p1"].acquisitions_per_op == 1024 == cb["v1"].acquisitions_per_op
    assert ca["base65-p1"].saturates_at is not None and ca["base65-p1"].saturates_at <= 16
    assert ca["v1"].saturates_at is None and ca["v1"].points[-1].speedup > 0.99 * 256
    assert cb["base65-p1"].saturates_at is not None and cb["v1"].saturates_at is not None
    # saturated: the speed-up stops near N*, far below the CPU count
    assert ca["base65-p1"].points[-1].speedup < 1.2 * ca["base65-p1"].n_star  # type: ignore[operator]


def test_stored_metrics_are_integers_of_the_curve():
    spec = resolve("a-munmap-aligned")
    sim = simulate(spec, "base65-p1")
    out = stored_metrics(sim.counters, sim.modeled_ns)
    curve = scale_curve(spec.name, "base65-p1", sim.counters, op_ns=sim.modeled_ns)
    assert tuple(out) == STORED_NAMES
    assert out["scale_added_ns_n1"] == 0  # one CPU never waits
    assert all(isinstance(v, int) for v in out.values())
    for p in curve.points:
        x = throughput_from_stored(p.cpus, sim.modeled_ns, out[f"scale_added_ns_n{p.cpus}"])
        assert x == pytest.approx(p.throughput_ops_s, rel=1e-6)
    # more CPUs on one lock: never less wait per stream
    waits = [out[n] for n in STORED_NAMES]
    assert waits == sorted(waits) and waits[-1] > 0
    assert n_star_of(sim.counters, sim.modeled_ns) == pytest.approx(curve.n_star)
    none = simulate(spec, "up612")
    assert set(stored_metrics(none.counters, none.modeled_ns).values()) == {0}
    assert n_star_of(none.counters, none.modeled_ns) is None


def test_parse_cpus():
    assert parse_cpus("8,1, 2,2") == (1, 2, 8)
    for bad in ("0", "257", "x", ""):
        with pytest.raises(ScaleInputError):
            parse_cpus(bad)


# ------------------------------------------------------------------------------------------ the command
def test_scale_command_json_and_csv():
    res = runner.invoke(
        app, ["scale", "a-munmap-aligned", "-V", "base65-p1,v1", "--cpus", "1,2,64", "-f", "json"]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert [c["version"] for c in doc] == ["base65-p1", "v1"]
    assert [p["cpus"] for p in doc[0]["points"]] == [1, 2, 64]
    assert doc[0]["acquisitions_per_op"] == 2048
    assert doc[0]["points"][2]["speedup"] < doc[1]["points"][2]["speedup"]
    res = runner.invoke(
        app, ["scale", "b-dontneed-first-page", "-V", "v1", "--cpus", "4", "-f", "csv", "--memcgs", "4"]
    )
    assert res.exit_code == 0, res.output
    header, row = res.stdout.strip().splitlines()
    cols = dict(zip(header.split(","), row.split(","), strict=True))
    assert (
        cols["memcgs"] == "4"
        and float(cols["speedup"]) == pytest.approx(4.0)
        and float(cols["p_wait"]) == 0.0
    )


def test_scale_command_table_and_chart(tmp_path: Path):
    out = tmp_path / "x.svg"
    res = runner.invoke(
        app, ["scale", "b-dontneed-first-page", "-V", "base65-p1", "--chart", str(out), "--shrinker"]
    )
    assert res.exit_code == 0, res.output
    assert "base65-p1" in res.stdout and "shrinker on" in res.stdout
    assert out.read_text().startswith("<svg")


@pytest.mark.parametrize(
    "args",
    [["--cpus", "0,2"], ["--cpus", "a"], ["--memcgs", "0"], ["--hold-ns", "-1"], ["-V", "nope"]],
)
def test_scale_command_errors_are_one_line(args: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "benchsvc", "scale", "a-munmap-aligned", *args], capture_output=True, text=True
    )
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------ memory cgroups
def _memcg_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        from benchsvc.kernel.memcg import MemcgGroups

        MemcgGroups(1)
    except Exception as exc:  # the reason is shown in the skip
        return str(exc)
    return None


MEMCG_REASON = _memcg_reason()
memcg_live = pytest.mark.skipif(
    MEMCG_REASON is not None, reason=f"memory cgroups unavailable: {MEMCG_REASON}"
)


@pytest.mark.kernel
@memcg_live
def test_memcg_groups_created_used_and_removed():
    from benchsvc.kernel.memcg import MemcgGroups

    with MemcgGroups(2) as g:
        parent = g.parent
        assert [c.name for c in g.children] == ["m0", "m1"] and all(c.is_dir() for c in g.children)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        g.add(1, child.pid)
        assert str(child.pid) in g.procs_file(1).read_text().split()
    try:
        # the still-running task was moved back to our own memcg and the cgroups removed
        assert not parent.exists()
        assert (
            str(child.pid)
            in (g.base / "tasks" if g.mode == "v1" else g.base / "cgroup.procs").read_text().split()
        )
    finally:
        child.kill()
        child.wait()


@pytest.mark.kernel
@memcg_live
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_memcg_groups_removed_on_signal(tmp_path: Path, sig: int) -> None:
    script = textwrap.dedent(
        """
        import signal, time
        from benchsvc.kernel.memcg import MemcgGroups
        # a shell's background job starts with SIGINT ignored; a terminal's Ctrl-C reaches Python's handler
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with MemcgGroups(2) as g:
            print(g.parent, flush=True)
            time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    parent = Path(proc.stdout.readline().strip())
    assert parent.is_dir()
    proc.send_signal(sig)
    proc.wait(timeout=20)
    assert proc.returncode != 0
    assert not parent.exists()


# ------------------------------------------------------------------------------------------ the report
@pytest.mark.slow
def test_report_shows_scaling_and_saturation(tmp_path: Path) -> None:
    from benchsvc.analysis.contention import HANDOFF_NS, HOLD_NS

    db = tmp_path / "x.db"
    env = {k: v for k, v in os.environ.items() if k != "BENCHSVC_DB"}

    def cli(*args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, timeout=600, env=env
        )
        assert proc.returncode == 0, proc.stderr

    cli(
        "run", "--mode", "debug", "--no-report", "-w", "a-munmap-aligned", "-w", "b-dontneed-first-page",
        "-V", "base65-p1,v1,up612", "--db", str(db),
    )  # fmt: skip
    cli("report", "--db", str(db), "--out", str(tmp_path / "site"))
    lineage = (tmp_path / "site" / "lineage.html").read_text()
    # N* = (Z + S) / (S + c) with Z + S = modeled_ns / ds_lock (docs/contention.md)
    for workload, version in [
        ("a-munmap-aligned", "base65-p1"),
        ("b-dontneed-first-page", "base65-p1"),
        ("b-dontneed-first-page", "v1"),
    ]:
        sim = simulate(resolve(workload), version)
        n_star = sim.modeled_ns / sim.counters["ds_lock"] / (HOLD_NS + HANDOFF_NS)
        row = re.search(rf'id="saturation-{workload}-{version}">(.*?)</tr>', lineage)
        assert row is not None, (workload, version)
        assert f"from {math.ceil(n_star)} CPUs" in row.group(1) and f"{n_star:.1f}" in row.group(1)
    # v1 takes the lock twice per 64 MiB munmap: N* in the thousands, never within 256 CPUs
    row = re.search(r'id="saturation-a-munmap-aligned-v1">(.*?)</tr>', lineage)
    assert row is not None and "not within 256 CPUs" in row.group(1)
    row = re.search(r'id="saturation-a-munmap-aligned-up612">(.*?)</tr>', lineage)
    assert row is not None and "never" in row.group(1)
    # each version's card carries its own chart and table, one line per canonical workload
    for version in ("base65-p1", "v1"):
        assert f'<div class="chart" id="scaling-card-{version}"></div>' in lineage
        assert f'id="spec-scaling-card-{version}"' in lineage
        table = re.search(rf'id="scaling-card-{version}-table">(.*?)</table>', lineage, re.S)
        assert table is not None, version
        sim = simulate(resolve("b-dontneed-first-page"), version)
        n_star = sim.modeled_ns / sim.counters["ds_lock"] / (HOLD_NS + HANDOFF_NS)
        row = re.search(r"<td>b-dontneed-first-page</td>(.*?)</tr>", table.group(1))
        assert row is not None and f"from {math.ceil(n_star)} CPUs" in row.group(1), version
    page = (tmp_path / "site" / "workloads" / "b-dontneed-first-page.html").read_text()
    assert '<div class="chart" id="scaling"></div>' in page
    spec = json.loads(
        re.search(r'<script type="application/json" id="spec-scaling">(.*?)</script>', page, re.S).group(1)
    )  # type: ignore[union-attr]
    sets = list(spec["datasets"].values())
    rows = next(d for d in sets if d and "cpus" in d[0])
    assert {r["version"] for r in rows} >= {"base65-p1", "v1", "up612"}
    assert sorted({r["cpus"] for r in rows}) == list(DEFAULT_CPUS)
    marks = next(d for d in sets if d and "n_star" in d[0])
    sim = simulate(resolve("b-dontneed-first-page"), "base65-p1")
    expected = sim.modeled_ns / sim.counters["ds_lock"] / (HOLD_NS + HANDOFF_NS)
    assert [m["n_star"] for m in marks if m["version"] == "base65-p1"] == [pytest.approx(expected)]


def test_scaling_block_from_stored_metrics_per_version_and_per_workload():
    import pandas as pd

    from benchsvc.report.scaling import scaling_block

    rows = []
    for name in ("a-munmap-aligned", "b-dontneed-first-page"):
        for version in ("base65-p1", "up612"):
            sim = simulate(resolve(name), version)
            stored = with_scale_metrics(sim.counters, sim.modeled_ns)
            rows.append(
                {"workload": name, "version": version, "modeled_ns": sim.modeled_ns}
                | {f"c_{k}": v for k, v in stored.items()}
            )
    frame = pd.DataFrame(rows)
    one = frame[frame["workload"] == "a-munmap-aligned"]
    block = scaling_block(one, ["base65-p1", "up612"])
    assert block is not None
    _, table = block
    by = {r["version"]: r for r in table}
    sim = simulate(resolve("a-munmap-aligned"), "base65-p1")
    n_star = n_star_of(sim.counters, sim.modeled_ns)
    assert by["base65-p1"]["saturates"] == f"from {math.ceil(n_star)} CPUs"  # type: ignore[arg-type]
    assert by["up612"]["saturates"].startswith("never") and by["up612"]["best"] == "256.0× at 256 CPUs"
    # a version's card: one line per workload
    card = scaling_block(frame[frame["version"] == "base65-p1"], ["a-munmap-aligned"], by="workload")
    assert card is not None and {r["version"] for r in card[1]} == {
        "a-munmap-aligned",
        "b-dontneed-first-page",
    }
    # results stored before the model existed: no chart
    assert scaling_block(one.drop(columns=[c for c in one.columns if "scale_" in c]), ["base65-p1"]) is None
