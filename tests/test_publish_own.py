"""Publishing the report replaces only what benchsvc wrote: ``--out`` absent, empty or a marked site; never a
directory with other things in it, a FIFO or socket, a mount inside; writes through descriptors, so swapping
the temporary directory for a symlink writes nothing elsewhere; leftovers of a killed publish are removed."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchsvc.report.publish import MARKER, MARKER_LINE, ReportError, _remove, publish_site

FILES = {"index.html": "<p>index</p>", "workloads/a.html": "<p>a</p>", "assets/x.js": "x = 1;\n"}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


def _snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(p.relative_to(root))] = (st.st_mode, st.st_ino, data)
    return out


def test_a_site_is_marked_and_republished(tmp_path: Path) -> None:
    out = tmp_path / "site"
    assert publish_site(FILES, out) == (3, 0)  # absent: created
    assert (out / MARKER).read_text().splitlines()[0] == MARKER_LINE
    assert publish_site(FILES, out) == (0, 3)  # our own site: replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert publish_site(FILES, empty) == (3, 0)  # an empty directory
    assert (empty / "workloads" / "a.html").read_text() == "<p>a</p>"
    checkout = tmp_path / "reports"
    checkout.mkdir()
    (checkout / ".gitkeep").touch()  # a fresh checkout's placeholder: still empty, and carried over
    assert publish_site(FILES, checkout) == (3, 0)
    assert (checkout / ".gitkeep").read_bytes() == b"" and (checkout / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "reports", "site"]


@pytest.mark.parametrize(
    "content", ["user-file", "user-dir", "foreign-marker", "marker-symlink", "non-empty-gitkeep"]
)
def test_a_directory_benchsvc_did_not_write_is_refused(tmp_path: Path, content: str) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    if content == "user-file":
        (out / "thesis.tex").write_text("years of work")
    elif content == "user-dir":
        (out / "photos").mkdir()
    elif content == "non-empty-gitkeep":
        (out / ".gitkeep").write_text("not a placeholder: someone's data")
    elif content == "foreign-marker":
        (out / MARKER).write_text("something else\n")  # the name, but not our format line
    else:
        real = tmp_path / "real-marker"
        real.write_text(f"{MARKER_LINE}\n")
        (out / MARKER).symlink_to(real)  # a marker that is a symlink is not ours
    before = _snapshot(out)
    with pytest.raises(ReportError, match=f"is not a report site benchsvc wrote \\(it has no {MARKER}\\)"):
        publish_site(FILES, out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_refuses_the_current_directory_and_system_directories(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    before = _snapshot(work)
    line = _one_line_error(_cli("report", "--db", str(tmp_path / "x.db"), "--out", ".", cwd=work))
    assert line.startswith("Error: --out .: is not empty and is not a report site benchsvc wrote")
    assert _snapshot(work) == before
    for system in ("/run", "/etc", "/var"):
        st = os.stat(system)
        line = _one_line_error(_cli("report", "--db", str(tmp_path / "x.db"), "--out", system))
        assert line.startswith(f"Error: --out {system}: ")
        assert ("mount point" in line) or ("not a report site" in line), line
        assert os.stat(system).st_ino == st.st_ino
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_fifo_or_socket_in_an_old_site_is_refused_not_dropped(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "site"
    publish_site(FILES, out)
    special = out / "workloads" / f"the-{kind}"
    if kind == "fifo":
        os.mkfifo(special)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(special))
        sock.close()
    before = _snapshot(out)
    with pytest.raises(
        ReportError, match=f"holds workloads/the-{kind}, a {'FIFO' if kind == 'fifo' else 'socket'}"
    ):
        publish_site({**FILES, "index.html": "<p>new</p>"}, out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


needs_mount = pytest.mark.skipif(os.geteuid() != 0, reason="a bind mount needs root")


def _bind(src: Path, dst: Path) -> None:
    proc = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {proc.stderr.strip()}")


@needs_mount
def test_a_bind_mount_inside_out_is_refused_and_never_emptied(tmp_path: Path) -> None:
    out = tmp_path / "site"
    publish_site(FILES, out)
    data = tmp_path / "precious"
    data.mkdir()
    (data / "db.sqlite").write_text("everything")
    (data / "sub").mkdir()
    (data / "sub" / "more").write_text("more")
    mnt = out / "workloads" / "mnt"
    mnt.mkdir()
    _bind(data, mnt)
    try:
        with pytest.raises(ReportError, match=f"a file system is mounted at {mnt} inside it"):
            publish_site(FILES, out)
        # the removal itself, should a mount appear after the check: it stops at the mount point
        skipped = _remove(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY), tmp_path, "site")
        assert skipped == [str(mnt)]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert (data / "db.sqlite").read_text() == "everything"
    assert (data / "sub" / "more").read_text() == "more"


@needs_mount
def test_another_file_system_mounted_inside_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "site"
    publish_site(FILES, out)
    mnt = out / "assets"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "on-the-mount").write_text("x")
        with pytest.raises(ReportError, match="a file system is mounted at"):
            publish_site(FILES, out)
        assert (mnt / "on-the-mount").read_text() == "x"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_swapping_the_temporary_directory_for_a_symlink_writes_nothing_elsewhere(tmp_path: Path) -> None:
    """An attacker who can write the parent swaps every temporary directory it sees for a symlink to a
    directory of its choice, in a loop, while the site is published again and again: nothing is ever
    written there (a publish may fail, saying so; it never writes through the link)."""
    parent = tmp_path / "parent"
    parent.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    out = parent / "site"
    publish_site(FILES, out)
    big = {**FILES, **{f"workloads/w{i}.html": f"<p>{i}</p>" * 50 for i in range(200)}}
    stop = threading.Event()
    swaps = 0

    def attacker() -> None:
        nonlocal swaps
        while not stop.is_set():
            for entry in os.listdir(parent):
                if entry.startswith(".site.new-") and not entry.endswith("-moved"):
                    p = parent / entry
                    try:
                        os.rename(p, parent / f"{entry}-moved")
                        os.symlink(outside, p)
                        swaps += 1
                    except OSError:
                        pass

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    failures = 0
    try:
        for i in range(15):
            try:
                publish_site({**big, "index.html": f"<p>{i}</p>"}, out)
            except ReportError as exc:
                assert "cannot publish the report" in str(exc)
                failures += 1
            assert list(outside.iterdir()) == [], "written through the attacker's symlink"
            assert out.is_dir() and not out.is_symlink()
    finally:
        stop.set()
        thread.join()
    assert list(outside.iterdir()) == []
    assert swaps > 0, "the attacker never got to swap: the test tested nothing"
    assert (out / MARKER).is_file()


def test_leftovers_of_a_killed_publish_are_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "site"
    publish_site(FILES, out)
    hold = tmp_path / "hold"
    code = (
        "import sys; from pathlib import Path; from benchsvc.report.publish import publish_site; "
        f"publish_site({{f'p{{i}}.html': 'x' for i in range(20)}}, Path({str(out)!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=dict(os.environ, BENCHSVC_TEST_PUBLISH_HOLD=str(hold))
    )
    deadline = time.monotonic() + 60
    while not hold.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert hold.exists(), "the publish never reached its hold point"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    hold.unlink()
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".site.new-")]
    assert len(left) == 1  # what SIGKILL leaves
    # not ours: a look-alike without the marker, and one holding someone's files, are kept
    foreign = tmp_path / ".site.new-0badf00d"
    foreign.mkdir()
    (foreign / "someones.txt").write_text("not ours")
    publish_site(FILES, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".site.new-0badf00d", "site"]
    assert (foreign / "someones.txt").read_text() == "not ours"
