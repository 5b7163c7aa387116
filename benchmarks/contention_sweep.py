"""The contention model's sweep (issue 23): every version x every canonical workload x 9 CPU counts, target
<= 10 s. Each repeat starts cold (the simulation cache cleared) and includes the engine's simulations that give
the counters; prints wall and CPU time per repeat and their medians (on a shared machine the wall time carries
the other jobs' load: compare the CPU time too).

    python benchmarks/contention_sweep.py [--repeats 5] [--memcgs 1] [--shrinker]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchsvc.analysis.contention import DEFAULT_CPUS, LockParams, simulate_lock, sweep
from benchsvc.engine.versions import version_ids
from benchsvc.workload import discover, load_workload

TARGET_S = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--memcgs", type=int, default=1)
    ap.add_argument("--shrinker", action="store_true")
    args = ap.parse_args()
    specs = [s for s in (load_workload(p) for p in discover()) if "canonical" in s.tags]
    versions = version_ids()
    params = LockParams(shrinker=args.shrinker)
    walls, cpus = [], []
    for _ in range(args.repeats):
        simulate_lock.cache_clear()
        w0, c0 = time.perf_counter(), time.process_time()
        n = 0
        for spec in specs:
            for curve in sweep(spec, versions, DEFAULT_CPUS, memcgs=args.memcgs, params=params):
                n += len(curve.points)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        print(
            f"{n} points ({len(versions)} versions x {len(specs)} workloads x {len(DEFAULT_CPUS)} CPU counts): "
            f"wall {walls[-1]:.2f} s, CPU {cpus[-1]:.2f} s"
        )
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    print(
        f"median of {args.repeats}: wall {wall:.2f} s, CPU {cpu:.2f} s; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"target <= {TARGET_S:g} s: {'met' if wall <= TARGET_S else 'NOT met'} (wall)")


if __name__ == "__main__":
    main()
