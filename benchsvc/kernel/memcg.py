"""Memory cgroups for the contention measurement (docs/contention.md#the-kernels-side-what-2-cpus-show): a benchsvc-named parent
with K sibling children, created on entry and removed on every way out.

The deferred split queue and its lock belong to a memory cgroup, so two zappers in one memcg share the lock
and two in sibling memcgs do not. The parent is created under the memory cgroup benchsvc itself runs in (so
its charges stay inside whatever limits apply to benchsvc): ``<own memcg>/benchsvc-contention-<pid>/m0..``.
cgroup v2 is used when its root offers the ``memory`` controller; otherwise the v1 ``memory`` hierarchy
(the deferred split queue is per memcg in either). Nothing outside the parent is written, except enabling the
``memory`` controller for the parent's children in v2 (``+memory`` in the parent's own
``cgroup.subtree_control``, which goes away with the parent).

On exit -- normal, exception, SIGINT/SIGTERM/SIGHUP (the same signal guard as the sysfs settings) -- every
task still in a child is moved back to benchsvc's own cgroup and the children and the parent are removed.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from types import TracebackType

from benchsvc.errors import BenchsvcError, KernelUnavailable
from benchsvc.kernel.sysfs import _SignalGuard

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_PREFIX = "benchsvc-contention-"


class MemcgRestoreError(BenchsvcError):
    """A cgroup benchsvc created could not be removed; the message names it."""


def _own_memcg(root: Path) -> tuple[Path, str]:
    """(directory of this process's memory cgroup, "v1" or "v2")."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError as err:
        raise KernelUnavailable(f"memory cgroups cannot be used: /proc/self/cgroup: {err.strerror}") from None
    v1: str | None = None
    v2: str | None = None
    for line in lines:
        hid, controllers, path = line.split(":", 2)
        if hid == "0" and controllers == "":
            v2 = path
        elif "memory" in controllers.split(","):
            v1 = path
    if v1 is not None and (root / "memory").is_dir():
        return root / "memory" / v1.lstrip("/"), "v1"
    for base in (root, root / "unified"):
        ctl = base / "cgroup.controllers"
        if v2 is not None and ctl.is_file() and "memory" in ctl.read_text().split():
            return base / v2.lstrip("/"), "v2"
    raise KernelUnavailable(
        "memory cgroups cannot be used: no memory controller in the cgroup v1 or v2 hierarchy "
        f"under {root} (boot without cgroup_disable=memory)"
    )


class MemcgGroups:
    """``with MemcgGroups(k) as g:`` -- ``g.children[i]`` is the directory of sibling memcg i; put a task in
    with :meth:`add` (or have the task write its pid to :meth:`procs_file`)."""

    def __init__(self, count: int, *, root: Path = CGROUP_ROOT) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count
        self.root = root
        self.base, self.mode = _own_memcg(root)
        self.parent = self.base / f"{PARENT_PREFIX}{os.getpid()}"
        self.children: list[Path] = []
        self._created: list[Path] = []
        self._guard = _SignalGuard(_MEMCG_CODES)

    def procs_file(self, i: int) -> Path:
        return self.children[i] / ("tasks" if self.mode == "v1" else "cgroup.procs")

    def add(self, i: int, pid: int) -> None:
        self.procs_file(i).write_text(str(pid))

    def __enter__(self) -> MemcgGroups:
        self._guard.critical = True
        self._guard.install()
        try:
            if not os.access(self.base, os.W_OK):
                raise KernelUnavailable(
                    f"memory cgroups cannot be used: {self.base} is not writable (run as root)"
                )
            self.parent.mkdir()
            self._created.append(self.parent)
            if self.mode == "v2":
                (self.parent / "cgroup.subtree_control").write_text("+memory")
            for i in range(self.count):
                child = self.parent / f"m{i}"
                child.mkdir()
                self._created.append(child)
                self.children.append(child)
        except BaseException as exc:
            self._guard.leave(self.remove, exc)
            if isinstance(exc, OSError):
                raise KernelUnavailable(f"memory cgroups cannot be used: {exc}") from None
            raise
        self._guard.critical = False
        if self._guard.pending is not None:
            self._guard.leave(self.remove, None)
            raise KeyboardInterrupt("interrupted while creating memory cgroups")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._guard.leave(self.remove, exc)

    def remove(self) -> None:
        """Move stray tasks back to benchsvc's own cgroup, then remove the children and the parent."""
        failed: list[str] = []
        back = self.base / ("tasks" if self.mode == "v1" else "cgroup.procs")
        for d in reversed(self._created):
            procs = d / ("tasks" if self.mode == "v1" else "cgroup.procs")
            for _ in range(50):
                try:
                    pids = procs.read_text().split()
                except FileNotFoundError:
                    break
                for pid in pids:
                    with contextlib.suppress(OSError):  # the task may have exited meanwhile
                        back.write_text(pid)
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # a task still exiting keeps the cgroup busy for a moment
            if d.exists():
                failed.append(str(d))
        self._created = [d for d in self._created if d.exists()]
        self.children = []
        if failed:
            raise MemcgRestoreError(
                "could not remove memory cgroups: " + ", ".join(failed) + " — remove them with rmdir once "
                "their tasks have exited"
            )


_MEMCG_CODES = frozenset({MemcgGroups.__enter__.__code__, MemcgGroups.__exit__.__code__})
