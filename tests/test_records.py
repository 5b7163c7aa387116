"""Kinds and statuses are StrEnums in the records and stored as the plain strings they always were (no
migration): a record takes the string or the member, refuses anything else, and the database holds the
string."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

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
from benchsvc.store.db import open_store, write_session
from benchsvc.store.ingest import finish_run, ingest
from benchsvc.store.queries import find_workload
from benchsvc.workload import resolve


def _workload() -> WorkloadRef:
    spec = resolve("a-munmap-aligned")
    return WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)


def test_records_take_strings_or_members_and_refuse_the_rest() -> None:
    result = ResultRecord("kernel", "kernel-6.18", _workload(), status="failed")
    assert result.engine is EngineKind.KERNEL and result.status is ResultStatus.FAILED
    assert VersionInfo("v1", "sim").engine is EngineKind.SIM
    with pytest.raises(ValueError):
        ResultRecord("gpu", "g1", _workload())
    with pytest.raises(ValueError):
        ResultRecord("sim", "v1", _workload(), status="great")
    with pytest.raises(ValueError):
        VersionInfo("v1", "Sim")


def test_the_database_holds_the_plain_strings(tmp_path: Path) -> None:
    db = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    run = RunRecord(
        uuid=str(uuid.uuid4()),
        started_at=dt.datetime(2026, 11, 24, 3),
        machine=MachineInfo("bench-a", "cpu", 2, "6.12", "x86_64"),
        environment=EnvironmentInfo("3.11.7"),
        benchsvc_version="0.1.0",
        git_commit=None,
    )
    ok = ResultRecord(EngineKind.SIM, "v1", _workload(), processes=(ProcessValues((1e-3, 2e-3)),))
    try:
        with write_session(db) as s:
            stored, added = ingest(s, run, [ok])
            finish_run(s, stored, RunStatus.COMPLETE)
            assert added == 1
            workload = find_workload(s, ok.workload.name, ok.workload.content_hash)
            assert workload is not None and workload.name == "a-munmap-aligned"
            assert find_workload(s, ok.workload.name, "0" * 64) is None
        with db.connect() as conn:
            row = conn.execute(
                text("SELECT runs.status, results.engine, results.status FROM runs JOIN results")
            ).one()
            types = conn.execute(
                text("SELECT typeof(runs.status), typeof(results.engine) FROM runs JOIN results")
            ).one()
    finally:
        db.dispose()
    assert tuple(row) == ("complete", "sim", "ok")
    assert tuple(types) == ("text", "text")
