"""Several processes on one SQLite database file at once: writers never see "database is locked", nothing is
lost, readers run alongside (real processes, multiprocessing with spawn). Plus two races shown
deterministically, with a second connection where the other process would be: a write committed while a new
database is being migrated (SQLite), and two writers creating the same provenance row (PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from benchsvc.records import EnvironmentInfo, MachineInfo, ProcessValues, ResultRecord, RunRecord, WorkloadRef
from benchsvc.store.db import (
    check_schema,
    create_db_engine,
    current_revision,
    head_revision,
    open_store,
    read_session,
    write_session,
)
from benchsvc.store.ingest import get_or_create_workload, ingest
from benchsvc.store.models import Counter, Result, Run, Sample, Workload

WRITERS = 3
READERS = 2
TXNS_PER_WRITER = 100
START_TIMEOUT_S = 60  # spawning and importing, on a loaded 2-core machine
SPAWN = mp.get_context("spawn")


def _run_record(i: int) -> RunRecord:
    return RunRecord(
        uuid=f"00000000-0000-4000-8000-{i:012d}",
        started_at=dt.datetime(2026, 1, 1) + dt.timedelta(hours=i),
        machine=MachineInfo(f"host-{i}", "cpu", 2, "6.12", "x86_64"),
        environment=EnvironmentInfo("3.11.9", {"pyperf": "2.11.0"}),
        benchsvc_version="0.1.0",
        git_commit=None,
    )


def _result(writer: int, i: int) -> ResultRecord:
    # the same workload rows for every writer (found-or-created under contention), one result per txn
    return ResultRecord(
        engine="sim",
        version="v1",
        workload=WorkloadRef(f"w{i}", f"{i:064x}", f"name = 'w{i}'"),
        counters={"n": i, "writer": writer},
        modeled_ns=float(i),
        processes=(ProcessValues(values=(i * 1e-6, writer * 1e-6)),),
    )


# --- worker processes (module-level so that spawn can import them) -----------------------------------------


def _writer(db: str, writer: int, n: int, barrier: Any, out: Any) -> None:
    added, errors = 0, []
    try:
        engine = open_store(db)
        barrier.wait(START_TIMEOUT_S)
        for i in range(n):
            try:
                with write_session(engine) as s:
                    added += ingest(s, _run_record(writer), [_result(writer, i)])[1]
            except Exception as exc:
                errors.append(f"txn {i}: {type(exc).__name__}: {exc}".splitlines()[0])
        engine.dispose()
    except Exception:
        errors.append(traceback.format_exc())
    out.put(("writer", writer, added, errors, []))


def _reader(db: str, reader: int, stop: Any, barrier: Any, out: Any) -> None:
    from benchsvc.store.queries import list_runs, run_results  # pandas: only the readers need it

    reads, errors, seen = 0, [], [0]
    try:
        engine = open_store(db)
        barrier.wait(START_TIMEOUT_S)
        while not stop.is_set():
            try:
                with read_session(engine) as s:
                    n = s.scalar(select(func.count()).select_from(Result))
                    runs = list_runs(s)
                    df = run_results(s, int(runs["run_id"].iloc[reader % len(runs)]))
                    # a reader sees whole transactions: every result with its sample and its counters
                    assert s.scalar(select(func.count()).select_from(Sample)) == n, "result without samples"
                    assert df.empty or df["c_n"].notna().all(), "result without counters"
                if n < seen[-1]:
                    errors.append(f"result count went down: {seen[-1]} -> {n}")
                seen.append(n)
                reads += 1
                time.sleep(0.01)  # leave the CPUs mostly to the writers
            except Exception as exc:
                errors.append(f"read {reads}: {type(exc).__name__}: {exc}".splitlines()[0])
        engine.dispose()
    except Exception:
        errors.append(traceback.format_exc())
    out.put(("reader", reader, reads, errors, sorted(set(seen))))


# --- tests ----------------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    db = str(tmp_path / "shared.db")
    engine = open_store(db)  # at head, with one run per writer already there
    with write_session(engine) as s:
        for w in range(WRITERS):
            ingest(s, _run_record(w), [])
    engine.dispose()
    return db


def test_concurrent_writer_processes_lose_nothing_and_readers_keep_reading(sqlite_db: str) -> None:
    out, stop = SPAWN.Queue(), SPAWN.Event()
    barrier = SPAWN.Barrier(WRITERS + READERS)
    writers = [
        SPAWN.Process(target=_writer, args=(sqlite_db, w, TXNS_PER_WRITER, barrier, out), name=f"writer{w}")
        for w in range(WRITERS)
    ]
    readers = [
        SPAWN.Process(target=_reader, args=(sqlite_db, r, stop, barrier, out), name=f"reader{r}")
        for r in range(READERS)
    ]
    for p in writers + readers:
        p.start()
    done: list[tuple] = []
    try:
        while sum(kind == "writer" for kind, *_ in done) < WRITERS:
            done.append(out.get(timeout=START_TIMEOUT_S + 60))
    finally:
        stop.set()
    while len(done) < WRITERS + READERS:
        done.append(out.get(timeout=30))
    for p in writers + readers:
        p.join(timeout=10)
        assert p.exitcode == 0, f"{p.name} exited with {p.exitcode}"

    n_results = WRITERS * TXNS_PER_WRITER
    midway: set[int] = set()
    for kind, idx, count, errors, seen in done:
        assert errors == [], f"{kind} {idx}: {errors[:3]}"
        if kind == "writer":
            assert count == TXNS_PER_WRITER, f"writer {idx} added {count}"
        else:
            assert count > 0, f"reader {idx} never completed a read"
            midway |= {n for n in seen if 0 < n < n_results}
    assert len(midway) > 1, "the readers did not run while the writers wrote"

    engine = open_store(sqlite_db)
    try:
        with read_session(engine) as s:
            assert s.scalar(select(func.count()).select_from(Result)) == n_results
            assert s.scalar(select(func.count()).select_from(Sample)) == n_results
            assert s.scalar(select(func.count()).select_from(Counter)) == 2 * n_results
            n_workloads = s.scalar(select(func.count()).select_from(Workload))
            assert n_workloads == TXNS_PER_WRITER  # shared by the writers, stored once
            assert s.scalar(select(func.count()).select_from(Run)) == WRITERS
            per_run = dict(s.execute(select(Result.run_id, func.count()).group_by(Result.run_id)).all())
            assert sorted(per_run.values()) == [TXNS_PER_WRITER] * WRITERS
    finally:
        engine.dispose()


def test_first_open_of_a_new_database_while_another_process_writes(tmp_path: Path) -> None:
    """The interleaving of that race, made deterministic: another connection (as another process would)
    commits a write just as the migration is about to create its first table."""
    db = tmp_path / "new.db"
    engine = create_db_engine(f"sqlite:///{db}")
    other_writer: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _another_writer_commits(conn, cursor, statement, parameters, context, executemany) -> None:
        if other_writer or not statement.lstrip().upper().startswith("CREATE TABLE"):
            return
        other = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        try:
            other.execute("CREATE TABLE other_writer (x INTEGER)")
            other.execute("DROP TABLE other_writer")
            other_writer.append("committed")
        except sqlite3.OperationalError as exc:  # kept out: the migration holds the write lock (correct)
            other_writer.append(str(exc))
        finally:
            other.close()

    try:
        check_schema(engine)  # what open_store does on a new database
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    assert other_writer, "the migration created no table"


def test_postgresql_two_writers_create_the_same_workload(pg_url: str) -> None:
    engine = open_store(pg_url)
    ref = WorkloadRef("w-new", "f" * 64, "name = 'w-new'")
    second: dict[str, object] = {}

    def other_writer() -> None:
        try:
            with write_session(engine) as s:
                second["id"] = get_or_create_workload(s, ref).id
        except Exception as exc:
            second["error"] = exc

    try:
        with write_session(engine) as s:
            first_id = get_or_create_workload(s, ref).id  # inserted, not yet committed
            t = threading.Thread(target=other_writer)
            t.start()
            deadline = time.monotonic() + 10
            with engine.connect() as probe:  # wait until the other writer's INSERT waits for ours
                waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                while not probe.execute(text(waiting)).scalar() and time.monotonic() < deadline:
                    probe.rollback()
                    time.sleep(0.02)
        t.join(timeout=20)
        assert "error" not in second, repr(second.get("error"))
        assert second["id"] == first_id
    finally:
        engine.dispose()
