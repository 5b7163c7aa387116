"""Hostile inputs at every entrance get one ``Error:`` line (benchsvc.limits): the name rule, files that are
not regular files, files past the size caps, gzip bombs, deeply nested TOML. Each through the real command
line in a subprocess, on real files and a real SQLite database that stays unchanged."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from benchsvc.errors import BenchsvcError, WorkloadError
from benchsvc.limits import (
    MAX_IMPORT_BYTES,
    MAX_NAME_CHARS,
    MAX_TOML_DEPTH,
    MAX_WORKLOAD_BYTES,
    gunzip_bounded,
    name_problem,
    read_bounded,
    toml_depth,
)
from benchsvc.workload import discover, shipped_workloads_dir

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = (ROOT / "workloads" / "a-munmap-aligned.toml").read_text()


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real command line; a hang is a failure (TimeoutExpired), not a stuck test run."""
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, timeout=timeout
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def _rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("runs", "results", "workloads", "versions", "machines")
        }


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "t.db"
    proc = _cli("db", "upgrade", "--db", str(path))
    assert proc.returncode == 0, proc.stderr
    return path


# --- the name rule --------------------------------------------------------------------------------------


def test_every_shipped_workload_follows_the_name_rule() -> None:
    names = [p.stem for p in discover(shipped_workloads_dir())]
    assert names and [n for n in names if name_problem(n)] == []


@pytest.mark.parametrize("name", ["a", "a-munmap-aligned", "x" * MAX_NAME_CHARS, "v1.2_b", "9"])
def test_usable_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../../PWNED",
        "a/b",
        "x" * (MAX_NAME_CHARS + 1),
        ".hidden",
        "-rf",
        "_x",
        "a b",
        "a<b>",
        "ä",
        "a\n",
    ],
)
def test_unusable_names(name: str) -> None:
    problem = name_problem(name)
    assert (
        problem is not None and "\n" not in problem and problem.endswith("starting with a letter or digit)")
    )


def test_a_workload_file_named_outside_the_rule(tmp_path: Path) -> None:
    path = tmp_path / ("w" * 101 + ".toml")
    path.write_text(SHIPPED)
    line = _one_line_error(_cli("workloads", "validate", str(path)))
    assert line.startswith(f"Error: {path}: '{'w' * 57}'... is not a usable workload name (1 to 100 of")
    assert line.endswith(": rename the file")


# --- bounded, typed reads -------------------------------------------------------------------------------


def test_read_bounded_caps_what_it_reads(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    kw = {"label": "f", "what": "a test file", "error": BenchsvcError}
    assert read_bounded(path, limit_bytes=100, **kw) == b"x" * 100  # type: ignore[arg-type]
    with pytest.raises(
        BenchsvcError, match=r"^f: 100 bytes, more than the 99 bytes allowed for a test file$"
    ):
        read_bounded(path, limit_bytes=99, **kw)  # type: ignore[arg-type]
    # a regular file whose size says 0 (procfs): the read itself stops at the cap
    assert os.stat("/proc/self/status").st_size == 0
    with pytest.raises(BenchsvcError, match=r"^f: more than the 16 bytes allowed for a test file$"):
        read_bounded("/proc/self/status", limit_bytes=16, **kw)  # type: ignore[arg-type]


def test_gunzip_bounded_stops_at_the_cap() -> None:
    member = gzip.compress(b"\0" * 1024)
    kw = {"label": "g", "what": "a test file", "error": BenchsvcError}
    assert gunzip_bounded(member * 3, limit_bytes=3072, **kw) == b"\0" * 3072  # type: ignore[arg-type]
    with pytest.raises(
        BenchsvcError, match=r"^g: decompresses to more than the 3 KiB allowed for a test file"
    ):
        gunzip_bounded(member * 4, limit_bytes=3072, **kw)  # type: ignore[arg-type]
    with pytest.raises(BenchsvcError, match=r"^g: not a readable gzip file: "):
        gunzip_bounded(member[:-9], limit_bytes=3072, **kw)  # type: ignore[arg-type]


def _special_files(tmp_path: Path, suffix: str) -> dict[str, Path]:
    fifo = tmp_path / f"fifo{suffix}"
    os.mkfifo(fifo)
    zero = tmp_path / f"zero{suffix}"
    zero.symlink_to("/dev/zero")
    directory = tmp_path / f"dir{suffix}"
    directory.mkdir()
    big = tmp_path / f"big{suffix}"
    with big.open("wb") as f:  # sparse: costs no disk
        f.truncate((MAX_WORKLOAD_BYTES if suffix == ".toml" else MAX_IMPORT_BYTES) + 1)
    return {
        "fifo": fifo,
        "zero": zero,
        "dir": directory,
        "big": big,
    }


SPECIAL_MESSAGES = {
    "fifo": "is a FIFO (named pipe), not a regular file — give {what}",
    "zero": "is a character device, not a regular file — give {what}",
    "dir": "is a directory, not a regular file — give {what}",
    "big": "{size} bytes, more than the {limit} allowed for {what}",
}


@pytest.mark.parametrize("kind", sorted(SPECIAL_MESSAGES))
def test_workload_file_that_is_not_a_regular_file_or_too_big(kind: str, tmp_path: Path, db: Path) -> None:
    path = _special_files(tmp_path, ".toml")[kind]
    before = _rows(db)
    expected = SPECIAL_MESSAGES[kind].format(
        what="a workload file", size=MAX_WORKLOAD_BYTES + 1, limit="1 MiB"
    )
    suite = pyperf_file(tmp_path / "suite.json")
    commands = [
        ("workloads", "validate", str(path)),
        ("workloads", "show", str(path)),
        ("simulate", str(path)),
        ("import", "--db", str(db), str(suite), "--workload", str(path)),
    ]
    if kind != "dir":  # run -w DIRECTORY runs the workloads in it
        commands.append(
            ("run", "--mode", "debug", "-w", str(path), "-V", "v1", "--db", str(db), "--no-report")
        )
    for args in commands:
        line = _one_line_error(_cli(*args, timeout=60))
        if args[0] == "import":  # the benchmark that needs the workload, then the loader's line
            assert line.startswith(f"Error: {suite}: benchmark 'sim/v1/deep': {path}: {expected}"), line
        else:
            assert line == f"Error: {path}: {expected}", (args, line)
    assert _rows(db) == before


@pytest.mark.parametrize("kind", sorted(SPECIAL_MESSAGES))
def test_import_file_that_is_not_a_regular_file_or_too_big(kind: str, tmp_path: Path, db: Path) -> None:
    path = _special_files(tmp_path, ".jsonl")[kind]
    before = _rows(db)
    expected = SPECIAL_MESSAGES[kind].format(
        what="an import file", size=MAX_IMPORT_BYTES + 1, limit="256 MiB"
    )
    assert (
        _one_line_error(_cli("import", "--db", str(db), str(path), timeout=60))
        == f"Error: {path}: {expected}"
    )
    assert _rows(db) == before


MAXRSS = """
import resource, sys
from benchsvc.cli.app import run
try:
    run(sys.argv[1:])
finally:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_gzip_bomb_stops_at_the_cap(tmp_path: Path, db: Path) -> None:
    """1 GiB of zeros in 1 MiB of gzip: refused at 256 MiB, the process never holding much more than that."""
    member = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = member.compress(b"\0" * 64 * 1024**2) + member.flush()
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(chunk * 16)  # 16 gzip members of 64 MiB each
    before = _rows(db)
    proc = subprocess.run(
        [sys.executable, "-c", MAXRSS, "import", "--db", str(db), str(bomb)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert _one_line_error(proc) == (
        f"Error: {bomb}: decompresses to more than the 256 MiB allowed for an import file — "
        "split it into smaller files"
    )
    maxrss_mib = int(proc.stdout.split()[-1]) / 1024
    assert maxrss_mib < 256 + 400, maxrss_mib  # the cap plus the interpreter, far from the 1 GiB it holds
    assert _rows(db) == before


# --- TOML nesting ---------------------------------------------------------------------------------------

DEEP = {
    "arrays": "x = " + "[" * 500 + "]" * 500,
    "inline-tables": "x = " + "{a = " * 500 + "1" + "}" * 500,
    "dotted-keys": "x" + ".x" * 100_000 + " = 1",
    "table-header": "[" + ".".join(["t"] * 1000) + "]",
}


def test_toml_depth_of_the_shipped_workloads() -> None:
    depths = [toml_depth(p.read_text()) for p in discover(shipped_workloads_dir())]
    assert max(depths) <= 4 < MAX_TOML_DEPTH


def pyperf_file(path: Path) -> Path:
    import pyperf

    run = pyperf.Run(
        [1e-4, 1.1e-4],
        metadata={"name": "sim/v1/deep", "loops": 1, "unit": "second", "date": "2026-11-26 03:00:00"},
        collect_metadata=False,
    )
    pyperf.BenchmarkSuite([pyperf.Benchmark([run])]).dump(str(path), replace=True)
    return path


@pytest.mark.parametrize("shape", sorted(DEEP))
def test_deeply_nested_toml_is_one_line_everywhere(shape: str, tmp_path: Path, db: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(SHIPPED + "\n" + DEEP[shape] + "\n")
    before = _rows(db)
    suite = pyperf_file(tmp_path / "suite.json")
    for args in (
        ("workloads", "validate", str(path)),
        ("workloads", "show", str(path)),
        ("simulate", str(path)),
        ("run", "--mode", "debug", "-w", str(path), "-V", "v1", "--db", str(db), "--no-report"),
        ("import", "--db", str(db), str(suite), "--workload", str(path)),
    ):
        line = _one_line_error(_cli(*args, timeout=60))
        assert f"{path}: nested " in line and f"more than the {MAX_TOML_DEPTH} levels" in line, (args, line)
    assert _rows(db) == before


def test_loader_error_is_a_workload_error_not_recursion() -> None:
    from benchsvc.workload import parse_workload

    for text in DEEP.values():
        with pytest.raises(WorkloadError, match="nested"):
            parse_workload((SHIPPED + text).encode(), name="deep")
