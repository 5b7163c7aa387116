"""The live Linux kernel as an oracle (docs/kernel-oracle.md): run a workload for real and read the per-size mTHP stats.

Library API (no printing; every user-facing problem is a :class:`benchsvc.errors.BenchsvcError`)::

    from benchsvc.kernel import run_on_kernel, unavailable_reason

    if unavailable_reason() is None:
        result = run_on_kernel(spec)          # KernelResult: counters, raw stat deltas, zap_ns
"""

from benchsvc.kernel.oracle import (
    ENGINE,
    STORED_COUNTERS,
    KernelResult,
    KernelRunError,
    NotExpressibleOnKernel,
    check_expressible,
    expressible_reason,
    kernel_session,
    run_in_session,
    run_on_kernel,
    time_zap_on_kernel,
    version_id,
)
from benchsvc.kernel.sysfs import (
    MthpSettings,
    SysfsRestoreError,
    check_available,
    enabled_snapshot,
    run_lock,
    settled_snapshot,
    unavailable_reason,
)

__all__ = [
    "ENGINE",
    "STORED_COUNTERS",
    "KernelResult",
    "KernelRunError",
    "MthpSettings",
    "NotExpressibleOnKernel",
    "SysfsRestoreError",
    "check_available",
    "check_expressible",
    "enabled_snapshot",
    "expressible_reason",
    "kernel_session",
    "run_in_session",
    "run_lock",
    "run_on_kernel",
    "settled_snapshot",
    "time_zap_on_kernel",
    "unavailable_reason",
    "version_id",
]
