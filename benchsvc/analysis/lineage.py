"""Along the version lineage, within one run: each version against its parent (or a chosen base).

Counters and ``modeled_ns`` are exact: any difference is reported with its size, worse (more events, more
cost) or better. Timings: the effect is a ratio (version / baseline) with a 95% confidence interval whose
independent units are **worker processes** (values inside one process share its state, so treating single
values as independent would understate the noise). It is significant only when the interval excludes 1 and
the effect is at least ``min_effect``.

* **Paired** (both results measured in the same measurement blocks, as ``benchsvc run`` does): value ``j`` of
  process ``k`` of the two versions were measured in the same trial -- interleaved call by call in random
  order, or at the same moment on two CPUs (``--pairing duet``). Each process gives the median of its
  per-trial log ratios (a burst that hits one trial does not move it); the ratio is the exponential of the
  mean over processes, with a Student-t interval over processes. A duet result holds the processes of every
  lineage edge its version takes part in; two results are paired on the processes they share.
* **Unpaired** (imported results, older runs): the ratio of means with a bootstrap over processes.

When the run re-measured a cell to confirm a finding (processes of phase ``confirm``), the confirmation's
ratio and interval are computed the same way from those processes alone, and a timing change counts as
significant only when the confirmation's interval also excludes 1 on the same side.
A timing comparison is ``settled`` (no change, conclusively) when its interval lies within the minimum
effect; an open finding is marked fixed only then, not on a night whose interval is merely too wide to
call it. Fewer than two processes on a side give no interval and never a significant timing change. Pure
pandas/numpy/scipy: no database, no printing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

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
    "paired",
    "confirm_ratio",
    "confirm_low",
    "confirm_high",
    "confirmed",
    "settled",
]
PRIMARY = "primary"
CONFIRM = "confirm"
CI_LEVEL = 0.95


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


@dataclass(frozen=True)
class TimingEffect:
    """A timing ratio (version / baseline) with its 95% interval; ``paired`` when measured side by side."""

    ratio: float
    ci_low: float
    ci_high: float
    paired: bool
    units: int

    @property
    def has_interval(self) -> bool:
        return bool(np.isfinite(self.ci_low) and np.isfinite(self.ci_high))

    def excludes_one(self) -> bool:
        return self.has_interval and (self.ci_low > 1.0 or self.ci_high < 1.0)

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to the ratio (0.02 = ±2%); NaN without an interval."""
        return (self.ci_high - self.ci_low) / 2 / self.ratio if self.has_interval else float("nan")


def _with_unit(samples: pd.DataFrame) -> pd.DataFrame:
    """``samples`` with ``unit``: the process index within its block (from the process's metadata, else the
    stored process number), so that (block, unit) names one worker process of one measurement block."""
    if "block_process" in samples.columns and samples["block_process"].notna().all():
        return samples.assign(unit=samples["block_process"].astype(int))
    return samples.assign(unit=samples["process"].astype(int))


#: fewer shared processes than this give no paired comparison (unless they are all of the version's)
MIN_SHARED_PROCESSES = 2


def paired_log_ratios(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray | None:
    """Per worker process the two results' samples share (same measurement block and process index in it),
    the median of the log ratios of the values measured in the same trial; None when the two were not
    measured side by side.

    Interleaved results share every process of their block. A duet result holds processes of each edge its
    version is in, so the two results are paired on the processes they share when there are at least
    :data:`MIN_SHARED_PROCESSES` of them."""
    if a.empty or b.empty or a["block"].isna().any() or b["block"].isna().any():
        return None
    a, b = _with_unit(a), _with_unit(b)
    keys = ["block", "unit"]
    joined = a.merge(b, on=[*keys, "value_index"], suffixes=("_a", "_b"))
    if joined.empty:
        return None
    shared = joined.groupby(keys).ngroups
    if shared != a.groupby(keys).ngroups and shared < MIN_SHARED_PROCESSES:
        return None
    va, vb = joined["value_s_a"].to_numpy(float), joined["value_s_b"].to_numpy(float)
    if (va <= 0).any() or (vb <= 0).any():
        return None
    joined = joined.assign(log_ratio=np.log(va / vb))
    return joined.groupby(keys)["log_ratio"].median().to_numpy(float)


def t_ratio(log_ratios: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """exp(mean) of per-process log ratios and its Student-t interval over processes (NaN with < 2)."""
    m = float(np.mean(log_ratios))
    if len(log_ratios) < 2:
        return float(np.exp(m)), float("nan"), float("nan")
    sem = float(np.std(log_ratios, ddof=1)) / np.sqrt(len(log_ratios))
    if sem == 0.0:
        return float(np.exp(m)), float(np.exp(m)), float(np.exp(m))
    lo, hi = stats.t.interval(level, len(log_ratios) - 1, loc=m, scale=sem)
    return float(np.exp(m)), float(np.exp(lo)), float(np.exp(hi))


def timing_effect(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int) -> TimingEffect | None:
    """The timing effect of the samples ``a`` (version) against ``b`` (baseline): paired where they were
    measured side by side, else the unpaired bootstrap over processes; None without values."""
    if a.empty or b.empty:
        return None
    d = paired_log_ratios(a, b)
    if d is not None:
        ratio, lo, hi = t_ratio(d)
        return TimingEffect(ratio, lo, hi, True, len(d))
    pa, pb = process_means(a), process_means(b)
    if not pa or not pb:
        return None
    (ra,), (rb,) = pa.values(), pb.values()
    ratio, lo, hi = bootstrap_ratio(ra, rb, n_boot, seed)
    return TimingEffect(ratio, lo, hi, False, min(len(ra[0]), len(rb[0])))


def _phase(samples: pd.DataFrame, phase: str) -> pd.DataFrame:
    if "phase" not in samples.columns:
        return samples if phase == PRIMARY else samples.iloc[0:0]
    return samples[samples["phase"].fillna(PRIMARY) == phase]


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
    if "block" not in samples.columns:
        samples = samples.assign(block=None, phase=PRIMARY)
    by_result = {int(k): g for k, g in samples.groupby("result_id")} if TIME_METRIC in wanted else {}
    empty = samples.iloc[0:0]
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
                sa = by_result.get(int(r.result_id), empty)
                sb = by_result.get(int(b.result_id), empty)
                seed = _seed(r.engine, r.workload, r.workload_hash, r.version, baseline_id)
                primary = timing_effect(_phase(sa, PRIMARY), _phase(sb, PRIMARY), n_boot, seed)
                if primary is None:
                    continue
                confirm = timing_effect(_phase(sa, CONFIRM), _phase(sb, CONFIRM), n_boot, seed)
                significant = primary.excludes_one() and abs(primary.ratio - 1.0) >= min_effect
                confirmed: bool | None = None
                if confirm is not None:
                    confirmed = confirm.excludes_one() and (confirm.ratio > 1) == (primary.ratio > 1)
                    significant = significant and confirmed
                row.update(
                    kind="timing",
                    value=float(r.mean_s),
                    baseline_value=float(b.mean_s),
                    delta=float(r.mean_s) - float(b.mean_s),
                    ratio=primary.ratio,
                    ci_low=primary.ci_low,
                    ci_high=primary.ci_high,
                    significant=significant,
                    direction=("worse" if primary.ratio > 1 else "better") if significant else "same",
                    paired=primary.paired,
                    confirm_ratio=confirm.ratio if confirm else float("nan"),
                    confirm_low=confirm.ci_low if confirm else float("nan"),
                    confirm_high=confirm.ci_high if confirm else float("nan"),
                    confirmed=confirmed,
                    # no change tonight, conclusively: the interval lies within the minimum effect (an
                    # interval too wide to decide settles nothing, so an open finding is not marked fixed)
                    settled=bool(
                        not significant
                        and primary.has_interval
                        and primary.ci_low >= 1.0 - min_effect
                        and primary.ci_high <= 1.0 + min_effect
                    ),
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
                    settled=bool(delta == 0),
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


#: exact metrics that are not counters of events (the modelled cost is a sum over the counters)
NOT_COUNTERS = frozenset({"modeled_ns"})
DEFINING_COLUMNS = [
    "engine",
    "version",
    "baseline",
    "metric",
    "workload",
    "value",
    "baseline_value",
    "delta",
    "fold",
    "workloads",
    "rank",
]


def fold_change(value: float, baseline: float) -> float:
    """How far a counter moved, as ``|log2((value + 1) / (baseline + 1))|``: 0 for no change, 1 for a
    doubling or halving, large for a counter that goes to or comes from zero at a large count (the +1 keeps
    0 → 0 at 0 and makes 0 → 2,048 weigh like 2,048 → 1, not infinitely). A change of one event on a
    thousand weighs almost nothing, however the cost model prices the counter."""
    v, b = abs(float(value)), abs(float(baseline))
    return abs(float(np.log2((v + 1.0) / (b + 1.0))))


def defining_differences(lineage: pd.DataFrame, workloads: Sequence[str] | None = None) -> pd.DataFrame:
    """What defines each version against its parent: the exact counters that change, strongest first.

    ``lineage``: :func:`compare_lineage` rows. ``workloads``: the workloads to judge on (the canonical
    ones, each of which isolates one behaviour); when none of them is in ``lineage``, every workload.
    For each (engine, version, baseline, counter) the workload where the counter moves the most by
    :func:`fold_change` (ties: the larger absolute change, then the workload's name) represents it;
    ``workloads`` counts the judged workloads on which it changes at all. ``rank`` orders the counters of
    one version from 1, by that fold change (ties: the larger absolute change, then the name). The cost
    model plays no part: a counter it does not price defines a version as much as one it does."""
    if lineage.empty:
        return pd.DataFrame(columns=DEFINING_COLUMNS)
    lin = lineage[(lineage["kind"] == "exact") & ~lineage["metric"].isin(NOT_COUNTERS)]
    if workloads is not None:
        judged = lin[lin["workload"].isin(set(workloads))]
        lin = judged if not judged.empty else lin
    lin = lin[lin["delta"].astype(float) != 0]
    if lin.empty:
        return pd.DataFrame(columns=DEFINING_COLUMNS)
    lin = lin.assign(
        fold=[fold_change(v, b) for v, b in zip(lin["value"], lin["baseline_value"], strict=True)],
        abs_delta=lin["delta"].astype(float).abs(),
    )
    keys = ["engine", "version", "baseline", "metric"]
    lin = lin.sort_values(
        [*keys, "fold", "abs_delta", "workload"], ascending=[True] * 4 + [False, False, True]
    )
    counts = lin.groupby(keys)["workload"].nunique().rename("workloads")
    best = lin.groupby(keys, sort=False).head(1).join(counts, on=keys)
    best = best.sort_values(
        ["engine", "version", "baseline", "fold", "abs_delta", "metric"],
        ascending=[True, True, True, False, False, True],
    )
    best = best.assign(rank=best.groupby(["engine", "version", "baseline"]).cumcount() + 1)
    return best[DEFINING_COLUMNS].reset_index(drop=True)
