"""The machine's run lock trusts only a runtime directory of ours: created 0700, owned by us, not writable by
others; the lock file is opened without following a symlink and without truncating, and anything but a
regular file there (symlink, FIFO, /dev/null, a directory) is one ``Error:`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchsvc.store.lock import LOCK_FILE, RuntimeDirError, lock_machine

ROOT = Path(__file__).resolve().parent.parent


def _run(runtime: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, BENCHSVC_RUNTIME_DIR=str(runtime))
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", "run", "--mode", "debug", "--no-report", "-w", "a-munmap-aligned",
         "-V", "v1", "--db", str(tmp_path / "x.db")],
        capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip


def test_the_runtime_directory_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = tmp_path / "a" / "runtime"
    monkeypatch.setenv("BENCHSVC_RUNTIME_DIR", str(runtime))
    lock = lock_machine("x.db")
    try:
        assert runtime.stat().st_mode & 0o777 == 0o700
        assert json.loads((runtime / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        lock.release()


def test_a_symlink_at_the_lock_path_neither_followed_nor_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious contents")
    (runtime / LOCK_FILE).symlink_to(victim)
    monkeypatch.setenv("BENCHSVC_RUNTIME_DIR", str(runtime))
    with pytest.raises(RuntimeDirError, match=f"the run lock {runtime / LOCK_FILE} is a symlink"):
        lock_machine("x.db")
    assert victim.read_text() == "precious contents"


@pytest.mark.parametrize("kind", ["fifo", "dev-null", "directory", "hard-link"])
def test_anything_but_a_regular_lock_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    path = runtime / LOCK_FILE
    expect = {"fifo": "is a FIFO", "dev-null": "is a device", "directory": "is a directory",
              "hard-link": "has 2 hard links"}[kind]  # fmt: skip
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-null":
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
    elif kind == "directory":
        path.mkdir()
    else:
        other = tmp_path / "other"
        other.write_text("someone's file")
        os.link(other, path)
    monkeypatch.setenv("BENCHSVC_RUNTIME_DIR", str(runtime))
    with pytest.raises(RuntimeDirError, match=expect):
        lock_machine("x.db")
    if kind == "hard-link":
        assert (tmp_path / "other").read_text() == "someone's file"


def test_the_lock_file_is_not_truncated_when_a_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("BENCHSVC_RUNTIME_DIR", str(runtime))
    first = lock_machine("first.db")
    try:
        held = (runtime / LOCK_FILE).read_text()
        from benchsvc.store.lock import RunLocked

        with pytest.raises(RunLocked, match=r"first\.db"):
            lock_machine("second.db")
        assert (runtime / LOCK_FILE).read_text() == held  # the holder's record survives the refused opener
    finally:
        first.release()


@pytest.mark.parametrize(
    "problem", ["group-writable", "other-writable", "symlink", "a-file", "foreign-owner"]
)
def test_an_untrusted_runtime_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    runtime = tmp_path / "runtime"
    if problem in ("group-writable", "other-writable"):
        runtime.mkdir()
        runtime.chmod(0o770 if problem == "group-writable" else 0o1777)
        expect = "can be written by others"
    elif problem == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        runtime.symlink_to(real)
        expect = "is a symlink"
    elif problem == "a-file":
        runtime.write_text("x")
        expect = "is not a directory"
    else:
        if os.geteuid() != 0:
            pytest.skip("making a directory owned by another user needs root")
        runtime.mkdir(mode=0o700)
        os.chown(runtime, 65534, 65534)  # pre-created by another user (nobody)
        expect = "belongs to uid 65534, not to you"
    monkeypatch.setenv("BENCHSVC_RUNTIME_DIR", str(runtime))
    with pytest.raises(RuntimeDirError, match=expect):
        lock_machine("x.db")
    assert not (runtime / LOCK_FILE).exists() or (
        problem == "symlink" and not (tmp_path / "real" / LOCK_FILE).exists()
    )


def test_cli_says_one_line_for_a_bad_lock_path(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    os.mkfifo(runtime / LOCK_FILE)
    proc = _run(runtime, tmp_path)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"Error: the run lock {runtime / LOCK_FILE} is a FIFO — remove it (benchsvc creates it)"]
    assert not (tmp_path / "x.db").exists() or proc.stdout == ""
