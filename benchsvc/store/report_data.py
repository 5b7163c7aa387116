"""The queries behind the report site (:mod:`benchsvc.report.collect` assembles their DataFrames; the report
package itself never sees SQL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from benchsvc.store.models import Machine, Run, Version, Workload
from benchsvc.store.queries import NotFound, get_run


@dataclass(frozen=True)
class RunSummary:
    """A stored run as the report prints it (no ORM object leaves the store)."""

    id: int
    started_at: str  # "YYYY-MM-DD HH:MM", UTC
    status: str
    mode: str
    benchsvc_version: str
    git_commit: str | None
    hostname: str
    cpu_model: str
    cpu_count: int
    kernel: str
    arch: str
    python_version: str
    packages: dict[str, Any]


def latest_run(session: Session, hostname: str | None = None) -> Run:
    """The latest run of the store, or of the machine ``hostname``."""
    if hostname is None:
        return get_run(session)
    run_id = session.scalar(
        select(Run.id)
        .join(Machine)
        .where(Machine.hostname == hostname)
        .order_by(Run.started_at.desc(), Run.id.desc())
        .limit(1)
    )
    if run_id is None:
        raise NotFound(f"no run from machine {hostname!r}")
    return get_run(session, run_id)


def run_summary(run: Run) -> RunSummary:
    return RunSummary(
        id=run.id,
        started_at=f"{run.started_at:%Y-%m-%d %H:%M}",
        status=run.status,
        mode=run.mode,
        benchsvc_version=run.benchsvc_version,
        git_commit=run.git_commit,
        hostname=run.machine.hostname,
        cpu_model=run.machine.cpu_model,
        cpu_count=run.machine.cpu_count,
        kernel=run.machine.kernel,
        arch=run.machine.arch,
        python_version=run.environment.python_version,
        packages=dict(run.environment.packages),
    )


def versions_frame(session: Session) -> pd.DataFrame:
    """Every stored version: id, engine, parent, title, source."""
    return pd.DataFrame(
        [(v.id, v.engine, v.parent, v.title, v.source) for v in session.scalars(select(Version))],
        columns=["id", "engine", "parent", "title", "source"],
    )


def workloads_frame(session: Session, keys: list[tuple[str, str]]) -> pd.DataFrame:
    """The stored workloads with these (name, content hash) keys: name, content_hash, description,
    definition, in the order given."""
    rows = []
    for name, chash in keys:
        w = session.scalar(select(Workload).where(Workload.name == name, Workload.content_hash == chash))
        if w is not None:
            rows.append((w.name, w.content_hash, w.description, w.definition))
    return pd.DataFrame(rows, columns=["name", "content_hash", "description", "definition"])
