"""The pyperf benchmark script: ``python -m benchsvc.runner.worker --workload PATH --zap-version V [pyperf options]``.

pyperf runs this module again in each worker process (``program_args=("-m", ...)``), forwarding the custom
options with ``add_cmdline_args``. Each value is the time of the workload's measured zap calls only: every
loop iteration rebuilds the simulated address space untimed, then times the measured steps
(:func:`benchsvc.engine.time_measured_zaps`). This is the only module that creates a ``pyperf.Runner``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

#: pyperf benchmark names are "<engine>/<version>/<workload>"
NAME_FORMAT = "{engine}/{version}/{workload}"


def _forward(cmd: list[str], args: argparse.Namespace) -> None:
    cmd.extend(("--workload", args.workload, "--zap-version", args.zap_version, "--engine", args.engine))


def bench_sim(loops: int, spec: Any, version: str) -> float:
    from benchsvc.engine import time_measured_zaps

    total = 0.0
    for _ in range(loops):
        total += time_measured_zaps(spec, version)
    return total


def main() -> None:
    import pyperf

    from benchsvc import __version__
    from benchsvc.workload import load_workload

    runner = pyperf.Runner(program_args=("-m", "benchsvc.runner.worker"), add_cmdline_args=_forward)
    runner.argparser.add_argument("--workload", required=True, help="workload file")
    runner.argparser.add_argument("--zap-version", required=True, help="version id")
    runner.argparser.add_argument("--engine", default="sim", choices=("sim",))
    args = runner.parse_args()
    spec = load_workload(args.workload)
    # Test hook: BENCHSVC_TEST_FAIL_WORKER="<version>/<workload>" makes this worker fail (tests of failed results)
    if os.environ.get("BENCHSVC_TEST_FAIL_WORKER") == f"{args.zap_version}/{spec.name}":
        raise SystemExit(f"injected failure for {args.zap_version}/{spec.name} (BENCHSVC_TEST_FAIL_WORKER)")
    runner.metadata["benchsvc_version"] = __version__
    runner.metadata["benchsvc_engine"] = args.engine
    runner.metadata["benchsvc_zap_version"] = args.zap_version
    runner.metadata["benchsvc_workload"] = spec.name
    runner.metadata["benchsvc_workload_hash"] = spec.content_hash
    name = NAME_FORMAT.format(engine=args.engine, version=args.zap_version, workload=spec.name)
    runner.bench_time_func(name, bench_sim, spec, args.zap_version)


if __name__ == "__main__":
    main()
