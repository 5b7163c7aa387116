"""The machines of a store, as the query commands name them (``--machine``: a hostname or a fingerprint
prefix)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from benchsvc.store.models import Machine, Run
from benchsvc.store.queries import NotFound


def machine_ids(session: Session, machine: str) -> list[int]:
    """The ids of the machine rows that ``machine`` names (one host has a row per CPU/kernel/arch it ran
    with); :class:`NotFound`, with the hosts that have runs, when it names none."""
    rows = session.execute(select(Machine.id, Machine.hostname, Machine.fingerprint)).all()
    ids = [mid for mid, host, fp in rows if host == machine or fp.startswith(machine.lower())]
    if not ids:
        hosts = sorted(set(session.scalars(select(Machine.hostname).join(Run, Run.machine_id == Machine.id))))
        known = ", ".join(hosts) if hosts else "none: the database has no runs yet"
        raise NotFound(
            f"no machine {machine!r} in this database — give a hostname or fingerprint prefix: {known}"
        )
    return ids


def latest_run_id(session: Session, ids: list[int]) -> int:
    """The latest run of the machine rows ``ids``."""
    run_id = session.scalar(
        select(Run.id).where(Run.machine_id.in_(ids)).order_by(Run.started_at.desc(), Run.id.desc()).limit(1)
    )
    if run_id is None:
        raise NotFound("that machine has no runs in this database — see benchsvc runs")
    return int(run_id)
