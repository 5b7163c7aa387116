"""One run per machine: the machine's OS lock, the database's record of each machine's active run, heartbeats
and recovery of killed runs.

Two locks, for two things they protect:

* :func:`lock_machine`: an exclusive ``flock`` on ``run.lock`` in the machine's runtime directory
  (:func:`runtime_dir`), held for the whole run. Two runs on one machine disturb each other's timings
  whatever database each writes to, so the second is refused (naming the first's pid) before it opens its
  database. The kernel drops the lock when its holder dies, ``kill -9`` included.
* :func:`take`: the row of ``run_locks`` for this host (its primary key), taken in the same write
  transaction that creates the run: the database records one active run per machine, and machines sharing
  one store (PostgreSQL) run at the same time, each under its own row. The holder refreshes the row's
  heartbeat after every committed block and every :data:`HEARTBEAT_EVERY_S` seconds.

A machine is its hostname (``uname -n``, non-UTF-8 bytes escaped). A row is stale when its holder is gone: on this host,
its pid is dead or now belongs to a process started after the lock was taken; on another host, its
heartbeat is older than :data:`STALE_AFTER`. :func:`recover` (every command that opens the database calls
it) marks ``running`` runs whose holder is gone as ``interrupted``: this host's by their pid, another host's
only by a stale heartbeat, so that a command on one host never marks another host's live run interrupted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchsvc.errors import BenchsvcError
from benchsvc.records import utcnow
from benchsvc.store.db import write_session
from benchsvc.store.models import Machine, Result, Run, RunLock

#: how often a running run refreshes its heartbeat besides after every committed block
HEARTBEAT_EVERY_S = 60.0
#: a run on another host whose heartbeat is older than this is taken for dead
STALE_AFTER = dt.timedelta(minutes=10)
RUNTIME_DIR_ENV = "BENCHSVC_RUNTIME_DIR"
LOCK_FILE = "run.lock"


class RunLocked(BenchsvcError):
    """Another live ``benchsvc run`` holds this machine."""


def this_host() -> str:
    """The machine's identity for locks and recovery: its hostname (per UTS namespace), as the runs store it."""
    from benchsvc.records import this_hostname

    return this_hostname()


def runtime_dir() -> Path:
    """Where the machine's run lock lives: ``$BENCHSVC_RUNTIME_DIR``, else ``/run/benchsvc`` for root, else
    ``$XDG_RUNTIME_DIR/benchsvc``, else ``/tmp/benchsvc-$UID``."""
    if os.environ.get(RUNTIME_DIR_ENV):
        return Path(os.environ[RUNTIME_DIR_ENV])
    if os.geteuid() == 0:
        return Path("/run/benchsvc")
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "benchsvc"
    return Path(f"/tmp/benchsvc-{os.geteuid()}")


# --- the machine's OS lock --------------------------------------------------------------------------------


@dataclass
class MachineLock:
    """The held ``flock`` of this machine's run lock file (released by :meth:`release` or the holder's death)."""

    path: Path
    fd: int
    db: str
    started_at: dt.datetime

    def record(self, run_id: int | None) -> None:
        """Write who holds the lock into the file, for the message of a run that is refused."""
        info = {
            "pid": os.getpid(),
            "host": this_host(),
            "run": run_id,
            "db": self.db,
            "started": self.started_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        data = (json.dumps(info) + "\n").encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1


class RuntimeDirError(BenchsvcError):
    """The runtime directory or its lock file is not one benchsvc can trust (owner, mode, kind)."""


_RUNTIME_TODO = f"remove it (benchsvc creates it), or point ${RUNTIME_DIR_ENV} at a directory of yours"


def _open_runtime_dir(directory: Path) -> int:
    """The runtime directory, created mode 0700 when missing, opened without following a symlink; refused
    unless it is a directory owned by this user that no one else can write."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        what = "is a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        if exc.errno == errno.ENOTDIR:
            what = "is a symlink" if os.path.islink(directory) else "is not a directory"
        raise RuntimeDirError(
            f"the runtime directory {directory} {what} — " + _RUNTIME_TODO
            if exc.errno in (errno.ELOOP, errno.ENOTDIR)
            else f"cannot create or open the runtime directory {directory}: {what} — make its parent "
            f"writable, or point ${RUNTIME_DIR_ENV} at a directory of yours"
        ) from None
    st = os.fstat(fd)
    problem = None
    if st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        problem = f"can be written by others (mode {stat.S_IMODE(st.st_mode):04o})"
    if problem:
        os.close(fd)
        raise RuntimeDirError(
            f"the runtime directory {directory} {problem}: another user could take or fake the run lock — "
            + _RUNTIME_TODO
        )
    return fd


def _open_lock_file(dfd: int, path: Path) -> int:
    """The lock file in the open runtime directory: created if missing, never truncated, never through a
    symlink; anything but a regular file of ours with one link is refused."""
    try:
        fd = os.open(
            LOCK_FILE,
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
            0o644,
            dir_fd=dfd,
        )
    except OSError as exc:
        kinds = {errno.ELOOP: "is a symlink", errno.EISDIR: "is a directory"}
        what = kinds.get(exc.errno or 0, f"cannot be opened: {exc.strerror or exc}")
        raise RuntimeDirError(f"the run lock {path} {what} — remove it (benchsvc creates it)") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        kind = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(st.st_mode), "not a regular file")  # fmt: skip
        problem = f"is {kind}"
    elif st.st_uid != os.geteuid():
        problem = f"belongs to uid {st.st_uid}, not to you"
    elif st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links (one is expected)"
    if problem:
        os.close(fd)
        raise RuntimeDirError(f"the run lock {path} {problem} — remove it (benchsvc creates it)")
    return fd


def lock_machine(db: str) -> MachineLock:
    """Take this machine's run lock, or raise :class:`RunLocked` naming the run that holds it. ``db``: the
    database of this run (said in the message of another run refused meanwhile). A runtime directory or lock
    file that is not to be trusted (:func:`_open_runtime_dir`, :func:`_open_lock_file`) raises
    :class:`RuntimeDirError`."""
    directory = runtime_dir()
    dfd = _open_runtime_dir(directory)
    try:
        fd = _open_lock_file(dfd, directory / LOCK_FILE)
    finally:
        os.close(dfd)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            os.close(fd)
            raise
        holder = _read_holder(fd)
        os.close(fd)
        raise RunLocked(
            f"this machine is in use by {holder} — wait for it (benchsvc run --wait): two runs on one "
            "machine disturb each other's timings, whatever database each uses"
        ) from None
    lock = MachineLock(directory / LOCK_FILE, fd, db, utcnow().replace(microsecond=0))
    lock.record(None)
    return lock


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another benchsvc run (it is just starting)"
    what = f"run {info['run']}" if info.get("run") is not None else "a benchsvc run"
    return (
        f"{what} (pid {info.get('pid')} on {info.get('host')}, started {info.get('started')} UTC) "
        f"on the database {info.get('db')}"
    )


# --- the database's record of each machine's active run ---------------------------------------------------


def holder_alive(lock: RunLock) -> bool:
    """Whether the lock's holder still runs (this host: by pid and start time; another host: by heartbeat)."""
    if lock.host != this_host():
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
        f"run {lock.run_id} (pid {lock.holder_pid} on {lock.host}, "
        f"started {lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC)"
    )


def _mark_interrupted(session: Session, run: Run) -> None:
    last = session.scalar(
        select(Result.finished_at).where(Result.run_id == run.id).order_by(Result.id.desc()).limit(1)
    )
    run.status = "interrupted"
    run.finished_at = last or run.started_at


def take(session: Session, run: Run) -> str | None:
    """Take this host's lock row for ``run`` inside the caller's write transaction.

    Raises :class:`RunLocked` when a live holder on this host has it; returns a note when a stale lock was
    taken over. Other hosts' rows are not touched."""
    host = this_host()
    lock = session.get(RunLock, host, with_for_update=True)
    note = None
    now = utcnow()
    if lock is not None:
        if holder_alive(lock) and lock.holder_pid != os.getpid():
            raise RunLocked(
                f"the database records {describe_holder(lock)} as running on this machine — "
                "wait for it (benchsvc run --wait)"
            )
        note = f"took over a stale lock of {describe_holder(lock)}"
        stale_run = session.get(Run, lock.run_id)
        if stale_run is not None and stale_run.status == "running" and stale_run.id != run.id:
            _mark_interrupted(session, stale_run)
        lock.run_id, lock.holder_pid = run.id, os.getpid()
        lock.acquired_at = lock.heartbeat_at = now
    else:
        session.add(
            RunLock(host=host, run_id=run.id, holder_pid=os.getpid(), acquired_at=now, heartbeat_at=now)
        )
    session.flush()
    return note


def heartbeat(session: Session, run_id: int) -> None:
    lock = session.get(RunLock, this_host())
    if lock is not None and lock.run_id == run_id:
        lock.heartbeat_at = utcnow()


def release(session: Session, run_id: int) -> None:
    lock = session.get(RunLock, this_host())
    if lock is not None and lock.run_id == run_id and lock.holder_pid == os.getpid():
        session.delete(lock)


@dataclass(frozen=True)
class Recovered:
    """A ``running`` run found dead and marked ``interrupted``."""

    run_id: int
    host: str
    #: the last heartbeat of its lock (None: it held none)
    heartbeat_at: dt.datetime | None

    def describe(self) -> str:
        if self.host == this_host():
            return f"run {self.run_id} was left running by a process that is gone; marked interrupted"
        since = f"since {self.heartbeat_at:%Y-%m-%d %H:%M} UTC" if self.heartbeat_at else "ever"
        return (
            f"run {self.run_id} on {self.host} has sent no heartbeat {since} (the host died?); "
            "marked interrupted"
        )


def recover(engine: Engine) -> list[Recovered]:
    """Mark ``running`` runs whose holder is gone as ``interrupted`` and drop their locks: this host's by pid,
    other hosts' by a stale heartbeat. Another host's live run is never touched."""
    with write_session(engine) as session:
        running = session.execute(
            select(Run, Machine.hostname)
            .join(Machine, Run.machine_id == Machine.id)
            .where(Run.status == "running")
        ).all()
        if not running:
            return []
        locks = {lock.run_id: lock for lock in session.scalars(select(RunLock))}
        recovered = []
        for run, host in running:
            lock = locks.get(run.id)
            if lock is not None and holder_alive(lock):
                continue
            if lock is None and host != this_host():
                # no lock row: a run of an older benchsvc, or one whose lock was taken over; its host
                # decides, unless it has been silent for longer than a run could be
                last = run.started_at
                if utcnow() - last < STALE_AFTER:
                    continue
            _mark_interrupted(session, run)
            if lock is not None:
                session.delete(lock)
            recovered.append(Recovered(run.id, host, lock.heartbeat_at if lock is not None else None))
        return recovered
