"""The pyperf benchmark script: ``python -m benchsvc.runner.worker --workload PATH --zap-version V
[--engine sim|kernel] [pyperf options]``.

pyperf runs this module again in each worker process (``program_args=("-m", ...)``), forwarding the custom
options with ``add_cmdline_args``. Each value is the time of the workload's measured zap calls only: every
loop iteration rebuilds the address space untimed, then times the measured steps -- the simulated one
(:func:`benchsvc.engine.time_measured_zaps`) or, with ``--engine kernel``, a real region of this process
(:func:`benchsvc.kernel.worker.zap_once`; the caller holds the per-size mTHP settings for the whole pyperf
run). This is the only module that creates a ``pyperf.Runner``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

#: pyperf benchmark names are "<engine>/<version>/<workload>"
NAME_FORMAT = "{engine}/{version}/{workload}"
#: starts the line that says why a worker failed (the orchestrator stores that line as the result's error)
ERROR_PREFIX = "benchsvc worker error: "


def failure(proc: Any) -> str:
    """Why a worker process (a finished ``subprocess.CompletedProcess``) failed: "worker exited with N: " and
    its last ``ERROR_PREFIX`` line, or else its last three lines of output."""
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    said = [line.removeprefix(ERROR_PREFIX) for line in lines if line.startswith(ERROR_PREFIX)]
    why = said[-1] if said else " | ".join(lines[-3:])
    return f"worker exited with {proc.returncode}: {why}"


def _forward(cmd: list[str], args: argparse.Namespace) -> None:
    cmd.extend(("--workload", args.workload, "--zap-version", args.zap_version, "--engine", args.engine))


def bench_sim(loops: int, spec: Any, version: str) -> float:
    from benchsvc.engine import time_measured_zaps

    total = 0.0
    for _ in range(loops):
        total += time_measured_zaps(spec, version)
    return total


def bench_kernel(loops: int, spec: Any, version: str) -> float:
    from benchsvc.kernel.sysfs import THP_ROOT
    from benchsvc.kernel.worker import LayoutMismatch, die_with_parent, zap_once

    die_with_parent()  # no worker outlives a killed pyperf master (the run's Ctrl-C kills it)
    total_ns = 0
    for _ in range(loops):
        try:
            total_ns += zap_once(spec, str(THP_ROOT))["zap_ns"]
        except LayoutMismatch as exc:
            raise SystemExit(
                f"{ERROR_PREFIX}layout not reproduced by the kernel in a pyperf worker: {exc} expected "
                f"{exc.expected}, got {exc.got} (is the layout's mTHP size set to madvise? benchsvc run sets it)"
            ) from None
        except Exception as exc:
            raise SystemExit(f"{ERROR_PREFIX}kernel run failed: {type(exc).__name__}: {exc}") from None
    return total_ns / 1e9


def main() -> None:
    import pyperf

    from benchsvc import __version__
    from benchsvc.workload import load_workload

    runner = pyperf.Runner(program_args=("-m", "benchsvc.runner.worker"), add_cmdline_args=_forward)
    runner.argparser.add_argument("--workload", required=True, help="workload file")
    runner.argparser.add_argument("--zap-version", required=True, help="version id")
    runner.argparser.add_argument("--engine", default="sim", choices=("sim", "kernel"))
    args = runner.parse_args()
    spec = load_workload(args.workload)
    if args.engine == "kernel":
        from benchsvc.kernel.worker import TEST_HOOK_ENV

        # pyperf gives its worker processes a minimal environment: pass the test hook on
        if os.environ.get(TEST_HOOK_ENV):
            args.inherit_environ = [*(args.inherit_environ or ()), TEST_HOOK_ENV]
        runner.metadata["benchsvc_kernel_release"] = os.uname().release
    # Test hook: BENCHSVC_TEST_FAIL_WORKER="<version>/<workload>" makes this worker fail (tests of failed results)
    if os.environ.get("BENCHSVC_TEST_FAIL_WORKER") == f"{args.zap_version}/{spec.name}":
        raise SystemExit(
            f"{ERROR_PREFIX}injected failure for {args.zap_version}/{spec.name} (BENCHSVC_TEST_FAIL_WORKER)"
        )
    runner.metadata["benchsvc_version"] = __version__
    runner.metadata["benchsvc_engine"] = args.engine
    runner.metadata["benchsvc_zap_version"] = args.zap_version
    runner.metadata["benchsvc_workload"] = spec.name
    runner.metadata["benchsvc_workload_hash"] = spec.content_hash
    name = NAME_FORMAT.format(engine=args.engine, version=args.zap_version, workload=spec.name)
    bench = bench_kernel if args.engine == "kernel" else bench_sim
    runner.bench_time_func(name, bench, spec, args.zap_version)


if __name__ == "__main__":
    main()
