"""How well the calibrated cost model predicts the live kernel on layouts outside its suite (issue 19).

Calibrates (suite measured and fitted, timed), then measures the hold-out layouts (other folio sizes,
region sizes, offsets; PMD-mapped 2 MiB THPs) and compares each layout's measured median CPU time with the
calibrated ``modeled_ns`` of the version that models the running kernel: the machine factor (median of
measured / predicted), and the relative errors after it (median, worst). The reference model's numbers are
printed beside them. ``--repeat N`` does it N times and prints the median of each figure.

    sudo .venv/bin/python benchmarks/calibration_holdout.py [--rounds 9] [--repeat 3]

Needs root and a kernel with per-size mTHP (the same as ``benchsvc calibrate``). Quote ``uptime``: the
machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from benchsvc.calibration import DEFAULT_ROUNDS, calibrate, holdout, measure, predicted_vs_measured
from benchsvc.engine.cost import CostModel


def errors(rows: list[tuple[str, float, float]]) -> tuple[float, float, float, float, float]:
    """factor, median and worst relative error after the factor, median and worst before it."""
    factor = statistics.median(meas / pred for _, pred, meas in rows)
    after = [abs(pred * factor / meas - 1) for _, pred, meas in rows]
    before = [abs(pred / meas - 1) for _, pred, meas in rows]
    return factor, statistics.median(after), max(after), statistics.median(before), max(before)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="print every hold-out layout")
    args = ap.parse_args()
    specs = holdout()
    figures: list[dict[str, float]] = []
    for i in range(args.repeat):
        print(f"# repeat {i + 1}/{args.repeat}; load average {os.getloadavg()}")
        t0 = time.monotonic()
        cal = calibrate(rounds=args.rounds)
        secs = time.monotonic() - t0
        m = measure(specs, rounds=args.rounds, seed=1 + i)
        rows = predicted_vs_measured(cal.model, specs, m, cal.version)
        ref = predicted_vs_measured(CostModel.default(), specs, m, cal.version)
        f, med, worst, med0, worst0 = errors(rows)
        rf, rmed, rworst, _, _ = errors(ref)
        figures.append(
            {
                "calibration_s": secs,
                "factor": f,
                "median": med,
                "worst": worst,
                "median_no_factor": med0,
                "worst_no_factor": worst0,
                "loo_median": cal.fit.holdout_median,
                "loo_worst": cal.fit.holdout_worst,
                "ref_factor": rf,
                "ref_median": rmed,
                "ref_worst": rworst,
            }
        )
        print(
            f"calibration {secs:.0f} s ({len(cal.fit.holdout_errors)} layouts, leave-one-out "
            f"{cal.fit.holdout_median:.1%} median / {cal.fit.holdout_worst:.1%} worst); hold-out "
            f"{len(rows)} layouts ({len(m.failures)} not reproduced): factor {f:.3f}, {med:.1%} median / "
            f"{worst:.1%} worst after it ({med0:.1%} / {worst0:.1%} without); reference model: factor "
            f"{rf:.2f}, {rmed:.1%} / {rworst:.1%}"
        )
        if args.verbose:
            for name, pred, meas in sorted(rows, key=lambda r: -abs(r[1] * f / r[2] - 1)):
                print(f"  {name:50s} measured {meas / 1000:9.1f} us  predicted {pred * f / 1000:9.1f} us")
    if args.repeat > 1:
        print("# medians over the repeats")
        for key in figures[0]:
            print(f"{key}: {statistics.median(d[key] for d in figures):.4g}")


if __name__ == "__main__":
    main()
