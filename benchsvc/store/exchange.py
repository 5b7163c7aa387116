"""Export and import of results: JSON Lines ``benchsvc-result/1``, CSV, and pyperf JSON files (DESIGN §4).

One JSON Lines record is one result with its full provenance (run, machine, environment, engine, version,
workload), its raw values per worker process and its counters; ``docs/formats.md`` describes it field by
field. Export is deterministic: keys sorted at every level, floats written so that they read back exactly,
timestamps as ISO 8601 UTC, results in (run start, run uuid, engine, version, workload name, workload hash)
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import Column, select
from sqlalchemy.orm import Session, contains_eager, joinedload, selectinload

from benchsvc.errors import BenchsvcError
from benchsvc.limits import name_problem
from benchsvc.records import (
    EngineKind,
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    RunStatus,
    VersionInfo,
    WorkloadRef,
)
from benchsvc.store.ingest import ingest
from benchsvc.store.models import (
    RESULT_STATUSES,
    RUN_STATUSES,
    Counter,
    Environment,
    Machine,
    Result,
    Run,
    Version,
    Workload,
)
from benchsvc.workload import content_hash

FORMAT = "benchsvc-result/1"
ENGINES = tuple(EngineKind)
#: every version of the ``canary`` engine is named so, and nothing else is (benchsvc/runner/canary.py)
CANARY_PREFIX = "canary-"

#: namespace of the run uuids given to imported pyperf files (uuid5 of the file's sha256)
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

_BIGINT = 2**63
#: the largest raw timing value import accepts (seconds per loop iteration); more is not a measurement
MAX_VALUE_S = 1e9


class ExchangeError(BenchsvcError):
    """An export or import that cannot be done as asked."""


class ImportFormatError(ExchangeError):
    """A file that cannot be imported: the message names ``FILE:LINE`` (or ``FILE``) and what is wrong."""


class ImportConflict(ExchangeError):
    """A run in the file is already in the database with other provenance."""


# ---------------------------------------------------------------------------------------------------------
# timestamps


def format_timestamp(value: dt.datetime | None) -> str | None:
    """A stored (naive UTC) datetime as ISO 8601 UTC with microseconds: ``2026-11-26T03:00:00.000000Z``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def parse_timestamp(text: str) -> dt.datetime:
    """ISO 8601 -> naive UTC (a time without zone is taken as UTC); ValueError when it is not one."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def parse_when(text: str, option: str, *, end: bool = False) -> dt.datetime:
    """A ``--since``/``--until`` value as a naive UTC bound.

    ``YYYY-MM-DD`` is that whole day: the start of it, or for ``end`` the start of the next day (exclusive).
    A full time is itself, or for ``end`` one microsecond after it (so ``--until`` includes it)."""
    raw = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
            day = dt.datetime.combine(dt.date.fromisoformat(raw), dt.time())
            return day + dt.timedelta(days=1) if end else day
        value = parse_timestamp(raw)
    except ValueError:
        raise ExchangeError(
            f"{option} {text!r} is not a date or time (use YYYY-MM-DD or ISO 8601 like 2026-11-26T03:00Z)"
        ) from None
    return value + dt.timedelta(microseconds=1) if end else value


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


def _sort_key(result: Result) -> tuple[dt.datetime, str, str, str, str, str]:
    run = result.run
    return (
        run.started_at,
        run.uuid,
        result.engine,
        result.version_id,
        result.workload.name,
        result.workload.content_hash,
    )


def select_results(session: Session, flt: ExportFilter) -> list[Result]:
    """The results ``flt`` selects, with their run, machine, environment, version, workload, samples and
    counters loaded, in export order."""
    stmt = (
        select(Result)
        .join(Result.run)
        .join(Run.machine)
        .join(Run.environment)
        .join(Result.workload)
        .options(
            contains_eager(Result.run).contains_eager(Run.machine),
            contains_eager(Result.run).contains_eager(Run.environment),
            contains_eager(Result.workload),
            joinedload(Result.version),
            selectinload(Result.samples),
            selectinload(Result.counters),
        )
    )
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
    results = list(session.scalars(stmt).unique())
    results.sort(key=_sort_key)
    return results


def _floats(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values]


def result_record(result: Result) -> dict[str, Any]:
    """One stored result as a ``benchsvc-result/1`` object (before key sorting)."""
    run, machine, env, version, workload = (
        result.run,
        result.run.machine,
        result.run.environment,
        result.version,
        result.workload,
    )
    return {
        "format": FORMAT,
        "run": {
            "uuid": run.uuid,
            "started_at": format_timestamp(run.started_at),
            "finished_at": format_timestamp(run.finished_at),
            "status": run.status,
            "mode": run.mode,
            "trigger": run.trigger,
            "benchsvc_version": run.benchsvc_version,
            "git_commit": run.git_commit,
            "pyperf_settings": run.pyperf_settings or {},
        },
        "machine": {
            "hostname": machine.hostname,
            "cpu_model": machine.cpu_model,
            "cpu_count": machine.cpu_count,
            "kernel": machine.kernel,
            "arch": machine.arch,
            "fingerprint": machine.fingerprint,
        },
        "environment": {
            "python_version": env.python_version,
            "packages": env.packages or {},
            "fingerprint": env.fingerprint,
        },
        "engine": result.engine,
        "version": {
            "id": version.id,
            "parent": version.parent,
            "title": version.title or "",
            "source": version.source or "",
        },
        "workload": {
            "name": workload.name,
            "content_hash": workload.content_hash,
            "definition": workload.definition,
            "description": workload.description or "",
        },
        "status": result.status,
        "error": result.error,
        "counters": {c.name: int(c.value) for c in result.counters},
        "modeled_ns": None if result.modeled_ns is None else float(result.modeled_ns),
        "processes": [
            {
                "values": _floats(s.values or []),
                "warmups": _floats(s.warmups or []),
                "loops": int(s.loops),
                **({"metadata": dict(s.meta)} if s.meta else {}),
            }
            for s in sorted(result.samples, key=lambda s: s.process)
        ],
        "warnings": list(result.warnings or []),
        "pyperf_metadata": result.pyperf_metadata or {},
        "started_at": format_timestamp(result.started_at),
        "finished_at": format_timestamp(result.finished_at),
    }


def dumps_record(record: Mapping[str, Any]) -> str:
    """One JSON Lines line (without the newline): sorted keys, compact, ASCII, exact floats, no NaN."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False)


def export_jsonl(session: Session, flt: ExportFilter, out: TextIO) -> int:
    """Write the selected results as ``benchsvc-result/1`` lines; returns how many."""
    results = select_results(session, flt)
    for result in results:
        out.write(dumps_record(result_record(result)) + "\n")
    return len(results)


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value


def export_csv(session: Session, flt: ExportFilter, out: TextIO) -> int:
    """Write the selected results as CSV: one row per result, summary columns, then one ``c_<name>``
    column per counter (sorted by name; empty where a result lacks it). No raw values."""
    results = select_results(session, flt)
    counter_names = sorted({c.name for r in results for c in r.counters})
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(COUNTER_PREFIX + name for name in counter_names)])
    for r in results:
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
        writer.writerow(
            [_csv_cell(row[c]) for c in CSV_COLUMNS] + [_csv_cell(counters.get(n)) for n in counter_names]
        )
    return len(results)


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


def _maxlen(column: Any) -> int | None:
    col: Column[Any] = column.property.columns[0]
    return getattr(col.type, "length", None)


_LIMITS = {
    "run.uuid": _maxlen(Run.uuid),
    "run.mode": _maxlen(Run.mode),
    "run.trigger": _maxlen(Run.trigger),
    "run.benchsvc_version": _maxlen(Run.benchsvc_version),
    "run.git_commit": _maxlen(Run.git_commit),
    "machine.hostname": _maxlen(Machine.hostname),
    "machine.cpu_model": _maxlen(Machine.cpu_model),
    "machine.kernel": _maxlen(Machine.kernel),
    "machine.arch": _maxlen(Machine.arch),
    "environment.python_version": _maxlen(Environment.python_version),
    "engine": _maxlen(Result.engine),
    "version.id": _maxlen(Version.id),
    "version.parent": _maxlen(Version.parent),
    "workload.name": _maxlen(Workload.name),
    "workload.content_hash": _maxlen(Workload.content_hash),
    "counters": _maxlen(Counter.name),
}

_TOP_KEYS = (
    "format",
    "run",
    "machine",
    "environment",
    "engine",
    "version",
    "workload",
    "status",
    "error",
    "counters",
    "modeled_ns",
    "processes",
    "warnings",
    "pyperf_metadata",
    "started_at",
    "finished_at",
)
_RUN_KEYS = (
    "uuid",
    "started_at",
    "finished_at",
    "status",
    "mode",
    "trigger",
    "benchsvc_version",
    "git_commit",
    "pyperf_settings",
)
_MACHINE_KEYS = ("hostname", "cpu_model", "cpu_count", "kernel", "arch", "fingerprint")
_ENV_KEYS = ("python_version", "packages", "fingerprint")
_VERSION_KEYS = ("id", "parent", "title", "source")
_WORKLOAD_KEYS = ("name", "content_hash", "definition", "description")
_PROCESS_KEYS = ("values", "warmups", "loops", "metadata")
_MISSING = object()
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _Bad(Exception):
    """A problem in one line: the key path and what is wrong (turned into FILE:LINE: key: message)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)


def _seg(key: str) -> str:
    """A key as a path segment in a message: bare when plain, else JSON-quoted (ASCII, one line)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


class _Obj:
    """A JSON object being validated: typed getters that raise :class:`_Bad` with the key's full path."""

    def __init__(self, data: Any, path: str, allowed: Sequence[str]) -> None:
        if not isinstance(data, dict):
            raise _Bad(path, f"must be an object, not {_type_name(data)}")
        self.data = data
        self.path = path
        for key in data:
            if key not in allowed:
                raise _Bad(self.key(_seg(key)), f"unknown field (expected one of: {', '.join(allowed)})")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def _get(self, name: str, default: Any) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise _Bad(self.key(name), "missing")
            return default
        return value

    def string(
        self,
        name: str,
        default: Any = _MISSING,
        *,
        nullable: bool = False,
        choices: Sequence[str] | None = None,
    ) -> Any:
        value = self._get(name, default)
        key = self.key(name)
        if value is None and (nullable or default is None):
            return None
        if not isinstance(value, str):
            raise _Bad(key, f"must be a string{' or null' if nullable else ''}, not {_type_name(value)}")
        if choices is not None and value not in choices:
            raise _Bad(key, f"{_show(value)} is not one of: {', '.join(choices)}")
        limit = _LIMITS.get(key)
        if limit is not None and len(value) > limit:
            raise _Bad(key, f"is {len(value)} characters long, at most {limit} are allowed")
        return value

    def integer(self, name: str, default: Any = _MISSING, *, minimum: int | None = None) -> int:
        value = self._get(name, default)
        key = self.key(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(key, f"must be an integer, not {_type_name(value)} ({_show(value)})")
        if minimum is not None and value < minimum:
            raise _Bad(key, f"{value} is less than {minimum}")
        return value

    def number(self, name: str, default: Any = _MISSING) -> float | None:
        value = self._get(name, default)
        if value is None:
            return None
        return _number(value, self.key(name))

    def timestamp(self, name: str, default: Any = _MISSING) -> dt.datetime | None:
        value = self._get(name, default)
        key = self.key(name)
        if value is None and default is None:
            return None
        if not isinstance(value, str):
            raise _Bad(key, f"must be an ISO 8601 time string, not {_type_name(value)}")
        try:
            return parse_timestamp(value)
        except ValueError:
            raise _Bad(key, f"{_show(value)} is not an ISO 8601 time (like 2026-11-26T03:00:00Z)") from None

    def json_object(self, name: str) -> dict[str, Any]:
        value = self._get(name, {})
        if not isinstance(value, dict):
            raise _Bad(self.key(name), f"must be an object, not {_type_name(value)}")
        return value

    def obj(self, name: str, allowed: Sequence[str], default: Any = _MISSING) -> _Obj:
        return _Obj(self._get(name, default), self.key(name), allowed)

    def array(self, name: str, default: Any = ()) -> list[Any]:
        value = self._get(name, [] if default == () else default)
        if not isinstance(value, list):
            raise _Bad(self.key(name), f"must be a list, not {_type_name(value)}")
        return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(key, f"must be a number, not {_type_name(value)} ({_show(value)})")
    result = float(value)
    if not math.isfinite(result):
        raise _Bad(key, f"{value} is not a finite number")
    return result


def _seconds(value: Any, key: str) -> float:
    """A raw timing value: a number of seconds from 0 to :data:`MAX_VALUE_S`."""
    result = _number(value, key)
    if not 0.0 <= result <= MAX_VALUE_S:
        raise _Bad(key, f"{value} is not a time in seconds (0 to {MAX_VALUE_S:g})")
    return result


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
            sub = f"{path}.{_seg(key)}" if path else _seg(key)
            _check_text(key, sub)
            _check_text(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_text(item, f"{path}[{i}]")


def _parse_line(obj: Any) -> tuple[RunRecord, VersionInfo, ResultRecord]:
    if not isinstance(obj, dict):
        raise _Bad("", f"a line must be a JSON object, not {_type_name(obj)}")
    _check_text(obj, "")
    fmt = obj.get("format", _MISSING)
    if fmt is _MISSING:
        raise _Bad("format", f'missing (expected "{FORMAT}")')
    if fmt != FORMAT:
        raise _Bad("format", f'{_show(fmt)} is not a format this benchsvc reads (expected "{FORMAT}")')
    top = _Obj(obj, "", _TOP_KEYS)

    r = top.obj("run", _RUN_KEYS)
    run_uuid = r.string("uuid")
    try:
        canonical = str(uuid.UUID(run_uuid))
    except ValueError:
        canonical = ""
    if canonical != run_uuid:
        raise _Bad("run.uuid", f"{_show(run_uuid)} is not a UUID in canonical form (lower-case 8-4-4-4-12)")
    started = r.timestamp("started_at")
    assert started is not None
    run_fields: dict[str, Any] = {
        "finished_at": r.timestamp("finished_at", None),
        "status": r.string("status", choices=RUN_STATUSES),
        "mode": r.string("mode"),
        "trigger": r.string("trigger"),
        "benchsvc_version": r.string("benchsvc_version"),
        "git_commit": r.string("git_commit", None),
        "pyperf_settings": r.json_object("pyperf_settings"),
    }

    m = top.obj("machine", _MACHINE_KEYS)
    machine = MachineInfo(
        hostname=m.string("hostname"),
        cpu_model=m.string("cpu_model"),
        cpu_count=m.integer("cpu_count", minimum=0),
        kernel=m.string("kernel"),
        arch=m.string("arch"),
    )
    _check_fingerprint(m, machine.fingerprint)

    e = top.obj("environment", _ENV_KEYS)
    packages = e.json_object("packages")
    for name, ver in packages.items():
        if not isinstance(ver, str):
            raise _Bad(
                f"environment.packages.{_seg(name)}", f"must be a version string, not {_type_name(ver)}"
            )
    environment = EnvironmentInfo(python_version=e.string("python_version"), packages=dict(packages))
    _check_fingerprint(e, environment.fingerprint)

    run = RunRecord(uuid=run_uuid, started_at=started, machine=machine, environment=environment, **run_fields)

    engine = top.string("engine", choices=ENGINES)
    v = top.obj("version", _VERSION_KEYS)
    version = VersionInfo(
        id=v.string("id"),
        engine=engine,
        parent=v.string("parent", None),
        title=v.string("title", ""),
        source=v.string("source", ""),
    )
    _check_version_engine(version)
    if version.parent == version.id:
        raise _Bad(
            "version.parent",
            f"{_show(version.parent)} is the version itself: a version is never its own parent",
        )

    w = top.obj("workload", _WORKLOAD_KEYS)
    workload = WorkloadRef(
        name=w.string("name"),
        content_hash=w.string("content_hash"),
        definition=w.string("definition"),
        description=w.string("description", ""),
    )
    problem = name_problem(workload.name)
    if problem:
        raise _Bad("workload.name", problem)
    if not _HEX64.match(workload.content_hash):
        raise _Bad("workload.content_hash", f"{_show(workload.content_hash)} is not a lower-case sha256 hex")
    computed = content_hash(workload.definition.encode("utf-8"))
    if workload.content_hash != computed:
        raise _Bad(
            "workload.content_hash",
            f"{workload.content_hash[:12]}... is not the sha256 of workload.definition ({computed[:12]}...): "
            "the line was edited; restore the definition or its hash",
        )

    counters: dict[str, int] = {}
    for name, value in top.json_object("counters").items():
        key = f"counters.{_seg(name)}"
        limit = _LIMITS["counters"]
        if limit is not None and len(name) > limit:
            raise _Bad(key, f"the name is {len(name)} characters long, at most {limit} are allowed")
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(key, f"must be an integer, not {_type_name(value)} ({_show(value)})")
        if not -_BIGINT <= value < _BIGINT:
            raise _Bad(key, f"{value} does not fit in 64 bits")
        counters[name] = value

    processes = []
    for i, item in enumerate(top.array("processes")):
        p = _Obj(item, f"processes[{i}]", _PROCESS_KEYS)
        values = p.array("values", _MISSING)
        warmups = p.array("warmups")
        processes.append(
            ProcessValues(
                values=tuple(_seconds(x, f"processes[{i}].values[{j}]") for j, x in enumerate(values)),
                warmups=tuple(_seconds(x, f"processes[{i}].warmups[{j}]") for j, x in enumerate(warmups)),
                loops=p.integer("loops", 1, minimum=1),
                metadata=_scalars(p.json_object("metadata"), p.key("metadata")),
            )
        )

    warnings = top.array("warnings")
    for i, text in enumerate(warnings):
        if not isinstance(text, str):
            raise _Bad(f"warnings[{i}]", f"must be a string, not {_type_name(text)}")

    status = top.string("status", choices=RESULT_STATUSES)
    result = ResultRecord(
        engine=engine,
        version=version.id,
        workload=workload,
        status=status,
        error=top.string("error", None),
        counters=counters,
        modeled_ns=top.number("modeled_ns", None),
        processes=tuple(processes),
        warnings=tuple(warnings),
        pyperf_metadata=top.json_object("pyperf_metadata"),
        started_at=top.timestamp("started_at", None),
        finished_at=top.timestamp("finished_at", None),
    )
    return run, version, result


def _check_version_engine(version: VersionInfo) -> None:
    """A version id of the simulated engine's registry is a ``sim`` version, whatever a file says; the
    canary's versions are ``canary-*`` and of the ``canary`` engine, both ways."""
    from benchsvc.engine.versions import version_ids

    if version.id in version_ids() and version.engine != EngineKind.SIM:
        raise _Bad(
            "engine",
            f"{_show(version.engine)} for {_show(version.id)}, a version of the simulated engine "
            "(its engine is sim)",
        )
    if (version.engine == EngineKind.CANARY) != version.id.startswith(CANARY_PREFIX):
        raise _Bad(
            "engine",
            f"{_show(version.engine)} for {_show(version.id)}: the canary engine's versions, and only "
            f"they, are named {CANARY_PREFIX}*",
        )


def _scalars(value: dict[str, Any], key: str) -> dict[str, Any]:
    """A metadata object: string keys, scalar values (string, number, boolean)."""
    for name, item in value.items():
        if isinstance(item, dict | list) or item is None:
            raise _Bad(f"{key}.{_seg(name)}", f"must be a string, number or boolean, not {_type_name(item)}")
    return dict(value)


def _check_fingerprint(o: _Obj, computed: str) -> None:
    given = o.string("fingerprint", None)
    if given is not None and given != computed:
        raise _Bad(
            o.key("fingerprint"),
            f"{_show(given)} does not match the fields (they give {computed[:12]}...): "
            "the line was edited; drop the fingerprint or restore the fields",
        )


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
        except _Bad as exc:
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
        runs = [r for r in bench.get_runs() if r.values]
        if not runs:
            raise fail(f"benchmark {name!r} has no values (only calibration runs)")
        try:
            start, end = bench.get_dates() or (None, None)
        except (ValueError, TypeError) as exc:
            raise fail(f"benchmark {name!r}: a run's date is not an ISO 8601 time ({exc})") from None
        if start is not None and end is not None:
            starts.append(start)
            ends.append(end)
        key = (engine, version, workload.name, workload.content_hash)
        if key in seen:
            raise fail(f"benchmarks {seen[key]!r} and {name!r} are both {engine}/{version}/{workload.name}")
        seen[key] = name
        if engine == EngineKind.SIM:
            versions[version] = _registry_version(version)
        metadata = {k: v for k, v in bench.get_metadata().items() if _json_value(v)}
        try:
            _check_text(metadata, "metadata")
        except _Bad as exc:
            raise fail(f"benchmark {name!r}: {exc}") from None
        results.append(
            ResultRecord(
                engine=engine,
                version=version,
                workload=workload,
                processes=tuple(
                    ProcessValues(
                        values=tuple(float(x) for x in r.values),
                        warmups=tuple(float(x) for _, x in r.warmups),
                        loops=int(r.get_loops()),
                    )
                    for r in runs
                ),
                warnings=tuple(_pyperf_warnings(bench)),
                pyperf_metadata=metadata,
                started_at=_naive(start),
                finished_at=_naive(end),
            )
        )

    if starts:
        started_at, finished_at = _naive(min(starts)), _naive(max(ends))
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


def _naive(value: dt.datetime | None) -> dt.datetime | None:
    """A pyperf date (local time of the benchmark machine, no zone) as stored: taken as UTC."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def _json_value(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not (
        isinstance(value, float) and not math.isfinite(value)
    )


def _check_limits(fail: Callable[[str], ImportFormatError], values: Mapping[str, str]) -> None:
    for key, value in values.items():
        limit = _LIMITS.get(key)
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
        limit = _LIMITS[key]
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


def _pyperf_warnings(bench: Any) -> list[str]:
    """pyperf's stability warnings for a benchmark (the ``* ...`` lines of its own check)."""
    try:
        from pyperf._cli import format_checks
    except ImportError:  # pragma: no cover - pyperf is pinned; its checks are not public API
        return []
    return [line[2:] for line in format_checks(bench) if line.startswith("* ")]


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


def store_batch(session: Session, batch: ImportBatch) -> ImportCounts:
    """Write a validated file through :func:`ingest` (in the caller's transaction); what was added.

    A run that is already stored keeps its row; its machine and environment must match the file's, else
    :class:`ImportConflict` (results of one machine are never filed under another)."""
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
