"""Measure the calibration layouts on the live kernel (docs/cost-model.md#measuring).

The discipline of the kernel engine: each folio size runs inside its own
:func:`~benchsvc.kernel.kernel_session` (that size ``madvise``, the others ``never``, restored on every way
out, under the kernel run lock), the layouts are interleaved -- every round visits every layout once, in a
fresh order -- and each group of a round runs in a fresh child interpreter (:func:`child_main`) that builds
each region (untimed), zaps it and reports the CPU time of the measured calls (``time.thread_time_ns``:
the time the calls spent in the kernel plus the syscall round trip, which other load on the machine does
not stretch).
"""

from __future__ import annotations

import os
import pickle
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchsvc.errors import BenchsvcError
from benchsvc.workload import WorkloadSpec

#: seconds one group of one round may take before it is abandoned
GROUP_TIMEOUT = 600.0


class CalibrationRunError(BenchsvcError):
    """A calibration child failed (died, gave no result)."""


@dataclass
class Measurements:
    """Per layout: the measured CPU time of its zap calls, one value (ns) per round; layouts the kernel did
    not reproduce in some round are listed with the reason."""

    times_ns: dict[str, list[int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def median_ns(self, name: str) -> float:
        return float(statistics.median(self.times_ns[name]))


#: progress(done, total, seconds elapsed)
Progress = Callable[[int, int, float], None]


def child_main() -> None:
    """``python -c 'from benchsvc.calibration.measure import child_main; child_main()'``: pickled
    ``(specs, stats_root)`` on stdin, pickled ``[(name, zap_ns or None, problem or None), ...]`` on stdout."""
    from pathlib import Path

    from benchsvc.kernel.worker import LayoutMismatch, die_with_parent, zap_once

    die_with_parent()
    specs, root = pickle.loads(sys.stdin.buffer.read())
    out: list[tuple[str, int | None, str | None]] = []
    for spec in specs:
        try:
            res = zap_once(spec, str(Path(root)), clock=time.thread_time_ns)
            out.append((spec.name, int(res["zap_ns"]), None))
        except LayoutMismatch as exc:
            out.append(
                (spec.name, None, f"layout not reproduced: {exc} expected {exc.expected}, got {exc.got}")
            )
    sys.stdout.buffer.write(pickle.dumps(out))
    sys.stdout.buffer.flush()


def _run_child(specs: Sequence[WorkloadSpec], root: str) -> list[tuple[str, int | None, str | None]]:
    from benchsvc.kernel.oracle import _worker_env

    proc = subprocess.Popen(
        [sys.executable, "-c", "from benchsvc.calibration.measure import child_main; child_main()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_worker_env(),
    )
    try:
        out, _ = proc.communicate(pickle.dumps((list(specs), root)), timeout=GROUP_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not out:
        raise CalibrationRunError(f"a calibration child failed (exit code {proc.returncode})")
    result: Any = pickle.loads(out)
    return list(result)


def measure(
    specs: Sequence[WorkloadSpec], rounds: int = 5, progress: Progress | None = None, seed: int = 0
) -> Measurements:
    """Measure every layout ``rounds`` times, interleaved (see the module docstring).

    Raises :class:`~benchsvc.errors.KernelUnavailable` (before anything changes) when the kernel cannot
    serve a folio size of the suite."""
    from benchsvc.kernel import check_available, check_expressible, kernel_session

    by_size: dict[int, list[WorkloadSpec]] = {}
    for spec in specs:
        by_size.setdefault(check_expressible(spec), []).append(spec)
    for size in by_size:
        check_available(size)
    rng = random.Random(seed)
    m = Measurements({s.name: [] for s in specs})
    total = rounds * len(specs)
    done = 0
    t0 = time.monotonic()
    for _ in range(rounds):
        sizes = list(by_size)
        rng.shuffle(sizes)
        for size in sizes:
            group = list(by_size[size])
            rng.shuffle(group)
            with kernel_session(group[0]) as settings:
                results = _run_child(group, str(settings.root))
            for name, ns, problem in results:
                if ns is None:
                    m.failures[name] = problem or "no result"
                else:
                    m.times_ns[name].append(ns)
            done += len(group)
            if progress is not None:
                progress(done, total, time.monotonic() - t0)
    m.seconds = time.monotonic() - t0
    return m


def env_description() -> str:
    """The load on the machine while measuring (``os.getloadavg()``), for the record."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"
