"""One run per database at a time: the run lock, stale-lock takeover, and recovery of killed runs.

The lock is the single row of ``run_lock``: the holder's run, pid and host, when it was taken and its last
heartbeat (refreshed after every result). It is taken in the same write transaction that creates the run, so
another process never sees a ``running`` run without its lock. A lock is stale when its holder is gone: on
this host, its pid is dead or now belongs to a process started after the lock was taken; on another host
(a shared PostgreSQL store), its heartbeat is older than :data:`STALE_AFTER`.

:func:`recover` marks every ``running`` run that is not the live lock holder's as ``interrupted`` (a run
killed with ``kill -9``); every command that opens the database calls it.
"""

from __future__ import annotations

import datetime as dt
import os
import socket

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchsvc.errors import BenchsvcError
from benchsvc.records import utcnow
from benchsvc.store.db import write_session
from benchsvc.store.models import Result, Run, RunLock

STALE_AFTER = dt.timedelta(hours=6)
LOCK_ID = 1


class RunLocked(BenchsvcError):
    """Another live ``benchsvc run`` holds the database."""


def holder_alive(lock: RunLock) -> bool:
    """Whether the lock's holder still runs (same host: by pid and start time; other host: by heartbeat)."""
    if lock.holder_host != socket.gethostname():
        return utcnow() - lock.heartbeat_at < STALE_AFTER
    try:
        import psutil

        proc = psutil.Process(lock.holder_pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = dt.datetime.fromtimestamp(proc.create_time(), dt.UTC).replace(tzinfo=None)
    except (ImportError, psutil.Error):
        return _pid_alive(lock.holder_pid)
    return started <= lock.acquired_at + dt.timedelta(seconds=2)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_holder(lock: RunLock) -> str:
    return (
        f"run {lock.run_id} (pid {lock.holder_pid} on {lock.holder_host}, "
        f"started {lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC)"
    )


def _mark_interrupted(session: Session, run: Run) -> None:
    last = session.scalar(
        select(Result.finished_at).where(Result.run_id == run.id).order_by(Result.id.desc())
    )
    run.status = "interrupted"
    run.finished_at = last or run.started_at


def take(session: Session, run: Run) -> str | None:
    """Take the lock for ``run`` inside the caller's write transaction.

    Raises :class:`RunLocked` when a live holder has it; returns a note when a stale lock was taken over."""
    lock = session.get(RunLock, LOCK_ID, with_for_update=True)
    note = None
    now = utcnow()
    if lock is not None:
        if holder_alive(lock) and not (
            lock.holder_pid == os.getpid() and lock.holder_host == socket.gethostname()
        ):
            raise RunLocked(
                f"the database is in use by {describe_holder(lock)}: wait for it (benchsvc run --wait) "
                "or use another --db"
            )
        note = f"took over a stale lock of {describe_holder(lock)}"
        stale_run = session.get(Run, lock.run_id) if lock.run_id is not None else None
        if stale_run is not None and stale_run.status == "running" and stale_run.id != run.id:
            _mark_interrupted(session, stale_run)
        lock.run_id, lock.holder_pid, lock.holder_host = run.id, os.getpid(), socket.gethostname()
        lock.acquired_at = lock.heartbeat_at = now
    else:
        session.add(
            RunLock(
                id=LOCK_ID,
                run_id=run.id,
                holder_pid=os.getpid(),
                holder_host=socket.gethostname(),
                acquired_at=now,
                heartbeat_at=now,
            )
        )
    session.flush()
    return note


def heartbeat(session: Session, run: Run) -> None:
    lock = session.get(RunLock, LOCK_ID)
    if lock is not None and lock.run_id == run.id:
        lock.heartbeat_at = utcnow()


def release(session: Session, run: Run) -> None:
    lock = session.get(RunLock, LOCK_ID)
    if lock is not None and lock.run_id == run.id and lock.holder_pid == os.getpid():
        session.delete(lock)


def current_holder(session: Session) -> RunLock | None:
    lock = session.get(RunLock, LOCK_ID)
    return lock if lock is not None and holder_alive(lock) else None


def recover(engine: Engine) -> list[int]:
    """Mark ``running`` runs whose process is gone as ``interrupted``; drop a stale lock. Returns their ids."""
    with write_session(engine) as session:
        running = session.scalars(select(Run).where(Run.status == "running")).all()
        lock = session.get(RunLock, LOCK_ID)
        live_run = None
        if lock is not None:
            if holder_alive(lock):
                live_run = lock.run_id
            else:
                session.delete(lock)
        recovered = []
        for run in running:
            if run.id != live_run:
                _mark_interrupted(session, run)
                recovered.append(run.id)
        return recovered
