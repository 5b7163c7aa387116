"""The detector's evaluation: the noise model and its re-measurements, the online loop on the three decision
paths, and coarse, seeded checks of the targets at test size.

The exact figures (1,000 series per class and more) are the benchmark's (``benchmarks/detector_speed.py``,
``docs/detection.md``). Here the samples are small so that the file runs in seconds; the statistical checks
assert coarse bounds that a working detector clears by a wide margin and a broken one (no significance
test, no robust rules, a confirmation that confirms everything) does not.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from benchsvc.analysis import changepoints as cp
from benchsvc.analysis import evaluate as ev
from benchsvc.records import Direction, EngineKind, ProcessValues, SeriesChange
from benchsvc.runner.matrix import nightly_change_held

AA_LOW, AA_HIGH, STEP_5, STEP_2 = ev.DEFAULT_SCENARIOS
CLASSES = {sc.name: sc for sc in ev.NOISE_CLASSES}
SEED = 1


def _by_path(table: pd.DataFrame) -> dict[str, pd.Series]:
    return {str(r["confirmation"]): r for _, r in table.iterrows()}


# --- coarse targets at test size ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gaussian", "heavy tails t3", "slow nights 2%"])
def test_false_alerts_per_series_night_stay_low_on_every_path(name: str) -> None:
    table = ev.run_evaluation(
        [CLASSES[name]], trials=60, nights=45, seed=SEED, series_per_night=20, paths=ev.PATHS
    )
    rows = _by_path(table)
    assert set(rows) == set(ev.PATHS)
    for row in rows.values():
        assert row.series_nights == 60 * 35
        assert row.false_alarms <= 0.005 * row.series_nights  # 0.5%: the benchmark measures the 0.1%


def test_step_power_on_each_path() -> None:
    rows = _by_path(ev.run_evaluation([STEP_5], trials=150, seed=SEED, series_per_night=20, paths=ev.PATHS))
    for path in ("none", "levels"):
        assert rows[path].power_3 >= 0.8
        assert rows[path].power_1 <= rows[path].power_3 <= rows[path].power_5
    # without confirmation one night at the new level is never enough; with it, it is
    assert rows["none"].power_1 <= 0.05
    assert rows["halfstep"].power_1 >= 0.15 and rows["levels"].power_1 >= 0.15
    assert rows["levels"].power_3 >= rows["halfstep"].power_3  # the levels test loses fewer real steps


def test_small_step_at_low_noise_is_found_and_located() -> None:
    row = ev.run_evaluation([STEP_2], trials=150, seed=SEED, series_per_night=20).iloc[0]
    assert row.power_5 >= 0.85
    assert row.exact_night >= 0.7
    assert row.ci_coverage >= 0.85


# --- the confirmation, night by night -------------------------------------------------------------------


def _history(seed: int, nights: int = 45) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1e-3 * (1 + rng.normal(0, 0.01, size=(1, nights)))


def test_two_odd_nights_alert_unconfirmed_but_a_re_measurement_rejects_them() -> None:
    x = np.concatenate([_history(31), 1e-3 * np.array([[1.09, 1.091]])], axis=1)
    code = np.zeros(x.shape[1], dtype=int)
    ordinary = x.copy()
    ordinary[0, -2:] = 1e-3 * np.array([1.001, 0.998])  # re-measured, the two nights are ordinary
    alerts, _ = ev._online_machine(x, code, x.shape[1] - 2, cp.DEFAULT_SETTINGS, again=ordinary)
    assert [c.index for _, c in alerts["none"][0].alerts] == [45]
    assert alerts["halfstep"][0].alerts == [] and alerts["levels"][0].alerts == []


def test_a_step_that_holds_is_confirmed_on_its_first_night() -> None:
    x = np.concatenate([_history(32), 1e-3 * np.array([[1.08, 1.081, 1.079]])], axis=1)
    code = np.zeros(x.shape[1], dtype=int)
    again = x * 1.002  # the re-measurement agrees
    alerts, _ = ev._online_machine(x, code, 45, cp.DEFAULT_SETTINGS, again=again)
    assert [(t, c.index) for t, c in alerts["halfstep"][0].alerts] == [(45, 45)]
    assert [(t, c.index) for t, c in alerts["levels"][0].alerts] == [(45, 45)]
    assert [(t, c.index) for t, c in alerts["none"][0].alerts] == [(46, 45)]


def test_held_levels_is_the_runners_test() -> None:
    """:func:`evaluate.held_levels` decides as ``benchsvc.runner.matrix.nightly_change_held`` (without a
    canary): the re-measurement of tonight nearer the new level than the old one."""

    def processes(mean: float) -> list[ProcessValues]:
        return [
            ProcessValues(values=(mean * 0.99, mean * 1.01), metadata={"benchsvc_block": b}) for b in (0, 1)
        ]

    for before, after in ((1.0, 1.06), (1.0, 0.94), (1.0, 1.2)):
        c = cp.ChangePoint(10, 1e-6, before, after, after / before, 0.0, 0.0, 10, 3)
        finding = SeriesChange(
            engine=EngineKind.SIM,
            version="v2",
            workload="w",
            workload_hash="0" * 64,
            metric="time",
            direction=Direction.WORSE if after > before else Direction.BETTER,
            effect=after / before,
            details={"mean_before": before, "mean_after": after, "value_tonight": after},
        )
        for again in (after, 1.0, (1.0 + after) / 2 * 1.01, (1.0 + after) / 2 * 0.99, after * 1.05):
            expected = nightly_change_held(finding, processes(after), processes(again), [], [])
            assert ev.held_levels(again, c) == expected, (before, after, again)
    assert not ev.held(1.0, 1.0, 1.0)


def test_held_levels_compares_with_both_levels() -> None:
    c = cp.ChangePoint(10, 1e-6, 1.0, 1.1, 1.1, 1.05, 1.15, 10, 3)
    assert ev.held_levels(1.06, c) and not ev.held_levels(1.04, c)


# --- the noise model ------------------------------------------------------------------------------------


def test_re_measurement_keeps_the_level_and_the_machine_and_redraws_the_rest() -> None:
    sc = ev.Scenario(
        "x",
        sigma_night=0.015,
        step=0.1,
        history=20,
        shared_sigma=0.02,
        machine_night_rate=0.2,
        outlier_rate=0.05,
    )
    sim = ev.simulate_machines(sc, 40, 30, 40, np.random.default_rng(0))
    assert sim.again.shape == sim.values.shape
    # the step is in the re-measurement too
    assert np.median(sim.again[:, 0, 20:]) / np.median(sim.again[:, 0, :20]) == pytest.approx(1.1, abs=0.01)
    # the machine's state is shared: the median over a machine's series moves alike in both measurements
    m1 = np.median(sim.values[:, 1:, :], axis=1).ravel()
    m2 = np.median(sim.again[:, 1:, :], axis=1).ravel()
    assert np.corrcoef(m1, m2)[0, 1] > 0.9
    # the per-series noise and the single slow nights are fresh
    r1 = (sim.values[:, 1:, :] / m1.reshape(40, 1, 40)).ravel()
    r2 = (sim.again[:, 1:, :] / m2.reshape(40, 1, 40)).ravel()
    assert abs(np.corrcoef(np.log(r1), np.log(r2))[0, 1]) < 0.05
    slow1, slow2 = r1 > 1.3, r2 > 1.3
    assert slow1.mean() == pytest.approx(0.05, abs=0.01) and slow2.mean() == pytest.approx(0.05, abs=0.01)
    assert (slow1 & slow2).mean() < 0.01
    # fewer processes: noisier
    assert np.log(r2[~slow2]).std() / np.log(r1[~slow1]).std() == pytest.approx(ev.REDRAW_NOISE, rel=0.1)


def test_redraw_corr_shares_the_night_offset() -> None:
    sc = ev.Scenario("x", sigma_night=0.015, redraw_corr=0.5, redraw_noise=1.0)
    sim = ev.simulate_machines(sc, 1, 200, 100, np.random.default_rng(1))
    assert np.corrcoef(sim.values.ravel(), sim.again.ravel())[0, 1] == pytest.approx(0.5, abs=0.05)


# --- the evaluation machinery ---------------------------------------------------------------------------


def test_simulated_summaries_follow_the_noise_model() -> None:
    sc = ev.Scenario("x", sigma_night=0.01, step=0.1, history=30)
    s = ev.simulate(sc, 400, 40, np.random.default_rng(0))
    assert s.shape == (400, 40)
    rel = s / sc.level
    before, after = rel[:, :30], rel[:, 30:]
    assert before.mean() == pytest.approx(1.0, abs=0.002)
    assert after.mean() == pytest.approx(1.1, abs=0.002)
    assert before.std() == pytest.approx(sc.summary_noise, rel=0.05)
    assert sc.summary_noise == pytest.approx(math.hypot(0.01, 0.02 / math.sqrt(60)))


def test_run_evaluation_is_deterministic_and_shaped() -> None:
    scenarios = [ev.Scenario("aa", sigma_night=0.01), ev.Scenario("step", sigma_night=0.01, step=0.04)]
    a = ev.run_evaluation(scenarios, trials=20, nights=30, seed=3)
    b = ev.run_evaluation(scenarios, trials=20, nights=30, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ev.COLUMNS
    assert list(a.columns[: len(ev.SUMMARY_COLUMNS)]) == ev.SUMMARY_COLUMNS
    assert list(a["name"]) == ["aa", "step"]
    assert a.loc[0, "series_nights"] == 20 * (30 - ev.DEFAULT_WARMUP)
    assert np.isnan(a.loc[0, "power_3"]) and np.isnan(a.loc[1, "false_alarm_rate"])
    assert a.loc[1, "power_5"] > 0.5
    for rate in ev.RATES:
        ok = a[rate].notna()
        assert (a.loc[ok, f"{rate}_low"] <= a.loc[ok, rate]).all()
        assert (a.loc[ok, rate] <= a.loc[ok, f"{rate}_high"]).all()
    c = ev.run_evaluation(scenarios, trials=20, nights=30, seed=4)
    assert not a.equals(c)


def test_run_evaluation_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="trials"):
        ev.run_evaluation(trials=0)
    with pytest.raises(ValueError, match="warm-up"):
        ev.run_evaluation(nights=ev.DEFAULT_WARMUP)
    with pytest.raises(ValueError, match="paths"):
        ev.run_evaluation(trials=1, paths=("maybe",))  # type: ignore[arg-type]


def test_binomial_interval() -> None:
    lo, hi = ev.binomial_interval(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100))
    lo, hi = ev.binomial_interval(50, 100)
    assert lo == pytest.approx(0.3983, abs=1e-4) and hi == pytest.approx(0.6017, abs=1e-4)
    assert ev.binomial_interval(100, 100)[1] == 1.0
    assert all(math.isnan(v) for v in ev.binomial_interval(0, 0))


def test_estimate_noise_is_robust_to_a_step() -> None:
    rng = np.random.default_rng(0)
    est = [ev.estimate_noise(2e-3 * (1 + rng.normal(0, 0.01, 120))) for _ in range(200)]
    assert float(np.median(est)) == pytest.approx(0.01, rel=0.05)
    x = 2e-3 * (1 + rng.normal(0, 0.01, 120))
    stepped = x.copy()
    stepped[60:] *= 1.2
    assert ev.estimate_noise(stepped) == pytest.approx(ev.estimate_noise(x), rel=0.15)
    assert ev.estimate_noise(np.array([1.0, np.nan, 1.0, 1.0])) == 0.0
    assert math.isnan(ev.estimate_noise(np.array([1.0, 2.0])))


def test_smallest_detectable_step() -> None:
    low = ev.smallest_detectable_step(0.005, trials=80, seed=2)
    high = ev.smallest_detectable_step(0.015, trials=80, seed=2)
    assert low == ev.smallest_detectable_step(0.005, trials=80, seed=2)
    # the targets: +2% at 0.5% and +5% at 1.5% are (about) detectable within 3 nights
    assert 0.005 < low < 0.02
    assert 2 * low < high < 0.06
    with pytest.raises(ValueError, match="noise"):
        ev.smallest_detectable_step(0.0)


def test_online_evaluation_alerts_as_analyze_night_does() -> None:
    """One night of the online loop (the nightly decision path, no machine factor) gives exactly what
    analyze_night reports for the same series."""
    rng = np.random.default_rng(12)
    s = 1e-3 * (1 + rng.normal(0, 0.01, size=(20, 60)))
    s[3, -2:] *= 1.06
    s[7, -4:] *= 0.95
    s[11, -3:] *= 1.015  # too small to survive
    settings = cp.DetectorSettings(machine_factor="none")
    alerts = ev._online(s, 59, settings, 20, grouped=True)
    online = [(j, c) for j, a in enumerate(alerts) for _, c in a.alerts]
    assert online == cp.analyze_night(dict(enumerate(s)), settings=settings)
    assert [j for j, _ in online] == [3, 7]


# --- noise classes (issue 12) ---------------------------------------------------------------------------

CLASSES = {sc.name: sc for sc in ev.NOISE_CLASSES}


def test_machine_slow_night_is_one_machine_event_and_no_regression() -> None:
    sc = CLASSES["machine slow nights"]
    row = ev.run_evaluation([sc], trials=60, nights=60, seed=SEED, series_per_night=20).iloc[0]
    assert row.slow_nights >= 3
    assert row.slow_night_events == 1.0  # every machine-wide slow night raised its machine event
    assert row.slow_nights_alerted == 0  # and no series alerted on it
    assert row.machine_event_rate == 0.0


@pytest.mark.parametrize("name", ["machine slow nights", "slow drift", "correlated", "bimodal +-3%"])
def test_noise_class_false_alerts(name: str) -> None:
    row = ev.run_evaluation([CLASSES[name]], trials=40, nights=45, seed=SEED, series_per_night=20).iloc[0]
    assert row.series_nights == 40 * 35
    assert row.false_alarms <= 0.005 * row.series_nights


def test_machine_factor_removes_the_shared_noise() -> None:
    sc = CLASSES["+5% correlated"]
    with_factor = ev.run_evaluation([sc], trials=60, seed=SEED, series_per_night=30).iloc[0]
    without = ev.run_evaluation(
        [sc], trials=60, seed=SEED, series_per_night=30, settings=cp.DetectorSettings(machine_factor="none")
    ).iloc[0]
    assert with_factor.power_3 > without.power_3
    assert with_factor.power_3 >= 0.9


def test_simulated_machine_wide_effects_are_shared() -> None:
    sc = ev.Scenario("x", sigma_night=0.0, sigma_value=0.0, machine_night_rate=0.2, drift_sigma=0.01)
    sim = ev.simulate_machines(sc, 3, 5, 40, np.random.default_rng(0))
    assert sim.values.shape == (3, 5, 40)
    assert np.allclose(sim.values[:, 0, :], sim.values[:, 4, :])  # every series of a machine alike
    assert sim.slow.any()


def test_cli_evaluate_scores_the_paths_asked_for() -> None:
    from typer.testing import CliRunner

    from benchsvc.cli.app import app

    runner = CliRunner()
    args = ["evaluate", "--noise", "0.015", "--step", "0.05", "--trials", "10", "--seed", "3"]
    out = runner.invoke(app, [*args, "--confirmation", "all", "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [r["confirmation"] for r in rows] == list(ev.PATHS)
    assert all(r["trials"] == 10 and r["step"] == 0.05 for r in rows)
    expected = ev.run_evaluation(
        [ev.Scenario("custom", sigma_night=0.015, step=0.05)], trials=10, seed=3, paths=ev.PATHS
    )
    assert [r["power_3"] for r in rows] == list(expected["power_3"])
    table = runner.invoke(app, [*args, "--confirmation", "halfstep"])
    assert table.exit_code == 0 and "halfstep" in table.stdout and "levels" not in table.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "benchsvc", *args, "--confirmation", "maybe"], capture_output=True, text=True
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("Error: --confirmation 'maybe' is not one of none, halfstep, levels, all — ")
