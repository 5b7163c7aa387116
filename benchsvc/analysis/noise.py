"""Tonight's noise floor: what the run's own A/A pair and its canary say about how far timings can be trusted.

``v3`` runs exactly the same simulator code as ``v2`` (the series' v3 only reworked a kernel refactor that the
model does not distinguish; ``tests/test_noise.py`` checks that the ``v3`` class overrides nothing), so every
run that measures both holds a free A/A comparison on each workload. Its interval half-widths are the
smallest timing effect the run can resolve, and a significant A/A difference means the measurement itself is
off. The canary's spread over worker processes says how steady the machine was. Every timing claim is printed
beside this floor (``benchsvc show``, ``benchsvc compare``, the report).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: (version, baseline) with identical code: the run's A/A pair
AA_PAIR = ("v3", "v2")


@dataclass(frozen=True)
class NoiseFloor:
    """The A/A pair's 95% half-widths and deviations over the run's workloads, and the canary's spread."""

    aa_workloads: int
    aa_half_width_median: float
    aa_half_width_max: float
    aa_deviation_max: float
    aa_significant: int
    canary_cv: float
    canary_processes: int

    def describe(self) -> str:
        parts = []
        if self.aa_workloads:
            parts.append(
                f"A/A {AA_PAIR[0]}/{AA_PAIR[1]} (same code) on {self.aa_workloads} workloads: 95% interval "
                f"±{self.aa_half_width_median:.1%} median, ±{self.aa_half_width_max:.1%} widest; "
                f"largest A/A difference {self.aa_deviation_max:.1%}; "
                f"{self.aa_significant} flagged"
            )
        if self.canary_processes:
            parts.append(f"canary spread {self.canary_cv:.1%} over {self.canary_processes} processes")
        return "noise floor: " + ("; ".join(parts) if parts else "unknown (no A/A pair, no canary)")


def noise_floor(results: pd.DataFrame, samples: pd.DataFrame) -> NoiseFloor:
    """The noise floor of one run from its results (:func:`benchsvc.store.queries.run_results`) and raw values
    (:func:`benchsvc.store.queries.run_samples`)."""
    from benchsvc.analysis.lineage import PRIMARY, compare_lineage

    pair = results[results["version"].isin(AA_PAIR) & (results["engine"] == "sim")]
    pair_samples = samples[samples["result_id"].isin(pair["result_id"])] if not samples.empty else samples
    aa = (
        compare_lineage(pair, pair_samples, base=AA_PAIR[1], metrics=["time"])
        if not pair.empty
        else pd.DataFrame()
    )
    if not aa.empty:
        aa = aa[aa["version"] == AA_PAIR[0]]
    half = ((aa["ci_high"] - aa["ci_low"]) / 2 / aa["ratio"]).dropna() if not aa.empty else pd.Series()
    canary = samples[samples["engine"] == "canary"] if not samples.empty else samples
    if "phase" in canary.columns:
        canary = canary[canary["phase"].fillna(PRIMARY) == PRIMARY]
    means = canary.groupby("process")["value_s"].mean().to_numpy(float) if not canary.empty else np.array([])
    return NoiseFloor(
        aa_workloads=len(half),
        aa_half_width_median=float(half.median()) if len(half) else float("nan"),
        aa_half_width_max=float(half.max()) if len(half) else float("nan"),
        aa_deviation_max=float((aa["ratio"] - 1).abs().max()) if not aa.empty else float("nan"),
        aa_significant=int(aa["significant"].sum()) if not aa.empty else 0,
        canary_cv=float(np.std(means, ddof=1) / np.mean(means)) if len(means) > 1 else float("nan"),
        canary_processes=len(means),
    )
