"""benchsvc export / import: the benchsvc-result/1 JSON Lines round trip, CSV, pyperf JSON, bad input.

Source databases are real SQLite files filled through ``store.ingest`` with records whose counters come from
real simulations and whose raw values are synthetic (seeded), with full-precision floats, microsecond
timestamps, nested metadata, and a failed result.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from benchsvc.cli.app import run as cli_run
from benchsvc.engine import simulate
from benchsvc.records import (
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    VersionInfo,
    WorkloadRef,
)
from benchsvc.store import models
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.exchange import (
    FORMAT,
    MAX_VALUE_S,
    ExportFilter,
    _platform_kernel_arch,
    export_jsonl,
    read_import_file,
    store_batch,
)
from benchsvc.store.ingest import ingest, registry_versions
from benchsvc.workload import resolve

WORKLOADS = ("a-munmap-aligned", "c-straddle-munmap", "e-mixed-order0-large")
VERSIONS = ("base65", "v2", "up612")
TABLES = (
    models.Machine,
    models.Environment,
    models.Version,
    models.Workload,
    models.Run,
    models.Result,
    models.Sample,
    models.Counter,
)

MACHINE_A = MachineInfo("bench-a", "AMD EPYC 7763 64-Core Processor", 2, "6.12.0-1-amd64", "x86_64")
MACHINE_B = MachineInfo("bench-b", "Intel(R) Xeon(R) \u00e9dition", 8, "6.1.0-18-amd64", "aarch64")
ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0", "sqlalchemy": "2.1.9", "numpy": "2.4.6"})


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the real command line (with its error edge) in process: exit code, stdout, stderr."""
    with pytest.raises(SystemExit) as exc:
        cli_run(list(args))
    out = capsys.readouterr()
    code = exc.value.code
    return (code if isinstance(code, int) else 1 if code else 0), out.out, out.err


def _workload(name: str) -> WorkloadRef:
    spec = resolve(name)
    return WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)


def _result(rng: random.Random, workload: str, version: str, t0: dt.datetime) -> ResultRecord:
    sim = simulate(resolve(workload), version)
    processes = tuple(
        ProcessValues(
            values=tuple(rng.uniform(1e-4, 3e-4) for _ in range(3)),
            warmups=(rng.uniform(1e-4, 5e-4),),
            loops=rng.choice((1, 4, 16)),
        )
        for _ in range(2)
    )
    return ResultRecord(
        engine="sim",
        version=version,
        workload=_workload(workload),
        counters=sim.counters,
        modeled_ns=sim.modeled_ns + rng.random(),  # a float with all its digits
        processes=processes,
        warnings=("the standard deviation (31.2 us) is 14% of the mean (223 us)",)
        if rng.random() < 0.5
        else (),
        pyperf_metadata={
            "unit": "second",
            "loops": 4,
            "zz": {"b": 1.5, "a": [1, "x"]},
            "cpu_freq": "0=2 GHz",
        },
        started_at=t0 + dt.timedelta(seconds=rng.random()),
        finished_at=t0 + dt.timedelta(seconds=1 + rng.random()),
    )


def _run(machine: MachineInfo, started: dt.datetime, **kw: object) -> RunRecord:
    return RunRecord(
        uuid=str(uuid.UUID(int=random.Random(f"{machine.hostname} {started}").getrandbits(128), version=4)),
        started_at=started,
        machine=machine,
        environment=ENV,
        benchsvc_version="0.1.0",
        git_commit="6b1b4ac0c5d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5",
        mode="quick",
        trigger="cron",
        pyperf_settings={"values": 3, "processes": 2, "min_time": 0.02},
        status="complete",
        finished_at=started + dt.timedelta(minutes=2, microseconds=123),
        **kw,  # type: ignore[arg-type]
    )


def fill(url: str) -> list[RunRecord]:
    """Three runs on two machines: 3 workloads x 3 versions each, one failed result."""
    rng = random.Random(42)
    runs = [
        _run(MACHINE_A, dt.datetime(2026, 11, 24, 3, 0, 0, 250_001)),
        _run(MACHINE_A, dt.datetime(2026, 11, 25, 3, 0, 0, 1)),
        _run(MACHINE_B, dt.datetime(2026, 11, 25, 3, 0, 0, 1)),  # same start: ordered by uuid
    ]
    engine = open_store(url)
    try:
        for run in runs:
            results = [_result(rng, w, v, run.started_at) for w in WORKLOADS for v in VERSIONS]
            results[-1] = ResultRecord(
                engine="sim",
                version=results[-1].version,
                workload=results[-1].workload,
                status="failed",
                error="pyperf worker exited with 1: Traceback | ... | MemoryError",
            )
            with write_session(engine) as s:
                ingest(s, run, reversed(results), registry_versions())  # stored out of export order
    finally:
        engine.dispose()
    return runs


def counts(url: str) -> dict[str, int]:
    engine = open_store(url)
    try:
        with read_session(engine) as s:
            return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0 for m in TABLES}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def source_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / "source.db"
    fill(f"sqlite:///{path}")  # the engine is disposed: the WAL is checkpointed into the file
    return path


@pytest.fixture
def source(tmp_path: Path, source_template: Path) -> str:
    """A copy of the filled source database, for this test to change at will."""
    path = tmp_path / "source.db"
    shutil.copyfile(source_template, path)
    return f"sqlite:///{path}"


def export_text(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> str:
    code, out, err = cli(capsys, "export", "--db", url, *args)
    assert code == 0, err
    return out


# --- round trip -----------------------------------------------------------------------------------------


def test_round_trip_into_an_empty_database_gives_the_same_bytes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    first = tmp_path / "first.jsonl"
    code, out, _ = cli(capsys, "export", "--db", source, "--output", str(first))
    assert code == 0 and out.strip() == f"{first}: 27 results"
    lines = first.read_text().splitlines()
    assert len(lines) == 27

    target = f"sqlite:///{tmp_path / 'target.db'}"
    code, out, err = cli(capsys, "import", "--db", target, str(first))
    assert code == 0, err
    assert out.strip() == f"{first}: 27 results added, 0 already there"
    assert export_text(capsys, target).encode() == first.read_bytes()
    # every row but the versions no result refers to (the source holds the whole registry)
    assert {**counts(target), "versions": 0} == {**counts(source), "versions": 0}


def test_export_lines_are_sorted_exact_and_complete(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    runs = fill(url)
    lines = export_text(capsys, url).splitlines()
    docs = [json.loads(line) for line in lines]
    for line, doc in zip(lines, docs, strict=True):
        assert line == json.dumps(doc, sort_keys=True, separators=(",", ":"))
        assert doc["format"] == FORMAT
    order = [
        (d["run"]["started_at"], d["run"]["uuid"], d["engine"], d["version"]["id"], d["workload"]["name"])
        for d in docs
    ]
    assert order == sorted(order)
    assert docs[0]["run"]["started_at"] == "2026-11-24T03:00:00.250001Z"
    assert docs[0]["machine"]["fingerprint"] == MACHINE_A.fingerprint
    assert docs[0]["environment"]["fingerprint"] == ENV.fingerprint
    assert docs[0]["version"] == {
        "id": "base65",
        "parent": None,
        "title": next(v.title for v in registry_versions() if v.id == "base65"),
        "source": next(v.source for v in registry_versions() if v.id == "base65"),
    }
    # the floats are the very floats that were ingested
    rng = random.Random(42)
    expected = _result(rng, WORKLOADS[0], VERSIONS[0], runs[0].started_at)
    first = next(
        d
        for d in docs
        if d["run"]["uuid"] == runs[0].uuid
        and d["version"]["id"] == "base65"
        and d["workload"]["name"] == WORKLOADS[0]
    )
    assert first["modeled_ns"] == expected.modeled_ns
    assert [tuple(p["values"]) for p in first["processes"]] == [p.values for p in expected.processes]
    assert [p["loops"] for p in first["processes"]] == [p.loops for p in expected.processes]
    assert first["counters"] == expected.counters
    assert first["pyperf_metadata"]["zz"] == {"a": [1, "x"], "b": 1.5}
    failed = [d for d in docs if d["status"] == "failed"]
    assert len(failed) == 3 and all(d["processes"] == [] and d["modeled_ns"] is None for d in failed)
    assert failed[0]["error"].startswith("pyperf worker exited")


def test_import_twice_adds_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str):
    dump = tmp_path / "all.jsonl"
    dump.write_text(export_text(capsys, source))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert cli(capsys, "import", "--db", target, str(dump))[0] == 0
    before = counts(target)
    code, out, _ = cli(capsys, "import", "--db", target, str(dump))
    assert code == 0
    assert out.strip() == f"{dump}: 0 results added, 27 already there"
    assert counts(target) == before
    # and into the source itself: everything is already there
    code, out, _ = cli(capsys, "import", "--db", source, str(dump))
    assert out.strip() == f"{dump}: 0 results added, 27 already there"


def test_partial_overlap_counts_added_and_already(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    lines = export_text(capsys, source).splitlines(keepends=True)
    part, whole = tmp_path / "part.jsonl", tmp_path / "whole.jsonl"
    part.write_text("".join(lines[:10]))
    whole.write_text("".join(lines))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    code, out, _ = cli(capsys, "import", "--db", target, str(part), str(whole))
    assert code == 0
    assert out.splitlines() == [
        f"{part}: 10 results added, 0 already there",
        f"{whole}: 17 results added, 10 already there",
    ]
    assert export_text(capsys, target) == "".join(lines)


def test_gzip_jsonl_imports(capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str):
    import gzip

    text = export_text(capsys, source)
    dump = tmp_path / "all.jsonl.gz"
    dump.write_bytes(gzip.compress(text.encode()))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    assert (
        cli(capsys, "import", "--db", target, str(dump))[1].strip()
        == f"{dump}: 27 results added, 0 already there"
    )
    assert export_text(capsys, target) == text


# --- property: any storable record survives export -> import -> export ------------------------------

_text = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
_name = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF, blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
)
#: a workload name by the name rule (benchsvc.limits.name_problem)
_workload_name = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,11}", fullmatch=True)
_float = st.floats(allow_nan=False, allow_infinity=False)
_seconds = st.floats(0.0, MAX_VALUE_S, exclude_min=True)
_when = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2100, 1, 1))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _float | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _records(draw: st.DrawFn) -> tuple[RunRecord, ResultRecord, VersionInfo]:
    definition = draw(_text)
    workload = WorkloadRef(
        draw(_workload_name), hashlib.sha256(definition.encode()).hexdigest(), definition, draw(_text)
    )
    # ids apart from the simulated registry's, a parent never the version itself (import refuses both)
    version_id = "k" + draw(_name)
    version = VersionInfo(
        version_id,
        "kernel",
        draw(st.none() | _name.filter(lambda p: p != version_id)),
        draw(_text),
        draw(_text),
    )
    run = RunRecord(
        uuid=str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4)),
        started_at=draw(_when),
        machine=MachineInfo(draw(_text), draw(_text), draw(st.integers(0, 512)), draw(_text), draw(_text)),
        environment=EnvironmentInfo(draw(_text), draw(st.dictionaries(_name, _text, max_size=3))),
        benchsvc_version=draw(_text),
        git_commit=draw(st.none() | _text),
        mode=draw(_name),
        trigger=draw(_name),
        pyperf_settings=draw(st.dictionaries(_text, _json, max_size=3)),
        status=draw(st.sampled_from(["running", "complete", "failed", "interrupted"])),
        finished_at=draw(st.none() | _when),
    )
    processes = draw(
        st.lists(
            st.builds(
                ProcessValues,
                st.lists(_seconds, min_size=1, max_size=4).map(tuple),
                st.lists(_seconds, max_size=2).map(tuple),
                st.integers(1, 2**20),
            ),
            max_size=3,
        )
    )
    result = ResultRecord(
        engine="kernel",
        version=version.id,
        workload=workload,
        status=draw(st.sampled_from(["ok", "failed"])),
        error=draw(st.none() | _text),
        counters=draw(st.dictionaries(_name, st.integers(-(2**63), 2**63 - 1), max_size=4)),
        modeled_ns=draw(st.none() | _float),
        processes=tuple(processes),
        warnings=tuple(draw(st.lists(_text, max_size=2))),
        pyperf_metadata=draw(st.dictionaries(_text, _json, max_size=4)),
        started_at=draw(st.none() | _when),
        finished_at=draw(st.none() | _when),
    )
    return run, result, version


@pytest.fixture(scope="module")
def store_pair(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("property")
    src, dst = open_store(str(base / "src.db")), open_store(str(base / "dst.db"))
    yield src, dst, base
    src.dispose()
    dst.dispose()


@settings(max_examples=40, deadline=None)
@given(records=_records())
def test_any_record_round_trips(store_pair, records):  # type: ignore[no-untyped-def]
    src, dst, base = store_pair
    run, result, version = records
    run = dataclasses.replace(run, uuid=str(uuid.uuid4()))  # one database for all examples
    # a version id of this example's own: parents of earlier examples never make a cycle with it
    version = dataclasses.replace(version, id=f"{version.id}@{run.uuid[:8]}")
    result = dataclasses.replace(result, version=version.id)
    with write_session(src) as s:
        ingest(s, run, [result], [version])
    first = io.StringIO()
    with read_session(src) as s:
        assert export_jsonl(s, ExportFilter(run=run.uuid), first) == 1
    dump = base / "one.jsonl"
    dump.write_text(first.getvalue(), encoding="utf-8")
    with write_session(dst) as s:
        assert store_batch(s, read_import_file(dump)).added == 1
    second = io.StringIO()
    with read_session(dst) as s:
        export_jsonl(s, ExportFilter(run=run.uuid), second)
    assert second.getvalue() == first.getvalue()
    doc = json.loads(first.getvalue())
    assert [tuple(p["values"]) for p in doc["processes"]] == [p.values for p in result.processes]
    assert doc["counters"] == result.counters


# --- malformed input ------------------------------------------------------------------------------------


def _mutate(line: str, edit) -> str:  # type: ignore[no-untyped-def]
    doc = json.loads(line)
    edit(doc)
    return json.dumps(doc)


BAD_LINES = {
    "bad-json": (lambda line: line[:-5], r"not valid JSON: "),
    "not-an-object": (lambda line: "[1, 2]", r"a line must be a JSON object, not a list"),
    "missing-format": (
        lambda line: _mutate(line, lambda d: d.pop("format")),
        r'format: missing \(expected "benchsvc-result/1"\)',
    ),
    "unknown-format": (
        lambda line: _mutate(line, lambda d: d.update(format="benchsvc-result/2")),
        r'format: "benchsvc-result/2" is not a format this benchsvc reads \(expected "benchsvc-result/1"\)',
    ),
    "missing-field": (
        lambda line: _mutate(line, lambda d: d["workload"].pop("content_hash")),
        r"workload\.content_hash: missing",
    ),
    "missing-run": (lambda line: _mutate(line, lambda d: d.pop("run")), r"run: missing"),
    "wrong-type-counter": (
        lambda line: _mutate(line, lambda d: d["counters"].update(rmap_calls="12")),
        r'counters\.rmap_calls: must be an integer, not a string \("12"\)',
    ),
    "wrong-type-value": (
        lambda line: _mutate(line, lambda d: d["processes"][1]["values"].__setitem__(2, True)),
        r"processes\[1\]\.values\[2\]: must be a number, not a boolean",
    ),
    "negative-value": (
        lambda line: _mutate(line, lambda d: d["processes"][0]["warmups"].__setitem__(0, -1e-3)),
        r"processes\[0\]\.warmups\[0\]: -0\.001 is not a time in seconds \(more than 0, at most 3600\)",
    ),
    "wrong-type-cpu-count": (
        lambda line: _mutate(line, lambda d: d["machine"].update(cpu_count=2.0)),
        r"machine\.cpu_count: must be an integer, not a number \(2\.0\)",
    ),
    "bad-timestamp": (
        lambda line: _mutate(line, lambda d: d["run"].update(started_at="yesterday")),
        r'run\.started_at: "yesterday" is not an ISO 8601 time',
    ),
    "bad-status": (
        lambda line: _mutate(line, lambda d: d.update(status="great")),
        r'status: "great" is not one of: ok, failed',
    ),
    "unknown-field": (lambda line: _mutate(line, lambda d: d.update(colour="red")), r"colour: unknown field"),
    "nan": (
        lambda line: line.replace('"modeled_ns":', '"modeled_ns":NaN,"x":', 1),
        r"not valid JSON: NaN is not a JSON number",
    ),
    "edited-machine": (
        lambda line: _mutate(line, lambda d: d["machine"].update(hostname="other")),
        r"machine\.fingerprint: .* does not match the fields",
    ),
    "too-long": (
        lambda line: _mutate(line, lambda d: d["run"].update(mode="x" * 40)),
        r"run\.mode: is 40 characters long, at most 32 are allowed",
    ),
    "not-utf8": (lambda line: line.replace("bench-a", "bench-\udcff", 1), r"not UTF-8 text"),
}


def _kernel_version(line: str, vid: str, parent: str | None = None) -> str:
    """The line as a result of a kernel version ``vid`` (its own result key, its run unchanged)."""

    def edit(d: dict) -> None:  # type: ignore[type-arg]
        d["engine"] = "kernel"
        d["version"] = {"id": vid, "parent": parent, "title": f"kernel {vid}", "source": ""}

    return _mutate(line, edit)


def _edit_definition(d: dict) -> None:  # type: ignore[type-arg]
    d["workload"]["definition"] += "# edited\n"


BAD_LINES.update(
    {
        "unknown-engine": (
            lambda line: _mutate(line, lambda d: d.update(engine="gpu")),
            r'engine: "gpu" is not one of: sim, kernel',
        ),
        "kernel-engine-for-a-sim-version": (
            lambda line: _mutate(line, lambda d: d.update(engine="kernel")),
            r'engine: "kernel" for "[a-z0-9-]+", a version of the simulated engine \(its engine is sim\)',
        ),
        "hash-not-of-the-definition": (
            lambda line: _mutate(line, _edit_definition),
            r"workload\.content_hash: [0-9a-f]{12}\.\.\. is not the sha256 of workload\.definition",
        ),
        "own-parent": (
            lambda line: _kernel_version(line, "k1", parent="k1"),
            r'version\.parent: "k1" is the version itself',
        ),
        "path-traversal-name": (
            lambda line: _mutate(line, lambda d: d["workload"].update(name="../../../PWNED")),
            r"workload\.name: '\.\./\.\./\.\./PWNED' is not a usable workload name \(1 to 100 of",
        ),
        "long-name": (
            lambda line: _mutate(line, lambda d: d["workload"].update(name="w" * 255)),
            r"workload\.name: 'w{57}'\.\.\. is not a usable workload name",
        ),
        "duplicate-key": (
            lambda line: line.replace('"status":', '"status":"failed","status":', 1),
            r'duplicate key "status" in one JSON object',
        ),
        "duplicate-nested-key": (
            lambda line: line.replace('"hostname":', '"hostname":"x","hostname":', 1),
            r'duplicate key "hostname" in one JSON object',
        ),
    }
)


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_malformed_line_is_reported_and_nothing_is_written(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    edit, message = BAD_LINES[case]
    lines = export_text(capsys, source).splitlines()
    lines[2] = edit(lines[2])
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape"))
    target = f"sqlite:///{tmp_path / 'target.db'}"
    before = counts(target)
    code, out, err = cli(capsys, "import", "--db", target, str(bad))
    assert code == 1
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert re.match(rf"^Error: {re.escape(str(bad))}:3: {message}", err), err
    assert err.rstrip().endswith("nothing was imported")
    assert counts(target) == before


def test_malformed_file_among_several_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    lines = export_text(capsys, source).splitlines(keepends=True)
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("".join(lines[:5]))
    bad.write_text("".join(lines[5:8]) + '{"format": "benchsvc-result/1"}\n')
    target = f"sqlite:///{tmp_path / 'target.db'}"
    before = counts(target)
    code, _, err = cli(capsys, "import", "--db", target, str(good), str(bad))
    assert code == 1 and err.startswith(f"Error: {bad}:4: ")
    assert counts(target) == before


def test_inconsistent_lines_of_one_run_and_duplicates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    lines = export_text(capsys, source).splitlines()
    target = f"sqlite:///{tmp_path / 'target.db'}"
    cases = {
        "dup.jsonl": (
            [lines[0], lines[1], lines[0]],
            "3: duplicate result: same run, engine, version and workload as line 1",
        ),
        "mode.jsonl": (
            [lines[0], _mutate(lines[1], lambda d: d["run"].update(mode="rigorous"))],
            "2: run.mode differs from line 1, which has the same run.uuid",
        ),
        "version.jsonl": (
            [lines[0], _mutate(lines[1], lambda d: d["version"].update(title="another title"))],
            "2: version 'base65' differs from line 1",
        ),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text("\n".join(content) + "\n")
        code, _, err = cli(capsys, "import", "--db", target, str(path))
        assert code == 1 and err.startswith(f"Error: {path}:{message}"), err
    assert counts(target)["results"] == 0


def test_run_already_stored_with_another_machine_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    line = export_text(capsys, source).splitlines()[0]
    edited = _mutate(
        line, lambda d: (d["machine"].update(hostname="elsewhere"), d["machine"].pop("fingerprint"))
    )
    path = tmp_path / "edited.jsonl"
    path.write_text(edited + "\n")
    before = counts(source)
    code, _, err = cli(capsys, "import", "--db", source, str(path))
    assert code == 1
    assert "is already in the database with another machine or environment" in err
    assert counts(source) == before


def test_errors_through_python_dash_m(tmp_path: Path):
    """The real process edge: one stderr line, exit 1."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "benchsvc-result/1"}\n')
    db = tmp_path / "t.db"
    proc = subprocess.run(
        [sys.executable, "-m", "benchsvc", "import", "--db", str(db), str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"Error: {bad}:1: run: missing; nothing was imported"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchsvc", "import", "--db", str(db), str(tmp_path / "none.jsonl")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"Error: {tmp_path / 'none.jsonl'}: no such file"]


def test_empty_file_imports_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    code, out, _ = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(empty))
    assert code == 0 and out.strip() == f"{empty}: 0 results added, 0 already there"


# --- pyperf JSON ----------------------------------------------------------------------------------------

PYPERF_MD = {
    "hostname": "perfbox",
    "cpu_model_name": "AMD EPYC 7B13",
    "cpu_count": 2,
    "platform": "Linux-6.12.9-amd64-x86_64-with-glibc2.36",
    "python_version": "3.11.7 (64-bit) revision 0a1b2c",
    "perf_version": "2.11.0",
}


def _pyperf_bench(name: str, extra: dict[str, object], rng: random.Random, day: int = 26):
    import pyperf

    runs = [
        pyperf.Run(
            [rng.uniform(1e-4, 2e-4) for _ in range(3)],
            warmups=[(4, rng.uniform(1e-4, 3e-4))],
            metadata={
                "name": name,
                "loops": 4,
                "unit": "second",
                "date": f"2026-11-{day} 03:0{i}:00.5",
                "duration": 1.5,
                **PYPERF_MD,
                **extra,
            },
            collect_metadata=False,
        )
        for i in range(3)
    ]
    # a calibration run: warmups only, no values
    calibration = pyperf.Run(
        [],
        warmups=[(1, 1e-4), (2, 1e-4)],
        metadata={"name": name, "unit": "second", "calibrate_loops": 4, **PYPERF_MD, **extra},
        collect_metadata=False,
    )
    return pyperf.Benchmark([calibration, *runs])


def _pyperf_file(path: Path, benches: list) -> Path:  # type: ignore[type-arg]
    import pyperf

    pyperf.BenchmarkSuite(benches).dump(str(path))
    return path


def test_pyperf_import(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    rng = random.Random(7)
    spec = resolve("c-straddle-munmap")
    by_md = _pyperf_bench(
        "whatever",
        {
            "benchsvc_engine": "sim",
            "benchsvc_zap_version": "v3",
            "benchsvc_workload": spec.name,
            "benchsvc_workload_hash": spec.content_hash,
            "benchsvc_version": "0.1.0",
        },
        rng,
    )
    by_name = _pyperf_bench("sim/up612/a-munmap-aligned", {"benchsvc_version": "0.1.0"}, rng)
    path = _pyperf_file(tmp_path / "suite.json.gz", [by_md, by_name])
    db = f"sqlite:///{tmp_path / 't.db'}"
    code, out, err = cli(capsys, "import", "--db", db, str(path))
    assert code == 0, err
    assert out.strip() == f"{path}: 2 results added, 0 already there"
    code, out, _ = cli(capsys, "import", "--db", db, str(path))
    assert out.strip() == f"{path}: 0 results added, 2 already there"

    docs = [json.loads(line) for line in export_text(capsys, db).splitlines()]
    assert [(d["engine"], d["version"]["id"], d["workload"]["name"]) for d in docs] == [
        ("sim", "up612", "a-munmap-aligned"),
        ("sim", "v3", "c-straddle-munmap"),
    ]
    d = docs[1]
    assert (
        d["workload"]["content_hash"] == spec.content_hash and d["workload"]["definition"] == spec.source_text
    )
    assert d["machine"] == {
        "hostname": "perfbox",
        "cpu_model": "AMD EPYC 7B13",
        "cpu_count": 2,
        "kernel": "6.12.9-amd64",
        "arch": "x86_64",
        "fingerprint": MachineInfo("perfbox", "AMD EPYC 7B13", 2, "6.12.9-amd64", "x86_64").fingerprint,
    }
    assert d["environment"]["python_version"] == "3.11.7"
    assert d["environment"]["packages"] == {"pyperf": "2.11.0"}
    assert d["run"]["mode"] == "pyperf" and d["run"]["trigger"] == "import"
    assert d["run"]["benchsvc_version"] == "0.1.0"
    assert d["run"]["started_at"] == "2026-11-26T03:00:00.500000Z"
    assert d["version"]["parent"] == "v2"  # from the registry
    assert len(d["processes"]) == 3  # the calibration run is not a process with values
    assert [p["values"] for p in d["processes"]] == [list(r.values) for r in by_md.get_runs() if r.values]
    assert all(p["loops"] == 4 and len(p["warmups"]) == 1 for p in d["processes"])
    assert d["counters"] == {} and d["modeled_ns"] is None
    assert d["pyperf_metadata"]["benchsvc_zap_version"] == "v3"
    assert any("shortest raw value" in w for w in d["warnings"])  # pyperf's own checks


def test_pyperf_file_of_the_benchsvc_worker_imports(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """The real worker (``--debug-single-value``): its metadata names the engine, version and workload."""
    pytest.importorskip("benchsvc.runner.worker")
    out = tmp_path / "worker.json"
    workload = resolve("c-straddle-munmap")
    cmd = [sys.executable, "-m", "benchsvc.runner.worker", "--workload", str(workload.path)]
    cmd += ["--zap-version", "v4", "--debug-single-value", "--quiet", "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    db = str(tmp_path / "t.db")
    code, text, err = cli(capsys, "import", "--db", db, str(out))
    assert code == 0, err
    assert text.strip() == f"{out}: 1 results added, 0 already there"
    doc = json.loads(export_text(capsys, db))
    assert (doc["engine"], doc["version"]["id"], doc["workload"]["name"]) == (
        "sim",
        "v4",
        "c-straddle-munmap",
    )
    assert doc["workload"]["content_hash"] == workload.content_hash
    assert doc["run"]["benchsvc_version"] == doc["pyperf_metadata"]["benchsvc_version"]
    assert len(doc["processes"]) == 1 and len(doc["processes"][0]["values"]) == 1
    assert doc["machine"]["cpu_count"] == doc["pyperf_metadata"]["cpu_count"]


def test_pyperf_import_needs_options_for_a_foreign_benchmark(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    path = _pyperf_file(tmp_path / "foreign.json", [_pyperf_bench("zap_bench", {}, random.Random(1))])
    db = f"sqlite:///{tmp_path / 't.db'}"
    code, _, err = cli(capsys, "import", "--db", db, str(path))
    assert code == 1
    assert err.strip() == (
        f"Error: {path}: benchmark 'zap_bench': does not name its engine, version, workload "
        "(no benchsvc_* metadata, no engine/version/workload name): give --engine --version --workload; "
        "nothing was imported"
    )
    workload_file = tmp_path / "my-zap.toml"
    workload_file.write_bytes(
        Path(resolve("a-munmap-aligned").path or "").read_bytes().replace(b"64MiB", b"8MiB")
    )
    args = [
        "import",
        "--db",
        db,
        str(path),
        "--engine",
        "sim",
        "--version",
        "up69",
        "--workload",
        str(workload_file),
    ]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert out.strip() == f"{path}: 1 results added, 0 already there"
    doc = json.loads(export_text(capsys, db))
    assert doc["workload"]["name"] == "my-zap"
    assert doc["workload"]["content_hash"] == resolve(str(workload_file)).content_hash

    code, _, err = cli(
        capsys,
        "import",
        "--db",
        db,
        str(path),
        "--engine",
        "sim",
        "--version",
        "v9",
        "--workload",
        "a-munmap-aligned",
    )
    assert code == 1 and "unknown sim version 'v9'" in err


def test_pyperf_workload_hash_mismatch_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    bench = _pyperf_bench("sim/v1/a-munmap-aligned", {"benchsvc_workload_hash": "0" * 64}, random.Random(3))
    path = _pyperf_file(tmp_path / "old.json", [bench])
    code, _, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(path))
    assert code == 1
    assert "with content hash 000000000000..., but the file" in err and "give --workload PATH" in err


def test_not_pyperf_json_object(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    code, _, err = cli(capsys, "import", "--db", str(tmp_path / "t.db"), str(path))
    assert code == 1
    assert err.startswith(f"Error: {path}: a JSON object without pyperf's 'benchmarks' and 'version' keys")


@pytest.mark.parametrize(
    "platform,expected",
    [
        ("Linux-6.1.0-18-amd64-x86_64-with-glibc2.36", ("6.1.0-18-amd64", "x86_64")),
        ("Linux-6.12.0-aarch64-with-glibc2.39", ("6.12.0", "aarch64")),
        ("Linux-5.15.0-x86_64-x86_64-with-glibc2.35", ("5.15.0", "x86_64")),
        ("Windows-10", ("Windows-10", "")),
        ("", ("", "")),
    ],
)
def test_platform_mapping(platform: str, expected: tuple[str, str]):
    assert _platform_kernel_arch(platform) == expected


# --- CSV and filters ------------------------------------------------------------------------------------


def test_csv_export(capsys: pytest.CaptureFixture[str], source: str):
    text = export_text(capsys, source, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 27
    header = text.splitlines()[0].split(",")
    assert header[:3] == ["run_uuid", "run_started_at", "run_status"]
    counter_cols = [c for c in header if c.startswith("c_")]
    assert counter_cols == sorted(counter_cols) and "c_rmap_calls" in counter_cols
    assert "values" not in header
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 3 and all(r["c_rmap_calls"] == "" and r["mean_s"] == "" for r in failed)
    sim = simulate(resolve(ok[0]["workload"]), ok[0]["version"])
    assert int(ok[0]["c_rmap_calls"]) == sim.counters["rmap_calls"]
    assert int(ok[0]["n_values"]) == 6 and int(ok[0]["n_processes"]) == 2
    assert float(ok[0]["min_s"]) <= float(ok[0]["mean_s"]) <= float(ok[0]["max_s"])
    jsonl = [json.loads(line) for line in export_text(capsys, source).splitlines()]
    assert [r["run_uuid"] for r in rows] == [d["run"]["uuid"] for d in jsonl]  # the same order


def test_filters(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    runs = fill(url)

    def select_(*args: str) -> list[dict]:  # type: ignore[type-arg]
        return [json.loads(line) for line in export_text(capsys, url, *args).splitlines()]

    assert len(select_("--run", runs[1].uuid[:8])) == 9
    assert {d["run"]["uuid"] for d in select_("--run", "1")} == {runs[0].uuid}  # the database id
    assert {d["workload"]["name"] for d in select_("--workload", "c-straddle-munmap")} == {
        "c-straddle-munmap"
    }
    assert len(select_("--workload", "c-straddle-munmap")) == 9
    assert {d["version"]["id"] for d in select_("--version", "v2")} == {"v2"}
    assert len(select_("--engine", "sim")) == 27 and select_("--engine", "kernel") == []
    assert {d["machine"]["hostname"] for d in select_("--machine", "bench-b")} == {"bench-b"}
    assert len(select_("--machine", MACHINE_A.fingerprint[:10])) == 18
    assert len(select_("--since", "2026-11-25")) == 18
    assert len(select_("--until", "2026-11-24")) == 9  # the whole day
    assert len(select_("--until", "2026-11-24T03:00:00.250001Z")) == 9  # inclusive
    assert len(select_("--until", "2026-11-24T03:00:00.25Z")) == 0
    assert len(select_("--since", "2026-11-24T04:00+01:00", "--until", "2026-11-24T03:00:00.250001")) == 9
    assert len(select_("--machine", "bench-a", "--version", "up612", "--workload", "a-munmap-aligned")) == 2

    code, _, err = cli(capsys, "export", "--db", url, "--since", "last week")
    assert code == 1 and err.startswith("Error: --since 'last week' is not a date or time")
    code, _, err = cli(capsys, "export", "--db", url, "--run", "ffffffff")
    assert code == 1 and err.startswith("Error: no run 'ffffffff'")


# --- PostgreSQL -----------------------------------------------------------------------------------------


@pytest.fixture
def pg_target(request: pytest.FixtureRequest) -> str:
    """An empty PostgreSQL database: the ``pg_url`` fixture of conftest.py, else $BENCHSVC_TEST_PG_URL."""
    try:
        return str(request.getfixturevalue("pg_url"))
    except pytest.FixtureLookupError:
        pass
    url = os.environ.get("BENCHSVC_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL: set BENCHSVC_TEST_PG_URL")
    if counts(url)["runs"]:
        pytest.skip("the database of BENCHSVC_TEST_PG_URL is not empty")
    return url


def test_round_trip_through_postgresql(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, pg_target: str
):
    first = export_text(capsys, source)
    dump = tmp_path / "all.jsonl"
    dump.write_text(first)
    code, out, err = cli(capsys, "import", "--db", pg_target, str(dump))
    assert code == 0, err
    assert out.strip() == f"{dump}: 27 results added, 0 already there"
    assert export_text(capsys, pg_target) == first
    assert export_text(capsys, pg_target, "--format", "csv") == export_text(capsys, source, "--format", "csv")
    assert (
        cli(capsys, "import", "--db", pg_target, str(dump))[1].strip()
        == f"{dump}: 0 results added, 27 already there"
    )


# --- import checks against each other and against the database (SQLite and PostgreSQL) ------------------


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    return lines[0]


def test_a_version_has_one_engine_across_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
):
    """The issue's case: a separate file claims the simulated v2 (or a kernel version) for another engine."""
    lines = export_text(capsys, source).splitlines()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_kernel_version(lines[0], "kernel-6.12") + "\n")
    b.write_text(_mutate(_kernel_version(lines[1], "kernel-6.12"), lambda d: d.update(engine="sim")) + "\n")
    target = f"sqlite:///{tmp_path / 'target.db'}"
    code, out, err = cli(capsys, "import", "--db", target, str(a), str(b))
    assert code == 1 and out == ""
    assert _one_line_error(err) == (
        f"Error: {b}:1: version 'kernel-6.12' is a sim version here but a kernel version in {a}:1: "
        "a version belongs to one engine; nothing was imported"
    )
    assert not (tmp_path / "target.db").exists()  # refused before a database was opened


def test_a_version_has_the_engine_the_database_holds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, store_url: str
):
    lines = export_text(capsys, source).splitlines()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(_kernel_version(lines[0], "kernel-6.12") + "\n")
    b.write_text(_mutate(_kernel_version(lines[1], "kernel-6.12"), lambda d: d.update(engine="sim")) + "\n")
    assert cli(capsys, "import", "--db", store_url, str(a))[0] == 0
    before = counts(store_url)
    good = tmp_path / "good.jsonl"
    good.write_text(lines[2] + "\n")
    code, _, err = cli(capsys, "import", "--db", store_url, str(good), str(b))
    assert code == 1
    assert _one_line_error(err) == (
        f"Error: {b}:1: version 'kernel-6.12' is a sim version here but a kernel version in the database: "
        "a version belongs to one engine; nothing was imported"
    )
    assert counts(store_url) == before  # not even the good file before it


def test_version_parents_stay_acyclic(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, store_url: str
):
    lines = export_text(capsys, source).splitlines()
    within = tmp_path / "within.jsonl"
    within.write_text(
        _kernel_version(lines[0], "ka", parent="kb")
        + "\n"
        + _kernel_version(lines[1], "kb", parent="ka")
        + "\n"
    )
    before = counts(store_url)
    code, _, err = cli(capsys, "import", "--db", store_url, str(within))
    assert code == 1
    assert _one_line_error(err) == (
        f"Error: {within}:1: version 'ka': its parents form a cycle ('ka' -> 'kb' -> 'ka'); fix version.parent; "
        "nothing was imported"
    )
    assert counts(store_url) == before

    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(_kernel_version(lines[0], "kc", parent="kd") + "\n")
    second.write_text(
        _kernel_version(lines[1], "kd", parent="ke")
        + "\n"
        + _kernel_version(lines[2], "ke", parent="kc")
        + "\n"
    )
    assert cli(capsys, "import", "--db", store_url, str(first))[0] == 0
    before = counts(store_url)
    code, _, err = cli(capsys, "import", "--db", store_url, str(second))
    assert code == 1
    assert _one_line_error(err) == (
        f"Error: {second}:1: version 'kd': its parents form a cycle ('kd' -> 'ke' -> 'kc' -> 'kd'); "
        "fix version.parent; nothing was imported"
    )
    assert counts(store_url) == before


def test_round_trip_of_kernel_and_sim_versions(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, store_url: str
):
    """Whatever import accepts exports into a file that imports into an empty database, with the same bytes."""
    lines = export_text(capsys, source).splitlines()
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        _kernel_version(lines[0], "kernel-6.12", parent="up612")
        + "\n"
        + _kernel_version(lines[1], "kernel-6.13", parent="kernel-6.12")
        + "\n"
    )
    everything = tmp_path / "all.jsonl"
    everything.write_text("\n".join(lines) + "\n")
    assert cli(capsys, "import", "--db", store_url, str(everything), str(extra))[0] == 0
    dump = tmp_path / "dump.jsonl"
    dump.write_text(export_text(capsys, store_url))
    target = f"sqlite:///{tmp_path / 'empty.db'}"
    code, out, err = cli(capsys, "import", "--db", target, str(dump))
    assert code == 0, err
    assert out.strip() == f"{dump}: 29 results added, 0 already there"
    assert export_text(capsys, target) == dump.read_text()


def test_pyperf_file_checks(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """pyperf metadata: the name rule for the workload, a known engine, a kernel engine never for a sim
    version, ISO 8601 run dates, no duplicate keys."""
    db = tmp_path / "t.db"
    assert cli(capsys, "db", "upgrade", "--db", str(db))[0] == 0
    before = counts(str(db))
    cases = {
        "traversal": (
            {"benchsvc_engine": "sim", "benchsvc_zap_version": "v1", "benchsvc_workload": "../../../PWNED"},
            "benchmark 'b': '../../../PWNED' is not a usable workload name",
        ),
        "engine": (
            {"benchsvc_engine": "gpu", "benchsvc_zap_version": "g1", "benchsvc_workload": "a-munmap-aligned"},
            "benchmark 'b': engine 'gpu' is not one of: sim, kernel",
        ),
        "kernel-v1": (
            {
                "benchsvc_engine": "kernel",
                "benchsvc_zap_version": "v1",
                "benchsvc_workload": "a-munmap-aligned",
            },
            'benchmark \'b\': engine: "kernel" for "v1", a version of the simulated engine',
        ),
    }
    for case, (md, message) in cases.items():
        path = _pyperf_file(tmp_path / f"{case}.json", [_pyperf_bench("b", md, random.Random(5))])
        code, _, err = cli(capsys, "import", "--db", str(db), str(path))
        assert code == 1, case
        assert _one_line_error(err).startswith(f"Error: {path}: {message}"), err

    good = _pyperf_file(
        tmp_path / "good.json", [_pyperf_bench("sim/v1/a-munmap-aligned", {}, random.Random(6))]
    )
    doc = json.loads(good.read_text())
    doc["benchmarks"][0]["runs"][1]["metadata"]["date"] = "yesterday at three"
    bad_date = tmp_path / "bad-date.json"
    bad_date.write_text(json.dumps(doc))
    code, _, err = cli(capsys, "import", "--db", str(db), str(bad_date))
    assert code == 1
    assert _one_line_error(err).startswith(
        f"Error: {bad_date}: benchmark 'sim/v1/a-munmap-aligned': a run's date is not an ISO 8601 time"
    )
    text = good.read_text()
    assert text.count('"version":"1.0"') == 1
    dup = tmp_path / "dup.json"
    dup.write_text(text.replace('"version":"1.0"', '"version":"1.0","version":"1.0"'))
    code, _, err = cli(capsys, "import", "--db", str(db), str(dup))
    assert code == 1
    assert (
        _one_line_error(err)
        == f'Error: {dup}: duplicate key "version" in one JSON object; nothing was imported'
    )
    assert counts(str(db)) == before
