"""A PTE-mapped 2 MiB layout stays PTE-mapped while it is alive: khugepaged, which copies PTE-mapped 2 MiB
ranges of ``MADV_HUGEPAGE`` regions into new PMD-mapped THPs on its periodic scans, is kept away by the
``MADV_NOHUGEPAGE`` the worker applies once the region is populated (docs/kernel-oracle.md)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchsvc.kernel import kernel_session, unavailable_reason
from benchsvc.kernel.sysfs import PMD_SIZE, THP_ROOT
from benchsvc.kernel.worker import _diff, _pmd_mapped_kb, _Run
from benchsvc.workload import resolve

REASON = unavailable_reason(PMD_SIZE)
SCAN = THP_ROOT / "khugepaged" / "scan_sleep_millisecs"


def _hold_one(keep_away: bool, hold: float) -> int:
    """Build the straddle layout, check it, keep it ``hold`` seconds; its AnonHugePages (kB) then."""
    spec = resolve("sizes-2m-straddle-munmap")
    with kernel_session(spec):
        r = _Run(spec, str(THP_ROOT))
        r.keep_from_khugepaged = keep_away
        before = r.stats()
        try:
            r.populate()
            r.check_layout(_diff(r.stats(), before))  # PTE-mapped at build: 0 kB
            time.sleep(hold)
            return _pmd_mapped_kb(r.base)
        finally:
            r.cleanup()


@pytest.mark.kernel
@pytest.mark.skipif(REASON is not None, reason=f"live kernel unavailable: {REASON}")
def test_khugepaged_does_not_collapse_a_pte_mapped_layout() -> None:
    try:
        scan_s = int(Path(SCAN).read_text()) / 1000
    except OSError as err:
        pytest.skip(f"cannot read {SCAN}: {err}")
    if scan_s > 30:
        pytest.skip(f"khugepaged scans every {scan_s:g} s: too long to wait for one")
    hold = scan_s + 2  # one scan falls inside the window
    # the way the worker builds it: nothing collapsed
    assert _hold_one(keep_away=True, hold=hold) == 0
    # the check can fail: the build without MADV_NOHUGEPAGE (as before) is collapsed by that scan
    old = _hold_one(keep_away=False, hold=hold)
    if old == 0:
        pytest.skip("khugepaged did not reach the region in the window (busy with other processes)")
    assert old % (PMD_SIZE // 1024) == 0
