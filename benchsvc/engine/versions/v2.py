"""v2: the series v2 (19 Jul 2023), review feedback applied.

Patch 3/3 now batches every anon page (``vma_is_anonymous()`` dropped; ``zap_install_uffd_wp_if_needed()`` per
PTE, a no-op in anonymous VMAs), ``folio_nr_pages_cont_mapped()`` returns 1 for small folios, and patch 2/3
updates ``_nr_pages_mapped`` with one ``atomic_sub_return_relaxed()`` per call. The call site decrements
``nr_pages`` before testing ``nr_pages < nr_pages_req``, so the test is always true: every span sets
``force_flush`` and breaks out of ``zap_pte_range()`` (modelled as posted: docs/kernel-history.md#the-v2v4-forced-flush).
Source: <20230719135450.545227-4-ryan.roberts@arm.com> (3/3), ...-3- (2/3) (docs/kernel-history.md#v2).
"""

from __future__ import annotations

from benchsvc.engine.gather import MmuGather
from benchsvc.engine.model import ENTIRELY_MAPPED, count_bad_ptes, pte_run
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
        # every span ends the call (forced flush), so the call is short: look things up where they are used
        c = self.counters
        c.ptl_acquisitions += 1
        pte = self.pte
        force_flush = False
        cleared = 0
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
            f = self.page_folio[pfn]
            nr_folio = self.f_nr[f]
            if nr_folio == 1 and not self.batch_small_folios:
                # v4: small folios keep the per-PTE path of the baseline
                addr, one, full = self.zap_ptes_one_by_one(tlb, addr, addr + 1)
                cleared += one
                if full:
                    force_flush = True
                    break
                continue
            # folio_nr_pages_cont_mapped(): 1 for a small folio, else the contiguous run up to min(folio end, end)
            nr_pages_req = 1
            if nr_folio > 1:
                nr_pages_req = pte_run(pte, addr, min(end, addr + self.f_head[f] + nr_folio - pfn), ent)
            # try_zap_anon_pte_range()
            pin = self.pin_span
            if pin:
                self.f_ref[f] += 1  # folio_get()
            # page by page: clear the PTE and gather the page (one slot each), stop after the one that fills it
            i, _ = tlb.tlb_remove_pages(pfn, nr_pages_req)
            pte[addr : addr + i] = [0] * i
            mapcounts = self.mapcount[pfn : pfn + i]
            c.bad_pte += count_bad_ptes(mapcounts, self.f_emc[f])  # checked before the rmap removal
            self.folio_remove_rmap_range(f, pfn, i, mapcounts)
            if pin:
                self.f_ref[f] -= 1  # folio_put(): the gather still holds the pages, never the last ref
                c.refcount_atomics += 2  # the get and the put
            cleared += i
            # "nr_pages--; ... if (unlikely(nr_pages < nr_pages_req))": always true
            addr += i
            force_flush = True
            break
        if cleared:
            tlb.cleared_ptes = True
            c.ptes_cleared += cleared
            self.rss_anon -= cleared
        if force_flush:
            # tlb_flush_mmu_tlbonly() under the PTL, then tlb_flush_mmu() after the unlock: one tlb_flush_mmu()
            tlb.tlb_flush_mmu()
        return addr

    def folio_remove_rmap_range(self, f: int, pfn: int, nr: int, mapcounts: list[int]) -> None:
        """v2..v4 2/3 ``folio_remove_rmap_range()``: one ``_nr_pages_mapped`` atomic per call.

        ``mapcounts``: the pages' ``_mapcount`` values as the caller just read them."""
        c = self.counters
        c.rmap_calls += 1
        c.mapcount_atomics += nr
        if nr == 1 and self.f_nr[f] == 1:
            self.mapcount[pfn] = left_one = mapcounts[0] - 1
            if left_one < 0:
                c.stat_updates += 1
            return
        left = [m - 1 for m in mapcounts]  # atomic_add_negative(-1, &page->_mapcount)
        self.mapcount[pfn : pfn + nr] = left
        nr_unmapped = 0 if min(left) >= 0 else nr if max(left) < 0 else sum(1 for m in left if m < 0)
        nrpm = self.f_nrpm
        nrpm[f] -= nr_unmapped  # atomic_sub_return_relaxed(nr_unmapped, mapped)
        c.nr_pages_mapped_atomics += 1
        nr_mapped = nrpm[f]
        if nr_mapped >= ENTIRELY_MAPPED:
            nr_unmapped = 0
        if nr_unmapped:
            c.stat_updates += 1
            if nr_mapped:
                self.deferred_split_folio(f)
