"""The block factor of the nightly decision: the versions of one workload are measured together, so a
disturbance during that block moves all of them; it is divided out, a change in one version is not."""

from __future__ import annotations

import numpy as np

from benchsvc.analysis.changepoints import DetectorSettings
from benchsvc.analysis.nightly import block_factors, code_epochs, decide_night

NIGHTS = 30


def _matrix(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Four blocks of six series each, 0.5% independent noise, and a block-wide disturbance of ±3% on every
    night (the block's own, shared by its six series)."""
    blocks = [("sim", b) for b in range(4) for _ in range(6)]
    level = np.repeat(np.linspace(1.0, 3.0, 24)[:, None], NIGHTS, axis=1)
    shared = np.exp(rng.normal(0, 0.03, size=(4, NIGHTS)))
    values = level * np.repeat(shared, 6, axis=0) * np.exp(rng.normal(0, 0.005, size=(24, NIGHTS)))
    return values, blocks


def test_a_disturbance_of_one_block_is_divided_out() -> None:
    rng = np.random.default_rng(5)
    values, blocks = _matrix(rng)
    values[6:12, -1] *= 1.12  # tonight the second block was measured while something else ran
    code = ["same"] * NIGHTS
    with_blocks = decide_night(values, code, DetectorSettings(), blocks=blocks)
    assert with_blocks.findings == []
    without = decide_night(values, code, DetectorSettings(block_factor=False), blocks=blocks)
    assert {row for row, _ in without.findings} & set(range(6, 12)), "the disturbance looks like changes"


def test_the_block_factor_is_one_on_the_first_night_of_new_engine_code() -> None:
    rng = np.random.default_rng(7)
    values, blocks = _matrix(rng)
    code = ["old"] * (NIGHTS - 1) + ["new"]
    factors = block_factors(values, code_epochs(code), blocks)
    assert np.all(factors[:, -1] == 1.0), "a code change is never divided away"
    assert not np.allclose(factors[:, :-1], 1.0)
    # a block of fewer than three series, or series without a block, are left alone
    assert np.all(block_factors(values[:2], code_epochs(code), blocks[:2]) == 1.0)
    assert np.all(block_factors(values, code_epochs(code), [None] * len(blocks)) == 1.0)


def test_a_change_of_one_version_stays_visible() -> None:
    rng = np.random.default_rng(6)
    values, blocks = _matrix(rng)
    values[8, -3:] *= 1.10  # one version of the second block got 10% slower three nights ago
    decision = decide_night(values, ["same"] * NIGHTS, DetectorSettings(), blocks=blocks)
    assert [row for row, _ in decision.findings] == [8]
    (cp,) = [cp for _, cp in decision.findings]
    assert 1.07 < cp.effect < 1.13


def test_the_canary_carries_the_machine_factor_across_a_code_change() -> None:
    """New engine code and, the same night, a machine 4% faster: without the canary every series looks 4%
    faster at the code change; the canary (which does not run the engine's code) tells the machine apart."""
    rng = np.random.default_rng(8)
    series = 40
    values = np.exp(rng.normal(0, 0.004, size=(series, NIGHTS))) * np.linspace(1, 2, series)[:, None]
    machine = np.ones(NIGHTS)
    machine[-3:] = 0.96
    values *= machine[None, :]
    canary = 0.002 * machine * np.exp(rng.normal(0, 0.002, NIGHTS))
    code = ["old"] * (NIGHTS - 3) + ["new"] * 3
    bridged = decide_night(values, code, DetectorSettings(), canary=canary)
    assert bridged.findings == []
    alone = decide_night(values, code, DetectorSettings(canary_bridge=False), canary=canary)
    assert len(alone.findings) > series // 2, "without the canary the machine's move looks like the code's"
    # a real change of one version at the code change stays visible with the bridge
    values[3, -3:] *= 1.10
    assert [row for row, _ in decide_night(values, code, DetectorSettings(), canary=canary).findings] == [3]
