"""Build a store holding a year of nightly runs of the full matrix and time the queries users make.

Every night is one run of every version x shipped workload (counters and modelled cost from one real
simulation each, raw timing values synthetic: ``--processes`` worker processes x ``--values`` values, as
pyperf's default mode stores), ingested through the store's own API, one write transaction per night.
Then it times (median of ``--repeat``):

* one series' full history (``series_history``: time metric and a counter), target <= 50 ms on SQLite for
  10k rows: a second store with ``--long-series`` nights of one result measures that size exactly;
* a version comparison for one run (``run_results`` + ``run_samples``);
* ``list_runs``;
and prints the database size and the nightly ingest time.

    python benchmarks/store_year.py [--nights 365] [--long-series 10000] [--db URL] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchsvc.engine import simulate
from benchsvc.engine.versions import version_ids
from benchsvc.records import (
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    WorkloadRef,
)
from benchsvc.store import queries
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.ingest import ingest, registry_versions
from benchsvc.workload import discover, load_workload

MACHINE = MachineInfo("bench-01", "AMD EPYC (synthetic)", 2, "6.18.44", "x86_64")
ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0", "numpy": "2.4.6"})


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def night_results(
    matrix: list[tuple[WorkloadRef, str, dict[str, int], float]],
    rng: random.Random,
    processes: int,
    values: int,
) -> list[ResultRecord]:
    out = []
    for ref, vid, counters, modeled in matrix:
        base = modeled / 1e9 * 3 * (1 + rng.gauss(0, 0.015))
        procs = tuple(
            ProcessValues(tuple(base * (1 + rng.gauss(0, 0.02)) for _ in range(values)), (base * 1.1,), 1)
            for _ in range(processes)
        )
        out.append(ResultRecord("sim", vid, ref, counters=counters, modeled_ns=modeled, processes=procs))
    return out


def run_record(night: int, start: dt.datetime) -> RunRecord:
    return RunRecord(
        uuid=str(uuid.UUID(int=night + 1)),
        started_at=start + dt.timedelta(days=night),
        finished_at=start + dt.timedelta(days=night, minutes=14),
        machine=MACHINE,
        environment=ENV,
        benchsvc_version="0.1.0",
        git_commit=f"{night:040x}",
        mode="default",
        trigger="nightly",
        pyperf_settings={"processes": 20, "values": 3},
        status="complete",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=365)
    ap.add_argument("--long-series", type=int, default=10_000, help="nights of the single-series store")
    ap.add_argument("--processes", type=int, default=20)
    ap.add_argument("--values", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", help="directory to keep the databases in (default: a temporary one)")
    args = ap.parse_args()

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="benchsvc-store-"))
    workdir.mkdir(parents=True, exist_ok=True)
    specs = [load_workload(p) for p in discover()]
    matrix = []
    for spec in specs:
        ref = WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
        for vid in version_ids():
            r = simulate(spec, vid)
            matrix.append((ref, vid, r.counters, r.modeled_ns))
    print(f"matrix: {len(specs)} workloads x {len(version_ids())} versions = {len(matrix)} results per night")
    rng = random.Random(1)
    start = dt.datetime(2026, 1, 1, 2, 0)

    db = workdir / "year.db"
    db.unlink(missing_ok=True)
    engine = open_store(str(db))
    ingest_times = []
    t_all = time.perf_counter()
    for night in range(args.nights):
        results = night_results(matrix, rng, args.processes, args.values)
        t0 = time.perf_counter()
        with write_session(engine) as s:
            ingest(s, run_record(night, start), results, registry_versions() if night == 0 else ())
        ingest_times.append(time.perf_counter() - t0)
    build_s = time.perf_counter() - t_all
    size_mb = sum(p.stat().st_size for p in workdir.glob("year.db*")) / 1e6
    print(
        f"year store: {args.nights} runs, {args.nights * len(matrix)} results, "
        f"{args.nights * len(matrix) * args.processes * args.values} raw values, "
        f"{args.nights * len(matrix) * 20} counters; built in {build_s:.1f} s"
    )
    print(
        f"  nightly ingest (one run of {len(matrix)} results): median {statistics.median(ingest_times) * 1e3:.0f} ms, "
        f"max {max(ingest_times) * 1e3:.0f} ms"
    )
    print(f"  database size: {size_mb:.1f} MB ({db})")

    with read_session(engine) as s:
        t_time, df = timed(
            lambda: queries.series_history(s, workload="a-munmap-aligned", version="up612", metric="time"),
            args.repeat,
        )
        t_ctr, _ = timed(
            lambda: queries.series_history(s, workload="a-munmap-aligned", version="up612", metric="ds_lock"),
            args.repeat,
        )
        last = queries.get_run(s).id
        t_cmp, res = timed(lambda: queries.run_results(s, last), args.repeat)
        t_vc, vc = timed(lambda: queries.version_comparison(s, last, "time"), args.repeat)
        t_smp, smp = timed(lambda: queries.run_samples(s, last), args.repeat)
        t_runs, _ = timed(lambda: queries.list_runs(s, 50), args.repeat)
    print(f"  series_history(time), {len(df)} rows: {t_time * 1e3:.1f} ms")  # type: ignore[arg-type]
    print(f"  series_history(counter ds_lock): {t_ctr * 1e3:.1f} ms")
    print(f"  run_results (one run, {len(res)} results, counters wide): {t_cmp * 1e3:.1f} ms")  # type: ignore[arg-type]
    print(f"  version_comparison (one run, time, {len(vc)} rows): {t_vc * 1e3:.1f} ms")  # type: ignore[arg-type]
    print(f"  run_samples (one run, {len(smp)} raw values): {t_smp * 1e3:.1f} ms")  # type: ignore[arg-type]
    print(f"  list_runs(50): {t_runs * 1e3:.1f} ms")
    engine.dispose()

    if args.long_series:
        db2 = workdir / "long.db"
        db2.unlink(missing_ok=True)
        engine = open_store(str(db2))
        one = [m for m in matrix if m[0].name == "a-munmap-aligned" and m[1] == "up612"]
        t0 = time.perf_counter()
        with write_session(engine) as s:
            for night in range(args.long_series):
                ingest(s, run_record(night, start), night_results(one, rng, args.processes, args.values))
        build2 = time.perf_counter() - t0
        with read_session(engine) as s:
            t_long, df = timed(
                lambda: queries.series_history(
                    s, workload="a-munmap-aligned", version="up612", metric="time"
                ),
                args.repeat,
            )
            t_long_c, _ = timed(
                lambda: queries.series_history(
                    s, workload="a-munmap-aligned", version="up612", metric="ds_lock"
                ),
                args.repeat,
            )
        print(f"long series store: {args.long_series} runs of one result, built in {build2:.1f} s")
        print(f"  series_history(time), {len(df)} rows: {t_long * 1e3:.1f} ms (target <= 50 ms)")  # type: ignore[arg-type]
        print(f"  series_history(counter ds_lock): {t_long_c * 1e3:.1f} ms")
        engine.dispose()
    print(f"kept in {workdir}" if args.keep else f"(temporary files in {workdir})")


if __name__ == "__main__":
    main()
