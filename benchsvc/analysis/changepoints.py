"""Change points across nights, per series: E-divisive means with a Student-t test, split then merge.

One series is the run-level summary of one (machine, environment, engine, version, workload hash, metric)
per night, oldest first. The detector is the Hunter/Otava formulation (Fleming et al., ICPE 2023,
arXiv:2301.03034) of E-divisive means (Matteson & James, arXiv:1306.4933, alpha = 1), implemented here with
numpy/scipy:

1. **Split.** Slide windows of ``window`` nights with a step of ``window // 2`` (after a window, restart at
   ``max(last change point found in it, start + step)``). Inside each window run E-divisive: in every segment
   between the change points found so far, take the split (tau, kappa) that maximises the divergence Q-hat
   (:func:`qhat_matrix`); of the segments' best splits take the largest; accept it when a two-sided Student-t
   test between the two sides of the segment gives ``p <= relaxed_pvalue(max_pvalue)``, and repeat; stop at
   the first split that fails. The union of all windows' points is the set of *weak* change points.
2. **Merge.** Give each weak point the t-test between its neighbouring segments over the whole series.
   Repeatedly drop the weakest point (largest p) while some p >= ``max_pvalue``; then drop the point of
   smallest magnitude ``max(|after/before - 1|, |before/after - 1|)`` while that is <= ``min_magnitude``;
   recompute the two neighbours' statistics after every removal.

Differences from Otava, on purpose: the t-test uses the unbiased pooled variance (Otava feeds population
standard deviations to ``ttest_ind_from_stats``, which understates the variance of short segments); a window
is always the slice of the series (Otava ignores the window for numpy input); and there is
no randomness anywhere (the t-test replaces MongoDB's permutation test), so the same input gives the same
change points.

Each :class:`ChangePoint` carries the effect ``mean_after / mean_before`` with a 95% **Fieller** interval for
that ratio of means (pooled variance of the two neighbouring segments, Student t with ``n_before + n_after -
2`` degrees of freedom): the exact interval for a ratio of two normal means, not a bootstrap.

:func:`analyze_night` runs :func:`detect` on every series of a night, keeps the change points that are *new*
(their index among the last ``new_nights`` nights, with at least ``min_nights_after`` nights after it and
tonight's value on the new level, :func:`keep_new`) and
applies Benjamini-Hochberg at level ``fdr`` across the
night, counting one hypothesis per series (a series with no new candidate counts as p = 1) or per candidate
when a series has several.

The defaults, and the measured false-alarm rate and power they give, are in ``docs/detection.md``
(``python benchmarks/detector_speed.py`` reproduces them). Pure numpy/scipy: no database, no printing.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, TypeVar

import numpy as np
from scipy import special

DEFAULT_WINDOW = 50
DEFAULT_MAX_PVALUE = 2e-4
DEFAULT_MAX_PVALUE_CONFIRMED = 4e-4
DEFAULT_MIN_MAGNITUDE = 0.01
DEFAULT_FDR = 0.05
DEFAULT_NEW_NIGHTS = 5
DEFAULT_MIN_NIGHTS_AFTER = 2
CI_LEVEL = 0.95

#: relative round-off below which a variance is zero and two means are equal (cumulative sums of equal
#: values differ by ~1e-14 relative)
REL_EPS = 1e-9

K = TypeVar("K", bound=Hashable)

MachineFactor = Literal["median", "canary", "none"]


@dataclass(frozen=True)
class DetectorSettings:
    """Every knob of the nightly decision, in one object: ``benchsvc run``'s analysis, ``benchsvc analyze``,
    ``benchsvc history`` (through what those recorded) and ``benchsvc evaluate`` all take their rules from
    here. The defaults and the figures behind them are in ``docs/detection.md``.

    Detector: ``window``, ``max_pvalue``, ``min_magnitude`` (see :func:`detect`); ``robust`` turns on the
    rules that keep single odd nights from making change points (:func:`clip_isolated`, the one-night
    segment rule and the steadiness rule of :func:`merge`); ``robust=False`` is the plain Hunter/Otava
    split-and-merge. ``clip_sigmas``: how far (in robust standard deviations) an isolated night may sit from
    its neighbours before it is clipped; ``steady_pvalue`` and ``steady_share``: the steadiness rule.

    Nightly rules: ``new_nights`` (a change point is new while its night is among the last ones),
    ``min_nights_after`` (nights on the new level before it is recorded; ``min_nights_after_confirmed`` when
    the run re-measures suspected cells before recording), ``fdr`` (Benjamini-Hochberg across the night).

    Machine-wide effects (:mod:`benchsvc.analysis.nightly`): ``machine_factor`` divides every series by the
    night's machine factor before detection ("median": the median over the night's series of each series'
    ratio to its own level since the last engine-code change; "canary": the canary's ratio to its own
    level; "none"); ``machine_min_shift`` and ``machine_min_share``: a night is a machine event when the
    median series moved by at least that much and at least that share of the series moved with it (or the
    canary moved and ``machine_canary_share`` of the series did); ``machine_baseline_nights``: how many
    previous nights of the same engine code make a series' level for that test."""

    window: int = DEFAULT_WINDOW
    max_pvalue: float = DEFAULT_MAX_PVALUE
    min_magnitude: float = DEFAULT_MIN_MAGNITUDE
    robust: bool = True
    clip_sigmas: float = 4.0
    steady_pvalue: float = 1e-3
    steady_share: float = 0.3
    tonight_on_level: bool = True
    clip_keeps_spread: bool = True
    fdr: float = DEFAULT_FDR
    new_nights: int = DEFAULT_NEW_NIGHTS
    min_nights_after: int = DEFAULT_MIN_NIGHTS_AFTER
    min_nights_after_confirmed: int = 1
    max_pvalue_confirmed: float = DEFAULT_MAX_PVALUE_CONFIRMED
    fdr_confirmed: float = DEFAULT_FDR
    machine_factor: MachineFactor = "median"
    machine_min_shift: float = 0.03
    machine_min_share: float = 0.5
    machine_canary_share: float = 0.25
    machine_baseline_nights: int = 10
    #: a machine event must also be unusual for this machine: at least this many of its own robust
    #: night-to-night wanders (1.4826 MAD over its past ``machine_wander_nights`` nights) from its usual
    #: level, once it has ``machine_wander_min_nights`` past nights (0 turns the rule off; nightly.py)
    machine_wander_sigmas: float = 3.0
    machine_wander_nights: int = 30
    machine_wander_min_nights: int = 8
    #: divide each series also by the median move of the series measured in the same block (the versions of
    #: one workload, measured together in the same worker processes), within the same engine code
    block_factor: bool = True
    #: creeps (:func:`find_creep`): a series whose level moves steadily is one creep, not a staircase of
    #: steps. Reported at p <= ``creep_pvalue`` (the trend against a flat level) once it has run
    #: ``creep_min_nights`` and moved by ``creep_min_total``; at p <= ``creep_keep_pvalue`` the trend is taken
    #: out before the step test (steps on top of a creep are still steps). 0 nights turns creeps off.
    creep_min_nights: int = 10
    creep_pvalue: float = 1e-6
    creep_keep_pvalue: float = 1e-3
    creep_min_total: float = 0.02
    creep_window: int = 120
    #: nights a series needs before a change point in it is new: a level is not known from two or three nights
    min_nights_before: int = 5
    #: carry the machine factor across a change of engine code with the canary's level (nightly.py)
    canary_bridge: bool = True
    #: estimate the machine and block factors again without the nights of the series that show a candidate
    #: change point, up to this many more passes (0: one estimate from every series; nightly.py)
    suspect_passes: int = 3

    def replace(self, **changes: object) -> DetectorSettings:
        """A copy with some settings changed (``None`` values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]

    def for_path(self, confirmed: bool) -> DetectorSettings:
        """The settings a decision uses: with ``confirmed`` (the run re-measures every candidate before
        recording it), ``max_pvalue_confirmed`` and ``fdr_confirmed`` replace ``max_pvalue`` and ``fdr``."""
        if not confirmed:
            return self
        return dataclasses.replace(self, max_pvalue=self.max_pvalue_confirmed, fdr=self.fdr_confirmed)

    def new_change_points(self, values: np.ndarray, *, confirmed: bool = False) -> list[ChangePoint]:
        """:func:`new_change_points` with these settings (``confirmed``: the run will re-measure)."""
        return new_change_points(values, settings=self, confirmed=confirmed)


DEFAULT_SETTINGS = DetectorSettings()


@dataclass(frozen=True)
class ChangePoint:
    """A change of level in one series.

    ``index`` is the first night of the new level (0 = the oldest night given). ``effect`` is ``mean_after /
    mean_before`` over the neighbouring segments (``nights_before`` and ``nights_after`` nights, bounded by
    the neighbouring change points or the ends of the series), ``ci_low``/``ci_high`` its 95% Fieller
    interval (NaN when the interval is unbounded), ``p_value`` the two-sided Student-t test of the two
    segments."""

    index: int
    p_value: float
    mean_before: float
    mean_after: float
    effect: float
    ci_low: float
    ci_high: float
    nights_before: int
    nights_after: int

    @property
    def magnitude(self) -> float:
        """Relative size regardless of direction: ``max(|after/before - 1|, |before/after - 1|)``."""
        return _magnitude(self.mean_before, self.mean_after)


def relaxed_pvalue(max_pvalue: float) -> float:
    """The split pass's threshold (Otava): 10p below 0.05, 2p below 0.5, else p."""
    if max_pvalue < 0.05:
        return 10 * max_pvalue
    if max_pvalue < 0.5:
        return 2 * max_pvalue
    return max_pvalue


# --- E-divisive divergence -------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def _q_coefficients(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For a segment of n points: the coefficients of Q-hat over all (tau, kappa) and the invalid mask.

    Rows are tau = 1..n-1, columns kappa = 2..n; entries with kappa <= tau are invalid."""
    tau = np.arange(1, n, dtype=float)[:, None]
    kappa = np.arange(2, n + 1, dtype=float)[None, :]
    m = kappa - tau  # size of Y
    invalid = m < 1
    with np.errstate(divide="ignore", invalid="ignore"):
        c_cross = np.broadcast_to(2.0 / kappa, invalid.shape)
        c_x = np.where((tau > 1) & ~invalid, 2.0 * m / (kappa * (tau - 1)), 0.0)
        c_y = np.where((m > 1) & ~invalid, 2.0 * tau / (kappa * (m - 1)), 0.0)
    for a in (c_x, c_y, invalid):
        a.setflags(write=False)
    c_cross = np.ascontiguousarray(c_cross)
    c_cross.setflags(write=False)
    return c_cross, c_x, c_y, invalid


def qhat_matrix(x: np.ndarray) -> np.ndarray:
    """Q-hat(tau, kappa) of Matteson & James (alpha = 1) for every split of ``x``, vectorised.

    ``Q[tau - 1, kappa - 2]`` compares X = x[:tau] with Y = x[tau:kappa] (1 <= tau < kappa <= n):
    ``n m / (n + m) * (2/(n m) sum|X_i - Y_j| - sum_{i<j}|X_i - X_j| / C(n, 2) - sum_{i<j}|Y_i - Y_j| / C(m, 2))``
    with n = tau, m = kappa - tau (a within-term is 0 for a single point). Invalid cells are -inf.

    All three sums come from one 2-D cumulative sum of the distance matrix D,
    ``S[r, c] = sum_{i<r, j<c} |x_i - x_j|``: within X = S[tau, tau] / 2, between X and Y =
    S[tau, kappa] - S[tau, tau], within Y = (S[kappa, kappa] - 2 S[tau, kappa] + S[tau, tau]) / 2.
    O(n^2) time and memory."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n < 2:
        return np.empty((0, 0))
    s = np.zeros((n + 1, n + 1))
    np.cumsum(np.abs(x[:, None] - x[None, :]), axis=0, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], axis=1, out=s[1:, 1:])
    diag = np.diagonal(s)
    s_tk = s[1:n, 2 : n + 1]
    s_tt = diag[1:n, None]
    s_kk = diag[None, 2 : n + 1]
    c_cross, c_x, c_y, invalid = _q_coefficients(n)
    q = c_cross * (s_tk - s_tt) - c_x * (0.5 * s_tt) - c_y * (0.5 * (s_kk - 2.0 * s_tk + s_tt))
    q[invalid] = -np.inf
    return q


def best_split(x: np.ndarray) -> tuple[int, float]:
    """The tau (first index of the second part) maximising Q-hat over all kappa, and that Q-hat."""
    q = qhat_matrix(x)
    i = int(np.argmax(q))
    row, col = divmod(i, q.shape[1])
    return row + 1, float(q[row, col])


# --- Student t between neighbouring segments -------------------------------------------------------------


class _Sums:
    """Prefix sums of a centred series, for O(1) mean and sum of squares of any segment."""

    def __init__(self, values: np.ndarray, extra: np.ndarray | None = None) -> None:
        self.shift = float(values.mean()) if len(values) else 0.0
        centred = values - self.shift
        self.s1 = [0.0, *np.cumsum(centred).tolist()]
        sq = centred * centred if extra is None else centred * centred + extra
        self.s2 = [0.0, *np.cumsum(sq).tolist()]
        # the size of the numbers summed: round-off of the prefix sums is relative to it
        self.scale = float(np.abs(values).max()) if len(values) else 0.0

    def stats(self, a: int, b: int) -> tuple[int, float, float]:
        """(n, centred mean, sum of squared deviations) of values[a:b] (plus the ``extra`` squares there).

        Prefix sums of equal values differ by round-off (~1e-14 of the data's size): a variance below
        ``REL_EPS`` squared of the data's size is exactly zero."""
        n = b - a
        s1 = self.s1[b] - self.s1[a]
        mean = s1 / n
        ss = (self.s2[b] - self.s2[a]) - s1 * mean
        if ss <= n * (REL_EPS * self.scale) ** 2:
            ss = 0.0
        return n, mean, ss

    def same_mean(self, m1: float, m2: float) -> bool:
        """Two centred means equal up to round-off (relative to the data's size)."""
        return abs(m2 - m1) <= REL_EPS * max(self.scale, abs(m1 + self.shift), abs(m2 + self.shift))


def _t_test(sums: _Sums, a: int, tau: int, b: int) -> float:
    """Two-sided Student-t p-value (pooled variance) of values[a:tau] against values[tau:b]."""
    n1, m1, ss1 = sums.stats(a, tau)
    n2, m2, ss2 = sums.stats(tau, b)
    df = n1 + n2 - 2
    if df <= 0:
        return 1.0
    diff = m2 - m1
    if sums.same_mean(m1, m2):
        return 1.0
    var = (ss1 + ss2) / df
    if var <= 0.0:
        return 0.0
    t = diff / np.sqrt(var * (1.0 / n1 + 1.0 / n2))
    return float(2.0 * special.stdtr(df, -abs(t)))


#: how far (in nights) a split of the E-divisive pass may move to where the two sides differ most
REFINE_NIGHTS = 2


def refine(sums: _Sums, cps: list[int], n: int, reach: int = REFINE_NIGHTS) -> list[int]:
    """Move each split to the night within ``reach`` where the t-test between its neighbouring splits is
    strongest. E-divisive places a split where the energy statistic peaks, which on a short new level can be
    a night or two early (two slightly high nights before a step take the split with them); the t-test that
    then judges the split is weaker at the wrong night, and the robust rules reject a new level that
    includes old nights. Two splits at most ``reach`` nights apart are one change seen twice: the one that is
    stronger on its own (between the splits around the pair) is kept. Splits keep their order."""
    out = sorted(cps)
    i = 1
    while i < len(out):
        if out[i] - out[i - 1] <= reach:
            lo = out[i - 2] if i >= 2 else 0
            hi = out[i + 1] if i + 1 < len(out) else n
            p_first, p_second = _t_test(sums, lo, out[i - 1], hi), _t_test(sums, lo, out[i], hi)
            del out[i if p_first <= p_second else i - 1]
            continue
        i += 1
    for i, tau in enumerate(out):
        lo = out[i - 1] if i > 0 else 0
        hi = out[i + 1] if i + 1 < len(out) else n
        best, best_p = tau, _t_test(sums, lo, tau, hi)
        for t in range(max(lo + 1, tau - reach), min(hi - 1, tau + reach) + 1):
            p = _t_test(sums, lo, t, hi)
            if p < best_p:
                best, best_p = t, p
        out[i] = best
    return out


def _magnitude(before: float, after: float) -> float:
    if before == 0.0 or after == 0.0:
        return float("inf") if before != after else 0.0
    return max(abs(after / before - 1.0), abs(before / after - 1.0))


def _fieller(mean_b: float, mean_a: float, var: float, n_b: int, n_a: int, df: int) -> tuple[float, float]:
    """95% Fieller interval of mean_a / mean_b for independent normal means with a pooled variance."""
    if mean_b == 0.0:
        return float("nan"), float("nan")
    ratio = mean_a / mean_b
    if var <= 0.0:
        return ratio, ratio
    if df <= 0:
        return float("nan"), float("nan")
    t = float(special.stdtrit(df, 0.5 + CI_LEVEL / 2))
    va, vb = var / n_a, var / n_b
    denom = mean_b * mean_b - t * t * vb
    if denom <= 0.0:  # the baseline mean is not distinguishable from 0: the interval is unbounded
        return float("nan"), float("nan")
    disc = mean_a * mean_a * vb + mean_b * mean_b * va - t * t * va * vb
    half = t * np.sqrt(max(disc, 0.0))
    lo, hi = (mean_a * mean_b - half) / denom, (mean_a * mean_b + half) / denom
    return float(lo), float(hi)


def _change_point(sums: _Sums, a: int, tau: int, b: int) -> ChangePoint:
    n1, m1, ss1 = sums.stats(a, tau)
    n2, m2, ss2 = sums.stats(tau, b)
    df = n1 + n2 - 2
    var = (ss1 + ss2) / df if df > 0 else 0.0
    before, after = m1 + sums.shift, m2 + sums.shift
    lo, hi = _fieller(before, after, var, n1, n2, df)
    return ChangePoint(
        index=tau,
        p_value=_t_test(sums, a, tau, b),
        mean_before=before,
        mean_after=after,
        effect=after / before if before != 0.0 else float("nan"),
        ci_low=lo,
        ci_high=hi,
        nights_before=n1,
        nights_after=n2,
    )


# --- split and merge ------------------------------------------------------------------------------------


def _edivisive_window(values: np.ndarray, sums: _Sums, start: int, end: int, pvalue: float) -> list[int]:
    """E-divisive with the t-test inside the window values[start:end]; change points as series indices."""
    x = values[start:end]
    bounds = [0, len(x)]
    memo: dict[tuple[int, int], tuple[int, float]] = {}
    found: list[int] = []
    while True:
        best: tuple[float, int, int, int] | None = None  # (qhat, tau, a, b)
        for a, b in itertools.pairwise(bounds):
            if b - a < 3:
                continue
            if (a, b) not in memo:
                tau, q = best_split(x[a:b])
                memo[(a, b)] = (a + tau, q)
            tau, q = memo[(a, b)]
            if best is None or q > best[0]:
                best = (q, tau, a, b)
        if best is None:
            return [start + i for i in found]
        _, tau, a, b = best
        if _t_test(sums, start + a, start + tau, start + b) > pvalue:
            return [start + i for i in found]
        found.append(tau)
        bounds = sorted([*bounds, tau])


def split(values: np.ndarray, window: int, pvalue: float, sums: _Sums | None = None) -> list[int]:
    """Weak change points: E-divisive at ``pvalue`` in sliding windows of ``window`` nights (step window/2)."""
    if window < 3:
        raise ValueError(f"window must be at least 3 nights, not {window}")
    sums = sums or _Sums(values)
    n = len(values)
    step = window // 2
    start = 0
    points: set[int] = set()
    while start < n:
        end = min(start + window, n)
        new = _edivisive_window(values, sums, start, end, pvalue) if end - start >= 3 else []
        points.update(new)
        start = max(max(new, default=0), start + step)
    return sorted(points)


def _diff_scale(x: np.ndarray) -> float:
    """The robust night-to-night standard deviation 1.4826 MAD(first differences) / sqrt(2)."""
    d = np.diff(x)
    return 1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0)


def clip_isolated(values: np.ndarray, sigmas: float) -> np.ndarray:
    """Replace isolated odd nights: a night (not the first, not the last) that is more than ``sigmas`` robust
    standard deviations from both neighbours, while the neighbours agree with each other within that, takes
    the neighbours' mean (a Gaussian night is that far from both neighbours about once in 10,000 nights).

    The standard deviation is the robust night-to-night noise 1.4826 MAD(first differences) / sqrt(2), which
    a level shift does not inflate. A step's nights are never isolated (each has a neighbour on its own
    level), and the last night is left alone (the new-night rule decides about it)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 5 or not sigmas > 0:
        return x
    scale = _diff_scale(x)
    if not scale > 0:
        return x
    lim = sigmas * scale
    a, b, mid = x[:-2], x[2:], x[1:-1]
    iso = (np.abs(a - b) <= lim) & (np.abs(mid - a) > lim) & (np.abs(mid - b) > lim)
    if not iso.any():
        return x
    out = x.copy()
    out[1:-1][iso] = ((a + b) / 2)[iso]
    return out


def _robust_scale(x: np.ndarray) -> float:
    """1.4826 MAD, or the standard deviation when the MAD is 0."""
    med = float(np.median(x))
    scale = 1.4826 * float(np.median(np.abs(x - med)))
    if scale <= 0.0 and len(x) > 1:
        scale = float(x.std(ddof=1))
    return scale


def _unsteady(values: np.ndarray, c: ChangePoint, a: int, b: int, settings: DetectorSettings) -> bool:
    """The steadiness rule: the short side of a change point (2 to 5 nights) must be about as steady as the
    long side. Unsteady when its variance is too large for the long side's robust scale (chi-square,
    p < ``steady_pvalue``) *and* its standard deviation exceeds ``steady_share`` of the step: two unrelated
    slow nights in a row are not a new level."""
    before, after = values[a : c.index], values[c.index : b]
    short, long = (after, before) if len(after) <= len(before) else (before, after)
    if not 2 <= len(short) <= 5 or len(long) < 3:
        return False
    scale = _robust_scale(long)
    if not scale > 0:
        return False
    var = float(short.var(ddof=1))
    chi = (len(short) - 1) * var / (scale * scale)
    if float(special.chdtrc(len(short) - 1, chi)) >= settings.steady_pvalue:
        return False
    return bool(np.sqrt(var) > settings.steady_share * abs(c.mean_after - c.mean_before))


def _resolve_single_nights(sums: _Sums, idx: list[int], n: int) -> list[int]:
    """Two weak points around one night (an interior segment of one night): keep the one that is stronger
    on its own (the smaller p with the other removed), drop the other. A point right after the first night
    goes too. Testing a point against a one-night segment says nothing about a change of level."""
    idx = [i for i in idx if i != 1]
    while True:
        k = next((k for k in range(len(idx) - 1) if idx[k + 1] - idx[k] == 1), None)
        if k is None:
            return idx
        ends = [0, *idx, n]
        lo, hi = ends[k], ends[k + 3]
        p_keep_right = _t_test(sums, lo, idx[k + 1], hi)
        p_keep_left = _t_test(sums, lo, idx[k], hi)
        del idx[k if p_keep_right <= p_keep_left else k + 1]


def merge(
    values: np.ndarray,
    indices: list[int],
    max_pvalue: float,
    min_magnitude: float,
    sums: _Sums | None = None,
    settings: DetectorSettings | None = None,
) -> list[ChangePoint]:
    """Drop weak change points bottom-up until every p < max_pvalue and every magnitude > min_magnitude.

    With ``settings.robust`` (the default), first resolve one-night segments (:func:`_resolve_single_nights`)
    and drop unsteady points (:func:`_unsteady`) before any other, as if their p were 1."""
    settings = settings or DEFAULT_SETTINGS
    robust = settings.robust
    sums = sums or _Sums(values)
    n = len(values)
    idx = sorted(indices)
    if robust:
        idx = _resolve_single_nights(sums, idx, n)
    ends = [0, *idx, n]
    cps = [_change_point(sums, ends[k], idx[k], ends[k + 2]) for k in range(len(idx))]

    def weakness(j: int, ends: list[int]) -> float:
        if robust and _unsteady(values, cps[j], ends[j], ends[j + 2], settings):
            return 2.0
        return cps[j].p_value

    weak = [weakness(j, ends) for j in range(len(cps))]
    while cps:
        k = max(range(len(cps)), key=lambda i: weak[i])
        if weak[k] < max_pvalue:
            k = min(range(len(cps)), key=lambda i: cps[i].magnitude)
            if cps[k].magnitude > min_magnitude:
                break
        del cps[k]
        del weak[k]
        ends = [0, *(c.index for c in cps), n]
        for j in (k - 1, k):
            if 0 <= j < len(cps):
                cps[j] = _change_point(sums, ends[j], cps[j].index, ends[j + 2])
                weak[j] = weakness(j, ends)
    return cps


def detect(
    values: np.ndarray,
    *,
    settings: DetectorSettings | None = None,
    window: int | None = None,
    max_pvalue: float | None = None,
    min_magnitude: float | None = None,
    robust: bool | None = None,
) -> list[ChangePoint]:
    """Change points of one series of nightly summaries (oldest first, no NaNs), oldest first.

    ``settings`` (default :data:`DEFAULT_SETTINGS`), with any of ``window`` (nights per E-divisive window,
    step ``window // 2``), ``max_pvalue`` (the t-test level a change point must pass after merging; the split
    pass uses :func:`relaxed_pvalue`), ``min_magnitude`` (relative changes this small are merged away even
    when significant) and ``robust`` overriding it. With ``robust``, isolated odd nights are clipped first
    (:func:`clip_isolated`), and the means, p-values and intervals are those of the clipped series."""
    s = (settings or DEFAULT_SETTINGS).replace(
        window=window, max_pvalue=max_pvalue, min_magnitude=min_magnitude, robust=robust
    )
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"detect() takes one series (1-D), not an array of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("the series has NaN or infinite values; drop those nights before detecting")
    if s.window < 3:
        raise ValueError(f"window must be at least 3 nights, not {s.window}")
    if len(x) < 3:
        return []
    # scale-free: the detector works on x / unit, where unit is a power of two near the data's size (exact,
    # no rounding), and multiplies the means back; any positive unit of the input gives the same answer, and
    # values near the ends of the float range neither overflow (squares in the sums) nor underflow
    unit = _unit(x)
    if unit != 1.0:
        return [_rescaled(c, unit) for c in detect(x / unit, settings=s)]
    extra = None
    if s.robust:
        clipped = clip_isolated(x, s.clip_sigmas)
        if s.clip_keeps_spread:
            # a replaced night still counts in the spread, as if it sat clip_sigmas robust standard
            # deviations from its neighbours: a history with heavy tails is not taken for a quiet one
            d = np.abs(x - clipped)
            if d.any():
                extra = np.minimum(d, s.clip_sigmas * _diff_scale(x)) ** 2
        x = clipped
    sums = _Sums(x, extra)
    weak = split(x, s.window, relaxed_pvalue(s.max_pvalue), sums)
    if s.robust:
        weak = refine(sums, weak, len(x))
    return merge(x, weak, s.max_pvalue, s.min_magnitude, sums, s)


def _unit(x: np.ndarray) -> float:
    """A power of two within a factor of two of the largest |value| (1.0 for an all-zero series)."""
    size = float(np.max(np.abs(x)))
    if size == 0.0:
        return 1.0
    return float(np.ldexp(1.0, int(np.frexp(size)[1]) - 1))


def _rescaled(c: ChangePoint, unit: float) -> ChangePoint:
    """``c`` found on values divided by ``unit``, in the caller's units (ratios and p-values are unchanged)."""
    return dataclasses.replace(c, mean_before=c.mean_before * unit, mean_after=c.mean_after * unit)


# --- creeps: a steady trend is one finding -----------------------------------------------------------


@dataclass(frozen=True)
class Creep:
    """A series whose level moves steadily: flat until night ``start``, then a constant relative rate.

    ``start``: the first night of the trend (index in the series given); ``rate``: the relative change per
    night (0.003 = +0.3% a night); ``total``: the fitted level tonight over the level at ``start`` (1.21 =
    +21% so far); ``level_before``, ``level_now``: those two levels in the series' units; ``p_value``: the
    F-test of the trend against a flat level; ``nights``: nights from ``start`` to tonight, both included;
    ``reported``: significant enough to be a finding (``creep_pvalue``), else only taken out before the step
    test (``creep_keep_pvalue``)."""

    start: int
    rate: float
    total: float
    level_before: float
    level_now: float
    p_value: float
    nights: int
    reported: bool

    def trend(self, n: int) -> np.ndarray:
        """The fitted relative trend over nights 0..n-1 of the series (1 before ``start``)."""
        t = np.arange(n, dtype=float)
        return np.exp(np.log1p(self.rate) * np.maximum(0.0, t - self.start))


def _best_hinge(y: np.ndarray, first: int, last: int) -> tuple[int, float, float, float]:
    """Least squares of y = a + b max(0, t - s) over s in [first, last]: (s, a, b, residual sum of squares)
    of the best s. Closed form per s (one regressor and an intercept), vectorised over s."""
    n = len(y)
    t = np.arange(n, dtype=float)
    starts = np.arange(first, last + 1)
    h = np.maximum(0.0, t[None, :] - starts[:, None])
    ym = y - y.mean()
    hm = h - h.mean(axis=1, keepdims=True)
    shh = np.einsum("ij,ij->i", hm, hm)
    shy = hm @ ym
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(shh > 0, shy / shh, 0.0)
    rss = float(ym @ ym) - b * shy
    k = int(np.argmin(rss))
    a = float(y.mean() - b[k] * h[k].mean())
    return int(starts[k]), a, float(b[k]), float(max(rss[k], 0.0))


def _best_step_rss(y: np.ndarray) -> float:
    """The smallest residual sum of squares of one level change at any night (two means)."""
    n = len(y)
    ym = y - y.mean()
    c = np.cumsum(ym)[:-1]  # sum of the first tau values, tau = 1..n-1
    tau = np.arange(1, n, dtype=float)
    explained = c * c / tau + c * c / (n - tau)  # the other side's centred sum is -c
    return float(max(float(ym @ ym) - float(explained.max()), 0.0))


def find_creep(values: np.ndarray, settings: DetectorSettings | None = None) -> Creep | None:
    """The creep of a series tonight (its last night), or None: the drift test that runs before the step test.

    On the logarithm of the last ``creep_window`` nights (isolated odd nights clipped as for :func:`detect`),
    fit a *hinge* (flat, then a straight line from night s on, s at least ``creep_min_nights`` before
    tonight, best s by least squares) and the best single *step*. A creep is there when the hinge fits better
    than any step and its trend is significant against a flat level (F-test, 1 and n - 3 degrees of freedom:
    intercept, slope and the start). A step is a change of level; a creep is a change of rate: a series
    that creeps fits a line better than any step, and one that steps fits a step better than any line that
    has run ``creep_min_nights``. Scale-free (logarithms); None for a series with a value <= 0."""
    s = settings or DEFAULT_SETTINGS
    x = np.asarray(values, dtype=float)
    if s.creep_min_nights <= 0 or len(x) < 2 * s.creep_min_nights or not np.all(x > 0):
        return None
    offset = max(0, len(x) - s.creep_window)
    w = x[offset:]
    if s.robust:
        w = clip_isolated(w, s.clip_sigmas)
    y = np.log(w)
    n = len(y)
    last = n - s.creep_min_nights
    start, a, b, rss_hinge = _best_hinge(y, 0, last)
    if b == 0.0 or rss_hinge >= _best_step_rss(y):
        return None
    ym = y - y.mean()
    rss_flat = float(ym @ ym)
    df = n - 3
    if df <= 0:
        return None
    if rss_hinge <= (REL_EPS * max(1.0, float(np.abs(y).max()))) ** 2 * n:
        p = 0.0
    else:
        f = (rss_flat - rss_hinge) / (rss_hinge / df)
        p = float(special.fdtrc(1, df, max(f, 0.0)))
    if p > s.creep_keep_pvalue:
        return None
    nights = n - start
    total = float(np.exp(b * (n - 1 - start)))
    level_before = float(np.exp(a))
    return Creep(
        start=offset + start,
        rate=float(np.expm1(b)),
        total=total,
        level_before=level_before,
        level_now=level_before * total,
        p_value=p,
        nights=nights,
        reported=p <= s.creep_pvalue and abs(total - 1.0) >= s.creep_min_total,
    )


# --- one night across many series ----------------------------------------------------------------------


def benjamini_hochberg(p_values: np.ndarray, fdr: float, n_tests: int | None = None) -> np.ndarray:
    """Which of ``p_values`` are discoveries at false-discovery rate ``fdr`` (step-up BH).

    ``n_tests``: the number of hypotheses tested, when more than ``len(p_values)`` (the others had p = 1)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p) if n_tests is None else max(n_tests, len(p))
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    passed = p[order] <= fdr * np.arange(1, len(p) + 1) / m
    keep = np.zeros(len(p), dtype=bool)
    if passed.any():
        last = int(np.flatnonzero(passed)[-1])
        keep[order[: last + 1]] = True
    return keep


def new_change_points(
    values: np.ndarray,
    *,
    settings: DetectorSettings | None = None,
    confirmed: bool = False,
    new_nights: int | None = None,
    min_nights_after: int | None = None,
    window: int | None = None,
    max_pvalue: float | None = None,
    min_magnitude: float | None = None,
) -> list[ChangePoint]:
    """The change points of :func:`detect` whose index is among the last ``new_nights`` nights and that have
    at least ``min_nights_after`` nights at the new level (``min_nights_after_confirmed`` when
    ``confirmed``: the caller re-measures before recording)."""
    s = (settings or DEFAULT_SETTINGS).replace(
        new_nights=new_nights,
        min_nights_after=min_nights_after,
        window=window,
        max_pvalue=max_pvalue,
        min_magnitude=min_magnitude,
    )
    s = s.for_path(confirmed) if max_pvalue is None else s
    x = np.asarray(values, dtype=float)
    return keep_new(detect(x, settings=s), x, s, confirmed=confirmed)


def keep_new(
    change_points: list[ChangePoint],
    values: np.ndarray,
    settings: DetectorSettings,
    *,
    confirmed: bool = False,
) -> list[ChangePoint]:
    """The change points of ``values`` (the series :func:`detect` found them in) that are new tonight: index
    among the last ``settings.new_nights`` nights, with at least ``min_nights_after``
    (``min_nights_after_confirmed`` when ``confirmed``) nights at the new level and, with
    ``settings.tonight_on_level`` (robust rules only), tonight's value nearer to the new level than to the
    level before: a series that is back on its old level tonight has not changed (two odd nights followed
    by an ordinary one), and a re-measurement of an ordinary night would confirm nothing. A change point
    needs ``min_nights_before`` nights before it: the level of a new series is not known yet."""
    nights = len(values)
    after = settings.min_nights_after_confirmed if confirmed else settings.min_nights_after
    out = [
        c
        for c in change_points
        if nights - settings.new_nights <= c.index <= nights - after and c.index >= settings.min_nights_before
    ]
    if settings.robust and settings.tonight_on_level and out:
        tonight = float(values[-1])
        out = [c for c in out if on_level(tonight, c)]
    return out


def on_level(value: float, change_point: ChangePoint) -> bool:
    """``value`` is nearer (in logs) to the change point's new level than to the level before it."""
    if not (value > 0 and change_point.mean_before > 0 and change_point.mean_after > 0):
        return abs(value - change_point.mean_after) < abs(value - change_point.mean_before)
    v = np.log(value)
    return bool(abs(v - np.log(change_point.mean_after)) < abs(v - np.log(change_point.mean_before)))


def analyze_night(
    series: Mapping[K, np.ndarray],
    *,
    settings: DetectorSettings | None = None,
    confirmed: bool = False,
    n_tests: int | None = None,
    fdr: float | None = None,
    new_nights: int | None = None,
    min_nights_after: int | None = None,
    window: int | None = None,
    max_pvalue: float | None = None,
    min_magnitude: float | None = None,
) -> list[tuple[K, ChangePoint]]:
    """Detect on every series of a night; keep the new change points that survive Benjamini-Hochberg.

    A change point is *new* when its index is among the last ``new_nights`` nights of its series. The
    hypotheses are one per series (p = 1 when it has no new candidate) or one per candidate when it has
    several; ``n_tests`` overrides that count (e.g. to include series that were not analysed). Returns
    (key, change point) in the order of ``series``, oldest change point first within a series. The
    settings come from ``settings`` (default :data:`DEFAULT_SETTINGS`), the keyword arguments override it."""
    s = (settings or DEFAULT_SETTINGS).replace(
        fdr=fdr,
        new_nights=new_nights,
        min_nights_after=min_nights_after,
        window=window,
        max_pvalue=max_pvalue,
        min_magnitude=min_magnitude,
    )
    candidates: list[tuple[K, ChangePoint]] = []
    hypotheses = 0
    for key, values in series.items():
        found = new_change_points(np.asarray(values, dtype=float), settings=s, confirmed=confirmed)
        candidates.extend((key, cp) for cp in found)
        hypotheses += max(1, len(found))
    return keep_discoveries(candidates, s.fdr, hypotheses if n_tests is None else n_tests)


def keep_discoveries(
    candidates: list[tuple[K, ChangePoint]], fdr: float, n_tests: int
) -> list[tuple[K, ChangePoint]]:
    """The candidates that survive Benjamini-Hochberg at ``fdr`` among ``n_tests`` hypotheses."""
    if not candidates:
        return []
    keep = benjamini_hochberg(np.array([cp.p_value for _, cp in candidates]), fdr, n_tests)
    return [c for c, k in zip(candidates, keep, strict=True) if k]
