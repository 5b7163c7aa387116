"""``benchsvc crosscheck``: up612 against the live kernel, counter by counter (docs/kernel-oracle.md).

The comparison logic is tested with fake kernel results everywhere; the live run is marked ``kernel`` and
skips with the reason from :func:`benchsvc.kernel.unavailable_reason` where the kernel cannot serve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchsvc.crosscheck import (
    AGREE,
    COUNTERS,
    DISAGREE,
    LAYOUT_NOT_REPRODUCED,
    MM_CHECKS,
    SKIPPED,
    TRACED_COUNTERS,
    compare,
    crosscheck,
    layout_folios,
    sim_version,
)
from benchsvc.engine import simulate
from benchsvc.errors import KernelUnavailable, LayoutNotReproduced
from benchsvc.kernel import KernelResult, settled_snapshot, unavailable_reason
from benchsvc.workload import PMD_SIZE, WorkloadSpec, resolve

KIB = 1024
MIB = 1024 * KIB

REASON = unavailable_reason()
live = pytest.mark.skipif(REASON is not None, reason=f"live kernel unavailable: {REASON}")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", "crosscheck", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _fake_result(spec: WorkloadSpec, counters: dict[str, int], faults: int | None = None) -> KernelResult:
    folios = layout_folios(spec)
    return KernelResult(
        workload=spec.name,
        kernel_release="fake",
        folio_size=spec.single_folio_size or 0,
        folios=folios,
        counters=counters,
        stats_population={"anon_fault_alloc": folios if faults is None else faults},
        stats_zap={},
        zap_ns=0,
        zap_calls=0,
    )


def _up612(spec: WorkloadSpec) -> dict[str, int]:
    c = simulate(spec, "up612").counters
    return {"split_deferred": c["split_deferred"], "partially_mapped_after": c["partially_mapped_after"]}


# ------------------------------------------------------------------------------ the core, no kernel needed
def test_compare_reports_a_disagreement_counter_by_counter() -> None:
    spec = resolve("c-straddle-munmap")
    sim = simulate(spec, "up612").counters
    kernel = _fake_result(spec, {**_up612(spec), "split_deferred": sim["split_deferred"] + 1})
    check = compare(spec, sim, kernel)
    assert check.status == DISAGREE and not check.ok
    assert {c.counter: c.agree for c in check.checks} == {
        "split_deferred": False,
        "partially_mapped_after": True,
        "anon_fault_alloc": True,
    }
    assert check.reason is not None and "split_deferred" in check.reason


def test_crosscheck_core_fails_on_a_disagreement_and_skips_the_inexpressible() -> None:
    good, bad, mixed = (
        resolve(n) for n in ("a-munmap-aligned", "b-dontneed-first-page", "e-mixed-order0-large")
    )

    def fake_run(spec: WorkloadSpec) -> KernelResult:
        assert spec.name != mixed.name, "a not-expressible workload must not reach the kernel"
        if spec.name == bad.name:  # the kernel built fewer folios than the layout has
            return _fake_result(spec, _up612(spec), faults=layout_folios(spec) - 1)
        return _fake_result(spec, _up612(spec))

    report = crosscheck([good, bad, mixed], run=fake_run)
    assert [w.status for w in report.workloads] == [AGREE, DISAGREE, SKIPPED]
    assert not report.ok
    assert [w.workload for w in report.failures] == [bad.name]
    rows = report.rows()
    assert [(r["workload"], r["counter"]) for r in rows] == [
        *((good.name, c) for c in COUNTERS),
        *((bad.name, c) for c in COUNTERS),
        (mixed.name, None),
    ]
    bad_faults = next(r for r in rows if r["workload"] == bad.name and r["counter"] == "anon_fault_alloc")
    assert bad_faults["agree"] is False and bad_faults["sim"] == 1024 and bad_faults["kernel"] == 1023
    skipped = rows[-1]
    assert skipped["status"] == SKIPPED and "not expressible" in str(skipped["reason"])

    # without the disagreeing workload, a skipped one alone does not fail the report
    assert crosscheck([good, mixed], run=fake_run).ok


@pytest.mark.parametrize(
    ("release", "version"),
    [
        ("6.12.0", "up612"),
        ("6.14.11-generic", "up612"),
        ("6.15.0", "up615"),
        ("6.18.44-fc-v1045", "up615"),
        ("7.0.1", "up615"),
    ],
)
def test_the_version_compared_is_the_one_that_models_the_release(release: str, version: str) -> None:
    assert sim_version(release) == version


def test_crosscheck_compares_with_the_running_kernels_version() -> None:
    spec = resolve("a-munmap-aligned")
    report = crosscheck([spec], run=lambda s: _fake_result(s, _up612(s)))
    assert report.version == sim_version(os.uname().release)
    assert crosscheck([spec], run=lambda s: _fake_result(s, _up612(s)), version="up612").version == "up612"


def test_layout_not_reproduced_is_a_failure() -> None:
    spec = resolve("a-munmap-aligned")

    def fell_back(spec: WorkloadSpec) -> KernelResult:
        raise LayoutNotReproduced(f"{spec.name}: the kernel did not reproduce the layout")

    report = crosscheck([spec], run=fell_back)
    (w,) = report.workloads
    assert w.status == LAYOUT_NOT_REPRODUCED and not w.checks and not report.ok


def test_cli_not_expressible_workload_is_skipped_with_its_reason() -> None:
    # needs no kernel: nothing expressible is asked for, so availability is not even checked
    proc = _cli("e-mixed-order0-large", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["workload"] == "e-mixed-order0-large"
    assert row["status"] == SKIPPED
    assert row["reason"].startswith("not expressible on the kernel: ")
    assert row["agree"] is None


# --------------------------------------------------------------------------------------- the live kernel
@pytest.mark.kernel
@live
def test_cli_four_workloads_agree_on_the_live_kernel() -> None:
    before = settled_snapshot()
    names = ["a-munmap-aligned", "c-straddle-munmap", "b-dontneed-first-page", "f-fork-child-munmap"]
    proc = _cli(*names, "--format", "json")
    assert settled_snapshot() == before, "per-size mTHP sysfs values were not restored"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)
    mm = [name for name, _ in MM_CHECKS]
    assert [(r["workload"], r["counter"]) for r in rows] == [
        (n, c) for n in names for c in (*COUNTERS, *TRACED_COUNTERS, *mm)
    ]
    assert all(r["agree"] is True and r["status"] == AGREE for r in rows), rows
    got = {(r["workload"], r["counter"]): (r["sim"], r["kernel"]) for r in rows}

    # docs/kernel-history.md#c-folios-straddling-page-tables: 64 MiB of 64 KiB folios moved 32 KiB past a 2 MiB boundary -> one deferred split per
    # straddled page-table boundary, i.e. one per 2 MiB of the region
    straddled = 64 * MIB // PMD_SIZE
    assert got[("c-straddle-munmap", "split_deferred")] == (straddled, straddled) == (32, 32)
    # b: MADV_DONTNEED of the first 4 KiB of each 64 KiB folio of 64 MiB leaves every folio partially mapped
    folios = 64 * MIB // (64 * KIB)
    assert got[("b-dontneed-first-page", "split_deferred")] == (folios, folios) == (1024, 1024)
    for n in names:
        assert got[(n, "anon_fault_alloc")] == (folios, folios)
    # the tracepoints: a and c free every folio in one munmap (one flush); b flushes once per MADV_DONTNEED
    # call and frees nothing; f's child frees nothing (the parent maps every folio)
    assert got[("a-munmap-aligned", "folios_freed")] == (folios, folios)
    assert got[("c-straddle-munmap", "pages_freed")] == (64 * MIB // 4096,) * 2
    assert got[("b-dontneed-first-page", "tlb_flushes")] == (folios, folios)
    assert got[("f-fork-child-munmap", "tlb_flushes")] == (1, 1)
    assert got[("f-fork-child-munmap", "folios_freed")] == (0, 0)
    # the region's VMAs: a whole munmap removes the one VMA; c's munmap is whole too (the offset moves the
    # region, not the range); MADV_DONTNEED leaves VMAs alone; no workload here has a PMD-mapped THP to split
    assert got[("a-munmap-aligned", "vma_count_change")] == (-1, -1)
    assert got[("c-straddle-munmap", "vma_count_change")] == (-1, -1)
    assert got[("b-dontneed-first-page", "vma_count_change")] == (0, 0)
    assert got[("f-fork-child-munmap", "vma_count_change")] == (-1, -1)
    assert all(got[(n, "pmd_splits")] == (0, 0) for n in names)
    # each compared workload carries its measured time and the time the cost model predicts
    assert all(r["measured_ns"] > 0 and r["predicted_ns"] > 0 and r["priced_by"] for r in rows)


@pytest.mark.kernel
@live
def test_cli_every_shipped_workload_the_kernel_can_express_agrees_at_16k_64k_and_2m() -> None:
    before = settled_snapshot()
    proc = _cli("--format", "json")  # no argument: every shipped workload
    assert settled_snapshot() == before, "per-size mTHP sysfs values were not restored"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)
    skipped = {r["workload"] for r in rows if r["status"] == SKIPPED}
    assert skipped == {"e-mixed-order0-large", "exit-mixed", "mix-shuffled-munmap", "swap-order0-munmap"}
    compared = [r for r in rows if r["status"] != SKIPPED]
    assert all(r["agree"] is True and r["status"] == AGREE for r in compared), [
        r for r in compared if not r["agree"]
    ]
    got = {(r["workload"], r["counter"]): (r["sim"], r["kernel"]) for r in compared}
    # the four patterns of the acceptance at 16 KiB and 2 MiB (64 KiB: a, b, c, f above), values derived from
    # the layouts: 64 MiB = 4096 folios of 16 KiB or 32 of 2 MiB, and 32 page-table (2 MiB) boundaries
    n16, n2m, boundaries = 64 * MIB // (16 * KIB), 64 * MIB // PMD_SIZE, 64 * MIB // PMD_SIZE
    expected = {
        # aligned full unmap: nothing queued, nothing left partially mapped
        "sizes-16k-munmap-aligned": (0, 0, n16),
        "g-pte-mapped-thp": (0, 0, n2m),
        "pmd-mapped-thp-munmap": (0, 0, n2m),
        # first page of each folio unmapped: every folio queued and left partially mapped
        "sizes-16k-munmap-first-page": (n16, n16, n16),
        "sizes-2m-munmap-first-page": (n2m, n2m, n2m),
        # folios straddling page tables: one queued per straddled boundary, all freed by the end
        "sizes-16k-straddle-munmap": (boundaries, 0, n16),
        "sizes-2m-straddle-munmap": (boundaries, 0, n2m),
        # fork, then unmap in the child: the parent keeps every page mapped, nothing queued
        "sizes-16k-fork-child-munmap": (0, 0, n16),
        "sizes-2m-fork-child-munmap": (0, 0, n2m),
    }
    for name, values in expected.items():
        for counter, value in zip(COUNTERS, values, strict=True):
            assert got[(name, counter)] == (value, value), (name, counter)
    # one page of each folio unmapped: one call per folio, two VMA splits each but the first, one VMA
    # removed each (net +1 per call, -1 for the first); with PMD-mapped THPs each cut splits the PMD first
    assert got[("sizes-16k-munmap-first-page", "vma_count_change")] == (n16 - 1, n16 - 1)
    assert got[("sizes-2m-munmap-first-page", "pmd_splits")] == (n2m, n2m)
    assert got[("pmd-mapped-thp-munmap", "pmd_splits")] == (0, 0)
    # every expressible workload also compared its tracepoint counters
    compared_names = {r["workload"] for r in compared}
    assert {(n, c) for n in compared_names for c in TRACED_COUNTERS} <= set(got)


def test_unavailable_kernel_raises_before_anything_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchsvc.kernel

    monkeypatch.setattr(benchsvc.kernel, "unavailable_reason", lambda size: f"no {size // KIB}kB here")
    with pytest.raises(KernelUnavailable, match="the live kernel cannot be used: no 64kB here"):
        crosscheck([resolve("e-mixed-order0-large"), resolve("a-munmap-aligned")])
    # nothing expressible asked for: the kernel is not needed, so its absence is no error
    assert crosscheck([resolve("e-mixed-order0-large")]).ok


def test_traced_counters_are_compared_and_an_exit_step_leaves_tlb_flushes_out() -> None:
    from dataclasses import replace

    from benchsvc.kernel.trace import TracedZap

    spec = resolve("a-munmap-aligned")
    sim = simulate(spec, "up615").counters
    traced = TracedZap(tlb_flushes=sim["tlb_flushes"] + 1, folios_freed=1024, pages_freed=16384)
    kernel = replace(_fake_result(spec, _up612(spec)), traced=traced)
    check = compare(spec, sim, kernel)
    assert [c.counter for c in check.checks] == [*COUNTERS, *TRACED_COUNTERS]
    assert check.status == DISAGREE and check.reason == "disagree on tlb_flushes"
    # a workload that ends in exit: the teardown flushes the whole interpreter, so no tlb_flushes row
    exit_spec = replace(spec, zaps=(*spec.zaps, replace(spec.zaps[0], call="exit")))
    rows = [c.counter for c in compare(exit_spec, sim, kernel).checks]
    assert "tlb_flushes" not in rows and "folios_freed" in rows
