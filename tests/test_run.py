"""``benchsvc run`` end to end: real pyperf workers, a real SQLite file, the CLI as a subprocess.

Covers docs/design.md#runs-and-measurement: the stored results of a small matrix, failed results, the run lock (refusal, ``--wait``,
stale locks), Ctrl-C / SIGTERM / SIGKILL in the middle of a run and ``--resume``, and the workload selection.
Timings are never asserted on. Every wait polls with a hard timeout, and every background process is
started in its own session so that the fixture's teardown can kill it with its pyperf children.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchsvc.analysis.contention import STORED_NAMES
from benchsvc.engine.counters import COUNTER_NAMES
from benchsvc.runner.blocks import SAMPLING
from benchsvc.runner.matrix import with_scale_metrics
from benchsvc.workload import discover, load_workload

BENCHSVC = (sys.executable, "-m", "benchsvc")
CMD_TIMEOUT = 120  # one CLI call, at most
WAIT_TIMEOUT = 60  # one poll or background process, at most
POLL_S = 0.02

W1 = "a-munmap-aligned"
W2 = "dontneed-cut-both-ends"
LARGE = "a-munmap-aligned-1g"
HOST = socket.gethostname()

LOCKED = re.compile(
    r"^Error: (?:this machine is in use by|the database records) run (?P<run>\d+) \(pid (?P<pid>\d+) on (?P<host>\S+), "
    r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)"
)
GONE_NOTE = "note: run {} was left running by a process that is gone; marked interrupted"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BENCHSVC_") or k == "BENCHSVC_RUNTIME_DIR"
    }
    env.update(COLUMNS="200", TERM="dumb", **extra)
    return env


def _default_sigint() -> None:
    """In the child before exec: SIGINT as at a terminal, even when pytest itself was started with SIGINT
    ignored (``pytest ... &`` from a non-interactive shell); Python then turns it into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Bench:
    """A result database in ``tmp_path`` and the ``benchsvc`` processes run against it."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db = tmp_path / "x.db"
        self.procs: list[subprocess.Popen[bytes]] = []

    # --- the CLI ---

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*BENCHSVC, *args, "--db", str(self.db)],
            cwd=self.dir,
            env=env or _env(),
            capture_output=True,
            text=True,
            timeout=CMD_TIMEOUT,
        )

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        n = len(self.procs)
        with open(self.dir / f"bg{n}.out", "wb") as out, open(self.dir / f"bg{n}.err", "wb") as err:
            proc = subprocess.Popen(
                [*BENCHSVC, *args, "--db", str(self.db)],
                cwd=self.dir,
                env=env or _env(),
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_default_sigint,
            )
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
        n = self.procs.index(proc)
        return (self.dir / f"bg{n}.out").read_text(), (self.dir / f"bg{n}.err").read_text()

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = WAIT_TIMEOUT) -> tuple[int, str, str]:
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"benchsvc pid {proc.pid} still running after {timeout} s: {self.output(proc)}")
        return (rc, *self.output(proc))

    def kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the process's session (itself and any pyperf child left behind) and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            self.kill_group(proc)

    # --- reading the database (read-only, as an outside observer) ---

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def poll(
        self,
        probe: Callable[[], Any],
        what: str,
        proc: subprocess.Popen[bytes] | None = None,
        timeout: float = WAIT_TIMEOUT,
    ) -> Any:
        """Call ``probe`` (a database read) until it returns something truthy; fail on timeout or if
        ``proc`` exits first. A database not created yet (or mid-migration) just means "not yet"."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = probe()
            except sqlite3.OperationalError:
                value = None
            if value:
                return value
            if proc is not None and proc.poll() is not None:
                pytest.fail(f"benchsvc exited with {proc.returncode} before {what}: {self.output(proc)}")
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(POLL_S)

    def runs(self) -> dict[int, dict[str, Any]]:
        rows = self.query("SELECT id, status, mode, trigger, plan, started_at, finished_at FROM runs")
        return {
            r[0]: {
                "status": r[1],
                "mode": r[2],
                "trigger": r[3],
                "plan": json.loads(r[4]) if r[4] else None,
                "started_at": r[5],
                "finished_at": r[6],
            }
            for r in rows
        }

    def plan_keys(self, run_id: int) -> list[tuple[str, str, str, str]]:
        plan = self.runs()[run_id]["plan"]
        return [(e["engine"], e["version"], e["workload"], e["workload_hash"]) for e in plan]

    def lock(self) -> tuple[Any, ...] | None:
        rows = self.query("SELECT run_id, holder_pid, host FROM run_locks")
        return rows[0] if rows else None

    def results(self, run_id: int, *, canary: bool = False) -> list[dict[str, Any]]:
        """Every result of a run (in commit order) with its counters and raw values; the canary's only when
        asked for."""
        rows = self.query(
            "SELECT r.id, r.engine, r.version_id, w.name, w.content_hash, r.status, r.error, r.modeled_ns,"
            " r.n_values, r.mean_s, r.median_s, r.stdev_s, r.min_s, r.max_s, r.warnings, r.pyperf_metadata,"
            " r.started_at, r.finished_at"
            " FROM results r JOIN workloads w ON w.id = r.workload_id WHERE r.run_id = ?"
            + ("" if canary else " AND r.engine != 'canary'")
            + " ORDER BY r.id",
            (run_id,),
        )
        cols = [
            "id", "engine", "version", "workload", "workload_hash", "status", "error", "modeled_ns",
            "n_values", "mean_s", "median_s", "stdev_s", "min_s", "max_s", "warnings", "metadata",
            "started_at", "finished_at",
        ]  # fmt: skip
        out = []
        for row in rows:
            r = dict(zip(cols, row, strict=True))
            r["warnings"], r["metadata"] = json.loads(r["warnings"]), json.loads(r["metadata"])
            r["key"] = (r["engine"], r["version"], r["workload"], r["workload_hash"])
            r["counters"] = dict(
                self.query("SELECT name, value FROM counters WHERE result_id = ?", (r["id"],))
            )
            r["samples"] = [
                {
                    "process": p,
                    "loops": loops,
                    "values": json.loads(v),
                    "warmups": json.loads(wu),
                    "meta": json.loads(meta) if meta else None,
                }
                for p, loops, v, wu, meta in self.query(
                    'SELECT process, loops, "values", warmups, meta FROM samples WHERE result_id = ?'
                    " ORDER BY process",
                    (r["id"],),
                )
            ]
            out.append(r)
        return out

    def result_count(self, run_id: int = 1, status: str | None = None) -> int:
        """The run's committed results, the canary's left out."""
        sql = "SELECT count(*) FROM results WHERE run_id = ? AND engine != 'canary'" + (
            " AND status = ?" if status else ""
        )
        return self.query(sql, (run_id, status) if status else (run_id,))[0][0]


def _one_error_line(cp: subprocess.CompletedProcess[str]) -> str:
    lines = cp.stderr.strip().splitlines()
    assert cp.returncode == 1, (cp.returncode, cp.stdout, cp.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), cp.stderr
    assert "Traceback" not in cp.stderr
    return lines[0]


def _simulate(bench: Bench, workload: str, versions: list[str]) -> dict[str, dict[str, Any]]:
    args = [a for v in versions for a in ("--version", v)]
    cp = subprocess.run(
        [*BENCHSVC, "simulate", workload, *args, "--json"],
        cwd=bench.dir,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
        check=True,
    )
    payload = json.loads(cp.stdout)
    payload = payload if isinstance(payload, list) else [payload]
    # a run stores the contention model's derived metrics beside the engine's counters (docs/contention.md)
    for p in payload:
        p["counters"] = with_scale_metrics(p["counters"], p["modeled_ns"])
    return {p["version"]: p for p in payload}


def _quick_shape() -> dict[str, int]:
    """How many worker processes and values per process quick mode measures (SAMPLING["quick"])."""
    return {"processes": SAMPLING["quick"].processes, "values": SAMPLING["quick"].values}


def _primary(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The processes of a result's measurement, without those of a confirmation re-measurement at the end of
    the run (which the run may or may not make, depending on what the timings look like)."""
    return [s for s in samples if (s["meta"] or {}).get("benchsvc_phase", "primary") == "primary"]


def _assert_complete_ok(r: dict[str, Any], *, processes: int, values: int) -> None:
    """An ``ok`` result as a whole: every counter, its modelled cost, its raw values and summary."""
    assert r["status"] == "ok" and r["error"] is None, r
    assert set(r["counters"]) == {*COUNTER_NAMES, *STORED_NAMES}, r["counters"]
    assert r["modeled_ns"] is not None and r["modeled_ns"] > 0
    samples = _primary(r["samples"])
    assert [s["process"] for s in samples] == list(range(processes))
    assert all(len(s["values"]) == values for s in samples), samples
    flat = [v for s in samples for v in s["values"]]
    assert r["n_values"] == len(flat) == processes * values
    assert all(v > 0 for v in flat)
    assert r["mean_s"] == pytest.approx(statistics.fmean(flat))
    assert (r["min_s"], r["max_s"]) == (min(flat), max(flat))
    assert r["started_at"] is not None and r["finished_at"] is not None


# --- 1. a real matrix, end to end ---


def test_debug_matrix_end_to_end_matches_simulate(bench: Bench) -> None:
    versions = ["v1", "v2", "up612"]
    cp = bench.cli(
        "run", "-w", W1, "-w", W2, "-V", ",".join(versions), "--mode", "debug", "--trigger", "nightly"
    )
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.strip().splitlines()
    assert re.match(r"run 1 complete: 6 ok, 0 failed in \d+:\d\d \(debug mode\)$", lines[0]), cp.stdout
    assert lines[1].startswith("analysis: "), cp.stdout
    # index, lineage, feed, the two workloads' pages and the canary's; assets/: site.css, vega.js, charts.js
    assert len(lines) == 3 and lines[2] == "report: reports/index.html (9 files written, 0 unchanged)", (
        cp.stdout
    )
    assert (bench.dir / "reports" / "workloads" / f"{W1}.html").exists()
    progress = [line for line in cp.stderr.splitlines() if line.startswith("[")]
    assert len(progress) == 6 and all("eta" in line for line in progress), cp.stderr

    run = bench.runs()[1]
    assert (run["status"], run["mode"], run["trigger"]) == ("complete", "debug", "nightly")
    assert run["finished_at"] is not None
    assert bench.lock() is None, "the run lock is released at the end"
    # the plan: workloads in the given order, each in every version (lineage order)
    planned = [(k[2], k[1]) for k in bench.plan_keys(1)]
    assert planned == [(w, v) for w in (W1, W2) for v in versions]
    results = bench.results(1)
    assert [r["key"] for r in results] == bench.plan_keys(1)

    parents = dict(bench.query("SELECT id, parent FROM versions"))
    expected = {}
    for workload in (W1, W2):
        sims = _simulate(bench, workload, versions)
        for v in versions:
            expected[workload, v] = sims[v]
    for r in results:
        sim = expected[r["workload"], r["version"]]
        _assert_complete_ok(r, processes=1, values=1)
        assert r["counters"] == sim["counters"], (r["workload"], r["version"])
        assert r["modeled_ns"] == sim["modeled_ns"]
        meta = r["metadata"]
        assert meta["benchsvc_zap_version"] == r["version"]
        assert meta["benchsvc_workload"] == r["workload"]
        assert meta["benchsvc_workload_hash"] == r["workload_hash"]
        assert meta["benchsvc_engine"] == "sim"
        assert isinstance(meta["cpu_count"], int) and meta["cpu_count"] >= 1
        assert meta["perf_version"] and meta["python_version"]

    listed = bench.cli("runs", "--format", "json")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    (row,) = json.loads(listed.stdout)
    assert {k: row[k] for k in ("run_id", "status", "mode", "trigger", "ok", "failed")} == {
        "run_id": 1,
        "status": "complete",
        "mode": "debug",
        "trigger": "nightly",
        "ok": 6,
        "failed": 0,
    }

    shown = bench.cli("show", "--format", "json")
    assert shown.returncode == 0 and shown.stderr == "", shown.stderr
    rows = json.loads(shown.stdout)["results"]
    assert len(rows) == 6
    by_key = {(r["workload"], r["version"]): r for r in results}
    for row in rows:
        r = by_key[row["workload"], row["version"]]
        sim = expected[row["workload"], row["version"]]
        assert (row["status"], row["error"], row["engine"]) == ("ok", None, "sim")
        assert row["workload_hash"] == r["workload_hash"]
        assert row["parent"] == parents[row["version"]]
        assert row["n_values"] == r["n_values"] == 1
        assert row["mean_s"] == pytest.approx(r["mean_s"])
        assert row["modeled_ns"] == sim["modeled_ns"]
        names = (*COUNTER_NAMES, *STORED_NAMES)
        assert {name: row[f"c_{name}"] for name in names} == sim["counters"]


def test_quick_mode_keeps_raw_values_per_process(bench: Bench) -> None:
    cp = bench.cli("run", "-w", W1, "-V", "up612", "--quick")
    assert cp.returncode == 0, cp.stderr
    run = bench.runs()[1]
    assert (run["status"], run["mode"]) == ("complete", "quick")
    settings = json.loads(bench.query("SELECT pyperf_settings FROM runs")[0][0])
    assert settings == {
        "measurement": "interleaved",
        "sampling": SAMPLING["quick"].as_dict(),
        "canary": "canary-1",
    }
    (r,) = bench.results(1)
    shape = _quick_shape()
    assert shape["processes"] >= 2 and shape["values"] >= 2, "quick mode is more than one value"
    _assert_complete_ok(r, **shape)  # n_values == processes x values, kept per process
    for s in r["samples"]:
        assert s["loops"] == SAMPLING["quick"].loops
        assert len(s["warmups"]) == SAMPLING["quick"].warmups  # kept apart from the values


# --- 2. a failing result ---


def test_failed_worker_is_recorded_and_the_run_goes_on(bench: Bench) -> None:
    env = _env(BENCHSVC_TEST_FAIL_WORKER=f"v2/{W1}")
    cp = bench.cli("run", "-w", W1, "-V", "v1,v2,v3", "--mode", "debug", env=env)
    assert cp.returncode == 1, (cp.stdout, cp.stderr)
    assert cp.stdout.startswith("run 1 failed: 2 ok, 1 failed"), cp.stdout
    assert f"sim/v2/{W1}: FAILED: worker exited with 1" in cp.stderr
    assert bench.runs()[1]["status"] == "failed"
    assert bench.lock() is None
    results = {r["version"]: r for r in bench.results(1)}
    assert list(results) == ["v1", "v2", "v3"]  # v3 was measured although v2 failed
    failed = results["v2"]
    assert failed["status"] == "failed"
    assert f"injected failure for v2/{W1} (BENCHSVC_TEST_FAIL_WORKER)" in failed["error"]
    assert failed["n_values"] == 0 and failed["samples"] == [] and failed["mean_s"] is None
    # the deterministic part was computed before the worker failed and is kept
    assert failed["counters"] == _simulate(bench, W1, ["v2"])["v2"]["counters"]
    for v in ("v1", "v3"):
        _assert_complete_ok(results[v], processes=1, values=1)

    (row,) = json.loads(bench.cli("runs", "-f", "json").stdout)
    assert (row["status"], row["ok"], row["failed"]) == ("failed", 2, 1)
    shown = {r["version"]: r for r in json.loads(bench.cli("show", "1", "-f", "json").stdout)["results"]}
    assert shown["v2"]["status"] == "failed" and "injected failure" in shown["v2"]["error"]
    assert shown["v2"]["n_values"] == 0 and shown["v2"]["mean_s"] is None
    assert shown["v1"]["status"] == shown["v3"]["status"] == "ok"


# --- 3. the run lock: a second run is refused, or waits ---


def test_concurrent_run_is_refused_and_wait_runs_after(bench: Bench) -> None:
    hold = bench.dir / "hold"  # the first run holds the machine until the test removes this file
    first = bench.spawn(
        "run", "-w", W1, "-w", W2, "-V", "v1,v2,up612", "--quick", env=_env(BENCHSVC_TEST_RUN_HOLD=str(hold))
    )  # 6 results
    lock = bench.poll(bench.lock, "the first run's lock", proc=first)
    assert lock == (1, first.pid, HOST)

    waiter = bench.spawn("run", "-w", W2, "-V", "up612", "--mode", "debug", "--wait")
    refused = bench.cli("run", "-w", W2, "-V", "up612", "--mode", "debug")  # meanwhile, without --wait
    line = _one_error_line(refused)
    m = LOCKED.match(line)
    assert m, line
    assert (int(m["run"]), int(m["pid"]), m["host"]) == (1, first.pid, HOST)
    assert "--wait" in line
    assert first.poll() is None and hold.exists()
    hold.unlink()

    rc1, out1, err1 = bench.finish(first)
    rc2, out2, err2 = bench.finish(waiter)
    assert rc1 == 0, err1
    assert rc2 == 0, err2
    assert out1.startswith("run 1 complete: 6 ok") and out2.startswith("run 2 complete: 1 ok"), (out1, out2)

    runs = bench.runs()
    assert sorted(runs) == [1, 2], "the refused run left nothing behind"
    assert runs[1]["status"] == runs[2]["status"] == "complete"
    first_results, second_results = bench.results(1), bench.results(2)
    assert len(first_results) == 6 and len(second_results) == 1
    for r in first_results:
        _assert_complete_ok(r, **_quick_shape())
    _assert_complete_ok(second_results[0], processes=1, values=1)
    # the waiter was started (its run record made, just before it first asked for the lock) while the first
    # run held the lock, and measured only after the first one had finished: it waited, no interleaving
    assert runs[2]["started_at"] < runs[1]["finished_at"] <= second_results[0]["started_at"]
    assert bench.lock() is None


# --- 4. stale locks ---


def _seed_running_run(db: Path, holder_pid: int, acquired_at: dt.datetime) -> int:
    """A ``running`` run holding the lock as ``holder_pid``, written through the store API."""
    from benchsvc.records import RunRecord
    from benchsvc.store.db import open_store, write_session
    from benchsvc.store.ingest import create_run
    from benchsvc.store.models import RunLock

    engine = open_store(str(db))
    try:
        with write_session(engine) as s:
            run = create_run(s, dataclasses.replace(RunRecord.new(mode="debug"), started_at=acquired_at))
            s.add(
                RunLock(
                    host=HOST,
                    run_id=run.id,
                    holder_pid=holder_pid,
                    acquired_at=acquired_at,
                    heartbeat_at=acquired_at,
                )
            )
            run_id = run.id
    finally:
        engine.dispose()
    return run_id


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@pytest.mark.parametrize("holder", ["dead-pid", "reused-pid"])
def test_stale_lock_is_taken_over(bench: Bench, holder: str) -> None:
    if holder == "dead-pid":
        old = _seed_running_run(bench.db, _dead_pid(), _utcnow())
    else:  # the pid lives, but its process started after the lock was taken: another process now
        old = _seed_running_run(bench.db, os.getpid(), dt.datetime(2001, 1, 1))
    cp = bench.cli("run", "-w", W1, "-V", "up612", "--mode", "debug")
    assert cp.returncode == 0, cp.stderr
    assert GONE_NOTE.format(old) in cp.stderr.splitlines(), cp.stderr
    runs = bench.runs()
    assert runs[old]["status"] == "interrupted" and runs[old]["finished_at"] is not None
    new = max(runs)
    assert new != old and runs[new]["status"] == "complete"
    _assert_complete_ok(bench.results(new)[0], processes=1, values=1)
    assert bench.lock() is None


def test_live_lock_holder_is_respected(bench: Bench) -> None:
    old = _seed_running_run(bench.db, os.getpid(), _utcnow())  # this very process holds it
    m = LOCKED.match(_one_error_line(bench.cli("run", "-w", W1, "-V", "up612", "--mode", "debug")))
    assert m and (int(m["run"]), int(m["pid"]), m["host"]) == (old, os.getpid(), HOST)
    listed = bench.cli("runs", "-f", "json")  # recovery leaves a live holder's run alone
    assert listed.returncode == 0 and listed.stderr == ""
    assert [(r["run_id"], r["status"]) for r in json.loads(listed.stdout)] == [(old, "running")]
    assert bench.lock() == (old, os.getpid(), HOST)


def _sleeping_in_wait_loop(pid: int) -> bool | None:
    """Whether ``pid`` sleeps in ``time.sleep`` (None: the kernel does not tell, /proc/PID/wchan is "0")."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return None
    return "nanosleep" in wchan if wchan != "0" else None


def test_ctrl_c_while_waiting_for_the_lock_does_not_claim_a_run(bench: Bench) -> None:
    holder = _seed_running_run(bench.db, os.getpid(), _utcnow())  # a live holder: the waiter never gets it
    waiter = bench.spawn("run", "-w", W1, "-V", "up612", "--mode", "debug", "--wait")
    deadline, seen, streak = time.monotonic() + 20, set(), 0
    while streak < 3:  # the waiter's only sleep is execute()'s wait_poll_s (nobody else writes the db)
        state = _sleeping_in_wait_loop(waiter.pid)
        seen.add(state)
        streak = streak + 1 if state else 0
        if waiter.poll() is not None:
            pytest.fail(f"the waiter exited with {waiter.returncode}: {bench.output(waiter)}")
        if time.monotonic() > deadline:
            if seen <= {None}:
                pytest.skip("cannot see from /proc/PID/wchan that the waiter sleeps in its wait loop")
            pytest.fail(f"the waiter never slept in its wait loop (wchan states {seen})")
        time.sleep(POLL_S)
    os.kill(waiter.pid, signal.SIGINT)
    rc, _out, err = bench.finish(waiter)
    if rc != 130 or sorted(bench.runs()) != [holder]:
        pytest.fail(f"setup: expected exit 130 and no run of the waiter's (rc {rc}): {err}")
    assert "the run is marked interrupted" not in err, err


def test_runner_takes_over_a_stale_lock_in_its_own_transaction(bench: Bench) -> None:
    """The takeover inside lock.take (a holder that died after the CLI's recovery, e.g. while --wait)."""
    from benchsvc.records import RunRecord
    from benchsvc.runner.matrix import execute, plan
    from benchsvc.store.db import open_store
    from benchsvc.workload import resolve

    dead = _dead_pid()
    old = _seed_running_run(bench.db, dead, _utcnow())
    engine = open_store(str(bench.db))
    try:
        record = RunRecord.new(mode="debug")
        summary = execute(engine, plan([resolve(W1)], ["up612"]), record, "debug")
    finally:
        engine.dispose()
    assert (summary.status, summary.ok, summary.failed) == ("complete", 1, 0)
    assert len(summary.notes) == 1
    assert summary.notes[0].startswith(f"took over a stale lock of run {old} (pid {dead} on {HOST}, started ")
    runs = bench.runs()
    assert runs[old]["status"] == "interrupted"
    assert runs[summary.run_id]["status"] == "complete"
    assert bench.lock() is None


# --- 5. Ctrl-C and SIGTERM ---


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_marks_run_interrupted_without_half_written_results(bench: Bench, signum: int) -> None:
    # two workloads: the versions of one workload are measured together and committed together
    proc = bench.spawn("run", "-w", W1, "-w", W2, "-V", "v1,v2,v3,up612", "--quick")
    bench.poll(lambda: bench.result_count(1) >= 1, "a committed result", proc=proc)
    os.kill(proc.pid, signum)
    rc, _out, err = bench.finish(proc)
    assert rc == 130, err
    assert "interrupted: the run is marked interrupted; finish it with benchsvc run --resume" in err
    assert "Traceback" not in err
    run = bench.runs()[1]
    assert run["status"] == "interrupted" and run["finished_at"] is not None
    assert bench.lock() is None, "an interrupted run releases the lock"
    results = bench.results(1)
    assert len(results) == 4, "the first workload's versions, committed together; not the second's"
    assert bench.results(1, canary=True) == results, "the canary is committed when the run completes"
    for r in results:
        _assert_complete_ok(r, **_quick_shape())
    orphans = bench.query(
        "SELECT count(*) FROM results r WHERE r.run_id = 1 AND ("
        " NOT EXISTS (SELECT 1 FROM counters c WHERE c.result_id = r.id) OR"
        " NOT EXISTS (SELECT 1 FROM samples s WHERE s.result_id = r.id))"
    )
    assert orphans == [(0,)]
    for table in ("samples", "counters"):
        stray = bench.query(f"SELECT count(*) FROM {table} WHERE result_id NOT IN (SELECT id FROM results)")
        assert stray == [(0,)], table


# --- 6. SIGKILL, recovery, --resume ---


def test_sigkill_then_recovery_then_resume_completes_the_plan(bench: Bench) -> None:
    proc = bench.spawn("run", "-w", W1, "-w", W2, "-V", "v1,v2,up612", "--quick")
    bench.poll(lambda: bench.result_count(1) >= 1, "a committed result", proc=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    bench.kill_group(proc)  # the orphaned pyperf worker of the result in flight
    assert proc.returncode == -signal.SIGKILL

    before = bench.results(1)
    if len(before) != 3:
        pytest.fail(f"expected the kill in the middle of the run, {len(before)} results were committed")
    assert bench.runs()[1]["status"] == "running", "nothing ran to mark it yet"
    assert bench.lock() == (1, proc.pid, HOST)

    listed = bench.cli("runs", "-f", "json")
    assert listed.returncode == 0
    assert listed.stderr.strip().splitlines() == [GONE_NOTE.format(1)]
    assert json.loads(listed.stdout)[0]["status"] == "interrupted"
    assert bench.runs()[1]["status"] == "interrupted" and bench.lock() is None
    again = bench.cli("runs", "-f", "json")
    assert again.stderr == "", "recovered once only"

    resumed = bench.cli("run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    todo = 6 - len(before)
    assert re.match(rf"run 1 complete: {todo} ok, 0 failed, {len(before)} already done in ", resumed.stdout)
    assert sorted(bench.runs()) == [1], "resume finishes the run, it does not start another"
    run = bench.runs()[1]
    assert run["status"] == "complete" and bench.lock() is None
    after = bench.results(1)
    keys = [r["key"] for r in after]
    assert len(keys) == len(set(keys)) == 6, "exactly one result per planned item"
    assert set(keys) == set(bench.plan_keys(1))
    unchanged = [{**r, "samples": _primary(r["samples"])} for r in after[: len(before)]]
    assert unchanged == before, "results committed before the kill are unchanged"
    for r in after:
        _assert_complete_ok(r, **_quick_shape())  # resumed in the run's own (quick) mode

    nothing = bench.cli("run", "--resume")
    assert _one_error_line(nothing) == "Error: no interrupted run to resume (see benchsvc runs)"


def test_resume_of_a_run_with_a_failed_result_does_not_end_complete(bench: Bench) -> None:
    proc = bench.spawn(
        "run", "-w", W1, "-w", W2, "-V", "v1", "--quick", env=_env(BENCHSVC_TEST_FAIL_WORKER=f"v1/{W1}")
    )
    bench.poll(lambda: bench.result_count(1, "failed") == 1, "the failed result", proc=proc)
    os.kill(proc.pid, signal.SIGINT)
    rc, _out, err = bench.finish(proc)
    if rc != 130 or bench.runs()[1]["status"] != "interrupted" or bench.result_count(1) != 1:
        pytest.fail(f"setup: expected an interrupted run holding only the failed result (rc {rc}): {err}")

    resumed = bench.cli("run", "--resume")  # the failure is gone now, the second workload measures fine
    statuses = sorted(r["status"] for r in bench.results(1))
    status = bench.runs()[1]["status"]
    if "failed" in statuses:
        assert status == "failed", f"run ends {status!r} with results {statuses}: {resumed.stdout}"
        assert resumed.returncode == 1
    else:  # or a resume that retries failed results: then all ok, complete
        assert (status, resumed.returncode) == ("complete", 0)


# --- selection and errors ---


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--workloads", "nope"], "no workload named 'nope'"),
        (["run", "--resume"], "no interrupted run to resume"),
        (["run", "--mode", "bogus"], "unknown mode 'bogus'"),
        (["run", "--quick", "--rigorous"], "exclude each other"),
        (["run", "1"], "only taken with --resume"),
    ],
    ids=["unknown-workload", "nothing-to-resume", "unknown-mode", "quick-and-rigorous", "run-without-resume"],
)
def test_run_errors_are_one_line(bench: Bench, args: list[str], message: str) -> None:
    line = _one_error_line(bench.cli(*args))
    assert message in line
    if bench.db.exists():
        assert bench.query("SELECT count(*) FROM runs") == [(0,)]


def test_default_selection_excludes_large_and_oracle_workloads(bench: Bench) -> None:
    proc = bench.spawn("run", "--mode", "debug", "-V", "up612")
    plan = bench.poll(lambda: bench.query("SELECT plan FROM runs WHERE id = 1"), "the run's plan", proc=proc)
    bench.kill_group(proc)  # the plan is all this test needs
    workloads = [e["workload"] for e in json.loads(plan[0][0])]
    shipped = {p.stem: load_workload(p) for p in discover()}
    assert LARGE in shipped and "large" in shipped[LARGE].tags
    assert workloads == sorted(
        name for name, spec in shipped.items() if not {"large", "oracle"} & set(spec.tags)
    )
    assert LARGE not in workloads
    assert "sizes-16k-munmap-aligned" in shipped and "sizes-16k-munmap-aligned" not in workloads


def test_tag_large_includes_large_workloads(bench: Bench) -> None:
    cp = bench.cli("run", "--tag", "large", "--mode", "debug", "-V", "up612")
    assert cp.returncode == 0, cp.stderr
    assert [(k[2], k[1]) for k in bench.plan_keys(1)] == [(LARGE, "up612")]
    (r,) = bench.results(1)
    assert r["workload"] == LARGE
    _assert_complete_ok(r, processes=1, values=1)
