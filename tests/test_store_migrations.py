"""The schema's life: models and migrations agree, an old database is upgraded with every row kept, a
database written by a newer benchsvc (or not by benchsvc at all) is refused and left alone, downgrades work.

``tests/fixtures/benchsvc-rev0001.db`` is a database at the first revision, with data; the script beside it
made it (and a test checks the two still agree).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from benchsvc.records import EnvironmentInfo, MachineInfo, ProcessValues, ResultRecord, RunRecord, WorkloadRef
from benchsvc.store.db import (
    SchemaOutOfDate,
    SchemaTooNew,
    StoreError,
    create_db_engine,
    current_revision,
    downgrade,
    head_revision,
    open_store,
    read_session,
    upgrade,
    write_session,
)
from benchsvc.store.ingest import ingest, registry_versions
from benchsvc.store.models import Base
from benchsvc.store.queries import get_run, run_results, run_samples, series_history

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REV0001_DB = FIXTURES / "benchsvc-rev0001.db"
#: the tables revision 0001 creates, all of which hold rows in the fixture
REV0001_TABLES = (
    "machines",
    "environments",
    "versions",
    "workloads",
    "runs",
    "results",
    "samples",
    "counters",
    "regressions",
)
TOO_NEW = "9999"


# --- helpers ----------------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BENCHSVC_DB"}
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, env=env, timeout=60
    )


def sqlite_dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a SQLite file, read with the sqlite3 module (not through benchsvc)."""
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in tables}
    finally:
        conn.close()


def dump(engine: Engine, tables: tuple[str, ...] | None = None) -> dict[str, list[tuple]]:
    """Every row of ``tables`` (default: all of them), through SQLAlchemy: works for both databases."""
    names = tables or tuple(sorted(inspect(engine).get_table_names()))
    with engine.connect() as conn:
        return {
            t: sorted((tuple(r) for r in conn.execute(text(f'SELECT * FROM "{t}"'))), key=repr) for t in names
        }


def dump_runs(engine: Engine) -> list[tuple]:
    """The columns of ``runs`` that revision 0001 has."""
    with engine.connect() as conn:
        return [
            tuple(r) for r in conn.execute(text("SELECT id, uuid, machine_id, status, started_at FROM runs"))
        ]


def dump_samples(engine: Engine) -> list[tuple]:
    """The columns of ``samples`` that revision 0001 has (0004 adds each process's metadata)."""
    with engine.connect() as conn:
        rows = conn.execute(text('SELECT result_id, process, loops, "values", warmups FROM samples'))
        return sorted((tuple(r) for r in rows), key=repr)


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def schema_differences(engine: Engine) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, Base.metadata)


def ingest_some(engine: Engine) -> int:
    """A run with two results (samples, counters, a big counter), through the store; the run's id."""
    record = RunRecord(
        uuid="33333333-0000-4000-8000-000000000003",
        started_at=dt.datetime(2026, 2, 1, 2, 0, 0, 123456),
        machine=MachineInfo("bench-m", "cpu", 4, "6.12", "x86_64"),
        environment=EnvironmentInfo("3.11.9", {"pyperf": "2.11.0"}),
        benchsvc_version="0.1.0",
        git_commit="abc",
    )
    results = [
        ResultRecord(
            engine="sim",
            version=v,
            workload=WorkloadRef("w", hashlib.sha256(b"w").hexdigest(), "name = 'w'", "a workload"),
            counters={"ptes_cleared": 512, "big": 2**62 + i},
            modeled_ns=1234.5 + i,
            processes=(ProcessValues((0.001, 0.002), (0.003,), 2), ProcessValues((0.0015,))),
            warnings=("unstable",),
        )
        for i, v in enumerate(("v1", "v2"))
    ]
    with write_session(engine) as s:
        run, added = ingest(s, record, results, versions=registry_versions())
        assert added == 2
        return run.id


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# --- (a) models and migrations agree ----------------------------------------------------------------------


def test_models_and_migrations_agree(store_url: str) -> None:
    engine = open_store(store_url)  # a new database: created by running every migration
    try:
        assert current_revision(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


# --- (b) an old database is upgraded, every row kept ------------------------------------------------------


@pytest.fixture
def rev0001_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "old.db"
    shutil.copyfile(REV0001_DB, copy)
    return copy


def test_fixture_database_is_what_its_script_makes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_rev0001_db", FIXTURES / "make_rev0001_db.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fresh = tmp_path / "fresh.db"
    module.make(fresh)
    assert sqlite_dump(fresh) == sqlite_dump(REV0001_DB)
    committed = sqlite_dump(REV0001_DB)
    assert committed["alembic_version"] == [("0001",)]
    assert all(committed[t] for t in REV0001_TABLES), "every 0001 table holds rows"


def test_database_at_0001_is_refused_then_upgraded_with_every_row_intact(rev0001_copy: Path) -> None:
    before = sqlite_dump(rev0001_copy)
    assert "run_lock" not in before

    with pytest.raises(SchemaOutOfDate) as exc:
        open_store(str(rev0001_copy))
    message = str(exc.value)
    assert "run benchsvc db upgrade" in message and "0001" in message and head_revision() in message
    assert "\n" not in message
    assert sqlite_dump(rev0001_copy) == before  # refused, not touched

    current = cli("db", "current", "--db", str(rev0001_copy))
    assert current.returncode == 0, current.stderr
    assert f"revision 0001, code expects {head_revision()}" in current.stdout

    proc = cli("db", "upgrade", "--db", str(rev0001_copy))
    assert proc.returncode == 0, proc.stderr
    assert f"upgraded 0001 -> {head_revision()}" in proc.stdout

    after = sqlite_dump(rev0001_copy)
    assert after["alembic_version"] == [(head_revision(),)]
    assert "run_locks" in after and after["run_locks"] == []
    for table in REV0001_TABLES:
        old_rows = before[table]
        new_rows = [row[: len(old_rows[0])] for row in after[table]]  # columns added later come last
        assert new_rows == old_rows, table

    # and the store reads the upgraded data
    engine = open_store(str(rev0001_copy))
    try:
        assert schema_differences(engine) == []
        with read_session(engine) as s:
            run = get_run(s, "11111111")
            assert (run.id, run.status, run.machine.hostname) == (1, "complete", "bench-a")
            assert get_run(s).id == 2
            df = run_results(s, 1)
            assert df.set_index("version")["status"].to_dict() == {
                "base65": "ok",
                "v1": "ok",
                "up612": "failed",
            }
            process0 = [0.0011, 0.0012, 0.0013, 0.0014, 0.0011, 0.00115]  # result 1, processes 0 and 1
            process1 = [0.00105, 0.0011, 0.0012, 0.0011, 0.0011, 0.0011]  # result 2
            assert run_samples(s, 1)["value_s"].tolist() == process0 + process1
            big = series_history(s, workload="a-munmap-aligned", version="base65", metric="big_counter")
            assert big["value"].tolist() == [2**62 + 1]
            hist = series_history(s, workload="a-munmap-aligned", version="v1")
            assert hist["workload_hash"].tolist() == ["1" * 64, "2" * 64]  # two contents, kept apart
            assert hist["machine"].tolist() == ["bench-a", "bench-b"]
            assert hist["value"].tolist() == [0.0011, 0.002]
    finally:
        engine.dispose()


def test_database_at_0005_with_a_running_run_upgrades_to_per_machine_locks(store_url: str) -> None:
    """0006 replaces the one lock of the database by one per host: every row is kept, and the lock held at
    0005 moves to its holder's host (and back on a downgrade)."""
    engine = create_db_engine(store_url)
    try:
        upgrade(engine, "0005")
        run_id = ingest_some(engine)
        held = (run_id, 4242, "bench-m", dt.datetime(2026, 2, 1, 2, 0, 1), dt.datetime(2026, 2, 1, 2, 5))
        with engine.begin() as conn:
            conn.execute(text("UPDATE runs SET status = 'running', finished_at = NULL"))
            conn.execute(
                text(
                    "INSERT INTO run_lock (id, run_id, holder_pid, holder_host, acquired_at, heartbeat_at) "
                    "VALUES (1, :run, :pid, :host, :acquired, :beat)"
                ),
                dict(zip(("run", "pid", "host", "acquired", "beat"), held, strict=True)),
            )
        kept = tuple(t for t in table_names(engine) if t not in ("run_lock", "alembic_version"))
        before = dump(engine, kept)
        assert sum(len(before[t]) for t in ("results", "samples", "counters")) > 0

        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert "run_lock" not in table_names(engine)
        assert dump(engine, kept) == before
        (row,) = dump(engine, ("run_locks",))["run_locks"]
        as_text = lambda row: tuple(map(str, row))  # noqa: E731 (SQLite gives timestamps as text)
        # host, run, pid, acquired, heartbeat
        assert as_text(row) == as_text((held[2], held[0], held[1], held[3], held[4]))
        assert schema_differences(engine) == []

        downgrade(engine, "0005")
        (old,) = dump(engine, ("run_lock",))["run_lock"]
        assert as_text(old) == as_text((1, *held))
        assert dump(engine, kept) == before
    finally:
        engine.dispose()


# --- (c) a database ahead of the code ---------------------------------------------------------------------


def test_database_ahead_of_the_code_is_refused_and_left_untouched(store_url: str) -> None:
    engine = open_store(store_url)
    ingest_some(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": TOO_NEW})
    engine.dispose()
    sqlite_file = Path(store_url.removeprefix("sqlite:///")) if store_url.startswith("sqlite") else None
    file_bytes = sqlite_file.read_bytes() if sqlite_file else None
    engine = create_db_engine(store_url)
    before = dump(engine)
    engine.dispose()

    with pytest.raises(SchemaTooNew) as exc:
        open_store(store_url)
    assert TOO_NEW in str(exc.value) and "newer benchsvc" in str(exc.value)
    assert "\n" not in str(exc.value)

    engine = create_db_engine(store_url)
    try:
        with pytest.raises(SchemaTooNew):
            upgrade(engine)
    finally:
        engine.dispose()

    proc = cli("db", "upgrade", "--db", store_url)
    assert_one_line_error(proc, TOO_NEW, "newer benchsvc")
    assert proc.stdout == ""

    engine = create_db_engine(store_url)
    try:
        assert current_revision(engine) == TOO_NEW
        assert dump(engine) == before
    finally:
        engine.dispose()
    if sqlite_file is not None:
        assert sqlite_file.read_bytes() == file_bytes


# --- (d) not a benchsvc database --------------------------------------------------------------------------


@pytest.fixture
def foreign_db(tmp_path: Path) -> Path:
    path = tmp_path / "notes.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('keep me')")
    conn.commit()
    conn.close()
    return path


def test_sqlite_file_with_tables_but_no_revision_is_refused(foreign_db: Path) -> None:
    before = sqlite_dump(foreign_db)
    for create in (True, False):
        with pytest.raises(StoreError, match="not a benchsvc database") as exc:
            open_store(str(foreign_db), create=create)
        assert "\n" not in str(exc.value)
    assert sqlite_dump(foreign_db) == before


def test_db_upgrade_refuses_a_file_that_is_not_a_benchsvc_database(foreign_db: Path) -> None:
    before = sqlite_dump(foreign_db)
    proc = cli("db", "upgrade", "--db", str(foreign_db))
    assert sqlite_dump(foreign_db) == before
    assert_one_line_error(proc, "not a benchsvc database")


# --- (e) db current / db upgrade --------------------------------------------------------------------------


def test_db_upgrade_then_current_print_revision_and_head(store_url: str) -> None:
    head = head_revision()
    proc = cli("db", "upgrade", "--db", store_url)
    assert proc.returncode == 0, proc.stderr
    assert f"upgraded empty -> {head}" in proc.stdout
    proc = cli("db", "current", "--db", store_url)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(f"revision {head}, code expects {head} (up to date)")
    assert "password" not in proc.stdout and proc.stderr == ""


# --- (f) downgrade and upgrade again ----------------------------------------------------------------------


def test_downgrade_to_0001_and_upgrade_again_keeps_the_data(
    store_url: str, request: pytest.FixtureRequest
) -> None:
    engine = open_store(store_url)
    try:
        ingest_some(engine)
        kept = tuple(t for t in REV0001_TABLES if t not in ("runs", "regressions", "samples"))
        before = dump(engine, kept)
        runs_before, samples_before = dump_runs(engine), dump_samples(engine)

        downgrade(engine, "0001")
        assert current_revision(engine) == "0001"
        assert "run_lock" not in table_names(engine)
        assert dump(engine, kept) == before
        assert (dump_runs(engine), dump_samples(engine)) == (runs_before, samples_before)

        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert "run_locks" in table_names(engine)
        assert dump(engine, kept) == before
        assert (dump_runs(engine), dump_samples(engine)) == (runs_before, samples_before)
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(store_url: str) -> None:
    engine = open_store(store_url)
    try:
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert table_names(engine) <= {"alembic_version"}
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
