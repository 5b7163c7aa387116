"""Fit the cost model's coefficients to the kernel's measured times (docs/cost-model.md#the-fit).

``y[i]`` is the median CPU time of layout ``i``'s zap calls on the kernel, ``X[i, k]`` the simulated counter
``k`` of the version that models the running kernel. The fit minimises the *relative* error (each row is
divided by ``y[i]``: a 50 µs layout counts as much as a 50 ms one), under these rules:

* non-negative: every coefficient is ``>= 0`` (:func:`scipy.optimize.nnls`);
* robust: Huber weights by iteratively reweighted least squares (``delta`` = 1.345 robust standard
  deviations of the relative residuals, the scale from their median absolute deviation), so one disturbed
  layout cannot pull the coefficients;
* collinear counters: counters that are exactly proportional over the suite (e.g. syscalls and lock round
  trips) are *merged*: they share one coefficient, ns per event of any of them; a small ridge
  (``RIDGE`` on unit-scaled columns) keeps nearly collinear ones from trading large values;
* intervals: 5th and 95th percentile of each coefficient over ``BOOTSTRAP`` refits on layouts resampled
  with replacement;
* hold-out error: leave-one-layout-out -- refit without the layout, predict it, relative error
  ``|predicted / measured - 1|``; the median and the worst over the layouts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from benchsvc.engine.counters import COUNTER_NAMES

#: counters that are not work done by the call (gauges and diagnostics): never fitted
NOT_WORK = ("partially_mapped_after", "bad_pte")
#: two counters are proportional over the suite when their unit-scaled columns differ by less than this
PROPORTIONAL_TOLERANCE = 1e-9
RIDGE = 1e-3
HUBER_K = 1.345
IRLS_ITERATIONS = 30
BOOTSTRAP = 200


@dataclass(frozen=True)
class FitResult:
    """Coefficients (ns per event, every counter name; 0 for counters the suite never exercises), their
    bootstrap intervals, the merged groups, and the fit's quality."""

    coefficients: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    groups: dict[str, tuple[str, ...]]  # first name of a group -> every member (merged counters)
    unexercised: tuple[str, ...]
    in_sample_median: float
    in_sample_worst: float
    holdout_median: float
    holdout_worst: float
    holdout_errors: dict[str, float] = field(default_factory=dict)
    layouts: int = 0

    def quality(self) -> dict[str, float]:
        return {
            "in_sample_median": self.in_sample_median,
            "in_sample_worst": self.in_sample_worst,
            "holdout_median": self.holdout_median,
            "holdout_worst": self.holdout_worst,
            "layouts": float(self.layouts),
        }


def _groups(X: np.ndarray, names: Sequence[str]) -> tuple[list[list[int]], list[str]]:
    """Column indices grouped by exact proportionality; the names of all-zero columns."""
    groups: list[list[int]] = []
    unit: list[np.ndarray] = []
    zero: list[str] = []
    for k, name in enumerate(names):
        col = X[:, k]
        norm = float(np.linalg.norm(col))
        if norm == 0.0:
            zero.append(name)
            continue
        u = col / norm
        for g, ref in zip(groups, unit, strict=True):
            if float(np.max(np.abs(u - ref))) < PROPORTIONAL_TOLERANCE:
                g.append(k)
                break
        else:
            groups.append([k])
            unit.append(u)
    return groups, zero


def _solve(G: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Robust, non-negative, relative-error fit of ``y ~ G @ c`` (G: one summed column per group)."""
    A = G / y[:, None]
    b = np.ones(len(y))
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    As = A / scale
    p = As.shape[1]
    ridge = np.sqrt(RIDGE) * np.eye(p)
    w = np.ones(len(y))
    c = np.zeros(p)
    for _ in range(IRLS_ITERATIONS):
        sw = np.sqrt(w)
        cs, _ = nnls(
            np.vstack([As * sw[:, None], ridge]), np.concatenate([b * sw, np.zeros(p)]), maxiter=50 * p
        )
        r = As @ cs - b
        mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
        delta = HUBER_K * max(mad, 1e-3)
        new_w = np.where(np.abs(r) <= delta, 1.0, delta / np.maximum(np.abs(r), 1e-12))
        c_new = cs / scale
        if np.allclose(new_w, w, atol=1e-4) and np.allclose(c_new, c, rtol=1e-6, atol=1e-9):
            c = c_new
            break
        w, c = new_w, c_new
    return c


def fit(
    counters: Sequence[Mapping[str, int]],
    measured_ns: Sequence[float],
    names: Sequence[str] | None = None,
    *,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> FitResult:
    """Fit ns per event to ``measured_ns`` (one per layout) from the layouts' simulated ``counters``."""
    layout_names = list(names) if names is not None else [str(i) for i in range(len(counters))]
    candidates = [n for n in COUNTER_NAMES if n not in NOT_WORK]
    X = np.array([[float(c.get(n, 0)) for n in candidates] for c in counters])
    y = np.array([float(v) for v in measured_ns])
    if len(y) < 3:
        raise ValueError("a fit needs at least 3 layouts")
    groups, zero = _groups(X, candidates)
    G = np.column_stack([X[:, g].sum(axis=1) for g in groups])
    c = _solve(G, y)

    def rel(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
        return np.abs(pred / meas - 1.0)

    in_err = rel(G @ c, y)
    loo = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        ci = _solve(G[keep], y[keep])
        loo[i] = rel(np.array([G[i] @ ci]), y[i : i + 1])[0]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(bootstrap):
        idx = rng.integers(0, len(y), len(y))
        boots.append(_solve(G[idx], y[idx]))
    B = np.array(boots) if boots else c[None, :]
    lo, hi = np.percentile(B, 5, axis=0), np.percentile(B, 95, axis=0)

    coefficients = dict.fromkeys(COUNTER_NAMES, 0.0)
    intervals: dict[str, tuple[float, float]] = {}
    merged: dict[str, tuple[str, ...]] = {}
    for gi, g in enumerate(groups):
        members = tuple(candidates[k] for k in g)
        if len(members) > 1:
            merged[members[0]] = members
        for name in members:
            coefficients[name] = float(c[gi])
            intervals[name] = (float(lo[gi]), float(hi[gi]))
    return FitResult(
        coefficients=coefficients,
        intervals=intervals,
        groups=merged,
        unexercised=tuple(zero),
        in_sample_median=float(np.median(in_err)),
        in_sample_worst=float(np.max(in_err)),
        holdout_median=float(np.median(loo)),
        holdout_worst=float(np.max(loo)),
        holdout_errors=dict(zip(layout_names, (float(e) for e in loo), strict=True)),
        layouts=len(y),
    )
