"""One series side by side across machines: each machine's own series, summarised over its recent nights, as a
ratio to a reference machine's. Nights of different machines are never spliced into one series."""

from __future__ import annotations

import pandas as pd

#: the columns of :func:`machine_ratios`
COLUMNS = (
    "workload_hash",
    "mode",
    "machine",
    "environment_fp",
    "nights",
    "last_night",
    "median",
    "ratio",
    "reference",
)


def machine_ratios(history: pd.DataFrame, *, last: int = 7, reference: str | None = None) -> pd.DataFrame:
    """``history`` (:func:`benchsvc.store.queries.series_history`, all machines) as one row per machine and
    comparable series (same workload content and mode): the median of its last ``last`` nights, and its
    ratio to the ``reference`` machine's (default: the first hostname in sorted order that has the series).

    A machine with several environments in one series keeps its latest one (a new environment starts a new
    series). ``ratio`` is NaN where the reference machine lacks the series."""
    if history.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    rows = []
    for (chash, mode), group in history.groupby(["workload_hash", "mode"], sort=True):
        latest: dict[str, pd.DataFrame] = {}
        for machine, nights in group.groupby("machine", sort=True):
            env = nights.sort_values(["started_at", "run_id"])["environment_fp"].iloc[-1]
            latest[str(machine)] = nights[nights["environment_fp"] == env].sort_values(
                ["started_at", "run_id"]
            )
        ref = reference if reference is not None else min(latest)
        base = float(latest[ref]["value"].tail(last).median()) if ref in latest else float("nan")
        for machine, nights in latest.items():
            recent = nights.tail(last)
            median = float(recent["value"].median())
            rows.append(
                {
                    "workload_hash": chash,
                    "mode": mode,
                    "machine": machine,
                    "environment_fp": nights["environment_fp"].iloc[-1],
                    "nights": len(nights),
                    "last_night": nights["started_at"].iloc[-1],
                    "median": median,
                    "ratio": median / base if base == base and base != 0 else float("nan"),
                    "reference": ref,
                }
            )
    return pd.DataFrame(rows, columns=list(COLUMNS))
