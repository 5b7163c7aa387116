"""Run a workload on the live kernel and read its per-size mTHP stats (docs/kernel-oracle.md,
docs/kernel-history.md#per-size-mthp-stats).

:func:`run_on_kernel` is the library entry point (the later ``--engine kernel``): it checks that the
workload maps onto the kernel and that the kernel can serve, selects the layout's folio size in sysfs for the
duration (:class:`~benchsvc.kernel.sysfs.MthpSettings`, restored on every exit path), runs the workload in a
fresh child interpreter (:mod:`benchsvc.kernel.worker`) and returns the stat deltas and the wall time of the
measured zap calls.
"""

from __future__ import annotations

import os
import pickle
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchsvc
from benchsvc.errors import BenchsvcError, LayoutNotReproduced
from benchsvc.kernel import worker
from benchsvc.kernel.sysfs import THP_ROOT, MthpSettings, check_available, read_stats
from benchsvc.kernel.trace import (
    TRACED_COUNTERS,
    TracedZap,
    TraceSession,
    ZapTracer,
    trace_unavailable_reason,
)
from benchsvc.records import EngineKind
from benchsvc.workload import PAGE_SIZE, WorkloadSpec, format_size

#: the engine name of results measured on the live kernel (docs/design.md#engines)
ENGINE = EngineKind.KERNEL
#: what a kernel result stores as its counters, under the engine's names where the engine has one (see
#: :meth:`KernelResult.stored_counters`); the traced ones only when the tracepoints could be used
STAT_COUNTERS = ("split_deferred", "partially_mapped_after", "nr_anon", "anon_fault_alloc")
STORED_COUNTERS = (*STAT_COUNTERS, *TRACED_COUNTERS)

#: seconds a worker may take before the run is abandoned (population of 4 GiB takes a few seconds)
WORKER_TIMEOUT = 900.0


class NotExpressibleOnKernel(BenchsvcError):
    """The workload cannot be run on the live kernel as written (mixed sizes, swap, order-0 only, ...)."""


class KernelRunError(BenchsvcError):
    """A kernel run failed (a syscall error in the child, the child died, no result)."""


@dataclass(frozen=True)
class KernelResult:
    """What one workload did on the live kernel.

    ``counters`` uses the engine's names where a stat maps onto one (``split_deferred``: the stat's delta
    over the measured zap calls; ``partially_mapped_after``: the ``nr_anon_partially_mapped`` delta from the
    start of the zap steps to their end). ``stats_population`` and ``stats_zap`` are the raw deltas under
    the sysfs names: population = before mmap -> after the region is built (touched, moved, forked-ready);
    zap = event stats summed over the measured steps, gauges end minus start of the steps.
    """

    workload: str
    kernel_release: str
    folio_size: int
    folios: int
    counters: dict[str, int]
    stats_population: dict[str, int]
    stats_zap: dict[str, int]
    zap_ns: int
    zap_calls: int
    sysfs_changes: list[tuple[str, str, str]] = field(default_factory=list)
    #: the tracepoint counters of the measured zap calls (None: not traced)
    traced: TracedZap | None = None
    #: mm-level deltas over the measured steps, when every step is measured and none is exit:
    #: ``region_vmas`` (VMAs overlapping the region, /proc/self/maps) and ``thp_split_pmd`` (/proc/vmstat)
    mm: dict[str, int] | None = None

    def stored_counters(self) -> dict[str, int]:
        """The counters ``benchsvc run --engine kernel`` stores, under the engine's names so that they sit
        beside the simulated versions' rows: over the measured zap calls ``split_deferred`` (stat events) and
        ``partially_mapped_after`` (the ``nr_anon_partially_mapped`` gauge, end minus start), and when traced
        ``tlb_flushes``, ``folios_freed`` and ``pages_freed``; ``nr_anon`` (gauge, end minus start) and
        ``anon_fault_alloc`` (the population's: the folios built, checked equal to N) have no engine
        counter and keep the stat names."""
        out = {
            "split_deferred": self.stats_zap["split_deferred"],
            "partially_mapped_after": self.stats_zap["nr_anon_partially_mapped"],
            "nr_anon": self.stats_zap["nr_anon"],
            "anon_fault_alloc": self.stats_population["anon_fault_alloc"],
        }
        if self.traced is not None:
            out.update(self.traced.counters())
        return out

    @property
    def zap_seconds(self) -> float:
        return self.zap_ns / 1e9

    def as_json(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "engine": "kernel",
            "kernel_release": self.kernel_release,
            "folio_size": self.folio_size,
            "folios": self.folios,
            "counters": self.counters,
            "stats_population": self.stats_population,
            "stats_zap": self.stats_zap,
            "zap_ns": self.zap_ns,
            "zap_calls": self.zap_calls,
            "traced": None if self.traced is None else self.traced.as_json(),
        }


def expressible_reason(spec: WorkloadSpec) -> str | None:
    """Why ``spec`` cannot run on the kernel, or None when it can."""
    if spec.single_folio_size is None:
        sizes = ", ".join(format_size(s) for s, _ in spec.folios)
        if spec.arrangement == "shuffled":
            return f"a shuffled mix of folio sizes ({sizes}); the kernel picks one size per fault"
        return f"the layout mixes folio sizes ({sizes}); only single-size layouts map onto per-size mTHP"
    if spec.swap_share > 0:
        return f"swap_share = {spec.swap_share:g}; the oracle does not swap pages out"
    if spec.single_folio_size == PAGE_SIZE:
        return "order-0 (4KiB) folios have no per-size mTHP stats"
    return None


def check_expressible(spec: WorkloadSpec) -> int:
    """The layout's folio size; raise :class:`NotExpressibleOnKernel` if the kernel cannot run ``spec``."""
    reason = expressible_reason(spec)
    if reason is not None:
        raise NotExpressibleOnKernel(f"{spec.name}: not expressible on the kernel: {reason}")
    assert spec.single_folio_size is not None
    return spec.single_folio_size


def _expected_folios(spec: WorkloadSpec) -> int:
    return sum(n for _, n in spec.folio_counts())


def _worker_env() -> dict[str, str]:
    """The caller's environment, with this checkout of benchsvc first on the child's import path."""
    env = dict(os.environ)
    pkg_parent = str(Path(benchsvc.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    return env


def _run_worker(spec: WorkloadSpec, root: Path, trace_instance: str | None = None) -> dict[str, Any]:
    """Run ``spec`` in a fresh child interpreter; return :func:`worker.summarize`'s dict.

    The child is killed on every way out of here (exception, KeyboardInterrupt, the sysfs guard's signal
    exception); it also dies by itself if this process dies (PR_SET_PDEATHSIG).
    """
    rfd, wfd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from benchsvc.kernel.worker import main; main()", str(wfd)],
            stdin=subprocess.PIPE,
            pass_fds=(wfd,),
            env=_worker_env(),
        )
    except BaseException:
        os.close(rfd)
        os.close(wfd)
        raise
    os.close(wfd)
    try:
        assert proc.stdin is not None
        try:
            proc.stdin.write(pickle.dumps((spec, str(root), trace_instance)))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at start-up: reported below as "no result"
        data = _read_until_eof(rfd, spec.name)
        proc.wait()
        reaped_ns = time.perf_counter_ns()
        if not data:
            raise KernelRunError(
                f"{spec.name}: the kernel worker gave no result (exit code {proc.returncode})"
            )
        kind, payload = pickle.loads(data)
        if kind == "exit":  # the worker owned the mapping and exited: it is reaped, read the stats now
            if trace_instance is not None:
                ZapTracer(trace_instance).stop()
            zaps = worker.finish_exit(payload["zaps"], reaped_ns, _stats(spec, root))
            return {**worker.summarize(payload["population"], zaps), "region_heads": payload["region_heads"]}
        if kind == "ok":
            return dict(payload)
        if kind == "layout":
            raise LayoutNotReproduced(
                f"{spec.name}: the kernel did not reproduce the layout: {payload['what']} expected "
                f"{payload['expected']}, got {payload['got']} (it fell back to other sizes or mappings, so its "
                "counters would describe another layout)"
            )
        raise KernelRunError(f"{spec.name}: kernel run failed: {payload['what']}")
    finally:
        os.close(rfd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_until_eof(fd: int, name: str) -> bytes:
    chunks: list[bytes] = []
    deadline = time.monotonic() + WORKER_TIMEOUT
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        elif time.monotonic() > deadline:
            raise KernelRunError(f"{name}: the kernel worker did not finish within {WORKER_TIMEOUT:g}s")


def _stats(spec: WorkloadSpec, root: Path) -> dict[str, int]:
    assert spec.single_folio_size is not None
    return read_stats(spec.single_folio_size, root)


def _result(
    spec: WorkloadSpec, raw: dict[str, Any], settings: MthpSettings, traced: TracedZap | None = None
) -> KernelResult:
    zap = raw["zap"]
    return KernelResult(
        workload=spec.name,
        kernel_release=os.uname().release,
        folio_size=spec.single_folio_size or 0,
        folios=_expected_folios(spec),
        counters={
            "split_deferred": zap["split_deferred"],
            "partially_mapped_after": zap["nr_anon_partially_mapped"],
            **(traced.counters() if traced is not None else {}),
        },
        stats_population=dict(raw["population"]),
        stats_zap=dict(zap),
        zap_ns=int(raw["zap_ns"]),
        zap_calls=int(raw["calls"]),
        sysfs_changes=[(c.path, c.original, c.ours) for c in settings.changes],
        traced=traced,
        mm=dict(raw["mm"]) if raw.get("mm") is not None else None,
    )


def version_id(release: str | None = None) -> str:
    """The version id of the live kernel's results: ``kernel-<uname -r>``."""
    return f"kernel-{release or os.uname().release}"


@contextmanager
def kernel_session(spec: WorkloadSpec, *, root: Path = THP_ROOT) -> Iterator[MthpSettings]:
    """Check that ``spec`` can run here, then hold its mTHP settings (restored on every way out).

    Raises :class:`NotExpressibleOnKernel` or :class:`~benchsvc.errors.KernelUnavailable` before changing
    anything."""
    folio_size = check_expressible(spec)
    check_available(folio_size, root)
    with MthpSettings(folio_size, root=root) as settings:
        yield settings


def run_in_session(spec: WorkloadSpec, settings: MthpSettings, *, trace: bool | None = None) -> KernelResult:
    """One run of ``spec`` in a fresh child, inside a :func:`kernel_session` for it.

    ``trace``: record the zapping task's tracepoints over the measured calls
    (:class:`~benchsvc.kernel.trace.TraceSession`); None = when they can be used here, True = required
    (:class:`~benchsvc.errors.KernelUnavailable` with the reason if they cannot), False = never."""
    if trace is None:
        trace = trace_unavailable_reason() is None
    if not trace:
        return _result(spec, _run_worker(spec, settings.root), settings)
    with TraceSession() as session:
        raw = _run_worker(spec, settings.root, str(session.instance))
        heads = raw.get("region_heads")
        order = ((spec.single_folio_size or PAGE_SIZE) // PAGE_SIZE).bit_length() - 1
        traced = session.take(None if heads is None else set(heads), order)
    return _result(spec, raw, settings, traced)


def run_on_kernel(spec: WorkloadSpec, *, root: Path = THP_ROOT, trace: bool | None = None) -> KernelResult:
    """Run ``spec`` on the live kernel once (see the module docstring); sysfs (and tracing, see
    :func:`run_in_session`) is restored on every path.

    Raises :class:`NotExpressibleOnKernel`, :class:`~benchsvc.errors.KernelUnavailable`,
    :class:`~benchsvc.errors.LayoutNotReproduced` or :class:`KernelRunError`.
    """
    with kernel_session(spec, root=root) as settings:
        return run_in_session(spec, settings, trace=trace)


def time_zap_on_kernel(spec: WorkloadSpec, repeat: int = 5, *, root: Path = THP_ROOT) -> list[float]:
    """Seconds spent in the measured zap calls, one value per run (each run a fresh child and region)."""
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    out: list[float] = []
    with kernel_session(spec, root=root):
        for _ in range(repeat):
            out.append(_run_worker(spec, root)["zap_ns"] / 1e9)
    return out


__all__ = [
    "ENGINE",
    "STAT_COUNTERS",
    "STORED_COUNTERS",
    "KernelResult",
    "KernelRunError",
    "NotExpressibleOnKernel",
    "check_expressible",
    "expressible_reason",
    "kernel_session",
    "run_in_session",
    "run_on_kernel",
    "time_zap_on_kernel",
    "version_id",
]
