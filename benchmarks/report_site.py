"""Time the static report: the full site for ~10k results, the incremental update after one more night.

Builds a store of ``--nights`` nightly runs of the full shipped matrix (it prints the count: 180 results a
night at the time of writing, so 86 nights are 15,480 results; counters from real simulations, raw timings synthetic, as in store_year.py), analyses the
last night, then times ``benchsvc report`` (collect + build + write, in one process, as the command does) into
an empty directory, adds one more night (ingest + analysis, untimed), and times the report again into the same
directory. Prints the sizes: largest page, whole site. Targets: full site <= 10 s, one more night <= 2 s, each
page <= 5 MB, the whole site <= 30 MB.

    python benchmarks/report_site.py [--nights 86] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store_year import night_results, run_record

from benchsvc.engine import simulate
from benchsvc.engine.versions import version_ids
from benchsvc.findings import analyze_run
from benchsvc.records import WorkloadRef, utcnow
from benchsvc.report.collect import collect
from benchsvc.report.site import build_site, write_site
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.ingest import ingest, registry_versions
from benchsvc.workload import discover, load_workload


def report(engine: object, out: Path) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with read_session(engine) as s:  # type: ignore[arg-type]
        data = collect(s)
    written, unchanged = write_site(build_site(data, generated_at=utcnow().replace(microsecond=0)), out)
    return time.perf_counter() - t0, written, unchanged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nights", type=int, default=86)
    ap.add_argument("--keep", help="directory for the database and the site (default: temporary)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="benchsvc-report-"))
    matrix = []
    for spec in (load_workload(p) for p in discover()):
        ref = WorkloadRef(spec.name, spec.content_hash, spec.source_text, spec.description)
        for vid in version_ids():
            r = simulate(spec, vid)
            matrix.append((ref, vid, r.counters, r.modeled_ns))
    rng = random.Random(2)
    start = dt.datetime(2026, 1, 1, 2, 0)
    db = work / "report.db"
    db.unlink(missing_ok=True)
    engine = open_store(str(db))
    for night in range(args.nights):
        with write_session(engine) as s:
            ingest(
                s,
                run_record(night, start),
                night_results(matrix, rng, 20, 3),
                registry_versions() if night == 0 else (),
            )
    analyze_run(engine, args.nights)
    print(f"store: {args.nights} nights x {len(matrix)} results = {args.nights * len(matrix)} results")
    out = work / "site"
    full_s, written, _ = report(engine, out)
    print(
        f"full site (fresh process, incl. the one-time vl-convert bundle): {full_s:.2f} s, {written} files (target <= 10 s)"
    )
    with write_session(engine) as s:
        ingest(s, run_record(args.nights, start), night_results(matrix, rng, 20, 3))
    analyze_run(engine, args.nights + 1)
    inc_s, written, unchanged = report(engine, out)
    print(f"one more night: {inc_s:.2f} s, {written} files rewritten, {unchanged} unchanged (target <= 2 s)")
    again_s, written, unchanged = report(engine, out)
    print(
        f"same database again: {again_s:.2f} s, {written} rewritten (the generation time on the index), {unchanged} unchanged"
    )
    pages = sorted(out.rglob("*.html"), key=lambda p: p.stat().st_size)
    files = [p for p in out.rglob("*") if p.is_file()]
    assets = sum(p.stat().st_size for p in (out / "assets").rglob("*") if p.is_file())
    print(
        f"largest page: {pages[-1].relative_to(out)} {pages[-1].stat().st_size / 1e6:.2f} MB (target <= 5 MB); "
        f"site {sum(p.stat().st_size for p in files) / 1e6:.1f} MB in {len(files)} files (target <= 30 MB), "
        f"of which assets/ {assets / 1e6:.2f} MB (the chart JavaScript, once per site)"
    )
    print(f"site in {out}")


if __name__ == "__main__":
    main()
