"""The kernel's own tracepoints around the measured zap: TLB flushes and page frees of the zapping task.

:class:`TraceSession` (in the calling process, inside the per-size mTHP settings of a kernel run) mounts
tracefs at ``/sys/kernel/tracing`` if it is not mounted, creates a private trace instance
(``instances/benchsvc-<pid>``: its own ring buffer, ``tracing_on``, event enables and filters, so the
machine's top-level tracing settings are never written) and enables ``tlb:tlb_flush``, ``kmem:mm_page_free``
and ``kmem:mm_page_free_batched`` in it with ``tracing_on`` off. The process that makes the zap calls
(:class:`ZapTracer`, in the worker) filters every event to its own pid (``common_pid == <pid>``) and turns
``tracing_on`` on just before each measured call and off just after it. :meth:`TraceSession.take` reads the
instance's text ``trace`` file and turns the events into :class:`TracedZap` counters.

On every way out (normal exit, any exception, SIGINT/SIGTERM/SIGHUP: the same signal guard as the sysfs
settings) the instance is removed, tracefs is unmounted if this session mounted it, and the top-level
settings (``tracing_on``, ``buffer_size_kb``, ``current_tracer``, ``set_event_pid``, the three events'
``enable`` and ``filter``) are read back and must equal what they were on entry. A journal in the state
directory lets the next session clean up after a SIGKILLed one. How the events map onto the engine's
counters, and where they cannot match, is in ``docs/kernel-oracle.md``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from benchsvc.errors import BenchsvcError, KernelUnavailable
from benchsvc.kernel.sysfs import (
    _default_state_dir,
    _Interrupted,
    _SignalGuard,
    lock_held,
    run_lock,
)

TRACEFS = Path("/sys/kernel/tracing")
#: the events enabled in the instance (``events/<system>/<event>``)
EVENTS = ("tlb/tlb_flush", "kmem/mm_page_free", "kmem/mm_page_free_batched")
#: top-level files read on entry and checked unchanged on exit (this module never writes them)
GLOBAL_FILES = (
    "tracing_on",
    "buffer_size_kb",
    "current_tracer",
    "set_event_pid",
    *(f"events/{e}/{f}" for e in EVENTS for f in ("enable", "filter")),
)
INSTANCE_PREFIX = "benchsvc-"
#: per-CPU ring buffer of the instance: ~30 bytes per event, 1 GiB of 64 KiB folios frees 16384 of them
BUFFER_KB = 8192

#: ``enum tlb_flush_reason`` (include/linux/mm_types.h), as ``tlb:tlb_flush`` prints it
TLB_FLUSH_ON_TASK_SWITCH = 0
TLB_REMOTE_SHOOTDOWN = 1
TLB_LOCAL_SHOOTDOWN = 2
TLB_LOCAL_MM_SHOOTDOWN = 3
TLB_REMOTE_SEND_IPI = 4
TLB_REASONS = {
    TLB_FLUSH_ON_TASK_SWITCH: "task_switch",
    TLB_REMOTE_SHOOTDOWN: "remote_shootdown",
    TLB_LOCAL_SHOOTDOWN: "local_shootdown",
    TLB_LOCAL_MM_SHOOTDOWN: "local_mm_shootdown",
    TLB_REMOTE_SEND_IPI: "remote_ipi_send",
}
#: the counters a traced zap gives under the engine's names (compared by ``benchsvc crosscheck``)
TRACED_COUNTERS = ("tlb_flushes", "folios_freed", "pages_freed")

_EVENT_RE = re.compile(r"\s(tlb_flush|mm_page_free|mm_page_free_batched):\s(.*)$")
_TLB_RE = re.compile(r"pages:(-?\d+) reason:.*\((\d+)\)\s*$")
_PFN_RE = re.compile(r"pfn=0x([0-9a-f]+)")
_ORDER_RE = re.compile(r"order=(\d+)")


class TraceRestoreError(BenchsvcError):
    """The trace instance or the tracefs mount could not be put back as found; the message says what is left."""


@dataclass(frozen=True)
class TracedZap:
    """The events of the zapping task over the measured zap calls.

    ``tlb_flushes``: ``tlb:tlb_flush`` events with reason ``local MM shootdown`` (the flush of the zapping mm on
    its own CPU: one per ``flush_tlb_mm_range()``); every reason is in ``tlb_events``. ``folios_freed`` /
    ``pages_freed``: ``kmem:mm_page_free`` events whose pfn is the head of one of the region's folios (orders
    in ``folios_freed_by_order``); the other frees (page tables, the gather's batch pages) are in
    ``other_frees_by_order``. ``frees_batched``: ``kmem:mm_page_free_batched`` events of region folios (the
    per-CPU-list path, a second event for the same folio, not counted again)."""

    tlb_flushes: int
    folios_freed: int
    pages_freed: int
    folios_freed_by_order: dict[int, int] = field(default_factory=dict)
    other_frees_by_order: dict[int, int] = field(default_factory=dict)
    frees_batched: int = 0
    tlb_events: dict[str, int] = field(default_factory=dict)
    events: int = 0

    def counters(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in TRACED_COUNTERS}

    def as_json(self) -> dict[str, object]:
        return {
            **self.counters(),
            "folios_freed_by_order": {str(k): v for k, v in sorted(self.folios_freed_by_order.items())},
            "other_frees_by_order": {str(k): v for k, v in sorted(self.other_frees_by_order.items())},
            "frees_batched": self.frees_batched,
            "tlb_events": dict(sorted(self.tlb_events.items())),
            "events": self.events,
        }


def parse_trace(text: str, region_heads: set[int] | None, folio_order: int) -> TracedZap:
    """Count the events of a text ``trace`` file (already filtered to the zapping task by the instance).

    ``region_heads``: the head pfns of the region's folios, read from ``/proc/self/pagemap`` before the zap;
    None when they could not be read: then every free of ``folio_order`` counts as one of the region's."""

    def ours(pfn: int, order: int) -> bool:
        return pfn in region_heads if region_heads is not None else order == folio_order

    tlb: Counter[int] = Counter()
    freed: Counter[int] = Counter()
    other: Counter[int] = Counter()
    batched = events = 0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _EVENT_RE.search(line)
        if m is None:
            continue
        events += 1
        name, body = m.groups()
        if name == "tlb_flush":
            t = _TLB_RE.search(body)
            if t is None:
                raise ValueError(f"unexpected tlb_flush event: {line!r}")
            tlb[int(t.group(2))] += 1
            continue
        p, o = _PFN_RE.search(body), _ORDER_RE.search(body)
        if p is None or o is None:
            raise ValueError(f"unexpected {name} event: {line!r}")
        pfn, order = int(p.group(1), 16), int(o.group(1))
        if name == "mm_page_free_batched":  # prints order=0 whatever the folio's order
            batched += ours(pfn, folio_order)
        elif ours(pfn, order):
            freed[order] += 1
        else:
            other[order] += 1
    return TracedZap(
        tlb_flushes=tlb[TLB_LOCAL_MM_SHOOTDOWN],
        folios_freed=sum(freed.values()),
        pages_freed=sum(n << order for order, n in freed.items()),
        folios_freed_by_order=dict(freed),
        other_frees_by_order=dict(other),
        frees_batched=batched,
        tlb_events={TLB_REASONS.get(r, f"reason_{r}"): n for r, n in tlb.items()},
        events=events,
    )


# ---------------------------------------------------------------------------------------------- mounting
def is_tracefs_mounted(root: Path = TRACEFS) -> bool:
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(len(f) > 2 and f[1] == str(root) and f[2] == "tracefs" for f in (m.split() for m in mounts))


def _libc() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib


def mount_tracefs(root: Path = TRACEFS) -> None:
    if _libc().mount(b"tracefs", str(root).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t tracefs at {root} failed: {os.strerror(err)}")


MNT_DETACH = 2


def umount_tracefs(root: Path = TRACEFS) -> None:
    if _libc().umount2(str(root).encode(), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {root} failed: {os.strerror(err)}")


def umount_tracefs_or_detach(root: Path = TRACEFS) -> str | None:
    """Unmount tracefs; when it is busy (another process has a file of it open), detach it lazily
    (``umount2(MNT_DETACH)``: gone from the tree now, freed when the last file is closed) and return a one-line
    note saying so. Raises :class:`OSError` when neither works."""
    try:
        umount_tracefs(root)
        return None
    except OSError as err:
        if err.errno != errno.EBUSY:
            raise
    if _libc().umount2(str(root).encode(), MNT_DETACH) != 0:
        err2 = ctypes.get_errno()
        raise OSError(err2, f"umount {root} failed (busy), and so did a lazy unmount: {os.strerror(err2)}")
    return (
        f"tracefs at {root} was busy (another process has a file of it open): detached it lazily; it is "
        "gone from the tree and is freed when that process closes the file"
    )


def _missing_events(root: Path) -> list[str]:
    return [e for e in EVENTS if not (root / "events" / e / "enable").is_file()]


def _events_reason(root: Path) -> str | None:
    missing = _missing_events(root)
    if missing:
        return f"tracepoint {missing[0].replace('/', ':')} is not available ({root}/events/{missing[0]})"
    if not os.access(root / "instances", os.W_OK):
        return f"cannot create a trace instance ({root}/instances is not writable)"
    return None


def trace_unavailable_reason(root: Path = TRACEFS, notes: list[str] | None = None) -> str | None:
    """Why the tracepoints cannot be used here, or None when they can. When tracefs is not mounted it is
    mounted for the check and unmounted again, the way a :class:`TraceSession` does it: under the kernel run
    lock, recorded in the journal first (a SIGKILLed check is undone by the next check or session), with
    SIGINT/SIGTERM/SIGHUP held off while mounting and unmounting and, in between, unmounting before the
    signal takes effect. A busy unmount is retried lazily; its note is appended to ``notes``."""
    if not sys.platform.startswith("linux"):
        return f"not Linux (platform is {sys.platform})"
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()}); tracefs needs root"
    try:
        if "tracefs" not in Path("/proc/filesystems").read_text():
            return "the kernel has no tracefs (CONFIG_TRACING is off)"
    except OSError as err:
        return f"cannot read /proc/filesystems: {err}"
    if not root.is_dir():
        return f"{root} does not exist"
    if is_tracefs_mounted(root) and not _journal_path(_default_state_dir()).exists():
        return _events_reason(root)  # nothing to mount, nothing a killed run left to undo
    try:
        with contextlib.nullcontext() if lock_held() else run_lock():
            return _ProbeMount(root, _default_state_dir()).check(notes)
    except KernelUnavailable as err:
        return str(err)


class _ProbeMount:
    """tracefs mounted for :func:`trace_unavailable_reason` only (see there)."""

    def __init__(self, root: Path, state_dir: Path) -> None:
        self.root = root
        self.state_dir = state_dir
        self.mounted_here = False
        self.notes: list[str] = []

    def check(self, notes: list[str] | None) -> str | None:
        recover_trace_journal(self.state_dir, self.root)
        if is_tracefs_mounted(self.root):
            return _events_reason(self.root)
        guard = _SignalGuard(frozenset())  # deferred while ``critical``; raising in between
        guard.critical = True
        guard.install()
        exc: BaseException | None = None
        try:
            _write_trace_journal(self.state_dir, self.root, "", mounting=True)
            try:
                mount_tracefs(self.root)
            except OSError as err:
                return str(err)
            self.mounted_here = True
            guard.critical = False
            if guard.pending is None:
                _test_hold("BENCHSVC_TEST_TRACE_CHECK_HOLD")
            return _events_reason(self.root)
        except BaseException as raised:
            exc = raised
            raise
        finally:
            try:
                guard.leave(self.restore, exc)
            finally:
                if notes is not None:
                    notes.extend(self.notes)

    def restore(self) -> None:
        if self.mounted_here:
            try:
                note = umount_tracefs_or_detach(self.root)
            except OSError as err:
                raise TraceRestoreError(
                    f"could not unmount the tracefs mounted for the tracepoint check: {err} "
                    f"(journal kept at {_journal_path(self.state_dir)}) — close what uses {self.root}, "
                    f"then umount {self.root}"
                ) from None
            self.mounted_here = False
            if note:
                self.notes.append(note)
        with contextlib.suppress(FileNotFoundError):
            _journal_path(self.state_dir).unlink()


def _test_hold(variable: str) -> None:
    """Test hook: with ``<variable>=<file>``, create that file and wait (up to a minute) until the test
    removes it, so that a test can act (send a signal, open a file) at a known point."""
    marker = os.environ.get(variable)
    if not marker:
        return
    Path(marker).touch()
    deadline = time.monotonic() + 60
    while Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def check_trace_available(root: Path = TRACEFS) -> list[str]:
    """Raise :class:`KernelUnavailable` with the reason when the tracepoints cannot be used; returns the
    notes of the check (a busy tracefs detached lazily), one line each."""
    notes: list[str] = []
    reason = trace_unavailable_reason(root, notes)
    if reason is not None:
        raise KernelUnavailable(f"the kernel's tracepoints cannot be used: {reason}")
    return notes


# ---------------------------------------------------------------------------------------------- files
def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    """One write(2), as ``echo value > path`` (tracefs files take whole values)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_global_settings(root: Path = TRACEFS) -> dict[str, str]:
    """The top-level settings this module promises to leave as found (see :data:`GLOBAL_FILES`)."""
    return {name: _read(root / name) for name in GLOBAL_FILES if (root / name).is_file()}


# ---------------------------------------------------------------------------------------------- zapping side
class ZapTracer:
    """Used by the process that makes the zap calls: filter the instance's events to this process, then switch
    recording on and off around each measured call (file descriptors opened once, one write each)."""

    def __init__(self, instance: str) -> None:
        self.dir = Path(instance)
        self._fd: int | None = None

    def arm(self) -> None:
        pid = os.getpid()
        for event in EVENTS:
            _write(self.dir / "events" / event / "filter", f"common_pid == {pid}")
        self._fd = os.open(self.dir / "tracing_on", os.O_WRONLY)

    def on(self) -> None:
        assert self._fd is not None, "arm() first"
        os.write(self._fd, b"1")

    def off(self) -> None:
        if self._fd is not None:
            os.write(self._fd, b"0")

    def stop(self) -> None:
        """Switch recording off from another process (the one that reaped an exiting zapper)."""
        _write(self.dir / "tracing_on", "0")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ---------------------------------------------------------------------------------------------- the session
class TraceSession:
    """A private trace instance with the three events enabled, for one kernel run (see the module docstring).

    Must be entered inside the per-size mTHP settings (:class:`~benchsvc.kernel.sysfs.MthpSettings`), whose
    lock keeps two kernel runs from sharing tracefs. Raises :class:`KernelUnavailable` on entry (one line,
    the reason) when tracefs or the events are unavailable, before anything is changed."""

    def __init__(
        self,
        *,
        root: Path = TRACEFS,
        buffer_kb: int = BUFFER_KB,
        state_dir: Path | None = None,
        events: tuple[str, ...] = EVENTS,
        stacktrace: bool = False,
        clock: str | None = None,
    ) -> None:
        """``events``: the events to enable in the instance (default: the zap's three); ``stacktrace``: record
        the kernel stack with each event; ``clock``: the instance's ``trace_clock`` (e.g. ``x86-tsc``).
        All three are the instance's own settings and go away with it."""
        self.root = root
        self.buffer_kb = buffer_kb
        self.events = events
        self.stacktrace = stacktrace
        self.clock = clock
        self.state_dir = state_dir if state_dir is not None else _default_state_dir()
        self.instance = root / "instances" / f"{INSTANCE_PREFIX}{os.getpid()}"
        self.mounted_here = False
        self.created = False
        self.before: dict[str, str] = {}
        #: one line each: what was not quite as planned but is fine (a busy tracefs detached lazily)
        self.notes: list[str] = []
        self._guard = _SignalGuard(_TRACE_CODES)

    @property
    def journal_path(self) -> Path:
        return _journal_path(self.state_dir)

    # ------------------------------------------------------------------ entry
    def __enter__(self) -> TraceSession:
        self._guard.critical = True
        self._guard.install()
        try:
            reason = trace_unavailable_reason(self.root, self.notes)
            if reason is not None:
                raise KernelUnavailable(f"the kernel's tracepoints cannot be used: {reason}")
            self._recover_journal()
            self._write_journal(mounting=not is_tracefs_mounted(self.root))
            if not is_tracefs_mounted(self.root):
                mount_tracefs(self.root)
                self.mounted_here = True
            self.before = read_global_settings(self.root)
            self.instance.mkdir()
            self.created = True
            _write(self.instance / "tracing_on", "0")
            _write(self.instance / "buffer_size_kb", str(self.buffer_kb))
            if self.clock is not None:
                _write(self.instance / "trace_clock", self.clock)
            if self.stacktrace:
                _write(self.instance / "options" / "stacktrace", "1")
            for event in self.events:
                _write(self.instance / "events" / event / "enable", "1")
        except BaseException as exc:
            self._leave(exc)
            raise
        self._guard.critical = False
        if self._guard.pending is not None:
            self._leave(None)
            raise KeyboardInterrupt("interrupted while setting up tracing")
        return self

    def take(self, region_heads: set[int] | None, folio_order: int) -> TracedZap:
        """Parse what the instance recorded (then clear it); fails if the ring buffer lost events."""
        lost = self._lost_events()
        text = (self.instance / "trace").read_text()
        _write(self.instance / "trace", "")
        if lost:
            raise KernelUnavailable(
                f"the trace buffer lost {lost} events ({self.buffer_kb} kB per CPU is too small for this zap)"
            )
        return parse_trace(text, region_heads, folio_order)

    def _lost_events(self) -> int:
        lost = 0
        for stats in sorted((self.instance / "per_cpu").glob("cpu*/stats")):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("overrun", "dropped events"):
                    lost += int(value.split()[0])
        return lost

    # ------------------------------------------------------------------ exit
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave(exc)
        if isinstance(exc, _Interrupted):
            raise KeyboardInterrupt(str(exc)) from None

    def _leave(self, exc: BaseException | None) -> None:
        self._guard.leave(self.restore, exc)

    def restore(self) -> None:
        """Remove the instance, unmount if mounted here, and check the top-level settings read back as found."""
        problems: list[str] = []
        if self.created:
            for event in self.events:
                with contextlib.suppress(OSError):
                    _write(self.instance / "events" / event / "enable", "0")
            try:
                self.instance.rmdir()
                self.created = False
            except OSError as err:
                problems.append(f"trace instance {self.instance} is still there ({err})")
        if self.before and is_tracefs_mounted(self.root):
            now = read_global_settings(self.root)
            changed = [k for k in self.before if now.get(k) != self.before[k]]
            if changed:
                problems.append(f"top-level tracing settings changed while tracing: {', '.join(changed)}")
        if self.mounted_here and not self.created:
            try:
                note = umount_tracefs_or_detach(self.root)
                self.mounted_here = False
                if note:
                    self.notes.append(note)
            except OSError as err:
                problems.append(str(err))
        if problems:
            raise TraceRestoreError(
                "could not leave tracing as found: "
                + "; ".join(problems)
                + f" (journal kept at {self.journal_path})"
            )
        with contextlib.suppress(FileNotFoundError):
            self.journal_path.unlink()

    # ------------------------------------------------------------------ journal
    def _write_journal(self, *, mounting: bool) -> None:
        _write_trace_journal(
            self.state_dir, self.root, str(self.instance), mounting=mounting, events=tuple(self.events)
        )

    def _recover_journal(self) -> None:
        recover_trace_journal(self.state_dir, self.root)


def _journal_path(state_dir: Path) -> Path:
    return state_dir / "trace-journal.json"


def _write_trace_journal(
    state_dir: Path,
    root: Path,
    instance: str,
    *,
    mounting: bool,
    events: tuple[str, ...] = EVENTS,
) -> None:
    """What a session or check is about to do (its instance and the events it enables there, whether it
    mounts tracefs), for the next one to undo should this process be SIGKILLed."""
    state_dir.mkdir(parents=True, exist_ok=True)
    data = {
        "pid": os.getpid(),
        "instance": instance,
        "mounted": mounting,
        "root": str(root),
        "events": list(events),
    }
    path = _journal_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def recover_trace_journal(state_dir: Path, root: Path = TRACEFS) -> None:
    """A session or check that was SIGKILLed left its instance (and maybe its mount): take them away."""
    path = _journal_path(state_dir)
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as err:
        raise KernelUnavailable(
            f"the kernel's tracepoints cannot be used: unreadable journal {path} ({err}); "
            f"remove leftover {root}/instances/{INSTANCE_PREFIX}* by hand and delete it"
        ) from None
    root = Path(data.get("root", str(root)))
    instance = Path(data.get("instance") or "")
    if is_tracefs_mounted(root) and instance.name.startswith(INSTANCE_PREFIX) and instance.is_dir():
        for event in data.get("events", EVENTS):
            with contextlib.suppress(OSError):
                _write(instance / "events" / event / "enable", "0")
        instance.rmdir()
    if data.get("mounted") and is_tracefs_mounted(root) and not any((root / "instances").iterdir()):
        try:
            umount_tracefs_or_detach(root)
        except OSError as err:
            raise KernelUnavailable(
                f"the kernel's tracepoints cannot be used: a killed run left tracefs mounted at {root} and "
                f"it cannot be unmounted ({err}) — close what uses it, then umount {root}"
            ) from None
    path.unlink()


_TRACE_CODES = frozenset({TraceSession.__enter__.__code__, TraceSession.__exit__.__code__})
