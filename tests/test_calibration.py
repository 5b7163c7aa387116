"""The counters beyond the zap loop, the calibration fit, the stored cost models and ``benchsvc calibrate``.

Expected counters are derived from the kernel's munmap/madvise paths (docs/cost-model.md), not from the
engine's output. The fit is tested on synthetic data with known coefficients; the live calibration is marked
``kernel``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from benchsvc.calibration.fitting import fit
from benchsvc.calibration.suite import holdout, suite, suite_hash
from benchsvc.engine import CostModel, simulate
from benchsvc.engine.counters import COUNTER_NAMES
from benchsvc.engine.versions import version_ids
from benchsvc.kernel import expressible_reason, settled_snapshot, unavailable_reason
from benchsvc.store.cost_models import (
    STORED_PRICE,
    cost_model_for,
    is_stale,
    reprice,
    save,
    to_cost_model,
)
from benchsvc.store.db import open_store, read_session, write_session
from benchsvc.store.models import CostModelRow
from benchsvc.workload import parse_workload

KiB = 1024
MiB = 1024 * KiB
REASON = unavailable_reason()
live = pytest.mark.skipif(REASON is not None, reason=f"live kernel unavailable: {REASON}")
NEW = (
    "syscalls",
    "mmap_lock_acquisitions",
    "vma_splits",
    "vmas_removed",
    "pt_pages_freed",
    "pmd_zaps",
    "pmd_splits",
    "measured_steps",
    "forked_children",
)


def _spec(size: str, folio: str, zap: str, *, pmd: bool = False, fork: bool = False, offset: str = "0"):
    text = (
        f'description = "t"\n[layout]\nsize = "{size}"\nfolios = {{ "{folio}" = 1.0 }}\nva_offset = "{offset}"\n'
        + ("pmd_mapped = true\n" if pmd else "")
        + ("fork = true\n" if fork else "")
        + zap
    )
    return parse_workload(text.encode(), name="t")


FIRST_PAGE = '[[zap]]\ncall = "munmap"\nlength = "4KiB"\nevery = "64KiB"\n'
WHOLE = '[[zap]]\ncall = "munmap"\n'
DONTNEED = '[[zap]]\ncall = "madvise_dontneed"\n'


# ------------------------------------------------------------------------------------------ the counters
@pytest.mark.parametrize("version", version_ids())
def test_munmap_of_one_page_per_folio_splits_twice_per_call_but_the_first(version: str) -> None:
    # 8 MiB of 64 KiB folios, munmap of the first 4 KiB of each: 128 calls. The first range starts at the
    # VMA's start (one split, at its end); every later one lies inside the VMA left over (a split at each
    # end); each call detaches the one VMA of its range. No page table empties (each keeps 15 pages of
    # every folio), and every call takes the mmap lock once.
    c = simulate(_spec("8MiB", "64KiB", FIRST_PAGE), version).counters
    calls = 8 * MiB // (64 * KiB)
    assert c["syscalls"] == c["mmap_lock_acquisitions"] == calls
    assert c["vma_splits"] == 2 * calls - 1
    assert c["vmas_removed"] == calls
    assert c["pt_pages_freed"] == c["pmd_zaps"] == c["pmd_splits"] == 0
    assert c["measured_steps"] == 1 and c["forked_children"] == 0


@pytest.mark.parametrize(("offset", "tables"), [("0", 4), ("64KiB", 5)])
def test_whole_munmap_frees_every_page_table_and_dontneed_none(offset: str, tables: int) -> None:
    # 8 MiB spans 4 page tables from a 2 MiB boundary, 5 when it starts 64 KiB past one; munmap frees the
    # tables no VMA uses any more (free_pgtables), MADV_DONTNEED leaves page tables and VMAs alone.
    c = simulate(_spec("8MiB", "16KiB", WHOLE, offset=offset), "up615").counters
    assert (c["syscalls"], c["vma_splits"], c["vmas_removed"], c["pt_pages_freed"]) == (1, 0, 1, tables)
    d = simulate(_spec("8MiB", "16KiB", DONTNEED, offset=offset), "up615").counters
    assert (d["syscalls"], d["vma_splits"], d["vmas_removed"], d["pt_pages_freed"]) == (1, 0, 0, 0)


def test_pmd_mapped_thps_are_zapped_at_pmd_level_or_split_when_cut() -> None:
    # 16 MiB of PMD-mapped THPs: a whole munmap zaps 8 PMDs (zap_huge_pmd) and frees no PTE table; cutting
    # the first page of each THP splits each PMD first (one __split_huge_pmd per THP), zaps none whole.
    whole = simulate(_spec("16MiB", "2MiB", WHOLE, pmd=True), "up615").counters
    assert (whole["pmd_zaps"], whole["pmd_splits"], whole["pt_pages_freed"], whole["folios_freed"]) == (
        8,
        0,
        0,
        8,
    )
    cut = simulate(
        _spec("16MiB", "2MiB", '[[zap]]\ncall = "munmap"\nlength = "4KiB"\nevery = "2MiB"\n', pmd=True),
        "up615",
    ).counters
    assert (cut["pmd_zaps"], cut["pmd_splits"], cut["syscalls"]) == (0, 8, 8)


def test_a_forked_childs_unmap_drops_references_and_frees_nothing() -> None:
    # In the child every folio is still mapped by the parent: 6.9+ gathers one page+nr entry per folio
    # (none crosses a page table here), each folio_ref_sub_and_test() leaves the folio alive.
    c = simulate(_spec("8MiB", "64KiB", WHOLE, fork=True), "up615").counters
    assert c["folios_freed"] == 0
    assert c["puts_without_free"] == 8 * MiB // (64 * KiB)
    assert c["forked_children"] == 1
    # without the fork every folio is freed by its one reference drop
    alone = simulate(_spec("8MiB", "64KiB", WHOLE), "up615").counters
    assert (alone["puts_without_free"], alone["folios_freed"]) == (0, 128)


def test_exit_takes_the_mmap_lock_twice() -> None:
    # exit_mmap(): mmap_read_lock() around unmap_vmas(), then mmap_write_lock() for free_pgtables()
    c = simulate(_spec("8MiB", "64KiB", '[[zap]]\ncall = "exit"\n'), "up615").counters
    assert (c["syscalls"], c["mmap_lock_acquisitions"], c["vmas_removed"]) == (1, 2, 1)


def test_every_version_counts_the_new_counters_alike() -> None:
    # the counters beyond the zap loop do not depend on the patch version (only puts_without_free does:
    # per page up to 6.8, per gather entry from 6.9)
    spec = _spec("8MiB", "64KiB", FIRST_PAGE, offset="1MiB")
    got = {v: {k: simulate(spec, v).counters[k] for k in NEW} for v in version_ids()}
    first = got[version_ids()[0]]
    assert all(g == first for g in got.values()), got


# ------------------------------------------------------------------------------------------ the suite
def test_suite_and_holdout_are_kernel_expressible_distinct_and_large_enough() -> None:
    s, h = suite(), holdout()
    assert len(s) >= 40
    assert all(expressible_reason(x) is None for x in [*s, *h])
    names = [x.name for x in [*s, *h]]
    assert len(set(names)) == len(names)
    folio_sizes = {x.single_folio_size for x in s}
    assert min(folio_sizes) == 16 * KiB and max(folio_sizes) == 2 * MiB  # type: ignore[type-var]
    assert any(x.pmd_mapped for x in s) and any(x.fork for x in s) and any(x.va_offset_bytes for x in s)
    # the hold-out set shares no (folio size, region size) with the suite
    assert not {(x.single_folio_size, x.size_bytes) for x in s} & {
        (x.single_folio_size, x.size_bytes) for x in h
    }
    assert suite_hash(s) == suite_hash(suite()) != suite_hash(h)


# ------------------------------------------------------------------------------------------ the fit
def _synthetic(n: int = 60, seed: int = 1) -> tuple[list[dict[str, int]], np.ndarray, dict[str, float]]:
    rng = np.random.default_rng(seed)
    truth = {"ptes_cleared": 8.0, "folios_freed": 300.0, "syscalls": 600.0, "vma_splits": 1500.0}
    counters = []
    for _ in range(n):
        c = {
            "ptes_cleared": int(rng.integers(100, 10000)),
            "folios_freed": int(rng.integers(0, 2000)),
            "syscalls": int(rng.integers(1, 1000)),
            "vma_splits": int(rng.integers(0, 2000)),
        }
        c["mmap_lock_acquisitions"] = c["syscalls"]  # exactly proportional: merged
        counters.append(c)
    y = np.array([sum(truth[k] * c[k] for k in truth) for c in counters])
    return counters, y, truth


def test_fit_recovers_known_coefficients_and_merges_proportional_counters() -> None:
    counters, y, truth = _synthetic()
    noisy = y * np.random.default_rng(2).normal(1.0, 0.02, len(y))
    r = fit(counters, noisy, bootstrap=50)
    for name in ("ptes_cleared", "folios_freed", "vma_splits"):
        assert r.coefficients[name] == pytest.approx(truth[name], rel=0.1)
        lo, hi = r.intervals[name]
        assert lo <= truth[name] * 1.05 and hi >= truth[name] * 0.95
    # syscalls and mmap_lock_acquisitions are equal in every layout: one group, one shared coefficient
    assert r.groups == {"syscalls": ("syscalls", "mmap_lock_acquisitions")}
    assert r.coefficients["syscalls"] == r.coefficients["mmap_lock_acquisitions"]
    assert 2 * r.coefficients["syscalls"] == pytest.approx(truth["syscalls"], rel=0.1)
    assert all(v >= 0 for v in r.coefficients.values())
    assert "ptl_acquisitions" in r.unexercised and r.coefficients["ptl_acquisitions"] == 0
    assert r.holdout_median < 0.05 and r.layouts == len(y)


def test_fit_is_non_negative_and_robust_to_an_outlier() -> None:
    counters, y, truth = _synthetic(seed=3)
    disturbed = y.copy()
    disturbed[0] *= 5  # one layout disturbed by other load
    r = fit(counters, disturbed, bootstrap=0)
    assert r.coefficients["ptes_cleared"] == pytest.approx(truth["ptes_cleared"], rel=0.05)
    assert r.coefficients["vma_splits"] == pytest.approx(truth["vma_splits"], rel=0.05)
    # the disturbed layout is the one left badly predicted, the others stay near exact
    errs = list(r.holdout_errors.values())
    assert errs[0] > 0.5 and sorted(errs)[-2] < 0.05
    # a counter that only adds noise gets no negative price
    for c in counters:
        c["ds_calls"] = int(np.random.default_rng(c["syscalls"]).integers(0, 100))
    assert fit(counters, y, bootstrap=0).coefficients["ds_calls"] >= 0.0


# ------------------------------------------------------------------------------------------ the store
def _calibration(release: str, created: dt.datetime, host: str | None = None):  # a stored-shape stand-in
    from benchsvc.calibration import Calibration
    from benchsvc.calibration.measure import Measurements

    counters, y, _ = _synthetic()
    r = fit(counters, y, [f"l{i}" for i in range(len(y))], bootstrap=5)
    model = CostModel(r.coefficients, "calibrated", "calibrated", r.holdout_median, r.holdout_worst)
    m = Measurements({f"l{i}": [int(v)] for i, v in enumerate(y)})
    return Calibration(model, r, m, "up615", release, host or socket.gethostname(), created, "abc", "load 0")


def test_cost_model_for_returns_the_latest_calibration_or_the_reference(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with read_session(engine) as s:
        ref = cost_model_for(s)
    assert ref.kind == "reference" and "not fitted" in ref.label()
    now = os.uname().release
    with write_session(engine) as s:
        save(s, _calibration("5.0.0-old", dt.datetime(2026, 1, 1)))
        save(s, _calibration(now, dt.datetime(2026, 2, 1)))
        save(s, _calibration(now, dt.datetime(2026, 3, 1), host="elsewhere"))
    with read_session(engine) as s:
        model = cost_model_for(s)
        other = cost_model_for(s, "elsewhere")
    assert model.kind == "calibrated" and not model.stale
    assert model.provenance["kernel"] == now and model.provenance["date"] == "2026-02-01 00:00"
    assert "hold-out error" in model.label() and "STALE" not in model.label()
    assert model.coefficients["vma_splits"] == pytest.approx(1500.0, rel=0.01)
    assert other.provenance["machine"] == "elsewhere"


def test_a_model_of_another_kernel_is_flagged_stale(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with write_session(engine) as s:
        save(s, _calibration("6.1.0-older", dt.datetime(2026, 1, 1)))
    with read_session(engine) as s:
        model = cost_model_for(s)
        row_model = to_cost_model(s.scalars(select(CostModelRow)).one(), None)
    assert model.stale and "STALE" in model.label() and "6.1.0-older" in model.label()
    assert not row_model.stale  # without a running kernel to compare with, nothing is flagged
    assert is_stale("6.18.1", "6.18.2") and not is_stale("6.18.2", "6.18.2")


def test_reprice_prices_simulated_rows_from_their_counters() -> None:
    model = CostModel({"ptes_cleared": 2.0, "syscalls": 100.0}, kind="calibrated")
    df = pd.DataFrame(
        [
            {"engine": "sim", "modeled_ns": 1.0, "c_ptes_cleared": 10, "c_syscalls": 3},
            {"engine": "sim", "modeled_ns": 7.0, "c_ptes_cleared": 10, "c_syscalls": None},  # old run
            {"engine": "kernel", "modeled_ns": None, "c_ptes_cleared": 5, "c_syscalls": None},
        ]
    )
    out = reprice(df, model)
    assert out["modeled_ns"].iloc[0] == 2.0 * 10 + 100.0 * 3
    assert out["modeled_ns"].iloc[1] == 7.0 and out["priced_by"].iloc[1] == STORED_PRICE
    assert out["priced_by"].iloc[0] == model.label() and out["priced_by"].iloc[2] == ""


def test_every_counter_name_is_known_to_the_fit() -> None:
    counters, y, _ = _synthetic(n=10)
    assert set(fit(counters, y, bootstrap=0).coefficients) == set(COUNTER_NAMES)


# ------------------------------------------------------------------------------------------ the CLI
def _cli(*args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "benchsvc", *args]
    if user:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/tmp")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_calibrate_without_a_usable_kernel_is_one_line(tmp_path: Path) -> None:
    cp = _cli("calibrate", "--no-store", user=True)
    assert cp.returncode == 1
    errors = [line for line in cp.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [cp.stderr.splitlines()[-1]] and "the live kernel cannot be used" in errors[0]
    assert "Traceback" not in cp.stderr


@pytest.mark.kernel
@live
def test_calibrate_on_the_live_kernel_stores_a_model_that_prices_simulate(tmp_path: Path) -> None:
    db = str(tmp_path / "cal.db")
    before = settled_snapshot()
    cp = _cli("calibrate", "--rounds", "1", "--db", db, "--format", "json")
    assert settled_snapshot() == before, "per-size mTHP sysfs values were not restored"
    assert cp.returncode == 0, cp.stderr
    doc = _strict_json(cp.stdout)
    assert "ETA" in cp.stderr and doc["stored"].startswith("stored as cost model")
    assert doc["quality"]["layouts"] + len(doc["not_reproduced"]) == len(suite())
    assert 0 <= doc["quality"]["holdout_median"] <= doc["quality"]["holdout_worst"]
    assert all(v >= 0 for v in doc["coefficients"].values())
    assert doc["provenance"]["kernel"] == os.uname().release
    sim = json.loads(_cli("simulate", "a-munmap-aligned", "-V", "up615", "--json", "--db", db).stdout)
    assert sim["cost_model"].startswith("calibrated model") and "hold-out error" in sim["cost_model"]
    shown = _cli("calibrate", "--show", "--db", db, "--format", "json")
    assert len(_strict_json(shown.stdout)) == 1


def _strict_json(text: str) -> Any:
    """RFC 8259 JSON: NaN and Infinity, which Python's parser accepts, are refused."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} in JSON output")

    return json.loads(text, parse_constant=refuse)
