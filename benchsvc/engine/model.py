"""The machine the zap path runs on: folios, page tables, VMAs, rss, the deferred split queue.

The kernel behaviour modelled here: docs/kernel-history.md#the-zap-path.

:class:`ZapEngine` holds the state of one simulated address space and implements everything that is common
to the patch versions: building the layout, ``fork``, the zap calls (munmap, MADV_DONTNEED, exit) with their
``mmu_gather``, the page-table walk ``zap_pmd_range()`` with re-entry after early breaks, PMD-mapped THPs,
swap entries, page freeing at gather flush, and the deferred split queue. A patch version is a subclass that
provides ``zap_pte_range()`` and its rmap functions (``benchsvc/engine/versions/``).

Representation (flat lists indexed by integers, for speed):

* page index ``a`` = virtual address / 4 KiB, counted from the 2 MiB boundary at or below the region start;
  page table ``t`` covers page indices ``[512 t, 512 t + 512)``;
* ``pte[a]``: 0 = none, ``pfn + 1`` = present, :data:`SWAP_PTE` = a swap entry;
* ``pmd_folio[t]``: the folio PMD-mapping table ``t``, or -1; ``pt_present[t]``: a page table exists;
  ``pt_empty[t]``: the table is known to hold no PTE at all (none present, no swap entry);
* per folio ``f``: ``f_head``, ``f_nr``, ``f_order``, ``f_ref`` (refcount), ``f_nrpm`` (``_nr_pages_mapped``
  with :data:`ENTIRELY_MAPPED` while PMD-mapped), ``f_emc`` (``_entire_mapcount``, -1 based), ``f_lmc``
  (``_large_mapcount``, -1 based), ``f_queued`` (on the deferred split list), ``f_pmapped`` (6.12
  PG_partially_mapped), ``f_freed``;
* per page ``mapcount[pfn]`` (``_mapcount``, -1 based) and ``page_folio[pfn]``.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from typing import ClassVar

from benchsvc.engine.counters import Counters
from benchsvc.engine.gather import NR_BITS, MmuGather
from benchsvc.workload import PAGE_SIZE, WorkloadSpec, ZapStep

PTRS_PER_PTE = 512
HPAGE_PMD_ORDER = 9
HPAGE_PMD_NR = 512
ENTIRELY_MAPPED = 0x800000  # COMPOUND_MAPPED before 6.8
FOLIO_PAGES_MAPPED = ENTIRELY_MAPPED - 1
SWAP_PTE = -1
#: gather entries are ``pfn << NR_BITS | nr``: 6.9+ page + nr entries, and up to 6.8 runs of pages that
#: took one slot each (a batch never exceeds 512 pages)
NR_MASK = (1 << NR_BITS) - 1


#: a page table's PTEs when none is present or a swap entry
EMPTY_TABLE = [0] * PTRS_PER_PTE

#: runs of equal ``_mapcount`` values, for comparing and assigning a run of pages in one list operation
ZERO_RUNS = [[0] * n for n in range(HPAGE_PMD_NR + 1)]
NEG_RUNS = [[-1] * n for n in range(HPAGE_PMD_NR + 1)]
ONE_RUNS = [[1] * n for n in range(HPAGE_PMD_NR + 1)]


def dec_mapcounts(mapcount: list[int], pfn: int, n: int) -> tuple[int, int]:
    """``atomic_add_negative(-1, &page->_mapcount)`` on pages ``pfn .. pfn + n - 1`` (n ≤ 512), each in turn;
    returns how many became unmapped (now below 0) and the lowest new value.

    Each page's value is checked: runs of pages mapped once (0 -> -1) or twice (1 -> 0) are recognised by one
    comparison with a run of equal values and written with one slice assignment; anything else page by
    page."""
    seg = mapcount[pfn : pfn + n]
    if seg == ZERO_RUNS[n]:
        mapcount[pfn : pfn + n] = NEG_RUNS[n]
        return n, -1
    if seg == ONE_RUNS[n]:
        mapcount[pfn : pfn + n] = ZERO_RUNS[n]
        return 0, 0
    left = [m - 1 for m in seg]
    mapcount[pfn : pfn + n] = left
    return sum(1 for m in left if m < 0), min(left)


def pte_run(pte: list[int], addr: int, limit: int, ent: int) -> int:
    """How many PTEs from ``addr`` (``pte[addr] == ent``; at most ``limit - addr``) map consecutive pfns: the
    per-PTE comparison of ``folio_pte_batch()`` and its ancestors, as one list comparison when all match."""
    n = limit - addr
    if n > 6 and pte[addr:limit] == list(range(ent, ent + n)):
        return n
    k = 1
    while k < n and pte[addr + k] == ent + k:
        k += 1
    return k


def first_pte(pte: list[int], addr: int, end: int) -> int:
    """The first index in ``[addr, end)`` (inside one page table) whose PTE is not none, or ``end``."""
    if pte[addr]:
        return addr
    if pte[addr:end] == ZERO_RUNS[end - addr]:
        return end
    lo, hi = addr, end  # pte[addr:lo] are none, a PTE in [lo, hi) is not
    while hi - lo > 8:
        mid = (lo + hi) // 2
        if pte[lo:mid] == ZERO_RUNS[mid - lo]:
            lo = mid
        else:
            hi = mid
    while not pte[lo]:
        lo += 1
    return lo


def count_bad_ptes(mapcounts: list[int], entire_mapcount: int) -> int:
    """How many pages of one folio, given their ``_mapcount`` values, have ``page_mapcount() < 1`` before their
    rmap removal (``print_bad_pte()`` territory: a PTE mapping a page that is not mapped)."""
    # page_mapcount() = _mapcount + 1 + (entire mapcount + 1) < 1  <=>  _mapcount < -1 - entire mapcount
    low = -1 - entire_mapcount
    if not mapcounts or min(mapcounts) >= low:
        return 0
    return sum(1 for m in mapcounts if m < low)


class ZapEngine:
    """State of one simulated mm plus the version-independent parts of the zap path."""

    #: stable id, parent id, one-line title, and the patch it models (message-id or commit)
    id: ClassVar[str] = ""
    parent: ClassVar[str | None] = None
    title: ClassVar[str] = ""
    source: ClassVar[str] = ""
    #: when the version was posted or released, for ordering the lineage
    date: ClassVar[str] = ""
    #: 6.9+ gather entries are page + nr (``__tlb_remove_folio_pages``); before, one slot per page
    gather_entries_are_batches: ClassVar[bool] = False
    #: 6.12+ with ``shrink_underused=1``: PMD-order THPs are put on the deferred split queue at fault
    queue_pmd_thp_at_fault: ClassVar[bool] = False
    #: jump over page tables and PTEs known to be empty (:class:`_SkipTables`, :func:`first_pte`) instead of
    #: visiting each; False gives the plain walk, which the tests compare it with
    fast_walk: ClassVar[bool] = True

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.counters = Counters()
        self._scratch = Counters()  # counters of unmeasured steps, thrown away
        self._inserted: list[int] = []  # folios added to the split queue during the current zap call
        self.rss_anon = 0
        self.rss_swap = 0
        self.nr_anon_partially_mapped = 0  # the 6.12 gauge, per engine (all sizes)
        self._build()

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        spec = self.spec
        self.base = spec.va_offset_bytes // PAGE_SIZE
        npages = spec.pages
        ntables = -(-(self.base + npages) // PTRS_PER_PTE)
        self.pte: list[int] = [0] * (ntables * PTRS_PER_PTE)
        self.pmd_folio: list[int] = [-1] * ntables
        self.pt_present: list[bool] = [False] * ntables
        self.pt_empty: list[bool] = [False] * ntables
        self.vmas: list[tuple[int, int]] = [(self.base, self.base + npages)]

        sizes: list[int] = []
        for fsize, count in spec.folio_counts():
            sizes.extend([fsize // PAGE_SIZE] * count)
        if spec.arrangement == "shuffled":
            random.Random(spec.seed).shuffle(sizes)
        nfolios = len(sizes)
        swapped: set[int] = set()
        if spec.swap_share > 0:
            order0 = [i for i, n in enumerate(sizes) if n == 1]
            k = round(spec.swap_share * len(order0))
            swapped = set(random.Random(spec.seed + 1).sample(order0, k))

        self.f_head: list[int] = []
        self.f_nr: list[int] = []
        self.f_order: list[int] = []
        total_pfns = sum(sizes) * 2 + PTRS_PER_PTE
        self.page_folio: list[int] = [-1] * total_pfns
        #: ``ident[k] == k``: a slice of it is the run of PTE values that map consecutive pages
        self.ident: list[int] = list(range(total_pfns + 1))
        self.mapcount: list[int] = [-1] * total_pfns
        pte = self.pte
        pfn = 0
        addr = self.base
        for i, n in enumerate(sizes):
            if i in swapped:
                pte[addr] = SWAP_PTE
                self.rss_swap += 1
                addr += 1
                continue
            pfn = -(-pfn // n) * n  # natural alignment of the head pfn
            f = len(self.f_head)
            self.f_head.append(pfn)
            self.f_nr.append(n)
            self.f_order.append(n.bit_length() - 1)
            self.page_folio[pfn : pfn + n] = [f] * n
            if self.spec.pmd_mapped and n == HPAGE_PMD_NR and addr % PTRS_PER_PTE == 0:
                self.pmd_folio[addr // PTRS_PER_PTE] = f
            else:
                pte[addr : addr + n] = range(pfn + 1, pfn + n + 1)
                self.mapcount[pfn : pfn + n] = [0] * n
            pfn += n
            addr += n
        nf = len(self.f_head)
        self.f_ref = [0] * nf
        self.f_nrpm = [0] * nf
        self.f_emc = [-1] * nf
        self.f_lmc = [-1] * nf
        self.f_queued = [False] * nf
        self.f_pmapped = [False] * nf
        self.f_freed = [False] * nf
        for f in range(nf):
            n = self.f_nr[f]
            head = self.f_head[f]
            if self.mapcount[head] == -1:  # PMD-mapped
                self.f_emc[f] = 0
                self.f_nrpm[f] = ENTIRELY_MAPPED
                self.f_ref[f] = 1
                self.f_lmc[f] = 0
            else:
                self.f_ref[f] = n
                self.f_nrpm[f] = n if n > 1 else 0
                self.f_lmc[f] = n - 1
            if self.queue_pmd_thp_at_fault and n == HPAGE_PMD_NR:
                self.f_queued[f] = True
        self.rss_anon = npages - len(swapped)
        for t in range(ntables):
            lo, hi = t * PTRS_PER_PTE, (t + 1) * PTRS_PER_PTE
            if self.pmd_folio[t] < 0 and max(lo, self.base) < min(hi, self.base + npages):
                self.pt_present[t] = True
        self.nr_folios = nfolios - len(swapped)
        self._skip = _SkipTables(self)
        if spec.fork:
            self._fork()

    def _fork(self) -> None:
        """``fork()``: the zap calls then run in the child, whose page tables are a copy of the parent's."""
        mapcount = self.mapcount
        for f in range(len(self.f_head)):
            head, n = self.f_head[f], self.f_nr[f]
            if self.f_emc[f] >= 0:
                self.f_emc[f] += 1
                self.f_ref[f] += 1
                self.f_lmc[f] += 1
            else:
                for pfn in range(head, head + n):
                    mapcount[pfn] += 1
                self.f_ref[f] += n
                self.f_lmc[f] += n

    # ------------------------------------------------------------------ running
    def run(self, timer: Callable[[], float] | None = None) -> float:
        """Run every zap step; return the time spent in measured steps (0.0 without a timer)."""
        elapsed = 0.0
        c = self.counters
        measured = sum(1 for step in self.spec.zaps if step.measure)
        # each measured step starts cold (its first call after the population or the previous step), and
        # the measured calls of a fork workload run in a freshly forked child, whose first writes of its own
        # memory take copy-on-write faults (docs/cost-model.md#counters-beyond-the-zap-loop)
        c.measured_steps += measured
        c.forked_children += 1 if self.spec.fork and measured else 0
        for step in self.spec.zaps:
            if timer is not None and step.measure:
                t0 = timer()
                self.run_step(step)
                elapsed += timer() - t0
            else:
                self.run_step(step)
        self.counters.partially_mapped_after = self.count_partially_mapped()
        return elapsed

    def run_step(self, step: ZapStep) -> None:
        measured = self.counters
        if not step.measure:
            self.counters = self._scratch
        try:
            base = self.base
            for start, end in step.ranges(self.spec.size_bytes):
                lo, hi = base + start // PAGE_SIZE, base + end // PAGE_SIZE
                c = self.counters
                c.syscalls += 1
                # munmap: mmap_write_lock (downgraded, one round trip); MADV_DONTNEED: the VMA read lock when
                # the range stays in one VMA (6.16+), else mmap_read_lock; exit_mmap: read, then write
                c.mmap_lock_acquisitions += 2 if step.call == "exit" else 1
                if step.call == "munmap":
                    self.do_munmap(lo, hi)
                elif step.call == "madvise_dontneed":
                    self.do_madvise_dontneed(lo, hi)
                else:
                    self.exit_mmap()
        finally:
            self.counters = measured

    def count_partially_mapped(self) -> int:
        out = 0
        for f in range(len(self.f_head)):
            n = self.f_nr[f]
            nrpm = self.f_nrpm[f]
            if n > 1 and not self.f_freed[f] and nrpm < ENTIRELY_MAPPED and 0 < nrpm < n:
                out += 1
        return out

    # ------------------------------------------------------------------ zap calls
    def _overlapping(self, lo: int, hi: int) -> tuple[int, int]:
        """``self.vmas[i:j]`` are the VMAs that overlap ``[lo, hi)`` (they are sorted and disjoint, so a
        bisection finds them: a workload that cuts the region into thousands of VMAs stays linear)."""
        vmas = self.vmas
        i = bisect_right(vmas, lo, key=lambda v: v[1])  # the first VMA that ends after lo
        j = i
        while j < len(vmas) and vmas[j][0] < hi:
            j += 1
        return i, j

    def _vma_pieces(self, lo: int, hi: int) -> list[tuple[int, int]]:
        i, j = self._overlapping(lo, hi)
        return [(max(s, lo), min(e, hi)) for s, e in self.vmas[i:j] if max(s, lo) < min(e, hi)]

    def _new_gather(self, fullmm: bool = False) -> MmuGather:
        release = self.release_batched if self.gather_entries_are_batches else self.release_pages
        return MmuGather(self.counters, release, fullmm)

    def do_munmap(self, lo: int, hi: int) -> None:
        """``munmap()``: ``unmap_region()`` = one gather, ``unmap_vmas()``, ``free_pgtables()``, finish."""
        pieces = self._vma_pieces(lo, hi)
        if not pieces:
            return
        tlb = self._new_gather()
        self._inserted = []
        for s, e in pieces:
            self.unmap_page_range(tlb, s, e)
        i, j = self._overlapping(lo, hi)
        remaining: list[tuple[int, int]] = []
        c = self.counters
        c.vmas_removed += j - i  # after the splits, each VMA inside the range is detached and freed
        for s, e in self.vmas[i:j]:
            if s < lo:  # __split_vma() at the start
                remaining.append((s, lo))
                c.vma_splits += 1
            if e > hi:  # __split_vma() at the end
                remaining.append((hi, e))
                c.vma_splits += 1
        self.vmas[i:j] = remaining  # the VMAs around the unmapped range are split, the rest untouched
        # a page table that exists is used by a VMA, so only the tables of the unmapped pieces can be left
        # unused (walking every table of [lo, hi) would make a run of overlapping calls quadratic)
        for s, e in pieces if self.fast_walk else [(lo, hi)]:
            self.free_pgtables(tlb, s, e)
        tlb.tlb_finish_mmu()
        self._end_of_call()

    def do_madvise_dontneed(self, lo: int, hi: int) -> None:
        """``madvise(MADV_DONTNEED)``: ``zap_page_range_single()`` per VMA, each with its own gather."""
        for s, e in self._vma_pieces(lo, hi):
            tlb = self._new_gather()
            self._inserted = []
            self.unmap_page_range(tlb, s, e)
            tlb.tlb_finish_mmu()
            self._end_of_call()

    def exit_mmap(self) -> None:
        """``exit_mmap()``: a fullmm gather over every VMA, then all page tables are freed."""
        tlb = self._new_gather(fullmm=True)
        self._inserted = []
        for s, e in self.vmas:
            self.unmap_page_range(tlb, s, e)
        ends = [(s, e) for s, e in self.vmas]
        self.counters.vmas_removed += len(ends)
        self.vmas = []
        for s, e in ends:
            self.free_pgtables(tlb, s, e)
        tlb.tlb_finish_mmu()
        self._end_of_call()

    def free_pgtables(self, tlb: MmuGather, lo: int, hi: int) -> None:
        """Free the page tables of ``[lo, hi)`` that no remaining VMA uses."""
        for t in range(lo // PTRS_PER_PTE, -(-hi // PTRS_PER_PTE)):
            if not self.pt_present[t]:
                continue
            t_lo, t_hi = t * PTRS_PER_PTE, (t + 1) * PTRS_PER_PTE
            i, j = self._overlapping(t_lo, t_hi)
            if i == j:  # no remaining VMA uses the table
                self.pt_present[t] = False
                self.counters.pt_pages_freed += 1
                self._skip.gone(t)
                tlb.tlb_remove_table()

    def _end_of_call(self) -> None:
        nrpm = self.f_nrpm
        spurious = sum(1 for f in self._inserted if nrpm[f] == 0)
        self.counters.ds_spurious += spurious
        self._inserted = []

    def unmap_page_range(self, tlb: MmuGather, addr: int, end: int) -> None:
        """``unmap_page_range()`` down to ``zap_pmd_range()`` (v6.5 … 6.13 form).

        Re-entry after an early break: docs/kernel-history.md#page-table-boundaries-and-re-entry.
        """
        pmd_folio = self.pmd_folio
        pt_present = self.pt_present
        pte = self.pte
        skip = self._skip
        while addr != end:
            t = addr // PTRS_PER_PTE
            busy = skip.next_busy(t) if self.fast_walk else t
            if busy != t:
                # tables t .. busy - 1 have no PTE (or no page table): zap_pte_range() finds nothing there, and
                # each one that exists costs its PTE lock; jumped over in one step, so that calls that sweep
                # the same emptied tables again and again stay linear
                stop = min(busy * PTRS_PER_PTE, end)
                self.counters.ptl_acquisitions += skip.present(t, (stop - 1) // PTRS_PER_PTE + 1)
                addr = stop
                continue
            next_ = min((t + 1) * PTRS_PER_PTE, end)
            if pmd_folio[t] >= 0:
                if next_ - addr != PTRS_PER_PTE:
                    self.split_huge_pmd(t)
                else:
                    self.zap_huge_pmd(tlb, t)
                    skip.gone(t)  # no page table, no PMD mapping
                    addr = next_
                    continue
            if not pt_present[t]:  # pmd_none()
                addr = next_
                continue
            while addr != next_:  # "if (addr != next) pmd--": re-enter the same page table
                # zap_pte_range() passes over none PTEs and does nothing else for them: start it at the first
                # PTE that is not none (found by slice comparisons), or count the call that finds nothing
                first = first_pte(pte, addr, next_) if self.fast_walk else addr
                if first == next_:
                    self.counters.ptl_acquisitions += 1
                    addr = next_
                    break
                addr = self.zap_pte_range(tlb, first, next_)
            t_lo = t * PTRS_PER_PTE
            if pte[t_lo : t_lo + PTRS_PER_PTE] == EMPTY_TABLE:
                self.pt_empty[t] = True  # PTEs come back only by a PMD split, which this table is past
                skip.gone(t)

    # ------------------------------------------------------------------ version hooks
    def zap_pte_range(self, tlb: MmuGather, addr: int, end: int) -> int:
        """Zap ``[addr, end)`` inside one page table under its PTE lock; return where it stopped."""
        raise NotImplementedError

    def remove_rmap_pmd(self, f: int) -> None:
        """Remove a PMD mapping of folio ``f`` (``page_remove_rmap(compound)`` / ``folio_remove_rmap_pmd``)."""
        raise NotImplementedError

    def deferred_split_folio(self, f: int, partially_mapped: bool = True) -> None:
        """≤6.11 ``deferred_split_folio()``: lockless ``list_empty`` early return, then lock and add."""
        c = self.counters
        c.ds_calls += 1
        if self.f_queued[f]:
            return
        c.ds_lock += 1
        self.f_queued[f] = True
        c.ds_adds += 1
        c.split_deferred += 1
        self._inserted.append(f)

    # ------------------------------------------------------------------ shared kernel paths
    def zap_nonpresent(self, a: int) -> None:
        """A swap entry: ``free_swap_and_cache()``, ``rss[MM_SWAPENTS]--``, ``pte_clear_not_present_full()``."""
        self.pte[a] = 0
        self.counters.nonpresent_cleared += 1
        self.rss_swap -= 1

    def zap_huge_pmd(self, tlb: MmuGather, t: int) -> None:
        """``zap_huge_pmd()``: clear the PMD, remove the compound rmap, gather the head page once."""
        f = self.pmd_folio[t]
        self.pmd_folio[t] = -1
        self.counters.pmd_zaps += 1  # under pmd_lock(); frees the deposited page table (zap_deposited_table)
        tlb.cleared_ptes = True  # tlb_remove_pmd_tlb_entry(): cleared_pmds
        self.rss_anon -= HPAGE_PMD_NR
        self.remove_rmap_pmd(f)
        head = self.f_head[f]
        full = (
            tlb.tlb_remove_folio_pages(head << NR_BITS | 1, 1)
            if self.gather_entries_are_batches
            else tlb.tlb_remove_page(head << NR_BITS | 1)
        )
        if full:  # tlb_remove_page_size(): flush at once
            tlb.tlb_flush_mmu()

    def split_huge_pmd(self, t: int) -> None:
        """``__split_huge_pmd()`` of a PMD-mapped THP: map every page by PTE, then drop the PMD mapping."""
        c = self.counters
        f = self.pmd_folio[t]
        self.pmd_folio[t] = -1
        c.pmd_splits += 1  # pmd_lock(), pmdp_invalidate(), the deposited table withdrawn and filled
        head = self.f_head[f]
        a0 = t * PTRS_PER_PTE
        self.pte[a0 : a0 + HPAGE_PMD_NR] = range(head + 1, head + HPAGE_PMD_NR + 1)
        mapcount = self.mapcount
        for pfn in range(head, head + HPAGE_PMD_NR):
            mapcount[pfn] += 1
        c.mapcount_atomics += HPAGE_PMD_NR
        self.f_nrpm[f] += HPAGE_PMD_NR
        # up to 6.7 page_add_anon_rmap() per page, 6.8-6.11 folio_add_anon_rmap_ptes() with a per-page
        # atomic_inc_return_relaxed(); from 6.12 one atomic_add_return_relaxed() for the batch
        c.nr_pages_mapped_atomics += 1 if self.nr_pages_mapped_batched else HPAGE_PMD_NR
        self.f_ref[f] += HPAGE_PMD_NR - 1  # page_ref_add(): one reference per PTE mapping
        c.refcount_atomics += 1
        if self.f_lmc[f] >= 0 and self.has_large_mapcount:
            self.f_lmc[f] += HPAGE_PMD_NR
            if self.large_mapcount_locked:
                c.large_mapcount_locks += 1
            else:
                c.large_mapcount_atomics += 1
        c.tlb_flushes += 1  # pmdp_invalidate() flushes the PMD's TLB range itself
        self.pt_present[t] = True
        self._skip.appear(t)
        self.remove_rmap_pmd(f)

    has_large_mapcount: ClassVar[bool] = False
    #: 6.12+: adding PTE mappings updates ``_nr_pages_mapped`` once per batch, not once per page
    nr_pages_mapped_batched: ClassVar[bool] = False
    #: 6.15+ with CONFIG_MM_ID: ``_large_mapcount`` is read and ``atomic_set()`` under
    #: ``folio_lock_large_mapcount()`` (counted in ``large_mapcount_locks``, not ``large_mapcount_atomics``)
    large_mapcount_locked: ClassVar[bool] = False
    #: 6.15+: the bad-PTE check after the rmap removal reads ``folio_mapcount()``, not ``page_mapcount()``
    bad_pte_reads_folio_mapcount: ClassVar[bool] = False

    def release_pages(self, entries: list[int]) -> None:
        """≤6.8 ``release_pages()``: one ``folio_put_testzero()`` per gathered page.

        An entry is a run of ``nr`` pages of one folio (``pfn << NR_BITS | nr``): their puts are made in one
        step, and the folio can reach zero only on the last of them (each mapped page holds a reference)."""
        page_folio = self.page_folio
        ref = self.f_ref
        freed = []
        pages = 0
        kept = 0
        for e in entries:
            nr = e & NR_MASK
            f = page_folio[e >> NR_BITS]
            left = ref[f] - nr
            ref[f] = left
            pages += nr
            if left == 0:
                freed.append(f)
                kept += nr - 1
            else:
                kept += nr
        self.counters.refcount_atomics += pages
        self.counters.puts_without_free += kept
        for f in freed:
            self.free_folio(f)

    def release_batched(self, entries: list[int]) -> None:
        """6.9+ ``folios_put_refs()``: one ``folio_ref_sub_and_test(folio, nr)`` per gathered entry.

        An entry is encoded as ``pfn << NR_BITS | nr``."""
        page_folio = self.page_folio
        ref = self.f_ref
        freed = []
        for e in entries:
            f = page_folio[e >> NR_BITS]
            left = ref[f] = ref[f] - (e & NR_MASK)
            if not left:
                freed.append(f)
        self.counters.refcount_atomics += len(entries)
        self.counters.puts_without_free += len(entries) - len(freed)
        for f in freed:
            self.free_folio(f)

    def free_folio(self, f: int) -> None:
        """The folio's last reference is gone: free it; a queued large folio leaves the split queue."""
        c = self.counters
        c.folios_freed += 1
        c.pages_freed += self.f_nr[f]
        self.f_freed[f] = True
        if self.f_queued[f]:  # lockless list_empty() pre-check, then split_queue_lock
            c.ds_lock += 1
            self.f_queued[f] = False
            if self.f_pmapped[f]:
                self.f_pmapped[f] = False
                self.nr_anon_partially_mapped -= 1


class _SkipTables:
    """Which page tables a zap can jump over, found in near-constant time.

    A table is *skippable* when it is not PMD-mapped and either has no page table or is known to hold no PTE
    (``pt_empty``). Once skippable a table stays so: PTEs are written only when the layout is built and when
    a PMD-mapped THP is split, and a split table is not skippable until it is found empty again. So the
    next table that is not skippable is found with a union-find over table indices (path halving), and how
    many skipped tables still exist (each costs ``zap_pte_range()`` its PTE lock) with a Fenwick tree over
    ``pt_present``."""

    __slots__ = ("engine", "nxt", "tree")

    def __init__(self, engine: ZapEngine) -> None:
        self.engine = engine
        n = len(engine.pt_present)
        self.nxt = list(range(n + 1))  # nxt[t] == t: t is not known skippable (n: past the last table)
        self.tree = [0] * (n + 1)
        for t, present in enumerate(engine.pt_present):
            if present:
                self._add(t, 1)
            elif engine.pmd_folio[t] < 0:
                self.nxt[t] = t + 1

    def _add(self, t: int, delta: int) -> None:
        tree = self.tree
        i = t + 1
        while i < len(tree):
            tree[i] += delta
            i += i & -i

    def _prefix(self, t: int) -> int:
        """How many of tables ``0 .. t - 1`` exist."""
        tree = self.tree
        out = 0
        while t > 0:
            out += tree[t]
            t -= t & -t
        return out

    def present(self, lo: int, hi: int) -> int:
        """How many of tables ``lo .. hi - 1`` exist."""
        return self._prefix(hi) - self._prefix(lo)

    def next_busy(self, t: int) -> int:
        """The first table at or after ``t`` that is not skippable (the table count if none)."""
        nxt = self.nxt
        while nxt[t] != t:
            nxt[t] = nxt[nxt[t]]
            t = nxt[t]
        return t

    def gone(self, t: int) -> None:
        """Table ``t`` lost its page table, or all its PTEs (and has no PMD mapping): it is skippable."""
        engine = self.engine
        if engine.pmd_folio[t] >= 0:
            return
        if not engine.pt_present[t] and self.present(t, t + 1):
            self._add(t, -1)
        if not engine.pt_present[t] or engine.pt_empty[t]:
            self.nxt[t] = t + 1

    def appear(self, t: int) -> None:
        """A page table was created for table ``t`` (a PMD split: it holds PTEs)."""
        self.engine.pt_empty[t] = False
        if not self.present(t, t + 1):
            self._add(t, 1)
