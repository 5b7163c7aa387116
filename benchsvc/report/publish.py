"""Publishing the report site atomically: a reader (or a web server) sees the previous site or the new one,
never a mix of both, and a failure or Ctrl-C leaves the previous site as it was.

benchsvc replaces only what it wrote: ``--out`` must be absent, empty, or a site benchsvc published (it holds
the marker file :data:`MARKER`, written first into every new site); a directory with anything else in it, a
FIFO, socket or device anywhere in it, or a file system mounted inside it, is refused before anything is
written.

The new site is written into a sibling temporary directory (``.NAME.new-XXXXXXXX`` next to ``NAME``): a file
whose bytes did not change is a hard link to the previous site's file (so it keeps its inode and modification
time: it is not rewritten), a changed file is written new, and every other file of the previous site (pages
of workloads that are no longer in the latest run, files someone else put there) is carried over as a hard
link. The two directories are then exchanged in one ``renameat2(RENAME_EXCHANGE)`` on Linux (elsewhere, or
on a file system without it: two renames, between which the site is briefly absent but never mixed), and the
previous site is removed.

Every write and removal goes through directory file descriptors (``openat``-style, ``O_NOFOLLOW``): the
parent of ``--out`` is opened once, and nothing below it is looked up by path again, so whoever can write
that parent cannot redirect a write by swapping the temporary directory (or a directory inside it) for a
symlink. Removal never crosses into another file system. Temporary directories a killed publish left behind
are removed by the next publish (only ones holding the marker, owned by this user and not in use).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
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


#: the file every site benchsvc publishes holds (written first into the new site); its first line
MARKER = ".benchsvc-site"
MARKER_LINE = "benchsvc report site, format 1"
_MARKER_TEXT = (
    f"{MARKER_LINE}\n"
    "This directory is replaced as a whole by `benchsvc report`; files put here are carried over.\n"
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _target(out: Path) -> Path:
    """The directory the site really goes to: absolute; a symlink to a directory is followed (the link stays)."""
    target = Path(os.path.abspath(out))
    if target.is_symlink():
        target = target.resolve()
    return target


_TODO = "give a directory whose parent you can write (it is created if missing)"
_NOT_OURS = "give a new or empty directory, or the directory of an earlier benchsvc report"


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


def _unescape_mountinfo(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_points() -> set[str]:
    """Every mount point of this process's mount namespace (empty where /proc is not there)."""
    try:
        text = Path("/proc/self/mountinfo").read_text(errors="surrogateescape")
    except OSError:
        return set()
    points = set()
    for line in text.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            points.add(_unescape_mountinfo(fields[4]))
    return points


def _mounts_in(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` (a resolved path), sorted."""
    top = str(directory)
    return sorted(p for p in mount_points() if p == top or p.startswith(top.rstrip("/") + "/"))


def _has_marker(dfd: int) -> bool:
    try:
        fd = os.open(MARKER, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dfd)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, 256).split(b"\n", 1)[0] == MARKER_LINE.encode()
    finally:
        os.close(fd)


_KINDS = {
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _not_ours(dfd: int, dev: int, rel: str = "") -> tuple[str, str] | None:
    """What in the open directory ``dfd`` a site benchsvc wrote never has (a FIFO, socket or device, another
    file system), as (path relative to the site, what it is); None when there is nothing of the kind."""
    with os.scandir(dfd) as entries:
        for entry in entries:
            path = f"{rel}{entry.name}"
            st = entry.stat(follow_symlinks=False)
            kind = _KINDS.get(stat.S_IFMT(st.st_mode))
            if kind is not None:
                return path, f"a {kind}"
            if stat.S_ISDIR(st.st_mode):
                if st.st_dev != dev:
                    return path, "another file system mounted there"
                sub = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    found = _not_ours(sub, dev, f"{path}/")
                finally:
                    os.close(sub)
                if found:
                    return found
    return None


#: placeholders a fresh checkout keeps in an otherwise empty directory (an empty file each)
_PLACEHOLDERS = frozenset({".gitkeep", ".keep"})


def _empty(dfd: int) -> bool:
    """Nothing in the open directory but empty placeholder files (a checkout's ``reports/.gitkeep``)."""
    for name in os.listdir(dfd):
        if name not in _PLACEHOLDERS:
            return False
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size:
            return False
    return True


def _check_ours(dfd: int, target: Path, out: Path, option: str) -> None:
    """Refuse a directory that is neither empty nor a site benchsvc wrote (see the module docstring)."""
    if _empty(dfd):
        return
    if not _has_marker(dfd):
        raise _fail(
            out,
            option,
            f"is not empty and is not a report site benchsvc wrote (it has no {MARKER}); the site "
            "replaces the whole directory",
            _NOT_OURS,
        )
    mounted = [m for m in _mounts_in(target) if m != str(target)]
    if mounted:
        raise _fail(
            out,
            option,
            f"a file system is mounted at {mounted[0]} inside it",
            "unmount it, or give another directory",
        )
    found = _not_ours(dfd, os.fstat(dfd).st_dev)
    if found:
        raise _fail(
            out,
            option,
            f"holds {found[0]}, {found[1]}, which a site benchsvc wrote never has",
            "move it out, or give another directory",
        )


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Refuse an ``--out`` the site cannot be published to, before anything is built (or measured): a file, a
    directory whose parent cannot be written (the site is swapped in from a sibling), a mount point, ``/``,
    a directory that is neither empty nor a site benchsvc wrote.

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
            if os.stat(target).st_dev != os.stat(parent).st_dev or str(target) in mount_points():
                raise _fail(
                    out,
                    option,
                    "is a mount point (the site is swapped in beside it)",
                    "use a directory inside it",
                )
            dfd = os.open(target, _DIR_FLAGS)
            try:
                _check_ours(dfd, target, out, option)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise _fail(out, option, f"cannot read it: {exc.strerror or exc}") from None
    os.rmdir(_sibling(parent, target.name, "check", out, option))


def _check_rel(rel: str) -> None:
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"report file name {rel!r} is not a plain relative path")  # a bug in build_site


# --- file-descriptor-relative operations ---------------------------------------------------------------------


class _Tree:
    """Open directory descriptors of one tree, by relative directory path ("" is the top), opened with
    ``O_NOFOLLOW`` one component at a time from the top (created when ``create``)."""

    def __init__(self, top: int) -> None:
        self.fds: dict[str, int] = {"": top}

    def dir(self, rel: str, create: bool = False) -> int | None:
        if rel in self.fds:
            return self.fds[rel]
        head, _, name = rel.rpartition("/")
        parent = self.dir(head, create)
        if parent is None:
            return None
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError):
            if create:
                raise
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP and not create:
                return None  # a symlink: not a directory of the site
            raise
        self.fds[rel] = fd
        return fd

    def close(self) -> None:
        for rel, fd in self.fds.items():
            if rel:
                os.close(fd)
        self.fds = {"": self.fds[""]}


def _split(rel: str) -> tuple[str, str]:
    head, _, name = rel.rpartition("/")
    return head, name


def _same_file(prev: _Tree, rel: str, data: bytes) -> bool:
    head, name = _split(rel)
    try:
        d = prev.dir(head)
        if d is None:
            return False
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=d)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read() == data
    finally:
        os.close(fd)


def _write_new(dfd: int, name: str, data: bytes, mode: int = 0o666) -> int:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _link_or_copy(src_dir: int, dst_dir: int, name: str) -> None:
    try:
        os.link(name, name, src_dir_fd=src_dir, dst_dir_fd=dst_dir, follow_symlinks=False)
        return
    except OSError:  # no hard links here (another file system, or not supported): a copy with its times
        pass
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=src_dir)
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            return
        with os.fdopen(os.dup(src), "rb") as f:
            data = f.read()
    finally:
        os.close(src)
    fd = _write_new(dst_dir, name, data, stat.S_IMODE(st.st_mode))
    try:
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(fd)


def _carry_over(prev: int, new: int, dev: int) -> None:
    """Every entry of the previous site that the new one does not have, as a hard link (symlinks as symlinks,
    directories made anew with the previous one's mode, times and, for root, owner). An unreadable directory
    stops the publish (it would be lost); a FIFO, socket, device or mount point stops it too (the up-front
    check refuses such a site: one appearing meanwhile is not dropped silently)."""
    with os.scandir(prev) as entries:
        listed = list(entries)
    for entry in listed:
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev:
                raise OSError(errno.EXDEV, "another file system is mounted there", name)
            made = True
            try:
                os.mkdir(name, 0o700, dir_fd=new)
            except FileExistsError:
                made = False  # the new site has it
            s_fd = os.open(name, _DIR_FLAGS, dir_fd=prev)
            try:
                d_fd = os.open(name, _DIR_FLAGS, dir_fd=new)
                try:
                    _carry_over(s_fd, d_fd, dev)
                    if made:
                        os.chmod(d_fd, stat.S_IMODE(st.st_mode))
                        if os.geteuid() == 0:
                            os.chown(d_fd, st.st_uid, st.st_gid)
                        os.utime(d_fd, ns=(st.st_atime_ns, st.st_mtime_ns))
                finally:
                    os.close(d_fd)
            finally:
                os.close(s_fd)
            continue
        try:
            os.stat(name, dir_fd=new, follow_symlinks=False)
            continue  # the new site has it
        except FileNotFoundError:
            pass
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=prev), name, dir_fd=new)
        elif stat.S_ISREG(st.st_mode):
            _link_or_copy(prev, new, name)
        else:
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "special file")
            raise OSError(errno.EINVAL, f"a {kind} appeared in the previous site", name)


def _remove_tree(dfd: int, name: str, dev: int, path: str, mounts: set[str], skipped: list[str]) -> None:
    """Remove ``name`` in the open directory ``dfd`` and everything below it, through descriptors (a symlink
    is removed, never followed), never entering another file system or a mount point (``path``: where it is,
    for the mount table; what is left is added to ``skipped``)."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    if st.st_dev != dev or path in mounts:
        skipped.append(path)
        return
    fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries]
        for child in names:
            _remove_tree(fd, child, dev, f"{path}/{child}", mounts, skipped)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # not empty: something was skipped below it
        os.rmdir(name, dir_fd=dfd)


def _remove(pfd: int, parent: Path, name: str, expect: os.stat_result | None = None) -> list[str]:
    """Remove the directory ``name`` of the open ``parent`` (only if it still is ``expect``, when given);
    returns what was left because it is another file system."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return []
    if expect is not None and (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
        if stat.S_ISLNK(st.st_mode):
            os.unlink(name, dir_fd=pfd)  # a symlink someone put in its place: the link only
        return []
    skipped: list[str] = []
    _remove_tree(pfd, name, os.fstat(pfd).st_dev, str(parent / name), mount_points(), skipped)
    return skipped


def _clean_leftovers(pfd: int, parent: Path, name: str) -> None:
    """Remove ``.NAME.new-*`` / ``.NAME.old-*`` directories a killed publish left in ``parent``: only
    directories of this user that are empty or hold the marker, and that no live publish holds (flock)."""
    prefixes = tuple(f".{name}.{kind}-" for kind in ("new", "old", "check"))
    for entry in os.listdir(pfd):
        if not entry.startswith(prefixes):
            continue
        try:
            fd = os.open(entry, _DIR_FLAGS, dir_fd=pfd)
        except OSError:
            continue  # not a directory (a symlink, a file): not ours
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or not (_has_marker(fd) or not os.listdir(fd)):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a publish running now
            _remove(pfd, parent, entry, st)
        finally:
            os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(pfd: int, a: str, b: str) -> bool:
    """Swap two entries of the open directory ``pfd`` in one system call (Linux renameat2); False where that
    is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(pfd, os.fsencode(a), pfd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


class _Replaced(OSError):
    """The temporary directory is no longer where it was made: someone else writes into the parent."""


def _is(pfd: int, name: str, st: os.stat_result) -> bool:
    try:
        now = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _swap_in(pfd: int, new: str, new_st: os.stat_result, target: str, parent: Path) -> str | None:
    """Put the directory ``new`` in place of ``target`` (both in ``pfd``); returns the name now holding the
    previous site, if any. Refuses when ``new`` is no longer the directory written (replaced meanwhile), and
    undoes an exchange that put something else in place of the site."""
    replaced = _Replaced(
        errno.EBUSY,
        "the temporary directory was replaced while the site was written (someone else writes into "
        f"{parent}); nothing was published",
        new,
    )
    if not _is(pfd, new, new_st):
        raise replaced
    try:
        os.stat(target, dir_fd=pfd, follow_symlinks=False)
        exists = True
    except FileNotFoundError:
        exists = False
    if not exists:
        os.rename(new, target, src_dir_fd=pfd, dst_dir_fd=pfd)
        if not _is(pfd, target, new_st):
            os.rename(target, new, src_dir_fd=pfd, dst_dir_fd=pfd)
            raise replaced
        return None
    if _exchange(pfd, new, target):
        if not _is(pfd, target, new_st):
            _exchange(pfd, new, target)
            raise replaced
        return new
    aside = f".{target}.old-{secrets.token_hex(4)}"
    os.mkdir(aside, 0o700, dir_fd=pfd)
    os.rename(target, aside, src_dir_fd=pfd, dst_dir_fd=pfd)  # onto the empty directory just made
    try:
        os.rename(new, target, src_dir_fd=pfd, dst_dir_fd=pfd)
        if not _is(pfd, target, new_st):
            os.rename(target, new, src_dir_fd=pfd, dst_dir_fd=pfd)
            raise replaced
    except BaseException:
        os.rename(aside, target, src_dir_fd=pfd, dst_dir_fd=pfd)
        raise
    return aside


def _make_new(
    pfd: int, target: str, parent: Path, prev: _Tree | None, out: Path, option: str
) -> tuple[str, int]:
    """A new directory ``.NAME.new-XXXXXXXX`` in ``pfd``, opened (and flock-ed: a live publish's directory is
    not taken for a leftover), with the marker written first."""
    for _ in range(100):
        name = f".{target}.new-{secrets.token_hex(4)}"
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            continue
        except OSError as exc:
            raise _fail(
                out, option, f"cannot create a directory in {parent}: {exc.strerror or exc}"
            ) from None
        fd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = _MARKER_TEXT.encode()
        if prev is not None and _same_file(prev, MARKER, data):
            _link_or_copy(prev.fds[""], fd, MARKER)
        else:
            os.close(_write_new(fd, MARKER, data))
        return name, fd
    raise _fail(
        out, option, f"cannot create a directory in {parent}: every name tried exists"
    )  # pragma: no cover


def publish_site(files: dict[str, str], out: Path, option: str = "--out") -> tuple[int, int]:
    """Publish ``files`` (relative path -> text) as the site in ``out``; returns (written, unchanged).

    ``unchanged`` files are hard links to the previous site's (not rewritten); see the module docstring."""
    check_out_dir(out, option)
    target = _target(out)
    parent = target.parent
    try:
        pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail(out, option, f"cannot open {parent}: {exc.strerror or exc}") from None
    new = tree = prev = None
    new_st: os.stat_result | None = None
    written = unchanged = 0
    try:
        try:
            _clean_leftovers(pfd, parent, target.name)
            try:
                prev_fd: int | None = os.open(target.name, _DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                prev_fd = None
            if prev_fd is not None:
                prev = _Tree(prev_fd)
                _check_ours(prev_fd, target, out, option)  # the very directory that is replaced
            with _signals_deferred():  # no Ctrl-C between making the directory and owning its removal
                new, new_fd = _make_new(pfd, target.name, parent, prev, out, option)
                tree = _Tree(new_fd)
                new_st = os.fstat(new_fd)
            if prev is not None:
                os.chmod(new_fd, stat.S_IMODE(os.fstat(prev.fds[""]).st_mode))
            else:
                os.chmod(new_fd, 0o777 & ~_umask())
            hold_at = len(files) // 2
            for i, (rel, text) in enumerate(sorted(files.items())):
                if i == hold_at:
                    _test_hold()
                _check_rel(rel)
                if rel == MARKER:
                    raise ValueError(f"report file name {rel!r} is the marker's")  # a bug in build_site
                data = text.encode("utf-8")
                head, name = _split(rel)
                d = tree.dir(head, create=True)
                assert d is not None
                if prev is not None and _same_file(prev, rel, data):
                    p = prev.dir(head)
                    assert p is not None
                    _link_or_copy(p, d, name)
                    unchanged += 1
                else:
                    os.close(_write_new(d, name, data))
                    written += 1
            if prev is not None:
                _carry_over(prev.fds[""], new_fd, os.fstat(prev.fds[""]).st_dev)
            old = _swap_in(pfd, new, new_st, target.name, parent)
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise ReportError(
                f"{option} {out}: cannot publish the report: {exc.strerror or exc}{where}; the previous "
                "report is unchanged — check the directory and its permissions"
            ) from None
    except BaseException:
        if new is not None and new_st is not None:
            # a second Ctrl-C does not leave half of it behind
            with _signals_deferred(), contextlib.suppress(OSError):
                _remove(pfd, parent, new, new_st)
        _close(pfd, tree, prev)
        raise
    skipped: list[str] = []
    if old is not None:
        with _signals_deferred(), contextlib.suppress(OSError):
            skipped = _remove(pfd, parent, old, os.fstat(prev.fds[""]) if prev is not None else None)
    _close(pfd, tree, prev)
    for path in skipped:  # pragma: no cover - the up-front check refuses a site with a mount inside
        print(f"warning: left {path} (another file system is mounted there)", file=sys.stderr)
    return written, unchanged


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _close(pfd: int, *trees: _Tree | None) -> None:
    for t in trees:
        if t is not None:
            t.close()
            os.close(t.fds[""])
    os.close(pfd)


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
