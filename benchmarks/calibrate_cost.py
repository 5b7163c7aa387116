"""Compare the default cost model with David Hildenbrand's per-folio-size munmap table
(docs/kernel-history.md#the-munmap-table-the-cost-model-is-calibrated-on).

munmap of 1 GiB PTE-mapped by folios of one size: the modelled cost of ``base65-p1`` (per-page rmap with
spurious queueing, the "mm-unstable" column) and of ``up69`` ("New", v6.9) and ``up612``, against the
measured seconds on a Xeon Silver 4210R. Prints the change of each against base65-p1. The model is calibrated
on the direction and rough size of the change, not on absolute times.

    python benchmarks/calibrate_cost.py [--cost FILE]
"""

from __future__ import annotations

import argparse

from benchsvc.engine import CostModel, simulate
from benchsvc.workload import parse_workload

# folio size (KiB) -> (mm-unstable seconds, New seconds), from the v3 cover letter of
# "mm/memory: optimize unmap/zap with PTE-mapped THP" <20240214204435.167852-1-david@redhat.com>
DAVID = {
    4: (0.058110, 0.057715),
    16: (0.044198, 0.035469),
    32: (0.034216, 0.023522),
    64: (0.029207, 0.018434),
    128: (0.026579, 0.014026),
    256: (0.025130, 0.011756),
    512: (0.024292, 0.010703),
    1024: (0.023812, 0.010294),
    2048: (0.023785, 0.009910),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cost", help="TOML file of cost coefficients")
    args = ap.parse_args()
    model = CostModel.from_file(args.cost) if args.cost else CostModel.default()
    print(f"cost model: {model.source}")
    header = (
        f"{'folio':>7} | {'David base':>10} {'David new':>10} {'change':>7} | "
        f"{'model p1 ms':>11} {'up69 ms':>8} {'change':>7} {'up612 ms':>9} {'change':>7}"
    )
    print(header)
    print("-" * len(header))
    for kib, (old_s, new_s) in DAVID.items():
        toml = f'description = "calibration"\n[layout]\nsize = "1GiB"\nfolios = {{ "{kib}KiB" = 1.0 }}\n'
        toml += '[[zap]]\ncall = "munmap"\n'
        spec = parse_workload(toml.encode(), name=f"calib-{kib}k")
        p1, u69, u612 = (simulate(spec, v, model).modeled_ns / 1e6 for v in ("base65-p1", "up69", "up612"))
        print(
            f"{kib:>5}Ki | {old_s * 1e3:>10.2f} {new_s * 1e3:>10.2f} {new_s / old_s - 1:>+7.0%} | "
            f"{p1:>11.2f} {u69:>8.2f} {u69 / p1 - 1:>+7.0%} {u612:>9.2f} {u612 / p1 - 1:>+7.0%}"
        )


if __name__ == "__main__":
    main()
