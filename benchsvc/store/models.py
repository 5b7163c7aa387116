"""The result database's schema (SQLAlchemy 2 ORM). Every change here comes with an Alembic migration.

Provenance: a result belongs to a run (machine, environment, benchsvc version and commit, mode and pyperf
settings) and names its engine, version and workload (name + content hash). A series is machine ×
environment × engine × version × workload hash × metric (× mode), so two results with different provenance
never land in one series. Timestamps are naive UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from benchsvc.records import RegressionAxis, RegressionStatus, ResultStatus, RunStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The kinds and statuses are StrEnums (benchsvc.records) stored as their plain string values.
RUN_STATUSES = tuple(RunStatus)
RESULT_STATUSES = tuple(ResultStatus)
REGRESSION_STATUSES = tuple(RegressionStatus)
REGRESSION_AXES = tuple(RegressionAxis)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Machine(Base):
    __tablename__ = "machines"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    hostname: Mapped[str] = mapped_column(String(255))
    cpu_model: Mapped[str] = mapped_column(String(255))
    cpu_count: Mapped[int] = mapped_column(Integer)
    kernel: Mapped[str] = mapped_column(String(255))
    arch: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime)


class Environment(Base):
    __tablename__ = "environments"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    python_version: Mapped[str] = mapped_column(String(64))
    packages: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen: Mapped[dt.datetime] = mapped_column(DateTime)


class Version(Base):
    __tablename__ = "versions"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    engine: Mapped[str] = mapped_column(String(32))
    parent: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(Text, default="")


class Workload(Base):
    __tablename__ = "workloads"
    __table_args__ = (UniqueConstraint("name", "content_hash", name="uq_workloads_name_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64))
    definition: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # a machine's nights of one environment and mode, in order: the history the nightly analysis and the
        # report read (without it, a store of many machines is read whole for one machine's series)
        Index("ix_runs_machine_series", "machine_id", "environment_id", "mode", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    benchsvc_version: Mapped[str] = mapped_column(String(64))
    git_commit: Mapped[str | None] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(32))
    pyperf_settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: what the run set out to measure: [{"engine", "version", "workload", "workload_hash"}, ...] (for --resume)
    plan: Mapped[list[Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    machine: Mapped[Machine] = relationship()
    environment: Mapped[Environment] = relationship()
    results: Mapped[list[Result]] = relationship(back_populates="run", cascade="all, delete-orphan")


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (
        UniqueConstraint("run_id", "engine", "version_id", "workload_id", name="uq_results_run_key"),
        Index("ix_results_series", "workload_id", "version_id", "engine"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    engine: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"))
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    modeled_ns: Mapped[float | None] = mapped_column(Float)
    n_values: Mapped[int] = mapped_column(Integer, default=0)
    mean_s: Mapped[float | None] = mapped_column(Float)
    median_s: Mapped[float | None] = mapped_column(Float)
    stdev_s: Mapped[float | None] = mapped_column(Float)
    min_s: Mapped[float | None] = mapped_column(Float)
    max_s: Mapped[float | None] = mapped_column(Float)
    warnings: Mapped[list[Any]] = mapped_column(JSON)
    pyperf_metadata: Mapped[dict[str, Any]] = mapped_column(JSON)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    run: Mapped[Run] = relationship(back_populates="results")
    workload: Mapped[Workload] = relationship()
    version: Mapped[Version] = relationship()
    samples: Mapped[list[Sample]] = relationship(cascade="all, delete-orphan", order_by="Sample.process")
    counters: Mapped[list[Counter]] = relationship(cascade="all, delete-orphan")


class Sample(Base):
    """The raw values of one pyperf worker process of a result."""

    __tablename__ = "samples"

    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), primary_key=True)
    process: Mapped[int] = mapped_column(Integer, primary_key=True)
    loops: Mapped[int] = mapped_column(Integer, default=1)
    values: Mapped[list[Any]] = mapped_column(JSON)
    warmups: Mapped[list[Any]] = mapped_column(JSON)
    #: the process's own metadata: when and where it ran, its block and phase (None for older rows)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class Counter(Base):
    __tablename__ = "counters"

    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)


class Regression(Base):
    """A detected change (issue 5 fills it): along the lineage within a run, or across nights in a series."""

    __tablename__ = "regressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    axis: Mapped[str] = mapped_column(String(16))  # lineage | nightly | machine
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    machine_id: Mapped[int] = mapped_column(ForeignKey("machines.id"))
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id"))
    engine: Mapped[str] = mapped_column(String(32))
    version_id: Mapped[str] = mapped_column(ForeignKey("versions.id"))
    baseline_version_id: Mapped[str | None] = mapped_column(ForeignKey("versions.id"))
    baseline_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"))
    workload_id: Mapped[int] = mapped_column(ForeignKey("workloads.id"))
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))  # worse | better
    effect: Mapped[float] = mapped_column(Float)
    ci_low: Mapped[float | None] = mapped_column(Float)
    ci_high: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="new")
    note: Mapped[str | None] = mapped_column(Text)
    detected_at: Mapped[dt.datetime] = mapped_column(DateTime)


class RunAnalysis(Base):
    """A run the nightly analysis has looked at (``benchsvc run`` at its end, or ``benchsvc analyze``): one
    row per run, with the detector settings it used, so that analysing again is skipped."""

    __tablename__ = "run_analyses"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    analysed_at: Mapped[dt.datetime] = mapped_column(DateTime)
    benchsvc_version: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)


class RunLock(Base):
    """The run a host has running (``benchsvc run``): at most one row per host, so that the database records
    one active run per machine while machines sharing the store run at the same time."""

    __tablename__ = "run_locks"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    holder_pid: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[dt.datetime] = mapped_column(DateTime)
    #: refreshed by the holder after every committed block and on a timer (a dead host's run goes stale)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime)


class CostModelRow(Base):
    """A cost model fitted by ``benchsvc calibrate`` on one machine's live kernel (docs/cost-model.md): the
    machine (hostname), its kernel release, when, the suite it measured (hash), the coefficients with their
    bootstrap intervals, the fit quality and the leave-one-layout-out (hold-out) errors."""

    __tablename__ = "cost_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), index=True)
    kernel_release: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    suite_hash: Mapped[str] = mapped_column(String(64))
    #: the simulated version whose counters were fitted (the one that models the kernel)
    version: Mapped[str] = mapped_column(String(64))
    #: counter -> ns per event
    coefficients: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: counter -> [5th, 95th percentile] over the bootstrap
    intervals: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: in-sample and hold-out medians and worsts, the number of layouts, merged groups, seconds, load
    quality: Mapped[dict[str, Any]] = mapped_column(JSON)
    holdout_median: Mapped[float] = mapped_column(Float)
    holdout_worst: Mapped[float] = mapped_column(Float)
    #: layout -> leave-one-out relative error
    holdout_errors: Mapped[dict[str, Any]] = mapped_column(JSON)
    benchsvc_version: Mapped[str] = mapped_column(String(64))
