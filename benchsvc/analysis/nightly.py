"""One night's decision for one machine: the machine factor, a machine event, and the new change points.

This is the one decision path of the nightly axis. ``benchsvc run`` (through :mod:`benchsvc.findings`),
``benchsvc analyze`` and ``benchsvc evaluate`` all call :func:`decide_night`; ``benchsvc history`` shows what
it recorded. Its input is a night x series matrix of timing summaries (one row per series of the machine, one
column per night, oldest first, NaN where a series has no value that night), the engine-code identity of each
night, and the canary's series when the runs have one. Pure numpy: no database, no printing.

* **Code epochs.** Nights with the same engine code (the engine source hash, or the run's commit when the
  hash is absent) in a row form an epoch. A night whose code differs from the night before is a code change.
* **Machine factor** (``settings.machine_factor``). ``"median"``: within each epoch, every series is divided
  by its own median over the epoch, and the night's factor is the median of those ratios over the series;
  the first night of an epoch has factor 1, so a change of the engine's code is never divided away.
  ``"canary"``: the canary's value over its own median (nights without a canary fall back to "median").
  ``"none"``: 1. The detector runs on each series divided by the factors. With ``settings.canary_bridge``
  and a canary, the "median" factors of each epoch are scaled by the canary's level over that epoch
  relative to its level over all nights: the median factor cannot see the machine move between two epochs
  (it is relative to each), the canary, which does not run the engine's code, can.
* **Block factor** (``settings.block_factor``, given the series' blocks). The simulated versions of one
  workload are measured together, interleaved in the same worker processes (docs/measurement.md), so what
  disturbs the machine during that block moves all of them alike. After the machine factor, every series of a
  block of at least three series is divided by its block's factor: within each epoch, the median over the
  block's series of each series' value over its own median. Measured on this machine (12 unchanged `--quick`
  runs under load), it takes the median night-to-night spread of a series from 2.3% to 1.35%. Like the machine
  factor it is 1 on the first night of an epoch, so a change of the engine's code is never divided away, and a
  change in one or two versions of a block moves its median little.
* **Suspects do not set the factors** (``settings.suspect_passes``). Both factors are medians, and a median
  moves when several of its series change level at once: four of the nine versions of a workload 10% slower
  move the block's median by about one noise standard deviation, and the unchanged versions then look faster.
  So when a pass finds candidate change points (before the false-discovery rule), the factors are estimated
  again without those series' nights from their candidate night on, and the decision is taken again; up to
  ``suspect_passes`` more passes, until no new suspect appears. A night with no candidate costs one pass.
* **Machine event.** On a night with no code change, each series' value tonight is compared with its median
  over the previous ``machine_baseline_nights`` nights of the epoch (at least 3). When the median ratio moved
  by at least ``machine_min_shift`` and at least ``machine_min_share`` of the series moved with it by half
  that, or the canary moved by ``machine_min_shift`` and ``machine_canary_share`` of the series moved with
  it, the night is one machine event. With ``machine_factor="none"``, a machine event night records no
  timing change point (the series are not corrected for the machine).
* **Change points.** :func:`~benchsvc.analysis.changepoints.detect` on every (corrected) series that has a
  value tonight, the new ones (:func:`~benchsvc.analysis.changepoints.keep_new`), then Benjamini-Hochberg
  across the night. With ``confirmed`` (the run re-measures every candidate before recording it), one night
  on the new level is enough and the candidate level is ``max_pvalue_confirmed`` / ``fdr_confirmed``;
  :func:`confirmation_holds` is the "levels" test of such a re-measurement.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from benchsvc.analysis.changepoints import (
    DEFAULT_SETTINGS,
    ChangePoint,
    Creep,
    DetectorSettings,
    detect,
    find_creep,
    keep_discoveries,
    keep_new,
)

MIN_SERIES_FOR_FACTOR = 3
MIN_SERIES_FOR_BLOCK = 3
MIN_BASELINE_NIGHTS = 3


@dataclass(frozen=True)
class MachineEvent:
    """The whole machine moved tonight: ``effect`` is the median over series of tonight's value over the
    series' own recent level (1.08 = every series about 8% slower)."""

    effect: float
    series_moved: int
    series_total: int
    canary_ratio: float | None
    baseline_nights: int
    #: the machine's usual night-to-night wander of that ratio (1.4826 MAD of its logarithm over past
    #: nights, as a relative size: 0.05 = ±5%), and over how many past nights; None when too few
    wander: float | None = None
    wander_nights: int = 0
    #: how far tonight sits from the machine's usual level, in wanders (None without a wander)
    sigmas: float | None = None


@dataclass(frozen=True)
class NightDecision:
    """What the nightly analysis decides for the last night of the matrix.

    ``findings``: (row, change point) with the change point's ``index`` counted in the row's own nights (its
    non-NaN columns), means in the corrected units; ``factors``: the machine factor of every night;
    ``machine_event``: tonight's, or None; ``code_change``: tonight's code differs from the night before;
    ``tonight``: every row's value tonight in the corrected units (machine and block factors divided out)."""

    findings: list[tuple[int, ChangePoint]]
    machine_event: MachineEvent | None
    factors: np.ndarray
    code_change: bool
    tonight: np.ndarray | None = None
    #: (row, creep) of every series that creeps tonight and is significant enough to report
    #: (:func:`~benchsvc.analysis.changepoints.find_creep`; ``start`` counted in the row's own nights)
    creeps: list[tuple[int, Creep]] = field(default_factory=list)


def code_epochs(code: Sequence[object]) -> np.ndarray:
    """Epoch number of every night: it grows by one at every night whose code differs from the night
    before (an unknown code, None, always starts a new epoch)."""
    out = np.zeros(len(code), dtype=int)
    for t in range(1, len(code)):
        same = code[t] is not None and code[t] == code[t - 1]
        out[t] = out[t - 1] + (0 if same else 1)
    return out


def _nanmedian(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    if a.size and not np.isnan(a).any():  # numpy's nanmedian is slow on small arrays; the same answer
        return np.asarray(np.median(a, axis=axis))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as wanted
        return np.asarray(np.nanmedian(a, axis=axis))


def machine_factors(
    values: np.ndarray,
    epochs: np.ndarray,
    settings: DetectorSettings = DEFAULT_SETTINGS,
    canary: np.ndarray | None = None,
) -> np.ndarray:
    """The machine factor of every night (see the module's docstring); 1 where it cannot be estimated."""
    x = np.asarray(values, dtype=float)
    nights = x.shape[1]
    factors = np.ones(nights)
    if settings.machine_factor == "none" or nights == 0:
        return factors
    if x.shape[0] < MIN_SERIES_FOR_FACTOR and (settings.machine_factor != "canary" or canary is None):
        return factors  # too few series for a factor on any night
    for e in np.unique(epochs):
        cols = np.flatnonzero(epochs == e)
        if len(cols) < 2:
            continue
        sub = x[:, cols]
        base = _nanmedian(sub, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = sub / base[:, None]
        ratios[~np.isfinite(ratios)] = np.nan
        f = _nanmedian(ratios, axis=0)
        enough = np.sum(np.isfinite(ratios), axis=0) >= MIN_SERIES_FOR_FACTOR
        factors[cols] = np.where(enough & np.isfinite(f) & (f > 0), f, 1.0)
    if settings.machine_factor == "canary" and canary is not None:
        c = np.asarray(canary, dtype=float)
        level = float(_nanmedian(c))
        if np.isfinite(level) and level > 0:
            ok = np.isfinite(c) & (c > 0)
            factors[ok] = c[ok] / level
    elif settings.canary_bridge and canary is not None and len(np.unique(epochs)) > 1:
        factors *= _canary_bridge(np.asarray(canary, dtype=float), epochs)
    return factors


def _canary_bridge(canary: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Per night, the canary's level over the night's epoch relative to its level over all nights (1 where the
    epoch has no canary). The median factor is relative to each epoch, so it cannot see the machine move
    between two epochs; the canary does not run the engine's code, so its level can."""
    out = np.ones(len(epochs))
    c = np.where(np.isfinite(canary) & (canary > 0), canary, np.nan)
    if not np.isfinite(c).any():
        return out
    ref = float(_nanmedian(c))
    for e in np.unique(epochs):
        cols = np.flatnonzero(epochs == e)
        level = _nanmedian(c[cols])
        if np.isfinite(level) and level > 0:
            out[cols] = float(level) / ref
    return out


def block_factors(values: np.ndarray, epochs: np.ndarray, blocks: Sequence[object | None]) -> np.ndarray:
    """Per series and night, the factor of the series' block (see the module's docstring); 1 for a series
    without a block, in a block of fewer than :data:`MIN_SERIES_FOR_BLOCK` series, or where it cannot be
    estimated."""
    x = np.asarray(values, dtype=float)
    out = np.ones_like(x)
    members: dict[object, list[int]] = {}
    for row, block in enumerate(blocks):
        if block is not None:
            members.setdefault(block, []).append(row)
    for members_of_block in members.values():
        if len(members_of_block) < MIN_SERIES_FOR_BLOCK:
            continue
        rows = np.asarray(members_of_block, dtype=np.intp)
        for e in np.unique(epochs):
            cols = np.flatnonzero(epochs == e)
            if len(cols) < 2:
                continue
            sub = x[np.ix_(rows, cols)]
            base = _nanmedian(sub, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratios = sub / base[:, None]
            ratios[~np.isfinite(ratios)] = np.nan
            f = _nanmedian(ratios, axis=0)
            enough = np.sum(np.isfinite(ratios), axis=0) >= MIN_SERIES_FOR_BLOCK
            f = np.where(enough & np.isfinite(f) & (f > 0), f, 1.0)
            out[np.ix_(rows, cols)] = f[None, :]
    return out


def _night_shift(
    x: np.ndarray, epochs: np.ndarray, t: int, settings: DetectorSettings
) -> tuple[np.ndarray, np.ndarray] | None:
    """Night ``t``'s ratio of every series to its median over the previous ``machine_baseline_nights`` nights
    of the same epoch (finite, positive ratios only), and those previous nights; None without enough."""
    prev = np.flatnonzero(epochs[:t] == epochs[t])[-settings.machine_baseline_nights :]
    if len(prev) < MIN_BASELINE_NIGHTS:
        return None
    base = _nanmedian(x[:, prev], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = x[:, t] / base
    return ratios[np.isfinite(ratios) & (ratios > 0)], prev


def machine_wander(
    values: np.ndarray,
    epochs: np.ndarray,
    settings: DetectorSettings = DEFAULT_SETTINGS,
    canary: np.ndarray | None = None,
) -> tuple[float, float, float, float, int] | None:
    """The machine's own night-to-night distribution before tonight: over the last ``machine_wander_nights``
    past nights that have a baseline, the median and the robust standard deviation (1.4826 MAD) of the log of
    the night's median ratio (:func:`_night_shift`), and the same two for the canary's ratio (NaN without a
    canary); and the number of nights. None with fewer than ``machine_wander_min_nights`` such nights."""
    x = np.asarray(values, dtype=float)
    nights = x.shape[1]
    shifts: list[float] = []
    c_shifts: list[float] = []
    c = None if canary is None else np.asarray(canary, dtype=float)
    for t in range(nights - 2, 0, -1):
        if len(shifts) >= settings.machine_wander_nights:
            break
        got = _night_shift(x, epochs, t, settings)
        if got is None or len(got[0]) < MIN_SERIES_FOR_FACTOR:
            continue
        ratios, prev = got
        shifts.append(float(np.log(np.median(ratios))))
        if c is not None:
            c_base = float(_nanmedian(c[prev]))
            if np.isfinite(c[t]) and c[t] > 0 and np.isfinite(c_base) and c_base > 0:
                c_shifts.append(float(np.log(c[t] / c_base)))
    if len(shifts) < settings.machine_wander_min_nights:
        return None

    def centre_scale(v: list[float]) -> tuple[float, float]:
        if len(v) < settings.machine_wander_min_nights:
            return float("nan"), float("nan")
        a = np.asarray(v)
        med = float(np.median(a))
        return med, 1.4826 * float(np.median(np.abs(a - med)))

    centre, scale = centre_scale(shifts)
    c_centre, c_scale = centre_scale(c_shifts)
    return centre, scale, c_centre, c_scale, len(shifts)


def machine_event(
    values: np.ndarray,
    epochs: np.ndarray,
    settings: DetectorSettings = DEFAULT_SETTINGS,
    canary: np.ndarray | None = None,
) -> MachineEvent | None:
    """Tonight's (the last column's) machine event, or None (see the module's docstring).

    A night is an event when the median series moved by at least ``machine_min_shift`` (or the canary did)
    with enough series moving the same way, *and* the move is unusual for this machine: at least
    ``machine_wander_sigmas`` of its own robust night-to-night wander (:func:`machine_wander`) from its usual
    level. Until the machine has ``machine_wander_min_nights`` past nights with a baseline, its usual wander
    is not known and no night is an event (``machine_wander_sigmas=0``: the fixed thresholds alone)."""
    x = np.asarray(values, dtype=float)
    nights = x.shape[1]
    if nights < 2 or epochs[-1] != epochs[-2]:
        return None
    got = _night_shift(x, epochs, nights - 1, settings)
    if got is None:
        return None
    ratios, prev = got
    if len(ratios) < MIN_SERIES_FOR_FACTOR:
        return None
    median = float(np.median(ratios))
    shift = median - 1.0
    canary_ratio = None
    if canary is not None:
        c = np.asarray(canary, dtype=float)
        c_base = float(_nanmedian(c[prev]))
        if np.isfinite(c[-1]) and np.isfinite(c_base) and c_base > 0:
            canary_ratio = float(c[-1] / c_base)
    half = settings.machine_min_shift / 2

    def moved_with(direction: float) -> int:
        return int(np.sum((ratios - 1.0) * direction >= half))

    by_series = abs(shift) >= settings.machine_min_shift and moved_with(np.sign(shift)) >= (
        settings.machine_min_share * len(ratios)
    )
    by_canary = (
        canary_ratio is not None
        and abs(canary_ratio - 1.0) >= settings.machine_min_shift
        and moved_with(np.sign(canary_ratio - 1.0)) >= settings.machine_canary_share * len(ratios)
    )
    if not (by_series or by_canary):
        return None
    wander = machine_wander(x, epochs, settings, canary) if settings.machine_wander_sigmas > 0 else None
    if wander is None and settings.machine_wander_sigmas > 0:
        return None  # the machine's usual wander is not known yet: nothing is unusual for it
    sigmas = None
    if wander is not None:
        centre, scale, c_centre, c_scale, _ = wander
        k = settings.machine_wander_sigmas
        z = abs(np.log(median) - centre) / scale if scale > 0 else float("inf")
        by_series = by_series and z >= k
        if by_canary and canary_ratio is not None and np.isfinite(c_scale):
            cz = abs(np.log(canary_ratio) - c_centre) / c_scale if c_scale > 0 else float("inf")
            by_canary = cz >= k
        if not (by_series or by_canary):
            return None
        sigmas = float(z) if np.isfinite(z) else None
    direction = np.sign(shift) if by_series else np.sign((canary_ratio or 1.0) - 1.0)
    return MachineEvent(
        effect=median,
        series_moved=moved_with(float(direction)),
        series_total=len(ratios),
        canary_ratio=canary_ratio,
        baseline_nights=len(prev),
        wander=None if wander is None else float(np.expm1(wander[1])),
        wander_nights=0 if wander is None else wander[4],
        sigmas=sigmas,
    )


def decide_night(
    values: np.ndarray,
    code: Sequence[object],
    settings: DetectorSettings | None = None,
    *,
    canary: np.ndarray | None = None,
    rows: Sequence[int] | None = None,
    n_tests: int | None = None,
    confirmed: bool = False,
    blocks: Sequence[object | None] | None = None,
) -> NightDecision:
    """The nightly decision for the last night of ``values`` (series x nights, NaN = no value).

    ``code``: the engine-code identity of every night; ``canary``: the canary's summaries per night (NaN
    where absent; it is not itself a row); ``rows``: the series to look for change points in (default all;
    the others still count for the machine factor and the machine event); ``n_tests``: the number of
    hypotheses for Benjamini-Hochberg (default one per series looked at, or one per candidate when a series
    has several); ``confirmed``: the caller re-measures suspected cells before recording them, so
    ``min_nights_after_confirmed`` nights on a new level are enough and ``max_pvalue_confirmed`` and
    ``fdr_confirmed`` apply (:meth:`DetectorSettings.for_path`); ``blocks``: per series, the measurement
    block it belongs to (None: its own), for the block factor."""
    return _decide(values, code, settings, canary, rows, n_tests, (confirmed,), blocks)[0]


def decide_night_both(
    values: np.ndarray,
    code: Sequence[object],
    settings: DetectorSettings | None = None,
    *,
    canary: np.ndarray | None = None,
    rows: Sequence[int] | None = None,
    n_tests: int | None = None,
    blocks: Sequence[object | None] | None = None,
) -> tuple[NightDecision, NightDecision]:
    """:func:`decide_night` without and with ``confirmed``, in one call (the evaluation scores both paths
    on the same nights; the machine factor and event are computed once)."""
    plain, confirmed = _decide(values, code, settings, canary, rows, n_tests, (False, True), blocks)
    return plain, confirmed


def _decide(
    values: np.ndarray,
    code: Sequence[object],
    settings: DetectorSettings | None,
    canary: np.ndarray | None,
    rows: Sequence[int] | None,
    n_tests: int | None,
    modes: tuple[bool, ...],
    blocks: Sequence[object | None] | None = None,
) -> list[NightDecision]:
    s = settings or DEFAULT_SETTINGS
    x = np.asarray(values, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"decide_night() takes a series x nights matrix, not shape {x.shape}")
    if len(code) != x.shape[1]:
        raise ValueError(f"{len(code)} code identities for {x.shape[1]} nights")
    if blocks is not None and len(blocks) != x.shape[0]:
        raise ValueError(f"{len(blocks)} blocks for {x.shape[0]} series")
    epochs = code_epochs(code)
    event = machine_event(x, epochs, s, canary)
    code_change = x.shape[1] >= 2 and bool(epochs[-1] != epochs[-2])
    common = (epochs, s, canary, rows, n_tests)
    decisions, adjusted, candidates = _decide_once(x, x, *common, modes, blocks, event, code_change)
    # each path's suspects are its own, so deciding both paths at once decides as two calls would
    for m, mode in enumerate(modes):
        suspects = np.zeros(x.shape, dtype=bool)
        found = candidates[m]
        for _ in range(s.suspect_passes):
            more = _suspect_mask(adjusted, found) & ~suspects
            if not more.any():
                break
            suspects |= more
            again, _, again_found = _decide_once(
                x, np.where(suspects, np.nan, x), *common, (mode,), blocks, event, code_change
            )
            decisions[m], found = again[0], again_found[0]
    return decisions


def _suspect_mask(adjusted: np.ndarray, candidates: list[tuple[int, int]]) -> np.ndarray:
    """The nights of every series from the first night of a candidate change point (or creep) in it on;
    ``candidates``: (row, index of that night in the row's own nights)."""
    mask = np.zeros(adjusted.shape, dtype=bool)
    for row, index in candidates:
        own_nights = np.flatnonzero(np.isfinite(adjusted[row]))
        mask[row, own_nights[index] :] = True
    return mask


def _decide_once(
    x: np.ndarray,
    estimate_from: np.ndarray,
    epochs: np.ndarray,
    s: DetectorSettings,
    canary: np.ndarray | None,
    rows: Sequence[int] | None,
    n_tests: int | None,
    modes: tuple[bool, ...],
    blocks: Sequence[object | None] | None,
    event: MachineEvent | None,
    code_change: bool,
) -> tuple[list[NightDecision], np.ndarray, list[list[tuple[int, int]]]]:
    """One pass of :func:`_decide`: the factors are estimated from ``estimate_from`` (``x`` with the
    suspected nights NaN on the second pass) and divided out of ``x``. Returns the decisions, ``x`` corrected,
    and each path's suspects (row, first suspected night in the row's own nights): the candidates before
    the false-discovery rule and the creeps."""
    factors = machine_factors(estimate_from, epochs, s, canary)
    adjusted = x / factors[None, :]
    if s.block_factor and blocks is not None:
        adjusted = adjusted / block_factors(estimate_from / factors[None, :], epochs, blocks)
    corrected: list[tuple[int, np.ndarray]] = []
    creeps: list[tuple[int, Creep]] = []
    for row in range(x.shape[0]) if rows is None else rows:
        series = adjusted[row]
        if not np.isfinite(series[-1]):
            continue
        y = series[np.isfinite(series)]
        # the drift test before the step test: a creeping series is searched for steps with its trend
        # taken out (a step on top of a creep is still a step; the creep itself is one finding)
        creep = find_creep(y, s)
        if creep is not None:
            y = y / creep.trend(len(y))
            if creep.reported:
                creeps.append((row, creep))
        corrected.append((row, y))
    detected: dict[float, list[list[ChangePoint]]] = {}
    out = []
    suspects: list[list[tuple[int, int]]] = []
    for confirmed in modes:
        ms = s.for_path(confirmed)
        if ms.max_pvalue not in detected:  # the two paths share one detection when their levels agree
            detected[ms.max_pvalue] = [detect(y, settings=ms) for _, y in corrected]
        candidates: list[tuple[int, ChangePoint]] = []
        hypotheses = 0
        for (row, y), cps in zip(corrected, detected[ms.max_pvalue], strict=True):
            found = keep_new(cps, y, ms, confirmed=confirmed)
            candidates.extend((row, c) for c in found)
            hypotheses += max(1, len(found))
        night_creeps = creeps
        if event is not None and s.machine_factor == "none":
            candidates, night_creeps = [], []
        suspects.append(
            [(row, c.index) for row, c in candidates] + [(row, c.start) for row, c in night_creeps]
        )
        findings = keep_discoveries(candidates, ms.fdr, hypotheses if n_tests is None else n_tests)
        out.append(
            NightDecision(
                findings=findings,
                machine_event=event,
                factors=factors,
                code_change=code_change,
                tonight=adjusted[:, -1] if adjusted.shape[1] else None,
                creeps=night_creeps,
            )
        )
    return out, adjusted, suspects


def confirmation_holds(
    mean_before: float, mean_after: float, value_tonight: float, again_ratio: float
) -> bool:
    """The "levels" test of a confirmation: tonight's value re-measured, ``value_tonight`` (in the change
    point's corrected units: ``details["value_tonight"]`` of a nightly finding) times ``again_ratio`` (the
    re-measured mean over tonight's first mean, corrected for how the canary moved in between), is nearer in
    logs to the change point's new level ``mean_after`` than to the level before ``mean_before``.

    ``benchsvc run`` confirms tonight's change points with it (``benchsvc.runner.matrix.nightly_change_held``);
    the evaluation (``benchsvc evaluate --confirmation``, ``docs/detection.md``) also scores the alternative
    that ``again_ratio`` be within half the step of 1: this one keeps more real steps at the same false-alert
    rate."""
    if not (value_tonight > 0 and again_ratio > 0 and mean_before > 0 and mean_after > 0):
        return False
    v = np.log(value_tonight * again_ratio)
    return bool(abs(v - np.log(mean_after)) < abs(v - np.log(mean_before)))
