"""How good the nightly change-point detector is, measured on synthetic series (DESIGN §5, §8).

**Noise model** (anchors §4.3). A night is one pyperf run of ``processes`` x ``values`` timing values; value
= level x (1 + o) x (1 + e), with the night offset o ~ N(0, sigma_night) shared by the night's values and
e ~ N(0, sigma_value) drawn per value. The night's summary is the mean of its values, so its night-to-night
spread is about sqrt(sigma_night^2 + sigma_value^2 / (processes x values)). An A/A series keeps one level;
a step series multiplies the level by (1 + step) from night ``history`` on.

**Online, as used.** Every night the detector sees the history up to that night
(:func:`~benchsvc.analysis.changepoints.analyze_night` semantics): it runs ``detect`` on the prefix, keeps
the change points new that night (index among the last ``new_nights``), applies Benjamini-Hochberg across
the night's series, and a change point raises an alert the first time its (series, index) survives (the
store records a nightly finding once per series and change night). A/A series are grouped into nights of
``series_per_night`` series, so BH runs on real nights. A step series is scored as the only changed series
of a night whose other ``series_per_night - 1`` series are quiet (p = 1): the hardest case for BH.

**Scores.** ``false_alarm_rate``: alerts per A/A series-night after a ``warmup`` of nights. ``power_k``:
fraction of step series with an alert within ``tolerance`` nights of the true change night, raised on one
of the first k nights at the new level (k = 1: the night of the step itself). ``exact_night``: among those
detections (within 5 nights), the fraction whose first alert names the true change night.
``ci_coverage``: among them, the fraction whose 95% interval of the effect covers the true ratio 1 + step.
Each rate comes with a 95% Clopper-Pearson interval (``*_low``, ``*_high``).

Everything is seeded (one ``numpy.random.Generator`` per scenario, derived from ``seed`` and the
scenario's position), so the same call gives the same table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from benchsvc.analysis import changepoints as cp

DEFAULT_TRIALS = 1000
DEFAULT_NIGHTS = 100
DEFAULT_WARMUP = 10
DEFAULT_SERIES_PER_NIGHT = 100
DEFAULT_TOLERANCE = 2
MAX_LATENCY = 5
LATENCIES = (1, 3, 5)

SUMMARY_COLUMNS = [
    "name",
    "noise",
    "step",
    "false_alarm_rate",
    "power_1",
    "power_3",
    "power_5",
    "exact_night",
    "ci_coverage",
    "trials",
]
RATES = ["false_alarm_rate", "power_1", "power_3", "power_5", "exact_night", "ci_coverage"]
COLUMNS = [
    *SUMMARY_COLUMNS,
    "series_nights",
    "false_alarms",
    "detections",
    *(f"{r}_{side}" for r in RATES for side in ("low", "high")),
]


@dataclass(frozen=True)
class Scenario:
    """One evaluation scenario: a noise level and a step (0 for A/A), in the noise model above."""

    name: str
    sigma_night: float
    step: float = 0.0
    sigma_value: float = 0.02
    processes: int = 20
    values: int = 3
    history: int = 45  # nights before the step (step scenarios)
    level: float = 1.0e-3  # seconds; only the ratios matter

    @property
    def is_aa(self) -> bool:
        return self.step == 0.0

    @property
    def summary_noise(self) -> float:
        """The night-to-night standard deviation of the summary, relative to the level."""
        return float(np.hypot(self.sigma_night, self.sigma_value / np.sqrt(self.processes * self.values)))


DEFAULT_SCENARIOS: list[Scenario] = [
    Scenario("A/A 0.5%", sigma_night=0.005),
    Scenario("A/A 1.5%", sigma_night=0.015),
    Scenario("+5% at 1.5%", sigma_night=0.015, step=0.05),
    Scenario("+2% at 0.5%", sigma_night=0.005, step=0.02),
]


@dataclass(frozen=True)
class DetectorSettings:
    """The detector's knobs, as :func:`~benchsvc.analysis.changepoints.analyze_night` takes them."""

    window: int = cp.DEFAULT_WINDOW
    max_pvalue: float = cp.DEFAULT_MAX_PVALUE
    min_magnitude: float = cp.DEFAULT_MIN_MAGNITUDE
    fdr: float = cp.DEFAULT_FDR
    new_nights: int = cp.DEFAULT_NEW_NIGHTS
    min_nights_after: int = cp.DEFAULT_MIN_NIGHTS_AFTER

    def new_change_points(self, values: np.ndarray) -> list[cp.ChangePoint]:
        return cp.new_change_points(
            values,
            new_nights=self.new_nights,
            min_nights_after=self.min_nights_after,
            window=self.window,
            max_pvalue=self.max_pvalue,
            min_magnitude=self.min_magnitude,
        )


@dataclass
class _Alerts:
    """Alerts raised for one series: (night, change point), in night order."""

    seen: set[int] = field(default_factory=set)
    alerts: list[tuple[int, cp.ChangePoint]] = field(default_factory=list)


def simulate(scenario: Scenario, trials: int, nights: int, rng: np.random.Generator) -> np.ndarray:
    """Nightly summaries, shape (trials, nights): the mean of processes x values per night."""
    offsets = rng.normal(0.0, scenario.sigma_night, size=(trials, nights))
    within = rng.normal(
        0.0, scenario.sigma_value, size=(trials, nights, scenario.processes * scenario.values)
    )
    level = np.full(nights, scenario.level)
    if not scenario.is_aa:
        level[scenario.history :] *= 1.0 + scenario.step
    return level * (1.0 + offsets) * (1.0 + within).mean(axis=2)


def _online(
    summaries: np.ndarray,
    first_night: int,
    settings: DetectorSettings,
    series_per_night: int,
    *,
    grouped: bool,
) -> list[_Alerts]:
    """Run the detector night by night from ``first_night``; the alerts raised for each series.

    ``grouped``: BH over real nights of ``series_per_night`` consecutive series; otherwise each series is
    the only candidate of a night of ``series_per_night`` series."""
    trials, nights = summaries.shape
    out = [_Alerts() for _ in range(trials)]
    group = series_per_night if grouped else 1
    for t in range(first_night, nights):
        for g0 in range(0, trials, group):
            members = range(g0, min(g0 + group, trials))
            cands = [(j, c) for j in members for c in settings.new_change_points(summaries[j, : t + 1])]
            if not cands:
                continue
            per_series = {j: sum(1 for i, _ in cands if i == j) for j in members}
            n_tests = sum(max(1, k) for k in per_series.values()) + (series_per_night - len(members))
            keep = cp.benjamini_hochberg(np.array([c.p_value for _, c in cands]), settings.fdr, n_tests)
            for (j, c), k in zip(cands, keep, strict=True):
                if k and c.index not in out[j].seen:
                    out[j].seen.add(c.index)
                    out[j].alerts.append((t, c))
    return out


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a proportion k/n (NaN when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def _rate(row: dict[str, object], name: str, k: int, n: int) -> None:
    row[name] = k / n if n else float("nan")
    row[f"{name}_low"], row[f"{name}_high"] = binomial_interval(k, n)


def _aa_row(
    scenario: Scenario,
    trials: int,
    nights: int,
    warmup: int,
    settings: DetectorSettings,
    series_per_night: int,
    rng: np.random.Generator,
) -> dict[str, object]:
    summaries = simulate(scenario, trials, nights, rng)
    alerts = _online(summaries, warmup, settings, series_per_night, grouped=True)
    false_alarms = sum(len(a.alerts) for a in alerts)
    series_nights = trials * (nights - warmup)
    row: dict[str, object] = {"series_nights": series_nights, "false_alarms": false_alarms, "detections": 0}
    _rate(row, "false_alarm_rate", false_alarms, series_nights)
    for name in RATES[1:]:
        _rate(row, name, 0, 0)
    return row


def _step_row(
    scenario: Scenario,
    trials: int,
    tolerance: int,
    settings: DetectorSettings,
    series_per_night: int,
    rng: np.random.Generator,
) -> dict[str, object]:
    s = scenario.history
    summaries = simulate(scenario, trials, s + MAX_LATENCY, rng)
    alerts = _online(summaries, s, settings, series_per_night, grouped=False)
    latency: list[int] = []
    exact = covered = 0
    truth = 1.0 + scenario.step
    for a in alerts:
        hit = next(((t, c) for t, c in a.alerts if abs(c.index - s) <= tolerance), None)
        if hit is None:
            continue
        t, c = hit
        latency.append(t - s + 1)
        exact += int(c.index == s)
        covered += int(c.ci_low <= truth <= c.ci_high)
    lat = np.array(latency, dtype=int)
    detections = len(latency)
    row: dict[str, object] = {"series_nights": 0, "false_alarms": 0, "detections": detections}
    _rate(row, "false_alarm_rate", 0, 0)
    for k in LATENCIES:
        _rate(row, f"power_{k}", int(np.sum(lat <= k)), trials)
    _rate(row, "exact_night", exact, detections)
    _rate(row, "ci_coverage", covered, detections)
    return row


def run_evaluation(
    scenarios: Sequence[Scenario] | None = None,
    *,
    trials: int = DEFAULT_TRIALS,
    nights: int = DEFAULT_NIGHTS,
    seed: int = 0,
    warmup: int = DEFAULT_WARMUP,
    series_per_night: int = DEFAULT_SERIES_PER_NIGHT,
    tolerance: int = DEFAULT_TOLERANCE,
    settings: DetectorSettings | None = None,
) -> pd.DataFrame:
    """One row per scenario (default :data:`DEFAULT_SCENARIOS`): false alarms, power, localisation, coverage.

    ``trials``: series per scenario; A/A series are ``nights`` long and scored from night ``warmup`` on
    (``trials x (nights - warmup)`` series-nights); step series have ``history`` nights before the step and
    are scored on the first 5 nights at the new level. Columns: :data:`COLUMNS` (:data:`SUMMARY_COLUMNS`
    first, then counts and 95% Clopper-Pearson bounds ``<rate>_low``/``<rate>_high``)."""
    if trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")
    if nights <= warmup:
        raise ValueError(f"nights ({nights}) must exceed the warm-up ({warmup})")
    settings = settings or DetectorSettings()
    rows = []
    for i, sc in enumerate(DEFAULT_SCENARIOS if scenarios is None else scenarios):
        rng = np.random.default_rng([seed, i])
        if sc.is_aa:
            row = _aa_row(sc, trials, nights, warmup, settings, series_per_night, rng)
        else:
            row = _step_row(sc, trials, tolerance, settings, series_per_night, rng)
        row.update(name=sc.name, noise=sc.sigma_night, step=sc.step, trials=trials)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def estimate_noise(summaries: np.ndarray) -> float:
    """Robust night-to-night noise of a real series, relative to its median.

    1.4826 x MAD of the first differences / sqrt(2) / median: a level shift spoils one difference, not the
    estimate. NaNs are dropped; fewer than 3 nights give NaN."""
    x = np.asarray(summaries, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return float("nan")
    d = np.diff(x)
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / np.sqrt(2.0) / abs(float(np.median(x)))


def _power_within(
    step: float,
    base: np.ndarray,
    within: int,
    settings: DetectorSettings,
    series_per_night: int,
    tolerance: int,
) -> float:
    history = base.shape[1] - within
    summaries = base.copy()
    summaries[:, history:] *= 1.0 + step
    alerts = _online(summaries, history, settings, series_per_night, grouped=False)
    hits = sum(any(abs(c.index - history) <= tolerance for _, c in a.alerts) for a in alerts)
    return hits / len(alerts)


def smallest_detectable_step(
    noise: float,
    *,
    power: float = 0.9,
    within: int = 3,
    trials: int = 200,
    history: int = 45,
    seed: int = 0,
    series_per_night: int = DEFAULT_SERIES_PER_NIGHT,
    tolerance: int = DEFAULT_TOLERANCE,
    settings: DetectorSettings | None = None,
    rel_precision: float = 0.02,
) -> float:
    """The smallest relative step found within ``within`` nights in at least ``power`` of the trials.

    ``noise`` is the night-to-night noise of the summaries (e.g. :func:`estimate_noise`), simulated as
    N(0, noise) per night with no extra within-night term. Bisection on the step size (the same noise for
    every size, so power grows with the step), to ``rel_precision``; the answer is rounded up."""
    if not noise > 0:
        raise ValueError(f"noise must be positive, not {noise}")
    settings = settings or DetectorSettings()
    rng = np.random.default_rng([seed, 1_000_003])
    base = 1.0 + rng.normal(0.0, noise, size=(trials, history + within))

    def ok(step: float) -> bool:
        return _power_within(step, base, within, settings, series_per_night, tolerance) >= power

    lo, hi = 0.0, max(settings.min_magnitude * 2, 4 * noise)
    while not ok(hi):
        lo, hi = hi, hi * 2
        if hi > 10:
            return float("inf")
    while hi - lo > rel_precision * hi:
        mid = (lo + hi) / 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi
