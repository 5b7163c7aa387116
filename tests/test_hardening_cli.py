"""Hostile and mistaken input at the command line, and databases that cannot be used (issue 11, part B).

Every case goes through the real command line: in process through ``benchsvc.cli.app.run`` (the error edge
included) or, where a signal or pyperf workers are involved, as a ``python -m benchsvc`` subprocess. Each
asserts the exit code, the one ``Error:`` line (no traceback) and, where nothing may be written, that the
database is unchanged (every row of every table, or the file's bytes) or was never created. Databases are
real SQLite files (broken on purpose: read-only, on a full file system, with overwritten pages, not SQLite
at all, two schema revisions) and, where the store is involved, a real PostgreSQL database (tests/pg.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from benchsvc.cli.app import run as cli_run
from benchsvc.engine import simulate
from benchsvc.engine.versions import version_ids
from benchsvc.records import EnvironmentInfo, MachineInfo, ProcessValues, ResultRecord, RunRecord, WorkloadRef
from benchsvc.store.db import head_revision, open_store, write_session
from benchsvc.store.ingest import ingest, registry_versions
from benchsvc.workload import resolve, shipped_workloads_dir

BENCHSVC = (sys.executable, "-m", "benchsvc")
CMD_TIMEOUT = 180
WAIT_TIMEOUT = 60
POLL_S = 0.01

HOST = "bench-a"
MACHINE = MachineInfo(HOST, "AMD EPYC 7763 64-Core Processor", 2, "6.12.0-1-amd64", "x86_64")
ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0", "sqlalchemy": "2.1.9"})
WORKLOADS = ("a-munmap-aligned", "c-straddle-munmap")
VERSIONS = ("base65", "v2", "up612")
PER_RUN = len(WORKLOADS) * len(VERSIONS)
W1 = "a-munmap-aligned"


# --- helpers --------------------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The real command line with its error edge, in process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        cli_run(list(args))
    out = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1 if code else 0), out.out, out.err


def one_error(code: int, err: str) -> str:
    """The single ``Error: <what> — <what to do>`` line of a refused command (exit 1)."""
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert " — " in lines[0], f"no 'what to do' part: {lines[0]}"
    return lines[0]


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BENCHSVC_") or k == "BENCHSVC_RUNTIME_DIR"
    }
    env.update(COLUMNS="200", TERM="dumb", **extra)
    return env


def _default_sigint() -> None:
    """In the child: SIGINT as at a terminal, even if pytest was started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sub(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCHSVC, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=CMD_TIMEOUT
    )


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def state(url: str) -> dict[str, list[str]]:
    """Every row of every table, read by an outside observer (plain SQLAlchemy; SQLite read-only)."""
    if url.startswith("sqlite:///"):
        url = f"sqlite:///file:{url[len('sqlite:///') :]}?mode=ro&uri=true"
    engine = create_engine(url)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: sorted(repr(tuple(row)) for row in conn.execute(select(table)))
                for name, table in sorted(meta.tables.items())
            }
    finally:
        engine.dispose()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ref(name: str) -> WorkloadRef:
    spec = resolve(name)
    return WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)


def fill(url: str, runs: int, *, seed: int = 1) -> None:
    """``runs`` nightly runs of WORKLOADS x VERSIONS on HOST (counters simulated, raw values synthetic)."""
    rng = random.Random(seed)
    sims = {(w, v): simulate(resolve(w), v) for w in WORKLOADS for v in VERSIONS}
    refs = {w: _ref(w) for w in WORKLOADS}
    engine = open_store(url)
    try:
        for night in range(runs):
            started = dt.datetime(2026, 1, 1, 3) + dt.timedelta(days=night)
            record = RunRecord(
                uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                started_at=started,
                machine=MACHINE,
                environment=ENV,
                benchsvc_version="0.1.0",
                git_commit="6b1b4ac0c5d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5",
                mode="quick",
                trigger="nightly",
                pyperf_settings={"values": 3, "processes": 2},
                status="complete",
                finished_at=started + dt.timedelta(minutes=2),
            )
            results = [
                ResultRecord(
                    engine="sim",
                    version=v,
                    workload=refs[w],
                    counters=sims[w, v].counters,
                    modeled_ns=sims[w, v].modeled_ns,
                    processes=tuple(
                        ProcessValues(
                            values=tuple(rng.uniform(1e-4, 2e-4) for _ in range(3)), warmups=(1e-4,), loops=1
                        )
                        for _ in range(2)
                    ),
                    started_at=started,
                    finished_at=started + dt.timedelta(seconds=1),
                )
                for w in WORKLOADS
                for v in VERSIONS
            ]
            with write_session(engine) as s:
                ingest(s, record, results, registry_versions())
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def source_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database with 3 runs (the engine is disposed: the WAL is checkpointed into the file)."""
    path = tmp_path_factory.mktemp("source") / "source.db"
    fill(sqlite_url(path), 3)
    return path


@pytest.fixture
def source(tmp_path: Path, source_template: Path) -> Path:
    """A copy of the 3-run database for this test to break at will."""
    path = tmp_path / "bench.db"
    shutil.copyfile(source_template, path)
    return path


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of 100 runs (600 results): importing it takes seconds, time enough to press Ctrl-C."""
    directory = tmp_path_factory.mktemp("big")
    fill(sqlite_url(directory / "big.db"), 100, seed=2)
    path = directory / "big.jsonl"
    proc = sub("export", "--db", str(directory / "big.db"), "-o", str(path), cwd=directory)
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture
def filled_url(store_url: str) -> str:
    """The 3-run database as SQLite file or PostgreSQL database (conftest's ``store_url``)."""
    fill(store_url, 3)
    return store_url


@pytest.fixture
def empty_url(store_url: str) -> str:
    """A database at the current schema with no runs, SQLite file or PostgreSQL."""
    open_store(store_url).dispose()
    return store_url


@pytest.fixture
def root_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted in tmp_path (root only); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# --- item 4: a fresh database, or no run matching --machine ----------------------------------------------


@pytest.mark.parametrize("limit", [[], ["-n", "0"], ["-n", "5"]], ids=["default", "n0", "n5"])
def test_runs_on_a_fresh_database_is_an_empty_answer(
    capsys: pytest.CaptureFixture[str], empty_url: str, limit: list[str]
) -> None:
    code, out, err = cli(capsys, "runs", "--db", empty_url, *limit, "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == []
    code, out, err = cli(capsys, "runs", "--db", empty_url, *limit, "--format", "csv")
    assert (code, err) == (0, "")
    assert out.strip() == "run_id,started_at,status,mode,trigger,ok,failed,machine,commit"
    code, out, err = cli(capsys, "runs", "--db", empty_url, *limit)  # the table: its header, no rows
    assert (code, err) == (0, "")
    assert "run_id" in out and HOST not in out


def test_runs_on_an_in_memory_database_is_an_empty_answer(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "runs", "--db", "sqlite://", "--format", "json")
    assert (code, err) == (0, "")
    assert json.loads(out) == []


def test_runs_limit_zero_and_n_on_a_filled_database(
    capsys: pytest.CaptureFixture[str], filled_url: str
) -> None:
    code, out, _ = cli(capsys, "runs", "--db", filled_url, "-n", "0", "--format", "json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = cli(capsys, "runs", "--db", filled_url, "-n", "2", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [r["started_at"] for r in rows] == [
        "2026-01-03T03:00:00+00:00",
        "2026-01-02T03:00:00+00:00",
    ]  # ISO 8601, UTC


NO_RUNS_TO_REPORT = (
    "Error: the database has no runs yet, so there is nothing to report — run benchsvc run "
    "(or benchsvc import results) first"
)


def test_report_on_a_database_without_runs_says_so_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, empty_url: str
) -> None:
    before = state(empty_url)
    out_dir = tmp_path / "site"
    code, _, err = cli(capsys, "report", "--db", empty_url, "--out", str(out_dir))
    assert one_error(code, err) == NO_RUNS_TO_REPORT
    assert not out_dir.exists()
    assert state(empty_url) == before


def test_report_on_an_in_memory_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "site"
    code, _, err = cli(capsys, "report", "--db", "sqlite://", "--out", str(out_dir))
    assert one_error(code, err) == NO_RUNS_TO_REPORT
    assert not out_dir.exists()


def test_report_for_a_machine_without_runs_names_the_machines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, filled_url: str
) -> None:
    before = state(filled_url)
    out_dir = tmp_path / "site"
    code, _, err = cli(capsys, "report", "--db", filled_url, "--out", str(out_dir), "--machine", "nosuch")
    assert one_error(code, err) == f"Error: no run from machine 'nosuch' — give one of: {HOST}"
    assert not out_dir.exists()
    assert state(filled_url) == before


# --- item 5: database errors become one line -------------------------------------------------------------


def test_read_only_database_refuses_a_write_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path, big_export: Path
) -> None:
    before = state(sqlite_url(source))
    read_only = f"sqlite:///file:{source}?mode=ro&uri=true"
    code, out, err = cli(capsys, "runs", "--db", read_only, "--format", "json")  # reading is fine
    assert code == 0 and len(json.loads(out)) == 3
    code, _, err = cli(capsys, "import", "--db", read_only, str(big_export))
    line = one_error(code, err)
    assert line.startswith(
        f"Error: the database {source} is read-only (attempt to write a readonly database)"
    )
    code, _, err = cli(capsys, "regressions", "ack", "1", "--note", "x", "--db", read_only)
    assert code == 1  # no regression 1 here, or read-only: either way one line
    one_error(code, err)
    assert state(sqlite_url(source)) == before


def test_database_on_a_read_only_file_system(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source_template: Path, big_export: Path
) -> None:
    """Root ignores file modes: as root the database sits on a tmpfs remounted read-only; otherwise its
    directory and file lose their write permission."""
    directory = tmp_path / "ro"
    directory.mkdir()
    db = directory / "bench.db"
    mounted = False
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        mounted = True
        shutil.copyfile(source_template, db)
        subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
    else:
        shutil.copyfile(source_template, db)
        db.chmod(0o444)
        directory.chmod(0o555)
    try:
        before = digest(db)
        for args in (["runs"], ["import", str(big_export)], ["db", "current"], ["db", "upgrade"]):
            code, _, err = cli(capsys, *args, "--db", str(db))
            line = one_error(code, err)
            assert re.match(
                rf"Error: (cannot open the database {re.escape(str(db))}|the database .* read-only)", line
            ), line
        assert digest(db) == before
        assert sorted(p.name for p in directory.iterdir()) == ["bench.db"]
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=False)
        else:
            directory.chmod(0o755)


def test_disk_full_during_import_rolls_back_and_says_so(
    capsys: pytest.CaptureFixture[str], root_tmpfs: Path, big_export: Path
) -> None:
    db = root_tmpfs / "bench.db"
    code, _, err = cli(capsys, "db", "upgrade", "--db", str(db))
    assert code == 0, err
    # fill the file system up to 160 KiB: room for the -shm and -wal files, not for 600 results
    free = shutil.disk_usage(root_tmpfs).free
    (root_tmpfs / "filler").write_bytes(b"\0" * (free - 160 * 1024))
    before = state(sqlite_url(db))
    code, _, err = cli(capsys, "import", "--db", str(db), str(big_export))
    line = one_error(code, err)
    assert line.startswith(f"Error: the disk holding the database {db} is full (database or disk is full)")
    assert state(sqlite_url(db)) == before
    # the database is intact: with the space back, the same import goes through
    (root_tmpfs / "filler").unlink()
    shutil.move(db, db.parent.parent / db.name)
    moved = db.parent.parent / db.name
    code, out, err = cli(capsys, "import", "--db", str(moved), str(big_export))
    assert code == 0, err
    assert out.strip() == f"{big_export}: 600 results added, 0 already there"


def _overwrite_pages(path: Path, tables: tuple[str, ...]) -> None:
    """Overwrite the root page of each table with random bytes (the file keeps its header and schema)."""
    con = sqlite3.connect(path)
    try:
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        roots = dict(con.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'").fetchall())
    finally:
        con.close()
    rng = random.Random(11)
    with path.open("r+b") as f:
        for table in tables:
            f.seek((roots[table] - 1) * page_size)
            f.write(rng.randbytes(page_size))


@pytest.mark.parametrize(
    "args", [["runs"], ["show"], ["compare"], ["export"], ["report", "--out", "site"]], ids=lambda a: a[0]
)
def test_corrupted_pages_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: Path, args: list[str]
) -> None:
    _overwrite_pages(source, ("runs", "results"))
    before = digest(source)
    code, _, err = cli(capsys, *args, "--db", str(source))
    line = one_error(code, err)
    assert line.startswith(f"Error: the database {source} is damaged (database disk image is malformed)")
    assert digest(source) == before


@pytest.mark.parametrize("args", [["db", "current"], ["db", "upgrade"], ["runs"], ["import"]])
def test_a_file_that_is_not_sqlite_is_one_line_and_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, big_export: Path, args: list[str]
) -> None:
    notes = tmp_path / "notes.db"
    notes.write_bytes(random.Random(5).randbytes(8192))
    extra = [str(big_export)] if args == ["import"] else []
    code, _, err = cli(capsys, *args, *extra, "--db", str(notes))
    line = one_error(code, err)
    assert re.match(
        rf"Error: (cannot open database )?{re.escape(str(notes))} is not a SQLite database", line
    ), line
    assert notes.read_bytes() == random.Random(5).randbytes(8192)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


@pytest.mark.parametrize("args", [["db", "current"], ["db", "upgrade"], ["runs"]])
def test_two_rows_in_alembic_version_are_one_line(
    capsys: pytest.CaptureFixture[str], source: Path, args: list[str]
) -> None:
    con = sqlite3.connect(source)
    with con:
        con.execute("INSERT INTO alembic_version VALUES ('0002')")
    con.close()
    before = state(sqlite_url(source))
    code, _, err = cli(capsys, *args, "--db", str(source))
    line = one_error(code, err)
    assert f"records 2 schema revisions (0002, {head_revision()}) in its table alembic_version" in line
    assert state(sqlite_url(source)) == before


def test_read_only_postgresql_database_is_one_line(
    capsys: pytest.CaptureFixture[str], pg_server: Any, pg_url: str, big_export: Path
) -> None:
    fill(pg_url, 1)
    name = make_url(pg_url).database
    with pg_server._admin() as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        before = state(pg_url)
        code, _, err = cli(capsys, "import", "--db", pg_url, str(big_export))
        line = one_error(code, err)
        assert "read-only transaction" in line and "use the primary server's URL" in line
        assert state(pg_url) == before
    finally:
        with pg_server._admin() as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')


def test_only_database_state_errors_are_translated_bugs_keep_their_traceback() -> None:
    """The edge translates what the database's state causes; a constraint violation or SQL the database
    rejects is a bug in benchsvc and is not turned into a message."""
    from benchsvc.store.db import database_error_message

    full = sa_exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database or disk is full"))
    assert database_error_message(full, "sqlite:////srv/b.db") == (
        "the disk holding the database /srv/b.db is full (database or disk is full) — "
        "free space there and run the command again; the unfinished transaction was rolled back"
    )
    unique = sa_exc.IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    syntax = sa_exc.ProgrammingError("SELEC", {}, sqlite3.ProgrammingError("syntax error"))
    for bug in (unique, syntax, KeyError("id"), ValueError("x"), sqlite3.IntegrityError("UNIQUE")):
        assert database_error_message(bug, "sqlite:////srv/b.db") is None


# --- item 11: numbers out of range -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--noise", "-1"], "Error: --noise -1.0 is out of range — give a number from 0 to 1"),
        (["--noise", "nan"], "Error: --noise nan is out of range — give a number from 0 to 1"),
        (["--noise", "inf"], "Error: --noise inf is out of range — give a number from 0 to 1"),
        (["--step", "nan"], "Error: --step nan is out of range — give a number more than -1 and at most 10"),
        (
            ["--step", "1e300"],
            "Error: --step 1e+300 is out of range — give a number more than -1 and at most 10",
        ),
        (["--trials", "0"], "Error: --trials 0 is out of range — give a whole number from 1 to 10000"),
        (["--seed", "-1"], f"Error: --seed -1 is out of range — give a whole number from 0 to {2**63 - 1}"),
    ],
    ids=lambda x: " ".join(x) if isinstance(x, list) else "",
)
def test_evaluate_refuses_values_out_of_range(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    code, out, err = cli(capsys, "evaluate", *args)
    assert one_error(code, err) == expected
    assert out == ""


def test_huge_ids_and_limits_are_one_line(capsys: pytest.CaptureFixture[str], filled_url: str) -> None:
    before = state(filled_url)
    huge = "99999999999999999999999"
    code, _, err = cli(capsys, "show", huge, "--db", filled_url)
    assert one_error(code, err) == f"Error: no run '{huge}' in this database — see benchsvc runs"
    code, _, err = cli(capsys, "compare", "--run", huge, "--db", filled_url)
    assert one_error(code, err) == f"Error: no run '{huge}' in this database — see benchsvc runs"
    code, _, err = cli(capsys, "regressions", "ack", huge, "--note", "n", "--db", filled_url)
    assert one_error(code, err) == f"Error: no regression {huge} — see benchsvc regressions"
    code, _, err = cli(capsys, "runs", "-n", "99999999999999999999", "--db", filled_url)
    assert one_error(code, err) == (
        f"Error: --limit 99999999999999999999 is out of range — give a whole number from 0 to {2**63 - 1}"
    )
    assert state(filled_url) == before


# --- item 12: the same workload twice --------------------------------------------------------------------


def test_the_same_workload_twice_runs_once(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    shipped = shipped_workloads_dir() / f"{W1}.toml"
    proc = sub(
        "run", "-w", W1, "-w", W1, "-w", str(shipped), "-V", "up612", "--mode", "debug", "--no-report", "-q",
        "--db", str(db), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert re.match(
        r"run 1 complete: 1 ok, 0 failed in \d+:\d\d \(debug mode\)$", proc.stdout.splitlines()[0]
    )
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT status FROM runs").fetchall() == [("complete",)]
        # the planned results (a run may also store a canary result, engine "canary", which is not planned)
        assert con.execute(
            "SELECT r.version_id, w.name FROM results r JOIN workloads w ON w.id = r.workload_id "
            "WHERE r.engine = 'sim'"
        ).fetchall() == [("up612", W1)]
        (plan,) = con.execute("SELECT plan FROM runs").fetchone()
    finally:
        con.close()
    assert [(e["version"], e["workload"]) for e in json.loads(plan)] == [("up612", W1)]


def test_resume_of_a_plan_that_repeats_an_item_counts_it_once(tmp_path: Path) -> None:
    """A run planned by an older benchsvc may list one item twice: --resume counts it once."""
    db = tmp_path / "x.db"
    proc = sub(
        "run", "-w", W1, "-V", "up612", "--mode", "debug", "--no-report", "-q", "--db", str(db), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    con = sqlite3.connect(db)
    with con:
        (plan,) = con.execute("SELECT plan FROM runs WHERE id = 1").fetchone()
        entries = json.loads(plan)
        con.execute(
            "UPDATE runs SET status = 'interrupted', plan = ? WHERE id = 1", (json.dumps(entries + entries),)
        )
    con.close()
    proc = sub("run", "--resume", "-q", "--no-report", "--db", str(db), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"run 1 complete: 0 ok, 0 failed, 1 already done in ", proc.stdout.splitlines()[0])


# --- item 13: a version selection that selects nothing ---------------------------------------------------


@pytest.mark.parametrize("value", ["", ",,", " , "])
def test_versions_selecting_nothing_is_an_error_and_records_nothing(tmp_path: Path, value: str) -> None:
    db = tmp_path / "x.db"
    proc = sub("run", "-w", W1, "-V", value, "--mode", "debug", "--no-report", "--db", str(db), cwd=tmp_path)
    line = one_error(proc.returncode, proc.stderr)
    assert line == (
        f"Error: -V {value!r} selects no version — give version ids (repeat -V or a comma list: "
        f"{', '.join(version_ids())}) or all"
    )
    assert not db.exists()


# --- item 14: unknown names that used to give an empty table ---------------------------------------------


def test_unknown_compare_base_and_metric_and_regressions_axis(
    capsys: pytest.CaptureFixture[str], filled_url: str
) -> None:
    before = state(filled_url)
    code, _, err = cli(capsys, "compare", "--base", "v9", "--db", filled_url)
    assert (
        one_error(code, err)
        == "Error: run 3 has no results of version 'v9' — give --base one of: base65, v2, up612"
    )
    code, _, err = cli(
        capsys, "compare", "--base", "v1", "--db", filled_url
    )  # a real version, not in the run
    assert one_error(code, err).startswith("Error: run 3 has no results of version 'v1'")
    code, _, err = cli(
        capsys, "compare", "--metric", "rmap_calls", "--metric", "tlb_flush", "--db", filled_url
    )
    line = one_error(code, err)
    assert line.startswith("Error: unknown metric 'tlb_flush' — give --metric one of: time, modeled_ns, ")
    assert "rmap_calls" in line
    code, _, err = cli(capsys, "regressions", "--axis", "sideways", "--db", filled_url)
    assert one_error(code, err) == "Error: unknown axis 'sideways' — give one of: lineage, nightly, machine"
    # the known values still answer
    code, out, err = cli(
        capsys,
        "compare",
        "--base",
        "base65",
        "--metric",
        "rmap_calls",
        "--all",
        "--db",
        filled_url,
        "-f",
        "json",
    )
    assert code == 0, err
    assert {(r["version"], r["baseline"]) for r in json.loads(out)} == {
        (v, "base65") for v in VERSIONS if v != "base65"
    } and all(r["metric"] == "rmap_calls" for r in json.loads(out))
    code, out, err = cli(capsys, "regressions", "--axis", "nightly", "--db", filled_url, "-f", "json")
    assert (code, json.loads(out)) == (0, [])
    assert state(filled_url) == before


# --- item 15: quiet wrong answers --------------------------------------------------------------------------


def test_runs_with_a_negative_limit_is_an_error(capsys: pytest.CaptureFixture[str], source: Path) -> None:
    code, out, err = cli(capsys, "runs", "-n", "-5", "--db", str(source))
    assert (
        one_error(code, err)
        == f"Error: --limit -5 is out of range — give a whole number from 0 to {2**63 - 1}"
    )
    assert out == ""


def test_db_current_on_a_missing_path_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db = tmp_path / "nosuch.db"
    code, _, err = cli(capsys, "db", "current", "--db", str(db))
    assert (
        one_error(code, err)
        == f"Error: no database at {db} — run benchsvc run first, or give --db / BENCHSVC_DB"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_database_of_another_program_is_refused_and_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, big_export: Path
) -> None:
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    with con:
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        con.execute("INSERT INTO notes (text) VALUES ('keep me')")
    con.close()
    before = digest(db)
    for args in (["db", "current"], ["db", "upgrade"], ["runs"], ["import", str(big_export)]):
        code, _, err = cli(capsys, *args, "--db", str(db))
        assert one_error(code, err) == (
            f"Error: database sqlite:///{db} has tables but no benchsvc revision: it is not a benchsvc "
            "database — give a benchsvc database (or a new file) with --db"
        )
    assert digest(db) == before  # not even its journal mode changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_db_current_states(capsys: pytest.CaptureFixture[str], tmp_path: Path, empty_url: str) -> None:
    code, out, err = cli(capsys, "db", "current", "--db", empty_url)
    assert code == 0, err
    assert out.rstrip().endswith("(up to date)")
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # an empty SQLite file (no tables)
    code, out, err = cli(capsys, "db", "current", "--db", str(empty))
    assert code == 0, err
    assert re.fullmatch(
        r"sqlite:///\S+: revision -, code expects \w+ \(empty: run benchsvc db upgrade\)", out.strip()
    )


def test_run_with_an_invalid_workload_does_not_create_the_database(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('description = "x"\n[layout]\nsize = "banana"\n')
    db = tmp_path / "x.db"
    for args in (
        ["-w", str(bad)],
        ["-w", "no-such-workload"],
        ["-w", W1, "-V", "v9"],
        ["-w", W1, "--engine", "gpu"],
    ):
        proc = sub("run", *args, "--mode", "debug", "--no-report", "--db", str(db), cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
        assert not db.exists(), args


# --- item 16: Ctrl-C in import and report ----------------------------------------------------------------


def _spawn(args: list[str], cwd: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    out, err = cwd / f"{args[0]}.out", cwd / f"{args[0]}.err"
    with out.open("wb") as o, err.open("wb") as e:
        proc = subprocess.Popen(
            [*BENCHSVC, *args],
            cwd=cwd,
            env=_env(PYTHONUNBUFFERED="1"),
            stdout=o,
            stderr=e,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )
    return proc, out, err


def _wait_until(proc: subprocess.Popen[bytes], probe: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT
    while not probe():
        if proc.poll() is not None:
            pytest.fail(f"benchsvc exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {what} within {WAIT_TIMEOUT} s")
        time.sleep(POLL_S)


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (it is inside the command, past its imports)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def _interrupt(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=WAIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("benchsvc still running after SIGINT")


def test_import_interrupted_writes_nothing_partial(tmp_path: Path, source: Path, big_export: Path) -> None:
    """Two files: the first is imported, Ctrl-C during the second rolls all of it back."""
    first = tmp_path / "first.jsonl"
    proc = sub("export", "--db", str(source), "--run", "1", "-o", str(first), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    db = (tmp_path / "target.db").resolve()
    assert sub("db", "upgrade", "--db", str(db), cwd=tmp_path).returncode == 0
    running, out, err = _spawn(["import", "--db", str(db), str(first), str(big_export)], tmp_path)
    done_line = f"{first}: {PER_RUN} results added, 0 already there"
    _wait_until(running, lambda: done_line in out.read_text(), "first file imported")
    code = _interrupt(running)
    stderr = err.read_text()
    assert code == 130, stderr
    assert stderr.strip() == (
        f"interrupted: imported {first}; not imported: {big_export} — import those again to finish "
        "(each file is one transaction)"
    )
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("SELECT count(*) FROM results").fetchone() == (PER_RUN,)
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    finally:
        con.close()


def test_import_interrupted_before_anything_is_kept(tmp_path: Path, big_export: Path) -> None:
    db = (tmp_path / "target.db").resolve()
    assert sub("db", "upgrade", "--db", str(db), cwd=tmp_path).returncode == 0
    before = state(sqlite_url(db))
    running, _, err = _spawn(["import", "--db", str(db), str(big_export)], tmp_path)
    _wait_until(running, lambda: _has_open(running.pid, db), "database opened")
    code = _interrupt(running)
    stderr = err.read_text()
    assert code == 130, stderr
    assert stderr.strip() == "interrupted: nothing was imported (each file is one transaction)"
    assert state(sqlite_url(db)) == before


def test_report_interrupted_says_what_was_kept(tmp_path: Path, source: Path) -> None:
    db = source.resolve()
    out_dir = tmp_path / "site"
    running, _, err = _spawn(["report", "--db", str(db), "--out", str(out_dir)], tmp_path)
    _wait_until(running, lambda: _has_open(running.pid, db), "database opened")
    code = _interrupt(running)
    stderr = err.read_text()
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    if lines[0].startswith("interrupted before writing"):
        assert lines[0] == f"interrupted before writing: nothing was written, {out_dir} is as it was"
        assert not out_dir.exists()
    else:  # the signal came late, while the files were written
        assert (
            lines[0]
            == f"interrupted while writing: {out_dir} may be partly updated — run benchsvc report again"
        )
