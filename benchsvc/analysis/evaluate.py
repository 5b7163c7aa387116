"""How good the nightly change-point detector is, measured on synthetic series (``docs/detection.md``).

**Noise model.** A night is one pyperf run of ``processes`` x ``values`` timing values; value
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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from benchsvc.analysis import changepoints as cp
from benchsvc.analysis.changepoints import DetectorSettings
from benchsvc.analysis.nightly import decide_night, decide_night_both

DEFAULT_TRIALS = 1000
DEFAULT_NIGHTS = 100
DEFAULT_WARMUP = 10
DEFAULT_SERIES_PER_NIGHT = 100
DEFAULT_TOLERANCE = 2
#: the re-measurement's noise relative to a night's: the default mode re-measures in 4 worker processes
#: against the night's 6 (``benchsvc.runner.blocks.CONFIRM_PROCESSES``, ``SAMPLING``)
REDRAW_NOISE = math.sqrt(6 / 4)
MAX_LATENCY = 5
LATENCIES = (1, 3, 5)

SUMMARY_COLUMNS = [
    "name",
    "noise",
    "step",
    "confirmation",
    "false_alarm_rate",
    "power_1",
    "power_3",
    "power_5",
    "exact_night",
    "ci_coverage",
    "machine_event_rate",
    "slow_night_events",
    "creeps_found",
    "records_per_creep",
    "trials",
]
RATES = [
    "false_alarm_rate",
    "power_1",
    "power_3",
    "power_5",
    "exact_night",
    "ci_coverage",
    "machine_event_rate",
    "slow_night_events",
    "creeps_found",
]
COLUMNS = [
    *SUMMARY_COLUMNS,
    "series_nights",
    "false_alarms",
    "detections",
    "machine_nights",
    "machine_events",
    "slow_nights",
    "slow_nights_alerted",
    "creeping_series",
    "max_records_per_creep",
    *(f"{r}_{side}" for r in RATES for side in ("low", "high")),
]


@dataclass(frozen=True)
class Scenario:
    """One evaluation scenario: a noise class, a noise level and a step (0 for A/A).

    The series of a scenario sit on machines of ``series_per_night`` series (:func:`run_evaluation`).
    Per-series noise: the night offset ``o`` is Gaussian N(0, sigma_night), or Student t with ``tail_df``
    degrees of freedom scaled by sigma_night; ``outlier_rate``: the chance that a series has a slow night,
    its value times U(``outlier_low``, ``outlier_high``); ``bimodal_shift``: the series sits on level
    1 + shift or 1 - shift and changes level with chance ``bimodal_switch`` each night. Machine-wide (all
    series of a machine together): ``shared_sigma`` a Gaussian factor every night (correlated neighbours);
    ``machine_night_rate``: the chance of a slow night for the whole machine, every series times
    1 + ``machine_night_shift``; ``drift_sigma``: a random walk of the machine's speed (slow drift), this
    standard deviation per night.

    Shapes of a series' level beyond steps: ``seasonal_amplitude``: a weekly pattern (period
    ``seasonal_period`` nights, a random phase per series) of that relative amplitude; ``walk_sigma``: each
    series' level is its own random walk with this standard deviation per night; ``creep_share``: that share of
    the series creep by ``creep_rate`` a night over the last ``creep_nights`` nights (a creep is scored apart:
    ``creeps_found`` and records per creeping series; the alerts on the others are the false alerts).

    The re-measurement of a night (the run's confirmation, minutes after the night's own measurement, in
    fresh worker processes): the same level (a step included), the same machine-wide state (shared factor,
    drift, machine-wide slow night) and the same bimodal level, but a fresh per-series offset, fresh
    within-night noise and fresh single-series slow nights. ``redraw_corr``: the correlation of the
    re-measurement's per-series offset with the night's (0: the offset comes from the processes that
    measured it, not from the night); ``redraw_noise``: the standard deviation of its fresh noise relative
    to the night's own (:data:`REDRAW_NOISE`: fewer processes)."""

    name: str
    sigma_night: float
    step: float = 0.0
    sigma_value: float = 0.02
    processes: int = 20
    values: int = 3
    history: int = 45  # nights before the step (step scenarios)
    level: float = 1.0e-3  # seconds; only the ratios matter
    tail_df: float = 0.0
    outlier_rate: float = 0.0
    outlier_low: float = 1.5
    outlier_high: float = 3.0
    bimodal_shift: float = 0.0
    bimodal_switch: float = 0.3
    shared_sigma: float = 0.0
    machine_night_rate: float = 0.0
    machine_night_shift: float = 0.08
    drift_sigma: float = 0.0
    redraw_corr: float = 0.0
    redraw_noise: float = REDRAW_NOISE
    seasonal_amplitude: float = 0.0
    seasonal_period: float = 7.0
    walk_sigma: float = 0.0
    creep_share: float = 0.0
    creep_rate: float = 0.003
    creep_nights: int = 70

    @property
    def is_aa(self) -> bool:
        return self.step == 0.0

    @property
    def summary_noise(self) -> float:
        """The night-to-night standard deviation of a Gaussian summary, relative to the level."""
        return float(np.hypot(self.sigma_night, self.sigma_value / np.sqrt(self.processes * self.values)))


DEFAULT_SCENARIOS: list[Scenario] = [
    Scenario("A/A 0.5%", sigma_night=0.005),
    Scenario("A/A 1.5%", sigma_night=0.015),
    Scenario("+5% at 1.5%", sigma_night=0.015, step=0.05),
    Scenario("+2% at 0.5%", sigma_night=0.005, step=0.02),
]

#: The noise classes real machines show, each at 1.5% per-series noise (``benchsvc evaluate --classes``).
NOISE_CLASSES: list[Scenario] = [
    Scenario("gaussian", sigma_night=0.015),
    Scenario("machine slow nights", sigma_night=0.015, machine_night_rate=1 / 30),
    Scenario("heavy tails t3", sigma_night=0.015, tail_df=3.0),
    Scenario("slow nights 2%", sigma_night=0.015, outlier_rate=0.02),
    Scenario("bimodal +-3%", sigma_night=0.01, bimodal_shift=0.03, bimodal_switch=0.5),
    Scenario("slow drift", sigma_night=0.015, drift_sigma=0.003),
    Scenario("correlated", sigma_night=0.011, shared_sigma=0.01),
    Scenario("creep +0.3%/night (10%)", sigma_night=0.015, creep_share=0.1),
    Scenario("seasonal weekly ±2%", sigma_night=0.01, seasonal_amplitude=0.02),
    Scenario("random walk 0.3%", sigma_night=0.01, walk_sigma=0.003),
    Scenario("wandering machine 5%", sigma_night=0.01, shared_sigma=0.05),
    Scenario("+5% gaussian", sigma_night=0.015, step=0.05),
    Scenario("+5% machine slow nights", sigma_night=0.015, step=0.05, machine_night_rate=1 / 30),
    Scenario("+5% correlated", sigma_night=0.011, shared_sigma=0.01, step=0.05),
]


@dataclass(frozen=True)
class Simulated:
    """Simulated summaries (machines x series x nights), the re-measurement of every night (same shape, see
    :class:`Scenario`) and which machine-nights were machine-wide slow."""

    values: np.ndarray
    again: np.ndarray
    slow: np.ndarray  # machines x nights, bool
    creeping: np.ndarray | None = None  # machines x series, bool (creep scenarios)


def _offsets(sc: Scenario, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if sc.tail_df > 0:
        # scaled to the standard deviation sigma_night (t has variance df / (df - 2))
        return (
            sc.sigma_night * np.sqrt((sc.tail_df - 2) / sc.tail_df) * rng.standard_t(sc.tail_df, size=shape)
        )
    return rng.normal(0.0, sc.sigma_night, size=shape)


def _outliers(sc: Scenario, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if sc.outlier_rate <= 0:
        return x
    hit = rng.random(x.shape) < sc.outlier_rate
    return np.where(hit, x * rng.uniform(sc.outlier_low, sc.outlier_high, size=x.shape), x)


def simulate_machines(
    scenario: Scenario, machines: int, series: int, nights: int, rng: np.random.Generator
) -> Simulated:
    """Nightly summaries of ``machines`` machines of ``series`` series: the mean of processes x values
    per night (drawn directly: the mean of the within-night values is Gaussian), times the noise class.
    In a step scenario, series 0 of every machine steps at night ``history``. The re-measurements are
    drawn after everything else, so the summaries do not depend on them."""
    sc = scenario
    shape = (machines, series, nights)
    offsets = _offsets(sc, shape, rng)
    within_sd = sc.sigma_value / np.sqrt(sc.processes * sc.values)
    within = rng.normal(0.0, within_sd, size=shape)
    x = _outliers(sc, sc.level * (1.0 + offsets) * (1.0 + within), rng)
    mode = np.ones(shape)
    if sc.bimodal_shift > 0:
        switch = rng.random(shape) < sc.bimodal_switch
        start = rng.random((machines, series, 1)) < 0.5
        upper = (np.cumsum(switch, axis=2) + start) % 2 == 1
        mode = np.where(upper, 1.0 + sc.bimodal_shift, 1.0 - sc.bimodal_shift)
    machine = np.ones((machines, nights))
    if sc.shared_sigma > 0:
        machine *= 1.0 + rng.normal(0.0, sc.shared_sigma, size=(machines, nights))
    if sc.drift_sigma > 0:
        machine *= np.exp(np.cumsum(rng.normal(0.0, sc.drift_sigma, size=(machines, nights)), axis=1))
    slow = np.zeros((machines, nights), dtype=bool)
    if sc.machine_night_rate > 0:
        slow = rng.random((machines, nights)) < sc.machine_night_rate
        machine *= np.where(slow, 1.0 + sc.machine_night_shift, 1.0)
    level = mode * machine[:, None, :]
    creeping = None
    if sc.seasonal_amplitude > 0:
        phase = rng.uniform(0, 2 * np.pi, size=(machines, series, 1))
        t = np.arange(nights)[None, None, :]
        level = level * (1.0 + sc.seasonal_amplitude * np.sin(2 * np.pi * t / sc.seasonal_period + phase))
    if sc.walk_sigma > 0:
        level = level * np.exp(np.cumsum(rng.normal(0.0, sc.walk_sigma, size=shape), axis=2))
    if sc.creep_share > 0:
        creeping = rng.random((machines, series)) < sc.creep_share
        creep_start = nights - sc.creep_nights
        ramp = (1.0 + sc.creep_rate) ** np.maximum(0, np.arange(nights) - creep_start + 1)
        level = np.where(creeping[:, :, None], level * ramp[None, None, :], level)
    if not sc.is_aa:
        level[:, 0, sc.history :] *= 1.0 + sc.step
    # the re-measurement: a fresh per-series offset (correlated redraw_corr with the night's), fresh
    # within-night noise and fresh slow nights, at the same level and machine state
    fresh = _offsets(sc, shape, rng)
    rho = sc.redraw_corr
    offsets2 = rho * offsets + np.sqrt(1.0 - rho * rho) * sc.redraw_noise * fresh
    within2 = rng.normal(0.0, within_sd * sc.redraw_noise, size=shape)
    again = _outliers(sc, sc.level * (1.0 + offsets2) * (1.0 + within2), rng)
    return Simulated(values=x * level, again=again * level, slow=slow, creeping=creeping)


def simulate(scenario: Scenario, trials: int, nights: int, rng: np.random.Generator) -> np.ndarray:
    """Nightly summaries of ``trials`` independent series, shape (trials, nights) (one machine per series)."""
    sim = simulate_machines(scenario, trials, 1, nights, rng)
    return sim.values[:, 0, :]


@dataclass
class _Alerts:
    """Alerts raised for one series: (night, change point), in night order."""

    seen: set[int] = field(default_factory=set)
    alerts: list[tuple[int, cp.ChangePoint]] = field(default_factory=list)
    #: nights a creep record was made (a creep whose nights include the night the last one was seen updates
    #: that record, as the store does), and the last night it was seen
    creeps: list[int] = field(default_factory=list)
    creep_seen: int = -(10**9)


@dataclass
class _MachineLog:
    """Machine events per machine: the nights they were raised on."""

    nights: list[int] = field(default_factory=list)


#: the decision paths the evaluation scores: "none" (nothing re-measured: ``benchsvc analyze``, ``benchsvc
#: run --no-confirm``), "levels" (``benchsvc run``: candidates re-measured and recorded if
#: :func:`held_levels`), "halfstep" (the same with :func:`held`, an alternative test)
Path = Literal["none", "halfstep", "levels"]
PATHS: tuple[Path, ...] = ("none", "halfstep", "levels")


def held_levels(again: float, change_point: cp.ChangePoint) -> bool:
    """The test of ``benchsvc run`` (:func:`benchsvc.runner.matrix.nightly_change_held`): the re-measurement
    (in the change point's corrected units) is nearer to the new level than to the level before
    (:func:`~benchsvc.analysis.changepoints.on_level`)."""
    return cp.on_level(again, change_point)


def held(effect: float, first: float, again: float) -> bool:
    """Whether a re-measurement ``again`` of tonight confirms a change point of ratio ``effect`` whose night
    was measured as ``first``: the re-measurement stays on the new level, within half the step (in logs) of
    tonight's value: an alternative to :func:`held_levels` (which ``benchsvc run`` uses), scored for
    comparison."""
    if not (first > 0 and again > 0 and effect > 0) or effect == 1.0:
        return False
    return abs(math.log(again / first)) < abs(math.log(effect)) / 2


def _online_machine(
    values: np.ndarray,
    code: np.ndarray,
    first_night: int,
    settings: DetectorSettings,
    *,
    rows: list[int] | None = None,
    n_tests: int | None = None,
    again: np.ndarray | None = None,
) -> tuple[dict[Path, list[_Alerts]], _MachineLog]:
    """The nightly decision (:func:`~benchsvc.analysis.nightly.decide_night`) night by night from
    ``first_night`` on one machine (series x nights): the alerts raised for each series without
    confirmation (path "none": ``benchsvc analyze``), with it (paths "halfstep" and "levels", the two tests of
    a re-measurement; only when ``again``, the re-measurement of every series-night, is given, else empty)
    and the machine events. Without confirmation a change point
    alerts the first time its (series, index) survives with ``min_nights_after`` nights after it. With
    confirmation it is a candidate from ``min_nights_after_confirmed`` nights on, tonight's value of its
    series is re-measured and it alerts the first time the re-measurement holds; one that did not
    hold stays a candidate on the following nights (re-measured again each night)."""
    series, nights = values.shape
    out: dict[Path, list[_Alerts]] = {p: [_Alerts() for _ in range(series)] for p in PATHS}
    plain = out["none"]
    log = _MachineLog()
    for t in range(first_night, nights):
        prefix, codes = values[:, : t + 1], list(code[: t + 1])
        if again is None:
            decision = decide_night(prefix, codes, settings, rows=rows, n_tests=n_tests)
        else:
            decision, with_confirmation = decide_night_both(
                prefix, codes, settings, rows=rows, n_tests=n_tests
            )
            for j, c in with_confirmation.findings:
                tests = {
                    "halfstep": held(c.effect, values[j, t], again[j, t]),
                    "levels": held_levels(again[j, t] / with_confirmation.factors[t], c),
                }
                for path, ok in tests.items():
                    alerts = out[path][j]  # type: ignore[index]
                    if ok and c.index not in alerts.seen:
                        alerts.seen.add(c.index)
                        alerts.alerts.append((t, c))
        if decision.machine_event is not None:
            log.nights.append(t)
        for j, creep in decision.creeps:
            for path in PATHS:  # a creep is recorded whatever the path (nothing to re-measure)
                a = out[path][j]
                if path != "none" and again is None:
                    continue
                # as the store: the same creep when the last one was seen on this creep's nights
                if a.creep_seen < creep.start - settings.creep_min_nights:
                    a.creeps.append(t)
                a.creep_seen = t
        for j, c in decision.findings:
            if c.index not in plain[j].seen:
                plain[j].seen.add(c.index)
                plain[j].alerts.append((t, c))
    return out, log


def _online(
    summaries: np.ndarray,
    first_night: int,
    settings: DetectorSettings,
    series_per_night: int,
    *,
    grouped: bool,
) -> list[_Alerts]:
    """Independent series (trials x nights) night by night: grouped into machines of ``series_per_night``
    series (``grouped``), or each series alone on a night of ``series_per_night`` series whose others are
    quiet (p = 1)."""
    trials, nights = summaries.shape
    code = np.zeros(nights, dtype=int)
    out: list[_Alerts] = []
    if grouped:
        for g0 in range(0, trials, series_per_night):
            alerts, _ = _online_machine(summaries[g0 : g0 + series_per_night], code, first_night, settings)
            out.extend(alerts["none"])
        return out
    for j in range(trials):
        alerts, _ = _online_machine(
            summaries[j : j + 1], code, first_night, settings, n_tests=series_per_night
        )
        out.extend(alerts["none"])
    return out


def binomial_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval of a proportion k/n (``scipy.stats.binomtest``; NaN when n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level)
    return float(ci.low), float(ci.high)


def _rate(row: dict[str, object], name: str, k: int, n: int) -> None:
    row[name] = k / n if n else float("nan")
    row[f"{name}_low"], row[f"{name}_high"] = binomial_interval(k, n)


def _empty_row() -> dict[str, object]:
    row: dict[str, object] = {
        "series_nights": 0,
        "false_alarms": 0,
        "detections": 0,
        "machine_nights": 0,
        "machine_events": 0,
        "slow_nights": 0,
        "slow_nights_alerted": 0,
        "creeping_series": 0,
        "records_per_creep": float("nan"),
        "max_records_per_creep": 0,
    }
    for name in RATES:
        _rate(row, name, 0, 0)
    return row


def _aa_rows(
    scenario: Scenario,
    trials: int,
    nights: int,
    warmup: int,
    settings: DetectorSettings,
    series_per_night: int,
    rng: np.random.Generator,
    paths: Sequence[Path],
) -> list[dict[str, object]]:
    per = min(series_per_night, trials)
    machines = -(-trials // per)
    sim = simulate_machines(scenario, machines, per, nights, rng)
    code = np.zeros(nights, dtype=int)
    false_alarms = dict.fromkeys(PATHS, 0)
    slow_alerted = dict.fromkeys(PATHS, 0)
    creep_records: dict[Path, list[int]] = {p: [] for p in PATHS}
    creep_found = dict.fromkeys(PATHS, 0)
    events = slow_nights = slow_events = normal_nights = 0
    for m in range(machines):
        size = per if m < machines - 1 else trials - per * (machines - 1)
        again = sim.again[m, :size] if set(paths) - {"none"} else None
        by_path, log = _online_machine(sim.values[m, :size], code, warmup, settings, again=again)
        slow = sim.slow[m, warmup:]
        slow_nights += int(slow.sum())
        normal_nights += int((~slow).sum())
        on_slow = {t for t in log.nights if sim.slow[m, t]}
        slow_events += len(on_slow)
        events += len(log.nights) - len(on_slow)
        creeping = np.zeros(size, dtype=bool) if sim.creeping is None else sim.creeping[m, :size].astype(bool)
        for mode, alerts in by_path.items():
            for j, a in enumerate(alerts):
                records = len(a.alerts) + len(a.creeps)
                if creeping[j]:
                    creep_records[mode].append(records)
                    creep_found[mode] += int(bool(a.creeps))
                else:
                    false_alarms[mode] += records
            alerted = {c.index for a in alerts for _, c in a.alerts}
            slow_alerted[mode] += sum(1 for t in np.flatnonzero(sim.slow[m]) if t >= warmup and t in alerted)
    creeping_series = len(creep_records["none"])
    series_nights = (trials - creeping_series) * (nights - warmup)
    out = []
    for mode in paths:
        row = _empty_row()
        row.update(
            confirmation=mode,
            series_nights=series_nights,
            false_alarms=false_alarms[mode],
            machine_nights=machines * (nights - warmup),
            machine_events=events + slow_events,
            slow_nights=slow_nights,
            slow_nights_alerted=slow_alerted[mode],
        )
        _rate(row, "false_alarm_rate", false_alarms[mode], series_nights)
        _rate(row, "machine_event_rate", events, normal_nights)
        _rate(row, "slow_night_events", slow_events, slow_nights)
        if creeping_series:
            recs = creep_records[mode]
            row.update(
                creeping_series=creeping_series,
                records_per_creep=float(np.mean(recs)),
                max_records_per_creep=int(max(recs)),
            )
            _rate(row, "creeps_found", creep_found[mode], creeping_series)
        out.append(row)
    return out


def _step_rows(
    scenario: Scenario,
    trials: int,
    tolerance: int,
    settings: DetectorSettings,
    series_per_night: int,
    rng: np.random.Generator,
    paths: Sequence[Path],
) -> list[dict[str, object]]:
    s = scenario.history
    nights = s + MAX_LATENCY
    sim = simulate_machines(scenario, trials, series_per_night, nights, rng)
    code = (np.arange(nights) >= s).astype(int)  # the step comes with a change of the engine's code
    latency: dict[Path, list[int]] = {p: [] for p in PATHS}
    exact = dict.fromkeys(PATHS, 0)
    covered = dict.fromkeys(PATHS, 0)
    truth = 1.0 + scenario.step
    for m in range(trials):
        again = sim.again[m] if set(paths) - {"none"} else None
        by_path, _ = _online_machine(
            sim.values[m], code, s, settings, rows=[0], n_tests=series_per_night, again=again
        )
        for mode, alerts in by_path.items():
            hit = next(((t, c) for t, c in alerts[0].alerts if abs(c.index - s) <= tolerance), None)
            if hit is None:
                continue
            t, c = hit
            latency[mode].append(t - s + 1)
            exact[mode] += int(c.index == s)
            covered[mode] += int(c.ci_low <= truth <= c.ci_high)
    out = []
    for mode in paths:
        lat = np.array(latency[mode], dtype=int)
        detections = len(lat)
        row = _empty_row()
        row.update(confirmation=mode, detections=detections)
        for k in LATENCIES:
            _rate(row, f"power_{k}", int(np.sum(lat <= k)), trials)
        _rate(row, "exact_night", exact[mode], detections)
        _rate(row, "ci_coverage", covered[mode], detections)
        out.append(row)
    return out


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
    paths: Sequence[Path] = ("none",),
    on_scenario: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """One row per scenario and decision path (default :data:`DEFAULT_SCENARIOS`, path "none"): false
    alarms, power, localisation, coverage, machine events.

    ``trials``: series per scenario. A/A series sit on machines of ``series_per_night`` series, are
    ``nights`` long and are scored from night ``warmup`` on (``trials x (nights - warmup)`` series-nights);
    each step series is series 0 of its own machine of ``series_per_night`` series (the others quiet and
    counted as p = 1 in Benjamini-Hochberg), has ``history`` nights before the step (which comes with a
    change of the engine's code) and is scored on the first 5 nights at the new level. Columns:
    :data:`COLUMNS` (:data:`SUMMARY_COLUMNS` first, then counts and 95% Clopper-Pearson bounds
    ``<rate>_low``/``<rate>_high``). ``machine_event_rate``: machine events per machine-night that was not
    a machine-wide slow night; ``slow_night_events``: the share of machine-wide slow nights that raised one.

    ``paths``: the decision paths to score (:data:`PATHS`), on the same simulated nights (column
    ``confirmation``). "none": as ``benchsvc analyze`` and ``benchsvc run --no-confirm`` decide (nothing is
    re-measured; ``min_nights_after`` nights on the new level). "levels": as ``benchsvc run`` decides (a
    candidate needs ``min_nights_after_confirmed`` nights and passes ``max_pvalue_confirmed`` and
    ``fdr_confirmed``; tonight's value of its series is re-measured, :class:`Scenario`, and it is recorded
    the first night the re-measurement :func:`held_levels`). "halfstep": the same with :func:`held`.

    ``on_scenario(index, total, name)`` is called before each scenario (progress)."""
    if not paths or any(p not in PATHS for p in paths):
        raise ValueError(f"paths must be a non-empty sequence of {PATHS}, not {paths!r}")
    if trials < 1:
        raise ValueError(f"trials must be at least 1, not {trials}")
    if nights <= warmup:
        raise ValueError(f"nights ({nights}) must exceed the warm-up ({warmup})")
    settings = settings or DetectorSettings()
    rows = []
    chosen = list(DEFAULT_SCENARIOS if scenarios is None else scenarios)
    for i, sc in enumerate(chosen):
        if on_scenario is not None:
            on_scenario(i, len(chosen), sc.name)
        rng = np.random.default_rng([seed, i])
        if sc.is_aa:
            found = _aa_rows(sc, trials, nights, warmup, settings, series_per_night, rng, paths)
        else:
            found = _step_rows(sc, trials, tolerance, settings, series_per_night, rng, paths)
        for row in found:
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
