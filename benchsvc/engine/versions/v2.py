"""v2: the series v2 (19 Jul 2023), review feedback applied.

Patch 3/3 now batches every anon page (``vma_is_anonymous()`` dropped; ``zap_install_uffd_wp_if_needed()`` per
PTE, a no-op in anonymous VMAs), ``folio_nr_pages_cont_mapped()`` returns 1 for small folios, and patch 2/3
updates ``_nr_pages_mapped`` with one ``atomic_sub_return_relaxed()`` per call. The call site decrements
``nr_pages`` before testing ``nr_pages < nr_pages_req``, so the test is always true: every span sets
``force_flush`` and breaks out of ``zap_pte_range()`` (modelled as posted: docs/kernel-history.md#the-v2v4-forced-flush).
Source: <20230719135450.545227-4-ryan.roberts@arm.com> (3/3), ...-3- (2/3) (docs/kernel-history.md#v2).
"""

from __future__ import annotations

from benchsvc.engine.gather import MMU_GATHER_BUNDLE, MmuGather
from benchsvc.engine.model import (
    ENTIRELY_MAPPED,
    NEG_RUNS,
    NR_BITS,
    ONE_RUNS,
    ZERO_RUNS,
    dec_mapcounts,
    pte_run,
)
from benchsvc.engine.versions.base65_p1 import Base65P1


class V2(Base65P1):
    id = "v2"
    parent = "v1"
    title = "v2: span batch for all anon pages, forced flush after every span"
    source = "<20230719135450.545227-1-ryan.roberts@arm.com> (v2 0/3; 3/3 is ...-4-...)"
    date = "2023-07-19"
    #: v4 batches only large folios and pins them with folio_get()/folio_put() around the span
    batch_small_folios = True
    pin_span = False

    def zap_pte_range(self, tlb: MmuGather, addr: int, end: int) -> int:
        """``zap_pte_range()`` from ``addr``, and its re-entries on the same page table up to ``end``.

        Every span ends with ``force_flush``: the kernel flushes (``tlb_flush_mmu_tlbonly()`` under the PTL,
        ``tlb_flush_mmu()`` after the unlock), returns, and ``zap_pmd_range()`` calls it again for the rest
        of the table (``pmd--``). Those re-entries are made here in one loop, each counted as the PTE-lock
        acquisition it is; only Python's per-call overhead is saved."""
        c = self.counters
        pte = self.pte
        page_folio = self.page_folio
        f_nr = self.f_nr
        f_head = self.f_head
        f_emc = self.f_emc
        f_ref = self.f_ref
        mapcount = self.mapcount
        batch_small, pin = self.batch_small_folios, self.pin_span
        nrpm = self.f_nrpm
        tlb_remove_pages = tlb.tlb_remove_pages
        tlb_flush_mmu = tlb.tlb_flush_mmu
        release = tlb.release
        ident = self.ident
        ptl = 1
        cleared = bad = pins = flushes = small = nrpm_atomics = stat_updates = refs_put = 0
        while addr < end:
            ent = pte[addr]
            if ent == 0:
                addr += 1
                continue
            if ent < 0:
                self.zap_nonpresent(addr)
                addr += 1
                continue
            pfn = ent - 1
            f = page_folio[pfn]
            nr_folio = f_nr[f]
            if nr_folio == 1 and not batch_small:
                # v4: small folios keep the per-PTE path of the baseline (no forced flush)
                addr, one, full = self.zap_ptes_one_by_one(tlb, addr, addr + 1)
                if one:
                    cleared += one
                    small += one  # counted by zap_ptes_one_by_one() itself
                    tlb.cleared_ptes = True
                if full:  # the gather is full: flush, return, re-enter
                    tlb_flush_mmu()
                    if addr < end:
                        ptl += 1
                continue
            # folio_nr_pages_cont_mapped(): 1 for a small folio, else the contiguous run up to min(folio end, end)
            n = 1
            if nr_folio > 1:
                limit = addr + f_head[f] + nr_folio - pfn
                if limit > end:
                    limit = end
                n = limit - addr
                if not (pte[limit - 1] == ent + n - 1 and (n < 3 or pte[addr:limit] == ident[ent : ent + n])):
                    n = pte_run(pte, addr, limit, ent)
            # try_zap_anon_pte_range()
            if pin:
                f_ref[f] += 1  # folio_get()
            # page by page: clear the PTE and gather the page (one slot each), stop after the one that fills it
            gathered = tlb.entries
            if tlb.active_nr + n < tlb.active_max:  # they all fit, none fills the batch
                gathered.append(pfn << NR_BITS | n)
                tlb.active_nr += n
                i = n
            else:
                i, _ = tlb_remove_pages(pfn, n)
            pte[addr : addr + i] = ZERO_RUNS[i]
            # page_mapcount(page) < 0 is checked on each page before its rmap removal: _mapcount < -1 -
            # entire_mapcount before, i.e. < -2 - entire_mapcount after the decrement below
            low = -2 - f_emc[f]
            # 2/3 folio_remove_rmap_range() (counted below: one call, i _mapcount atomics), v2..v4: one
            # _nr_pages_mapped atomic per call
            if i == 1 and nr_folio == 1:
                left_one = mapcount[pfn] = mapcount[pfn] - 1
                stat_updates += left_one < 0
                bad += left_one < low
            else:
                # atomic_add_negative(-1, &page->_mapcount) on each page
                seg = mapcount[pfn : pfn + i]
                if seg == ONE_RUNS[i]:  # each page mapped twice (fork): none becomes unmapped
                    mapcount[pfn : pfn + i] = ZERO_RUNS[i]
                    nr_unmapped, lowest = 0, 0
                elif seg == ZERO_RUNS[i]:  # each page mapped once: each becomes unmapped
                    mapcount[pfn : pfn + i] = NEG_RUNS[i]
                    nr_unmapped, lowest = i, -1
                else:
                    nr_unmapped, lowest = dec_mapcounts(mapcount, pfn, i)
                if lowest < low:
                    bad += sum(1 for m in mapcount[pfn : pfn + i] if m < low)
                nr_mapped = nrpm[f] = nrpm[f] - nr_unmapped  # atomic_sub_return_relaxed(nr_unmapped, mapped)
                nrpm_atomics += 1
                if nr_unmapped and nr_mapped < ENTIRELY_MAPPED:
                    stat_updates += 1
                    if nr_mapped:
                        self.deferred_split_folio(f)
            if pin:
                f_ref[f] -= 1  # folio_put(): the gather still holds the pages, never the last ref
                pins += 1
            cleared += i
            addr += i
            # "nr_pages--; ... if (unlikely(nr_pages < nr_pages_req))": always true -> force_flush, break:
            # tlb_flush_mmu_tlbonly() (PTEs were cleared: a flush; freed_tables is never set while PTEs are
            # zapped) and tlb_batch_pages_flush() (pages gathered)
            flushes += 1
            tlb.cleared_ptes = False
            gathered = tlb.entries
            tlb.entries = []
            if len(gathered) == 1:  # release_pages() of this span's pages only: one folio_put per page
                refs_put += i
                if f_ref[f] == i:
                    f_ref[f] = 0
                    self.free_folio(f)
                else:
                    f_ref[f] -= i
            else:
                release(gathered)
            tlb.active_nr, tlb.active_max, tlb.batch_index = 0, MMU_GATHER_BUNDLE, 0
            if addr < end:
                ptl += 1  # re-entry on the same page table
        c.ptl_acquisitions += ptl
        c.nr_pages_mapped_atomics += nrpm_atomics
        c.stat_updates += stat_updates
        c.rmap_calls += flushes  # one folio_remove_rmap_range() per span, and each span ends in a flush
        c.mapcount_atomics += cleared - small
        c.tlb_flushes += flushes
        c.gather_flushes += flushes  # every span gathered pages
        c.bad_pte += bad
        c.refcount_atomics += 2 * pins + refs_put  # the get and the put of each pinned span; the page puts
        if cleared:
            c.ptes_cleared += cleared
            self.rss_anon -= cleared
        return addr
