"""The simulation's zap time per version beside the live kernel's own time for the same zap (issue 7).

For every shipped workload the kernel can express (single folio size, no swap; ``large`` and ``oracle``
ones included) it times the measured zap calls only -- the simulated ones of each version
(:func:`benchsvc.engine.time_measured_zaps`, the address space rebuilt untimed before every run) and the
kernel's (:func:`benchsvc.kernel.worker.zap_once`, the same measurement the pyperf workers of
``benchsvc run --engine kernel`` make: a real region built untimed, then the munmap/madvise/exit calls timed)
-- repeats each ``--runs`` times and prints the medians and their ratios. Targets: the slowest version
within 10x of the kernel on every workload; and on ``a-munmap-aligned-1g``, the slowest version at >= 1 M
PTEs/s.

``--clock cpu`` (the default) times both sides with the calling thread's CPU clock
(``CLOCK_THREAD_CPUTIME_ID``, which counts the kernel's work in a syscall too): on a machine shared with
other jobs, wall time stretches the simulation's milliseconds of Python by however long it waits for a CPU,
while the kernel's zap (a single syscall, not preempted in a ``PREEMPT_NONE`` kernel) is hardly stretched, so
wall-time ratios measure the load as much as the code. ``--clock wall`` uses ``perf_counter`` on both
sides (the pyperf workers' clock).

    python benchmarks/engine_speed.py [--workload NAME|PATH ...] [--runs 9] [--clock cpu|wall] [--no-kernel]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from benchsvc.engine import simulate, time_measured_zaps
from benchsvc.engine.versions import version_ids
from benchsvc.errors import BenchsvcError
from benchsvc.kernel import expressible_reason, kernel_session
from benchsvc.kernel.sysfs import THP_ROOT
from benchsvc.kernel.worker import LayoutMismatch, zap_once
from benchsvc.workload import WorkloadSpec, discover, format_size, load_workload, resolve

TARGET_RATIO = 10.0
TARGET_PTES_PER_S = 1e6


CLOCKS = {"cpu": (time.thread_time_ns, time.thread_time), "wall": (time.perf_counter_ns, time.perf_counter)}


def kernel_times(spec: WorkloadSpec, runs: int, clock: str) -> list[float]:
    """Seconds of the measured zap calls on the live kernel, one value per freshly built region."""
    ns = CLOCKS[clock][0]
    with kernel_session(spec):
        zap_once(spec, str(THP_ROOT), ns)  # warm-up: page cache of the stats files, first-touch paths
        return [zap_once(spec, str(THP_ROOT), ns)["zap_ns"] / 1e9 for _ in range(runs)]


def sim_times(spec: WorkloadSpec, version: str, runs: int, clock: str) -> list[float]:
    seconds = CLOCKS[clock][1]
    time_measured_zaps(spec, version, seconds)  # warm-up
    return [time_measured_zaps(spec, version, seconds) for _ in range(runs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--workload", action="append", help="workload name or file (repeat; default: all shipped)"
    )
    ap.add_argument("--runs", type=int, default=9, help="timed runs per (workload, engine/version)")
    ap.add_argument(
        "--clock", choices=sorted(CLOCKS), default="cpu", help="thread CPU time (default) or wall time"
    )
    ap.add_argument("--no-kernel", action="store_true", help="do not time the live kernel")
    args = ap.parse_args()

    specs = [resolve(w) for w in args.workload] if args.workload else [load_workload(p) for p in discover()]
    left_out = [(s.name, expressible_reason(s)) for s in specs if expressible_reason(s) is not None]
    specs = [s for s in specs if expressible_reason(s) is None]
    versions = version_ids()

    print(f"machine: {platform.node()} {platform.machine()} Linux {platform.release()}, ", end="")
    print(
        f"Python {platform.python_version()}; medians of {args.runs} runs after one warm-up; clock {args.clock}"
    )
    for name, why in left_out:
        print(f"left out {name}: not expressible on the kernel ({why})")

    rows = []
    for spec in specs:
        kernel_s: float | None = None
        note = ""
        if not args.no_kernel:
            try:
                kernel_s = statistics.median(kernel_times(spec, args.runs, args.clock))
            except BenchsvcError as exc:
                note = f"kernel unavailable: {exc}"
            except LayoutMismatch as exc:  # the per-size stats are system-wide: another job's faults count
                note = f"kernel layout not reproduced ({exc}: expected {exc.expected}, got {exc.got}); run it again"
        sim_s = {v: statistics.median(sim_times(spec, v, args.runs, args.clock)) for v in versions}
        ptes = simulate(spec, "up612").counters["ptes_cleared"]
        rows.append((spec, ptes, kernel_s, sim_s, note))
        print(f"  measured {spec.name}", flush=True)

    name_w = max(len(s.name) for s, *_ in rows) if rows else 10
    head = f"{'workload':<{name_w}} {'folio':>6} {'ptes':>7} {'kernel ms':>9}"
    print("\nsimulated ms per version (median) beside the kernel's ms")
    print(head + "".join(f" {v:>9}" for v in versions))
    for spec, ptes, kernel_s, sim_s, note in rows:
        kms = f"{kernel_s * 1e3:>9.3f}" if kernel_s is not None else f"{'-':>9}"
        line = f"{spec.name:<{name_w}} {format_size(spec.single_folio_size or 0):>6} {ptes:>7} {kms}"
        print(line + "".join(f" {sim_s[v] * 1e3:>9.2f}" for v in versions) + (f"  ({note})" if note else ""))

    print("\nsimulated time / kernel time (x kernel); max = the slowest version")
    print(f"{'workload':<{name_w}}" + "".join(f" {v:>9}" for v in versions) + f" {'max':>7}")
    worst: tuple[float, str, str] | None = None
    for spec, _, kernel_s, sim_s, _ in rows:
        if kernel_s is None:
            continue
        ratios = {v: sim_s[v] / kernel_s for v in versions}
        slowest = max(ratios, key=lambda v: ratios[v])
        line = f"{spec.name:<{name_w}}" + "".join(f" {ratios[v]:>9.1f}" for v in versions)
        print(line + f" {ratios[slowest]:>7.1f}")
        if worst is None or ratios[slowest] > worst[0]:
            worst = (ratios[slowest], slowest, spec.name)
    if worst is not None:
        verdict = "met" if worst[0] <= TARGET_RATIO else "MISSED"
        print(
            f"\nslowest version against the kernel: {worst[1]} on {worst[2]} at {worst[0]:.1f}x "
            f"(target <= {TARGET_RATIO:g}x: {verdict})"
        )
    for spec, ptes, _, sim_s, _ in rows:
        if spec.name == "a-munmap-aligned-1g":
            v = max(versions, key=lambda v: sim_s[v])
            rate = ptes / sim_s[v]
            verdict = "met" if rate >= TARGET_PTES_PER_S else "MISSED"
            print(
                f"{spec.name}: slowest version {v} at {rate / 1e6:.2f} M PTEs/s (target >= 1.00: {verdict})"
            )
    print(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
