"""Nightly detection on this machine's real noise: unchanged runs, steps written in, imported back, analysed.

    python benchmarks/real_noise.py [--runs 12] [--mode quick] [--dir DIR] [--step10 10] [--step5 10]
                                    [--step-nights 3] [--seed 0] [--code-change] [-w WORKLOAD ...]

1. Makes (or reuses, in DIR/history.db) a history of ``--runs`` consecutive unchanged ``benchsvc run`` runs
   of the shipped matrix on this machine (real CLI, real worker processes, real SQLite file).
2. Exports it (``benchsvc export``), writes a +10% step into ``--step10`` randomly chosen simulated series and a
   +5% step into ``--step5`` others, over their last ``--step-nights`` nights (every raw value of those
   results multiplied), and imports the result into an empty database (``benchsvc import``).
3. Analyses every imported run in night order (``benchsvc analyze``) and reads what was recorded
   (``benchsvc regressions --axis nightly --all -f json``, ``--axis machine``).
4. Prints this machine's night-to-night noise (per series, and after the machine factor), the machine factor
   of each night, how many +10% and +5% steps were found within the step's nights, and every alert in a series
   that had no step (false alerts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCHSVC = (sys.executable, "-m", "benchsvc")


def cli(*args: str, db: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run([*BENCHSVC, *args, "--db", str(db)], capture_output=True, text=True, timeout=3600)
    if check and cp.returncode not in (0,):
        raise SystemExit(f"benchsvc {' '.join(args)} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


def complete_runs(db: Path) -> int:
    if not db.exists():
        return 0
    rows = json.loads(cli("runs", "-n", "1000", "-f", "json", db=db).stdout)
    return sum(r["status"] == "complete" for r in rows)


def make_history(db: Path, runs: int, mode: str, workloads: list[str]) -> None:
    have = complete_runs(db)
    selection = [a for w in workloads for a in ("-w", w)]
    for i in range(have, runs):
        t0 = time.monotonic()
        # --wait: on a shared machine another run may hold the machine lock; wait for it rather than fail
        cli(
            "run",
            f"--mode={mode}",
            "--no-report",
            "--quiet",
            "--wait",
            "--trigger",
            "nightly",
            *selection,
            db=db,
        )
        print(f"history run {i + 1}/{runs}: {time.monotonic() - t0:.0f} s", flush=True)


def series_key(line: dict) -> tuple[str, str, str]:
    return (line["engine"], line["version"]["id"], line["workload"]["name"])


def inject(
    lines: list[dict], step10: int, step5: int, nights: int, rng: np.random.Generator, code_change: bool
) -> dict:
    """Multiply the raw values of the chosen series' last ``nights`` runs; returns {series: (factor, runs)}.

    With ``code_change`` those runs also carry another engine-code hash (every result of them), as a commit
    that slowed the chosen versions would: the nightly analysis then sees the step at a change of code."""
    runs = sorted({line["run"]["started_at"] for line in lines})
    last = set(runs[-nights:])
    if code_change:
        for line in lines:
            if line["run"]["started_at"] in last:
                line["pyperf_metadata"]["benchsvc_engine_hash"] = "5" * 64
    keys = sorted({series_key(line) for line in lines if line["engine"] == "sim" and line["status"] == "ok"})
    chosen = rng.choice(len(keys), size=step10 + step5, replace=False)
    steps = {keys[i]: (1.10 if n < step10 else 1.05) for n, i in enumerate(chosen)}
    for line in lines:
        factor = steps.get(series_key(line))
        if factor is None or line["run"]["started_at"] not in last:
            continue
        for proc in line["processes"]:
            proc["values"] = [v * factor for v in proc["values"]]
            proc["warmups"] = [v * factor for v in proc["warmups"]]
    return {k: (f, runs[-nights:]) for k, f in steps.items()}


def night_noise(lines: list[dict]) -> tuple[float, float, list[float]]:
    """Median over series of the night-to-night spread (sd of log means), before and after dividing each
    night by its machine factor (median over series of the night's log deviation); the factors."""
    by: dict[tuple[str, str, str], dict[str, float]] = {}
    for line in lines:
        if line["engine"] != "sim" or line["status"] != "ok":
            continue
        vals = [v for p in line["processes"] for v in p["values"]]
        by.setdefault(series_key(line), {})[line["run"]["started_at"]] = float(np.mean(vals))
    nights = sorted({n for s in by.values() for n in s})
    m = np.array([[np.log(s.get(n, np.nan)) for n in nights] for s in by.values()])
    dev = m - np.nanmedian(m, axis=1, keepdims=True)
    factor = np.nanmedian(dev, axis=0)
    raw = np.nanmedian(np.nanstd(dev, axis=1, ddof=1))
    adjusted = np.nanmedian(np.nanstd(dev - factor, axis=1, ddof=1))
    return float(raw), float(adjusted), [float(np.expm1(f)) for f in factor]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--mode", default="quick")
    ap.add_argument("--dir", type=Path, default=Path("real-noise"))
    ap.add_argument("--step10", type=int, default=10)
    ap.add_argument("--step5", type=int, default=10)
    ap.add_argument("--step-nights", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "-w", "--workload", action="append", help="only these workloads (repeat; default: the shipped matrix)"
    )
    ap.add_argument(
        "--code-change",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the step nights carry another engine-code hash, as a commit that slowed the versions would",
    )
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    history = args.dir / "history.db"
    make_history(history, args.runs, args.mode, args.workload or [])

    exported = args.dir / "history.jsonl"
    cli("export", "-o", str(exported), db=history)
    lines = [json.loads(x) for x in exported.read_text().splitlines() if x.strip()]
    raw, adjusted, factors = night_noise(lines)
    print(f"\n{len({x['run']['uuid'] for x in lines})} runs, {len(lines)} results")
    print(
        f"night-to-night spread per series (median over series): {raw:.2%}; after the machine factor {adjusted:.2%}"
    )
    print("machine factor per night: " + " ".join(f"{f:+.1%}" for f in factors))

    rng = np.random.default_rng(args.seed)
    steps = inject(lines, args.step10, args.step5, args.step_nights, rng, args.code_change)
    print(
        "steps written "
        + (
            "with a change of the engine code at the first step night"
            if args.code_change
            else "without a code change"
        )
    )
    injected = args.dir / "injected.jsonl"
    injected.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    target = args.dir / "injected.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    cli("import", str(injected), db=target)
    t0 = time.monotonic()
    cli("analyze", db=target)
    analyse_s = time.monotonic() - t0
    found = json.loads(cli("regressions", "--axis", "nightly", "--all", "-f", "json", db=target).stdout)
    machine = json.loads(cli("regressions", "--axis", "machine", "--all", "-f", "json", db=target).stdout)
    timing = [r for r in found if r["metric"] == "time"]

    hit = {1.10: 0, 1.05: 0}
    total = {1.10: 0, 1.05: 0}
    false_alerts = []
    missed: list[str] = []
    for r in timing:
        key = ("sim", r["version"], r["workload"])  # the canary and the kernel are not stepped
        if key in steps:
            continue
        false_alerts.append(r)
    for key, (factor, step_nights) in steps.items():
        total[factor] += 1
        minutes = {n.replace("T", " ")[:16] for n in step_nights}  # regressions print the night to the minute
        mine = [
            r
            for r in timing
            if ("sim", r["version"], r["workload"]) == key
            and r["direction"] == "worse"
            and r["started_at"] in minutes
        ]
        if mine:
            hit[factor] += 1
        else:
            missed.append(f"{key[1]}/{key[2]} +{factor - 1:.0%}")
    series = len({series_key(x) for x in lines if x["engine"] == "sim"})
    print(f"\nanalysed in {analyse_s:.1f} s; {len(machine)} machine events")
    for factor in (1.10, 1.05):
        if total[factor]:
            print(
                f"+{factor - 1:.0%} steps over the last {args.step_nights} nights: {hit[factor]}/{total[factor]} "
                f"found ({hit[factor] / total[factor]:.0%})"
            )
    for m in missed:
        print(f"  missed: {m}")
    nights_checked = series * args.runs - sum(1 for _ in steps) * args.step_nights
    print(f"alerts in series without a step: {len(false_alerts)} over {series} series x {args.runs} nights")
    for r in false_alerts:
        print(f"  false alert: {r['version']}/{r['workload']} {r['direction']} {r.get('size')}")
    print(f"(series-nights without a step: {nights_checked})")


if __name__ == "__main__":
    main()
