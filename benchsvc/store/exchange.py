"""Export and import of results: JSON Lines ``benchsvc-result/1``, CSV, and pyperf JSON files (docs/formats.md).

One JSON Lines record is one result with its full provenance (run, machine, environment, engine, version,
workload), its raw values per worker process and its counters: one schema,
:class:`~benchsvc.store.result_schema.ResultLine`, which export writes and import reads, and which
``docs/formats.md`` describes field by field. Export is deterministic: keys sorted at every level, floats
written so that they read back exactly, timestamps as ISO 8601 UTC, results in (run start, run uuid, engine, version, workload name, workload hash)
order sorted in Python (database collations differ), so the same results give the same bytes from SQLite
and PostgreSQL.

Import reads a whole file and validates every line before anything is written; the first bad line is an
:class:`ImportFormatError` naming ``FILE:LINE``. The caller then stores one file per transaction with
:func:`store_batch`, which goes through :func:`benchsvc.store.ingest.ingest` (a run or result already stored
is skipped, so importing a file twice adds nothing). A pyperf JSON file becomes one run; the engine, version
and workload of each benchmark come from its metadata or its name, or from the ``--engine``, ``--version``
and ``--workload`` options (:class:`PyperfDefaults`).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from benchsvc.errors import BenchsvcError
from benchsvc.limits import name_problem
from benchsvc.records import (
    EngineKind,
    EnvironmentInfo,
    MachineInfo,
    ResultRecord,
    RunRecord,
    RunStatus,
    VersionInfo,
    WorkloadRef,
)
from benchsvc.store.ingest import ingest
from benchsvc.store.models import (
    Counter,
    Machine,
    Result,
    Run,
    Version,
    Workload,
)
from benchsvc.store.pyperf_adapter import timings
from benchsvc.store.result_schema import (
    CANARY_PREFIX,
    FORMAT,
    LIMITS,
    MAX_INT32,
    MAX_VALUE_S,
    LineError,
    ResultLine,
    TimeOutOfRange,
    format_timestamp,
    parse_line,
    parse_timestamp,
    seg,
    show,
    value_problem,
    version_engine_problem,
    warmup_problem,
)

ENGINES = tuple(EngineKind)
__all__ = [
    "CANARY_PREFIX",
    "CSV_COLUMNS",
    "ENGINES",
    "FORMAT",
    "MAX_VALUE_S",
    "ExchangeError",
    "ExportFilter",
    "ImportBatch",
    "ImportConflict",
    "ImportCounts",
    "ImportFormatError",
    "PyperfDefaults",
    "check_versions",
    "export_csv",
    "export_jsonl",
    "format_timestamp",
    "parse_timestamp",
    "parse_when",
    "read_import_file",
    "result_record",
    "store_batch",
]

#: namespace of the run uuids given to imported pyperf files (uuid5 of the file's sha256)
#: the PostgreSQL advisory lock that serialises imports (:func:`store_batch`)
IMPORT_LOCK_KEY = 0x62656E6369  # "benci"
PYPERF_RUN_NAMESPACE = uuid.UUID("5b0e7f0c-3f6e-4c1e-9a51-6d1f1f0d6e11")
CSV_COLUMNS = (
    "run_uuid",
    "run_started_at",
    "run_status",
    "mode",
    "trigger",
    "machine",
    "machine_fingerprint",
    "environment_fingerprint",
    "python_version",
    "benchsvc_version",
    "git_commit",
    "engine",
    "version",
    "parent",
    "workload",
    "workload_hash",
    "status",
    "error",
    "started_at",
    "finished_at",
    "modeled_ns",
    "priced_ns",
    "priced_by",
    "n_processes",
    "n_values",
    "mean_s",
    "median_s",
    "stdev_s",
    "min_s",
    "max_s",
    "warnings",
)
COUNTER_PREFIX = "c_"


class ExchangeError(BenchsvcError):
    """An export or import that cannot be done as asked."""


class ImportFormatError(ExchangeError):
    """A file that cannot be imported: the message names ``FILE:LINE`` (or ``FILE``) and what is wrong."""


class ImportConflict(ExchangeError):
    """A run in the file is already in the database with other provenance."""


# ---------------------------------------------------------------------------------------------------------
# timestamps


def parse_when(text: str, option: str, *, end: bool = False) -> dt.datetime:
    """A ``--since``/``--until`` value as a naive UTC bound: the one parser of every command that takes one.

    ``YYYY-MM-DD`` is that whole day in UTC: the start of it, or for ``end`` the start of the next day
    (exclusive). A full time is itself, its offset honoured (``2026-11-26T03:00+02:00`` is 01:00 UTC; no
    offset means UTC), or for ``end`` one microsecond after it (so ``--until`` includes it). A time whose UTC
    equivalent is outside the years 1 to 9999 is refused; an end bound past the last representable time
    means "no end"."""
    raw = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            value = dt.datetime.combine(dt.date.fromisoformat(raw), dt.time())
            step = dt.timedelta(days=1)
        else:
            value = parse_timestamp(raw)
            step = dt.timedelta(microseconds=1)
    except TimeOutOfRange as exc:
        raise ExchangeError(f"{option} {exc} — give a time between 0001-01-01 and 9999-12-31 UTC") from None
    except ValueError:
        raise ExchangeError(
            f"{option} {text!r} is not a date or time (use YYYY-MM-DD or ISO 8601 like 2026-11-26T03:00Z)"
        ) from None
    if not end:
        return value
    try:
        return value + step
    except OverflowError:
        return dt.datetime.max


# ---------------------------------------------------------------------------------------------------------
# export


@dataclass(frozen=True)
class ExportFilter:
    """Which results to export. ``since`` is inclusive, ``until`` exclusive (see :func:`parse_when`)."""

    run: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    workload: str | None = None
    version: str | None = None
    engine: str | None = None
    machine: str | None = None


#: results loaded (with samples and counters) at a time while exporting: memory stays bounded by this many
EXPORT_CHUNK = 200


def _filtered(stmt: Any, session: Session, flt: ExportFilter) -> Any:
    """``stmt`` (already joined to runs, machines and workloads) restricted to what ``flt`` selects."""
    if flt.run is not None:
        from benchsvc.store.queries import get_run

        stmt = stmt.where(Run.id == get_run(session, flt.run).id)
    if flt.since is not None:
        stmt = stmt.where(Run.started_at >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(Run.started_at < flt.until)
    if flt.workload is not None:
        stmt = stmt.where(Workload.name == flt.workload)
    if flt.version is not None:
        stmt = stmt.where(Result.version_id == flt.version)
    if flt.engine is not None:
        stmt = stmt.where(Result.engine == flt.engine)
    if flt.machine is not None:
        stmt = stmt.where((Machine.hostname == flt.machine) | Machine.fingerprint.startswith(flt.machine))
    return stmt


def selected_ids(session: Session, flt: ExportFilter) -> list[int]:
    """The ids of the results ``flt`` selects, in export order: run start, run uuid, engine, version,
    workload name, workload hash (sorted here, by code point, so that every database gives one order)."""
    stmt = (
        select(
            Run.started_at,
            Run.uuid,
            Result.engine,
            Result.version_id,
            Workload.name,
            Workload.content_hash,
            Result.id,
        )
        .select_from(Result)
        .join(Result.run)
        .join(Run.machine)
        .join(Run.environment)
        .join(Result.workload)
    )
    rows = [tuple(row) for row in session.execute(_filtered(stmt, session, flt))]
    rows.sort()
    return [row[-1] for row in rows]


def iter_results(session: Session, ids: Sequence[int]) -> Iterator[Result]:
    """The results ``ids``, in that order, with their run, machine, environment, version, workload, samples
    and counters loaded, :data:`EXPORT_CHUNK` at a time; each chunk is dropped from the session once the
    next one is needed, so memory does not grow with the number of results."""
    for lo in range(0, len(ids), EXPORT_CHUNK):
        chunk = ids[lo : lo + EXPORT_CHUNK]
        stmt = (
            select(Result)
            .where(Result.id.in_(chunk))
            .options(
                joinedload(Result.run).joinedload(Run.machine),
                joinedload(Result.run).joinedload(Run.environment),
                joinedload(Result.workload),
                joinedload(Result.version),
                selectinload(Result.samples),
                selectinload(Result.counters),
            )
        )
        by_id = {r.id: r for r in session.scalars(stmt).unique()}
        for rid in chunk:
            yield by_id[rid]
        by_id.clear()
        session.expunge_all()


def result_record(result: Result) -> dict[str, Any]:
    """One stored result as a ``benchsvc-result/1`` object (before key sorting)."""
    return ResultLine.from_stored(result).to_json_object()


def dumps_record(record: Mapping[str, Any]) -> str:
    """One JSON Lines line (without the newline): sorted keys, compact, ASCII, exact floats, no NaN."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


def export_jsonl(session: Session, flt: ExportFilter, out: TextIO) -> int:
    """Write the selected results as ``benchsvc-result/1`` lines; returns how many."""
    ids = selected_ids(session, flt)
    for result in iter_results(session, ids):
        out.write(dumps_record(result_record(result)) + "\n")
    return len(ids)


def _csv_cell(value: Any) -> Any:
    """A cell: numbers exact, text that a spreadsheet would run as a formula prefixed with ``'``."""
    from benchsvc.safe_text import neutralise_formula

    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return neutralise_formula(value)
    return value


def export_csv(session: Session, flt: ExportFilter, out: TextIO) -> int:
    """Write the selected results as CSV: one row per result, summary columns, then one ``c_<name>``
    column per counter (sorted by name; empty where a result lacks it). No raw values."""
    from benchsvc.engine.cost import CostModel
    from benchsvc.store.cost_models import STORED_PRICE, cost_model_for

    ids = selected_ids(session, flt)
    names: set[str] = set()
    for lo in range(0, len(ids), EXPORT_CHUNK):
        chunk = ids[lo : lo + EXPORT_CHUNK]
        names.update(session.scalars(select(Counter.name).where(Counter.result_id.in_(chunk)).distinct()))
    counter_names = sorted(names)
    models: dict[str, CostModel] = {}
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(COUNTER_PREFIX + name for name in counter_names)])
    for r in iter_results(session, ids):
        run, workload = r.run, r.workload
        row: dict[str, Any] = {
            "run_uuid": run.uuid,
            "run_started_at": format_timestamp(run.started_at),
            "run_status": run.status,
            "mode": run.mode,
            "trigger": run.trigger,
            "machine": run.machine.hostname,
            "machine_fingerprint": run.machine.fingerprint,
            "environment_fingerprint": run.environment.fingerprint,
            "python_version": run.environment.python_version,
            "benchsvc_version": run.benchsvc_version,
            "git_commit": run.git_commit,
            "engine": r.engine,
            "version": r.version_id,
            "parent": r.version.parent,
            "workload": workload.name,
            "workload_hash": workload.content_hash,
            "status": r.status,
            "error": r.error,
            "started_at": format_timestamp(r.started_at),
            "finished_at": format_timestamp(r.finished_at),
            "modeled_ns": r.modeled_ns,
            "priced_ns": None,
            "priced_by": "",
            "n_processes": len(r.samples),
            "n_values": r.n_values,
            "mean_s": r.mean_s,
            "median_s": r.median_s,
            "stdev_s": r.stdev_s,
            "min_s": r.min_s,
            "max_s": r.max_s,
            "warnings": "; ".join(str(w) for w in (r.warnings or [])),
        }
        counters = {c.name: int(c.value) for c in r.counters}
        if r.engine == "sim" and r.status == "ok":
            host = run.machine.hostname
            if host not in models:
                models[host] = cost_model_for(session, host)
            model = models[host]
            if all(n in counters for n, ns in model.coefficients.items() if ns):
                row["priced_ns"] = model.modeled_ns(counters)
                row["priced_by"] = model.label()
            else:
                row["priced_ns"], row["priced_by"] = r.modeled_ns, STORED_PRICE
        writer.writerow(
            [_csv_cell(row[c]) for c in CSV_COLUMNS] + [_csv_cell(counters.get(n)) for n in counter_names]
        )
    return len(ids)


# ---------------------------------------------------------------------------------------------------------
# import: what a file becomes


@dataclass
class RunGroup:
    """The results of one run in an import file, with the line that first named the run."""

    record: RunRecord
    line: int
    results: list[ResultRecord] = field(default_factory=list)
    versions: dict[str, VersionInfo] = field(default_factory=dict)


@dataclass
class ImportBatch:
    """A validated import file: what :func:`store_batch` writes in one transaction."""

    label: str
    runs: list[RunGroup] = field(default_factory=list)
    #: version id -> the line that first names it (0 in a pyperf file)
    version_lines: dict[str, int] = field(default_factory=dict)

    @property
    def n_results(self) -> int:
        return sum(len(g.results) for g in self.runs)


@dataclass(frozen=True)
class ImportCounts:
    """What importing one file did: results in the file, and how many of them were new."""

    label: str
    results: int
    added: int

    @property
    def already(self) -> int:
        return self.results - self.added


@dataclass(frozen=True)
class PyperfDefaults:
    """``--engine``, ``--version``, ``--workload`` for pyperf benchmarks that do not name their own."""

    engine: str | None = None
    version: str | None = None
    workload: str | None = None


def read_import_file(path: str | Path, defaults: PyperfDefaults | None = None) -> ImportBatch:
    """Read and validate one import file (JSON Lines, or pyperf JSON; either may be gzip-compressed).

    Only a regular file is read, of at most :data:`~benchsvc.limits.MAX_IMPORT_BYTES`, and a gzip file may
    decompress to at most that much."""
    from benchsvc.limits import MAX_IMPORT_BYTES, gunzip_bounded, read_bounded

    p = Path(path)
    label = str(path)
    what = "an import file"
    raw = read_bounded(p, limit_bytes=MAX_IMPORT_BYTES, label=label, what=what, error=ImportFormatError)
    if raw[:2] == b"\x1f\x8b":
        raw = gunzip_bounded(
            raw, limit_bytes=MAX_IMPORT_BYTES, label=label, what=what, error=ImportFormatError
        )
    doc = _whole_json(raw)
    if isinstance(doc, dict) and "benchmarks" in doc and "version" in doc and "format" not in doc:
        try:
            json.loads(raw, object_pairs_hook=_unique_keys)
        except _DuplicateKey as exc:
            raise ImportFormatError(f"{label}: {exc}; nothing was imported") from None
        return _read_pyperf(label, raw, p, defaults or PyperfDefaults())
    if isinstance(doc, dict) and "format" not in doc and p.name.endswith((".json", ".json.gz")):
        raise ImportFormatError(
            f"{label}: a JSON object without pyperf's 'benchmarks' and 'version' keys: "
            f"neither a pyperf file nor {FORMAT} JSON Lines"
        )
    return _read_jsonl(label, raw)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of every JSON import: a key given twice in one object is refused (JSON itself
    would keep the last one silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"duplicate key {_show(key)} in one JSON object")
        out[key] = value
    return out


def _whole_json(raw: bytes) -> Any:
    """The file as one JSON document, or None when it is not one (JSON Lines with several lines)."""
    if raw.lstrip()[:1] != b"{":
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


# ---------------------------------------------------------------------------------------------------------
# import: JSON Lines


def _show(value: Any) -> str:
    return show(value)


class _Bad(LineError):
    """A problem in a pyperf file's benchmark or metadata (the message names the key when there is one)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a float")
    return value


def _check_text(value: Any, path: str) -> None:
    """Every string (keys too) must be storable as text: no NUL character, no lone UTF-16 surrogate."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _Bad(path, "contains a NUL character (\\u0000)")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Bad(path, "contains a lone UTF-16 surrogate (a \\ud800-\\udfff escape)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{seg(key)}" if path else seg(key)
            _check_text(key, sub)
            _check_text(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{path}[{i}]")


def _check_version_engine(version: VersionInfo) -> None:
    problem = version_engine_problem(version.id, version.engine)
    if problem:
        raise _Bad("engine", problem)


def _parse_line(obj: Any) -> tuple[RunRecord, VersionInfo, ResultRecord]:
    if isinstance(obj, dict):
        _check_text(obj, "")
    line = parse_line(obj)
    return line.run_record(), line.version_info(), line.result_record()


def _read_jsonl(label: str, raw: bytes) -> ImportBatch:
    batch = ImportBatch(label=label)
    groups: dict[str, RunGroup] = {}
    version_lines: dict[str, tuple[VersionInfo, int]] = {}
    seen: dict[tuple[str, str, str, str, str], int] = {}
    for lineno, line_bytes in enumerate(raw.split(b"\n"), start=1):
        if not line_bytes.strip():
            continue

        def fail(message: str, lineno: int = lineno) -> ImportFormatError:
            return ImportFormatError(f"{label}:{lineno}: {message}; nothing was imported")

        try:
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(f"not UTF-8 text (byte {exc.start + 1} of the line)") from None
        try:
            obj = json.loads(
                text,
                parse_constant=_reject_constant,
                parse_float=_finite_float,
                object_pairs_hook=_unique_keys,
            )
        except _DuplicateKey as exc:
            raise fail(str(exc)) from None
        except ValueError as exc:
            raise fail(f"not valid JSON: {exc}") from None
        except RecursionError:
            raise fail("not valid JSON: nested too deeply") from None
        try:
            run, version, result = _parse_line(obj)
        except LineError as exc:
            raise fail(str(exc)) from None

        group = groups.get(run.uuid)
        if group is None:
            group = groups[run.uuid] = RunGroup(record=run, line=lineno)
            batch.runs.append(group)
        elif group.record != run:
            what = _first_difference(group.record, run)
            raise fail(f"{what} differs from line {group.line}, which has the same run.uuid")
        prior = version_lines.get(version.id)
        if prior is None:
            version_lines[version.id] = (version, lineno)
            batch.version_lines[version.id] = lineno
        elif prior[0].engine != version.engine:
            raise fail(
                f"version {version.id!r} is a {version.engine} version here but a {prior[0].engine} version "
                f"on line {prior[1]}: a version belongs to one engine"
            )
        elif prior[0] != version:
            raise fail(
                f"version {version.id!r} differs from line {prior[1]} (engine, parent, title or source)"
            )
        key = (run.uuid, result.engine, result.version, result.workload.name, result.workload.content_hash)
        if key in seen:
            raise fail(f"duplicate result: same run, engine, version and workload as line {seen[key]}")
        seen[key] = lineno
        group.results.append(result)
        group.versions[version.id] = version
    return batch


def _first_difference(a: RunRecord, b: RunRecord) -> str:
    if a.machine != b.machine:
        return "machine"
    if a.environment != b.environment:
        return "environment"
    for name in ("started_at", "finished_at", "status", "mode", "trigger", "benchsvc_version", "git_commit"):
        if getattr(a, name) != getattr(b, name):
            return f"run.{name}"
    return "run.pyperf_settings"


# ---------------------------------------------------------------------------------------------------------
# import: pyperf JSON


def _platform_kernel_arch(platform: str) -> tuple[str, str]:
    """``Linux-6.1.0-18-amd64-x86_64-with-glibc2.36`` -> (``6.1.0-18-amd64``, ``x86_64``).

    pyperf's ``platform`` is Python's ``platform.platform()``: system-release-machine[-with-libc]. The machine
    is the last dash-separated part before ``-with-``; the kernel release is what lies between the system and
    it. Anything else is kept whole as the kernel, with an empty arch."""
    head = platform.split("-with-", 1)[0]
    parts = head.split("-")
    if len(parts) >= 3 and re.fullmatch(r"[A-Za-z0-9_]+", parts[-1]):
        if len(parts) >= 4 and parts[-1] == parts[-2]:  # machine and processor both given
            parts = parts[:-1]
        return "-".join(parts[1:-1]), parts[-1]
    return platform, ""


def _read_pyperf(label: str, raw: bytes, path: Path, defaults: PyperfDefaults) -> ImportBatch:
    import pyperf

    def fail(message: str) -> ImportFormatError:
        return ImportFormatError(f"{label}: {message}; nothing was imported")

    try:
        text = raw.decode("utf-8")
        suite = pyperf.BenchmarkSuite.loads(text)
    except Exception as exc:  # pyperf raises many kinds on a malformed file
        raise fail(f"pyperf cannot read it: {type(exc).__name__}: {exc}") from None
    benches = suite.get_benchmarks()

    def common(key: str) -> Any:
        values = {json.dumps(b.get_metadata().get(key)) for b in benches}
        if len(values) > 1:
            raise fail(
                f"its benchmarks disagree on the metadata {key!r} (they ran on different machines or "
                "Pythons): split the file with python -m pyperf convert"
            )
        return json.loads(values.pop())

    def text_md(key: str) -> str:
        value = common(key)
        return "" if value is None else str(value)

    kernel, arch = _platform_kernel_arch(text_md("platform"))
    cpu_count = common("cpu_count")
    if isinstance(cpu_count, int) and not isinstance(cpu_count, bool) and not 0 <= cpu_count <= MAX_INT32:
        raise fail(f"metadata cpu_count {cpu_count} is out of range (0 to {MAX_INT32})")
    machine = MachineInfo(
        hostname=text_md("hostname"),
        cpu_model=text_md("cpu_model_name"),
        cpu_count=cpu_count if isinstance(cpu_count, int) and not isinstance(cpu_count, bool) else 0,
        kernel=kernel,
        arch=arch,
    )
    python_version = text_md("python_version").split(" ", 1)[0]
    perf_version = text_md("perf_version")
    environment = EnvironmentInfo(
        python_version=python_version, packages={"pyperf": perf_version} if perf_version else {}
    )
    try:
        _check_text([machine.as_dict(), environment.as_dict()], "metadata")
    except _Bad as exc:
        raise fail(str(exc)) from None
    _check_limits(
        fail,
        {
            "machine.hostname": machine.hostname,
            "machine.cpu_model": machine.cpu_model,
            "machine.kernel": machine.kernel,
            "machine.arch": machine.arch,
            "environment.python_version": python_version,
        },
    )

    results: list[ResultRecord] = []
    versions: dict[str, VersionInfo] = {}
    seen: dict[tuple[str, str, str, str], str] = {}
    starts: list[dt.datetime] = []
    ends: list[dt.datetime] = []
    for bench in benches:
        name = bench.get_name() or "(unnamed)"
        try:
            engine, version, workload = _pyperf_identity(bench, defaults)
        except _Bad as exc:
            raise fail(f"benchmark {name!r}: {exc}") from None
        # checked before timings(), whose pyperf stability check computes with the values
        problem = _pyperf_values_problem(bench)
        if problem:
            raise fail(f"benchmark {name!r}: {problem}")
        read = timings(bench)
        if not read.processes:
            raise fail(f"benchmark {name!r} has no values (only calibration runs)")
        try:
            start, end = bench.get_dates() or (None, None)
            start, end = _naive(start), _naive(end)
        except (ValueError, TypeError) as exc:
            raise fail(f"benchmark {name!r}: a run's date is not an ISO 8601 time ({exc})") from None
        except OverflowError:
            raise fail(
                f"benchmark {name!r}: a run's date (with its duration) is past the year 9999 — "
                "fix the date metadata of the file"
            ) from None
        if start is not None and end is not None:
            starts.append(start)
            ends.append(end)
        key = (engine, version, workload.name, workload.content_hash)
        if key in seen:
            raise fail(f"benchmarks {seen[key]!r} and {name!r} are both {engine}/{version}/{workload.name}")
        seen[key] = name
        if engine == EngineKind.SIM:
            versions[version] = _registry_version(version)
        try:
            _check_text(read.metadata, "metadata")
            for i, process in enumerate(read.processes):
                _check_text(process.metadata, f"processes[{i}].metadata")
        except _Bad as exc:
            raise fail(f"benchmark {name!r}: {exc}") from None
        results.append(
            ResultRecord(
                engine=engine,
                version=version,
                workload=workload,
                processes=read.processes,
                warnings=read.warnings,
                pyperf_metadata=read.metadata,
                started_at=start,
                finished_at=end,
            )
        )

    if starts:
        started_at, finished_at = min(starts), max(ends)
    else:  # no pyperf dates: the file's modification time
        started_at = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).replace(tzinfo=None)
        finished_at = started_at
    assert started_at is not None
    run = RunRecord(
        uuid=str(uuid.uuid5(PYPERF_RUN_NAMESPACE, hashlib.sha256(raw).hexdigest())),
        started_at=started_at,
        finished_at=finished_at,
        machine=machine,
        environment=environment,
        benchsvc_version=text_md("benchsvc_version") or "unknown",
        git_commit=None,
        mode="pyperf",
        trigger="import",
        pyperf_settings={},
        status=RunStatus.COMPLETE,
    )
    group = RunGroup(record=run, line=0, results=results, versions=versions)
    return ImportBatch(label=label, runs=[group])


def _pyperf_values_problem(bench: Any) -> str | None:
    """The first value, warmup or loop count of a pyperf benchmark that the JSON Lines import would refuse
    (the same checks: :func:`~benchsvc.store.result_schema.value_problem`), as ``processes[i]...: why``;
    ``i`` counts the runs that have values, as the stored processes do."""
    runs = [r for r in bench.get_runs() if r.values]
    for i, r in enumerate(runs):
        for key, items, check in (
            ("values", [float(x) for x in r.values], value_problem),
            ("warmups", [float(x) for _, x in r.warmups], warmup_problem),
        ):
            for j, x in enumerate(items):
                problem = check(x)
                if problem:
                    return f"processes[{i}].{key}[{j}]: {problem}"
        loops = r.get_total_loops()
        if not 1 <= loops <= MAX_INT32:
            return f"processes[{i}].loops: {loops} is out of range (1 to {MAX_INT32})"
    return None


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    """A pyperf date (local time of the benchmark machine, no zone) as stored: taken as UTC."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def _check_limits(fail: Callable[[str], ImportFormatError], values: Mapping[str, str]) -> None:
    for key, value in values.items():
        limit = LIMITS.get(key)
        if limit is not None and len(value) > limit:
            raise fail(f"{key}: {value[:40]!r}... is longer than {limit} characters")


def _pyperf_identity(bench: Any, defaults: PyperfDefaults) -> tuple[EngineKind, str, WorkloadRef]:
    """The engine, version and workload of a pyperf benchmark: metadata ``benchsvc_*`` keys, else a
    ``engine/version/workload`` name, else the options."""
    from benchsvc.workload import resolve

    md = bench.get_metadata()
    parts = (bench.get_name() or "").split("/")
    named: list[str | None] = [None, None, None]
    if len(parts) == 3 and parts[0] in ENGINES and all(parts):
        named = list(parts)
    engine = md.get("benchsvc_engine") or named[0] or defaults.engine
    version = md.get("benchsvc_zap_version") or named[1] or defaults.version
    workload_name = md.get("benchsvc_workload") or named[2]
    missing = [
        opt
        for opt, value in (
            ("--engine", engine),
            ("--version", version),
            ("--workload", workload_name or defaults.workload),
        )
        if not value
    ]
    if missing:
        what = ", ".join(o.lstrip("-") for o in missing)
        raise _Bad(
            "",
            f"does not name its {what} (no benchsvc_* metadata, no engine/version/workload name): "
            f"give {' '.join(missing)}",
        )
    assert engine and version
    for key, value in (("engine", engine), ("version.id", version)):
        limit = LIMITS[key]
        if not isinstance(value, str) or (limit is not None and len(value) > limit):
            raise _Bad("", f"{key} {value!r} is not a string of at most {limit} characters")
    if engine not in ENGINES:
        raise _Bad("", f"engine {engine!r} is not one of: {', '.join(ENGINES)}")
    if engine == EngineKind.SIM:
        from benchsvc.engine.versions import version_ids

        if version not in version_ids():
            raise _Bad("", f"unknown sim version {version!r} (known: {', '.join(version_ids())})")
    kind = EngineKind(engine)
    _check_version_engine(VersionInfo(version, kind))
    if workload_name:
        problem = name_problem(workload_name)
        if problem:
            raise _Bad("", problem)
    try:
        spec = resolve(defaults.workload if defaults.workload else str(workload_name))
    except BenchsvcError as exc:
        hint = "" if defaults.workload else " (give --workload PATH to the workload file it ran)"
        raise _Bad("", f"{exc}{hint}") from None
    if workload_name and spec.name != workload_name:
        raise _Bad("", f"it ran workload {workload_name!r}, but --workload is {spec.name!r}")
    recorded_hash = md.get("benchsvc_workload_hash")
    if recorded_hash and recorded_hash != spec.content_hash:
        raise _Bad(
            "",
            f"it ran workload {spec.name} with content hash {str(recorded_hash)[:12]}..., but the file "
            f"{spec.path or spec.name} has {spec.content_hash[:12]}...: "
            "give --workload PATH to the file it ran",
        )
    return kind, version, WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)


def _registry_version(vid: str) -> VersionInfo:
    from benchsvc.store.ingest import registry_versions

    return next(v for v in registry_versions() if v.id == vid)


# ---------------------------------------------------------------------------------------------------------
# import: writing


@dataclass(frozen=True)
class _VersionClaim:
    """What importing a file would make of one version row."""

    engine: str
    parent: str | None
    sets_parent: bool  # upsert_version writes the parent (a full description), not only a new row's
    where: str


def _version_claims(batch: ImportBatch) -> dict[str, _VersionClaim]:
    claims: dict[str, _VersionClaim] = {}

    def where(vid: str) -> str:
        line = batch.version_lines.get(vid)
        return f"{batch.label}:{line}" if line else batch.label

    for group in batch.runs:
        for info in group.versions.values():
            claims.setdefault(
                info.id,
                _VersionClaim(info.engine, info.parent, bool(info.title or info.source), where(info.id)),
            )
        for result in group.results:
            claims.setdefault(
                result.version, _VersionClaim(result.engine, None, False, where(result.version))
            )
    return claims


def check_versions(session: Session | None, batches: Sequence[ImportBatch], *, after: str = "") -> None:
    """Refuse files whose versions would break the store: a version id with two engines (across the files, or
    against the database), or a parent chain that comes back to itself once the files are stored.

    ``session`` None checks the files against each other only. ``after`` ends the message (what was written)."""
    engines: dict[str, tuple[str, str]] = {}
    parents: dict[str, str | None] = {}
    if session is not None:
        for vid, engine, parent in session.execute(select(Version.id, Version.engine, Version.parent)):
            engines[vid] = (engine, "the database")
            parents[vid] = parent
    claimed: list[tuple[str, str]] = []
    tail = f"; {after}" if after else "; nothing was imported"
    _check_shipped_versions(batches, tail)
    for batch in batches:
        for vid, claim in _version_claims(batch).items():
            prior = engines.get(vid)
            if prior is not None and prior[0] != claim.engine:
                raise ImportConflict(
                    f"{claim.where}: version {vid!r} is a {claim.engine} version here but a {prior[0]} version "
                    f"in {prior[1]}: a version belongs to one engine{tail}"
                )
            engines.setdefault(vid, (claim.engine, claim.where))
            if vid not in parents or claim.sets_parent:
                parents[vid] = claim.parent
            claimed.append((vid, claim.where))
    for vid, where in claimed:
        chain = [vid]
        parent = parents.get(vid)
        while parent is not None:
            if parent in chain:
                path = " -> ".join(repr(v) for v in [*chain, parent])
                raise ImportConflict(
                    f"{where}: version {vid!r}: its parents form a cycle ({path}); fix version.parent{tail}"
                )
            chain.append(parent)
            parent = parents.get(parent)


def _check_shipped_versions(batches: Sequence[ImportBatch], tail: str) -> None:
    """Refuse a file that describes a version shipped with benchsvc (the simulated registry) otherwise than
    the registry does: its parent, title and source are the code's, never a file's. A field the file leaves
    empty (a line that only names the version) is not a description."""
    from benchsvc.store.ingest import registry_versions

    shipped = {v.id: v for v in registry_versions()}
    for batch in batches:
        for group in batch.runs:
            for info in group.versions.values():
                ours = shipped.get(info.id)
                if ours is None:
                    continue
                describes = bool(info.title or info.source)  # else the line only names the version
                given = {"parent": describes or info.parent is not None, "title": bool(info.title)}
                for field_name in ("parent", "title", "source"):
                    theirs, mine = getattr(info, field_name), getattr(ours, field_name)
                    if given.get(field_name, bool(theirs)) and theirs != mine:
                        line = batch.version_lines.get(info.id)
                        where = f"{batch.label}:{line}" if line else batch.label
                        raise ImportConflict(
                            f"{where}: version.{field_name} of {info.id!r} is {show(theirs)}, but {info.id!r} is "
                            f"a version shipped with benchsvc, whose {field_name} is {show(mine)}: a file cannot "
                            f"redefine a shipped version (fix version.{field_name} in the file){tail}"
                        )


def store_batch(session: Session, batch: ImportBatch) -> ImportCounts:
    """Write a validated file through :func:`ingest` (in the caller's transaction); what was added.

    A run that is already stored keeps its row; its machine and environment must match the file's, else
    :class:`ImportConflict` (results of one machine are never filed under another)."""
    if session.get_bind().dialect.name == "postgresql":
        # imports into one server wait for each other (till the commit): two imports of one file then add it
        # once (the second finds it there), and two new files never race to create one machine or workload
        session.execute(select(func.pg_advisory_xact_lock(IMPORT_LOCK_KEY)))
    check_versions(session, [batch], after="nothing was imported from this file")
    added = 0
    for group in batch.runs:
        rec = group.record
        existing = session.scalar(
            select(Run)
            .where(Run.uuid == rec.uuid)
            .options(joinedload(Run.machine), joinedload(Run.environment))
        )
        if existing is not None and (
            existing.machine.fingerprint != rec.machine.fingerprint
            or existing.environment.fingerprint != rec.environment.fingerprint
        ):
            where = f"{batch.label}:{group.line}" if group.line else batch.label
            raise ImportConflict(
                f"{where}: run {rec.uuid} is already in the database with another machine or environment; "
                "nothing was imported from this file"
            )
        _, n = ingest(session, rec, group.results, group.versions.values())
        added += n
    return ImportCounts(label=batch.label, results=batch.n_results, added=added)
