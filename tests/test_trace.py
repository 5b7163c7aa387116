"""The kernel's tracepoints as a second oracle: TLB flushes and frees of the zapping task, and leaving tracing
as found.

The live tests are marked ``kernel`` and skip with the reason from ``trace_unavailable_reason()`` /
``unavailable_reason()``; the parser and the refusal need no kernel. Expected counters are derived here from
the workloads' layouts and the gather's capacity, never taken from the engine (the engine is then checked
against the same numbers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchsvc.crosscheck import sim_version
from benchsvc.engine import simulate
from benchsvc.errors import KernelUnavailable
from benchsvc.kernel import KernelRunError, enabled_snapshot, run_lock, run_on_kernel, unavailable_reason
from benchsvc.kernel import trace as tr
from benchsvc.kernel.worker import TEST_HOOK_ENV
from benchsvc.workload import PAGE_SIZE, PMD_SIZE, WorkloadSpec, parse_workload, resolve

KIB, MIB = 1024, 1024 * 1024
REASON = unavailable_reason() or tr.trace_unavailable_reason()
live = pytest.mark.skipif(REASON is not None, reason=f"kernel tracepoints unavailable: {REASON}")

ENTRIES_PER_FLUSH = 4849  # 6.9+ gather: 4 + 19 * 255 page+nr entries before it reports full
TABLE_BATCH = 509  # page tables per struct mmu_table_batch; a full one forces a TLB flush


# ---------------------------------------------------------------------------------------------- parser
TRACE_TEXT = """\
# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
          python-4242    [001] .....   100.000001: mm_page_free: page=0xffffea0000400000 pfn=0x10000 order=4
          python-4242    [001] .....   100.000002: mm_page_free: page=0xffffea0000400400 pfn=0x10010 order=4
          python-4242    [001] .....   100.000003: mm_page_free: page=0xffffea0000800000 pfn=0x20000 order=0
          python-4242    [001] .....   100.000004: mm_page_free_batched: page=0xffffea0000400400 pfn=0x10010 order=0
          python-4242    [001] .....   100.000005: tlb_flush: pages:-1 reason:local MM shootdown (3)
          python-4242    [001] .....   100.000006: tlb_flush: pages:-1 reason:remote IPI send (4)
          python-4242    [001] d....   100.000007: tlb_flush: pages:0 reason:flush on task switch (0)
"""


def test_parse_trace_counts_the_regions_frees_and_the_local_flushes() -> None:
    got = tr.parse_trace(TRACE_TEXT, region_heads={0x10000, 0x10010}, folio_order=4)
    # two order-4 folios of the region: 32 pages; the order-0 page (a page table, say) is not the region's
    assert (got.folios_freed, got.pages_freed) == (2, 2 * 16)
    assert got.folios_freed_by_order == {4: 2} and got.other_frees_by_order == {0: 1}
    assert got.frees_batched == 1  # the per-CPU-list path's second event, not counted as a second free
    # only the local flush of the zapping mm counts; the IPI it sent and the task-switch flush are reported
    assert got.tlb_flushes == 1
    assert got.tlb_events == {"local_mm_shootdown": 1, "remote_ipi_send": 1, "task_switch": 1}
    assert got.counters() == {"tlb_flushes": 1, "folios_freed": 2, "pages_freed": 32}
    # without pfns (not root), every free of the layout's order counts
    assert tr.parse_trace(TRACE_TEXT, region_heads=None, folio_order=4).folios_freed == 2


@pytest.mark.kernel
def test_refuses_in_one_line_when_an_event_is_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert tr.trace_unavailable_reason(tmp_path / "absent") in (
        f"{tmp_path / 'absent'} does not exist",
        f"not root (euid {os.geteuid()}); tracefs needs root",
        f"not Linux (platform is {sys.platform})",
    )
    if REASON is not None:
        pytest.skip(f"kernel tracepoints unavailable: {REASON}")
    with run_lock():
        before = _tracing_state()
    monkeypatch.setattr(tr, "EVENTS", (*tr.EVENTS, "kmem/no_such_event"))
    reason = tr.trace_unavailable_reason()
    assert (
        reason == f"tracepoint kmem:no_such_event is not available ({tr.TRACEFS}/events/kmem/no_such_event)"
    )
    with pytest.raises(KernelUnavailable) as err, tr.TraceSession():
        pytest.fail("entered without the event")
    assert str(err.value) == f"the kernel's tracepoints cannot be used: {reason}"
    assert "\n" not in str(err.value)
    with run_lock():
        assert _tracing_state() == before


# ---------------------------------------------------------------------------------------------- state
def _tracing_state() -> dict[str, object]:
    """Whether tracefs is mounted, its top-level settings and its instances (mounted for the reading and
    unmounted again when it was not mounted: the settings live in the kernel, not in the mount)."""
    mounted = tr.is_tracefs_mounted()
    if not mounted:
        tr.mount_tracefs()
    try:
        return {
            "mounted": mounted,
            "settings": tr.read_global_settings(),
            "instances": sorted(p.name for p in (tr.TRACEFS / "instances").iterdir()),
        }
    finally:
        if not mounted:
            tr.umount_tracefs()


@pytest.fixture
def left_as_found() -> Iterator[dict[str, object]]:
    """Tracing state and per-size mTHP sysfs values before the test; both must read back equal after it."""
    with run_lock():  # no other kernel run (another checkout's tests) between changing and restoring
        before, sysfs = _tracing_state(), enabled_snapshot()
    yield before
    with run_lock():
        assert _tracing_state() == before
        assert enabled_snapshot() == sysfs


# ---------------------------------------------------------------------------------------------- derivations
def _n_folios(spec: WorkloadSpec) -> int:
    (size,) = [s for s, _ in spec.folios]
    return spec.size_bytes // size


def _derived(name: str, spec: WorkloadSpec) -> dict[str, int]:
    """tlb_flushes, folios_freed, pages_freed of the measured zap, from the layout (6.9+ gather)."""
    pages, n = spec.size_bytes // PAGE_SIZE, _n_folios(spec)
    tables = -(-spec.size_bytes // PMD_SIZE)
    whole = {"folios_freed": n, "pages_freed": pages}
    nothing = {"folios_freed": 0, "pages_freed": 0}
    return {
        # one munmap: one page+nr entry per folio, fewer than a gather holds, 32 page tables: one final flush
        "a-munmap-aligned": {"tlb_flushes": 1, **whole},
        # 16384 entries: full after 4849, 9698 and 14547, the final flush, and 512 tables fill one table batch
        "a-munmap-aligned-1g": {"tlb_flushes": n // ENTRIES_PER_FLUSH + 1 + tables // TABLE_BATCH, **whole},
        # one MADV_DONTNEED call per folio (its first 4 KiB), one flush each, nothing freed
        "b-dontneed-first-page": {"tlb_flushes": n, **nothing},
        # one munmap of 64 MiB 32 KiB past a 2 MiB boundary: batches split at page tables, still one flush
        "c-straddle-munmap": {"tlb_flushes": 1, **whole},
        # fork, munmap in the child: the parent still maps every folio
        "f-fork-child-munmap": {"tlb_flushes": 1, **nothing},
        "sizes-16k-munmap-first-page": {"tlb_flushes": n, **nothing},
        # PMD-mapped 2 MiB THPs: zap_huge_pmd() per PMD, one flush at the end, every THP freed
        "pmd-mapped-thp-munmap": {"tlb_flushes": 1, **whole},
        # a munmap of 4 KiB per THP: pmdp_invalidate()'s flush in the PMD split, then the call's own
        "sizes-2m-munmap-first-page": {"tlb_flushes": 2 * n, **nothing},
    }[name]


CANONICAL = [
    "a-munmap-aligned",
    "b-dontneed-first-page",
    "c-straddle-munmap",
    "f-fork-child-munmap",
    "sizes-16k-munmap-first-page",
    "pmd-mapped-thp-munmap",
    "sizes-2m-munmap-first-page",
    "a-munmap-aligned-1g",
]


@pytest.mark.parametrize("name", CANONICAL)
def test_the_derivations_hold_in_the_engine(name: str) -> None:
    spec = resolve(name)
    for version in ("up612", "up615"):
        got = simulate(spec, version).counters
        assert {k: got[k] for k in tr.TRACED_COUNTERS} == _derived(name, spec), version


@pytest.mark.kernel
@live
@pytest.mark.parametrize("name", CANONICAL)
def test_traced_counters_of_the_canonical_workloads(name: str, left_as_found: object) -> None:
    spec = resolve(name)
    result = run_on_kernel(spec, trace=True)
    assert result.traced is not None
    expected = _derived(name, spec)
    assert result.traced.counters() == expected
    assert result.counters | expected == result.counters  # the result carries them under the engine's names
    assert {k: result.stored_counters()[k] for k in expected} == expected
    (size,) = [s for s, _ in spec.folios]
    order = (size // PAGE_SIZE).bit_length() - 1
    if expected["folios_freed"]:
        assert result.traced.folios_freed_by_order == {order: expected["folios_freed"]}
    sim = simulate(spec, sim_version()).counters
    assert {k: sim[k] for k in tr.TRACED_COUNTERS} == expected


@pytest.mark.kernel
@live
@pytest.mark.parametrize("fork", [False, True])
def test_an_exit_step_is_traced_until_the_reap(fork: bool, left_as_found: object) -> None:
    """The exiting process switches recording on before ``_exit``, its reaper switches it off: the exit frees
    every folio (16 MiB of 64 KiB: 256) unless a forked parent still maps them."""
    text = (
        'description = "x"\n[layout]\nsize = "16MiB"\nfolios = { "64KiB" = 1.0 }\n'
        f"fork = {str(fork).lower()}\n"
        '[[zap]]\ncall = "madvise_dontneed"\nlength = "4KiB"\nevery = "64KiB"\n[[zap]]\ncall = "exit"\n'
    )
    spec = parse_workload(text.encode(), name=f"exit-traced-{str(fork).lower()}")
    result = run_on_kernel(spec, trace=True)
    assert result.traced is not None
    n = 16 * MIB // (64 * KIB)
    assert (result.traced.folios_freed, result.traced.pages_freed) == ((0, 0) if fork else (n, n * 16))
    sim = simulate(spec, sim_version()).counters
    assert (sim["folios_freed"], sim["pages_freed"]) == (
        result.traced.folios_freed,
        result.traced.pages_freed,
    )


# ---------------------------------------------------------------------------------------------- every way out
@pytest.mark.kernel
@live
def test_left_as_found_when_the_worker_fails(monkeypatch: pytest.MonkeyPatch, left_as_found: object) -> None:
    monkeypatch.setenv(TEST_HOOK_ENV, "fail:populate")
    with pytest.raises(KernelRunError, match="injected failure after population"):
        run_on_kernel(resolve("a-munmap-aligned"), trace=True)


@pytest.mark.kernel
@live
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_left_as_found_on_a_signal_midway(sig: int, tmp_path: Path, left_as_found: dict[str, object]) -> None:
    paused = tmp_path / "paused"
    script = (
        "from benchsvc.kernel import run_on_kernel\n"
        "from benchsvc.workload import resolve\n"
        "run_on_kernel(resolve('a-munmap-aligned'), trace=True)\n"
    )
    env = dict(os.environ, **{TEST_HOOK_ENV: f"pause:{paused}"})
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (paused.exists() and paused.read_text()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the kernel run never reached its pause"
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        # while paused: tracefs is mounted and the run's instance exists, with the events enabled
        instance = tr.TRACEFS / "instances" / f"{tr.INSTANCE_PREFIX}{proc.pid}"
        assert tr.is_tracefs_mounted() and instance.is_dir()
        assert (instance / "events/kmem/mm_page_free/enable").read_text().strip() == "1"
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert proc.returncode == -sig or b"KeyboardInterrupt" in err, err.decode()
