"""The nightly change-point detector: its speed against the 5 s target, and its measured quality.

Times :func:`benchsvc.analysis.changepoints.analyze_night` on 100 series x 1,000 nights (A/A series at 1.5%
noise, a few with a step in their last nights), median of ``--runs`` runs, against a target of 5 s. Then runs
the evaluation (:func:`benchsvc.analysis.evaluate.run_evaluation`, default scenarios and settings) and prints
its table with 95% Clopper-Pearson intervals, against the targets of ``docs/detection.md``.

Then the noise classes of real machines (:data:`benchsvc.analysis.evaluate.NOISE_CLASSES`: machine-wide
slow nights, heavy tails, single slow nights, bimodal levels, slow drift, correlated neighbours, and +5% steps
among them), each with its false alerts per series-night, machine events and power, with 95% intervals.

Each class is scored on three decision paths over the same simulated nights (``evaluate.PATHS``): without
confirmation, and with the run's re-measurement under the "levels" test (benchsvc run's) and the "halfstep" test.

    python benchmarks/detector_speed.py [--runs 5] [--trials 1000] [--class-trials 1000] [--seed 0] [--no-eval]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import pandas as pd

from benchsvc.analysis import changepoints as cp
from benchsvc.analysis import evaluate as ev

SERIES, NIGHTS, SPEED_TARGET_S = 100, 1000, 5.0


def _series(seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(SERIES):
        x = 1e-3 * (1.0 + rng.normal(0.0, 0.015, NIGHTS))
        if i % 10 == 0:  # every tenth series has a +5% step three nights ago
            x[-3:] *= 1.05
        out[i] = x
    return out


def _pct(v: float, digits: int = 1) -> str:
    return "-" if v != v else f"{v:.{digits}%}"


def _with_ci(row: pd.Series, rate: str, digits: int = 1) -> str:
    v = row[rate]
    if v != v:
        return "-"
    return f"{_pct(v, digits)} [{_pct(row[f'{rate}_low'], digits)}, {_pct(row[f'{rate}_high'], digits)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=ev.DEFAULT_TRIALS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--class-trials", type=int, default=1000, help="series per noise class")
    ap.add_argument("--no-eval", action="store_true", help="only time analyze_night")
    args = ap.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"
    )
    print(
        f"defaults: window={cp.DEFAULT_WINDOW} max_pvalue={cp.DEFAULT_MAX_PVALUE:g} "
        f"min_magnitude={cp.DEFAULT_MIN_MAGNITUDE:g} fdr={cp.DEFAULT_FDR:g} new_nights={cp.DEFAULT_NEW_NIGHTS} "
        f"min_nights_after={cp.DEFAULT_MIN_NIGHTS_AFTER} robust={cp.DEFAULT_SETTINGS.robust} "
        f"max_pvalue_confirmed={cp.DEFAULT_SETTINGS.max_pvalue_confirmed:g} "
        f"fdr_confirmed={cp.DEFAULT_SETTINGS.fdr_confirmed:g} "
        f"machine_factor={cp.DEFAULT_SETTINGS.machine_factor}"
    )
    series = _series(args.seed)
    times, found = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        found = cp.analyze_night(series)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    verdict = "meets" if med <= SPEED_TARGET_S else "MISSES"
    print(
        f"analyze_night, {SERIES} series x {NIGHTS} nights: median {med:.2f} s of {args.runs} runs "
        f"(min {min(times):.2f}, max {max(times):.2f}); target <= {SPEED_TARGET_S:.0f} s: {verdict}"
    )
    print(f"  alerts: {len(found)} (10 series carry a +5% step over their last 3 nights)")
    if args.no_eval:
        return

    t0 = time.perf_counter()
    table = ev.run_evaluation(trials=args.trials, seed=args.seed, paths=ev.PATHS)
    elapsed = time.perf_counter() - t0
    print(
        f"\nevaluation (python benchmarks/detector_speed.py --trials {args.trials} --seed {args.seed}): "
        f"{elapsed:.1f} s; A/A series {ev.DEFAULT_NIGHTS} nights scored after {ev.DEFAULT_WARMUP}, "
        f"step series {ev.DEFAULT_SCENARIOS[-1].history} nights before the step; "
        f"BH over nights of {ev.DEFAULT_SERIES_PER_NIGHT} series"
    )
    rows = []
    for _, r in table.iterrows():
        rows.append(
            {
                "scenario": r["name"],
                "confirmation": r["confirmation"],
                "trials": int(r["trials"]),
                "series-nights": int(r["series_nights"]) or "-",
                "false alarms / series-night": _with_ci(r, "false_alarm_rate", 3),
                "within 1": _with_ci(r, "power_1"),
                "within 3": _with_ci(r, "power_3"),
                "within 5": _with_ci(r, "power_5"),
                "exact night": _with_ci(r, "exact_night"),
                "CI covers": _with_ci(r, "ci_coverage"),
            }
        )
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False))
    print("\ntargets, point estimates:")
    for path in ev.PATHS:
        by = table[table["confirmation"] == path].set_index("name")
        checks = [
            (
                "A/A false alerts <= 0.1% per series-night",
                by.loc[["A/A 0.5%", "A/A 1.5%"], "false_alarm_rate"].max() <= 0.001,
            ),
            ("+5% at 1.5% found within 3 nights >= 90%", by.loc["+5% at 1.5%", "power_3"] >= 0.9),
            ("+2% at 0.5% found within 5 nights >= 90%", by.loc["+2% at 0.5%", "power_5"] >= 0.9),
            ("change night exact >= 80%", by.loc[["+5% at 1.5%", "+2% at 0.5%"], "exact_night"].min() >= 0.8),
        ]
        for text, ok in checks:
            print(f"  {'meets ' if ok else 'MISSES'}  {path}: {text}")

    t0 = time.perf_counter()
    classes = ev.run_evaluation(ev.NOISE_CLASSES, trials=args.class_trials, seed=args.seed, paths=ev.PATHS)
    print(
        f"\nnoise classes (--class-trials {args.class_trials} --seed {args.seed}): "
        f"{time.perf_counter() - t0:.1f} s; machines of {ev.DEFAULT_SERIES_PER_NIGHT} series; load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    print(
        "confirmation: none = benchsvc analyze / run --no-confirm; levels = benchsvc run (the re-measurement "
        "nearer to the new level than to the old one); halfstep = the re-measurement within half the step of "
        "tonight's value (an alternative test)"
    )
    rows = []
    for _, r in classes.iterrows():
        rows.append(
            {
                "class": r["name"],
                "confirmation": r["confirmation"],
                "series-nights": int(r["series_nights"]) or "-",
                "false alerts / series-night": _with_ci(r, "false_alarm_rate", 3),
                "machine events / night": _with_ci(r, "machine_event_rate", 3),
                "slow nights with event": _with_ci(r, "slow_night_events"),
                "slow nights alerted": int(r["slow_nights_alerted"]),
                "within 1": _with_ci(r, "power_1"),
                "within 3": _with_ci(r, "power_3"),
            }
        )
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(pd.DataFrame(rows).to_string(index=False))
    print(
        "\nclass targets (false alerts <= 0.1% per series-night, +5% within 3 nights >= 90%), point estimates:"
    )
    for path in ev.PATHS:
        sub = classes[classes["confirmation"] == path]
        aa = sub[sub["step"] == 0]
        bad = [
            f"{r['name']} {r['false_alarm_rate']:.3%}"
            for _, r in aa.iterrows()
            if r["false_alarm_rate"] > 0.001
        ]
        steps = sub[sub["step"] != 0]
        weak = [f"{r['name']} {r['power_3']:.1%}" for _, r in steps.iterrows() if r["power_3"] < 0.9]
        verdict = "meets " if not bad and not weak else "MISSES"
        print(
            f"  {verdict} {path}: false alerts over target: {bad or 'none'}; power under target: {weak or 'none'}"
        )


if __name__ == "__main__":
    main()
