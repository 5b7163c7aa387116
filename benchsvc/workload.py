"""Workload files: TOML -> a frozen :class:`WorkloadSpec` (the format: README.md#workload-files).

Every problem is reported as one :class:`~benchsvc.errors.WorkloadError` line that names the file and the
key, e.g. ``workloads/x.toml: layout.folios: shares sum to 0.9, expected 1.0``. Unknown keys are rejected, so
a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchsvc import limits
from benchsvc.errors import UnknownWorkloadError, WorkloadError
from benchsvc.limits import (
    MAX_TOML_DEPTH,
    MAX_WORKLOAD_BYTES,
    name_problem,
    read_bounded,
    toml_depth,
)

PAGE_SIZE = 4096
PMD_SIZE = 2 * 1024 * 1024
#: shipped workloads with one of these tags are left out of ``benchsvc run`` unless ``--tag`` names the tag:
#: ``large`` (1 GiB, slow to time) and ``oracle`` (the kernel cross-checks at 16 KiB and 2 MiB folios)
OPT_IN_TAGS = ("large", "oracle")
MAX_REGION_BYTES = 4 * 1024**3
MAX_ZAP_CALLS = 1 << 20

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE_RE = re.compile(r"^([0-9]+)(B|KiB|MiB|GiB)?$")
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")

#: Folio sizes that anonymous memory can have: order 0 and orders 2..9 (order 1 exists only for shmem).
FOLIO_SIZES = tuple(PAGE_SIZE << order for order in (0, 2, 3, 4, 5, 6, 7, 8, 9))
ZAP_CALLS = ("munmap", "madvise_dontneed", "exit")
ARRANGEMENTS = ("sequential", "shuffled")

_TOP_KEYS = ("description", "tags", "layout", "zap")
_LAYOUT_KEYS = ("size", "va_offset", "folios", "arrangement", "seed", "pmd_mapped", "fork", "swap_share")
_ZAP_KEYS = ("call", "start", "length", "every", "measure")


def format_size(size_bytes: int) -> str:
    """The shortest exact spelling of a size: ``65536`` -> ``"64KiB"``."""
    for unit in ("GiB", "MiB", "KiB"):
        factor = _UNITS[unit]
        if size_bytes and size_bytes % factor == 0:
            return f"{size_bytes // factor}{unit}"
    return f"{size_bytes}B"


def parse_size(value: object) -> int:
    """Parse ``"64KiB"``, ``"2MiB"``, ``"0"`` or an integer number of bytes; raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (use KiB, MiB, GiB or an integer of bytes)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2) or "B"]
    raise ValueError(f"{value!r} is not a size (use KiB, MiB, GiB or an integer of bytes)")


@dataclass(frozen=True)
class ZapStep:
    """One ``[[zap]]`` table: a call repeated at ``start + i*every`` while inside the region."""

    call: str
    start_bytes: int
    length_bytes: int | None  # None: to the end of the region
    every_bytes: int | None
    measure: bool

    def ranges(self, size_bytes: int) -> list[tuple[int, int]]:
        """The (start, end) byte ranges, relative to the region start, of the calls this step makes."""
        if self.call == "exit":
            return [(0, size_bytes)]
        starts = [self.start_bytes]
        if self.every_bytes:
            starts = list(range(self.start_bytes, size_bytes, self.every_bytes))
        out = []
        for start in starts:
            end = size_bytes if self.length_bytes is None else min(size_bytes, start + self.length_bytes)
            out.append((start, end))
        return out


@dataclass(frozen=True)
class WorkloadSpec:
    """A validated workload definition. Sizes are in bytes."""

    name: str
    description: str
    tags: tuple[str, ...]
    size_bytes: int
    va_offset_bytes: int
    folios: tuple[tuple[int, float], ...]  # (folio size in bytes, share of the region), in file order
    arrangement: str
    seed: int
    pmd_mapped: bool
    fork: bool
    swap_share: float
    zaps: tuple[ZapStep, ...]
    source_text: str
    content_hash: str
    path: str | None = None

    @property
    def pages(self) -> int:
        return self.size_bytes // PAGE_SIZE

    def folio_counts(self) -> list[tuple[int, int]]:
        """(folio size in bytes, number of folios of that size), in file order."""
        return [(fsize, round(share * self.size_bytes) // fsize) for fsize, share in self.folios]

    @property
    def single_folio_size(self) -> int | None:
        """The folio size when the layout uses exactly one size, else None."""
        return self.folios[0][0] if len(self.folios) == 1 else None


def _key(key: str) -> str:
    """A TOML key as it appears in a message: bare when plain, else quoted with every control character escaped."""
    return key if _PLAIN_KEY_RE.match(key) else json.dumps(key)


class _Ctx:
    def __init__(self, label: str) -> None:
        self.label = label

    def fail(self, key: str, message: str) -> WorkloadError:
        return WorkloadError(f"{self.label}: {key}: {message}" if key else f"{self.label}: {message}")

    def check_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                where = f"{prefix}.{_key(key)}" if prefix else _key(key)
                raise self.fail(where, f"unknown key (expected one of: {', '.join(allowed)})")

    def size(self, value: object, key: str) -> int:
        try:
            return parse_size(value)
        except ValueError as exc:
            raise self.fail(key, str(exc)) from None

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"{value!r} is not true or false")
        return value

    def page_multiple(self, value: int, key: str) -> None:
        if value % PAGE_SIZE:
            raise self.fail(key, f"{format_size(value)} is not a multiple of 4KiB")


def content_hash(raw: bytes) -> str:
    """A workload's content hash: the sha256 of its file's bytes (of its definition text in UTF-8)."""
    return hashlib.sha256(raw).hexdigest()


def load_workload(path: str | Path) -> WorkloadSpec:
    """Read and validate one workload file; the workload's name is the file name without ``.toml``.

    Only a regular file of at most :data:`~benchsvc.limits.MAX_WORKLOAD_BYTES` is read."""
    p = Path(path)
    label = str(path)
    raw = read_bounded(
        p, limit_bytes=MAX_WORKLOAD_BYTES, label=label, what="a workload file", error=WorkloadError
    )
    return parse_workload(raw, name=p.stem if p.suffix == ".toml" else p.name, label=label, path=str(p))


def parse_workload(
    raw: bytes, *, name: str, label: str | None = None, path: str | None = None
) -> WorkloadSpec:
    """Validate workload TOML given as bytes (``label`` names it in errors)."""
    ctx = _Ctx(label or f"{name}.toml")
    problem = name_problem(name)
    if problem:
        raise ctx.fail("", f"{problem}: rename the file")
    if len(raw) > MAX_WORKLOAD_BYTES:
        limit = limits.size_text(MAX_WORKLOAD_BYTES)
        raise ctx.fail("", f"{len(raw)} bytes, more than the {limit} allowed for a workload file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ctx.fail("", f"not UTF-8 text (byte {exc.start})") from None
    depth = toml_depth(text)
    if depth > MAX_TOML_DEPTH:
        raise ctx.fail(
            "", f"nested {depth} deep, more than the {MAX_TOML_DEPTH} levels a workload file may use"
        )
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ctx.fail("", f"not valid TOML: {exc}".replace("\n", " ")) from None
    except RecursionError:  # a backstop: the depth check above keeps tomllib far from the limit
        raise ctx.fail("", f"nested too deeply (more than {MAX_TOML_DEPTH} levels)") from None
    ctx.check_keys(doc, _TOP_KEYS, "")

    description = doc.get("description")
    if description is None:
        raise ctx.fail("description", "missing (one line saying what the workload does)")
    if not isinstance(description, str) or not description.strip():
        raise ctx.fail("description", "must be a non-empty string")
    tags = doc.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise ctx.fail("tags", "must be a list of non-empty strings")

    layout = doc.get("layout")
    if layout is None:
        raise ctx.fail("layout", "missing ([layout] with at least size and folios)")
    if not isinstance(layout, dict):
        raise ctx.fail("layout", "must be a table")
    ctx.check_keys(layout, _LAYOUT_KEYS, "layout")

    if "size" not in layout:
        raise ctx.fail("layout.size", "missing")
    size = ctx.size(layout["size"], "layout.size")
    if size <= 0:
        raise ctx.fail("layout.size", "must be larger than 0")
    ctx.page_multiple(size, "layout.size")
    if size > MAX_REGION_BYTES:
        raise ctx.fail("layout.size", f"{format_size(size)} is larger than the supported 4GiB")

    va_offset = ctx.size(layout.get("va_offset", 0), "layout.va_offset")
    ctx.page_multiple(va_offset, "layout.va_offset")
    if va_offset >= PMD_SIZE:
        raise ctx.fail("layout.va_offset", f"{format_size(va_offset)} is not below 2MiB")

    folios = _parse_folios(ctx, layout.get("folios"), size)

    arrangement = layout.get("arrangement", "sequential")
    if arrangement not in ARRANGEMENTS:
        raise ctx.fail("layout.arrangement", f"{arrangement!r} is not one of: {', '.join(ARRANGEMENTS)}")
    seed = layout.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ctx.fail("layout.seed", f"{seed!r} is not a non-negative integer")
    pmd_mapped = ctx.boolean(layout.get("pmd_mapped", False), "layout.pmd_mapped")
    fork = ctx.boolean(layout.get("fork", False), "layout.fork")
    swap_share = layout.get("swap_share", 0.0)
    if isinstance(swap_share, bool) or not isinstance(swap_share, int | float) or not 0 <= swap_share <= 1:
        raise ctx.fail("layout.swap_share", f"{swap_share!r} is not a number between 0 and 1")
    swap_share = float(swap_share)
    if swap_share > 0 and not any(fsize == PAGE_SIZE for fsize, _ in folios):
        raise ctx.fail(
            "layout.swap_share", "only order-0 pages are swapped, but the layout has no 4KiB folios"
        )
    if pmd_mapped and not any(fsize == PMD_SIZE for fsize, _ in folios):
        raise ctx.fail("layout.pmd_mapped", "true, but the layout has no 2MiB folios")

    zaps = _parse_zaps(ctx, doc.get("zap"), size)
    return WorkloadSpec(
        name=name,
        description=description.strip(),
        tags=tuple(t.strip() for t in tags),
        size_bytes=size,
        va_offset_bytes=va_offset,
        folios=folios,
        arrangement=arrangement,
        seed=seed,
        pmd_mapped=pmd_mapped,
        fork=fork,
        swap_share=swap_share,
        zaps=zaps,
        source_text=text,
        content_hash=content_hash(raw),
        path=path,
    )


def _parse_folios(ctx: _Ctx, folios: object, size: int) -> tuple[tuple[int, float], ...]:
    key = "layout.folios"
    if folios is None:
        raise ctx.fail(key, 'missing (e.g. folios = { "64KiB" = 1.0 })')
    if not isinstance(folios, dict) or not folios:
        raise ctx.fail(key, 'must be a non-empty table of folio size -> share, e.g. { "64KiB" = 1.0 }')
    out: list[tuple[int, float]] = []
    seen: set[int] = set()
    for size_text, share in folios.items():
        fkey = f"{key}.{json.dumps(size_text)}"
        fsize = ctx.size(size_text, fkey)
        if fsize not in FOLIO_SIZES:
            allowed = ", ".join(format_size(s) for s in FOLIO_SIZES)
            raise ctx.fail(fkey, f"{size_text!r} is not an anonymous folio size (one of: {allowed})")
        if fsize in seen:
            raise ctx.fail(fkey, "folio size listed twice")
        seen.add(fsize)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ctx.fail(fkey, f"share {share!r} is not a number in (0, 1]")
        share_bytes = share * size
        whole = round(share_bytes)
        if not math.isclose(share_bytes, whole, abs_tol=1e-6) or whole % fsize:
            raise ctx.fail(
                fkey,
                f"share {share} of {format_size(size)} is not a whole number of {format_size(fsize)} folios",
            )
        out.append((fsize, float(share)))
    total = sum(share for _, share in out)
    if not math.isclose(total, 1.0, abs_tol=1e-9):
        raise ctx.fail(key, f"shares sum to {total:g}, expected 1.0")
    if sum(round(share * size) for _, share in out) != size:
        raise ctx.fail(key, f"the folios do not cover exactly {format_size(size)}")
    return tuple(out)


def _parse_zaps(ctx: _Ctx, zaps: object, size: int) -> tuple[ZapStep, ...]:
    if zaps is None:
        raise ctx.fail("zap", 'missing (at least one [[zap]] table, e.g. call = "munmap")')
    if not isinstance(zaps, list) or not zaps or not all(isinstance(z, dict) for z in zaps):
        raise ctx.fail("zap", "must be one or more [[zap]] tables")
    steps: list[ZapStep] = []
    total_calls = 0
    for i, z in enumerate(zaps):
        prefix = f"zap[{i}]"
        ctx.check_keys(z, _ZAP_KEYS, prefix)
        call = z.get("call")
        if call is None:
            raise ctx.fail(f"{prefix}.call", f"missing (one of: {', '.join(ZAP_CALLS)})")
        if call not in ZAP_CALLS:
            raise ctx.fail(f"{prefix}.call", f"{call!r} is not one of: {', '.join(ZAP_CALLS)}")
        measure = ctx.boolean(z.get("measure", True), f"{prefix}.measure")
        if steps and steps[-1].call == "exit":
            raise ctx.fail(prefix, "comes after an exit step (the address space is gone)")
        if call == "exit":
            for k in ("start", "length", "every"):
                if k in z:
                    raise ctx.fail(f"{prefix}.{k}", 'not allowed with call = "exit" (exit unmaps everything)')
            steps.append(ZapStep("exit", 0, None, None, measure))
            total_calls += 1
            continue
        start = ctx.size(z.get("start", 0), f"{prefix}.start")
        ctx.page_multiple(start, f"{prefix}.start")
        if start >= size:
            raise ctx.fail(
                f"{prefix}.start", f"{format_size(start)} is not inside the {format_size(size)} region"
            )
        length_value = z.get("length", "all")
        length: int | None
        if length_value == "all":
            length = None
        else:
            length = ctx.size(length_value, f"{prefix}.length")
            if length <= 0:
                raise ctx.fail(f"{prefix}.length", 'must be larger than 0 (or "all")')
            ctx.page_multiple(length, f"{prefix}.length")
            if start + length > size:
                raise ctx.fail(
                    f"{prefix}.length",
                    f"start {format_size(start)} + length {format_size(length)} runs past the "
                    f"{format_size(size)} region",
                )
        every = None
        if "every" in z:
            every = ctx.size(z["every"], f"{prefix}.every")
            if every <= 0:
                raise ctx.fail(f"{prefix}.every", "must be larger than 0")
            ctx.page_multiple(every, f"{prefix}.every")
        step = ZapStep(call, start, length, every, measure)
        total_calls += len(range(start, size, every)) if every else 1
        if total_calls > MAX_ZAP_CALLS:
            raise ctx.fail(f"{prefix}.every", f"more than {MAX_ZAP_CALLS} zap calls in one workload")
        steps.append(step)
    if not any(s.measure for s in steps):
        raise ctx.fail("zap", "no step is measured (set measure = true on at least one)")
    return tuple(steps)


def shipped_workloads_dir() -> Path:
    """The shipped ``workloads/`` directory (``benchsvc/workloads`` links to it in a checkout, and a wheel
    carries a copy)."""
    return Path(__file__).resolve().parent / "workloads"


def discover(directory: str | Path | None = None) -> list[Path]:
    """The workload files of a directory (default: the shipped ones), sorted by name."""
    d = Path(directory) if directory is not None else shipped_workloads_dir()
    return sorted(d.glob("*.toml"), key=lambda p: p.stem)


def resolve(ref: str, directory: str | Path | None = None) -> WorkloadSpec:
    """A workload by path (anything that exists or ends in .toml) or by the name of a shipped workload."""
    p = Path(ref)
    if p.exists() or ref.endswith(".toml") or "/" in ref:
        return load_workload(p)
    d = Path(directory) if directory is not None else shipped_workloads_dir()
    candidate = d / f"{ref}.toml"
    if candidate.exists():
        return load_workload(candidate)
    names = ", ".join(f.stem for f in discover(d)) or "none"
    raise UnknownWorkloadError(
        f"no workload named {ref!r} in {d} (known: {names}); give a path to a .toml file"
    )
