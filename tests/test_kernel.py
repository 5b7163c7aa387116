"""The live kernel as an oracle (docs/kernel-oracle.md): kernel stats vs the up612 simulation, and sysfs hygiene.

Tests that touch the live kernel skip with :func:`unavailable_reason` where it cannot serve. The checks of
the sysfs logic on a fake tree (and the "not expressible" checks) need no kernel and run everywhere.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchsvc.engine import simulate
from benchsvc.errors import BenchsvcError, KernelUnavailable, LayoutNotReproduced
from benchsvc.kernel import (
    KernelRunError,
    MthpSettings,
    NotExpressibleOnKernel,
    enabled_snapshot,
    oracle,
    run_on_kernel,
    settled_snapshot,
    sysfs,
    time_zap_on_kernel,
    unavailable_reason,
)
from benchsvc.kernel.worker import TEST_HOOK_ENV
from benchsvc.workload import WorkloadSpec, load_workload, parse_workload, shipped_workloads_dir

pytestmark = pytest.mark.kernel

REASON = unavailable_reason()
live = pytest.mark.skipif(REASON is not None, reason=f"live kernel unavailable: {REASON}")
WORKLOADS = shipped_workloads_dir()
COMPARED = ("split_deferred", "partially_mapped_after")


def _spec(name: str, layout: str, zaps: str) -> WorkloadSpec:
    raw = f'description = "{name}"\n[layout]\n{layout}\n{zaps}'
    return parse_workload(raw.encode(), name=name)


def _up612(spec: WorkloadSpec) -> dict[str, int]:
    counters = simulate(spec, "up612").counters
    return {k: counters[k] for k in COMPARED}


@pytest.fixture
def sysfs_unchanged() -> object:
    """Snapshot every hugepages-*/enabled and the top-level enabled; assert they are the same afterwards."""
    before = settled_snapshot()
    yield before
    assert settled_snapshot() == before


# ------------------------------------------------------------------------------- measured on the live kernel
@live
def test_measurement_1_first_page_munmap_of_each_folio(sysfs_unchanged: object) -> None:
    spec = _spec(
        "m1-munmap-first-page",
        'size = "64MiB"\nfolios = { "64KiB" = 1.0 }',
        '[[zap]]\ncall = "munmap"\nlength = "4KiB"\nevery = "64KiB"',
    )
    result = run_on_kernel(spec, trace=False)  # the stats only (tracepoints: tests/test_trace.py)
    assert result.stats_population["anon_fault_alloc"] == 1024
    assert result.stats_zap["split_deferred"] == 1024
    assert result.stats_zap["nr_anon_partially_mapped"] == 1024
    assert result.zap_calls == 1024
    sim = simulate(spec, "up612").counters
    assert sim["split_deferred"] == 1024
    assert sim["partially_mapped_after"] == 1024
    assert result.counters == {k: sim[k] for k in COMPARED}


@live
def test_measurement_2_mremap_32k_then_munmap(sysfs_unchanged: object) -> None:
    spec = _spec(
        "m2-straddle-munmap",
        'size = "64MiB"\nva_offset = "32KiB"\nfolios = { "64KiB" = 1.0 }',
        '[[zap]]\ncall = "munmap"',
    )
    result = run_on_kernel(spec, trace=False)  # the stats only (tracepoints: tests/test_trace.py)
    assert result.stats_zap["split_deferred"] == 32
    assert result.stats_zap["nr_anon_partially_mapped"] == 0
    assert result.stats_zap["nr_anon"] == -1024  # everything was freed by the one munmap
    assert _up612(spec) == result.counters == {"split_deferred": 32, "partially_mapped_after": 0}


@live
@pytest.mark.parametrize(
    "name",
    [
        "a-munmap-aligned",
        "c-straddle-munmap",
        "f-fork-child-munmap",
        "d-gather-full-mid-folio",
        "b-dontneed-first-page",
        # beyond the canonical five: two measured/unmeasured steps, PTE-mapped and PMD-mapped 2 MiB THPs
        "dontneed-cut-both-ends",
        "g-pte-mapped-thp",
        "pmd-mapped-thp-munmap",
    ],
)
def test_shipped_workload_kernel_matches_up612(name: str, sysfs_unchanged: object) -> None:
    spec = load_workload(WORKLOADS / f"{name}.toml")
    result = run_on_kernel(spec, trace=False)  # the stats only (tracepoints: tests/test_trace.py)
    assert result.stats_population["anon_fault_alloc"] == result.folios
    assert result.counters == _up612(spec), f"{name}: kernel {result.counters} vs up612 {_up612(spec)}"


@live
@pytest.mark.parametrize("fork", [False, True])
def test_exit_step_is_measured_after_the_owner_is_reaped(fork: bool, sysfs_unchanged: object) -> None:
    spec = _spec(
        f"exit-after-dontneed-fork-{fork}".lower(),
        f'size = "16MiB"\nfolios = {{ "64KiB" = 1.0 }}\nfork = {str(fork).lower()}',
        '[[zap]]\ncall = "madvise_dontneed"\nlength = "4KiB"\nevery = "64KiB"\n[[zap]]\ncall = "exit"',
    )
    result = run_on_kernel(spec, trace=False)  # the stats only (tracepoints: tests/test_trace.py)
    assert result.zap_calls == 256 + 1
    # without fork the exit frees every folio (the flag goes with them); with fork the parent keeps them
    assert result.stats_zap["nr_anon"] == (0 if fork else -256)
    assert result.counters == _up612(spec)


@live
def test_page_level_layout_check_counts_whole_folios_of_the_size(sysfs_unchanged: dict[str, str]) -> None:
    from benchsvc.kernel import kernel_session
    from benchsvc.kernel.sysfs import THP_ROOT
    from benchsvc.kernel.worker import _build, _folios_in_region, _Run

    spec = load_workload(WORKLOADS / "a-munmap-aligned.toml")  # 64 MiB of 64 KiB folios
    size, kib = spec.size_bytes, 1024
    with kernel_session(spec):
        run, population = _build(spec, str(THP_ROOT))
        try:
            assert population["anon_fault_alloc"] == 1024
            assert _folios_in_region(run.base, size, 64 * kib) == 1024
            # the same pages seen as 32 KiB or 128 KiB folios: no slice is a whole folio of that size
            assert _folios_in_region(run.base, size, 32 * kib) == 0
            assert _folios_in_region(run.base, size, 128 * kib) == 0
        finally:
            run.cleanup()
    if sysfs_unchanged["hugepages-64kB/enabled"] == "never":
        # with the size left at never the kernel faults 4 KiB pages: none of them is a 64 KiB folio
        plain = _Run(spec, str(THP_ROOT))
        plain.populate()
        try:
            assert _folios_in_region(plain.base, size, 64 * kib) == 0
        finally:
            plain.cleanup()


@live
@pytest.mark.parametrize("fork", [False, True])
def test_zap_once_in_process_measures_an_exit_step_like_the_oracle(
    fork: bool, sysfs_unchanged: object
) -> None:
    # what a pyperf worker of `benchsvc run --engine kernel` does per loop: without fork a forked owner builds,
    # zaps and exits; with fork the zaps (and the exit) run in a forked child of this process
    from benchsvc.kernel import kernel_session
    from benchsvc.kernel.sysfs import THP_ROOT
    from benchsvc.kernel.worker import zap_once

    spec = _spec(
        f"zap-once-exit-fork-{fork}".lower(),
        f'size = "16MiB"\nfolios = {{ "64KiB" = 1.0 }}\nfork = {str(fork).lower()}',
        '[[zap]]\ncall = "madvise_dontneed"\nlength = "4KiB"\nevery = "64KiB"\n[[zap]]\ncall = "exit"',
    )
    with kernel_session(spec):
        raw = zap_once(spec, str(THP_ROOT))
    assert raw["population"]["anon_fault_alloc"] == 256
    assert raw["calls"] == 256 + 1 and raw["zap_ns"] > 0
    assert raw["zap"]["nr_anon"] == (0 if fork else -256)  # as test_exit_step_is_measured_after_...
    sim = simulate(spec, "up612").counters
    assert raw["zap"]["split_deferred"] == sim["split_deferred"]
    assert raw["zap"]["nr_anon_partially_mapped"] == sim["partially_mapped_after"]


@live
def test_time_zap_on_kernel_returns_seconds_per_run(sysfs_unchanged: object) -> None:
    spec = load_workload(WORKLOADS / "a-munmap-aligned.toml")
    times = time_zap_on_kernel(spec, repeat=3)
    assert len(times) == 3
    assert all(0 < t < 5 for t in times)


def test_not_expressible_workloads_are_refused_before_touching_the_kernel() -> None:
    for name, why in [
        ("e-mixed-order0-large", "mixes folio sizes"),
        ("exit-mixed", "shuffled mix"),
        ("mix-shuffled-munmap", "shuffled mix"),
    ]:
        with pytest.raises(NotExpressibleOnKernel, match=f"not expressible on the kernel: .*{why}"):
            run_on_kernel(load_workload(WORKLOADS / f"{name}.toml"))
    order0 = _spec("order0", 'size = "1MiB"\nfolios = { "4KiB" = 1.0 }', '[[zap]]\ncall = "munmap"')
    with pytest.raises(NotExpressibleOnKernel, match="order-0"):
        run_on_kernel(order0)
    swap = _spec(
        "swap", 'size = "1MiB"\nfolios = { "4KiB" = 1.0 }\nswap_share = 0.5', '[[zap]]\ncall = "munmap"'
    )
    with pytest.raises(NotExpressibleOnKernel, match="swap_share"):
        run_on_kernel(swap)
    assert issubclass(NotExpressibleOnKernel, BenchsvcError)


# ---------------------------------------------------------------------------------------------- failures
@live
def test_sysfs_restored_when_the_run_fails_midway(
    monkeypatch: pytest.MonkeyPatch, sysfs_unchanged: dict[str, str]
) -> None:
    seen: dict[str, str] = {}

    def failing_worker(
        spec: WorkloadSpec, root: Path, trace_instance: str | None = None
    ) -> dict[str, object]:
        seen.update(enabled_snapshot())
        raise RuntimeError("injected failure after sysfs was changed")

    monkeypatch.setattr(oracle, "_run_worker", failing_worker)
    with pytest.raises(RuntimeError, match="injected failure"):
        run_on_kernel(load_workload(WORKLOADS / "a-munmap-aligned.toml"))
    assert seen["hugepages-64kB/enabled"] == "madvise"  # it really was changed while the run was going
    assert seen["hugepages-2048kB/enabled"] == "never"
    assert settled_snapshot() == sysfs_unchanged


@live
def test_sysfs_restored_when_the_worker_fails_after_population(
    monkeypatch: pytest.MonkeyPatch, sysfs_unchanged: dict[str, str]
) -> None:
    monkeypatch.setenv(TEST_HOOK_ENV, "fail:populate")
    with pytest.raises(KernelRunError, match="injected failure after population"):
        run_on_kernel(load_workload(WORKLOADS / "b-dontneed-first-page.toml"))
    assert settled_snapshot() == sysfs_unchanged


@live
def test_layout_not_reproduced_is_reported(monkeypatch: pytest.MonkeyPatch, sysfs_unchanged: object) -> None:
    # leave hugepages-64kB at never: the kernel falls back, so anon_fault_alloc (64 KiB) stays at 0
    monkeypatch.setattr(MthpSettings, "plan", lambda self: [])
    with pytest.raises(LayoutNotReproduced, match="anon_fault_alloc expected 1024, got 0"):
        run_on_kernel(load_workload(WORKLOADS / "a-munmap-aligned.toml"))


@live
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sysfs_restored_on_signal_midway(sig: int, tmp_path: Path, sysfs_unchanged: dict[str, str]) -> None:
    paused = tmp_path / "paused"
    script = (
        "import sys\n"
        "from benchsvc.kernel import run_on_kernel\n"
        "from benchsvc.workload import load_workload\n"
        "run_on_kernel(load_workload(sys.argv[1]))\n"
    )
    env = dict(os.environ, **{TEST_HOOK_ENV: f"pause:{paused}"})
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(WORKLOADS / "a-munmap-aligned.toml")],
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (paused.exists() and paused.read_text()) and proc.poll() is None:
            assert time.monotonic() < deadline, "the kernel run never reached its pause"
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        during = enabled_snapshot()
        assert during["hugepages-64kB/enabled"] == "madvise"
        assert during["hugepages-2048kB/enabled"] == "never"
        worker_pid = int(paused.read_text())
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert proc.returncode == -sig or b"KeyboardInterrupt" in err, err.decode()
    assert settled_snapshot() == sysfs_unchanged
    assert not Path(f"/proc/{worker_pid}").exists()  # the worker was killed and reaped


@live
def test_nothing_writes_always_during_a_live_run(
    monkeypatch: pytest.MonkeyPatch, sysfs_unchanged: dict[str, str]
) -> None:
    writes: list[tuple[str, str]] = []
    real_write = sysfs._write_raw

    def spy(path: Path, value: str) -> None:
        writes.append((str(path), value))
        real_write(path, value)

    monkeypatch.setattr(sysfs, "_write_raw", spy)
    run_on_kernel(load_workload(WORKLOADS / "g-pte-mapped-thp.toml"))  # 2 MiB: madvise instead of never
    run_on_kernel(load_workload(WORKLOADS / "a-munmap-aligned.toml"))
    assert writes, "the runs changed nothing?"
    assert all(value in ("madvise", "never", "inherit") for _, value in writes), writes
    assert not any("/enabled" in path and not path.endswith("kB/enabled") for path, _ in writes), writes


# ---------------------------------------------------------------------------------------------- fake sysfs
def _fake_tree(root: Path, values: dict[str, str], top: str = "madvise") -> Path:
    choices = ("always", "inherit", "madvise", "never")
    for name, value in values.items():
        d = root / f"hugepages-{name}"
        (d / "stats").mkdir(parents=True)
        (d / "enabled").write_text(" ".join(f"[{c}]" if c == value else c for c in choices) + "\n")
        for stat in sysfs.STAT_NAMES:
            (d / "stats" / stat).write_text("0\n")
    (root / "hugepages-8kB" / "stats").mkdir(parents=True)  # shmem-only size: no enabled file
    (root / "enabled").write_text(
        " ".join(f"[{c}]" if c == top else c for c in ("always", "madvise", "never"))
    )
    return root


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[tuple[str, str]]]:
    """A fake THP tree with the host's values, a state dir, and a log of every write (sysfs semantics)."""
    root = _fake_tree(
        tmp_path / "thp",
        {"16kB": "never", "32kB": "never", "64kB": "never", "128kB": "inherit", "2048kB": "inherit"},
    )
    writes: list[tuple[str, str]] = []

    def write_like_sysfs(path: Path, value: str) -> None:
        writes.append((path.name if path.name != "enabled" else path.parent.name, value))
        text = path.read_text().replace("[", "").replace("]", "").split()
        path.write_text(" ".join(f"[{c}]" if c == value else c for c in text) + "\n")

    monkeypatch.setattr(sysfs, "_write_raw", write_like_sysfs)
    return root, tmp_path / "state", writes


def test_write_enabled_refuses_always(tmp_path: Path) -> None:
    f = tmp_path / "enabled"
    f.write_text("always inherit madvise [never]\n")
    with pytest.raises(AssertionError, match="refusing to write 'always'"):
        sysfs.write_enabled(f, "always")
    assert f.read_text() == "always inherit madvise [never]\n"


def test_settings_change_only_what_is_needed_and_restore(
    fake: tuple[Path, Path, list[tuple[str, str]]],
) -> None:
    root, state, writes = fake
    before = enabled_snapshot(root)
    with MthpSettings(64 * 1024, root=root, state_dir=state) as s:
        during = enabled_snapshot(root)
        assert (state / "sysfs-journal.json").exists()
        assert [(Path(c.path).parent.name, c.original, c.ours) for c in s.changes] == [
            ("hugepages-64kB", "never", "madvise"),
            ("hugepages-128kB", "inherit", "never"),
            ("hugepages-2048kB", "inherit", "never"),
        ]
    assert during == {**before, "hugepages-64kB/enabled": "madvise", "hugepages-128kB/enabled": "never",
                      "hugepages-2048kB/enabled": "never"}  # fmt: skip
    assert enabled_snapshot(root) == before
    assert not (state / "sysfs-journal.json").exists()
    assert "always" not in {v for _, v in writes}
    # a 2 MiB layout keeps hugepages-2048kB enabled (madvise), everything else never
    with MthpSettings(2 * 1024 * 1024, root=root, state_dir=state):
        assert enabled_snapshot(root)["hugepages-2048kB/enabled"] == "madvise"
        assert enabled_snapshot(root)["hugepages-64kB/enabled"] == "never"
    assert enabled_snapshot(root) == before


def test_settings_restore_on_exception_and_sigint(fake: tuple[Path, Path, list[tuple[str, str]]]) -> None:
    root, state, _ = fake
    before = enabled_snapshot(root)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(ZeroDivisionError), MthpSettings(64 * 1024, root=root, state_dir=state):
        1 / 0  # noqa: B018
    assert enabled_snapshot(root) == before
    with pytest.raises(KeyboardInterrupt), MthpSettings(64 * 1024, root=root, state_dir=state):
        assert enabled_snapshot(root) != before
        signal.raise_signal(signal.SIGINT)
        time.sleep(5)  # not reached
    assert enabled_snapshot(root) == before
    assert signal.getsignal(signal.SIGINT) is handler  # the previous handler is back


def test_settings_refuse_to_change_an_always_value(fake: tuple[Path, Path, list[tuple[str, str]]]) -> None:
    root, state, writes = fake
    sysfs._write_raw(root / "hugepages-32kB" / "enabled", "always")  # someone else's setting
    writes.clear()
    with pytest.raises(KernelUnavailable, match="hugepages-32kB/enabled is 'always'"):
        MthpSettings(64 * 1024, root=root, state_dir=state).__enter__()
    assert writes == []  # refused before changing anything
    # the layout's own size at 'always' already covers madvised regions: left alone, never rewritten
    with MthpSettings(32 * 1024, root=root, state_dir=state):
        assert enabled_snapshot(root)["hugepages-32kB/enabled"] == "always"
    assert "always" not in {v for _, v in writes}
    assert enabled_snapshot(root)["hugepages-32kB/enabled"] == "always"


def test_stale_journal_of_a_killed_run_is_undone(fake: tuple[Path, Path, list[tuple[str, str]]]) -> None:
    root, state, _ = fake
    before = enabled_snapshot(root)
    settings = MthpSettings(64 * 1024, root=root, state_dir=state)
    settings.__enter__()
    settings._release_lock()  # as if the process had been SIGKILLed: no restore, journal left behind
    settings._guard.uninstall()
    assert enabled_snapshot(root) != before
    with MthpSettings(2 * 1024 * 1024, root=root, state_dir=state) as again:
        assert len(again.recovered) == 3
    assert enabled_snapshot(root) == before


def test_unavailable_reasons_name_the_failing_condition(
    fake: tuple[Path, Path, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, _ = fake
    monkeypatch.setattr(sys, "platform", "darwin")
    assert "not Linux" in (unavailable_reason(root=root) or "")
    monkeypatch.setattr(sys, "platform", "linux")
    real_uname = os.uname()
    fake_uname = os.uname_result((*real_uname[:2], "6.11.0-test", *real_uname[3:]))
    monkeypatch.setattr(os, "uname", lambda: fake_uname)
    assert "older than 6.12" in (unavailable_reason(root=root) or "")
    fake_uname = os.uname_result((*real_uname[:2], "6.18.1", *real_uname[3:]))
    assert "no per-size mTHP directory for 512kB" in (unavailable_reason(512 * 1024, root=root) or "")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "not root" in (unavailable_reason(root=root) or "")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert "read-only" in (unavailable_reason(root=root) or "")
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    assert unavailable_reason(root=root) is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(KernelUnavailable, match="not root"):
        run_on_kernel(load_workload(WORKLOADS / "a-munmap-aligned.toml"), root=root)
