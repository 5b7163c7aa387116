"""How often a PTE-mapped 2 MiB layout is not what it should be by the time it is zapped (issue 22).

Builds a workload's region on the live kernel ``--trials`` times, the way every kernel run and pyperf worker
does (:class:`benchsvc.kernel.worker._Run`: 2 MiB aligned mmap, ``MADV_HUGEPAGE``, every page touched, the
PMDs split, the mremap), checks the layout at once, keeps the region ``--hold`` seconds (a pyperf worker keeps
regions alive across its loops; khugepaged wakes every ``scan_sleep_millisecs``, 10 s by default, so a hold
past that puts a scan inside the window instead of waiting hours for a chance one), then reads the region's
``AnonHugePages`` again: anything but 0 kB is a 2 MiB range khugepaged collapsed into a PMD-mapped THP.

``--old`` builds without the ``MADV_NOHUGEPAGE`` the worker now applies after population (the behaviour
before the fix). Needs root and a kernel with per-size mTHP; takes the kernel run lock for the whole loop
(per-size mTHP set to ``madvise`` for 2 MiB only, restored after).

    python benchmarks/straddle_layout.py [--workload sizes-2m-straddle-munmap] [--trials 5] [--hold 12] [--old]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from benchsvc.errors import BenchsvcError
from benchsvc.kernel import kernel_session
from benchsvc.kernel.sysfs import THP_ROOT
from benchsvc.kernel.worker import LayoutMismatch, _diff, _pmd_mapped_kb, _Run
from benchsvc.workload import resolve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="sizes-2m-straddle-munmap")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument(
        "--hold", type=float, default=12.0, help="seconds each region is kept before the re-check"
    )
    ap.add_argument("--old", action="store_true", help="without MADV_NOHUGEPAGE (the behaviour before)")
    args = ap.parse_args()
    spec = resolve(args.workload)
    at_build = late = 0
    seen: list[int] = []
    try:
        with kernel_session(spec):
            for _ in range(args.trials):
                r = _Run(spec, str(THP_ROOT))
                r.keep_from_khugepaged = not args.old
                before = r.stats()
                try:
                    r.populate()
                    try:
                        r.check_layout(_diff(r.stats(), before))
                    except LayoutMismatch:
                        at_build += 1
                    time.sleep(args.hold)
                    kb = _pmd_mapped_kb(r.base)
                    seen.append(kb)
                    late += kb != 0
                finally:
                    r.cleanup()
    except BenchsvcError as exc:
        raise SystemExit(f"Error: {exc}") from None
    print(
        f"{spec.name} ({'without' if args.old else 'with'} MADV_NOHUGEPAGE): {args.trials} builds, "
        f"{at_build} not reproduced at build, {late} with PMD-mapped memory after {args.hold:g} s "
        f"(AnonHugePages kB seen: {dict(sorted(Counter(seen).items()))})"
    )


if __name__ == "__main__":
    main()
