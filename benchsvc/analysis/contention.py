"""Split-queue lock contention across CPUs: a closed queueing model of N CPUs running one zap stream each
(docs/contention.md).

Each CPU runs the workload's measured zaps over and over. The engine counts how often one run of them takes
the deferred split queue's lock (``ds_lock``: queueing in ``deferred_split_folio()`` and unqueueing at
free); the cost model prices the whole run (``modeled_ns``). Between two acquisitions a CPU works
``think_ns = modeled_ns / ds_lock - hold_ns`` on its own; then it holds the lock for ``hold_ns`` (the critical
section). An acquisition that finds the lock held waits in FIFO order (x86 qspinlock is an MCS queue) and,
when its turn comes, pays a cache-line hand-off ``handoff_ns`` before its critical section starts.

CPUs in one memory cgroup share one lock; ``memcgs = K`` spreads the CPUs round-robin over K independent
locks. The shrinker (``deferred_split_scan()``), when on, is one more client of each lock that holds it
while walking a batch of entries.

Two solvers:

- :func:`simulate_lock`: a seeded discrete-event simulation of one lock (deterministic holds by default,
  think times gamma-distributed with a given coefficient of variation). Gives utilisation, P(wait), mean and
  p99 wait.
- :func:`mva`: exact mean-value analysis of the same closed system for exponential holds and no hand-off
  (the check on the simulation: with exponential holds the two agree).

:func:`scale_curve` turns a workload's counters into throughput X(N), speed-up and N*. Pure numpy; no
database, no charts.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from benchsvc.engine.cost import CostModel
from benchsvc.errors import ScaleInputError
from benchsvc.workload import WorkloadSpec

#: the CPU counts ``benchsvc scale`` and the nightly run use unless told otherwise
DEFAULT_CPUS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_CPUS = 256

#: critical section of one acquisition, ns, when CPUs share the queue: the lock's hold time, with the cache lines
#: the holder touches (the queue's head, length and tail entry, the memcg's shrinker bit) last written by another
#: CPU. Implied on the development machine's kernel by the traced P(wait) of two zappers in one memcg
#: (docs/contention.md#inputs-measured-here: 119, 251 and 373 ns in three runs; the median)
HOLD_NS = 250.0
#: cache-line hand-off between two CPUs, ns: half the round trip of a line ping-ponged by two pinned threads,
#: measured on the development machine (docs/contention.md#inputs-measured-here)
HANDOFF_NS = 27.0
#: SHRINK_BATCH: entries ``deferred_split_scan()`` walks under the lock per call
SHRINKER_BATCH = 128
#: per entry walked under the lock (folio_try_get, list move): assumption (docs/contention.md)
SHRINKER_ENTRY_NS = 30.0
#: one shrinker call per lock every this many ns while it runs: assumption (docs/contention.md)
SHRINKER_PERIOD_NS = 1_000_000.0

HoldDist = Literal["deterministic", "exponential"]


@dataclass(frozen=True)
class LockParams:
    """What the model assumes about the lock and the CPUs around it."""

    hold_ns: float = HOLD_NS
    handoff_ns: float = HANDOFF_NS
    #: coefficient of variation of the work between two acquisitions (1: exponential, 0: fixed)
    think_cv: float = 1.0
    hold_dist: HoldDist = "deterministic"
    shrinker: bool = False
    shrinker_batch: int = SHRINKER_BATCH
    shrinker_entry_ns: float = SHRINKER_ENTRY_NS
    shrinker_period_ns: float = SHRINKER_PERIOD_NS
    #: acquisitions simulated per lock (after a tenth as warm-up)
    acquisitions: int = 6000
    seed: int = 0

    @property
    def shrinker_hold_ns(self) -> float:
        return self.shrinker_batch * self.shrinker_entry_ns


@dataclass(frozen=True)
class LockStats:
    """One lock's steady state, from the simulation (waits include the hand-off)."""

    clients: int
    utilisation: float
    p_wait: float
    mean_wait_ns: float
    p99_wait_ns: float
    #: completed zapper acquisitions per ns (the shrinker's not counted)
    acquisition_rate: float


@dataclass(frozen=True)
class ScalePoint:
    cpus: int
    memcgs: int
    lock_utilisation: float
    p_wait: float
    mean_wait_ns: float
    p99_wait_ns: float
    added_ns_per_op: float
    throughput_ops_s: float
    speedup: float

    def as_json(self) -> dict[str, float | int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ScaleCurve:
    """X(N) of one workload in one version."""

    workload: str
    version: str
    acquisitions_per_op: int
    op_ns: float
    think_ns: float
    hold_ns: float
    handoff_ns: float
    #: where the no-contention line N/(Z+S) meets the lock's ceiling 1/(S+c); None: the stream never locks
    n_star: float | None
    #: the smallest CPU count (of those asked) at which one lock is busy at least half the time
    saturates_at: int | None
    points: tuple[ScalePoint, ...] = field(default_factory=tuple)

    def as_json(self) -> dict[str, object]:
        return {
            "workload": self.workload,
            "version": self.version,
            "acquisitions_per_op": self.acquisitions_per_op,
            "op_ns": self.op_ns,
            "think_ns": self.think_ns,
            "hold_ns": self.hold_ns,
            "handoff_ns": self.handoff_ns,
            "n_star": self.n_star,
            "saturated_from_cpus": self.saturates_at,
            "points": [p.as_json() for p in self.points],
        }


#: utilisation from which a lock counts as saturated in :attr:`ScaleCurve.saturates_at`
SATURATION_UTILISATION = 0.5


# ---------------------------------------------------------------------------------------------- exact MVA
@dataclass(frozen=True)
class MvaResult:
    throughput: np.ndarray  # acquisitions per ns, index n-1 for n clients
    response_ns: np.ndarray  # wait + hold per acquisition
    queue: np.ndarray  # mean clients at the lock
    utilisation: np.ndarray


def mva(n_max: int, think_ns: float, hold_ns: float) -> MvaResult:
    """Exact mean-value analysis of ``n`` = 1..n_max clients alternating ``think_ns`` (any distribution) and
    an exponential hold of mean ``hold_ns`` at one FIFO lock: R(n) = S(1 + Q(n-1)), X(n) = n/(Z + R(n)),
    Q(n) = X(n) R(n)."""
    x = np.empty(n_max)
    r = np.empty(n_max)
    q = np.empty(n_max)
    prev_q = 0.0
    for n in range(1, n_max + 1):
        rn = hold_ns * (1.0 + prev_q)
        xn = n / (think_ns + rn)
        prev_q = xn * rn
        x[n - 1], r[n - 1], q[n - 1] = xn, rn, prev_q
    return MvaResult(x, r, q, x * hold_ns)


def throughput_bound(n: int, think_ns: float, hold_ns: float) -> float:
    """Asymptotic bound of the closed model: X(n) <= min(n/(Z+S), 1/S), in acquisitions per ns."""
    return min(n / (think_ns + hold_ns), 1.0 / hold_ns)


# ---------------------------------------------------------------------------------------------- simulation
def _seed(*parts: object) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


@functools.lru_cache(maxsize=4096)
def simulate_lock(clients: int, think_ns: float, params: LockParams) -> LockStats:
    """Discrete-event simulation of ``clients`` CPUs sharing one FIFO spinlock (plus the shrinker when
    ``params.shrinker``). Deterministic for given inputs: the random stream is seeded from them (so the
    result is cached: versions whose streams are alike share it)."""
    if clients < 1:
        raise ValueError("clients must be >= 1")
    rng = np.random.default_rng(_seed(clients, think_ns, params))
    total = max(params.acquisitions, 50)
    warm = total // 10
    hold = params.hold_ns
    c = params.handoff_ns
    cv = params.think_cv
    # think times for every acquisition, drawn up front (mean think_ns, coefficient of variation cv)
    if think_ns <= 0:
        thinks = np.zeros(total + clients)
    elif cv <= 0:
        thinks = np.full(total + clients, think_ns)
    else:
        shape = 1.0 / (cv * cv)
        thinks = rng.gamma(shape, think_ns / shape, total + clients)
    if params.hold_dist == "exponential":
        holds = rng.exponential(hold, total + clients)
    else:
        holds = np.full(total + clients, hold)
    think_list = thinks.tolist()
    hold_list = holds.tolist()
    cycle = think_ns + hold
    starts = (rng.random(clients) * cycle).tolist()
    # heap of (arrival time, client); client == clients is the shrinker
    heap: list[tuple[float, int]] = [(t, i) for i, t in enumerate(starts)]
    shrink_hold = params.shrinker_hold_ns
    shrink_period = params.shrinker_period_ns
    if params.shrinker:
        heap.append((float(rng.random() * shrink_period), clients))
    heapq.heapify(heap)
    free_at = 0.0
    waits: list[float] = []
    waited = 0
    busy = 0.0
    t_begin = 0.0
    k = 0  # zapper acquisitions served
    draw = 0
    while k < total:
        arrival, who = heap[0]
        if arrival < free_at:
            start = free_at + c
            wait = start - arrival
        else:
            start = arrival
            wait = 0.0
        if who == clients:
            end = start + shrink_hold
            heapq.heapreplace(heap, (end + shrink_period, who))
            if k >= warm:
                busy += end - start + (c if wait else 0.0)
            free_at = end
            continue
        end = start + hold_list[draw]
        if k == warm:
            t_begin = arrival
        if k >= warm:
            waits.append(wait)
            if wait > 0.0:
                waited += 1
            busy += end - start + (c if wait else 0.0)
        free_at = end
        heapq.heapreplace(heap, (end + think_list[draw], who))
        draw += 1
        k += 1
    elapsed = max(free_at - t_begin, 1e-9)
    measured = len(waits)
    w = np.asarray(waits)
    return LockStats(
        clients=clients,
        utilisation=min(busy / elapsed, 1.0),
        p_wait=waited / measured,
        mean_wait_ns=float(w.mean()),
        p99_wait_ns=float(np.quantile(w, 0.99)),
        acquisition_rate=measured / elapsed,
    )


# ---------------------------------------------------------------------------------------------- per workload
def _groups(cpus: int, memcgs: int) -> list[int]:
    """CPUs per lock when ``cpus`` CPUs are spread round-robin over ``memcgs`` memory cgroups."""
    k = max(1, min(memcgs, cpus))
    base, extra = divmod(cpus, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def check_cpus(cpus: Sequence[int]) -> None:
    if not cpus:
        raise ScaleInputError(f"no CPU counts given — give a comma list such as 1,2,4 (1..{MAX_CPUS})")
    for n in cpus:
        if not 1 <= n <= MAX_CPUS:
            raise ScaleInputError(
                f"CPU count {n} is outside 1..{MAX_CPUS} — give counts from 1 to {MAX_CPUS}"
            )


def parse_cpus(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> (1, 2, 4): sorted, duplicates dropped, each within 1..MAX_CPUS."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.add(int(part))
        except ValueError:
            raise ScaleInputError(
                f"--cpus: {part!r} is not a CPU count — give a comma list such as 1,2,4,8"
            ) from None
    cpus = tuple(sorted(out))
    check_cpus(cpus)
    return cpus


def scale_curve(
    workload: str,
    version: str,
    counters: Mapping[str, int],
    cpus: Sequence[int] = DEFAULT_CPUS,
    *,
    memcgs: int = 1,
    params: LockParams | None = None,
    cost: CostModel | None = None,
    op_ns: float | None = None,
) -> ScaleCurve:
    """X(N) for one workload's zap stream in one version. ``op_ns``: one run of the measured zaps on one CPU
    alone (default: the cost model's price of ``counters``)."""
    check_cpus(cpus)
    if memcgs < 1:
        raise ScaleInputError(f"--memcgs {memcgs}: need at least one memory cgroup — give 1 or more")
    p = params or LockParams()
    model = cost or CostModel.default()
    t_op = float(op_ns) if op_ns is not None else model.modeled_ns(counters)
    acq = int(counters.get("ds_lock", 0))
    if t_op <= 0:
        raise ScaleInputError(
            f"{workload} in {version}: the zap stream costs nothing (modeled_ns = 0) — "
            "check the cost model's coefficients"
        )
    if acq == 0:
        think = t_op
        points = tuple(ScalePoint(n, memcgs, 0.0, 0.0, 0.0, 0.0, 0.0, n * 1e9 / t_op, float(n)) for n in cpus)
        return ScaleCurve(workload, version, 0, t_op, think, p.hold_ns, p.handoff_ns, None, None, points)
    # the lock's hold time is part of the priced cost; the rest of one acquisition's share is thinking
    hold = min(p.hold_ns, t_op / acq)
    think = t_op / acq - hold
    p = replace(p, hold_ns=hold)
    x1 = 1e9 / t_op
    cache: dict[int, LockStats] = {}
    points_list: list[ScalePoint] = []
    for n in cpus:
        groups = _groups(n, memcgs)
        x = 0.0
        wait_sum = 0.0
        p99 = 0.0
        waited = 0.0
        util = 0.0
        for g in groups:
            st = cache.get(g)
            if st is None:
                st = cache[g] = simulate_lock(g, think, p)
            # per CPU: one acquisition every think + hold + mean wait
            per_cpu = 1.0 / (think + hold + st.mean_wait_ns)
            x += g * per_cpu
            wait_sum += g * per_cpu * st.mean_wait_ns
            waited += g * per_cpu * st.p_wait
            p99 = max(p99, st.p99_wait_ns)
            util = max(util, st.utilisation)
        mean_wait = wait_sum / x
        ops = x * 1e9 / acq
        points_list.append(
            ScalePoint(
                cpus=n,
                memcgs=memcgs,
                lock_utilisation=util,
                p_wait=waited / x,
                mean_wait_ns=mean_wait,
                p99_wait_ns=p99,
                added_ns_per_op=acq * mean_wait,
                throughput_ops_s=ops,
                speedup=ops / x1,
            )
        )
    n_star = (think + hold) / (hold + p.handoff_ns)
    saturates = next((pt.cpus for pt in points_list if pt.lock_utilisation >= SATURATION_UTILISATION), None)
    return ScaleCurve(
        workload, version, acq, t_op, think, hold, p.handoff_ns, n_star, saturates, tuple(points_list)
    )


def saturation_cpus(curve: ScaleCurve) -> int | None:
    """The CPU count at which the lock would be saturated (ceil of N*), whatever CPU counts were asked."""
    return None if curve.n_star is None else max(1, math.ceil(curve.n_star))


def sweep(
    spec: WorkloadSpec,
    versions: Sequence[str],
    cpus: Sequence[int] = DEFAULT_CPUS,
    *,
    memcgs: int = 1,
    params: LockParams | None = None,
    cost: CostModel | None = None,
) -> list[ScaleCurve]:
    """:func:`scale_curve` of ``spec`` in each version (one simulation per version for the counters)."""
    from benchsvc.engine import simulate

    check_cpus(cpus)
    model = cost or CostModel.default()
    out = []
    for vid in versions:
        sim = simulate(spec, vid, model)
        out.append(scale_curve(spec.name, vid, sim.counters, cpus, memcgs=memcgs, params=params, cost=model))
    return out


#: the CPU counts whose modelled wait the nightly run stores beside the counters
STORED_CPUS: tuple[int, ...] = DEFAULT_CPUS
#: prefix of the derived metrics stored with the counters
STORED_PREFIX = "scale_"


def stored_name(cpus: int) -> str:
    return f"{STORED_PREFIX}added_ns_n{cpus}"


STORED_NAMES: tuple[str, ...] = tuple(stored_name(n) for n in STORED_CPUS)


def stored_metrics(counters: Mapping[str, int], modeled_ns: float) -> dict[str, int]:
    """The model's outputs the nightly run stores beside a simulated result's counters, as integers like the
    counters (and, like them, more is worse): ``scale_added_ns_n<N>``, the ns one zap stream waits for the
    split-queue lock when N CPUs in one memcg run it, for N in :data:`STORED_CPUS`. Throughput follows
    exactly: X(N) = N / (modeled_ns + added_ns(N)) (:func:`throughput_from_stored`)."""
    if modeled_ns <= 0:
        return {}
    curve = scale_curve("", "", counters, STORED_CPUS, op_ns=modeled_ns)
    return {stored_name(p.cpus): round(p.added_ns_per_op) for p in curve.points}


def throughput_from_stored(cpus: int, modeled_ns: float, added_ns: float) -> float:
    """Zap streams per second on ``cpus`` CPUs from the stored wait (:func:`stored_metrics`)."""
    return cpus * 1e9 / (modeled_ns + added_ns)


def n_star_of(
    counters: Mapping[str, int], modeled_ns: float, params: LockParams | None = None
) -> float | None:
    """N* = (Z + S) / (S + c) of a stream, or None when it never takes the lock."""
    acq = int(counters.get("ds_lock", 0))
    if acq == 0 or modeled_ns <= 0:
        return None
    p = params or LockParams()
    hold = min(p.hold_ns, modeled_ns / acq)
    return (modeled_ns / acq) / (hold + p.handoff_ns)
