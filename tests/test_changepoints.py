"""The nightly change-point detector: E-divisive statistic, split/merge, intervals, one night across series."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import special, stats

from benchsvc.analysis import changepoints as cp


def qhat_reference(x: np.ndarray, tau: int, kappa: int) -> float:
    """Q-hat of Matteson & James (alpha = 1) for X = x[:tau], Y = x[tau:kappa], straight from the definition."""
    xs, ys = x[:tau], x[tau:kappa]
    n, m = len(xs), len(ys)
    between = sum(abs(a - b) for a in xs for b in ys)
    within_x = sum(abs(a - b) for a, b in itertools.combinations(xs, 2))
    within_y = sum(abs(a - b) for a, b in itertools.combinations(ys, 2))
    e = 2.0 * between / (n * m)
    e -= within_x / (n * (n - 1) / 2) if n > 1 else 0.0
    e -= within_y / (m * (m - 1) / 2) if m > 1 else 0.0
    return n * m / (n + m) * e


def _aa(rng: np.random.Generator, nights: int, noise: float = 0.01) -> np.ndarray:
    return 1e-3 * (1.0 + rng.normal(0.0, noise, nights))


# --- the E-divisive statistic ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 7, 12, 25])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qhat_matrix_matches_direct_definition(n: int, seed: int) -> None:
    rng = np.random.default_rng([n, seed])
    x = rng.normal(size=n) * rng.choice([1e-3, 1.0, 50.0])
    if seed == 2:
        x = np.round(x, 1)  # ties
    q = cp.qhat_matrix(x)
    assert q.shape == (n - 1, n - 1)
    for tau in range(1, n):
        for kappa in range(2, n + 1):
            got = q[tau - 1, kappa - 2]
            if kappa <= tau:
                assert got == -np.inf
            else:
                assert got == pytest.approx(
                    qhat_reference(x, tau, kappa), rel=1e-9, abs=1e-12 * np.abs(x).max()
                )


def test_best_split_is_the_argmax_of_the_reference() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        x = rng.normal(size=int(rng.integers(3, 15)))
        n = len(x)
        ref = max(
            ((qhat_reference(x, t, k), t) for t in range(1, n) for k in range(t + 1, n + 1)),
            key=lambda v: v[0],
        )
        tau, q = cp.best_split(x)
        assert q == pytest.approx(ref[0])
        assert qhat_reference(x, tau, n) <= q + 1e-12  # tau is a maximiser for some kappa
        assert any(qhat_reference(x, tau, k) == pytest.approx(q) for k in range(tau + 1, n + 1))


def test_qhat_of_tiny_input_is_empty() -> None:
    assert cp.qhat_matrix(np.array([1.0])).shape == (0, 0)


def test_relaxed_pvalue_follows_otava() -> None:
    assert cp.relaxed_pvalue(0.001) == pytest.approx(0.01)
    assert cp.relaxed_pvalue(0.1) == pytest.approx(0.2)
    assert cp.relaxed_pvalue(0.6) == pytest.approx(0.6)


# --- detect ----------------------------------------------------------------------------------------------


def test_detect_finds_a_clear_step_at_its_first_night() -> None:
    rng = np.random.default_rng(1)
    x = np.concatenate([_aa(rng, 40), 1.1 * _aa(rng, 10)])
    (found,) = cp.detect(x)
    assert found.index == 40
    assert (found.nights_before, found.nights_after) == (40, 10)
    assert found.effect == pytest.approx(found.mean_after / found.mean_before)
    assert found.effect == pytest.approx(1.1, abs=0.01)
    assert found.ci_low < 1.1 < found.ci_high
    assert found.ci_low < found.effect < found.ci_high
    assert found.p_value < 1e-10
    assert found.magnitude == pytest.approx(max(found.effect - 1, 1 - 1 / found.effect))


def test_detect_p_value_is_the_pooled_student_t_of_the_neighbouring_segments() -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([_aa(rng, 30), 0.95 * _aa(rng, 20), 1.02 * _aa(rng, 25)])
    found = cp.detect(x)
    assert [c.index for c in found] == [30, 50]
    ends = [0, 30, 50, 75]
    for k, c in enumerate(found):
        before, after = x[ends[k] : ends[k + 1]], x[ends[k + 1] : ends[k + 2]]
        ref = stats.ttest_ind(before, after, equal_var=True)
        assert c.p_value == pytest.approx(ref.pvalue, rel=1e-6)
        assert c.mean_before == pytest.approx(before.mean())
        assert c.mean_after == pytest.approx(after.mean())


def test_fieller_interval_ends_solve_the_fieller_equation() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([_aa(rng, 45, 0.015), 1.05 * _aa(rng, 3, 0.015)])
    (c,) = cp.detect(x)
    before, after = x[: c.index], x[c.index :]
    df = len(x) - 2
    var = (before.var(ddof=1) * (len(before) - 1) + after.var(ddof=1) * (len(after) - 1)) / df
    t = special.stdtrit(df, 0.975)
    for r in (c.ci_low, c.ci_high):
        lhs = (after.mean() - r * before.mean()) ** 2
        rhs = t * t * var * (1 / len(after) + r * r / len(before))
        assert lhs == pytest.approx(rhs, rel=1e-9)


def test_detect_finds_several_steps_across_windows() -> None:
    rng = np.random.default_rng(4)
    levels = [1.0, 1.08, 0.97, 1.03]
    x = np.concatenate([lv * _aa(rng, 70, 0.005) for lv in levels])
    assert [c.index for c in cp.detect(x)] == [70, 140, 210]


def test_noiseless_step_and_constant_series() -> None:
    step = np.r_[np.full(20, 2.0), np.full(20, 3.0)]
    (c,) = cp.detect(step)
    assert (c.index, c.p_value, c.effect, c.ci_low, c.ci_high) == (20, 0.0, 1.5, 1.5, 1.5)
    assert cp.detect(np.full(60, 1.234e-3)) == []


def test_nothing_in_aa_series() -> None:
    rng = np.random.default_rng(6)
    with_changes = sum(bool(cp.detect(_aa(rng, 100, 0.015))) for _ in range(100))
    # offline over a whole 100-night history; the online rate per night is in test_evaluate
    assert with_changes <= 3


def test_min_magnitude_merges_small_but_significant_changes() -> None:
    rng = np.random.default_rng(7)
    x = np.concatenate([_aa(rng, 50, 0.001), 1.005 * _aa(rng, 50, 0.001)])
    assert [c.index for c in cp.detect(x, min_magnitude=0.0)] == [50]
    assert cp.detect(x) == []  # 0.5% is below the default 1%


def test_short_and_bad_input() -> None:
    assert cp.detect(np.array([])) == []
    assert cp.detect(np.array([1.0, 2.0])) == []
    with pytest.raises(ValueError, match="NaN"):
        cp.detect(np.array([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        cp.detect(np.ones((3, 3)))
    with pytest.raises(ValueError, match="window"):
        cp.detect(np.ones(10), window=2)


def test_detect_is_deterministic() -> None:
    rng = np.random.default_rng(8)
    x = np.concatenate([_aa(rng, 200, 0.02), 1.03 * _aa(rng, 100, 0.02)])
    assert cp.detect(x) == cp.detect(x.copy()) == cp.detect(list(x))  # type: ignore[arg-type]


# --- one night across series ---------------------------------------------------------------------------


def test_benjamini_hochberg_matches_scipy() -> None:
    rng = np.random.default_rng(9)
    for _ in range(50):
        p = rng.uniform(0, 0.05, size=int(rng.integers(1, 30))) ** 2
        keep = cp.benjamini_hochberg(p, 0.05)
        assert np.array_equal(keep, stats.false_discovery_control(p) <= 0.05)
        extra = int(rng.integers(0, 100))
        padded = np.concatenate([p, np.ones(extra)])
        assert np.array_equal(
            cp.benjamini_hochberg(p, 0.05, len(padded)),
            (stats.false_discovery_control(padded) <= 0.05)[: len(p)],
        )
    assert cp.benjamini_hochberg(np.array([]), 0.05).shape == (0,)


def test_analyze_night_reports_only_new_changes_that_survive() -> None:
    rng = np.random.default_rng(10)
    series: dict[tuple[str, str], np.ndarray] = {(f"w{i}", "v1"): _aa(rng, 80, 0.01) for i in range(30)}
    series[("new", "v1")] = np.concatenate([_aa(rng, 77, 0.01), 1.04 * _aa(rng, 3, 0.01)])
    series[("old", "v1")] = np.concatenate([_aa(rng, 40, 0.01), 1.08 * _aa(rng, 40, 0.01)])
    found = cp.analyze_night(series)
    assert [(k, c.index) for k, c in found] == [(("new", "v1"), 77)]
    assert cp.detect(series[("old", "v1")])[0].index == 40  # in the history, but not new tonight
    assert cp.analyze_night(series) == found
    # counted among many more series, the same evidence is not enough (BH: p <= fdr / n_tests for one)
    p = found[0][1].p_value
    assert cp.analyze_night(series, n_tests=int(0.5 * cp.DEFAULT_FDR / p)) == found
    assert cp.analyze_night(series, n_tests=int(2.0 * cp.DEFAULT_FDR / p)) == []


def test_analyze_night_min_nights_after_and_empty() -> None:
    rng = np.random.default_rng(11)
    x = np.concatenate([_aa(rng, 60, 0.005), 1.2 * _aa(rng, 1, 0.005)])
    assert [c.index for _, c in cp.analyze_night({"a": x}, min_nights_after=1)] == [60]
    assert cp.analyze_night({"a": x}) == []  # one night on a new level is not enough by default
    assert [c.index for _, c in cp.analyze_night({"a": x}, confirmed=True)] == [60]  # unless re-measured
    x2 = np.concatenate([x, 1.2 * _aa(rng, 1, 0.005)])
    assert [c.index for _, c in cp.analyze_night({"a": x2})] == [60]
    assert cp.analyze_night({}) == []


# --- issue 12: the two detector bugs, robustness ---------------------------------------------------------


def test_equal_runs_are_not_split_by_round_off() -> None:
    """Two runs of 50 differ by ~1e-14 after cumulative sums: that is no change (it gave p = 0 and a change
    point at 4)."""
    x = np.array([50.0] * 14 + [74.0] + [100.0] * 15)
    plain = [c.index for c in cp.detect(x, min_magnitude=0.0, robust=False)]
    assert plain == [14, 15]
    robust = [c.index for c in cp.detect(x, min_magnitude=0.0)]
    assert 4 not in robust and robust and set(robust) <= {14, 15}
    assert cp.detect(np.full(30, 50.0) + np.r_[np.zeros(15), np.full(15, 1e-13)], min_magnitude=0.0) == []


def test_a_jump_after_one_odd_night_is_found() -> None:
    """The merge must not test the 20x jump at 12 against the single night 11 first and drop it."""
    x = np.array([2.02, 2.03, 2.01, 2.04, 1.82, 1.85, 1.79, 1.81, 1.80, 1.76, 1.78, 1.97, 33.33, 46.46])
    found = cp.detect(x)
    assert 12 in [c.index for c in found]
    jump = next(c for c in found if c.index == 12)
    assert jump.effect > 15 and jump.p_value < cp.DEFAULT_MAX_PVALUE
    # the plain Hunter/Otava merge (robust=False) drops it, as Otava's code does
    assert cp.detect(x, robust=False) == []


def test_isolated_odd_nights_make_no_change_point() -> None:
    rng = np.random.default_rng(13)
    x = _aa(rng, 60, 0.01)
    x[[20, 35, 50]] *= [2.0, 1.6, 2.8]  # single slow nights
    assert cp.detect(x) == []
    clipped = cp.clip_isolated(x, 4.0)
    assert np.array_equal(clipped[[0, 59]], x[[0, 59]])
    assert np.all(clipped[[20, 35, 50]] < 1.05e-3)
    assert np.array_equal(np.delete(clipped, [20, 35, 50]), np.delete(x, [20, 35, 50]))


def test_two_unrelated_slow_nights_at_the_end_are_not_a_new_level() -> None:
    rng = np.random.default_rng(14)
    x = _aa(rng, 50, 0.01)
    odd = np.concatenate([x, 1e-3 * np.array([1.6, 2.7])])
    assert cp.analyze_night({"a": odd}) == []
    step = np.concatenate([x, 1e-3 * np.array([1.6, 1.62])])  # a steady new level is
    assert [c.index for _, c in cp.analyze_night({"a": step})] == [50]


def test_settings_object_is_the_one_source_of_defaults() -> None:
    s = cp.DetectorSettings()
    assert (s.window, s.max_pvalue, s.min_nights_after) == (
        cp.DEFAULT_WINDOW,
        cp.DEFAULT_MAX_PVALUE,
        cp.DEFAULT_MIN_NIGHTS_AFTER,
    )
    assert s.replace(window=None, max_pvalue=1e-3).max_pvalue == 1e-3
    assert s.replace(window=None).window == s.window
    rng = np.random.default_rng(15)
    x = np.concatenate([_aa(rng, 40, 0.01), 1.05 * _aa(rng, 3, 0.01)])
    assert s.new_change_points(x) == cp.new_change_points(x) == cp.new_change_points(x, settings=s)


def test_a_series_back_on_its_old_level_tonight_has_no_new_change_point() -> None:
    """Four high nights then an ordinary one: the change point at the first high night is not new tonight
    (``tonight_on_level``: a re-measurement of an ordinary night would confirm nothing); with a fifth high
    night instead, it is."""
    rng = np.random.default_rng(16)
    x = _aa(rng, 50, 0.01)
    high = 1e-3 * np.array([1.08, 1.081, 1.079, 1.082])
    back = np.concatenate([x, high, [1e-3 * 1.001]])
    held = np.concatenate([x, high, [1e-3 * 1.078]])
    assert 50 in [c.index for c in cp.detect(back)]  # the detector still sees the high nights
    assert cp.new_change_points(back) == []
    off = cp.DetectorSettings(tonight_on_level=False)
    assert [c.index for c in cp.new_change_points(back, settings=off)] == [50]
    assert [c.index for c in cp.new_change_points(held)] == [50]


def test_on_level_compares_in_logs() -> None:
    c = cp.detect(np.array([1.0] * 20 + [2.0] * 5) * (1 + 0.001 * np.resize([1, -1], 25)))[0]
    assert cp.on_level(1.9, c) and cp.on_level(1.45, c)  # log midpoint of 1 and 2 is sqrt(2) = 1.414
    assert not cp.on_level(1.40, c) and not cp.on_level(1.0, c)


def test_clipped_nights_still_count_in_the_spread() -> None:
    """A history with replaced odd nights is not taken for a quiet one: the t-test of a jump at the end is
    less sure with ``clip_keeps_spread`` than without, and equal to it when nothing was clipped."""
    rng = np.random.default_rng(17)
    x = _aa(rng, 60, 0.01)
    x[[10, 25, 40]] *= [1.12, 0.9, 1.15]
    x[-3:] *= 1.06
    kept = cp.detect(x)
    dropped = cp.detect(x, settings=cp.DetectorSettings(clip_keeps_spread=False))
    assert [c.index for c in kept] == [c.index for c in dropped] == [57]
    assert kept[0].p_value > 10 * dropped[0].p_value
    assert kept[0].mean_after == dropped[0].mean_after  # the means are those of the clipped series
    quiet = _aa(rng, 60, 0.01)
    quiet[-3:] *= 1.06
    assert cp.detect(quiet) == cp.detect(quiet, settings=cp.DetectorSettings(clip_keeps_spread=False))


def test_confirmed_path_settings() -> None:
    s = cp.DetectorSettings(max_pvalue=2e-4, max_pvalue_confirmed=1e-3, fdr=0.05, fdr_confirmed=0.2)
    assert s.for_path(False) is s
    c = s.for_path(True)
    assert (c.max_pvalue, c.fdr, c.window) == (1e-3, 0.2, s.window)
    rng = np.random.default_rng(18)
    x = np.concatenate([_aa(rng, 40, 0.01), [1.045e-3]])  # one night at a new level
    assert cp.new_change_points(x, settings=s) == []  # one night is never enough unconfirmed
    loose = cp.new_change_points(x, settings=s, confirmed=True)
    strict = cp.new_change_points(x, settings=s.replace(max_pvalue_confirmed=1e-12), confirmed=True)
    assert [c.index for c in loose] == [40] and strict == []
