"""The most memory ``benchsvc export`` takes for a large selection (issue 22: 30,000 results in <= 300 MB).

A SQLite store is bulk-loaded with nights of the default matrix (the loader of ``store_year.py``: 117 series a
night, ``--processes`` worker processes of ``--values`` values each, the shape of a default pyperf run), then
``benchsvc export`` runs in a child process, as JSON Lines and as CSV, ``--runs`` times each, and the child's
maximum resident set size (``getrusage(RUSAGE_CHILDREN)`` read in a fresh waiting process per export) and wall
time are printed with their medians. The export's output goes to a file in the work directory and its line
count is checked.

    python benchmarks/export_memory.py [--results 30000] [--processes 20] [--values 3] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MB = 300.0

#: run in a fresh interpreter: starts the export as its child and reports the child's maximum RSS
_MEASURE = """
import resource, subprocess, sys, time, json
t0 = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t0
print(json.dumps({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "wall": wall}))
"""


def build_store(db: Path, results: int, processes: int, values: int) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from store_year import bulk_load, default_matrix

    from benchsvc.store.db import open_store

    matrix = default_matrix()
    nights = -(-results // len(matrix))
    engine = open_store(f"sqlite:///{db}")
    try:
        bulk_load(
            engine, matrix, argparse.Namespace(machines=1, nights=nights, processes=processes, values=values)
        )
    finally:
        engine.dispose()
    return nights * len(matrix)


def measure(db: Path, fmt: str, out: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchsvc", "export", "--db", str(db), "--format", fmt, "-o", str(out)]
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
    got = json.loads(done.stdout)
    if got["rc"] != 0:
        raise SystemExit(f"export failed with exit code {got['rc']}")
    return {"mb": got["maxrss_kb"] / 1024, "wall": got["wall"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=int, default=30_000)
    ap.add_argument("--processes", type=int, default=20)
    ap.add_argument("--values", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="Work in this directory and keep the store.")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="export-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "store.db"
    t0 = time.perf_counter()
    if db.exists():
        from sqlalchemy import create_engine, text

        with create_engine(f"sqlite:///{db}").connect() as conn:
            n = int(conn.execute(text("SELECT count(*) FROM results")).scalar_one())
        print(f"store {db}: {n} results (kept from before)")
    else:
        n = build_store(db, args.results, args.processes, args.values)
        print(
            f"store {db}: {n} results, {args.processes} x {args.values} values each, {time.perf_counter() - t0:.0f} s"
        )
    print("(the machine is shared with other jobs: wall times are noisy, memory is not)")
    for fmt in ("jsonl", "csv"):
        out = work / f"export.{fmt}"
        runs = [measure(db, fmt, out) for _ in range(args.runs)]
        lines = sum(1 for _ in out.open("rb")) - (1 if fmt == "csv" else 0)
        if lines != n:
            raise SystemExit(f"export --format {fmt} wrote {lines} results, expected {n}")
        mb = statistics.median(r["mb"] for r in runs)
        verdict = "met" if mb <= TARGET_MB else "NOT met"
        each = ", ".join(f"{r['mb']:.0f}" for r in runs)
        print(
            f"export --format {fmt}: {n} results, max RSS median {mb:.0f} MB "
            f"(runs: {each}), wall median "
            f"{statistics.median(r['wall'] for r in runs):.1f} s; target <= {TARGET_MB:.0f} MB: {verdict}"
        )


if __name__ == "__main__":
    main()
