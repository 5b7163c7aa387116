"""The canary: a fixed calibration benchmark measured beside the versions in every interleaved trial.

It does not depend on the engine's code: a small, frozen piece of pure Python whose work resembles the
simulator's (walking flat integer lists, comparing runs of entries, counting into a dict, a few method calls),
so a machine that is slower tonight slows the canary as it slows the versions. It is stored as its own series
(engine ``canary``, version :data:`VERSION`, workload :data:`WORKLOAD`), whose definition text is this function's
source: changing the function changes the workload's content hash and so starts a new series, as a changed
workload would. The nightly analysis reads a move of the canary, or of most series at once, on a night with no
change to the engine's code as one machine event rather than as many regressions (docs/measurement.md).
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable

from benchsvc.records import EngineKind, VersionInfo, WorkloadRef

ENGINE = EngineKind.CANARY
VERSION = "canary-1"
WORKLOAD = "canary"
#: entries walked per call: about the work of one zap of a few thousand PTEs (a few milliseconds)
N_ENTRIES = 16384


def canary_work(n: int = N_ENTRIES) -> int:
    """Fixed work: build a list of "PTEs" in runs of 16, find the runs, tally them. Returns a checksum."""
    pte = [0] * n
    for i in range(n):
        pte[i] = (i // 16) * 100 + (i % 16) + 1
    runs: dict[int, int] = {}
    i = 0
    while i < n:
        ent = pte[i]
        k = 1
        while i + k < n and pte[i + k] == ent + k:
            k += 1
        runs[k] = runs.get(k, 0) + 1
        i += k
    total = 0
    for length, count in sorted(runs.items()):
        total += length * count
    return total


def time_canary(clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call of :func:`canary_work` on ``clock``."""
    t0 = clock()
    canary_work()
    return clock() - t0


def definition() -> str:
    """What is stored as the canary workload's definition: the function's source and its size."""
    return f"# benchsvc canary {VERSION}: N_ENTRIES = {N_ENTRIES}\n" + inspect.getsource(canary_work)


def workload_ref() -> WorkloadRef:
    text = definition()
    return WorkloadRef(
        WORKLOAD,
        hashlib.sha256(text.encode("utf-8")).hexdigest(),
        text,
        "machine speed canary: fixed pure-Python work measured in every interleaved trial",
    )


def version_info() -> VersionInfo:
    return VersionInfo(
        VERSION, ENGINE, None, "machine speed canary (not a patch version)", "benchsvc/runner/canary.py"
    )
