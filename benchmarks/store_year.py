"""Build a store holding a year of nightly runs of the full matrix and time the queries users make.

Two parts.

``--machines N`` (the fleet, default 10): a year of N machines x the default matrix (117 series: every
shipped workload not tagged large/oracle x 9 versions, about 430,000 results for 10 machines), in SQLite and
in PostgreSQL (``--pg-url``, else a throwaway server as the tests start one; ``--backend`` picks). The year
is bulk-loaded with SQLAlchemy Core (the same rows the store's ingest writes: values per worker process,
counters, the summaries; ORM ingest of 4,000 nights would take an hour), then the script times:

* one series' history (``series_history``, time metric), of one machine and of all of them, target
  <= 50 ms;
* the full report (``report.collect`` + ``build_site`` + ``write_site``), target <= 30 s;
* one more night: one machine's night exported as JSON Lines and imported (``read_import_file`` +
  ``store_batch``, target <= 2 s), its analysis (``analyze_run``), and the report after it (target <= 5 s).

The single-machine part (``--machines 0 --nights 365``, the former default of this script) ingests through
the store's ORM API and times series_history, run_results, version_comparison, run_samples and list_runs;
``--long-series`` nights of one result measure a 10k-night series.

    python benchmarks/store_year.py [--machines 10] [--nights 365] [--backend sqlite|postgresql|both]
                                    [--pg-url URL] [--processes 6] [--values 6] [--keep DIR]
    python benchmarks/store_year.py --machines 0 [--nights 365] [--long-series 10000]
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
from typing import Any

from sqlalchemy import func, select

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
from benchsvc.store.models import Run
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
    ap.add_argument(
        "--machines", type=int, default=10, help="the fleet's machines (0: the single-machine part)"
    )
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--pg-url", help="a PostgreSQL database to fill (default: a throwaway server)")
    ap.add_argument("--nights", type=int, default=365)
    ap.add_argument("--long-series", type=int, default=10_000, help="nights of the single-series store")
    ap.add_argument("--processes", type=int, default=None, help="worker processes per result (6; 20 single)")
    ap.add_argument("--values", type=int, default=None, help="values per process (6; 3 single)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--keep", help="directory to keep the databases in (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="time a store kept earlier (--keep, --pg-url) again")
    args = ap.parse_args()
    if args.machines > 0:
        args.processes = args.processes or 6
        args.values = args.values or 6
        fleet(args)
    else:
        args.processes = args.processes or 20
        args.values = args.values or 3
        single(args)


def single(args: argparse.Namespace) -> None:
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


# --- the fleet: N machines, bulk-loaded ----------------------------------------------------------------------

FLEET_ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0", "numpy": "2.4.6"})
SERIES_WORKLOAD, SERIES_VERSION = "a-munmap-aligned", "up612"


def fleet_machine(i: int) -> MachineInfo:
    arch = "aarch64" if i % 3 == 2 else "x86_64"
    return MachineInfo(f"bench-{i + 1:02d}", f"synthetic {arch} cpu", 4 + 4 * (i % 4), "6.18.44", arch)


def default_matrix() -> list[tuple[WorkloadRef, str, dict[str, int], float]]:
    """The default matrix of benchsvc run: every shipped workload not tagged large/oracle x every version."""
    from benchsvc.workload import OPT_IN_TAGS

    specs = [load_workload(p) for p in discover()]
    specs = [s for s in specs if not set(OPT_IN_TAGS) & set(s.tags)]
    matrix = []
    for spec in specs:
        ref = WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
        for vid in version_ids():
            r = simulate(spec, vid)
            matrix.append((ref, vid, r.counters, r.modeled_ns))
    return matrix


def fleet_night(
    machine: int,
    night: int,
    matrix: list[tuple[WorkloadRef, str, dict[str, int], float]],
    args: Any,
    rng: random.Random,
) -> tuple[RunRecord, list[ResultRecord]]:
    """One machine's night as the runner would record it (synthetic timings)."""
    start = dt.datetime(2026, 1, 1, 2, 0) + dt.timedelta(days=night, minutes=3 * machine)
    record = RunRecord(
        uuid=str(uuid.UUID(int=(machine + 1) << 32 | (night + 1))),
        started_at=start,
        finished_at=start + dt.timedelta(minutes=14),
        machine=fleet_machine(machine),
        environment=FLEET_ENV,
        benchsvc_version="0.1.0",
        git_commit=f"{night:040x}",
        mode="default",
        trigger="nightly",
        pyperf_settings={"measurement": "interleaved"},
        status="complete",
    )
    speed = 1 + 0.15 * machine
    results = []
    for ref, vid, counters, modeled in matrix:
        base = modeled / 1e9 * 3 * speed * (1 + rng.gauss(0, 0.01))
        procs = tuple(
            ProcessValues(
                tuple(base * (1 + rng.gauss(0, 0.02)) for _ in range(args.values)), (base * 1.1,), 1
            )
            for _ in range(args.processes)
        )
        results.append(
            ResultRecord(
                "sim",
                vid,
                ref,
                counters=counters,
                modeled_ns=modeled,
                processes=procs,
                started_at=start,
                finished_at=start,
            )
        )
    return record, results


def bulk_load(engine: Any, matrix: list[Any], args: Any) -> float:
    """The year of every machine, in Core inserts of ~10 nights each; returns the seconds it took."""
    import statistics as st

    from sqlalchemy import insert

    from benchsvc.store.ingest import get_or_create_environment, get_or_create_machine, get_or_create_workload
    from benchsvc.store.models import Counter, Result, Run, Sample

    with write_session(engine) as s:
        for info in registry_versions():
            from benchsvc.store.ingest import upsert_version

            upsert_version(s, info)
        machine_ids = [get_or_create_machine(s, fleet_machine(m)).id for m in range(args.machines)]
        env_id = get_or_create_environment(s, FLEET_ENV).id
        workload_ids = {ref.content_hash: get_or_create_workload(s, ref).id for ref, *_ in matrix}
    rng = random.Random(1)
    run_id = result_id = 0
    t0 = time.perf_counter()
    chunk = 10
    for first in range(0, args.nights, chunk):
        runs, results, samples, counters = [], [], [], []
        for night in range(first, min(first + chunk, args.nights)):
            for m in range(args.machines):
                record, records = fleet_night(m, night, matrix, args, rng)
                run_id += 1
                runs.append(
                    dict(
                        id=run_id, uuid=record.uuid, machine_id=machine_ids[m], environment_id=env_id,
                        benchsvc_version=record.benchsvc_version, git_commit=record.git_commit, mode=record.mode,
                        trigger=record.trigger, pyperf_settings=record.pyperf_settings, plan=None,
                        status=record.status, started_at=record.started_at, finished_at=record.finished_at,
                    )
                )  # fmt: skip
                for r in records:
                    result_id += 1
                    values = r.values
                    results.append(
                        dict(
                            id=result_id, run_id=run_id, engine=r.engine, version_id=r.version,
                            workload_id=workload_ids[r.workload.content_hash], status="ok", error=None,
                            modeled_ns=r.modeled_ns, n_values=len(values), mean_s=st.fmean(values),
                            median_s=st.median(values), stdev_s=st.stdev(values), min_s=min(values),
                            max_s=max(values), warnings=[], pyperf_metadata={}, started_at=r.started_at,
                            finished_at=r.finished_at,
                        )
                    )  # fmt: skip
                    samples.extend(
                        dict(result_id=result_id, process=i, loops=p.loops, values=list(p.values),
                             warmups=list(p.warmups), meta=None)
                        for i, p in enumerate(r.processes)
                    )  # fmt: skip
                    counters.extend(
                        dict(result_id=result_id, name=k, value=int(v)) for k, v in r.counters.items()
                    )
        with engine.begin() as conn:
            for table, rows in ((Run, runs), (Result, results), (Sample, samples), (Counter, counters)):
                conn.execute(insert(table.__table__), rows)
        if engine.dialect.name == "postgresql":
            with engine.begin() as conn:  # explicit ids: move the sequences past them
                for table, last in (("runs", run_id), ("results", result_id)):
                    conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {last})")
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - t0


def report_s(engine: Any, out: Path) -> tuple[float, dict[str, float]]:
    """The full report: collect, build, write; the seconds of each step."""
    from benchsvc.report.collect import collect
    from benchsvc.report.site import build_site, write_site

    parts = {}
    t0 = time.perf_counter()
    with read_session(engine) as s:
        data = collect(s)
    parts["collect"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    files = build_site(data, generated_at=dt.datetime(2027, 1, 1))
    parts["build"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    write_site(files, out, "--out")
    parts["write"] = time.perf_counter() - t2
    return time.perf_counter() - t0, parts


def fleet_backend(url: str, label: str, matrix: list[Any], args: Any, workdir: Path) -> None:
    from benchsvc.findings import analyze_run
    from benchsvc.store.exchange import (
        ExportFilter,
        PyperfDefaults,
        export_jsonl,
        read_import_file,
        store_batch,
    )

    engine = open_store(url)
    with read_session(engine) as s:
        filled = s.scalar(select(func.count()).select_from(Run))
    # a store kept earlier is timed again as it is (its build was measured when it was built)
    build = float("nan") if args.reuse and filled else bulk_load(engine, matrix, args)
    n_results = args.machines * args.nights * len(matrix)
    print(
        f"{label}: {args.machines} machines x {args.nights} nights x {len(matrix)} series = {n_results} results, "
        f"{n_results * args.processes * args.values} raw values; bulk-loaded in {build:.0f} s"
    )
    host = fleet_machine(min(2, args.machines - 1)).hostname
    with read_session(engine) as s:
        t_one, df1 = timed(
            lambda: queries.series_history(
                s, workload=SERIES_WORKLOAD, version=SERIES_VERSION, metric="time", machine=host
            ),
            args.repeat,
        )
        t_all, df_all = timed(
            lambda: queries.series_history(
                s, workload=SERIES_WORKLOAD, version=SERIES_VERSION, metric="time"
            ),
            args.repeat,
        )
        t_runs, _ = timed(lambda: queries.list_runs(s, 50), args.repeat)
    print(f"  series history, one machine ({len(df1)} nights): {t_one * 1e3:.1f} ms (target <= 50 ms)")  # type: ignore[arg-type]
    print(f"  series history, all machines ({len(df_all)} rows): {t_all * 1e3:.1f} ms")  # type: ignore[arg-type]
    print(f"  list_runs(50): {t_runs * 1e3:.1f} ms")
    full, parts = report_s(engine, workdir / f"site-{label}")
    print(
        f"  full report: {full:.1f} s (target <= 30 s): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
    )

    # one more night of one machine, from another store's export, as the import route brings it
    night_db = workdir / f"night-{label}.db"
    night_db.unlink(missing_ok=True)
    small = open_store(str(night_db))
    record, records = fleet_night(0, args.nights, matrix, args, random.Random(2))
    with write_session(small) as s:
        ingest(s, record, records, registry_versions())
    path = workdir / f"night-{label}.jsonl"
    with read_session(small) as s, path.open("w") as out:
        export_jsonl(s, ExportFilter(), out)
    small.dispose()
    t0 = time.perf_counter()
    batch = read_import_file(path, PyperfDefaults())
    with write_session(engine) as s:
        counts = store_batch(s, batch)
    t_import = time.perf_counter() - t0
    with read_session(engine) as s:
        new_run = queries.get_run(s, record.uuid).id
    t1 = time.perf_counter()
    analyze_run(engine, new_run)
    t_analyse = time.perf_counter() - t1
    print(f"  import of one machine's night ({counts.added} results): {t_import:.2f} s (target <= 2 s)")
    print(f"  its analysis (analyze_run, as benchsvc import does): {t_analyse:.2f} s")
    again, parts = report_s(engine, workdir / f"site-{label}")
    print(
        f"  report after one more night: {again:.1f} s (target <= 5 s): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items())
    )
    engine.dispose()


def fleet(args: argparse.Namespace) -> None:
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="benchsvc-fleet-"))
    workdir.mkdir(parents=True, exist_ok=True)
    matrix = default_matrix()
    print(
        f"matrix: {len(matrix)} series per machine and night; {args.processes} processes x {args.values} values"
    )
    if args.backend in ("sqlite", "both"):
        db = workdir / "fleet.db"
        for p in workdir.glob("fleet.db*") if not args.reuse else ():
            p.unlink()
        fleet_backend(f"sqlite:///{db}", "sqlite", matrix, args, workdir)
        print(f"  database size: {sum(p.stat().st_size for p in workdir.glob('fleet.db*')) / 1e6:.0f} MB")
    if args.backend in ("postgresql", "both"):
        if args.pg_url:
            fleet_backend(args.pg_url, "postgresql", matrix, args, workdir)
        else:
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            import pg  # the tests' throwaway server

            with pg.throwaway_server() as server:
                fleet_backend(server.create_database(), "postgresql", matrix, args, workdir)
    print(f"kept in {workdir}" if args.keep else f"(temporary files in {workdir})")


if __name__ == "__main__":
    main()
