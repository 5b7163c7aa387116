"""Per-size mTHP sysfs: availability checks, stats, and a context manager that changes and restores knobs.

Everything here works on a THP root directory (default ``/sys/kernel/mm/transparent_hugepage``) so that the
logic can be exercised on a fake tree. Nothing in this module ever writes ``always`` to an ``enabled`` file:
that would change the THP policy of every process on the machine.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from benchsvc.errors import BenchsvcError, KernelUnavailable

THP_ROOT = Path("/sys/kernel/mm/transparent_hugepage")
#: where the lock file and the restore journal live (tmpfs: cleared at reboot, like sysfs itself)
DEFAULT_STATE_DIR = Path("/run/benchsvc-kernel")
MIN_KERNEL = (6, 12)
PMD_SIZE = 2 * 1024 * 1024
DEFAULT_FOLIO_SIZE = 64 * 1024

#: the per-size ``stats/`` files the oracle reads; events only grow, gauges go up and down
EVENT_STATS = ("anon_fault_alloc", "split_deferred")
GAUGE_STATS = ("nr_anon", "nr_anon_partially_mapped")
STAT_NAMES = EVENT_STATS + GAUGE_STATS

#: values this module may write to an ``enabled`` file (restoring an original ``inherit`` included)
WRITABLE_VALUES = ("madvise", "never", "inherit")
#: signals during which a changed sysfs value is restored before the signal takes effect
GUARDED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)

_CHOICE_RE = re.compile(r"\[([a-z]+)\]")
_SIZE_DIR_RE = re.compile(r"^hugepages-(\d+)kB$")


class SysfsRestoreError(BenchsvcError):
    """A changed sysfs value could not be put back; the message lists what is still changed."""


# ---------------------------------------------------------------------------------------------- paths
def size_dir(folio_size: int, root: Path = THP_ROOT) -> Path:
    """``hugepages-<N>kB`` for a folio size in bytes."""
    return root / f"hugepages-{folio_size // 1024}kB"


def stats_dir(folio_size: int, root: Path = THP_ROOT) -> Path:
    return size_dir(folio_size, root) / "stats"


def anon_enabled_files(root: Path = THP_ROOT) -> dict[int, Path]:
    """Folio size in bytes -> its ``enabled`` file, for every anon mTHP size (shmem-only sizes have none)."""
    out: dict[int, Path] = {}
    if not root.is_dir():
        return out
    for d in root.iterdir():
        m = _SIZE_DIR_RE.match(d.name)
        if m and (d / "enabled").is_file():
            out[int(m.group(1)) * 1024] = d / "enabled"
    return dict(sorted(out.items()))


def enabled_snapshot(root: Path = THP_ROOT) -> dict[str, str]:
    """The selected value of the top-level ``enabled`` and of every ``hugepages-*/enabled`` file."""
    files = [root / "enabled", *anon_enabled_files(root).values()]
    return {str(f.relative_to(root)): read_choice(f) for f in files if f.is_file()}


# ---------------------------------------------------------------------------------------------- reading
def read_choice(path: Path) -> str:
    """The bracketed value of a sysfs choice file: ``always inherit [madvise] never`` -> ``madvise``."""
    text = path.read_text()
    m = _CHOICE_RE.search(text)
    if not m:
        raise KernelUnavailable(f"{path}: cannot find the selected value in {text.strip()!r}")
    return m.group(1)


def read_stats(folio_size: int, root: Path = THP_ROOT) -> dict[str, int]:
    """The per-size stats the oracle uses, as integers."""
    d = stats_dir(folio_size, root)
    return {name: int((d / name).read_text()) for name in STAT_NAMES}


# ---------------------------------------------------------------------------------------------- writing
def _write_raw(path: Path, value: str) -> None:
    """One write(2) of ``value`` to a sysfs file (separate so tests can watch every write)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def write_enabled(path: Path, value: str) -> None:
    """Select ``value`` in an ``enabled`` file and check that it took. Refuses ``always``, always."""
    if value == "always":  # not a bare assert: it must hold under ``python -O`` too
        raise AssertionError(f"refusing to write 'always' to {path}: it changes every process on the machine")
    if value not in WRITABLE_VALUES:
        raise AssertionError(f"refusing to write {value!r} to {path} (allowed: {', '.join(WRITABLE_VALUES)})")
    _write_raw(path, value)
    got = read_choice(path)
    if got != value:
        raise OSError(errno.EIO, f"wrote {value!r} but {path} now selects {got!r}")


# ---------------------------------------------------------------------------------------------- availability
def _kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"^(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def unavailable_reason(folio_size: int = DEFAULT_FOLIO_SIZE, root: Path = THP_ROOT) -> str | None:
    """Why the live kernel cannot serve as an oracle for ``folio_size`` folios here, or None if it can."""
    if not sys.platform.startswith("linux"):
        return f"not Linux (platform is {sys.platform})"
    release = os.uname().release
    version = _kernel_version(release)
    if version is None or version < MIN_KERNEL:
        return (
            f"kernel {release} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]} (per-size mTHP stats are needed)"
        )
    d = size_dir(folio_size, root)
    missing = [p for p in (d / "enabled", *(d / "stats" / n for n in STAT_NAMES)) if not p.is_file()]
    if missing:
        return f"no per-size mTHP directory for {folio_size // 1024}kB folios ({missing[0]} does not exist)"
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()}); changing {d / 'enabled'} needs root"
    if os.statvfs(root).f_flag & os.ST_RDONLY or not os.access(d / "enabled", os.W_OK):
        return f"sysfs is read-only here ({d / 'enabled'} is not writable)"
    return None


def check_available(folio_size: int = DEFAULT_FOLIO_SIZE, root: Path = THP_ROOT) -> None:
    """Raise :class:`KernelUnavailable` naming the first failing condition (see :func:`unavailable_reason`)."""
    reason = unavailable_reason(folio_size, root)
    if reason is not None:
        raise KernelUnavailable(f"the live kernel cannot be used: {reason}")


# ---------------------------------------------------------------------------------------------- signals
class _Interrupted(BaseException):
    """Raised by the guard's handler; turned back into the original signal once sysfs is restored."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class _SignalGuard:
    """Handlers for SIGINT/SIGTERM/SIGHUP that raise, except inside a critical section (then: deferred).

    ``codes``: the code objects (a context's ``__enter__``/``__exit__``) inside which a signal is deferred even
    before their first statement has set the critical flag (default: :class:`MthpSettings`'s)."""

    def __init__(self, codes: frozenset[Any] | None = None) -> None:
        self.codes = codes
        self.previous: dict[int, Any] = {}
        self.critical = False
        self.pending: int | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal() only works in the main thread; signals then go to the main thread
        for sig in GUARDED_SIGNALS:
            prev = signal.getsignal(sig)
            if prev is signal.SIG_IGN or prev is None:
                continue  # ignored (or installed from C): the signal cannot interrupt us
            self.previous[sig] = prev
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.critical or _inside_entry_or_exit(frame, self.codes):
            self.pending = signum  # honoured once the values are written or restored
            return
        raise _Interrupted(signum)

    def uninstall(self) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev)
        self.previous.clear()

    def leave(
        self,
        restore: Callable[[], None],
        exc: BaseException | None,
        release: Callable[[], None] | None = None,
    ) -> None:
        """A guarded context's way out: ``restore`` with signals deferred, put the previous handlers back,
        ``release``, then re-deliver a caught or deferred signal (the previous handler decides: a
        KeyboardInterrupt for SIGINT, termination for a default SIGTERM)."""
        self.critical = True
        try:
            restore()
        finally:
            self.uninstall()
            self.critical = False
            if release is not None:
                release()
        signum = exc.signum if isinstance(exc, _Interrupted) else self.pending
        self.pending = None
        if signum is not None:
            try:
                signal.raise_signal(signum)
            except BaseException as raised:
                raise raised from None  # hide the private _Interrupted it replaces


# ---------------------------------------------------------------------------------------------- the context
@dataclass(frozen=True)
class Change:
    path: str
    original: str
    ours: str


class MthpSettings:
    """Select ``folio_size`` as the only anon mTHP size (``madvise``) while the ``with`` block runs.

    On entry (holding an exclusive lock, so two oracle runs never interleave their changes): the layout's
    size -> ``madvise`` (left alone if it already is ``always``: that covers madvised regions too), every
    other anon size that is not ``never`` -> ``never`` (``hugepages-2048kB`` included unless the layout uses
    2 MiB folios). The top-level ``enabled`` is never written. A value that is ``always`` and would have to
    change is refused (:class:`KernelUnavailable`): restoring it would mean writing ``always``.

    On exit -- normal, exception, or SIGINT/SIGTERM/SIGHUP (handlers are installed for the duration and the
    previous ones put back) -- every changed value is restored and read back. The planned changes are written
    to a journal first; a later run that finds a journal (the earlier process was SIGKILLed) restores the
    values that still hold what that run wrote, before doing anything else.
    """

    def __init__(
        self,
        folio_size: int,
        *,
        root: Path = THP_ROOT,
        state_dir: Path | None = None,
        lock_timeout: float = 600.0,
    ) -> None:
        self.folio_size = folio_size
        self.root = root
        self.state_dir = state_dir if state_dir is not None else _default_state_dir()
        self.lock_timeout = lock_timeout
        self.changes: list[Change] = []  # applied (in order)
        self.recovered: list[Change] = []  # restored from a stale journal on entry
        self._guard = _SignalGuard()
        self._lock_fd: int | None = None

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "sysfs-journal.json"

    # ------------------------------------------------------------------ entry
    def plan(self) -> list[Change]:
        """The changes entering would make, computed from the current values (writes nothing)."""
        files = anon_enabled_files(self.root)
        if self.folio_size not in files:
            raise KernelUnavailable(
                f"the live kernel cannot be used: no per-size mTHP directory for {self.folio_size // 1024}kB "
                f"folios ({size_dir(self.folio_size, self.root) / 'enabled'} does not exist)"
            )
        out: list[Change] = []
        for size, path in files.items():
            current = read_choice(path)
            # the layout's size: madvise (an existing 'always' covers madvised regions too); others: never
            want = (current if current == "always" else "madvise") if size == self.folio_size else "never"
            if current == want:
                continue
            if current == "always":
                raise KernelUnavailable(
                    f"the live kernel cannot be used: {path} is 'always'; it would have to be 'never' for this "
                    "layout, and restoring it would mean writing 'always', which benchsvc never does "
                    "(set it to madvise or never first)"
                )
            out.append(Change(str(path), current, want))
        return out

    def __enter__(self) -> MthpSettings:
        self._acquire_lock()
        try:
            self._guard.critical = True
            self._guard.install()
            self._recover_journal()
            planned = self.plan()
            self._write_journal(planned)
            for change in planned:
                write_enabled(Path(change.path), change.ours)
                self.changes.append(change)
        except BaseException as exc:
            self._leave(exc)
            raise
        self._guard.critical = False
        if self._guard.pending is not None:  # a signal arrived while we were writing: honour it now
            self._leave(None)
            raise KeyboardInterrupt("interrupted while changing sysfs")
        return self

    # ------------------------------------------------------------------ exit
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(exc)
        if isinstance(exc, _Interrupted):
            # the previous handler returned instead of raising or terminating: stop the run anyway
            raise KeyboardInterrupt(str(exc)) from None

    def _leave(self, exc: BaseException | None) -> None:
        """Restore, put the previous signal handlers back, unlock, then re-deliver a caught signal."""
        self._guard.leave(self.restore, exc, self._release_lock)

    def restore(self) -> None:
        """Put back every value this context changed (last change first); keep the journal on failure."""
        failed: list[str] = []
        for change in reversed(self.changes):
            path = Path(change.path)
            try:
                if read_choice(path) != change.original:
                    write_enabled(path, change.original)
            except (OSError, AssertionError, KernelUnavailable) as err:
                failed.append(f"{path} (still {change.ours!r}, want {change.original!r}: {err})")
        if failed:
            # loud even while another exception is in flight (that one stays attached as __context__)
            raise SysfsRestoreError(
                "could not restore sysfs: " + "; ".join(failed) + f" (journal kept at {self.journal_path})"
            )
        self.changes.clear()
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()

    # ------------------------------------------------------------------ lock and journal
    def _acquire_lock(self) -> None:
        import fcntl  # POSIX only; imported here so that the module (and the skip reasons) load anywhere

        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_dir / "lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise KernelUnavailable(
                        f"the live kernel cannot be used: another kernel run holds {lock_path} "
                        f"(waited {self.lock_timeout:g}s)"
                    ) from None
                time.sleep(0.05)
        self._lock_fd = fd
        _held[0] += 1

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None
            _held[0] -= 1

    def _write_journal(self, planned: list[Change]) -> None:
        if not planned:
            return
        data = {"pid": os.getpid(), "changes": [c.__dict__ for c in planned]}
        tmp = self.journal_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.journal_path)

    def _recover_journal(self) -> None:
        try:
            data = json.loads(self.journal_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            raise KernelUnavailable(
                f"the live kernel cannot be used: unreadable restore journal {self.journal_path} ({err}); "
                "check the hugepages-*/enabled values by hand and delete it"
            ) from None
        stale = [Change(**c) for c in data.get("changes", [])]
        for change in reversed(stale):
            path = Path(change.path)
            # only undo what that run wrote; a value changed since then by someone else is left alone
            if path.is_file() and read_choice(path) == change.ours:
                write_enabled(path, change.original)
                self.recovered.append(change)
        self.journal_path.unlink()


def _inside_entry_or_exit(frame: FrameType | None, codes: frozenset[Any] | None = None) -> bool:
    """True while ``MthpSettings.__enter__``/``__exit__`` is on the stack (even before its first statement
    has set the critical flag): raising there could skip the restore."""
    while frame is not None:
        if frame.f_code in (_CRITICAL_CODES if codes is None else codes):
            return True
        frame = frame.f_back
    return False


_CRITICAL_CODES = frozenset({MthpSettings.__enter__.__code__, MthpSettings.__exit__.__code__})


def _default_state_dir() -> Path:
    if os.access(DEFAULT_STATE_DIR.parent, os.W_OK):
        return DEFAULT_STATE_DIR
    return Path("/tmp") / "benchsvc-kernel"


#: how many kernel run locks this process holds now (:func:`run_lock`, :class:`MthpSettings`)
_held = [0]


def lock_held() -> bool:
    """Whether this process holds the kernel run lock now (taking it again would wait for itself)."""
    return _held[0] > 0


@contextlib.contextmanager
def run_lock(state_dir: Path | None = None, timeout: float = 600.0) -> Iterator[None]:
    """Hold the lock every kernel run holds while its sysfs (and tracing) changes are in place. Inside it no
    run of this or another checkout is between changing and restoring values, so a before/after comparison
    (the tests' "left as found" checks) does not see another run's changes. Not re-entrant: never call a
    kernel run inside it."""
    import fcntl

    d = state_dir if state_dir is not None else _default_state_dir()
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KernelUnavailable(
                        f"another kernel run holds {d / 'lock'} (waited {timeout:g}s)"
                    ) from None
                time.sleep(0.05)
        _held[0] += 1
        try:
            yield
        finally:
            _held[0] -= 1
    finally:
        os.close(fd)


def settled_snapshot(root: Path = THP_ROOT) -> dict[str, str]:
    """:func:`enabled_snapshot` read under :func:`run_lock` (no other run's changes in it)."""
    with run_lock():
        return enabled_snapshot(root)
