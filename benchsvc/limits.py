"""What benchsvc accepts from files it did not write: the name rule, size caps, the TOML nesting limit.

One rule for every name that becomes a file name or a page of the report (workload names from workload files,
from ``benchsvc import`` lines and from pyperf metadata): :func:`name_problem`. One way to read a file given
by a user or another machine: :func:`read_bounded` (regular files only, never blocking, at most a cap) and
:func:`gunzip_bounded` (decompressed size capped too). ``docs/limits.md`` states these limits for users.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import zlib
from pathlib import Path

from benchsvc.errors import BenchsvcError

#: the longest workload name (the report's page is ``<name>.html``, far below any file system's limit)
MAX_NAME_CHARS = 100
#: the largest workload file (the shipped ones are under 1 KiB)
MAX_WORKLOAD_BYTES = 1024**2
#: the largest import file, and the most an import file may decompress to
MAX_IMPORT_BYTES = 256 * 1024**2
#: the deepest nesting of tables, arrays and dotted keys in a workload file (the shipped ones use 3)
MAX_TOML_DEPTH = 32

_NAME_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_NAME_CHARS - 1}}}")
NAME_RULE = f"1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 . _ -, starting with a letter or digit"
_CHUNK_BYTES = 1024**2


def name_problem(name: object, what: str = "workload name") -> str | None:
    """None when ``name`` is usable as a file name and a page name, else why not (one line, ends with the rule).

    The rule: 1 to :data:`MAX_NAME_CHARS` characters of ``[A-Za-z0-9._-]``, the first a letter or a digit (so no
    ``/``, no ``..`` path, no hidden file, nothing a shell or a URL would change)."""
    if isinstance(name, str) and _NAME_RE.fullmatch(name):
        return None
    shown = repr(name) if not isinstance(name, str) or len(name) <= 60 else repr(name[:57]) + "..."
    return f"{shown} is not a usable {what} ({NAME_RULE})"


def is_usable_name(name: object) -> bool:
    return name_problem(name) is None


def size_text(size_bytes: int) -> str:
    """``1048576`` -> ``1 MiB`` (limits in messages)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size_bytes >= factor and size_bytes % factor == 0:
            return f"{size_bytes // factor} {unit}"
    return f"{size_bytes} bytes"


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_bounded(
    path: str | Path, *, limit_bytes: int, label: str, what: str, error: type[BenchsvcError]
) -> bytes:
    """The bytes of a regular file of at most ``limit_bytes``; else ``error("LABEL: ...")`` naming the limit.

    The file is opened with O_NONBLOCK and checked with fstat before anything is read, so a FIFO, a device (a
    symlink to /dev/zero) or a directory is refused at once instead of hanging or filling memory; the read
    stops one byte past the limit whatever the file claims its size is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise error(f"{label}: no such file") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket, or a FIFO on some systems
            raise error(f"{label}: not a regular file — give {what}") from None
        raise error(f"{label}: cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
            raise error(f"{label}: is {kind}, not a regular file — give {what}")
        limit = size_text(limit_bytes)
        if st.st_size > limit_bytes:
            raise error(f"{label}: {st.st_size} bytes, more than the {limit} allowed for {what}")
        chunks: list[bytes] = []
        total = 0
        while total <= limit_bytes:
            try:
                chunk = os.read(fd, min(_CHUNK_BYTES, limit_bytes + 1 - total))
            except OSError as exc:
                raise error(f"{label}: cannot read: {exc.strerror or exc}") from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit_bytes:
            raise error(f"{label}: more than the {limit} allowed for {what}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def gunzip_bounded(
    raw: bytes, *, limit_bytes: int, label: str, what: str, error: type[BenchsvcError]
) -> bytes:
    """gzip data (one or more members) decompressed in chunks, stopping as soon as it passes ``limit_bytes``
    (a gzip bomb costs at most the limit in memory); ``error("LABEL: ...")`` when it is larger or not gzip."""
    import gzip

    chunks: list[bytes] = []
    total = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            while total <= limit_bytes:
                chunk = f.read(min(_CHUNK_BYTES, limit_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise error(f"{label}: not a readable gzip file: {exc}") from None
    if total > limit_bytes:
        raise error(
            f"{label}: decompresses to more than the {size_text(limit_bytes)} allowed for {what} — "
            "split it into smaller files"
        )
    return b"".join(chunks)


def toml_depth(text: str) -> int:
    """The deepest nesting in TOML text: open ``[``/``{`` plus the dots of a dotted key or table name.

    A cheap scan that skips strings and comments, used before :mod:`tomllib` (whose parser recurses into
    nested values and keeps every prefix of a dotted key: a deep document costs a RecursionError or memory
    quadratic in its depth). It may count a dot of a float value; that only makes it more cautious."""
    depth = dots = deepest = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c in "\"'":
            triple = text.startswith(c * 3, i)
            quote = c * 3 if triple else c
            j = i + len(quote)
            while j < n:
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(quote, j):
                    break
                if not triple and text[j] == "\n":
                    break
                j += 1
            i = j + len(quote)
            continue
        if c in "[{":
            depth += 1
            dots = 0
        elif c in "]}":
            depth = max(0, depth - 1)
            dots = 0
        elif c in "=,\n":
            dots = 0
        elif c == ".":
            dots += 1
        deepest = max(deepest, depth + dots)
        i += 1
    return deepest
