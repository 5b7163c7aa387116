"""The ``benchsvc-result/1`` line as one pydantic schema: export writes it, import reads it, and
``docs/formats.md`` is checked against it (tests/test_result_schema.py).

:class:`ResultLine` is one result with its full provenance. Reading (:func:`parse_line`) validates a JSON
object strictly (a number is never a string, an integer never a float, unknown fields are errors) and turns
the first problem into ``key.path: what is wrong`` (:class:`LineError`); the caller prefixes ``FILE:LINE``.
Writing (:meth:`ResultLine.from_stored`) builds the same model from stored rows without validating them
(a database written by an older benchsvc may hold what import now refuses) and dumps it as plain JSON
values: timestamps as ISO 8601 UTC with microseconds and a ``Z``.

String lengths are the database columns' (:data:`LIMITS`), so a line that passes fits the store.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    Strict,
    StringConstraints,
    ValidationError,
    model_validator,
)
from sqlalchemy import Column

from benchsvc.limits import name_problem
from benchsvc.records import (
    EngineKind,
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    ResultStatus,
    RunRecord,
    RunStatus,
    VersionInfo,
    WorkloadRef,
)
from benchsvc.store.models import Counter, Environment, Machine, Result, Run, Version, Workload
from benchsvc.workload import content_hash

FORMAT = "benchsvc-result/1"
#: every version of the ``canary`` engine is named so, and nothing else is (benchsvc/runner/canary.py)
CANARY_PREFIX = "canary-"
#: the largest raw timing value import accepts (seconds per loop iteration): the largest zap the engines
#: allow (4 GiB) takes milliseconds, so an hour is no measurement of one (docs/limits.md)
MAX_VALUE_S = 3600.0
#: the largest value a 32-bit ``INTEGER`` column holds in PostgreSQL (``cpu_count``, ``loops``)
MAX_INT32 = 2**31 - 1
_BIGINT = 2**63
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _maxlen(column: Any) -> int | None:
    col: Column[Any] = column.property.columns[0]
    return getattr(col.type, "length", None)


#: the longest string each field may be: its database column's length
LIMITS: dict[str, int | None] = {
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


# ---------------------------------------------------------------------------------------------------------
# messages


class FieldProblem(ValueError):
    """A problem a validator finds in a field below the one it validates (``key`` is appended to the path)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class LineError(Exception):
    """A line that is not a valid ``benchsvc-result/1`` record: ``key.path: what is wrong``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)


def seg(key: str) -> str:
    """A key as a path segment in a message: bare when plain, else JSON-quoted (ASCII, one line)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


def type_name(value: Any) -> str:
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


# ---------------------------------------------------------------------------------------------------------
# field types


def format_timestamp(value: dt.datetime | None) -> str | None:
    """A stored (naive UTC) datetime as ISO 8601 UTC with microseconds: ``2026-11-26T03:00:00.000000Z``."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


class TimeOutOfRange(ValueError):
    """An ISO 8601 time whose UTC equivalent falls outside the years 1 to 9999."""


def parse_timestamp(text: str) -> dt.datetime:
    """ISO 8601 -> naive UTC (a time without zone is taken as UTC); ValueError when it is not one, and
    :class:`TimeOutOfRange` when its offset moves it out of the years 1 to 9999 (``9999-12-31T23:00-02:00``,
    ``0001-01-01T00:00+01:00``)."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is not None:
        try:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        except OverflowError:
            raise TimeOutOfRange(
                f"{text.strip()!r} is outside the times benchsvc keeps (years 1 to 9999, in UTC)"
            ) from None
    return value


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):  # a model built from stored rows
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time string, not {type_name(value)}")
    try:
        return parse_timestamp(value)
    except TimeOutOfRange as exc:
        raise ValueError(str(exc)) from None
    except ValueError:
        raise ValueError(f"{show(value)} is not an ISO 8601 time (like 2026-11-26T03:00:00Z)") from None


def value_problem(value: float) -> str | None:
    """Why ``value`` cannot be a timing value (seconds per loop iteration) a later analysis divides by and
    takes logarithms of, or None: it must be finite, more than 0 and at most :data:`MAX_VALUE_S`. The one
    check of JSON Lines and pyperf import (and warmups may also be 0)."""
    if not (math.isfinite(value) and 0.0 < value <= MAX_VALUE_S):
        return f"{value!r} is not a time in seconds (more than 0, at most {MAX_VALUE_S:g})"
    return None


def warmup_problem(value: float) -> str | None:
    """As :func:`value_problem` for a warmup value, which may be 0 (no analysis reads warmups)."""
    return None if value == 0.0 else value_problem(value)


def _seconds(value: float) -> float:
    problem = value_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _warmup_seconds(value: float) -> float:
    problem = warmup_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _int32(value: int) -> int:
    if not 0 <= value <= MAX_INT32:
        raise ValueError(f"{value} is out of range (0 to {MAX_INT32})")
    return value


def _int64(value: int) -> int:
    if not -_BIGINT <= value < _BIGINT:
        raise ValueError(f"{value} does not fit in 64 bits")
    return value


def _scalar(value: Any) -> Any:
    if isinstance(value, dict | list) or value is None:
        raise ValueError(f"must be a string, number or boolean, not {type_name(value)}")
    return value


def _version_string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a version string, not {type_name(value)}")
    return value


def _run_uuid(value: str) -> str:
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        canonical = ""
    if canonical != value:
        raise ValueError(f"{show(value)} is not a UUID in canonical form (lower-case 8-4-4-4-12)")
    return value


def _workload_name(value: str) -> str:
    problem = name_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _sha256_hex(value: str) -> str:
    if not _HEX64.match(value):
        raise ValueError(f"{show(value)} is not a lower-case sha256 hex")
    return value


def _fits(key: str) -> StringConstraints:
    """At most the length of ``key``'s database column."""
    return StringConstraints(max_length=LIMITS[key])


Timestamp = Annotated[
    dt.datetime, PlainValidator(_timestamp), PlainSerializer(format_timestamp, return_type=str)
]
Seconds = Annotated[float, AfterValidator(_seconds)]
WarmupSeconds = Annotated[float, AfterValidator(_warmup_seconds)]
Int32 = Annotated[int, AfterValidator(_int32)]
Int64 = Annotated[int, AfterValidator(_int64)]
CounterName = Annotated[str, _fits("counters")]
Scalar = Annotated[Any, AfterValidator(_scalar)]


class _Fields(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class RunFields(_Fields):
    uuid: Annotated[str, _fits("run.uuid"), AfterValidator(_run_uuid)]
    started_at: Timestamp
    finished_at: Timestamp | None = None
    status: Annotated[RunStatus, Strict(False)]  # its value, a string (strict wants the enum object)
    mode: Annotated[str, _fits("run.mode")]
    trigger: Annotated[str, _fits("run.trigger")]
    benchsvc_version: Annotated[str, _fits("run.benchsvc_version")]
    git_commit: Annotated[str, _fits("run.git_commit")] | None = None
    pyperf_settings: dict[str, Any] = Field(default_factory=dict)


class MachineFields(_Fields):
    hostname: Annotated[str, _fits("machine.hostname")]
    cpu_model: Annotated[str, _fits("machine.cpu_model")]
    cpu_count: Int32
    kernel: Annotated[str, _fits("machine.kernel")]
    arch: Annotated[str, _fits("machine.arch")]
    fingerprint: str | None = None

    def info(self) -> MachineInfo:
        return MachineInfo(self.hostname, self.cpu_model, self.cpu_count, self.kernel, self.arch)

    @model_validator(mode="after")
    def _fingerprint_matches(self) -> MachineFields:
        _check_fingerprint(self.fingerprint, self.info().fingerprint)
        return self


class EnvironmentFields(_Fields):
    python_version: Annotated[str, _fits("environment.python_version")]
    packages: dict[str, Annotated[Any, AfterValidator(_version_string)]] = Field(default_factory=dict)
    fingerprint: str | None = None

    def info(self) -> EnvironmentInfo:
        return EnvironmentInfo(python_version=self.python_version, packages=dict(self.packages))

    @model_validator(mode="after")
    def _fingerprint_matches(self) -> EnvironmentFields:
        _check_fingerprint(self.fingerprint, self.info().fingerprint)
        return self


def _check_fingerprint(given: str | None, computed: str) -> None:
    if given is not None and given != computed:
        raise FieldProblem(
            "fingerprint",
            f"{show(given)} does not match the fields (they give {computed[:12]}...): "
            "the line was edited; drop the fingerprint or restore the fields",
        )


class VersionFields(_Fields):
    id: Annotated[str, _fits("version.id")]
    parent: Annotated[str, _fits("version.parent")] | None = None
    title: str = ""
    source: str = ""

    @model_validator(mode="after")
    def _not_its_own_parent(self) -> VersionFields:
        if self.parent == self.id:
            raise FieldProblem(
                "parent", f"{show(self.parent)} is the version itself: a version is never its own parent"
            )
        return self


class WorkloadFields(_Fields):
    name: Annotated[str, _fits("workload.name"), AfterValidator(_workload_name)]
    content_hash: Annotated[str, _fits("workload.content_hash"), AfterValidator(_sha256_hex)]
    definition: str
    description: str = ""

    @model_validator(mode="after")
    def _hash_of_definition(self) -> WorkloadFields:
        computed = content_hash(self.definition.encode("utf-8"))
        if self.content_hash != computed:
            raise FieldProblem(
                "content_hash",
                f"{self.content_hash[:12]}... is not the sha256 of workload.definition ({computed[:12]}...): "
                "the line was edited; restore the definition or its hash",
            )
        return self


class ProcessFields(_Fields):
    values: list[Seconds] = Field(min_length=1)
    warmups: list[WarmupSeconds] = Field(default_factory=list)
    loops: Annotated[int, Field(ge=1), AfterValidator(_int32)] = 1
    #: written only when there is some (older benchsvc refuses the field)
    metadata: dict[str, Scalar] = Field(default_factory=dict, exclude_if=lambda m: not m)


class ResultLine(_Fields):
    """One line of a ``benchsvc-result/1`` file: one result with all of its provenance."""

    format: Literal["benchsvc-result/1"]
    run: RunFields
    machine: MachineFields
    environment: EnvironmentFields
    engine: Annotated[EngineKind, Strict(False)]
    version: VersionFields
    workload: WorkloadFields
    status: Annotated[ResultStatus, Strict(False)]
    error: str | None = None
    counters: dict[CounterName, Int64] = Field(default_factory=dict)
    modeled_ns: float | None = None
    processes: list[ProcessFields] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    pyperf_metadata: dict[str, Any] = Field(default_factory=dict)
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None

    @model_validator(mode="after")
    def _version_of_its_engine(self) -> ResultLine:
        problem = version_engine_problem(self.version.id, self.engine)
        if problem:
            raise FieldProblem("engine", problem)
        return self

    # -- reading

    def run_record(self) -> RunRecord:
        r = self.run
        return RunRecord(
            uuid=r.uuid,
            started_at=r.started_at,
            machine=self.machine.info(),
            environment=self.environment.info(),
            benchsvc_version=r.benchsvc_version,
            git_commit=r.git_commit,
            mode=r.mode,
            trigger=r.trigger,
            pyperf_settings=dict(r.pyperf_settings),
            status=r.status,
            finished_at=r.finished_at,
        )

    def version_info(self) -> VersionInfo:
        v = self.version
        return VersionInfo(v.id, self.engine, v.parent, v.title, v.source)

    def result_record(self) -> ResultRecord:
        w = self.workload
        return ResultRecord(
            engine=self.engine,
            version=self.version.id,
            workload=WorkloadRef(w.name, w.content_hash, w.definition, w.description),
            status=self.status,
            error=self.error,
            counters=dict(self.counters),
            modeled_ns=self.modeled_ns,
            processes=tuple(
                ProcessValues(tuple(p.values), tuple(p.warmups), p.loops, dict(p.metadata))
                for p in self.processes
            ),
            warnings=tuple(self.warnings),
            pyperf_metadata=dict(self.pyperf_metadata),
            started_at=self.started_at,
            finished_at=self.finished_at,
        )

    # -- writing

    @classmethod
    def from_stored(cls, result: Result) -> ResultLine:
        """A stored result (with its run, machine, environment, version, workload, samples and counters
        loaded) as a line, unvalidated."""
        run, machine, env, version, workload = (
            result.run,
            result.run.machine,
            result.run.environment,
            result.version,
            result.workload,
        )
        return cls.model_construct(
            format=FORMAT,
            run=RunFields.model_construct(
                uuid=run.uuid,
                started_at=run.started_at,
                finished_at=run.finished_at,
                status=RunStatus(run.status),
                mode=run.mode,
                trigger=run.trigger,
                benchsvc_version=run.benchsvc_version,
                git_commit=run.git_commit,
                pyperf_settings=run.pyperf_settings or {},
            ),
            machine=MachineFields.model_construct(
                hostname=machine.hostname,
                cpu_model=machine.cpu_model,
                cpu_count=machine.cpu_count,
                kernel=machine.kernel,
                arch=machine.arch,
                fingerprint=machine.fingerprint,
            ),
            environment=EnvironmentFields.model_construct(
                python_version=env.python_version, packages=env.packages or {}, fingerprint=env.fingerprint
            ),
            engine=EngineKind(result.engine),
            version=VersionFields.model_construct(
                id=version.id, parent=version.parent, title=version.title or "", source=version.source or ""
            ),
            workload=WorkloadFields.model_construct(
                name=workload.name,
                content_hash=workload.content_hash,
                definition=workload.definition,
                description=workload.description or "",
            ),
            status=ResultStatus(result.status),
            error=result.error,
            counters={c.name: int(c.value) for c in result.counters},
            modeled_ns=None if result.modeled_ns is None else float(result.modeled_ns),
            processes=[
                ProcessFields.model_construct(
                    values=[float(v) for v in s.values or []],
                    warmups=[float(v) for v in s.warmups or []],
                    loops=int(s.loops),
                    metadata=dict(s.meta or {}),
                )
                for s in sorted(result.samples, key=lambda s: s.process)
            ],
            warnings=list(result.warnings or []),
            pyperf_metadata=result.pyperf_metadata or {},
            started_at=result.started_at,
            finished_at=result.finished_at,
        )

    def to_json_object(self) -> dict[str, Any]:
        """The line as plain JSON values (before key sorting)."""
        return self.model_dump(mode="json", warnings=False)


def version_engine_problem(version_id: str, engine: EngineKind) -> str | None:
    """Why ``version_id`` cannot be a version of ``engine``, or None: a version id of the simulated engine's
    registry is a ``sim`` version, whatever a file says; the canary's versions are ``canary-*`` and of the
    ``canary`` engine, both ways."""
    from benchsvc.engine.versions import version_ids

    if version_id in version_ids() and engine != EngineKind.SIM:
        return f"{show(engine.value)} for {show(version_id)}, a version of the simulated engine (its engine is sim)"
    if (engine == EngineKind.CANARY) != version_id.startswith(CANARY_PREFIX):
        return (
            f"{show(engine.value)} for {show(version_id)}: the canary engine's versions, and only they, "
            f"are named {CANARY_PREFIX}*"
        )
    return None


# ---------------------------------------------------------------------------------------------------------
# reading


def parse_line(obj: Any) -> ResultLine:
    """Validate one parsed JSON line; the first problem as :class:`LineError`."""
    if not isinstance(obj, dict):
        raise LineError("", f"a line must be a JSON object, not {type_name(obj)}")
    if "format" not in obj:
        raise LineError("format", f'missing (expected "{FORMAT}")')
    if obj["format"] != FORMAT:
        raise LineError(
            "format", f'{show(obj["format"])} is not a format this benchsvc reads (expected "{FORMAT}")'
        )
    try:
        return ResultLine.model_validate(obj)
    except ValidationError as exc:
        raise _line_error(exc.errors(include_url=False)[0]) from None


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{seg(part)}" if out else seg(part)
    return out


def _line_error(error: Any) -> LineError:
    """One pydantic error as the message import has always given for it."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    loc = tuple(error["loc"])
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
    key = _path(loc)
    if kind == "missing":
        return LineError(key, "missing")
    if kind == "extra_forbidden":
        allowed = ", ".join(_fields_at(loc[:-1]))
        return LineError(key, f"unknown field (expected one of: {allowed})")
    if kind == "value_error":
        problem = ctx.get("error")
        if isinstance(problem, FieldProblem):
            return LineError(_path((*loc, problem.key)), str(problem))
        return LineError(key, str(problem))
    if kind == "string_type":
        return LineError(key, f"must be a string, not {type_name(value)}")
    if kind == "string_too_long":
        what = "the name is" if is_key else "is"
        return LineError(key, f"{what} {len(value)} characters long, at most {ctx['max_length']} are allowed")
    if kind == "int_type":
        return LineError(key, f"must be an integer, not {type_name(value)} ({show(value)})")
    if kind == "float_type":
        if isinstance(value, int) and not isinstance(value, bool):
            return LineError(key, f"{show(value)} is too large for a number")
        return LineError(key, f"must be a number, not {type_name(value)} ({show(value)})")
    if kind == "greater_than_equal":
        return LineError(key, f"{value} is less than {ctx['ge']}")
    if kind == "enum":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return LineError(key, f"{show(value)} is not one of: {', '.join(choices)}")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return LineError(key, f"must be an object, not {type_name(value)}")
    if kind == "list_type":
        return LineError(key, f"must be a list, not {type_name(value)}")
    return LineError(key, str(error["msg"]))  # pragma: no cover - a type the schema does not use


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model at ``loc`` (list indices skipped)."""
    model: type[BaseModel] = ResultLine
    for part in loc:
        if isinstance(part, int):
            continue
        inner = _model_in(model.model_fields[part].annotation)
        if inner is None:  # pragma: no cover - extra fields are refused only in models
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def object_models() -> dict[str, type[BaseModel]]:
    """Each object of the line: "" for the line itself, then ``run``, ``machine``, ..., ``processes[i]``."""
    out: dict[str, type[BaseModel]] = {"": ResultLine}
    for name, field in ResultLine.model_fields.items():
        model = _model_in(field.annotation)
        if model is not None:
            out[f"{name}[i]" if name == "processes" else name] = model
    return out


def schema_fields() -> dict[str, dict[str, bool]]:
    """Each object of the line (:func:`object_models`) with its fields and whether each is required: what
    docs/formats.md documents."""
    return {
        label: {n: f.is_required() for n, f in model.model_fields.items()}
        for label, model in object_models().items()
    }
