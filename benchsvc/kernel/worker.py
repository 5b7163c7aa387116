"""The child side of a kernel run: build the region with real syscalls, run the zap steps, read the stats.

Runs in a fresh interpreter started by :mod:`benchsvc.kernel.oracle` (a new ``sys.executable`` process, so
the caller's ``__main__`` is never re-imported and no state or signal handler is inherited); it never
touches sysfs knobs, only reads the per-size ``stats/`` files. Results travel back as plain dicts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchsvc.kernel.sysfs import EVENT_STATS, GAUGE_STATS, PMD_SIZE, STAT_NAMES, read_stats
from benchsvc.kernel.trace import ZapTracer
from benchsvc.workload import PAGE_SIZE, WorkloadSpec

#: test hook, read in the child: ``pause:<file>`` = create <file> after population and sleep;
#: ``fail:populate`` = raise after population (sysfs already changed by the parent). ``pause-bench:<file>``
#: and ``fail-bench:populate`` do the same in a pyperf worker of ``benchsvc run --engine kernel``.
TEST_HOOK_ENV = "BENCHSVC_KERNEL_TEST_HOOK"
PAUSE_SECONDS = 120.0

PROT_NONE = 0x0
PROT_READ = 0x1
PROT_WRITE = 0x2
MAP_PRIVATE = 0x02
MAP_ANONYMOUS = 0x20
MAP_NORESERVE = 0x4000
MADV_DONTNEED = 4
MADV_HUGEPAGE = 14
MADV_NOHUGEPAGE = 15
MADV_POPULATE_WRITE = 23
MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
PR_SET_PDEATHSIG = 1
MAP_FAILED = ctypes.c_void_p(-1).value


class SyscallError(OSError):
    """A failed libc call in the child, with errno and the call spelled out."""


class LayoutMismatch(Exception):
    """The kernel did not build the layout the workload asks for (anon_fault_alloc or PMD mappings)."""

    def __init__(self, message: str, expected: int, got: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.got = got


class _Libc:
    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        vp, sz, i, ul = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_ulong
        lib.mmap.argtypes = [vp, sz, i, i, i, ctypes.c_long]
        lib.mmap.restype = vp
        lib.munmap.argtypes = [vp, sz]
        lib.munmap.restype = i
        lib.madvise.argtypes = [vp, sz, i]
        lib.madvise.restype = i
        lib.mprotect.argtypes = [vp, sz, i]
        lib.mprotect.restype = i
        lib.mremap.argtypes = [vp, sz, sz, i, vp]
        lib.mremap.restype = vp
        lib.prctl.argtypes = [i, ul, ul, ul, ul]
        lib.prctl.restype = i
        self.lib = lib

    @staticmethod
    def _fail(call: str) -> SyscallError:
        err = ctypes.get_errno()
        return SyscallError(err, f"{call} failed: {os.strerror(err)}")

    def mmap(self, length: int, prot: int, flags: int) -> int:
        addr = self.lib.mmap(None, length, prot, flags, -1, 0)
        if addr is None or addr == MAP_FAILED:
            raise self._fail(f"mmap(NULL, {length:#x})")
        return int(addr)

    def munmap(self, addr: int, length: int) -> None:
        if self.lib.munmap(addr, length) != 0:
            raise self._fail(f"munmap({addr:#x}, {length:#x})")

    def madvise(self, addr: int, length: int, advice: int) -> None:
        if self.lib.madvise(addr, length, advice) != 0:
            raise self._fail(f"madvise({addr:#x}, {length:#x}, {advice})")

    def mprotect(self, addr: int, length: int, prot: int) -> None:
        if self.lib.mprotect(addr, length, prot) != 0:
            raise self._fail(f"mprotect({addr:#x}, {length:#x}, {prot})")

    def mremap_fixed(self, old: int, length: int, new: int) -> None:
        got = self.lib.mremap(old, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, new)
        if got is None or got == MAP_FAILED:
            raise self._fail(f"mremap({old:#x}, {length:#x} -> {new:#x})")
        if int(got) != new:
            raise SyscallError(0, f"mremap moved the region to {int(got):#x}, not {new:#x}")

    def set_pdeathsig(self) -> None:
        """Die with SIGKILL when the parent dies, so no child outlives an interrupted run."""
        if self.lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise self._fail("prctl(PR_SET_PDEATHSIG)")


def _align_up(x: int, a: int) -> int:
    return -(-x // a) * a


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in STAT_NAMES}


def _pmd_mapped_kb(addr: int) -> int:
    """``AnonHugePages`` (PMD-mapped THP memory) of the VMA starting at ``addr``, from /proc/self/smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(None, 1)[0]
        if "-" in head and not head.endswith(":"):
            inside = int(head.split("-")[0], 16) == addr
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return 0


KPF_COMPOUND_HEAD = 1 << 15
KPF_COMPOUND_TAIL = 1 << 16
PAGEMAP_PRESENT = 1 << 63
PAGEMAP_PFN_MASK = (1 << 55) - 1


def _folios_in_region(base: int, size: int, folio_size: int) -> int | None:
    """How many ``folio_size`` slices of ``[base, base + size)`` are whole folios of that size: present pages
    with consecutive PFNs, the first one a compound head at a naturally aligned PFN, the others its tails, and
    the page after them no tail (so the folio is not larger).

    Reads ``/proc/self/pagemap`` and ``/proc/kpageflags`` (root only); None when they cannot be read."""
    per = folio_size // PAGE_SIZE
    npages = size // PAGE_SIZE
    try:
        with open("/proc/self/pagemap", "rb") as pm:
            pm.seek(base // PAGE_SIZE * 8)
            raw = pm.read(npages * 8)
        flags_fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    try:
        entries = [e & PAGEMAP_PFN_MASK if e & PAGEMAP_PRESENT else -1 for e in memoryview(raw).cast("Q")]
        if len(entries) != npages or not any(e > 0 for e in entries):
            return None  # PFNs read as 0 without CAP_SYS_ADMIN
        found = 0
        for first in range(0, npages, per):
            head = entries[first]
            if head <= 0 or head % per or entries[first : first + per] != list(range(head, head + per)):
                continue
            # the head, its tails, and the page after them not a tail (the folio ends with the slice)
            flags = memoryview(os.pread(flags_fd, (per + 1) * 8, head * 8)).cast("Q")
            if (
                flags[0] & KPF_COMPOUND_HEAD
                and all(f & KPF_COMPOUND_TAIL for f in flags[1:per])
                and not (len(flags) > per and flags[per] & KPF_COMPOUND_TAIL)
            ):
                found += 1
        return found
    finally:
        os.close(flags_fd)


def _region_heads(base: int, size: int, folio_size: int) -> list[int] | None:
    """The head pfns of the region's folios (present pages whose pfn is aligned to the folio size), from
    ``/proc/self/pagemap``; None when pfns cannot be read (not root)."""
    per = folio_size // PAGE_SIZE
    try:
        with open("/proc/self/pagemap", "rb") as pm:
            pm.seek(base // PAGE_SIZE * 8)
            raw = pm.read(size // PAGE_SIZE * 8)
    except OSError:
        return None
    pfns = [e & PAGEMAP_PFN_MASK for e in memoryview(raw).cast("Q") if e & PAGEMAP_PRESENT]
    if not any(pfns):
        return None
    return [p for p in pfns if p % per == 0]


class _Run:
    """One workload in this process: the region's address, the stats reader and (when traced) the tracer."""

    def __init__(self, spec: WorkloadSpec, stats_root: str, trace_instance: str | None = None) -> None:
        self.tracer = ZapTracer(trace_instance) if trace_instance else None
        #: the clock of the measured calls: wall time (default), or thread CPU time (engine_speed.py)
        self.clock: Callable[[], int] = time.perf_counter_ns
        self.spec = spec
        self.libc = _Libc()
        self.folio_size = spec.single_folio_size or 0
        self.root = Path(stats_root)
        self.base = 0
        self.hook = os.environ.get(TEST_HOOK_ENV, "")
        #: ``MADV_NOHUGEPAGE`` on the region once it is populated (see :meth:`populate`); False only to
        #: reproduce the old behaviour (benchmarks/straddle_layout.py)
        self.keep_from_khugepaged = True

    def stats(self) -> dict[str, int]:
        return read_stats(self.folio_size, self.root)

    # ------------------------------------------------------------------ population
    def populate(self) -> None:
        """mmap 2 MiB aligned, MADV_HUGEPAGE, touch every page, MADV_NOHUGEPAGE, PTE-map 2 MiB folios if
        asked, mremap.

        ``MADV_NOHUGEPAGE`` once every folio is faulted in keeps khugepaged away from the region: with
        ``MADV_HUGEPAGE`` left on, khugepaged (waking every ``scan_sleep_millisecs``, 10 s by default, to
        scan ``pages_to_scan`` PTEs, 4096 by default: eight 2 MiB ranges) copies any PTE-mapped 2 MiB
        range of the region into a new PMD-mapped THP. A PTE-mapped 2 MiB layout (the PMDs split by the
        mprotect below, or by an mremap to an address that is not 2 MiB aligned) then reads as
        ``AnonHugePages`` 16384 kB where 0 is expected, whenever a scan falls between the build and the
        check (or the zap). The folios already there stay as they are; only later collapses are refused."""
        spec, libc, size = self.spec, self.libc, self.spec.size_bytes
        raw = libc.mmap(size + PMD_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
        addr = _align_up(raw, PMD_SIZE)
        if addr > raw:
            libc.munmap(raw, addr - raw)
        if raw + size + PMD_SIZE > addr + size:
            libc.munmap(addr + size, raw + size + PMD_SIZE - (addr + size))
        self.base = addr
        libc.madvise(addr, size, MADV_HUGEPAGE)
        pages = size // PAGE_SIZE
        # one write per 4 KiB page; the first write into each folio's range faults it in
        buf = (ctypes.c_ubyte * size).from_address(addr)
        buf[::PAGE_SIZE] = [1] * pages
        if self.keep_from_khugepaged:
            libc.madvise(addr, size, MADV_NOHUGEPAGE)

        if self.folio_size == PMD_SIZE and not spec.pmd_mapped:
            # PTE-map every 2 MiB THP: a VMA split inside the PMD splits the mapping (not the folio)
            for off in range(0, size, PMD_SIZE):
                libc.mprotect(addr + off, PAGE_SIZE, PROT_READ)
            libc.mprotect(addr, size, PROT_READ | PROT_WRITE)

        if spec.va_offset_bytes:
            reserve_len = size + 2 * PMD_SIZE
            reserve = libc.mmap(reserve_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
            dst = _align_up(reserve, PMD_SIZE) + spec.va_offset_bytes
            libc.mremap_fixed(addr, size, dst)  # MREMAP_FIXED replaces the reservation under dst
            if dst > reserve:
                libc.munmap(reserve, dst - reserve)
            if reserve + reserve_len > dst + size:
                libc.munmap(dst + size, reserve + reserve_len - (dst + size))
            self.base = dst

    def check_layout(self, population: dict[str, int], *, pages: bool = False) -> None:
        """The layout is what the workload asks for: ``anon_fault_alloc`` == N (the stat is system-wide), the
        2 MiB mappings, and with ``pages`` (when the kernel lets us read PFNs and page flags) that the region
        is really made of N naturally aligned folios of the size, page by page."""
        spec = self.spec
        expected = sum(n for _, n in spec.folio_counts())
        got = population["anon_fault_alloc"]
        if got != expected:
            raise LayoutMismatch("anon_fault_alloc", expected, got)
        if self.folio_size == PMD_SIZE:
            want_kb = spec.size_bytes // 1024 if spec.pmd_mapped and not spec.va_offset_bytes else 0
            got_kb = _pmd_mapped_kb(self.base)
            if got_kb != want_kb:
                raise LayoutMismatch("AnonHugePages (PMD-mapped kB)", want_kb, got_kb)
        if pages:
            found = _folios_in_region(self.base, spec.size_bytes, self.folio_size)
            if found is not None and found != expected:
                what = f"naturally aligned {self.folio_size // 1024}KiB folios in the region (pagemap, kpageflags)"
                raise LayoutMismatch(what, expected, found)

    def run_test_hook(self, where: str = "") -> None:
        """``where`` is "" in the oracle's own child and "bench" in a pyperf worker (``pause-bench:``...)."""
        prefix = f"pause-{where}:" if where else "pause:"
        if self.hook.startswith(prefix):
            Path(self.hook[len(prefix) :]).write_text(str(os.getpid()))
            time.sleep(PAUSE_SECONDS)
        elif self.hook == (f"fail-{where}:populate" if where else "fail:populate"):
            raise RuntimeError(f"injected failure after population ({TEST_HOOK_ENV})")

    # ------------------------------------------------------------------ zap steps
    def zap_steps(self) -> dict[str, Any]:
        """Run the steps; stop before an exit step and describe it (the caller's parent finishes it)."""
        spec, libc, clock = self.spec, self.libc, self.clock
        events = dict.fromkeys(EVENT_STATS, 0)
        zap_ns = 0
        calls = 0
        start = self.stats()
        out: dict[str, Any] = {"start": start, "events": events, "calls": calls}
        tracer = self.tracer
        # the mm-level checks (docs/cost-model.md#checked-against-the-kernel): when every step is measured
        # and none is exit, the region's VMA count and the PMD splits over the steps
        mm_checked = all(step.measure and step.call != "exit" for step in spec.zaps)
        mm_before = (self.region_vmas(), vmstat("thp_split_pmd")) if mm_checked else None
        if tracer is not None:
            tracer.arm()  # the events of this process only, from here on
        for step in spec.zaps:
            if step.call == "exit":  # always the last step
                out["pending_exit"] = {"before": self.stats(), "measure": step.measure}
                if tracer is not None and step.measure:
                    tracer.on()  # the reaper switches it off (the teardown is this process's last work)
                break
            fn: Callable[[int, int], None] = libc.munmap if step.call == "munmap" else self._dontneed
            before = self.stats() if step.measure else None
            base = self.base
            step_ns = 0
            ranges = step.ranges(spec.size_bytes)
            traced = tracer if step.measure else None
            for lo, hi in ranges:
                if traced is not None:
                    traced.on()
                t0 = clock()
                fn(base + lo, hi - lo)
                step_ns += clock() - t0
                if traced is not None:
                    traced.off()
            if before is not None:
                after = self.stats()
                for k in EVENT_STATS:
                    events[k] += after[k] - before[k]
                zap_ns += step_ns
                calls += len(ranges)
        else:
            out["end"] = self.stats()
            if mm_before is not None:
                out["mm"] = {
                    "region_vmas": self.region_vmas() - mm_before[0],
                    "thp_split_pmd": vmstat("thp_split_pmd") - mm_before[1],
                }
        out["zap_ns"] = zap_ns
        out["calls"] = calls
        return out

    def unshare_interpreter_memory(self) -> None:
        """In a forked child: break copy-on-write now on every writable private mapping but the region
        (``MADV_POPULATE_WRITE``), so that the interpreter's own first writes during the measured calls take
        no COW fault, whose ``ptep_clear_flush()`` would be one more TLB flush of this mm in the trace."""
        lo, hi = self.base, self.base + self.spec.size_bytes
        for line in Path("/proc/self/maps").read_text().splitlines():
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if fields[1] != "rw-p" or (start < hi and end > lo):
                continue
            # not every mapping can be populated (e.g. VM_PFNMAP); those take no COW faults either
            self.libc.lib.madvise(start, end - start, MADV_POPULATE_WRITE)

    def _dontneed(self, addr: int, length: int) -> None:
        try:
            self.libc.madvise(addr, length, MADV_DONTNEED)
        except SyscallError as err:
            # ENOMEM: part of the range is not mapped (an earlier munmap step). The kernel has still zapped
            # every mapped VMA in the range before returning it, which is what the engine models.
            if err.errno != errno.ENOMEM:
                raise

    def region_vmas(self) -> int:
        """How many VMAs of this process overlap the region (``/proc/self/maps``)."""
        lo, hi = self.base, self.base + self.spec.size_bytes
        n = 0
        for line in Path("/proc/self/maps").read_text().splitlines():
            start, end = (int(x, 16) for x in line.split(None, 1)[0].split("-"))
            if start < hi and end > lo:
                n += 1
        return n

    def cleanup(self) -> None:
        if self.base:
            self.libc.munmap(self.base, self.spec.size_bytes)
            self.base = 0


def finish_exit(partial: dict[str, Any], reaped_ns: int, stats: dict[str, int]) -> dict[str, Any]:
    """Complete a result whose last step was ``exit``, in the process that reaped the owner.

    ``reaped_ns``: ``perf_counter_ns()`` right after ``waitpid`` returned (CLOCK_MONOTONIC is system-wide, so
    it compares with the owner's ``t0_ns`` stamped just before it exited); ``stats`` read after the reap.
    """
    out = dict(partial)
    pending = out.pop("pending_exit")
    out["events"] = dict(partial["events"])
    if pending["measure"]:
        for k in EVENT_STATS:
            out["events"][k] += stats[k] - pending["before"][k]
        out["zap_ns"] = partial["zap_ns"] + (reaped_ns - pending["t0_ns"])
        out["calls"] = partial["calls"] + 1
    out["end"] = stats
    return out


def summarize(population: dict[str, int], zaps: dict[str, Any]) -> dict[str, Any]:
    """Raw deltas: population (before -> after building), zap (events over measured steps, gauges end-start)."""
    zap = dict(zaps["events"])
    for k in GAUGE_STATS:
        zap[k] = zaps["end"][k] - zaps["start"][k]
    out = {"population": population, "zap": zap, "zap_ns": zaps["zap_ns"], "calls": zaps["calls"]}
    if "mm" in zaps:
        out["mm"] = dict(zaps["mm"])
    return out


def vmstat(name: str) -> int:
    """One counter of ``/proc/vmstat`` (system-wide)."""
    for line in Path("/proc/vmstat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


def _fork_and_report(
    who: str,
    work: Callable[[], tuple[dict[str, Any], dict[str, Any] | None]],
    stats_after: Callable[[], dict[str, int]],
) -> tuple[dict[str, Any], int, dict[str, int]]:
    """Run ``work`` in a forked child that reports through a pipe and exits; return its message, the
    ``perf_counter_ns()`` right after it was reaped and ``stats_after()`` read then.

    ``work`` returns the message and its pending ``exit`` step (or None); that step's ``t0_ns`` is stamped
    just before the message is written and the child leaves with ``os._exit`` (an ``exit`` zap step: the
    kernel tears its mm down). Anything the child raises comes back here: :class:`LayoutMismatch` as itself,
    the rest as RuntimeError naming ``who``."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns, never runs the parent's code
        os.close(rfd)
        code = 0
        try:
            msg, pending = work()
            if pending is not None:
                pending["t0_ns"] = time.perf_counter_ns()
        except LayoutMismatch as exc:
            msg, code = {"layout": [str(exc), exc.expected, exc.got]}, 1
        except BaseException as exc:
            msg, code = {"error": f"in the {who}: {type(exc).__name__}: {exc}"}, 1
        try:
            with os.fdopen(wfd, "w") as f:
                json.dump(msg, f)
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    reaped_ns = time.perf_counter_ns()
    stats = stats_after()
    if not text:
        raise RuntimeError(f"the {who} died without a result (wait status {status:#x})")
    msg = json.loads(text)
    if "layout" in msg:
        raise LayoutMismatch(*msg["layout"])
    if "error" in msg:
        raise RuntimeError(msg["error"])
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the {who} exited with status {os.waitstatus_to_exitcode(status)}")
    return msg, reaped_ns, stats


def _zap_in_forked_child(run: _Run) -> dict[str, Any]:
    """``fork = true``: the zap steps run in a forked child (the parent keeps its mappings)."""

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        run.libc.set_pdeathsig()
        if run.tracer is not None:
            run.unshare_interpreter_memory()
        zaps = run.zap_steps()
        return zaps, zaps.get("pending_exit")

    result, reaped_ns, stats = _fork_and_report("forked child", work, run.stats)
    if "pending_exit" in result:
        if run.tracer is not None:
            run.tracer.stop()
        result = finish_exit(result, reaped_ns, stats)
    return result


def _send(fd: int, msg: tuple[str, dict[str, Any]]) -> None:
    data = pickle.dumps(msg)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run(spec: WorkloadSpec, stats_root: str, result_fd: int, trace_instance: str | None = None) -> None:
    """Build, zap and measure ``spec``; write exactly one pickled ``(kind, dict)`` message to ``result_fd``.

    ``kind`` is ``ok``, ``exit`` (this process owns the mapping and exits right after the message: the
    parent reaps it, reads the stats and completes the result with :func:`finish_exit`), ``layout`` or
    ``error``. With ``trace_instance`` (a trace instance set up by the caller,
    :class:`~benchsvc.kernel.trace.TraceSession`) the zapping process records its events there around every
    measured call, and the message carries the region's folio head pfns (``region_heads``).
    """
    try:
        die_with_parent()
        r, population = _build(spec, stats_root, pages=True, trace_instance=trace_instance)
        heads = _region_heads(r.base, spec.size_bytes, r.folio_size) if trace_instance else None
        r.run_test_hook()
        if spec.fork:
            zaps = _zap_in_forked_child(r)
        else:
            zaps = r.zap_steps()
            if "pending_exit" in zaps:
                zaps["pending_exit"]["t0_ns"] = time.perf_counter_ns()
                msg = {"population": population, "zaps": zaps, "region_heads": heads}
                _send(result_fd, ("exit", msg))
                os._exit(0)  # the exit step: the kernel tears the whole mm down
        r.cleanup()
        _send(result_fd, ("ok", {**summarize(population, zaps), "region_heads": heads}))
    except LayoutMismatch as exc:
        _send(result_fd, ("layout", {"what": str(exc), "expected": exc.expected, "got": exc.got}))
    except BaseException as exc:
        _send(result_fd, ("error", {"what": f"{type(exc).__name__}: {exc}"}))


# ---------------------------------------------------------------------------------------------- in process
def _build(
    spec: WorkloadSpec, stats_root: str, *, pages: bool = False, trace_instance: str | None = None
) -> tuple[_Run, dict[str, int]]:
    """Build the region in this process and check its layout (page by page too with ``pages``); return the
    run and the population deltas."""
    r = _Run(spec, stats_root, trace_instance)
    before = r.stats()
    try:
        r.populate()
        population = _diff(r.stats(), before)
        r.check_layout(population, pages=pages)
    except BaseException:
        r.cleanup()
        raise
    return r, population


def _zap_in_owner_child(spec: WorkloadSpec, stats_root: str) -> dict[str, Any]:
    """A workload that ends in ``exit`` without ``fork``: a forked child builds, zaps and exits; we reap it."""

    def work() -> tuple[dict[str, Any], dict[str, Any] | None]:
        r, population = _build(spec, stats_root)
        r.libc.set_pdeathsig()
        zaps = r.zap_steps()
        return {"population": population, "zaps": zaps}, zaps["pending_exit"]

    def stats() -> dict[str, int]:
        return read_stats(spec.single_folio_size or 0, Path(stats_root))

    msg, reaped_ns, after = _fork_and_report("forked owner", work, stats)
    return summarize(msg["population"], finish_exit(msg["zaps"], reaped_ns, after))


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (PR_SET_PDEATHSIG)."""
    _Libc().set_pdeathsig()


def zap_once(spec: WorkloadSpec, stats_root: str, clock: Callable[[], int] | None = None) -> dict[str, Any]:
    """Build, check, zap and measure ``spec`` once from this process; :func:`summarize`'s dict.

    What a pyperf worker of ``benchsvc run --engine kernel`` does for every loop iteration: the region is
    built here (untimed), ``fork = true`` zaps in a forked child, and a workload that ends in ``exit``
    without ``fork`` is built and zapped in a forked owner that exits (its teardown timed up to the reap).
    The caller must hold the sysfs settings (:class:`~benchsvc.kernel.sysfs.MthpSettings`); raises
    :class:`LayoutMismatch` when the kernel did not build the layout. ``clock`` (nanoseconds; default
    ``time.perf_counter_ns``) times the munmap/madvise calls; ``time.thread_time_ns`` gives the CPU time the
    calls took in the kernel, which a loaded machine does not stretch. An ``exit`` step is always wall time
    (from before ``_exit`` to the reap).
    """
    if not spec.fork and spec.zaps and spec.zaps[-1].call == "exit":
        return _zap_in_owner_child(spec, stats_root)
    r, population = _build(spec, stats_root)
    if clock is not None:
        r.clock = clock
    try:
        r.run_test_hook("bench")
        zaps = _zap_in_forked_child(r) if spec.fork else r.zap_steps()
    finally:
        r.cleanup()
    return summarize(population, zaps)


def main() -> None:
    """``python -c 'from benchsvc.kernel.worker import main; main()' <fd>``: pickled (spec, root, trace
    instance or None) on stdin."""
    result_fd = int(sys.argv[1])
    spec, stats_root, trace_instance = pickle.loads(sys.stdin.buffer.read())
    run(spec, stats_root, result_fd, trace_instance)
    os.close(result_fd)
