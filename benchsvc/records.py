"""Plain records of what a run measured, with full provenance (docs/design.md#store).

The runner, the importers and the tests build these; :mod:`benchsvc.store.ingest` writes them. Nothing here
imports SQLAlchemy. Times are UTC; durations are seconds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class EngineKind(StrEnum):
    """What measured a result: the simulated zap engine, the live kernel, or the machine-speed canary."""

    SIM = "sim"
    KERNEL = "kernel"
    CANARY = "canary"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


#: a run that ended (its results are final): what the analysis reads
FINISHED_RUN_STATUSES = (RunStatus.COMPLETE, RunStatus.FAILED)


class ResultStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"


class RegressionStatus(StrEnum):
    #: a nightly finding (a series changed): queued for acknowledgement, fails CI
    NEW = "new"
    ACKNOWLEDGED = "acknowledged"
    FIXED = "fixed"
    #: a lineage finding: a version differs from its parent inside one run. That is what the version is (its
    #: character), listed and kept up to date but not queued for acknowledgement and never failing CI
    CHARACTER = "character"


#: a finding that is still open
OPEN_REGRESSION_STATUSES = (RegressionStatus.NEW, RegressionStatus.ACKNOWLEDGED, RegressionStatus.CHARACTER)


class RegressionAxis(StrEnum):
    """lineage: versions within a run; nightly: one series across nights; machine: the machine events of the
    nightly analysis."""

    LINEAGE = "lineage"
    NIGHTLY = "nightly"
    MACHINE = "machine"


class Direction(StrEnum):
    WORSE = "worse"
    BETTER = "better"


#: packages whose versions make up the environment fingerprint
KEY_PACKAGES = ("pyperf", "numpy", "pandas", "sqlalchemy", "typer")


def utcnow() -> dt.datetime:
    """Now, as a naive UTC datetime (the store keeps every timestamp in UTC without a zone)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def fingerprint(fields: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``fields``."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def printable_os_text(text: str) -> str:
    """A name the system gave (a hostname, a CPU model) as text every database and terminal takes: bytes that
    are not UTF-8 (which Python carries as lone surrogates) become ``\\xNN`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def this_hostname() -> str:
    """This machine's hostname as stored and compared (:func:`printable_os_text` of ``uname -n``)."""
    return printable_os_text(platform.node())


@dataclass(frozen=True)
class MachineInfo:
    hostname: str
    cpu_model: str
    cpu_count: int
    kernel: str
    arch: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "cpu_model": self.cpu_model,
            "cpu_count": self.cpu_count,
            "kernel": self.kernel,
            "arch": self.arch,
        }

    @classmethod
    def current(cls) -> MachineInfo:
        return cls(
            hostname=this_hostname(),
            cpu_model=printable_os_text(_cpu_model()),
            cpu_count=os.cpu_count() or 0,
            kernel=platform.release(),
            arch=platform.machine(),
        )


@dataclass(frozen=True)
class EnvironmentInfo:
    python_version: str
    packages: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {"python_version": self.python_version, "packages": dict(sorted(self.packages.items()))}

    @classmethod
    def current(cls) -> EnvironmentInfo:
        from importlib.metadata import PackageNotFoundError, version

        packages = {}
        for name in KEY_PACKAGES:
            try:
                packages[name] = version(name)
            except PackageNotFoundError:
                packages[name] = "absent"
        return cls(python_version=platform.python_version(), packages=packages)


@dataclass(frozen=True)
class WorkloadRef:
    """A workload as stored: name, sha256 of the file's bytes, the definition text, its description."""

    name: str
    content_hash: str
    definition: str
    description: str = ""


@dataclass(frozen=True)
class VersionInfo:
    id: str
    engine: EngineKind
    parent: str | None = None
    title: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", EngineKind(self.engine))


@dataclass(frozen=True)
class ProcessValues:
    """The raw values one worker process produced (seconds per measured zap work) and its own metadata
    (start and end time, CPU affinity, measurement block and phase; see docs/measurement.md)."""

    values: tuple[float, ...]
    warmups: tuple[float, ...] = ()
    loops: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResultRecord:
    """One (engine, version, workload) result of a run."""

    engine: EngineKind
    version: str
    workload: WorkloadRef
    status: ResultStatus = ResultStatus.OK
    error: str | None = None
    counters: dict[str, int] = field(default_factory=dict)
    modeled_ns: float | None = None
    processes: tuple[ProcessValues, ...] = ()
    warnings: tuple[str, ...] = ()
    pyperf_metadata: dict[str, Any] = field(default_factory=dict)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine", EngineKind(self.engine))
        object.__setattr__(self, "status", ResultStatus(self.status))

    @property
    def values(self) -> list[float]:
        return [v for p in self.processes for v in p.values]


@dataclass(frozen=True)
class RunRecord:
    """A run's provenance: who, where, with what, how."""

    uuid: str
    started_at: dt.datetime
    machine: MachineInfo
    environment: EnvironmentInfo
    benchsvc_version: str
    git_commit: str | None
    mode: str = "default"
    trigger: str = "manual"
    pyperf_settings: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.RUNNING
    finished_at: dt.datetime | None = None
    plan: list[dict[str, str]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", RunStatus(self.status))

    @classmethod
    def new(
        cls, *, mode: str = "default", trigger: str = "manual", pyperf_settings: dict[str, Any] | None = None
    ) -> RunRecord:
        from benchsvc import __version__

        return cls(
            uuid=str(uuid.uuid4()),
            started_at=utcnow(),
            machine=MachineInfo.current(),
            environment=EnvironmentInfo.current(),
            benchsvc_version=__version__,
            git_commit=git_commit(),
            mode=mode,
            trigger=trigger,
            pyperf_settings=pyperf_settings or {},
        )


@dataclass(frozen=True)
class SeriesChange:
    """A change in one series across nights, to be recorded (axis nightly): a timing change point or an
    exact counter change. ``effect`` is the ratio now/before (the delta when before was zero: then
    ``details["effect_is_delta"]``); ``same_as_runs``: the runs whose finding of this series is this same
    change (a change point's night can move by one as nights arrive)."""

    engine: EngineKind
    version: str
    workload: str
    workload_hash: str
    metric: str
    direction: Direction
    effect: float
    baseline_run_id: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    same_as_runs: tuple[int, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


def git_commit() -> str | None:
    """The commit of the benchsvc checkout; for a package install (no ``.git``), the commit recorded when the
    package was built (``benchsvc/_build_info.py``, written by setup.py); else None."""
    here = Path(__file__).resolve().parent.parent
    if not (here / ".git").exists():
        return built_commit()
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def built_commit() -> str | None:
    """The git commit recorded in the package at build time, or None (not built from a git checkout)."""
    import importlib

    try:
        info = importlib.import_module("benchsvc._build_info")
    except ImportError:
        return None
    commit = getattr(info, "GIT_COMMIT", None)
    return commit if isinstance(commit, str) and commit else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or sys.platform
