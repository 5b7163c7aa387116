"""A slot-accurate ``struct mmu_gather`` (include/asm-generic/tlb.h, mm/mmu_gather.c).

The rules and capacities: docs/kernel-history.md#the-mmu_gather-and-its-capacity.

The gather starts with the on-stack bundle of ``MMU_GATHER_BUNDLE`` = 8 slots (``tlb->local``) and grows by
batch pages of ``MAX_GATHER_BATCH`` = 510 slots, at most ``MAX_GATHER_BATCH_COUNT`` = 19 of them. Batch pages
stay linked after a flush and are reused; ``batch_count`` is never reset inside one gather.

Freed page tables go to a separate table batch of ``MAX_TABLE_BATCH`` = 509 (``MMU_GATHER_RCU_TABLE_FREE``, set
on x86 and arm64); a full one forces a TLB flush before it is handed to RCU.

Up to 6.8 every page takes one slot and "full" is reported when the slot just filled was the last one
(``batch->nr == batch->max`` and no next batch). From 6.9 a page+nr entry takes two slots and "full" is
reported once fewer than two slots remain (``batch->nr >= batch->max - 1``), so an entry is never split.
"""

from __future__ import annotations

from collections.abc import Callable

#: an entry is ``pfn << NR_BITS | nr`` (a page, or a run of pages of one folio; a batch never exceeds 512)
NR_BITS = 10
MMU_GATHER_BUNDLE = 8
MAX_GATHER_BATCH = 510  # (PAGE_SIZE - sizeof(struct mmu_gather_batch)) / sizeof(void *)
MAX_GATHER_BATCH_COUNT = 19  # 10000UL / MAX_GATHER_BATCH
#: page tables per ``struct mmu_table_batch`` (MMU_GATHER_RCU_TABLE_FREE): (PAGE_SIZE - 24) / sizeof(void *)
MAX_TABLE_BATCH = 509


class MmuGather:
    """One gather: ``tlb_gather_mmu()`` ... ``tlb_finish_mmu()`` of a single zap call."""

    __slots__ = (
        "active_max",
        "active_nr",
        "batch_count",
        "batch_index",
        "cleared_ptes",
        "counters",
        "entries",
        "freed_tables",
        "fullmm",
        "release",
        "tables",
    )

    def __init__(self, counters: object, release: Callable[[list[int]], None], fullmm: bool = False) -> None:
        self.counters = counters
        #: frees what was gathered: ``release(entries)``; the entry encoding belongs to the version
        self.release = release
        self.fullmm = fullmm
        self.entries: list[int] = []
        self.active_nr = 0
        self.active_max = MMU_GATHER_BUNDLE
        self.batch_index = 0  # 0 = tlb->local, k = k-th batch page
        self.batch_count = 0
        self.cleared_ptes = False
        self.freed_tables = False
        self.tables = 0  # page tables in the current table batch

    def tlb_next_batch(self) -> bool:
        if self.batch_index < self.batch_count:  # reuse a batch page kept from an earlier flush
            self.batch_index += 1
        elif self.batch_count == MAX_GATHER_BATCH_COUNT:
            return False
        else:  # __get_free_page(GFP_NOWAIT): assumed to succeed
            self.batch_count += 1
            self.batch_index += 1
        self.active_nr = 0
        self.active_max = MAX_GATHER_BATCH
        return True

    def tlb_remove_page(self, entry: int) -> bool:
        """≤6.8 ``__tlb_remove_page_size()``: one slot per page; True means "full, flush now".

        ``entry`` is ``pfn << NR_BITS | 1`` (the version's encoding, see :meth:`tlb_remove_pages`)."""
        self.entries.append(entry)
        self.active_nr += 1
        if self.active_nr == self.active_max:
            return not self.tlb_next_batch()
        return False

    def tlb_remove_pages(self, pfn: int, nr: int) -> tuple[int, bool]:
        """:meth:`tlb_remove_page` for ``pfn``, ``pfn + 1``, ... in turn, up to ``nr`` pages (one slot each):
        returns how many were gathered and whether the last of them filled the gather (stop there).

        The pages that land in one batch are kept as one ``pfn << NR_BITS | n`` entry: still one slot per page
        (``active_nr``), and ``release_pages()`` puts each page in turn."""
        room = self.active_max - self.active_nr
        if nr < room:  # all of them fit in the current batch, none fills it
            self.entries.append(pfn << NR_BITS | nr)
            self.active_nr += nr
            return nr, False
        done = 0
        while True:  # the pages up to the one that takes the batch's last slot, then the next batch
            self.entries.append((pfn + done) << NR_BITS | room)
            done += room
            self.active_nr = self.active_max
            if not self.tlb_next_batch():
                return done, True
            room = self.active_max
            if nr - done < room:
                if done < nr:
                    self.entries.append((pfn + done) << NR_BITS | (nr - done))
                    self.active_nr = nr - done
                return nr, False

    def tlb_remove_folio_pages(self, entry: int, nr_pages: int) -> bool:
        """6.9+ ``__tlb_remove_folio_pages_size()``: one slot for a single page, two for page + nr."""
        self.entries.append(entry)
        self.active_nr += 1 if nr_pages == 1 else 2
        if self.active_nr >= self.active_max - 1:
            return not self.tlb_next_batch()
        return False

    def tlb_remove_table(self) -> None:
        """``pte_free_tlb()`` -> ``tlb_remove_table()``: the freed page table joins the table batch; when the
        batch is full, ``tlb_table_flush()`` invalidates first (``tlb_flush_mmu_tlbonly()``) and hands the
        batch to RCU. The remaining batch is flushed by ``tlb_finish_mmu()`` after its own TLB flush."""
        self.freed_tables = True
        self.tables += 1
        if self.tables == MAX_TABLE_BATCH:
            self.tlb_flush_mmu_tlbonly()
            self.tables = 0

    def tlb_flush_mmu_tlbonly(self) -> None:
        if self.cleared_ptes or self.freed_tables:
            self.counters.tlb_flushes += 1  # type: ignore[attr-defined]
            self.cleared_ptes = False
            self.freed_tables = False

    def tlb_batch_pages_flush(self) -> None:
        if self.entries:
            self.counters.gather_flushes += 1  # type: ignore[attr-defined]
            entries = self.entries
            self.entries = []
            self.release(entries)
        self.active_nr = 0
        self.active_max = MMU_GATHER_BUNDLE
        self.batch_index = 0

    def tlb_flush_mmu(self) -> None:
        self.tlb_flush_mmu_tlbonly()
        self.tlb_batch_pages_flush()

    def tlb_finish_mmu(self) -> None:
        self.tlb_flush_mmu()
