"""Publishing the report site atomically: a reader (or a web server) sees the previous site or the new one,
never a mix of both, and a failure or Ctrl-C leaves the previous site as it was.

The new site is written into a sibling temporary directory (``.NAME.new-XXXXXXXX`` next to ``NAME``): a file
whose bytes did not change is a hard link to the previous site's file (so it keeps its inode and modification
time: it is not rewritten), a changed file is written new, and every other file of the previous site (pages
of workloads that are no longer in the latest run, files someone else put there) is carried over as a hard
link. The two directories are then exchanged in one ``renameat2(RENAME_EXCHANGE)`` on Linux (elsewhere, or
on a file system without it: two renames, between which the site is briefly absent but never mixed), and the
previous site is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchsvc.errors import BenchsvcError


class ReportError(BenchsvcError):
    """A report that cannot be published where it was asked to go."""


def _target(out: Path) -> Path:
    """The directory the site really goes to: absolute; a symlink to a directory is followed (the link stays)."""
    target = Path(os.path.abspath(out))
    if target.is_symlink():
        target = target.resolve()
    return target


_TODO = "give a directory whose parent you can write (it is created if missing)"


def _fail(out: Path, option: str, what: str, todo: str = _TODO) -> ReportError:
    return ReportError(f"{option} {out}: {what} — {todo}")


def _sibling(parent: Path, name: str, kind: str, out: Path, option: str) -> Path:
    """A new empty directory ``.NAME.KIND-XXXXXXXX`` in ``parent`` (mode from the umask)."""
    for _ in range(100):
        path = parent / f".{name}.{kind}-{secrets.token_hex(4)}"
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _fail(
                out, option, f"cannot create a directory in {parent}: {exc.strerror or exc}"
            ) from None
        return path
    raise _fail(
        out, option, f"cannot create a directory in {parent}: every name tried exists"
    )  # pragma: no cover


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse an ``--out`` the site cannot be published to, before anything is built (or measured): a file, a
    directory whose parent cannot be written (the site is swapped in from a sibling), a mount point, ``/``.

    Creates the missing parent directories, as publishing would."""
    target = _target(out)
    if target.parent == target:
        raise _fail(out, option, "the root directory cannot be replaced by a site")
    if target.exists() and not target.is_dir():
        raise _fail(out, option, "is a file, not a directory", "give a directory, or remove the file")
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(out, option, f"cannot create {parent}: {exc.strerror or exc}") from None
    if not parent.is_dir():
        raise _fail(out, option, f"{parent} is not a directory")
    if target.is_dir():
        try:
            if os.stat(target).st_dev != os.stat(parent).st_dev:
                raise _fail(
                    out,
                    option,
                    "is a mount point (the site is swapped in beside it)",
                    "use a directory inside it",
                )
        except OSError as exc:
            raise _fail(out, option, f"cannot read it: {exc.strerror or exc}") from None
    os.rmdir(_sibling(parent, target.name, "check", out, option))


def _check_rel(rel: str) -> None:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"report file name {rel!r} is not a plain relative path")  # a bug in build_site


def _same_file(path: Path, data: bytes) -> bool:
    try:
        st = os.lstat(path)
        return stat.S_ISREG(st.st_mode) and st.st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # no hard links here (another file system, or not supported): a copy with its times
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry_over(old: Path, new: Path) -> None:
    """Every entry of the previous site that the new one does not have, as a hard link (symlinks as symlinks;
    FIFOs, sockets and devices are left out). An unreadable directory stops the publish (it would be lost)."""

    def fail(exc: OSError) -> None:
        raise exc

    for dirpath, dirnames, filenames in os.walk(old, onerror=fail, followlinks=False):
        rel = Path(dirpath).relative_to(old)
        dest_dir = new / rel
        for d in dirnames:
            src, dst = Path(dirpath) / d, dest_dir / d
            if os.path.islink(src):
                if not os.path.lexists(dst):
                    os.symlink(os.readlink(src), dst)
                continue
            if not dst.exists():
                os.mkdir(dst)
                shutil.copystat(src, dst, follow_symlinks=False)
        for f in filenames:
            src, dst = Path(dirpath) / f, dest_dir / f
            if os.path.lexists(dst):
                continue
            st = os.lstat(src)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISREG(st.st_mode):
                _link_or_copy(src, dst)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one system call (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(new: Path, target: Path, out: Path, option: str) -> Path | None:
    """Put ``new`` in place of ``target``; returns the directory now holding the previous site, if any."""
    if not target.exists():
        os.rename(new, target)
        return None
    if _exchange(new, target):
        return new
    aside = _sibling(target.parent, target.name, "old", out, option)
    os.rename(target, aside)  # onto the empty directory just made
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def publish_site(files: dict[str, str], out: Path, option: str = "--out") -> tuple[int, int]:
    """Publish ``files`` (relative path -> text) as the site in ``out``; returns (written, unchanged).

    ``unchanged`` files are hard links to the previous site's (not rewritten); see the module docstring."""
    check_out_dir(out, option)
    target = _target(out)
    previous = target if target.is_dir() else None
    with _signals_deferred():  # no Ctrl-C between making the temporary directory and owning its removal
        new = _sibling(target.parent, target.name, "new", out, option)
    old: Path | None = None
    written = unchanged = 0
    try:
        try:
            if previous is not None:
                os.chmod(new, stat.S_IMODE(os.stat(previous).st_mode))
            hold_at = len(files) // 2
            for i, (rel, text) in enumerate(sorted(files.items())):
                if i == hold_at:
                    _test_hold()
                _check_rel(rel)
                data = text.encode("utf-8")
                dst = new / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if previous is not None and _same_file(previous / rel, data):
                    _link_or_copy(previous / rel, dst)
                    unchanged += 1
                else:
                    dst.write_bytes(data)
                    written += 1
            if previous is not None:
                _carry_over(previous, new)
            old = _swap_in(new, target, out, option)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise ReportError(
                f"{option} {out}: cannot publish the report: {exc.strerror or exc}{where}; the previous "
                "report is unchanged — check the directory and its permissions"
            ) from None
    except BaseException:
        with _signals_deferred():  # a second Ctrl-C does not leave half of it behind
            shutil.rmtree(new, ignore_errors=True)
        raise
    if old is not None:
        with _signals_deferred():
            shutil.rmtree(old, ignore_errors=True)
    return written, unchanged


def _test_hold() -> None:
    """Test hook: with ``BENCHSVC_TEST_PUBLISH_HOLD=<file>``, halfway through writing the new site, create that
    file and wait (up to a minute) for a signal, so that a test interrupts publishing at a known point."""
    marker = os.environ.get("BENCHSVC_TEST_PUBLISH_HOLD")
    if not marker:
        return
    Path(marker).touch()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back (delivered when the block ends) in the main thread; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
