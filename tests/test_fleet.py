"""Several machines on one store: the machine lock, per-machine recovery, and four "machines" (UTS namespaces
with their own hostnames, ``unshare -u``) running ``benchsvc run`` at once against one real PostgreSQL server.

Each simulated machine gets its own runtime directory (``$BENCHSVC_RUNTIME_DIR``), as separate machines have
their own ``/run``; the hostname is what the store knows a machine by. Every wait polls the database with a
hard timeout; timings are never asserted on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from benchsvc.records import RunRecord, utcnow
from benchsvc.store import lock
from benchsvc.store.db import open_store, write_session
from benchsvc.store.ingest import create_run
from benchsvc.store.models import RunLock

BENCHSVC = (sys.executable, "-m", "benchsvc")
W1, W2, W3 = "a-munmap-aligned", "dontneed-cut-both-ends", "b-dontneed-first-page"
VERSIONS = ("v1", "v2", "up612")
HOSTS = ("bench-1", "bench-2", "bench-3", "bench-4")
RUN_TIMEOUT_S = 600  # four quick runs on two loaded CPUs
POLL_S = 0.05


def _env(runtime: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHSVC_")}
    env.update(COLUMNS="200", TERM="dumb", BENCHSVC_RUNTIME_DIR=str(runtime), **extra)
    return env


def _poll(probe: Callable[[], Any], what: str, timeout: float, procs: list[subprocess.Popen[bytes]]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"pid {p.pid} exited with {p.returncode} before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


# --- one machine, two databases: the machine lock ----------------------------------------------------------


def test_second_run_on_one_machine_is_refused_whatever_database_it_uses(tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    env = _env(runtime)
    hold = tmp_path / "hold"  # the first run holds the machine until the test removes this file
    first = subprocess.Popen(
        [
            *BENCHSVC,
            "run",
            "-w",
            W1,
            "-w",
            W2,
            "-V",
            ",".join(VERSIONS),
            "--quick",
            "--no-report",
            "--db",
            str(tmp_path / "first.db"),
        ],
        cwd=tmp_path,
        env=_env(runtime, BENCHSVC_TEST_RUN_HOLD=str(hold)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # the first run holds the machine once its lock file names its run
        lock_file = runtime / lock.LOCK_FILE

        def holder() -> dict[str, Any] | None:
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(lock_file.read_text() or "{}")
                return info if info.get("run") is not None else None
            return None

        info = _poll(holder, "the first run to hold the machine", 120, [first])
        assert info["pid"] == first.pid
        second = subprocess.run(
            [
                *BENCHSVC,
                "run",
                "-w",
                W1,
                "-V",
                "v1",
                "--mode",
                "debug",
                "--no-report",
                "--db",
                str(tmp_path / "second.db"),
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.poll() is None and hold.exists()
        assert second.returncode == 1, second
        (line,) = second.stderr.splitlines()
        assert line.startswith(f"Error: this machine is in use by run 1 (pid {first.pid} on "), line
        assert str(tmp_path / "first.db") in line and "--wait" in line, line
        # refused before its database was touched: the second run left no run behind
        runs = subprocess.run(
            [*BENCHSVC, "runs", "-f", "json", "--db", str(tmp_path / "second.db")],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert runs.returncode == 0 and json.loads(runs.stdout) == [], runs
        hold.unlink()
        assert first.wait(timeout=RUN_TIMEOUT_S) == 0, first.stderr.read() if first.stderr else ""
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        if first.stderr:
            first.stderr.close()


# --- recovery is per machine --------------------------------------------------------------------------------


def _seed_running(url: str, host: str, pid: int, heartbeat_at: dt.datetime) -> int:
    """A ``running`` run of ``host`` holding that host's lock row, through the store API."""
    engine = open_store(url)
    try:
        with write_session(engine) as s:
            record = RunRecord.new(mode="debug")
            record = dataclasses.replace(
                record, machine=dataclasses.replace(record.machine, hostname=host), started_at=heartbeat_at
            )
            run = create_run(s, record)
            s.add(
                RunLock(
                    host=host,
                    run_id=run.id,
                    holder_pid=pid,
                    acquired_at=heartbeat_at,
                    heartbeat_at=heartbeat_at,
                )
            )
            return run.id
    finally:
        engine.dispose()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    return proc.pid


def test_recovery_marks_only_what_is_dead_and_never_another_hosts_live_run(store_url: str) -> None:
    here = lock.this_host()
    now = utcnow()
    dead = _dead_pid()
    # another host's run, its pid meaningless here (dead on this host): alive by its fresh heartbeat
    live_elsewhere = _seed_running(store_url, "bench-elsewhere", dead, now)
    # another host silent for longer than STALE_AFTER: that host died
    silent = _seed_running(
        store_url, "bench-silent", os.getpid(), now - lock.STALE_AFTER - dt.timedelta(minutes=1)
    )
    # this host: a dead pid (kill -9) with a fresh heartbeat is dead all the same
    killed_here = _seed_running(store_url, here, dead, now)
    engine = open_store(store_url)
    try:
        found = {r.run_id: r for r in lock.recover(engine)}
        assert set(found) == {silent, killed_here}
        assert found[killed_here].describe() == (
            f"run {killed_here} was left running by a process that is gone; marked interrupted"
        )
        assert (
            found[silent].describe().startswith(f"run {silent} on bench-silent has sent no heartbeat since ")
        )
        with engine.connect() as conn:
            status = dict(conn.execute(text("SELECT id, status FROM runs")).all())
            locks = sorted(conn.execute(text("SELECT host, run_id FROM run_locks")).all())
        assert status == {live_elsewhere: "running", silent: "interrupted", killed_here: "interrupted"}
        assert locks == [("bench-elsewhere", live_elsewhere)]
        assert lock.recover(engine) == [], "recovered once"
    finally:
        engine.dispose()


# --- four machines on one PostgreSQL server -----------------------------------------------------------------


@dataclasses.dataclass
class Machine:
    """A simulated machine: a hostname (its own UTS namespace) and a runtime directory of its own."""

    host: str
    runtime: Path
    url: str
    workdir: Path

    def argv(self, *args: str) -> list[str]:
        inner = " ".join(_quote(a) for a in (*BENCHSVC, *args, "--db", self.url))
        return ["unshare", "-u", "sh", "-c", f"hostname {self.host} && exec {inner}"]

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        with (
            open(self.workdir / f"{self.host}.out", "ab") as out,
            open(self.workdir / f"{self.host}.err", "ab") as err,
        ):
            return subprocess.Popen(
                self.argv(*args),
                cwd=self.workdir,
                env=_env(self.runtime),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            cwd=self.workdir,
            env=_env(self.runtime),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )

    def output(self) -> str:
        return (self.workdir / f"{self.host}.out").read_text() + (
            self.workdir / f"{self.host}.err"
        ).read_text()


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def _can_unshare() -> str | None:
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe = subprocess.run(
        ["unshare", "-u", "sh", "-c", "hostname bench-probe"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"unshare -u is not permitted here (it needs root or CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


@pytest.fixture
def machines(pg_url: str, tmp_path: Path) -> Iterator[list[Machine]]:
    reason = _can_unshare()
    if reason:
        import pg

        if os.geteuid() == 0 and os.environ.get(pg.REQUIRE_ENV):  # where CI runs it (root), it must run
            pytest.fail(f"{reason} (running as root, with ${pg.REQUIRE_ENV} set)")
        pytest.skip(reason)
    fleet = []
    for host in HOSTS:
        workdir = tmp_path / host
        workdir.mkdir()
        fleet.append(Machine(host, tmp_path / f"{host}-run", pg_url, workdir))
    yield fleet


def _count(url: str, sql: str, **params: Any) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


@pytest.mark.slow
def test_four_machines_run_at_once_and_a_killed_one_resumes(machines: list[Machine], pg_url: str) -> None:
    run_args = ("run", "-w", W1, "-w", W2, "-w", W3, "-V", ",".join(VERSIONS), "--quick", "--no-report")
    planned = 3 * len(VERSIONS)
    procs = {m.host: m.spawn(*run_args) for m in machines}
    victim = machines[-1]
    try:
        # kill one machine once it has committed a block, seen in the database (not after a sleep)
        def victim_committed() -> bool:
            if not _count(pg_url, "SELECT 1 FROM pg_tables WHERE tablename = 'results'"):
                return False  # the schema is still being created
            rows = _count(
                pg_url,
                "SELECT count(*) FROM results r JOIN runs ON runs.id = r.run_id JOIN machines m ON "
                "m.id = runs.machine_id WHERE m.hostname = :host AND r.engine != 'canary'",
                host=victim.host,
            )
            return rows[0][0] >= len(VERSIONS)

        _poll(victim_committed, f"a committed block of {victim.host}", RUN_TIMEOUT_S, list(procs.values()))
        os.killpg(procs[victim.host].pid, signal.SIGKILL)
        procs[victim.host].wait(timeout=30)

        # another machine's command meanwhile: the victim's run stays running (its heartbeat is fresh)
        other = machines[0].cli("runs", "-f", "json")
        assert other.returncode == 0 and "marked interrupted" not in other.stderr, other.stderr
        status = {r["machine"]: r["status"] for r in json.loads(other.stdout)}
        assert status[victim.host] == "running"

        for m in machines[:-1]:
            rc = procs[m.host].wait(timeout=RUN_TIMEOUT_S)
            assert rc == 0, m.output()
            out = m.output()
            assert re.search(rf"run \d+ complete: {planned} ok, 0 failed in ", out), out
            assert "Error" not in out and "in use by" not in out, out
    finally:
        for p in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)

    runs = {
        host: (run_id, status)
        for run_id, host, status in _count(
            pg_url,
            "SELECT runs.id, m.hostname, runs.status FROM runs JOIN machines m ON m.id = runs.machine_id",
        )
    }
    assert sorted(runs) == sorted(HOSTS), "one run per machine"
    assert {h: s for h, (_, s) in runs.items()} == {
        **{h: "complete" for h in HOSTS[:-1]},
        victim.host: "running",
    }

    # the victim's next command marks its own run interrupted; --resume from that host completes it
    victim_run = runs[victim.host][0]
    listed = victim.cli("runs", "-f", "json")
    assert listed.returncode == 0, listed.stderr
    assert (
        f"note: run {victim_run} was left running by a process that is gone; marked interrupted"
        in listed.stderr
    )
    resumed = victim.cli("run", "--resume", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(rf"run {victim_run} complete: \d+ ok, 0 failed, \d+ already done in ", resumed.stdout), (
        resumed.stdout
    )

    # every planned result stored exactly once per machine, plus one canary each
    rows = _count(
        pg_url,
        "SELECT m.hostname, runs.status, r.engine, r.version_id, w.name, w.content_hash FROM results r "
        "JOIN runs ON runs.id = r.run_id JOIN machines m ON m.id = runs.machine_id "
        "JOIN workloads w ON w.id = r.workload_id",
    )
    for host in HOSTS:
        mine = [tuple(r[2:]) for r in rows if r[0] == host]
        assert all(r[1] == "complete" for r in rows if r[0] == host), host
        planned_keys = [k for k in mine if k[0] != "canary"]
        assert len(planned_keys) == len(set(planned_keys)) == planned, (host, mine)
        assert {(k[1], k[2]) for k in planned_keys} == {(v, w) for v in VERSIONS for w in (W1, W2, W3)}
        assert sum(k[0] == "canary" for k in mine) == 1, host
    assert _count(pg_url, "SELECT count(*) FROM run_locks") == [(0,)], "every lock released"


# --- the import route: imported nights are analysed ----------------------------------------------------------


def _benchsvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BENCHSVC_DB"}
    return subprocess.run([*BENCHSVC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _findings(db: Path) -> list[tuple[Any, ...]]:
    """The recorded findings, keyed by what they are about (run by its uuid: ids differ between stores)."""
    rows = _count(
        f"sqlite:///{db}",
        "SELECT runs.uuid, g.axis, g.engine, g.version_id, w.name, g.metric, g.direction, g.status, "
        "round(g.effect, 9) FROM regressions g JOIN runs ON runs.id = g.run_id "
        "JOIN workloads w ON w.id = g.workload_id",
    )
    return sorted(tuple(r) for r in rows)


def test_import_analyses_what_it_added_as_analyze_does_and_only_once(tmp_path: Path) -> None:
    import numpy as np

    from benchsvc.records import ProcessValues, ResultRecord, WorkloadRef
    from benchsvc.store.ingest import ingest, registry_versions
    from benchsvc.workload import resolve

    spec = resolve(W1)
    ref = WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
    nights, step_night = 33, 30  # +8% time and an exact counter change from night 30
    rng = np.random.default_rng(7)
    source, target = tmp_path / "machine.db", tmp_path / "shared.db"
    engine = open_store(str(source))
    try:
        for night in range(nights):
            record = dataclasses.replace(
                RunRecord.new(mode="default", trigger="nightly"),
                started_at=dt.datetime(2026, 1, 1, 2) + dt.timedelta(days=night),
                git_commit=f"{night:040x}",
                status="complete",
            )
            level = 0.010 * (1.08 if night >= step_night else 1.0) * (1 + rng.normal(0, 0.005))
            procs = tuple(
                ProcessValues(tuple(float(level * (1 + e)) for e in rng.normal(0, 0.01, 5)))
                for _ in range(10)
            )
            counters = {"ds_lock": 0 if night < step_night else 512}
            result = ResultRecord("sim", "up612", ref, counters=counters, modeled_ns=1.0, processes=procs)
            with write_session(engine) as s:
                ingest(s, record, [result], registry_versions() if night == 0 else ())
    finally:
        engine.dispose()
    exported = _benchsvc("export", "--db", str(source), "-o", str(tmp_path / "night.jsonl"), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr

    imported = _benchsvc("import", str(tmp_path / "night.jsonl"), "--db", str(target), cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert f"analysis: {nights} imported runs analysed, 0 analysed before" in imported.stderr, imported.stderr
    # the same analysis as benchsvc analyze on the machine's own store: one path
    analysed = _benchsvc("analyze", "--db", str(source), cwd=tmp_path)
    assert analysed.returncode == 0, analysed.stderr
    found = _findings(target)
    assert found == _findings(source)
    assert {(f[1], f[5]) for f in found} >= {("nightly", "time"), ("nightly", "ds_lock")}, found

    again = _benchsvc("import", str(tmp_path / "night.jsonl"), "--db", str(target), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"analysis: 0 imported runs analysed, {nights} analysed before" in again.stderr, again.stderr
    assert _findings(target) == found


def test_postgresql_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchsvc.store.db import StoreError, create_db_engine

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    with pytest.raises(StoreError) as exc:
        create_db_engine("postgresql+psycopg://bench@127.0.0.1:1/benchsvc")
    assert "psycopg is not installed" in str(exc.value)
    assert "pip install 'benchsvc[postgresql]'" in str(exc.value)


# --- an unattended run logs -----------------------------------------------------------------------------------


def test_a_run_under_systemd_logs_start_results_failures_end_and_findings(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    runtime = tmp_path / "run"
    args = [*BENCHSVC, "run", "-w", W1, "-V", "v1,v2", "--mode", "debug", "--no-report", "--db", db]
    # systemd sets JOURNAL_STREAM for a service whose stderr is the journal
    env = _env(runtime, JOURNAL_STREAM="8:12345", BENCHSVC_TEST_FAIL_WORKER=f"v2/{W1}")
    cp = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert cp.returncode == 1, cp.stderr  # a failed result
    lines = cp.stderr.splitlines()
    assert lines and all(re.match(r"<[2-7]>benchsvc\.run: ", line) for line in lines), cp.stderr
    host = lock.this_host()
    assert re.match(rf"<6>benchsvc\.run: run 1 started on {re.escape(host)}: 2 results to measure ", lines[0])
    assert f"<6>benchsvc.run: run 1 [1/2] sim/v1/{W1}: " in cp.stderr
    assert f"<3>benchsvc.run: run 1 [2/2] sim/v2/{W1} FAILED: " in cp.stderr
    assert "<4>benchsvc.run: run 1 failed: 1 ok, 1 failed, 0 already done, in " in cp.stderr
    assert re.search(r"<[46]>benchsvc\.run: run 1 analysed: \d+ lineage differences", cp.stderr), cp.stderr
    assert cp.stdout.startswith("run 1 failed: 1 ok, 1 failed"), "stdout as at a terminal"

    # elsewhere (not under systemd) nothing is logged: the plain progress lines as before
    plain = subprocess.run(args, cwd=tmp_path, env=_env(runtime), capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert "benchsvc.run:" not in plain.stderr
    assert len([line for line in plain.stderr.splitlines() if line.startswith("[")]) == 2, plain.stderr


# --- per-machine views in the query commands ------------------------------------------------------------------


def _level(machine: int, night: int) -> float:
    """The time of v1 on ``machine`` (0, 1) on ``night``: machine 1 is about 1.5x slower, both vary a little."""
    return 0.010 * (1.5 if machine else 1.0) * (1 + 0.01 * ((night * (7 + machine)) % 5))


@pytest.fixture
def two_machines(tmp_path: Path) -> Path:
    """A store with 9 nights of bench-a and bench-b: v1 and v2 of one workload, v2 with other counters."""
    from benchsvc.records import ProcessValues, ResultRecord, WorkloadRef
    from benchsvc.store.ingest import ingest, registry_versions
    from benchsvc.workload import resolve

    spec = resolve(W1)
    ref = WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
    db = tmp_path / "fleet.db"
    engine = open_store(str(db))
    try:
        for night in range(9):
            for m, host in enumerate(("bench-a", "bench-b")):
                base = RunRecord.new(mode="default", trigger="nightly")
                record = dataclasses.replace(
                    base,
                    machine=dataclasses.replace(base.machine, hostname=host),
                    started_at=dt.datetime(2026, 1, 1, 2, m) + dt.timedelta(days=night),
                    git_commit=f"{night:040x}",
                    status="complete",
                )
                results = [
                    ResultRecord(
                        "sim",
                        version,
                        ref,
                        counters={"rmap_calls": 10 * (i + 1)},
                        modeled_ns=1.0,
                        # every value the night's level: the stored mean is exactly that level
                        processes=tuple(ProcessValues((_level(m, night),) * 4) for _ in range(3)),
                    )
                    for i, version in enumerate(("v1", "v2"))
                ]
                with write_session(engine) as s:
                    ingest(s, record, results, registry_versions())
    finally:
        engine.dispose()
    analysed = _benchsvc("analyze", "--db", str(db), cwd=tmp_path)
    assert analysed.returncode == 0, analysed.stderr
    return db


def _json(db: Path, *args: str) -> Any:
    cp = _benchsvc(*args, "-f", "json", "--db", str(db), cwd=db.parent)
    assert cp.returncode == 0, cp.stderr
    return json.loads(cp.stdout)


def test_query_commands_filter_and_show_machines(two_machines: Path) -> None:
    db = two_machines
    runs = _json(db, "runs", "-n", "100")
    assert sorted({r["machine"] for r in runs}) == ["bench-a", "bench-b"] and len(runs) == 18
    only_a = _json(db, "runs", "-n", "100", "--machine", "bench-a")
    assert [r["run_id"] for r in only_a] == [r["run_id"] for r in runs if r["machine"] == "bench-a"]

    unknown = _benchsvc("runs", "--machine", "bench-z", "--db", str(db), cwd=db.parent)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(
        "Error: no machine 'bench-z' in this database — "
    ) and "bench-a, bench-b" in (unknown.stderr)

    found = _json(db, "regressions", "--all")
    assert {r["machine"] for r in found} == {"bench-a", "bench-b"}, "v2's counters differ on both machines"
    for host in ("bench-a", "bench-b"):
        mine = _json(db, "regressions", "--all", "--machine", host)
        assert [r["id"] for r in mine] == [r["id"] for r in found if r["machine"] == host]
    table = _benchsvc("regressions", "--all", "--db", str(db), cwd=db.parent)
    assert table.returncode == 0 and "machine" in table.stdout.splitlines()[1]

    history = _json(db, "history", "-w", W1, "-V", "v1")
    assert {r["machine"] for r in history} == {"bench-a", "bench-b"}
    assert {r["series"].split("/")[0] for r in history} == {"bench-a", "bench-b"}, "never one spliced series"
    assert {r["machine"] for r in _json(db, "history", "-w", W1, "-V", "v1", "--machine", "bench-b")} == {
        "bench-b"
    }

    latest_b = max((r for r in runs if r["machine"] == "bench-b"), key=lambda r: r["run_id"])
    compared = _json(db, "compare", "--machine", "bench-b", "--all", "-m", "rmap_calls")
    assert compared and {r["machine"] for r in compared} == {"bench-b"}
    header = _benchsvc("compare", "--machine", "bench-b", "--db", str(db), cwd=db.parent)
    assert header.stdout.startswith(f"run {latest_b['run_id']} on bench-b: "), header.stdout


def test_history_puts_one_series_side_by_side_across_machines(two_machines: Path) -> None:
    import statistics

    db = two_machines
    last = 5
    rows = {
        r["machine"]: r
        for r in _json(db, "history", "-w", W1, "-V", "v1", "--compare-machines", "--last", str(last))
    }
    assert sorted(rows) == ["bench-a", "bench-b"]
    median = {
        m: statistics.median(_level(i, n) for n in range(9 - last, 9))
        for i, m in enumerate(("bench-a", "bench-b"))
    }
    for host in rows:
        r = rows[host]
        assert (r["nights"], r["reference"]) == (9, "bench-a")
        assert r["median_ms"] == pytest.approx(median[host] * 1e3)
        assert r["ratio"] == pytest.approx(median[host] / median["bench-a"])
    against_b = _json(db, "history", "-w", W1, "-V", "v1", "--compare-machines", "--reference", "bench-b")
    assert {r["machine"]: r["ratio"] for r in against_b}["bench-b"] == pytest.approx(1.0)
    wrong = _benchsvc(
        "history",
        "-w",
        W1,
        "-V",
        "v1",
        "--compare-machines",
        "--machine",
        "bench-a",
        "--db",
        str(db),
        cwd=db.parent,
    )
    assert wrong.returncode == 1 and wrong.stderr.startswith("Error: --compare-machines shows every machine")


# --- heartbeats and --resume per machine -----------------------------------------------------------------------


def test_the_heartbeat_timer_refreshes_the_hosts_lock_while_a_block_runs(tmp_path: Path) -> None:
    from sqlalchemy import select

    from benchsvc.store.db import read_session
    from benchsvc.store.runs import heartbeats

    url = f"sqlite:///{tmp_path / 'x.db'}"
    then = utcnow() - dt.timedelta(minutes=5)
    run_id = _seed_running(url, lock.this_host(), os.getpid(), then)
    engine = open_store(url)
    try:

        def beat() -> dt.datetime | None:
            with read_session(engine) as s:
                seen = s.scalar(select(RunLock.heartbeat_at).where(RunLock.host == lock.this_host()))
            return seen if seen is not None and seen > then else None

        with heartbeats(engine, run_id, every_s=0.05):  # a long block: nothing committed meanwhile
            fresh = _poll(beat, "a heartbeat from the timer", 30, [])
        assert fresh > then
    finally:
        engine.dispose()


def test_resume_without_a_run_picks_this_hosts_latest_interrupted_run(tmp_path: Path) -> None:
    from benchsvc.records import EnvironmentInfo, MachineInfo
    from benchsvc.store.db import read_session
    from benchsvc.store.runs import RunStoreError, resumable_run

    url = f"sqlite:///{tmp_path / 'x.db'}"
    now = utcnow()
    mine = _seed_running(url, lock.this_host(), _dead_pid(), now - dt.timedelta(hours=1))
    other = _seed_running(url, "bench-elsewhere", 1, now - lock.STALE_AFTER * 2)  # later, on another host
    engine = open_store(url)
    try:
        assert {r.run_id for r in lock.recover(engine)} == {mine, other}
        engine.dispose()
        engine = open_store(url)
        with write_session(engine) as s:
            from benchsvc.store.models import Run

            for run_id in (mine, other):
                s.get(Run, run_id).plan = [  # type: ignore[union-attr]
                    {"engine": "sim", "version": "v1", "workload": W1, "workload_hash": "0" * 64}
                ]
        with read_session(engine) as s, pytest.raises(RunStoreError) as exc:
            resumable_run(s, None, MachineInfo.current(), EnvironmentInfo.current())
        # it chose this host's run (whose plan names a workload the store lacks), not the later one elsewhere
        assert str(exc.value) == f"run {mine}: workload {W1} of its plan is not in the database"
        with read_session(engine) as s, pytest.raises(RunStoreError) as exc:
            resumable_run(s, str(other), MachineInfo.current(), EnvironmentInfo.current())
        assert str(exc.value).startswith(f"run {other} was started on bench-elsewhere (")
        assert str(exc.value).endswith(": resume it where it started")
    finally:
        engine.dispose()
