"""v1: "Optimize large folio interaction with deferred split" v1, patches 1-3 (17 Jul 2023) — the seed.

Patch 3/3 "mm: Batch-zap large anonymous folio PTE mappings" adds ``zap_anon_pte_range()``: for an anon page
in an anonymous VMA, ``calc_anon_folio_map_pgcount()`` finds the run of present PTEs mapping consecutive pfns
of the same folio (capped at the folio's end and at the end of the ``zap_pte_range()`` call); each page is
cleared and gathered one by one (one slot each), and ``folio_remove_rmap_range()`` (patch 2/3) removes the
rmap of the pages actually zapped in one call. If the gather fills in the middle of a folio, the span ends
there: the folio is left partially mapped and queued (docs/kernel-history.md#gather-full-mid-folio-m).
Source: <20230717143110.260162-4-ryan.roberts@arm.com> and ...-3- (docs/kernel-history.md#v1).
"""

from __future__ import annotations

from benchsvc.engine.gather import MmuGather
from benchsvc.engine.model import ENTIRELY_MAPPED, NR_BITS, ZERO_RUNS, dec_mapcounts, pte_run
from benchsvc.engine.versions.base65_p1 import Base65P1


class V1(Base65P1):
    id = "v1"
    parent = "base65-p1"
    title = "the seed: patches 1-3 v1, span batch in anon VMAs"
    source = "<20230717143110.260162-1-ryan.roberts@arm.com> (v1 0/3; 3/3 is ...-4-...)"
    date = "2023-07-17"
    vma_is_anonymous = True  # every workload VMA is anonymous

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
        nrpm = self.f_nrpm
        deferred_split_folio = self.deferred_split_folio
        ident = self.ident
        force_flush = False
        cleared = spans = bad = nrpm_atomics = stat_updates = 0
        while addr < end:
            ent = pte[addr]
            if ent <= 0:
                if ent < 0:
                    self.zap_nonpresent(addr)
                addr += 1
                continue
            pfn = ent - 1
            f = page_folio[pfn]
            nf = f_nr[f]
            # calc_anon_folio_map_pgcount(): present PTEs with consecutive pfns, up to min(folio end, end)
            limit = addr + f_head[f] + nf - pfn
            if limit > end:
                limit = end
            n = limit - addr
            if not (pte[limit - 1] == ent + n - 1 and (n < 3 or pte[addr:limit] == ident[ent : ent + n])):
                n = pte_run(pte, addr, limit, ent)
            # zap_anon_pte_range(): page by page, clear the PTE and gather the page (one slot each); stop
            # after the page that fills the gather
            if tlb.active_nr + n < tlb.active_max:  # they all fit, none fills the batch
                tlb.entries.append(pfn << NR_BITS | n)
                tlb.active_nr += n
                i, full = n, False
            else:
                i, full = tlb_remove_pages(pfn, n)
            pte[addr : addr + i] = ZERO_RUNS[i]
            # 2/3 folio_remove_rmap_range(f, page, i) (counted below: one call, i _mapcount atomics); the
            # caller's page_mapcount() < 0 check on each page before it (_mapcount < -1 - entire_mapcount) is
            # made on the new values (< -2 - entire_mapcount)
            spans += 1
            low = -2 - f_emc[f]
            if nf == 1:
                left = mapcount[pfn] = mapcount[pfn] - 1
                nr_unmapped = 1 if left < 0 else 0
                nr_mapped = 0
                bad += left < low
            else:
                nr_mapped = nr_unmapped = 0
                unmapped, lowest = dec_mapcounts(mapcount, pfn, i)  # atomic_add_negative(-1, &_mapcount)
                if lowest < low:
                    bad += sum(1 for m in mapcount[pfn : pfn + i] if m < low)
                if unmapped:
                    # each page no longer mapped: atomic_dec_return_relaxed(&folio->_nr_pages_mapped), in
                    # turn; those that leave it below ENTIRELY_MAPPED count as unmapped
                    before = nrpm[f]
                    nr_mapped = nrpm[f] = before - unmapped
                    nrpm_atomics += unmapped
                    nr_unmapped = unmapped - min(unmapped, max(0, before - ENTIRELY_MAPPED))
            if nr_unmapped:
                stat_updates += 1
                if nf > 1 and nr_mapped:
                    deferred_split_folio(f)
            cleared += i
            addr += i
            if full:
                force_flush = True
                break
        c.rmap_calls += spans
        c.mapcount_atomics += cleared
        c.nr_pages_mapped_atomics += nrpm_atomics
        c.stat_updates += stat_updates
        c.bad_pte += bad
        if cleared:
            tlb.cleared_ptes = True
            c.ptes_cleared += cleared
            self.rss_anon -= cleared
        if force_flush:
            # tlb_flush_mmu_tlbonly() under the PTL, then tlb_flush_mmu() after the unlock: one tlb_flush_mmu()
            tlb.tlb_flush_mmu()
        return addr
