"""How the simulation's cost grows with the region for workloads that revisit emptied page tables (issue 22).

Shapes, each a single zap step over a region of 64 KiB folios:

* ``sweep``: ``madvise_dontneed`` of ``[k, end)`` for every page ``k`` (every 4 KiB to the end of the region);
* ``overlap``: ``madvise_dontneed`` of 2 MiB from every page (each call reaches one new page);
* ``holes``: ``munmap`` of 4 KiB every 8 KiB (a VMA per remaining page).

For each shape and size it runs one version ``--runs`` times with the jumps over empty tables (the engine as
shipped) and, up to ``--plain-max``, with the plain page-by-page walk (``fast_walk = False``, the engine before
issue 22), prints the median seconds and the growth exponent between consecutive sizes (1 = linear).

    python benchmarks/engine_scaling.py [--version up612] [--sizes 16,64,256,1024] [--runs 3] [--plain-max 64]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from benchsvc.engine.versions import get_version
from benchsvc.workload import parse_workload

SHAPES = {
    "sweep": 'call = "madvise_dontneed"\nstart = "0"\nevery = "4KiB"',
    "overlap": 'call = "madvise_dontneed"\nstart = "0"\nlength = "2MiB"\nevery = "4KiB"',
    "holes": 'call = "munmap"\nstart = "0"\nlength = "4KiB"\nevery = "8KiB"',
}


def seconds(shape: str, size_mib: int, version: str, plain: bool) -> float:
    text = f'description = "{shape}"\ntags = []\n\n[layout]\nsize = "{size_mib}MiB"\nfolios = {{ "64KiB" = 1.0 }}\n\n[[zap]]\n{SHAPES[shape]}\n'
    spec = parse_workload(text.encode(), name=shape)
    cls = get_version(version)
    if plain:
        cls = type(f"Plain{cls.__name__}", (cls,), {"fast_walk": False})
    engine = cls(spec)
    t0 = time.perf_counter()
    engine.run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default="up612")
    ap.add_argument("--sizes", default="16,64,256,1024", help="Region sizes in MiB, comma-separated.")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plain-max", type=int, default=64, help="Largest size (MiB) timed with the plain walk.")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    print(f"version {args.version}, median of {args.runs} runs; the machine may be shared: times are noisy")
    for shape in SHAPES:
        for plain in (False, True):
            label = "plain walk" if plain else "as shipped"
            prev: tuple[int, float] | None = None
            for size in sizes:
                if plain and size > args.plain_max:
                    continue
                t = statistics.median(seconds(shape, size, args.version, plain) for _ in range(args.runs))
                growth = ""
                if prev is not None:
                    growth = f"  growth n^{math.log(t / prev[1]) / math.log(size / prev[0]):.2f}"
                print(f"{shape:8s} {label:10s} {size:5d} MiB {t:8.2f} s{growth}", flush=True)
                prev = (size, t)


if __name__ == "__main__":
    main()
