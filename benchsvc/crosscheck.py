"""Cross-check of the simulation against the live kernel: counter by counter, per workload.

See docs/kernel-oracle.md.

Library only (no printing): :func:`crosscheck` returns a :class:`CrosscheckReport` of plain dataclasses;
``benchsvc crosscheck`` renders it. The simulated version is the one that models the running kernel's release
(:func:`sim_version`: ``up615`` from 6.15, ``up612`` for 6.12-6.14). Compared per workload the kernel can
express:

* ``split_deferred`` and ``partially_mapped_after`` (per-size mTHP stats): the simulated counters against
  :attr:`KernelResult.counters`;
* ``anon_fault_alloc``: the number of folios of the layout against the kernel's population delta of that
  stat (the check that the kernel built the layout the simulation assumes);
* with tracing (the default), ``tlb_flushes``, ``folios_freed`` and ``pages_freed`` from the zapping task's
  tracepoints (:mod:`benchsvc.kernel.trace`; ``tlb_flushes`` not for a workload with an ``exit`` step, whose
  teardown flushes the whole interpreter's address space);
* when every step is measured and none is ``exit``: ``vma_count_change`` (the engine's ``vma_splits`` minus
  ``vmas_removed`` against the change of the number of VMAs overlapping the region in ``/proc/self/maps``)
  and ``pmd_splits`` (against ``thp_split_pmd`` of ``/proc/vmstat``, system-wide, like ``anon_fault_alloc``).

Beside the counters, each compared workload carries its time: the kernel's measured wall time of the zap
calls (one traced run: the tracepoints add their own cost) and the time the cost model predicts from the
simulated counters (:class:`TimeCheck`; informative, never a failure).

A workload the kernel cannot express is ``skipped`` (with the reason), not a failure. A kernel that fell
back to other folio sizes (:class:`~benchsvc.errors.LayoutNotReproduced`) gives ``layout not reproduced``,
which is a failure: nothing could be compared. A kernel (or tracefs) that cannot serve at all raises
:class:`~benchsvc.errors.KernelUnavailable` before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from benchsvc.errors import KernelUnavailable, LayoutNotReproduced
from benchsvc.workload import WorkloadSpec

if TYPE_CHECKING:
    from benchsvc.engine.cost import CostModel
    from benchsvc.kernel import KernelResult

#: the simulated version of each kernel release the oracle can run on, newest first: (first release, version)
RELEASE_VERSIONS = (((6, 15), "up615"), ((6, 12), "up612"))
#: engine counters compared with the per-size stats of :attr:`KernelResult.counters` (same names)
ENGINE_COUNTERS = ("split_deferred", "partially_mapped_after")
#: the population stat compared with the number of folios of the layout
FAULT_COUNTER = "anon_fault_alloc"
COUNTERS = (*ENGINE_COUNTERS, FAULT_COUNTER)
#: engine counters compared with the kernel's tracepoint counters, when the kernel result was traced
TRACED_COUNTERS = ("tlb_flushes", "folios_freed", "pages_freed")
#: mm-level checks (KernelResult.mm): the name of the check, and the kernel's key
VMA_CHECK = "vma_count_change"
MM_CHECKS = ((VMA_CHECK, "region_vmas"), ("pmd_splits", "thp_split_pmd"))

AGREE = "agree"
DISAGREE = "disagree"
SKIPPED = "skipped"
LAYOUT_NOT_REPRODUCED = "layout not reproduced"


@dataclass(frozen=True)
class CounterCheck:
    """One counter of one workload: the simulated value and the kernel's."""

    counter: str
    sim: int
    kernel: int | None  # None: the kernel result lacks the stat (counts as a disagreement)

    @property
    def agree(self) -> bool:
        return self.kernel is not None and self.sim == self.kernel


@dataclass(frozen=True)
class TimeCheck:
    """The kernel's measured time of a workload's zap calls against the cost model's prediction."""

    predicted_ns: float
    measured_ns: float
    model: str  # the label of the model that predicted

    @property
    def ratio(self) -> float:
        """measured / predicted (inf when nothing was predicted)."""
        return self.measured_ns / self.predicted_ns if self.predicted_ns else float("inf")


@dataclass(frozen=True)
class WorkloadCheck:
    """The outcome for one workload: ``status`` is one of agree, disagree, skipped, layout not reproduced."""

    workload: str
    status: str
    reason: str | None = None
    checks: tuple[CounterCheck, ...] = ()
    time: TimeCheck | None = None

    @property
    def ok(self) -> bool:
        return self.status in (AGREE, SKIPPED)


@dataclass(frozen=True)
class CrosscheckReport:
    workloads: tuple[WorkloadCheck, ...] = field(default_factory=tuple)
    #: the simulated version the kernel was compared with
    version: str = ""

    @property
    def ok(self) -> bool:
        """True when no workload disagrees and every expressible layout was reproduced."""
        return all(w.ok for w in self.workloads)

    @property
    def failures(self) -> list[WorkloadCheck]:
        return [w for w in self.workloads if not w.ok]

    def time_rows(self) -> list[dict[str, object]]:
        """One dict per compared workload: workload, predicted_ns, measured_ns, ratio (measured/predicted)."""
        return [
            {
                "workload": w.workload,
                "predicted_ns": w.time.predicted_ns,
                "measured_ns": w.time.measured_ns,
                "ratio": w.time.ratio,
            }
            for w in self.workloads
            if w.time is not None
        ]

    def rows(self) -> list[dict[str, object]]:
        """One dict per (workload, counter); one per skipped or not reproduced workload (counter None).

        Keys: workload, counter, sim, kernel, agree (bool, None when nothing was compared), status, reason.
        """
        out: list[dict[str, object]] = []
        for w in self.workloads:
            if not w.checks:
                out.append(
                    {
                        "workload": w.workload,
                        "counter": None,
                        "sim": None,
                        "kernel": None,
                        "agree": None,
                        "status": w.status,
                        "reason": w.reason,
                    }
                )
            for c in w.checks:
                out.append(
                    {
                        "workload": w.workload,
                        "counter": c.counter,
                        "sim": c.sim,
                        "kernel": c.kernel,
                        "agree": c.agree,
                        "status": w.status,
                        "reason": w.reason,
                    }
                )
        return out


def sim_version(release: str | None = None) -> str:
    """The simulated version that models kernel ``release`` (default: the running kernel's ``uname -r``):
    ``up615`` from 6.15 (CONFIG_MM_ID, set by every THP kernel from 6.15), ``up612`` for 6.12-6.14."""
    import os
    import re

    release = release or os.uname().release
    m = re.match(r"^(\d+)\.(\d+)", release)
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    for first, vid in RELEASE_VERSIONS:
        if version >= first:
            return vid
    return RELEASE_VERSIONS[-1][1]  # older kernels cannot serve (sysfs.MIN_KERNEL); the oldest model


def layout_folios(spec: WorkloadSpec) -> int:
    """The number of folios the layout has (what ``anon_fault_alloc`` must count on the kernel)."""
    return sum(n for _, n in spec.folio_counts())


def compare(spec: WorkloadSpec, sim_counters: Mapping[str, int], kernel: KernelResult) -> WorkloadCheck:
    """Compare the simulated counters of ``spec`` with a kernel result, counter by counter (pure)."""
    checks = [
        CounterCheck(name, int(sim_counters[name]), kernel.counters.get(name)) for name in ENGINE_COUNTERS
    ]
    checks.append(
        CounterCheck(FAULT_COUNTER, layout_folios(spec), kernel.stats_population.get(FAULT_COUNTER))
    )
    if kernel.traced is not None:
        has_exit = any(step.call == "exit" for step in spec.zaps)
        traced = kernel.traced.counters()
        checks.extend(
            CounterCheck(name, int(sim_counters[name]), traced.get(name))
            for name in TRACED_COUNTERS
            if not (has_exit and name == "tlb_flushes")
        )
    mm = getattr(kernel, "mm", None)
    if mm is not None:
        sim_mm = {
            VMA_CHECK: int(sim_counters["vma_splits"]) - int(sim_counters["vmas_removed"]),
            "pmd_splits": int(sim_counters["pmd_splits"]),
        }
        checks.extend(CounterCheck(name, sim_mm[name], mm.get(key)) for name, key in MM_CHECKS)
    bad = [c.counter for c in checks if not c.agree]
    if bad:
        return WorkloadCheck(spec.name, DISAGREE, f"disagree on {', '.join(bad)}", tuple(checks))
    return WorkloadCheck(spec.name, AGREE, None, tuple(checks))


def check_workload(
    spec: WorkloadSpec,
    run: Callable[[WorkloadSpec], KernelResult] | None = None,
    version: str | None = None,
    trace: bool = True,
    cost: CostModel | None = None,
) -> WorkloadCheck:
    """Run ``spec`` on the kernel (``run``, default :func:`benchsvc.kernel.run_on_kernel`, traced unless
    ``trace`` is false) and on ``version`` (default: :func:`sim_version` of the running kernel); the time
    predicted by ``cost`` (default: the reference model) beside the kernel's."""
    from dataclasses import replace

    from benchsvc.engine import CostModel, simulate
    from benchsvc.kernel import expressible_reason, run_on_kernel

    reason = expressible_reason(spec)
    if reason is not None:
        return WorkloadCheck(spec.name, SKIPPED, f"not expressible on the kernel: {reason}")
    try:
        result = run(spec) if run is not None else run_on_kernel(spec, trace=trace)
    except LayoutNotReproduced as exc:
        return WorkloadCheck(spec.name, LAYOUT_NOT_REPRODUCED, str(exc))
    model = cost or CostModel.default()
    sim = simulate(spec, version or sim_version(), model)
    check = compare(spec, sim.counters, result)
    return replace(check, time=TimeCheck(sim.modeled_ns, float(result.zap_ns), model.label()))


def check_kernel_available(specs: Iterable[WorkloadSpec], trace: bool = False) -> None:
    """Raise :class:`KernelUnavailable` if the kernel cannot serve a folio size that an expressible spec uses
    (or, with ``trace``, if its tracepoints cannot be used)."""
    from benchsvc.kernel import expressible_reason, unavailable_reason
    from benchsvc.kernel.trace import check_trace_available

    sizes = sorted(
        {
            s.single_folio_size
            for s in specs
            if expressible_reason(s) is None and s.single_folio_size is not None
        }
    )
    for size in sizes:
        reason = unavailable_reason(size)
        if reason is not None:
            raise KernelUnavailable(f"the live kernel cannot be used: {reason}")
    if sizes and trace:
        import sys

        for note in check_trace_available():
            print(f"note: {note}", file=sys.stderr)


def crosscheck(
    specs: Sequence[WorkloadSpec],
    run: Callable[[WorkloadSpec], KernelResult] | None = None,
    version: str | None = None,
    trace: bool = True,
    cost: CostModel | None = None,
) -> CrosscheckReport:
    """Cross-check every spec against ``version`` (default: :func:`sim_version` of the running kernel), with
    the tracepoint counters unless ``trace`` is false, and the time ``cost`` predicts beside the kernel's.
    Availability (of the tracepoints too) is checked up front, only when ``run`` is the live kernel."""
    if run is None:
        check_kernel_available(specs, trace)
    vid = version or sim_version()
    return CrosscheckReport(tuple(check_workload(s, run, vid, trace, cost) for s in specs), vid)
