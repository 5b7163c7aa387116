"""Issue 22: never lose data silently, bounded work, one line for every bad input.

Real parts throughout: SQLite files, the PostgreSQL server the tests start, ``benchsvc`` in child processes
where the behaviour spans processes (a run whose database is deleted, concurrent analyses and imports), a
tmpfs mounted for the full-disk export."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from test_exchange import _pyperf_bench, _pyperf_file, cli, fill

from benchsvc.records import printable_os_text
from benchsvc.store.db import DatabaseVanished, open_store, write_session
from benchsvc.store.models import Run

BENCHSVC = [sys.executable, "-m", "benchsvc"]
TIMEOUT = 300


def bench(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCHSVC, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kw,
    )


def one_error(err: str) -> str:
    """The single ``Error:`` line of a command's stderr (no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("filled") / "source.db"
    fill(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(tmp_path: Path, filled: Path) -> Path:
    path = tmp_path / "store.db"
    shutil.copyfile(filled, path)
    return path


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory, filled: Path) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("export") / "all.jsonl"
    done = bench("export", "--db", str(filled), "-o", str(out), cwd=out.parent)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


# --- 1. a database that vanishes under a command ---------------------------------------------------------


def _add_run(engine: Any, uuid: str) -> None:
    from test_exchange import MACHINE_A, _run

    from benchsvc.store.ingest import ingest

    record = _run(MACHINE_A, dt.datetime(2026, 12, 1, 3, 0))
    record = type(record)(**{**record.__dict__, "uuid": uuid})
    with write_session(engine) as s:
        ingest(s, record, [], [])


def _delete(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)


def _move_away(path: Path) -> None:
    path.rename(path.with_name("moved.db"))


def _replace(path: Path) -> None:
    other = path.with_name("other.db")
    shutil.copyfile(path, other)
    other.rename(path)  # what an operator restoring a copy, or another program, does: a new inode


@pytest.mark.parametrize("change", [_delete, _move_away, _replace], ids=["deleted", "moved", "replaced"])
def test_a_commit_into_a_vanished_database_is_refused(tmp_path: Path, change: Callable[[Path], None]) -> None:
    path = tmp_path / "store.db"
    engine = open_store(f"sqlite:///{path}")
    try:
        _add_run(engine, "00000000-0000-4000-8000-000000000001")
        change(path)
        with pytest.raises(DatabaseVanished, match=r"the database .*store\.db was (deleted|replaced)"):
            _add_run(engine, "00000000-0000-4000-8000-000000000002")
    finally:
        engine.dispose()
    if change is _replace:  # the file now at the path got nothing of the refused commit
        con = sqlite3.connect(path)
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        con.close()


def test_an_unchanged_database_commits_as_before(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    engine = open_store(f"sqlite:///{path}")
    try:
        for i in range(3):
            _add_run(engine, f"00000000-0000-4000-8000-00000000000{i}")
        engine.dispose()  # new connections to the same file are fine too
        _add_run(engine, "00000000-0000-4000-8000-000000000009")
        with write_session(engine) as s:
            assert s.query(Run).count() == 4
    finally:
        engine.dispose()


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_a_run_whose_database_vanishes_stops_with_an_error(tmp_path: Path, change: str) -> None:
    path = tmp_path / "live.db"
    proc = subprocess.Popen(
        [
            *BENCHSVC,
            "run",
            "--mode",
            "debug",
            "-V",
            "v1,v2,up612",
            "--no-report",
            "--no-confirm",
            "--db",
            str(path),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT
    while True:  # until the first results are committed
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        if path.exists():
            with contextlib_suppress():
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
                try:
                    if con.execute("SELECT count(*) FROM results").fetchone()[0] > 0:
                        break
                finally:
                    con.close()
        time.sleep(0.02)
    if change == "delete":
        _delete(path)
    else:
        _replace(path)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode != 0, out
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"Error: the database {path} was {'deleted' if change == 'delete' else 'replaced'}"
    ), err
    assert "Traceback" not in err
    assert "complete:" not in out


class contextlib_suppress:
    """Ignore a database read that races with the run's own writes (retried by the loop)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, sqlite3.Error)


# --- 2. imports a later analysis could not use -----------------------------------------------------------


def _edit(lines: list[dict[str, Any]], edit: Callable[[dict[str, Any]], None]) -> str:
    out = []
    done = False
    for line in lines:
        line = json.loads(json.dumps(line))
        if not done and line["processes"]:
            edit(line)
            done = True
        out.append(json.dumps(line))
    return "\n".join(out) + "\n"


def _set_values(x: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        for p in d["processes"]:
            p["values"] = [x] * len(p["values"]) if not isinstance(x, list) else x

    return edit


def _machine(**kw: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        d["machine"].update(kw)
        d["machine"].pop("fingerprint", None)

    return edit


POISON = {
    "all-zero": (_set_values(0.0), r"processes\[0\]\.values\[0\]: 0\.0 is not a time in seconds"),
    "negative": (_set_values(-1e-4), r"values\[0\]: -0\.0001 is not a time in seconds"),
    "empty-values": (_set_values([]), r"processes\[0\]\.values: "),
    "absurd": (
        _set_values(7200.0),
        r"values\[0\]: 7200\.0 is not a time in seconds \(more than 0, at most 3600\)",
    ),
    "huge": (_set_values(1e300), r"values\[0\]: 1e\+300 is not a time in seconds"),
    "loops-past-int64": (
        lambda d: d["processes"][0].update(loops=2**63),
        r"processes\[0\]\.loops: ",
    ),
    "loops-past-int32": (
        lambda d: d["processes"][0].update(loops=2**31),
        r"processes\[0\]\.loops: 2147483648 is out of range",
    ),
    "cpu-count-past-int64": (_machine(cpu_count=2**63 + 5), r"machine\.cpu_count: "),
    "counter-past-int64": (lambda d: d["counters"].update(rmap_calls=2**63), r"counters\.rmap_calls: "),
    "offset-past-9999": (
        lambda d: d["run"].update(started_at="9999-12-31T23:00:00-02:00"),
        r"run\.started_at: '9999-12-31T23:00:00-02:00' is outside the times benchsvc keeps",
    ),
    "offset-before-year-1": (
        lambda d: d.update(finished_at="0001-01-01T00:00:00+01:00"),
        r"finished_at: '0001-01-01T00:00:00\+01:00' is outside the times benchsvc keeps",
    ),
}


@pytest.mark.parametrize("case", sorted(POISON))
def test_jsonl_import_refuses_what_analysis_cannot_use(
    case: str, tmp_path: Path, lines: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    edit, message = POISON[case]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_edit(lines, edit))
    target = tmp_path / "target.db"
    code, out, err = cli(capsys, "import", "--db", str(target), str(bad))
    assert code == 1, out
    line = one_error(err)
    assert re.search(message, line), line
    assert line.endswith("nothing was imported")
    assert not target.exists() or sqlite3.connect(target).execute(
        "SELECT count(*) FROM results"
    ).fetchone() == (0,)


def _pyperf_json(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    import random

    path = _pyperf_file(
        tmp_path / "suite.json.gz",
        [_pyperf_bench("sim/up612/a-munmap-aligned", {"benchsvc_version": "0.1.0"}, random.Random(3))],
    )
    doc = json.loads(gzip.decompress(path.read_bytes()))
    edit(doc)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(doc))  # NaN and Infinity as Python's json writes them (pyperf reads them)
    return out


def _pyperf_value(x: float) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        runs = doc["benchmarks"][0]["runs"]
        next(r for r in runs if r.get("values"))["values"][0] = x

    return edit


def _pyperf_metadata(**kw: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        for r in doc["benchmarks"][0]["runs"]:
            r.setdefault("metadata", {}).update(kw)
        doc.setdefault("metadata", {}).update(kw)

    return edit


PYPERF_POISON = {
    # pyperf itself refuses a value <= 0 or NaN when it reads the file: one line either way
    "zero": (_pyperf_value(0.0), r"values must be a sequence of number > 0\.0|0\.0 is not a time in seconds"),
    "huge": (_pyperf_value(1e300), r"processes\[0\]\.values\[0\]: 1e\+300 is not a time in seconds"),
    "nan": (
        _pyperf_value(math.nan),
        r"values must be a sequence of number > 0\.0|nan is not a time in seconds",
    ),
    "infinite": (_pyperf_value(math.inf), r"values\[0\]: inf is not a time in seconds"),
    "absurd": (
        _pyperf_value(4000.0),
        r"values\[0\]: 4000\.0 is not a time in seconds \(more than 0, at most 3600\)",
    ),
    "cpu-count": (
        _pyperf_metadata(cpu_count=2**63),
        r"metadata cpu_count 9223372036854775808 is out of range",
    ),
    "date-near-9999": (
        _pyperf_metadata(date="9999-12-31 23:59:59.5", duration=10.0),
        r"a run's date \(with its duration\) is past the year 9999",
    ),
}


@pytest.mark.parametrize("case", sorted(PYPERF_POISON))
def test_pyperf_import_refuses_the_same_ranges(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    edit, message = PYPERF_POISON[case]
    path = _pyperf_json(tmp_path, edit)
    code, out, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(path))
    assert code == 1, out
    line = one_error(err)
    assert re.search(message, line), line


def test_pyperf_import_of_good_values_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _pyperf_json(tmp_path, lambda doc: None)
    code, out, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(path))
    assert code == 0, err
    assert "1 results added" in out


POISON_SQL = {
    "zero-values": """UPDATE samples SET "values" = '[0.0, 0.0, 0.0]' WHERE result_id = 1;
                      UPDATE results SET mean_s = 0.0, median_s = 0.0 WHERE id = 1""",
    "empty-values": """UPDATE samples SET "values" = '[]' WHERE result_id = 2 AND process = 0""",
    "not-numbers": """UPDATE samples SET "values" = '["x", null]' WHERE result_id = 3""",
    "negative-mean": """UPDATE results SET mean_s = -1.0 WHERE id IN (4, 13, 22)""",
}


@pytest.mark.parametrize("case", sorted(POISON_SQL))
def test_analysis_and_views_skip_bad_rows_with_a_warning(
    case: str, tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    con = sqlite3.connect(db)
    con.executescript(POISON_SQL[case])
    con.commit()
    con.close()
    url = str(db)
    commands = [
        ["analyze", "--force"],
        ["show", "1"],
        ["show", "2"],
        ["compare", "--run", "1"],
        ["compare", "--run", "2"],
        ["history", "-w", "a-munmap-aligned", "-V", "up612"],
        ["report", "--out", str(tmp_path / "site")],
        ["analyze", "--force"],  # and again: the database is not poisoned for later calls
    ]
    from benchsvc.store import queries

    warned = False
    for args in commands:
        queries._noted.clear()  # each warning is given once per process; here the commands share one
        code, _, err = cli(capsys, *args, "--db", url)
        assert code == 0, (args, err)
        assert "Traceback" not in err and "Error" not in err, (args, err)
        warned = warned or "warning: " in err
    assert warned, "a bad row was skipped without a word"


# --- 4. imported files and workloads that redefine what exists -------------------------------------------


@pytest.mark.parametrize("field", ["parent", "title", "source"])
def test_import_never_redefines_a_shipped_version(
    field: str, tmp_path: Path, lines: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    value = {"parent": "v1", "title": "mine now", "source": "somewhere else"}[field]
    edited = []
    for line in lines:
        if line["version"]["id"] == "up612":
            line = {**line, "version": {**line["version"], field: value}}
        edited.append(json.dumps(line))
    bad = tmp_path / "redefine.jsonl"
    bad.write_text("\n".join(edited) + "\n")
    code, _, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(bad))
    assert code == 1
    line = one_error(err)
    assert f"version.{field} of 'up612' is {json.dumps(value)}" in line, line
    assert "a file cannot redefine a shipped version" in line


def test_a_run_refuses_two_workloads_with_one_name(tmp_path: Path) -> None:
    shipped = Path(__file__).resolve().parent.parent / "benchsvc" / "workloads" / "b-dontneed-first-page.toml"
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    (tmp_path / "d1" / "same.toml").write_text(shipped.read_text())
    (tmp_path / "d2" / "same.toml").write_text(shipped.read_text().replace("64MiB", "32MiB"))
    (tmp_path / "d2" / "b-dontneed-first-page.toml").write_text(shipped.read_text().replace("64MiB", "16MiB"))
    cases = [
        ["-w", "d1/same.toml", "-w", "d2/same.toml"],
        ["-w", "b-dontneed-first-page", "-w", "d2/b-dontneed-first-page.toml"],
        ["-w", "d1", "-w", "d2"],
    ]
    for ws in cases:
        done = bench("run", *ws, "--no-report", "--db", "x.db", cwd=tmp_path)
        assert done.returncode == 1
        line = one_error(done.stderr)
        assert "two different workloads are named" in line, line
        assert not (tmp_path / "x.db").exists()
    # the same file twice is one workload, as before
    (tmp_path / "d3").mkdir()
    (tmp_path / "d3" / "same.toml").write_text(shipped.read_text())
    done = bench(
        "run",
        "-w",
        "d1/same.toml",
        "-w",
        "d3/same.toml",
        "--mode",
        "debug",
        "-V",
        "v1",
        "--no-report",
        "--db",
        "y.db",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "1 ok" in done.stdout


# --- 3. concurrent analysis and import on PostgreSQL -----------------------------------------------------


def _regression_keys(url: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text(
                        "SELECT run_id, axis, engine, version_id, baseline_version_id, baseline_run_id, "
                        "workload_id, metric, direction FROM regressions"
                    )
                )
            ]
    finally:
        engine.dispose()


def _scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def run_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real simulated run, exported: it has lineage findings to record."""
    work = tmp_path_factory.mktemp("simrun")
    done = bench(
        "run", "--mode", "debug", "-w", "b-dontneed-first-page", "-w", "c-straddle-munmap", "-V", "base65,v1,v2,up612",
        "--no-report", "--no-confirm", "--db", "run.db", cwd=work,
        env={"BENCHSVC_RUNTIME_DIR": str(work)},  # a machine lock of its own (module fixture: no autouse env)
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = work / "run.jsonl"
    done = bench("export", "--db", "run.db", "-o", str(out), cwd=work)
    assert done.returncode == 0, done.stderr
    return out


def _together(*commands: list[str], cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen([*BENCHSVC, *c], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    outs = []
    for c, p in zip(commands, procs, strict=True):
        out, err = p.communicate(timeout=TIMEOUT)
        outs.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return outs


def test_two_imports_of_one_file_at_once_record_it_once(
    tmp_path: Path, pg_url: str, run_export: Path
) -> None:
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    assert bench("db", "upgrade", "--db", url, cwd=tmp_path).returncode == 0
    first, second = _together(
        ["import", "--db", url, str(run_export)], ["import", "--db", url, str(run_export)], cwd=tmp_path
    )
    for done in (first, second):
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    n = sum(1 for _ in run_export.open())
    assert _scalar(pg_url, "SELECT count(*) FROM results") == n
    said = [d.stdout for d in (first, second)]
    assert sum(f"{n} results added" in s for s in said) == 1, said
    assert sum(f"0 results added, {n} already there" in s for s in said) == 1, said
    keys = _regression_keys(pg_url)
    assert keys, "the run has lineage findings to record"
    assert len(keys) == len(set(keys)), "a finding was recorded twice"
    assert _scalar(pg_url, "SELECT count(*) FROM run_analyses") == 1


def test_two_analyses_of_one_run_at_once_record_it_once(
    tmp_path: Path, pg_url: str, run_export: Path
) -> None:
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    done = bench("import", "--db", url, str(run_export), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    recorded = sorted(_regression_keys(pg_url))
    assert recorded
    for round_ in range(2):
        engine = create_engine(pg_url)
        with engine.begin() as conn:  # the run as it was before any analysis
            conn.execute(text("DELETE FROM regressions"))
            conn.execute(text("DELETE FROM run_analyses"))
        engine.dispose()
        results = _together(["analyze", "--db", url], ["analyze", "--db", url], cwd=tmp_path)
        for r in results:
            assert r.returncode == 0, r.stderr
            assert "Traceback" not in r.stderr
        said = [r.stdout for r in results]
        assert sum("analysed 1 runs" in s for s in said) == 1, said
        assert (
            sum(
                ("analysed meanwhile by another benchsvc" in s) or ("skipped 1 already analysed" in s)
                for s in said
            )
            == 1
        ), said
        assert sorted(_regression_keys(pg_url)) == recorded, round_
        assert _scalar(pg_url, "SELECT count(*) FROM run_analyses") == 1


# --- 6. one line for every bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["export"],
        ["regressions"],
        ["history", "-w", "a-munmap-aligned", "-V", "up612"],
        ["report", "--out", "site"],
        ["analyze"],
    ],
    ids=lambda a: a[0],
)
@pytest.mark.parametrize(
    "when",
    ["0001-01-01T00:00+01:00", "9999-12-31T23:00-02:00", "9999-12-31T23:59:59.999999-00:01", "2026-13-01"],
)
def test_since_out_of_range_is_one_error_line_everywhere(
    args: list[str], when: str, db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chdir(tmp_path)
    code, out, err = cli(capsys, *args, "--since", when, "--db", str(db))
    assert code == 1, out
    line = one_error(err)
    assert line.startswith(f"Error: --since {when!r} ") or line.startswith(f"Error: --since '{when}'"), line


def test_since_offsets_are_honoured_by_every_command(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runs start 2026-11-24 03:00:00.25 and 2026-11-25 03:00:00.000001 UTC: 05:00+02:00 on the 25th is
    03:00 UTC, before the second night; 05:00:01+02:00 is after it."""
    from benchsvc.cli.analysis_cmds import _date
    from benchsvc.store.exchange import parse_when

    assert _date("2026-11-25T05:00+02:00", "--since") == dt.datetime(2026, 11, 25, 3, 0)
    assert parse_when("2026-11-25T05:00+02:00", "--since") == dt.datetime(2026, 11, 25, 3, 0)
    assert parse_when("2026-11-24T22:00-05:00", "--since") == dt.datetime(2026, 11, 25, 3, 0)

    def rows(*args: str) -> int:
        code, out, err = cli(capsys, *args, "--db", str(db), "--format", "json")
        assert code == 0, err
        return len(json.loads(out))

    for since, nights in (
        ("2026-11-25T05:00+02:00", 2),
        ("2026-11-25T05:00:01+02:00", 0),
        ("2026-11-24T03:00Z", 3),
    ):
        code, out, err = cli(capsys, "export", "--since", since, "--db", str(db))
        assert code == 0, err
        assert len(out.splitlines()) == 9 * nights
        if nights:
            assert rows("history", "-w", "a-munmap-aligned", "-V", "up612", "--since", since) == nights
        else:
            code, _, err = cli(
                capsys, "history", "-w", "a-munmap-aligned", "-V", "up612", "--since", since, "--db", str(db)
            )
            assert code == 1 and "no time history" in one_error(err)


def test_until_the_last_day_is_everything(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for until in ("9999-12-31", "9999-12-31T23:59:59.999999", "9999-12-31T23:59:59.999999Z"):
        code, out, err = cli(capsys, "export", "--until", until, "--db", str(db))
        assert code == 0, err
        assert len(out.splitlines()) == 27


@pytest.fixture
def small_fs(tmp_path: Path) -> Any:
    """A 1 MiB tmpfs (root only): a disk that fills up. Unmounted afterwards, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_export_to_a_full_disk_leaves_no_truncated_file(
    small_fs: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # make the export bigger than the disk: every result with many values
    con = sqlite3.connect(db)
    con.execute("""UPDATE samples SET "values" = ?""", (json.dumps([1.2345678901234567e-4] * 3000),))
    con.commit()
    con.close()
    target = small_fs / "export.jsonl"
    target.write_text("the previous export\n")
    for fmt in ("jsonl", "csv"):
        code, out, err = cli(capsys, "export", "--db", str(db), "-f", fmt, "-o", str(target))
        if fmt == "csv":  # CSV has no raw values: it fits
            assert code == 0, err
            target.write_text("the previous export\n")
            continue
        assert code == 1, out
        line = one_error(err)
        assert f"cannot write {target}: No space left on device" in line, line
        assert target.read_text() == "the previous export\n"
        assert sorted(p.name for p in small_fs.iterdir()) == ["export.jsonl"]


def test_export_to_dev_full_and_a_full_stdout(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "export", "--db", str(db), "-o", "/dev/full")
    assert code == 1
    assert "cannot write /dev/full: No space left on device" in one_error(err)
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*BENCHSVC, "export", "--db", str(db)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
        )
    assert done.returncode == 1
    assert "cannot write the export to standard output: No space left on device" in one_error(done.stderr)


def test_export_replaces_the_file_only_when_complete(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.jsonl"
    os.symlink(target, tmp_path / "link.jsonl")
    code, _, err = cli(capsys, "export", "--db", str(db), "-o", str(tmp_path / "link.jsonl"))
    assert code == 0, err
    assert (tmp_path / "link.jsonl").is_symlink() and len(target.read_text().splitlines()) == 27
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_non_ascii_and_non_utf8_text_never_crash_output(db: Path, tmp_path: Path) -> None:
    assert printable_os_text("h\udcffst") == "h\\xffst"
    assert printable_os_text("b\u00e4nch") == "b\u00e4nch"
    con = sqlite3.connect(db)
    con.execute("UPDATE machines SET hostname = 'b\u00e4nch-\u2603' WHERE hostname = 'bench-b'")
    con.execute("UPDATE results SET error = 'd\u00e9j\u00e0 vu' WHERE status = 'failed'")
    con.commit()
    con.close()
    for env in (
        {"PYTHONIOENCODING": "ascii"},
        {"LANG": "C", "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"},
    ):
        for args in (["runs"], ["show", "3"], ["show", "1"], ["export", "-f", "csv"]):
            done = subprocess.run(
                [*BENCHSVC, *args, "--db", str(db)],
                capture_output=True,
                timeout=TIMEOUT,
                env={**os.environ, **env},
            )
            assert done.returncode == 0, (args, env, done.stderr.decode(errors="replace"))
            assert b"Traceback" not in done.stderr
            if args[0] == "export":
                assert b"b\\xe4nch-\\u2603" in done.stdout


@pytest.mark.parametrize(
    "url, what",
    [
        ("postgresql://u:secret@localhost:abc/db", "the port, after host:, must be a number"),
        ("postgresql://u@localhost/db?connect_timeout=xyz", "bad value for connect_timeout: 'xyz'"),
        ("postgresql://u@localhost:5432:6/db", "must be a number"),
    ],
)
def test_bad_postgresql_urls_are_one_error_line(
    url: str, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "runs", "--db", url)
    assert code == 1
    line = one_error(err)
    assert what in line, line
    assert "secret" not in line


def test_ctrl_c_during_the_analysis_after_an_import_says_what_to_run(
    tmp_path: Path,
    lines: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import benchsvc.findings

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(line) + "\n" for line in lines))

    def interrupted(*_: Any, **__: Any) -> Any:
        raise KeyboardInterrupt  # Ctrl-C arriving while the first imported run is analysed

    monkeypatch.setattr(benchsvc.findings, "analyze_run", interrupted)
    code, out, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(good))
    assert code == 130
    assert "27 results added" in out
    assert (
        err.strip()
        == f"interrupted: imported {good}, but their analysis was cut short — run benchsvc analyze to finish it"
    )


def test_a_line_that_only_names_a_shipped_version_imports(
    tmp_path: Path, lines: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    named = [{**line, "version": {"id": line["version"]["id"]}} for line in lines]
    path = tmp_path / "named.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in named))
    code, out, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(path))
    assert code == 0, err
    assert f"{len(lines)} results added" in out
