"""The up-front tracepoint check mounts tracefs the way a trace session does: under the kernel run lock,
journalled, with SIGTERM turned into "unmount first"; a SIGKILLed check is undone by the next one; an unmount
that is busy (another process has a tracefs file open) is done lazily and said in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchsvc.kernel import trace as tr
from benchsvc.kernel.sysfs import _default_state_dir

ROOT = Path(__file__).resolve().parent.parent
HOLD = "BENCHSVC_TEST_TRACE_CHECK_HOLD"


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "needs root on Linux (tracefs)"
    try:
        if "tracefs" not in Path("/proc/filesystems").read_text():
            return "the kernel has no tracefs"
    except OSError as err:
        return str(err)
    if not tr.TRACEFS.is_dir():
        return f"{tr.TRACEFS} does not exist"
    return None


REASON = _skip_reason()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(REASON is not None, reason=str(REASON))]

CHILD = (
    "import json; from benchsvc.kernel.trace import trace_unavailable_reason\n"
    "notes = []\n"
    "print(json.dumps([trace_unavailable_reason(notes=notes), notes]))\n"
)


def _journal() -> Path:
    return _default_state_dir() / "trace-journal.json"


def _default_signals() -> None:
    """The child's SIGHUP and SIGINT at their defaults: a test run under nohup or as a background job inherits
    them ignored, and a process that ignores a signal rightly keeps ignoring it."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], hold: Path) -> subprocess.Popen[str]:
    """Start a check and wait until it holds with tracefs mounted (skip when tracefs was already mounted
    by someone else: then the check mounts nothing)."""
    if tr.is_tracefs_mounted():
        pytest.skip("tracefs is mounted (by the administrator or another run): the check would not mount it")
    proc = subprocess.Popen(
        args, env=dict(os.environ, **{HOLD: str(hold)}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=ROOT, preexec_fn=_default_signals,
    )  # fmt: skip
    deadline = time.monotonic() + 600  # it may wait for another kernel run's lock
    while not hold.exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the check never reached its hold point"
        time.sleep(0.02)
    if not hold.exists():
        out, err = proc.communicate()
        pytest.skip(f"the check did not mount tracefs (mounted meanwhile?): {out} {err}")
    assert tr.is_tracefs_mounted(), "holding, yet tracefs is not mounted"
    assert json.loads(_journal().read_text())["mounted"] is True  # journalled before mounting
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_during_crosschecks_tracepoint_check_leaves_nothing_mounted(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    proc = _start([sys.executable, "-m", "benchsvc", "crosscheck", "a-munmap-aligned"], hold)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode != 0
    assert "Traceback" not in err, err
    assert not tr.is_tracefs_mounted()
    assert not _journal().exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_other_signals_in_the_check_leave_nothing_mounted(tmp_path: Path, sig: int) -> None:
    hold = tmp_path / "hold"
    proc = _start([sys.executable, "-c", CHILD], hold)
    try:
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        _stop(proc)
    assert proc.returncode != 0
    assert not tr.is_tracefs_mounted()
    assert not _journal().exists()


def test_a_sigkilled_check_is_undone_by_the_next(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    proc = _start([sys.executable, "-c", CHILD], hold)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert tr.is_tracefs_mounted() and _journal().exists()  # what SIGKILL leaves
    reason = tr.trace_unavailable_reason()  # the next check, in this process
    assert reason is None or "tracepoint" in reason
    assert not tr.is_tracefs_mounted(), "the next check took the killed check's mount for the administrator's"
    assert not _journal().exists()


def test_a_busy_unmount_is_done_lazily_and_said_in_one_line(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    proc = _start([sys.executable, "-c", CHILD], hold)
    fd = os.open(tr.TRACEFS / "trace", os.O_RDONLY)  # another process reading tracefs at that moment
    try:
        hold.unlink()  # let the check go on to its unmount
        out, err = proc.communicate(timeout=60)
    finally:
        _stop(proc)
        os.close(fd)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    reason, notes = json.loads(out)
    assert reason is None or "tracepoint" in reason
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0].startswith(f"tracefs at {tr.TRACEFS} was busy") and "detached it lazily" in notes[0]
    assert not tr.is_tracefs_mounted()
    assert not _journal().exists()
