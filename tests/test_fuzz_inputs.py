"""A fuzz pass over what benchsvc takes from other machines: ``benchsvc-result/1`` lines with random and mutated
fields (and mutated bytes, gzip, pyperf-looking objects) and workload files, through the real entrance
functions (``read_import_file``, ``check_versions``, ``store_batch`` on a real SQLite file) and through the
real command line in process. The property: a ``BenchsvcError`` or success, never any other exception (no
traceback); and whatever import accepts exports into a file that imports into an empty database with the same
bytes. Bounded example counts and derandomized, so it runs in CI in seconds."""

from __future__ import annotations

import copy
import datetime as dt
import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchsvc.cli.app import run as cli_run
from benchsvc.engine.versions import get_version
from benchsvc.errors import BenchsvcError
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.exchange import (
    FORMAT,
    ExportFilter,
    check_versions,
    export_jsonl,
    read_import_file,
    store_batch,
)
from benchsvc.workload import resolve

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

SPEC = resolve("a-munmap-aligned")
VALID: dict[str, Any] = {
    "format": FORMAT,
    "run": {
        "uuid": "71b29b6a-5bca-499f-ad04-626647c515da",
        "started_at": "2026-11-24T03:00:00.250001Z",
        "finished_at": None,
        "status": "complete",
        "mode": "quick",
        "trigger": "cron",
        "benchsvc_version": "0.1.0",
        "git_commit": None,
        "pyperf_settings": {"values": 3},
    },
    "machine": {
        "hostname": "bench-a",
        "cpu_model": "cpu",
        "cpu_count": 2,
        "kernel": "6.12.0",
        "arch": "x86_64",
    },
    "environment": {"python_version": "3.11.7", "packages": {"pyperf": "2.11.0"}},
    "engine": "sim",
    # a shipped version as the code describes it (a file cannot describe it otherwise)
    "version": {
        "id": "v1",
        "parent": "base65-p1",
        "title": get_version("v1").title,
        "source": get_version("v1").source,
    },
    "workload": {
        "name": SPEC.name,
        "content_hash": SPEC.content_hash,
        "definition": SPEC.source_text,
        "description": SPEC.description,
    },
    "status": "ok",
    "error": None,
    "counters": {"rmap_calls": 12, "tlb_flushes": 1},
    "modeled_ns": 1234.5,
    "processes": [{"values": [0.0002, 0.00021], "warmups": [0.0003], "loops": 4}],
    "warnings": [],
    "pyperf_metadata": {"unit": "second"},
    "started_at": None,
    "finished_at": None,
}

_text = st.text(max_size=8)
_json: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
    | st.sampled_from(
        ["sim", "kernel", "v1", "v2", "up612", "../x", "a-munmap-aligned", "2026-11-24", "0" * 64]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(VALID)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A valid record with a few fields replaced, deleted or added, and new identities (uuid, version)."""
    rec = copy.deepcopy(VALID)
    rec["run"]["uuid"] = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))
    if draw(st.booleans()):
        rec["engine"] = "kernel"
        rec["version"] = {
            "id": draw(st.sampled_from(["k1", "k2", "k3", "v1"])),
            "parent": draw(st.sampled_from([None, "k1", "k2", "k3", "up612"])),
            "title": "kernel",
            "source": "",
        }
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(PATHS))
        parent: Any = rec
        try:
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.sampled_from(["replace", "delete", "add"]))
            if op == "replace":
                parent[path[-1]] = draw(_json)
            elif op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(_text)] = draw(_json)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation changed the shape: skip this one
    return rec


@st.composite
def import_files(draw: st.DrawFn) -> bytes:
    lines = [json.dumps(r) for r in draw(st.lists(records(), min_size=1, max_size=3))]
    data = bytearray(("\n".join(lines) + "\n").encode())
    for _ in range(draw(st.integers(0, 2))):  # byte-level damage too
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate-key"]))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        else:
            data = bytearray(bytes(data).replace(b'"status": ', b'"status": "ok", "status": ', 1))
    raw = bytes(data)
    return gzip.compress(raw) if draw(st.integers(0, 4)) == 0 else raw


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _import(path: Path, url: str) -> int | None:
    """The import entrance as the CLI drives it; the number of results added, None when refused."""
    try:
        batch = read_import_file(path)
        check_versions(None, [batch])
        engine = open_store(url)
        try:
            with read_session(engine) as s:
                check_versions(s, [batch])
            with write_session(engine) as s:
                return store_batch(s, batch).added
        finally:
            engine.dispose()
    except BenchsvcError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
        return None


@FUZZ
@given(raw=import_files())
def test_fuzz_import_entrance(work: Path, raw: bytes) -> None:
    path = work / "fuzz.jsonl"
    path.write_bytes(raw)
    url = f"sqlite:///{work / 'fuzz.db'}"  # one database for every example: the checks against it are fuzzed too
    if not _import(path, url):
        return
    # what was accepted exports, and that export imports into an empty database with the same bytes
    engine = open_store(url)
    try:
        with read_session(engine) as s:
            runs = {json.loads(line)["run"]["uuid"] for line in raw_lines(raw)}
            dumps = []
            for run in sorted(runs):
                out = io.StringIO()
                export_jsonl(s, ExportFilter(run=run), out)
                dumps.append(out.getvalue())
    finally:
        engine.dispose()
    dump = work / "dump.jsonl"
    dump.write_text("".join(dumps))
    empty = work / f"empty-{uuid.uuid4()}.db"
    assert _import(dump, f"sqlite:///{empty}") == len(dump.read_text().splitlines())
    engine = open_store(str(empty))
    try:
        with read_session(engine) as s:
            again = io.StringIO()
            export_jsonl(s, ExportFilter(), again)
    finally:
        engine.dispose()
    assert sorted(again.getvalue().splitlines()) == sorted(dump.read_text().splitlines())
    empty.unlink()


def raw_lines(raw: bytes) -> list[str]:
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return [line for line in raw.decode().splitlines() if line.strip()]


def _cli(*args: str) -> tuple[int, str]:
    """The real command line in process, with its error edge: anything but a BenchsvcError propagates."""
    with pytest.raises(SystemExit) as exc:
        cli_run(list(args))
    code = exc.value.code
    return (code if isinstance(code, int) else 1), ""


@FUZZ
@given(raw=import_files())
def test_fuzz_import_cli(work: Path, raw: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    path = work / "cli.jsonl"
    path.write_bytes(raw)
    code, _ = _cli("import", "--db", str(work / "cli.db"), str(path))
    err = capsys.readouterr().err
    assert code in (0, 1)
    if code == 1:
        assert len(err.splitlines()) == 1 and err.startswith("Error: "), err


PYPERF_LIKE = st.fixed_dictionaries(
    {"version": st.sampled_from(["1.0", 1, None]), "benchmarks": _json},
    optional={"metadata": _json},
)


@FUZZ
@given(doc=PYPERF_LIKE)
def test_fuzz_pyperf_looking_files(
    work: Path, doc: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    path = work / "suite.json"
    path.write_text(json.dumps(doc))
    code, _ = _cli("import", "--db", str(work / "pyperf.db"), str(path), "--engine", "sim", "--version", "v1")
    err = capsys.readouterr().err
    assert code in (0, 1) and (code == 0 or err.startswith("Error: ")), err


SHIPPED_BYTES = SPEC.source_text.encode()


@st.composite
def workload_files(draw: st.DrawFn) -> tuple[str, bytes]:
    data = bytearray(SHIPPED_BYTES)
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "nest"]))
        if op == "insert":
            data[pos:pos] = draw(
                st.binary(max_size=8) | st.sampled_from([b"[", b"{", b".", b"=", b'"', b"\n"])
            )
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        else:
            depth = draw(st.integers(1, 2000))
            data += b"\nx = " + b"[" * depth + b"]" * depth + b"\n"
    name = draw(st.sampled_from(["ok-name", "..", "a b", "x" * 120, "_under", "fine.v2"]))
    return name, bytes(data)


@FUZZ
@given(case=workload_files())
def test_fuzz_workload_files_through_the_cli(
    work: Path, case: tuple[str, bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    name, raw = case
    directory = work / "wl"
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.toml"
    path.write_bytes(raw)
    for args in (("workloads", "validate", str(path)), ("simulate", str(path), "-V", "v1", "--json")):
        code, _ = _cli(*args)
        err = capsys.readouterr().err
        assert code in (0, 1)
        if code == 1:
            assert len(err.splitlines()) == 1 and err.startswith(f"Error: {path}: "), err


def test_the_valid_record_imports(work: Path) -> None:
    """The fuzzers start from a record that is accepted, so their mutations probe past the first check."""
    path = work / "valid.jsonl"
    path.write_text(json.dumps(VALID) + "\n")
    assert _import(path, f"sqlite:///{work / f'valid-{dt.datetime.now().timestamp()}.db'}") == 1
