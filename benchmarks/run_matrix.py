"""Wall time of ``benchsvc run`` on the shipped matrix, and where it goes.

Runs the orchestrator (the same code as ``benchsvc run``) in each requested mode on the shipped workloads
(tagged "large" or "oracle" excluded, as by default) x every version, into a fresh SQLite file, and prints:
wall time; the measurement share (the timed zap calls: every stored value and warmup times its loops); and
the overhead (worker process start-up, the untimed rebuilds, the confirmation re-measurements, simulations,
database commits). Targets: --quick <= 1 min, default <= 8 min on 2 cores.

    python benchmarks/run_matrix.py [--modes quick,default] [--keep DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchsvc.engine.versions import version_ids
from benchsvc.records import RunRecord
from benchsvc.runner.blocks import SAMPLING
from benchsvc.runner.matrix import execute, plan, run_settings
from benchsvc.store.db import open_store, read_session
from benchsvc.store.models import Result, Sample
from benchsvc.workload import OPT_IN_TAGS, discover, load_workload


def measured_seconds(engine: object, run_id: int) -> float:
    """Seconds of timed zap calls in a run: values and warmups, each times its loops."""
    from sqlalchemy import select

    total = 0.0
    with read_session(engine) as s:  # type: ignore[arg-type]
        for values, warmups, loops in s.execute(
            select(Sample.values, Sample.warmups, Sample.loops)
            .join(Result, Sample.result_id == Result.id)
            .where(Result.run_id == run_id)
        ):
            total += (sum(values) + sum(warmups)) * loops
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="quick,default")
    ap.add_argument("--keep", help="directory for the databases (default: temporary)")
    args = ap.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="benchsvc-runbench-"))
    specs = [s for s in (load_workload(p) for p in discover()) if not set(OPT_IN_TAGS) & set(s.tags)]
    items = plan(specs, version_ids())
    print(f"matrix: {len(specs)} workloads x {len(version_ids())} versions = {len(items)} results")
    for mode in args.modes.split(","):
        db = workdir / f"{mode}.db"
        db.unlink(missing_ok=True)
        engine = open_store(str(db))
        record = RunRecord.new(mode=mode, trigger="benchmark", pyperf_settings=run_settings(mode, items))
        summary = execute(engine, items, record, mode)
        timed = measured_seconds(engine, summary.run_id)
        wall = summary.elapsed_s
        worker_overhead = summary.pyperf_s - timed
        other = wall - summary.pyperf_s - summary.simulate_s - summary.commit_s
        print(
            f"\n{mode} ({SAMPLING[mode].as_dict()}): {summary.status}, {summary.ok} ok, {summary.failed} failed"
        )
        print(f"  wall time                    {wall:8.1f} s  ({wall / 60:.1f} min)")
        print(f"  measurement (timed calls)    {timed:8.1f} s  {timed / wall:6.1%}")
        print(
            f"  worker processes, untimed    {worker_overhead:8.1f} s  {worker_overhead / wall:6.1%}  (start-up, rebuilds, confirmation)"
        )
        print(f"  simulations (counters)       {summary.simulate_s:8.1f} s  {summary.simulate_s / wall:6.1%}")
        print(f"  database commits             {summary.commit_s:8.1f} s  {summary.commit_s / wall:6.1%}")
        print(f"  other                        {other:8.1f} s  {other / wall:6.1%}")
        engine.dispose()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
