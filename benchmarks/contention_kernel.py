"""The kernel's side of the contention model (issue 23): two zappers pinned to CPUs 0 and 1, in one memory
cgroup (one split-queue lock) against two sibling memory cgroups (two locks), on a workload that queues every
folio (``b-dontneed-first-page``: the madvise zap queues, the munmap after it unqueues at free) and on one
that queues none (``a-munmap-aligned``); plus the cache-line hand-off and an uncontended lock pair.

Needs root, gcc, Linux >= 6.12 with per-size mTHP and memory cgroups. The probes are C
(``benchmarks/contention_probe.c``, compiled into a temporary directory); the memcgs are created and removed
by :class:`benchsvc.kernel.memcg.MemcgGroups`; each round runs inside :class:`benchsvc.kernel.sysfs.MthpSettings`
(64 KiB ``madvise`` only; the kernel run lock held for the round, so other kernel runs get their turn between
rounds; everything restored on any exit, SIGTERM and Ctrl-C included).

Each round runs three blocks in a rotating order: one zapper alone, two in one memcg, two in two memcgs;
each block ``--iters`` iterations (the first dropped). A zap's time is the zapping thread's CPU time (its own
work plus any spinning on a lock; not the time it was descheduled by other load). The comparison is paired
by round: ratio of the mean zap time in one memcg to that in two memcgs, with a 95% t-interval over rounds.
The model's prediction for the same comparison uses the measured hand-off, the hold time, and the measured
one-zapper time per acquisition; it is scaled by the measured overlap of the two zappers' zap intervals
(on a loaded machine one zapper often runs while the other is descheduled, and then nothing contends).

Then, where tracefs has the ``lock:contention_begin/end`` tracepoints: the queueing workload once more, two
zappers in one memcg and in two, with those events and a kernel stack per event recorded in a private trace
instance (x86-tsc clock for ns resolution). A wait whose stack holds ``deferred_split_folio`` (queueing) or
``__folio_unqueue_deferred_split`` (unqueueing at free) is a wait for the split-queue lock: their number per
acquisition is P(wait) and their durations the waits. With native qspinlock the first waiter spins untraced; a
guest with paravirtual spinlocks (``dmesg | grep "PV spinlocks"``) traces every wait.

    python benchmarks/contention_kernel.py [--rounds 12] [--iters 8] [--size-mb 64] [--no-trace]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchsvc.analysis.contention import HOLD_NS, LockParams, scale_curve
from benchsvc.engine import simulate
from benchsvc.errors import BenchsvcError
from benchsvc.kernel.memcg import MemcgGroups
from benchsvc.kernel.sysfs import DEFAULT_FOLIO_SIZE, MthpSettings, read_stats, unavailable_reason
from benchsvc.kernel.trace import TraceSession
from benchsvc.workload import resolve

PROBE = Path(__file__).with_name("contention_probe.c")
#: the simulated version whose counters describe this machine's kernel (6.15 and later)
KERNEL_VERSION = "up615"
T95 = {
    2: 12.71,
    3: 4.30,
    4: 3.18,
    5: 2.78,
    6: 2.57,
    7: 2.45,
    8: 2.36,
    9: 2.31,
    10: 2.26,
    11: 2.23,
    12: 2.20,
    13: 2.18,
    14: 2.16,
    15: 2.14,
    16: 2.13,
}


@dataclass
class Sample:
    proc: int
    zap_ns: int
    free_ns: int
    zap_wall: tuple[int, int]
    free_wall: tuple[int, int]


def compile_probe(workdir: Path) -> Path:
    if shutil.which("gcc") is None:
        sys.exit("Error: gcc not found — install gcc to build benchmarks/contention_probe.c")
    exe = workdir / "contention_probe"
    subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe), str(PROBE)], check=True)
    return exe


def probe_value(exe: Path, *args: str) -> str:
    return subprocess.run([str(exe), *args], check=True, capture_output=True, text=True).stdout.strip()


def run_zappers(exe: Path, mode: str, procs: list[Path], iters: int, size_mb: int) -> list[list[Sample]]:
    """Per iteration (first dropped), one Sample per zapper."""
    out = subprocess.run(
        [str(exe), "zap", mode, str(len(procs)), str(iters + 1), str(size_mb), *map(str, procs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    by_iter: dict[int, list[Sample]] = {}
    for line in out.splitlines():
        f = line.split()
        if f[0] != "zap":
            continue
        s = Sample(int(f[1]), int(f[3]), int(f[4]), (int(f[5]), int(f[6])), (int(f[7]), int(f[8])))
        by_iter.setdefault(int(f[2]), []).append(s)
    return [by_iter[i] for i in sorted(by_iter) if i > 0]


def overlap(samples: list[Sample], which: str) -> float:
    """Mean fraction of each zapper's interval during which the other one was zapping too."""
    if len(samples) < 2:
        return 0.0
    spans = [getattr(s, which) for s in samples]
    (a0, a1), (b0, b1) = spans[0], spans[1]
    inter = max(0, min(a1, b1) - max(a0, b0))
    return 0.5 * (inter / max(a1 - a0, 1) + inter / max(b1 - b0, 1))


def interval(ratios: list[float]) -> tuple[float, float, float]:
    """Mean ratio and its 95% interval, from the mean and t-interval of the log ratios over rounds."""
    logs = [math.log(r) for r in ratios]
    m = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(m), math.nan, math.nan
    half = T95.get(len(logs), 1.96) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(m), math.exp(m - half), math.exp(m + half)


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12, help="0: the tracepoint phase only")
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--size-mb", type=int, default=64)
    ap.add_argument("--hold-ns", type=float, default=HOLD_NS, help="critical section for the prediction")
    ap.add_argument("--no-trace", action="store_true", help="skip the lock:contention_* tracepoint phase")
    ap.add_argument("--trace-iters", type=int, default=6)
    ap.add_argument("--trace-dump", type=Path, help="also write the raw traces into this directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("Error: needs root (memory cgroups, per-size mTHP) — run as root")
    if (os.cpu_count() or 1) < 2:
        sys.exit("Error: needs two CPUs — run on a machine with at least two")
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"Error: {reason}")
    print(f"load average at start: {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="benchsvc-contention-") as tmp:
        exe = compile_probe(Path(tmp))
        hand = [probe_value(exe, "pingpong", "1000000") for _ in range(5)]
        p10 = [float(h.split()[4]) for h in hand]
        lock = [float(probe_value(exe, "lock", "20000000").split()[1]) for _ in range(5)]
        handoff = statistics.median(p10)
        print(f"cache-line hand-off CPU0<->CPU1 (one way, 10th percentile of 64-round-trip batches): {hand}")
        print(f"  median of runs: {handoff:.1f} ns")
        print(f"uncontended user-space lock pair + list update: {[f'{x:.1f}' for x in lock]} ns")
        try:
            with MemcgGroups(2) as groups:
                print(f"memcgs: {[str(c) for c in groups.children]} ({groups.mode})")
                results = {}
                for mode in ("first-page", "munmap") if args.rounds > 0 else ():
                    results[mode] = measure(exe, mode, groups, args.rounds, args.iters, args.size_mb)
                traced = (
                    None
                    if args.no_trace
                    else trace_waits(exe, groups, args.trace_iters, args.size_mb, args.trace_dump)
                )
        except BenchsvcError as exc:
            sys.exit(f"Error: {exc}")
    print(f"load average at end: {loadavg()}")
    if results:
        report(results, handoff, args.hold_ns, args.size_mb)
    if traced is not None:
        report_traced(traced, handoff, args.hold_ns, args.size_mb, results)


def measure(
    exe: Path, mode: str, groups: MemcgGroups, rounds: int, iters: int, size_mb: int
) -> dict[str, object]:
    conds = {
        "alone": [groups.procs_file(0)],
        "one": [groups.procs_file(0), groups.procs_file(0)],
        "two": [groups.procs_file(0), groups.procs_file(1)],
    }
    names = list(conds)
    per: dict[str, list[dict[str, float]]] = {c: [] for c in names}
    folios = 0
    got = 0
    for r in range(rounds):
        order = names[r % 3 :] + names[: r % 3]
        # the mTHP settings (and with them the kernel run lock) are taken per round, not for the whole
        # measurement: other kernel runs on the machine get their turn between rounds
        with MthpSettings(DEFAULT_FOLIO_SIZE):
            before = read_stats(DEFAULT_FOLIO_SIZE)["anon_fault_alloc"]
            blocks = {c: run_zappers(exe, mode, conds[c], iters, size_mb) for c in order}
            got += read_stats(DEFAULT_FOLIO_SIZE)["anon_fault_alloc"] - before
        for c in order:
            its = blocks[c]
            flat = [s for it in its for s in it]
            per[c].append(
                {
                    "zap": statistics.fmean(s.zap_ns for s in flat),
                    "free": statistics.fmean(s.free_ns for s in flat),
                    "ov_zap": statistics.fmean(overlap(it, "zap_wall") for it in its),
                    "ov_free": statistics.fmean(overlap(it, "free_wall") for it in its),
                }
            )
            folios += (iters + 1) * len(conds[c]) * (size_mb << 20) // DEFAULT_FOLIO_SIZE
    return {"per": per, "folios_expected": folios, "folios_64k": got}


_EVENT = re.compile(
    r"\[(\d+)\]\s+\S+\s+(\d+): (contention_begin|contention_end|<stack trace>)(?:: (0x[0-9a-f]+))?"
)
QUEUE_FN = "deferred_split_folio"
UNQUEUE_FN = "__folio_unqueue_deferred_split"


def tsc_mhz() -> float:
    for line in subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines():
        m = re.search(r"tsc: Detected ([0-9.]+) MHz", line)
        if m:
            return float(m.group(1))
    raise SystemExit("Error: TSC frequency not found in dmesg — run with --no-trace")


def parse_waits(text: str, mhz: float) -> dict[str, list[float]]:
    """Wait durations (ns) per caller ("queue", "unqueue", "other") from contention_begin/end pairs per CPU,
    the caller taken from the stack recorded with the begin event, the duration from that stack's entry (the
    unwinding before it is the tracer's own cost) to the end event."""
    out: dict[str, list[float]] = {"queue": [], "unqueue": [], "other": []}
    open_: dict[int, tuple[int, str]] = {}  # cpu -> (begin cycles, caller)
    stack_of: int | None = None  # the cpu whose begin event's stack follows
    for line in text.splitlines():
        if line.startswith(" => "):
            if stack_of is not None and stack_of in open_:
                fn = line[4:].split("+")[0].strip()
                t, caller = open_[stack_of]
                if caller == "other" and fn == QUEUE_FN:
                    open_[stack_of] = (t, "queue")
                elif caller == "other" and fn == UNQUEUE_FN:
                    open_[stack_of] = (t, "unqueue")
            continue
        m = _EVENT.search(line)
        if m is None:
            continue
        cpu, ts, what = int(m.group(1)), int(m.group(2)), m.group(3)
        if what == "contention_begin":
            open_[cpu] = (ts, "other")
            stack_of = None
        elif what == "<stack trace>":
            # the stack of the begin event just recorded: its unwinding took microseconds, so the wait is timed
            # from this entry (taken after the unwind) to the end event
            if cpu in open_ and stack_of is None and open_[cpu][1] == "other" and open_[cpu][0] <= ts:
                open_[cpu] = (ts, "other")
                stack_of = cpu
            else:
                stack_of = None
        else:
            stack_of = None
            if cpu in open_:
                t0, caller = open_.pop(cpu)
                out[caller].append((ts - t0) * 1000.0 / mhz)
    return out


def trace_waits(
    exe: Path, groups: MemcgGroups, iters: int, size_mb: int, dump: Path | None = None
) -> dict[str, object] | None:
    mhz = tsc_mhz()
    out: dict[str, object] = {"mhz": mhz}
    try:
        with (
            MthpSettings(DEFAULT_FOLIO_SIZE),
            TraceSession(
                events=("lock/contention_begin", "lock/contention_end"),
                stacktrace=True,
                clock="x86-tsc",
                buffer_kb=32768,
            ) as ts,
        ):
            for cond, procs in (
                ("one", [groups.procs_file(0), groups.procs_file(0)]),
                ("two", [groups.procs_file(0), groups.procs_file(1)]),
            ):
                (ts.instance / "trace").write_text("")
                (ts.instance / "tracing_on").write_text("1")
                its = run_zappers(exe, "first-page", procs, iters, size_mb)
                (ts.instance / "tracing_on").write_text("0")
                lost = ts._lost_events()
                text = (ts.instance / "trace").read_text()
                if dump is not None:
                    (dump / f"contention-trace-{cond}.txt").write_text(text)
                waits = parse_waits(text, mhz)
                flat = [s for it in its for s in it]
                out[cond] = {
                    "waits": waits,
                    "lost": lost,
                    # iterations run (the first too: it was traced) x zappers
                    "streams": (iters + 1) * len(procs),
                    "ov_zap": statistics.fmean(overlap(it, "zap_wall") for it in its),
                    "ov_free": statistics.fmean(overlap(it, "free_wall") for it in its),
                    "zap": statistics.fmean(s.zap_ns for s in flat),
                    "free": statistics.fmean(s.free_ns for s in flat),
                }
    except (BenchsvcError, OSError) as exc:
        print(f"tracing skipped: {exc}")
        return None
    return out


def report_traced(
    traced: dict[str, object],
    handoff: float,
    hold: float,
    size_mb: int,
    results: dict[str, dict[str, object]],
) -> None:
    folios = (size_mb << 20) // DEFAULT_FOLIO_SIZE
    print(f"\n== lock:contention_begin/end on b-dontneed-first-page (x86-tsc at {traced['mhz']} MHz)")
    per = results["first-page"]["per"] if results else None
    for cond in ("one", "two"):
        d = traced[cond]
        assert isinstance(d, dict)
        acq = d["streams"] * folios
        print(
            f"  {cond} memcg(s): {d['streams']} zap streams, {acq} queueings and {acq} unqueueings; lost events "
            f"{d['lost']}; overlap zap {d['ov_zap']:.0%}, free {d['ov_free']:.0%}"
        )
        for caller, phase in (("queue", "zap"), ("unqueue", "free")):
            w = d["waits"][caller]
            mean = statistics.fmean(w) if w else 0.0
            p99 = sorted(w)[int(0.99 * (len(w) - 1))] if w else 0.0
            print(
                f"    {caller}: {len(w)} waits, P(wait) {len(w) / acq:.3%}, mean wait when waiting {mean:.0f} ns, "
                f"p99 {p99:.0f} ns, wait per acquisition {sum(w) / acq:.2f} ns"
            )
            ov = d[f"ov_{phase}"]
            if cond == "one" and ov > 0:
                # the other zapper holds the lock S of every Z + S while both zap: P(wait) = overlap * S/(Z+S)
                per_acq = d[phase] / folios
                print(
                    f"      critical section implied by P(wait) and the overlap: "
                    f"{len(w) / acq / ov * per_acq:.0f} ns (zap time per acquisition {per_acq:.0f} ns)"
                )
            if cond == "one":
                alone = (
                    statistics.median(b[phase] for b in per["alone"]) if isinstance(per, dict) else d[phase]
                )
                curve = scale_curve(
                    "b", KERNEL_VERSION, {"ds_lock": folios}, (2,),
                    params=LockParams(hold_ns=hold, handoff_ns=handoff, acquisitions=40000), op_ns=alone,
                )  # fmt: skip
                pt = curve.points[0]
                print(
                    f"      model at N=2: P(wait) {pt.p_wait:.3%} with full overlap, {ov * pt.p_wait:.3%} at the "
                    f"measured overlap; wait per acquisition {pt.mean_wait_ns:.2f} ns "
                    f"({ov * pt.mean_wait_ns:.2f} at the overlap); mean wait when waiting "
                    f"{pt.mean_wait_ns / pt.p_wait if pt.p_wait else 0:.0f} ns"
                )
        print(f"    other spinlocks: {len(d['waits']['other'])} waits")


def report(results: dict[str, dict[str, object]], handoff: float, hold: float, size_mb: int) -> None:
    specs = {"first-page": resolve("b-dontneed-first-page"), "munmap": resolve("a-munmap-aligned")}
    for mode, res in results.items():
        per = res["per"]
        assert isinstance(per, dict)
        print(
            f"\n== {specs[mode].name} ({mode}); 64 KiB folios faulted: {res['folios_64k']} of "
            f"{res['folios_expected']} expected"
        )
        sim = simulate(specs[mode], KERNEL_VERSION).counters
        phases = [("zap", sim.get("ds_lock", 0))]
        if mode == "first-page":
            # the munmap after the zap frees every queued folio: one unqueue (one acquisition) per folio
            phases.append(("free", sim.get("ds_adds", 0)))
        for phase, acq in phases:
            alone = statistics.median(b[phase] for b in per["alone"])
            ratios = [o[phase] / t[phase] for o, t in zip(per["one"], per["two"], strict=True)]
            two_vs_alone = [t[phase] / a[phase] for t, a in zip(per["two"], per["alone"], strict=True)]
            ov = statistics.fmean(b[f"ov_{phase}"] for b in per["one"])
            mean, lo, hi = interval(ratios)
            m2, l2, h2 = interval(two_vs_alone)
            print(
                f"  {phase}: one zapper alone {alone / 1e6:.3f} ms CPU; two in two memcgs / alone = "
                f"{m2:.4f} [{l2:.4f}, {h2:.4f}]"
            )
            print(
                f"  {phase}: one memcg / two memcgs = {mean:.4f} [95% {lo:.4f}, {hi:.4f}] over {len(ratios)} "
                f"rounds; zap intervals overlapped {ov:.0%}"
            )
            if acq:
                counters = {"ds_lock": int(acq)}
                curve = scale_curve(
                    specs[mode].name,
                    KERNEL_VERSION,
                    counters,
                    (2,),
                    params=LockParams(hold_ns=hold, handoff_ns=handoff, acquisitions=40000),
                    op_ns=alone,
                )
                pt = curve.points[0]
                full = 1 + pt.added_ns_per_op / alone
                pred = 1 + ov * (full - 1)
                print(
                    f"  model at N=2 ({acq} acquisitions, S={hold:.0f} ns, c={handoff:.1f} ns, "
                    f"Z={curve.think_ns:.0f} ns): one/two = {full:.4f} with full overlap, {pred:.4f} at the "
                    f"measured overlap; lock busy {pt.lock_utilisation:.1%}, P(wait) {pt.p_wait:.1%}, "
                    f"mean wait {pt.mean_wait_ns:.1f} ns -> "
                    + ("inside" if lo <= pred <= hi else "OUTSIDE")
                    + " the interval"
                )
            else:
                print("  model at N=2: no split-queue acquisitions, one/two = 1 (no contention on this lock)")


if __name__ == "__main__":
    main()
