"""The lineage A/A test: how wide and how honest the v3/v2 timing interval of ``benchsvc run`` is.

v3 runs exactly the same simulator code as v2, so every run holds a free A/A comparison per workload: its 95%
interval should contain 1 (no significant finding) and its half-width is the smallest timing effect the run
resolves. This script runs the real CLI ``benchsvc run`` N times (a fresh SQLite file per run, ``--no-report``)
in one mode and pairing, optionally with a bursty CPU-hog neighbour (its own process, alternating busy loops
of 50-500 ms and sleeps of 50-1000 ms of seeded random length, killed at the end), reads what each run stored
through the store API (``run_results``/``run_samples``, ``noise_floor``, ``compare_lineage``) and prints, per run
and overall: v3/v2 ratio and 95% half-width per workload, the median half-width over all workloads and runs,
how many A/A comparisons were significant (as recorded: after the run's confirmation re-measurement; and on
the first measurement alone), the wall time of each run and the load average around it.

    python benchmarks/aa_lineage.py --pairing duet --runs 3 --neighbour \\
        -w a-munmap-aligned -w c-straddle-munmap -w f-fork-child-munmap -w g-pte-mapped-thp

Timings are never asserted in tests; this script prints them (docs/measurement.md).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_WORKLOADS = ("a-munmap-aligned", "c-straddle-munmap", "f-fork-child-munmap", "g-pte-mapped-thp")


@dataclass(frozen=True)
class AAResult:
    """One workload's v3/v2 comparison in one run."""

    workload: str
    ratio: float
    half_width: float
    significant: bool
    primary_excludes_one: bool
    paired: bool


@dataclass(frozen=True)
class RunFigures:
    index: int
    wall_s: float
    load_before: float
    load_after: float
    rows: tuple[AAResult, ...]
    canary_cv: float


def hog(seed: int) -> None:
    """The bursty neighbour: busy for 50-500 ms, idle for 50-1000 ms, forever (until killed)."""
    rng = random.Random(seed)
    x = 0
    while True:
        end = time.perf_counter() + rng.uniform(0.05, 0.5)
        while time.perf_counter() < end:
            x = (x * 1103515245 + 12345) & 0xFFFFFFFF
        time.sleep(rng.uniform(0.05, 1.0))


def start_neighbour(seed: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--hog", str(seed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def read_run(db: Path) -> tuple[list[AAResult], float]:
    """The v3/v2 comparisons of the run stored in ``db`` and the canary's spread (store API only)."""
    from benchsvc.analysis.lineage import PRIMARY, compare_lineage
    from benchsvc.analysis.noise import AA_PAIR, noise_floor
    from benchsvc.store.db import open_store, read_session
    from benchsvc.store.queries import list_runs, run_results, run_samples

    engine = open_store(str(db))
    with read_session(engine) as s:
        run_id = int(list_runs(s, 1)["run_id"].iloc[0])
        results, samples = run_results(s, run_id), run_samples(s, run_id)
    floor = noise_floor(results, samples)
    pair = results[results["version"].isin(AA_PAIR) & (results["engine"] == "sim")]
    aa = compare_lineage(pair, samples, base=AA_PAIR[1], metrics=["time"])
    aa = aa[aa["version"] == AA_PAIR[0]]
    primary = samples[samples["phase"].fillna(PRIMARY) == PRIMARY]
    first = compare_lineage(pair, primary, base=AA_PAIR[1], metrics=["time"])
    first = first[first["version"] == AA_PAIR[0]].set_index("workload")
    rows = []
    for r in aa.itertuples(index=False):
        f = first.loc[r.workload]
        rows.append(
            AAResult(
                workload=str(r.workload),
                ratio=float(r.ratio),
                half_width=float((r.ci_high - r.ci_low) / 2 / r.ratio),
                significant=bool(r.significant),
                primary_excludes_one=bool(f["ci_low"] > 1.0 or f["ci_high"] < 1.0),
                paired=bool(r.paired),
            )
        )
    return rows, floor.canary_cv


def one_run(index: int, workdir: Path, args: argparse.Namespace, pairing: str, neighbour: bool) -> RunFigures:
    """One ``benchsvc run`` into a fresh SQLite file, with the neighbour running around it when asked."""
    db = workdir / f"{pairing}-{'hog' if neighbour else 'quiet'}-{index}.db"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "benchsvc", "run", "--mode", args.mode, "--pairing", pairing]
    cmd += ["--no-report", "--quiet", "--db", str(db)]
    for w in args.workloads or DEFAULT_WORKLOADS:
        cmd += ["-w", w]
    if args.versions:
        cmd += ["-V", args.versions]
    hog_proc = start_neighbour(args.seed + index) if neighbour else None
    try:
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, check=False)
        wall = time.monotonic() - t0
        load_after = os.getloadavg()[0]
    finally:
        if hog_proc is not None:
            os.killpg(hog_proc.pid, signal.SIGKILL)
            hog_proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"benchsvc run failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    rows, canary_cv = read_run(db)
    return RunFigures(index, wall, load_before, load_after, tuple(rows), canary_cv)


def summary(label: str, figures: list[RunFigures]) -> str:
    rows = [r for f in figures for r in f.rows]
    if not rows:
        return f"{label}: no A/A comparison (are v2 and v3 both selected?)"
    half = [r.half_width for r in rows]
    return (
        f"{label}: {len(figures)} runs, {len(rows)} A/A comparisons; median half-width "
        f"±{statistics.median(half):.2%} (max ±{max(half):.2%}); {sum(r.significant for r in rows)} "
        f"significant as recorded, {sum(r.primary_excludes_one for r in rows)} with the first measurement's "
        f"interval excluding 1; median |ratio-1| {statistics.median(abs(r.ratio - 1) for r in rows):.2%}; "
        f"wall {statistics.fmean(f.wall_s for f in figures):.1f} s per run; load average "
        f"{min(min(f.load_before, f.load_after) for f in figures):.2f}-"
        f"{max(max(f.load_before, f.load_after) for f in figures):.2f}"
    )


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--hog":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        hog(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs of each configuration")
    ap.add_argument("--mode", default="default")
    ap.add_argument("--pairing", default="interleaved", help="interleaved, duet, or both: interleaved,duet")
    ap.add_argument(
        "-w", "--workload", dest="workloads", action="append", help="repeat (default: 4 workloads)"
    )
    ap.add_argument("-V", "--versions", help="comma list passed to benchsvc run -V (default: all versions)")
    ap.add_argument(
        "--neighbour",
        default="off",
        help="the bursty CPU-hog neighbour during the runs: off, on, or both: off,on",
    )
    ap.add_argument("--seed", type=int, default=12, help="seed of the neighbour's bursts and the run order")
    ap.add_argument("--keep", help="directory for the databases (default: temporary)")
    args = ap.parse_args()
    pairings = args.pairing.split(",")
    hogs = [{"off": False, "on": True}[n] for n in args.neighbour.split(",")]
    configs = [(p, h) for p in pairings for h in hogs]
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="benchsvc-aa-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"A/A v3/v2, mode {args.mode}, {os.cpu_count()} CPUs: {args.runs} rounds, each running every "
        f"configuration once in a random order: {', '.join(_label(*c) for c in configs)}"
    )
    rng = random.Random(args.seed)
    figures: dict[tuple[str, bool], list[RunFigures]] = {c: [] for c in configs}
    for i in range(args.runs):
        order = configs[:]
        rng.shuffle(order)
        for pairing, neighbour in order:
            f = one_run(i + 1, workdir, args, pairing, neighbour)
            figures[pairing, neighbour].append(f)
            print(
                f"{_label(pairing, neighbour)} run {f.index}: wall {f.wall_s:.1f} s, load average "
                f"{f.load_before:.2f} -> {f.load_after:.2f}, canary spread {f.canary_cv:.1%}"
            )
            for r in f.rows:
                flag = (
                    " SIGNIFICANT"
                    if r.significant
                    else (" (first measurement only)" if r.primary_excludes_one else "")
                )
                print(
                    f"  {r.workload:24s} v3/v2 {r.ratio:.4f} ±{r.half_width:.2%}"
                    f"{'' if r.paired else ' unpaired'}{flag}",
                    flush=True,
                )
    for config in configs:
        print(summary(_label(*config), figures[config]))


def _label(pairing: str, neighbour: bool) -> str:
    return f"{pairing}, neighbour {'on' if neighbour else 'off'}"


if __name__ == "__main__":
    main()
