"""v2: the series v2 (19 Jul 2023), review feedback applied.

Patch 3/3 now batches every anon page (``vma_is_anonymous()`` dropped; ``zap_install_uffd_wp_if_needed()`` per
PTE, a no-op in anonymous VMAs), ``folio_nr_pages_cont_mapped()`` returns 1 for small folios, and patch 2/3
updates ``_nr_pages_mapped`` with one ``atomic_sub_return_relaxed()`` per call. The call site decrements
``nr_pages`` before testing ``nr_pages < nr_pages_req``, so the test is always true: every span sets
``force_flush`` and breaks out of ``zap_pte_range()`` (K§0 item 4, modelled as posted).
Source: <20230719135450.545227-4-ryan.roberts@arm.com> (3/3), ...-3- (2/3) (K§1.3).
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
        c = self.counters
        c.ptl_acquisitions += 1
        pte = self.pte
        mapcount = self.mapcount
        page_folio = self.page_folio
        f_head = self.f_head
        f_nr = self.f_nr
        f_emc = self.f_emc
        tlb_remove_pages = tlb.tlb_remove_pages
        batch_small = self.batch_small_folios
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
            f = page_folio[pfn]
            if f_nr[f] == 1 and not batch_small:
                # v4: small folios keep the per-PTE path of the baseline
                addr, one, full = self.zap_ptes_one_by_one(tlb, addr, addr + 1)
                cleared += one
                if full:
                    force_flush = True
                    break
                continue
            # folio_nr_pages_cont_mapped(): 1 for a small folio, else the contiguous run up to min(folio end, end)
            nr_pages_req = 1
            if f_nr[f] > 1:
                nr_pages_req = pte_run(pte, addr, min(end, addr + f_head[f] + f_nr[f] - pfn), ent)
            # try_zap_anon_pte_range()
            if self.pin_span:
                self.f_ref[f] += 1  # folio_get()
                c.refcount_atomics += 1
            # page by page: clear the PTE and gather the page (one slot each), stop after the one that fills it
            i, _ = tlb_remove_pages(pfn, nr_pages_req)
            pte[addr : addr + i] = [0] * i
            c.bad_pte += count_bad_ptes(mapcount, pfn, i, f_emc[f])
            self.folio_remove_rmap_range(f, pfn, i)
            if self.pin_span:
                self.f_ref[f] -= 1  # folio_put(): the gather still holds the pages, never the last ref
                c.refcount_atomics += 1
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
            tlb.tlb_flush_mmu_tlbonly()
            tlb.tlb_flush_mmu()
        return addr

    def folio_remove_rmap_range(self, f: int, pfn: int, nr: int) -> None:
        """v2..v4 2/3 ``folio_remove_rmap_range()``: one ``_nr_pages_mapped`` atomic per call."""
        c = self.counters
        c.rmap_calls += 1
        mapcount = self.mapcount
        c.mapcount_atomics += nr
        if self.f_nr[f] == 1:
            mapcount[pfn] -= 1
            if mapcount[pfn] < 0:
                c.stat_updates += 1
            return
        left = [m - 1 for m in mapcount[pfn : pfn + nr]]  # atomic_add_negative(-1, &page->_mapcount)
        mapcount[pfn : pfn + nr] = left
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
