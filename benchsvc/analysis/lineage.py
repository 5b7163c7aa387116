"""Along the version lineage, within one run: each version against its parent (or a chosen base).

Counters and ``modeled_ns`` are exact: any difference is reported with its size, worse (more events, more
cost) or better. Timings: the effect is the ratio of means (version / baseline) with a 95% confidence
interval from a bootstrap over **worker processes** (pyperf's independent units: values inside one process
share its state, so resampling single values would understate the noise); it is significant only when the
interval excludes 1 and the effect is at least ``min_effect``. Fewer than two processes on a side give no
interval and never a significant timing change. Pure pandas/numpy: no database, no printing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

TIME_METRIC = "time"
DEFAULT_MIN_EFFECT = 0.03
DEFAULT_BOOTSTRAP = 2000
COLUMNS = [
    "engine",
    "workload",
    "workload_hash",
    "version",
    "baseline",
    "metric",
    "kind",
    "value",
    "baseline_value",
    "delta",
    "ratio",
    "ci_low",
    "ci_high",
    "significant",
    "direction",
]


def _seed(*parts: str) -> int:
    """A stable seed per comparison, so the same database gives the same intervals."""
    return int.from_bytes(hashlib.sha256("\0".join(parts).encode()).digest()[:8], "little")


def process_means(samples: pd.DataFrame) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """result_id -> (mean of each worker process, number of values of each process)."""
    if samples.empty:
        return {}
    g = samples.groupby(["result_id", "process"])["value_s"].agg(["mean", "count"]).reset_index()
    return {
        int(rid): (grp["mean"].to_numpy(float), grp["count"].to_numpy(float))
        for rid, grp in g.groupby("result_id")
    }


def bootstrap_ratio(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n_boot: int, seed: int
) -> tuple[float, float, float]:
    """Ratio of overall means a/b and its 95% percentile interval, resampling processes on each side."""
    (ma, na), (mb, nb) = a, b
    ratio = float(np.sum(ma * na) / np.sum(na)) / float(np.sum(mb * nb) / np.sum(nb))
    if len(ma) < 2 or len(mb) < 2:
        return ratio, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(ma), size=(n_boot, len(ma)))
    ib = rng.integers(0, len(mb), size=(n_boot, len(mb)))
    mean_a = np.sum(ma[ia] * na[ia], axis=1) / np.sum(na[ia], axis=1)
    mean_b = np.sum(mb[ib] * nb[ib], axis=1) / np.sum(nb[ib], axis=1)
    lo, hi = np.percentile(mean_a / mean_b, [2.5, 97.5])
    return ratio, float(lo), float(hi)


def compare_lineage(
    results: pd.DataFrame,
    samples: pd.DataFrame,
    *,
    base: str | None = None,
    metrics: Sequence[str] | None = None,
    min_effect: float = DEFAULT_MIN_EFFECT,
    n_boot: int = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame:
    """Compare each ok result of one run with its baseline on the same engine and workload.

    ``results``: :func:`benchsvc.store.queries.run_results` (counters as ``c_<name>`` columns);
    ``samples``: :func:`benchsvc.store.queries.run_samples`. ``base``: compare every other version with this
    one instead of with its parent. ``metrics``: default every counter, ``modeled_ns`` and ``time``."""
    ok = results[results["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=COLUMNS)
    counter_names = sorted(c[2:] for c in ok.columns if c.startswith("c_"))
    wanted = list(metrics) if metrics else [*counter_names, "modeled_ns", TIME_METRIC]
    by_key = {(r.engine, r.workload, r.version): r for r in ok.itertuples(index=False)}
    procs = process_means(samples) if TIME_METRIC in wanted else {}
    rows: list[dict[str, object]] = []
    for r in ok.itertuples(index=False):
        baseline_id = base if base is not None else r.parent
        if not isinstance(baseline_id, str) or baseline_id == r.version:
            continue
        b = by_key.get((r.engine, r.workload, baseline_id))
        if b is None or b.workload_hash != r.workload_hash:
            continue
        for metric in wanted:
            row: dict[str, object] = {
                "engine": r.engine,
                "workload": r.workload,
                "workload_hash": r.workload_hash,
                "version": r.version,
                "baseline": baseline_id,
                "metric": metric,
            }
            if metric == TIME_METRIC:
                pa, pb = procs.get(int(r.result_id)), procs.get(int(b.result_id))
                if pa is None or pb is None:
                    continue
                ratio, lo, hi = bootstrap_ratio(
                    pa, pb, n_boot, _seed(r.engine, r.workload, r.workload_hash, r.version, baseline_id)
                )
                excludes_one = bool(lo > 1.0 or hi < 1.0) if lo == lo else False
                significant = excludes_one and abs(ratio - 1.0) >= min_effect
                row.update(
                    kind="timing",
                    value=float(r.mean_s),
                    baseline_value=float(b.mean_s),
                    delta=float(r.mean_s) - float(b.mean_s),
                    ratio=ratio,
                    ci_low=lo,
                    ci_high=hi,
                    significant=significant,
                    direction=("worse" if ratio > 1 else "better") if significant else "same",
                )
            else:
                column = metric if metric == "modeled_ns" else f"c_{metric}"
                if column not in ok.columns:
                    continue
                value, base_value = getattr(r, column, None), getattr(b, column, None)
                if value is None or base_value is None or pd.isna(value) or pd.isna(base_value):
                    continue
                delta = value - base_value
                if base_value:
                    ratio = float(value) / float(base_value)
                else:
                    ratio = 1.0 if value == base_value else float("inf")
                row.update(
                    kind="exact",
                    value=value,
                    baseline_value=base_value,
                    delta=delta,
                    ratio=ratio,
                    ci_low=float("nan"),
                    ci_high=float("nan"),
                    significant=bool(delta != 0),
                    direction="worse" if delta > 0 else "better" if delta < 0 else "same",
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
