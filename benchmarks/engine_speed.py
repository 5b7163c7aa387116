"""Simulated PTEs per second for every version, with the live kernel's own munmap time beside it.

For one workload (default: ``a-munmap-aligned-1g``, K§3 (a) at 1 GiB of 64 KiB folios) it times only the
measured zap calls of each version (the address space is rebuilt, untimed, before every run), repeats that
``--runs`` times and prints the median, min and max, the simulated PTEs per second, and the ratio to the
kernel's own time for the same munmap on this machine (when the live kernel can serve; see
``benchsvc/kernel``). Target (issue 2): the slowest version at >= 1 M PTEs/s; (DESIGN §8): within 20x of the
kernel.

    python benchmarks/engine_speed.py [--workload NAME|PATH] [--runs 7] [--no-kernel]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from benchsvc.engine import simulate, time_measured_zaps
from benchsvc.engine.versions import version_ids
from benchsvc.errors import BenchsvcError
from benchsvc.workload import resolve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="a-munmap-aligned-1g")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-kernel", action="store_true", help="do not time the live kernel")
    args = ap.parse_args()

    spec = resolve(args.workload)
    kernel_s: float | None = None
    kernel_note = "not measured (--no-kernel)"
    if not args.no_kernel:
        try:
            from benchsvc.kernel import time_zap_on_kernel

            runs = time_zap_on_kernel(spec, repeat=args.runs)
            kernel_s = statistics.median(runs)
            kernel_note = (
                f"median {kernel_s * 1e3:.2f} ms of {len(runs)} runs "
                f"(min {min(runs) * 1e3:.2f}, max {max(runs) * 1e3:.2f})"
            )
        except BenchsvcError as exc:
            kernel_note = f"unavailable: {exc}"

    print(f"workload {spec.name}: {spec.description}")
    print(
        f"machine: {platform.node()} {platform.machine()} Linux {platform.release()}, Python {platform.python_version()}"
    )
    print(f"live kernel munmap: {kernel_note}")
    header = f"{'version':<10} {'ptes':>9} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'M PTEs/s':>9} {'x kernel':>9}"
    print(header)
    print("-" * len(header))
    slowest = None
    for vid in version_ids():
        ptes = simulate(spec, vid).counters["ptes_cleared"]
        times = []
        for _ in range(args.runs):
            times.append(time_measured_zaps(spec, vid))
        med = statistics.median(times)
        rate = ptes / med / 1e6
        ratio = f"{med / kernel_s:>9.1f}" if kernel_s else f"{'-':>9}"
        print(
            f"{vid:<10} {ptes:>9} {med * 1e3:>10.1f} {min(times) * 1e3:>8.1f} {max(times) * 1e3:>8.1f} "
            f"{rate:>9.2f} {ratio}"
        )
        if slowest is None or rate < slowest[1]:
            slowest = (vid, rate)
    assert slowest is not None
    print(f"slowest: {slowest[0]} at {slowest[1]:.2f} M PTEs/s (target >= 1.00)")
    print(f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
