"""Creeps and a wandering machine, measured the way users meet them: a synthetic nightly history stored,
exported (``benchsvc export``), imported into an empty database (``benchsvc import``), analysed night by night
(``benchsvc analyze``) and read back (``benchsvc regressions -f json``).

    python benchmarks/signal_shapes.py creep    [--nights 90] [--seed 0] [--dir DIR] [--reuse]
    python benchmarks/signal_shapes.py wander   [--nights 60] [--seed 0] [--dir DIR] [--reuse]
    python benchmarks/signal_shapes.py steps    [--nights 60] [--seed 0] [--dir DIR] [--reuse]

The machine: 12 workloads x 10 simulated versions (120 series, each workload one measurement block), a night's
value = level x machine factor x block factor x (1 + per-series noise), with a run of 6 processes x 3 values
around it (0.5% within a night).

* ``creep``: per-series noise 1.5%, machine factor sd 3%, block factor sd 1%; 12 of the 120 series (one
  version in each of 12 workloads) creep +0.3% a night from night ``nights - 70`` on (+21% by the end). Prints
  every record on the creeping series (how many per series, of which kind) and the false alerts per
  series-night on the other 108.
* ``wander``: the machine's factor wanders with sd 5% from night to night (lognormal), and three nights are 25%
  slow; per-series noise 1%. Prints the share of nights that are machine events and whether each 25% night
  (and every night >= 20% off the machine's median) is one.
* ``steps``: the ``creep`` machine without creeps; 12 series step +5% and 12 others +10% over the last 3 nights.
  Prints the steps found and the false alerts per series-night on the others.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from benchsvc.records import EnvironmentInfo, MachineInfo, ProcessValues, ResultRecord, RunRecord, WorkloadRef
from benchsvc.store.db import open_store, write_session
from benchsvc.store.ingest import ingest, registry_versions

BENCHSVC = (sys.executable, "-m", "benchsvc")
MACHINE = MachineInfo("synthetic-01", "synthetic cpu", 2, "6.18", "x86_64")
ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0"})
WORKLOADS = 12
PROCESSES, VALUES, WITHIN = 6, 3, 0.005


def cli(*args: str, db: Path) -> str:
    cp = subprocess.run([*BENCHSVC, *args, "--db", str(db)], capture_output=True, text=True, timeout=3600)
    if cp.returncode != 0:
        raise SystemExit(f"benchsvc {' '.join(args)} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp.stdout


def refs() -> list[WorkloadRef]:
    return [
        WorkloadRef(f"syn-{w:02d}", hashlib.sha256(f"syn {w}".encode()).hexdigest(), f"syn {w}", "synthetic")
        for w in range(WORKLOADS)
    ]


def store_history(db: Path, levels: np.ndarray, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Store ``levels`` (series x nights, series = workload-major x version) as nightly default-mode runs with
    one engine code; returns the (workload, version) of every series row."""
    versions = [v.id for v in registry_versions() if str(v.engine) == "sim"][:10]
    ws = refs()
    keys = [(w.name, v) for w in ws for v in versions]
    engine = open_store(str(db))
    for night in range(levels.shape[1]):
        run = RunRecord(
            uuid=str(uuid.UUID(int=night + 1)),
            started_at=dt.datetime(2026, 1, 1, 2) + dt.timedelta(days=night),
            machine=MACHINE,
            environment=ENV,
            benchsvc_version="0.1.0",
            git_commit="c" * 40,
            mode="default",
            trigger="nightly",
            status="complete",
        )
        results = []
        for row, (wname, version) in enumerate(keys):
            ref = ws[[w.name for w in ws].index(wname)]
            level = float(levels[row, night])
            procs = tuple(
                ProcessValues(tuple(float(level * (1 + e)) for e in rng.normal(0, WITHIN, VALUES)))
                for _ in range(PROCESSES)
            )
            results.append(
                ResultRecord(
                    "sim",
                    version,
                    ref,
                    counters={"ds_lock": 0},
                    modeled_ns=1.0,
                    processes=procs,
                    pyperf_metadata={"benchsvc_engine_hash": "e" * 64},
                )
            )
        with write_session(engine) as s:
            ingest(s, run, results, registry_versions() if night == 0 else ())
    engine.dispose()
    return keys


def machine(
    nights: int, rng: np.random.Generator, noise: float, machine_sd: float, block_sd: float
) -> np.ndarray:
    series = WORKLOADS * 10
    m = np.exp(rng.normal(0, machine_sd, nights))
    block = np.repeat(np.exp(rng.normal(0, block_sd, (WORKLOADS, nights))), 10, axis=0)
    base = 1e-3 * np.exp(rng.normal(0, 0.3, series))[:, None]
    return base * m[None, :] * block * (1 + rng.normal(0, noise, (series, nights)))


def _copy_db(src: Path, dst: Path) -> None:
    """A SQLite file with its write-ahead log, if any."""
    for suffix in ("", "-wal"):
        Path(f"{dst}{suffix}").unlink(missing_ok=True)
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")


def round_trip(
    directory: Path, levels: np.ndarray, rng: np.random.Generator, reuse: bool = False
) -> tuple[list, list, list]:
    """Store, export, import into an empty database, analyse; the nightly records, machine events and keys.
    With ``reuse``, the imported database of an earlier call with the same arguments is analysed again."""
    directory.mkdir(parents=True, exist_ok=True)
    source, target, exported = directory / "source.db", directory / "imported.db", directory / "history.jsonl"
    pristine = directory / "imported-unanalysed.db"
    for p in (target,) if reuse and pristine.exists() else (source, target, pristine):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{p}{suffix}").unlink(missing_ok=True)
    versions = [v.id for v in registry_versions() if str(v.engine) == "sim"][:10]
    keys = [(w.name, v) for w in refs() for v in versions]
    if reuse and pristine.exists():
        _copy_db(pristine, target)
    else:
        keys = store_history(source, levels, rng)
        cli("export", "-o", str(exported), db=source)
        cli("import", str(exported), db=target)
        _copy_db(target, pristine)
    t0 = time.monotonic()
    cli("analyze", db=target)
    print(f"{levels.shape[1]} nights x {levels.shape[0]} series analysed in {time.monotonic() - t0:.0f} s")
    found = json.loads(cli("regressions", "--axis", "nightly", "--all", "-f", "json", db=target))
    events = json.loads(cli("regressions", "--axis", "machine", "--all", "-f", "json", db=target))
    return [r for r in found if r["metric"] == "time"], events, keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=("creep", "wander", "steps"))
    ap.add_argument("--nights", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path("signal-shapes"))
    ap.add_argument(
        "--reuse", action="store_true", help="analyse DIR's imported history again (same arguments)"
    )
    args = ap.parse_args()
    rng = np.random.default_rng([args.seed, ("creep", "wander", "steps").index(args.shape)])
    series = WORKLOADS * 10
    if args.shape == "wander":
        nights = args.nights or 60
        levels = machine(nights, rng, 0.01, 0.05, 0.0)
        slow = rng.choice(np.arange(15, nights), size=3, replace=False)
        levels[:, slow] *= 1.25
        records, events, _ = round_trip(args.dir, levels, rng, args.reuse)
        factor = np.median(levels / np.median(levels, axis=1, keepdims=True), axis=0)
        off = set(np.flatnonzero(np.abs(factor / np.median(factor) - 1) >= 0.2).tolist())
        event_nights = {int(e["run_id"]) - 1 for e in events}
        scored = nights - 11  # the first nights have no baseline
        print(
            f"machine events: {len(events)} of {scored} nights with a baseline ({len(events) / scored:.1%})"
        )
        print(
            f"25% slow nights {sorted(slow.tolist())}: events on {sorted(event_nights & set(slow.tolist()))}"
        )
        print(
            f"nights >= 20% off the machine's median: {sorted(off)}; events on {sorted(event_nights & off)}"
        )
        for e in events:
            print(f"  run {e['run_id']}: {e.get('size', e.get('effect'))}")
        return
    nights = args.nights or (90 if args.shape == "creep" else 60)
    levels = machine(nights, rng, 0.015, 0.03, 0.01)
    changed: dict[int, str] = {}
    if args.shape == "creep":
        start = nights - 70
        ramp = np.exp(np.log1p(0.003) * np.maximum(0, np.arange(nights) - start + 1))
        for w in range(WORKLOADS):
            row = w * 10 + int(rng.integers(10))
            levels[row] *= ramp
            changed[row] = "creep"
    else:
        rows = rng.choice(series, size=24, replace=False)
        for i, row in enumerate(rows):
            levels[row, -3:] *= 1.05 if i < 12 else 1.10
            changed[int(row)] = "+5%" if i < 12 else "+10%"
    records, _, keys = round_trip(args.dir, levels, rng, args.reuse)
    by_key = {k: i for i, k in enumerate(keys)}
    per: dict[int, list[dict]] = {}
    false_alerts = []
    for r in records:
        row = by_key.get((r["workload"], r["version"]))
        if row in changed:
            per.setdefault(row, []).append(r)
        else:
            false_alerts.append(r)
    others = series - len(changed)
    scored = others * (nights - 10)
    if args.shape == "creep":
        counts = [len(per.get(row, [])) for row in changed]
        kinds = [
            sorted(
                "creep" if str(r.get("size", "")).startswith("creep") else "step" for r in per.get(row, [])
            )
            for row in changed
        ]
        print(f"creeping series reported: {sum(c > 0 for c in counts)} of {len(changed)}")
        print(f"records per creeping series: {counts} (total {sum(counts)}, max {max(counts)})")
        print(f"record kinds: {kinds}")
    else:
        for label in ("+5%", "+10%"):
            rows = [row for row, lab in changed.items() if lab == label]
            hit = sum(
                any(
                    int(r["run_id"]) - 1 >= nights - 3 and r["direction"] == "worse" for r in per.get(row, [])
                )
                for row in rows
            )
            print(f"{label} steps over the last 3 nights found: {hit} of {len(rows)}")
    print(
        f"false alerts on the other {others} series: {len(false_alerts)} in {scored} series-nights "
        f"({len(false_alerts) / scored:.3%})"
    )
    for r in false_alerts:
        print(f"  false alert: {r['version']}/{r['workload']} run {r['run_id']} {r.get('size')}")


if __name__ == "__main__":
    main()
