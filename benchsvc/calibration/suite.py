"""The calibration suite and the hold-out layouts (docs/cost-model.md#the-calibration-suite).

Every layout is a workload the live kernel can express (one folio size, 16 KiB to 2 MiB, no swap), generated
from a few axes: folio size, region size, the region's offset from a 2 MiB boundary, and the call pattern.
The suite (:func:`suite`) is what ``benchsvc calibrate`` measures and fits; the hold-out set
(:func:`holdout`) uses other folio sizes, region sizes and offsets and is never fitted on
(``benchmarks/calibration_holdout.py`` measures how well the fitted model predicts it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from benchsvc.workload import PMD_SIZE, WorkloadSpec, format_size, parse_workload

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Pattern:
    """One call pattern: a name and the ``[[zap]]`` tables it writes for a folio size and a region size."""

    name: str
    description: str
    fork: bool = False

    def zaps(self, folio: int, size: int) -> str:
        f, half = format_size(folio), format_size(max(folio // 2, 4 * KiB))
        if self.name in ("munmap-whole", "fork-munmap-whole"):
            return '[[zap]]\ncall = "munmap"\n'
        if self.name == "munmap-first-page":
            return f'[[zap]]\ncall = "munmap"\nlength = "4KiB"\nevery = "{f}"\n'
        if self.name == "munmap-every-4th":
            return f'[[zap]]\ncall = "munmap"\nlength = "4KiB"\nevery = "{format_size(4 * folio)}"\n'
        if self.name == "munmap-straddle":
            return f'[[zap]]\ncall = "munmap"\nstart = "{half}"\nlength = "{format_size(size - folio)}"\n'
        if self.name == "dontneed-whole":
            return '[[zap]]\ncall = "madvise_dontneed"\n'
        if self.name == "dontneed-halves":
            return f'[[zap]]\ncall = "madvise_dontneed"\nlength = "{half}"\nevery = "{f}"\n'
        if self.name == "fork-dontneed-whole":
            return '[[zap]]\ncall = "madvise_dontneed"\n'
        raise ValueError(self.name)


PATTERNS = (
    Pattern("munmap-whole", "munmap of the whole region"),
    Pattern("munmap-first-page", "munmap of the first 4 KiB of each folio"),
    Pattern("munmap-every-4th", "munmap of the first 4 KiB of every 4th folio"),
    Pattern("munmap-straddle", "one munmap from the middle of the first folio to the middle of the last"),
    Pattern("dontneed-whole", "MADV_DONTNEED of the whole region"),
    Pattern("dontneed-halves", "MADV_DONTNEED of the first half of each folio"),
    Pattern("fork-munmap-whole", "fork, then munmap of the whole region in the child", fork=True),
    Pattern("fork-dontneed-whole", "fork, then MADV_DONTNEED of the whole region in the child", fork=True),
)
#: the patterns of PMD-mapped 2 MiB THPs (a PMD-mapped THP cut inside is split to PTEs first)
PMD_PATTERNS = ("munmap-whole", "dontneed-whole", "fork-munmap-whole", "munmap-first-page")


def layout(
    folio: int, size: int, pattern: Pattern, *, offset: int = 0, pmd_mapped: bool = False, prefix: str = "cal"
) -> WorkloadSpec:
    """One generated layout as a workload (validated like a workload file)."""
    parts = [prefix, format_size(folio).lower(), format_size(size).lower(), pattern.name]
    if pmd_mapped:
        parts.insert(2, "pmd")
    if offset:
        parts.append(f"off{format_size(offset).lower()}")
    name = "-".join(parts)
    desc = f"{pattern.description}: {format_size(size)} of {format_size(folio)} folios"
    if pmd_mapped:
        desc += ", PMD-mapped"
    if offset:
        desc += f", {format_size(offset)} past a 2 MiB boundary"
    text = (
        f'description = "{desc}"\ntags = ["calibration"]\n\n[layout]\nsize = "{format_size(size)}"\n'
        f'folios = {{ "{format_size(folio)}" = 1.0 }}\n'
        + (f'va_offset = "{format_size(offset)}"\n' if offset else "")
        + ("pmd_mapped = true\n" if pmd_mapped else "")
        + ("fork = true\n" if pattern.fork else "")
        + "\n"
        + pattern.zaps(folio, size)
    )
    return parse_workload(text.encode(), name=name)


def _generate(
    folios: tuple[int, ...], sizes: tuple[int, ...], offsets: tuple[int, ...], prefix: str
) -> list[WorkloadSpec]:
    out: list[WorkloadSpec] = []
    for i, folio in enumerate(folios):
        for j, size in enumerate(sizes):
            for k, pattern in enumerate(PATTERNS):
                # the offset axis turns with the others, so every folio size meets every offset
                offset = offsets[(i + j + k) % len(offsets)]
                if folio == PMD_SIZE and offset:
                    offset = 0  # a 2 MiB layout off the boundary is the PTE-mapped case already covered
                out.append(layout(folio, size, pattern, offset=offset, prefix=prefix))
        if folio == PMD_SIZE:
            for size in sizes:
                for p in PATTERNS:
                    if p.name in PMD_PATTERNS:
                        out.append(layout(folio, size, p, pmd_mapped=True, prefix=prefix))
    return out


#: the suite's axes (the hold-out set's are disjoint in folio size, region size and offset)
SUITE_FOLIOS = (16 * KiB, 64 * KiB, 256 * KiB, 2 * MiB)
SUITE_SIZES = (8 * MiB, 32 * MiB)
SUITE_OFFSETS = (0, 64 * KiB, 1 * MiB)
HOLDOUT_FOLIOS = (32 * KiB, 128 * KiB, 512 * KiB, 1 * MiB, 2 * MiB)
HOLDOUT_SIZES = (16 * MiB,)
HOLDOUT_OFFSETS = (0, 192 * KiB, 1536 * KiB)


def suite() -> list[WorkloadSpec]:
    """The calibration suite: 4 folio sizes x 2 region sizes x 8 call patterns, plus 8 PMD-mapped layouts."""
    return _generate(SUITE_FOLIOS, SUITE_SIZES, SUITE_OFFSETS, "cal")


def holdout() -> list[WorkloadSpec]:
    """Layouts outside the suite: other folio sizes (and 2 MiB at another region size, PTE- and
    PMD-mapped), another region size, other offsets."""
    return _generate(HOLDOUT_FOLIOS, HOLDOUT_SIZES, HOLDOUT_OFFSETS, "hold")


def suite_hash(specs: list[WorkloadSpec]) -> str:
    """A short hash of the layouts' definitions: two calibrations with the same hash measured the same suite."""
    h = hashlib.sha256()
    for spec in specs:
        h.update(spec.name.encode() + b"\0" + spec.source_text.encode() + b"\0")
    return h.hexdigest()[:16]
