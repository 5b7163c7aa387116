"""The repository explains itself: nothing cites a document it does not contain, and every link into its own
files resolves.

Two checks over every tracked text file (and new files not yet committed):

* **No foreign references.** Section labels and paths of background documents that are not part of the
  repository (the patterns in :data:`FORBIDDEN`) must not appear: what the code needs from them is written
  in ``docs/`` and cited from there.
* **No dangling links.** Every relative markdown link (``[text](path#anchor)``, resolved from the file that
  holds it) and every mention of a ``docs/*.md`` or ``README.md`` path with an optional ``#anchor`` (resolved
  from the repository root, in code, comments, docs and workload files alike) must name an existing file,
  and its anchor an existing heading of that file (GitHub's heading slugs).

The checker is tested on a small bad repository too, so that it is known to fail when it should.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: what must not appear, with the reason shown when it does (written so that this file does not match itself)
FORBIDDEN: dict[str, re.Pattern[str]] = {
    "a section label of a document the repository does not contain": re.compile(
        r"K[§]|K[\\]u00a7|\bDESIG[N][ ]§|\bspec[ ]§|\banchors[ ]§"
    ),
    "a background document the repository does not contain": re.compile(
        r"\bDESIG[N][.]md|\bSTYLE[.]md|zap[-]engine[.]md|spec/zap[-]engine|benchmark[-]anchors|kernel[-]zap-history"
        r"|stack[-]notes|measurement[-]noise|model[-]codebases|\breference/[\w-]+[.]md"
    ),
    "a path outside the repository": re.compile(
        r"[.][.]/share[d]\b|/work[/]shared\b|\bshare[d]/(?:spec|reference)\b"
    ),
}

#: ``[text](target)`` with an optional title; images too (``![alt](target)``)
MD_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: a root-relative mention of a doc (a markdown file under docs, or the README), optionally with #anchor
BARE_DOC = re.compile(r"(?<![\w/.\-])((?:docs/[\w.\-]+|README)\.md)(?:#([\w\-]+))?")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")

#: what a walk of the tree skips when git cannot list the files: tool caches and generated output
SKIP_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "build",
}
SKIP_DIRS |= {"dist", "reports"}
MAX_BYTES = 2_000_000


# ---------------------------------------------------------------------------------------------- the checker
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lowercased, punctuation other than ``-`` and ``_``
    dropped, spaces turned into hyphens (runs of hyphens are kept)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML renders as nothing here
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of a markdown text outside fenced code blocks."""
    out, fenced = [], False
    for no, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((no, line))
    return out


def anchors_of(text: str) -> set[str]:
    """Every anchor a markdown text defines: heading slugs (duplicates numbered as GitHub does) and HTML ids."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in prose_lines(text):
        out.update(HTML_ANCHOR.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary, unreadable or oversized file."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        raw = path.read_bytes()
    except OSError:
        return None
    if b"\0" in raw[:8192]:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Checker:
    """Finds foreign references and dangling links in a set of files under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._anchors: dict[Path, set[str]] = {}

    def anchors(self, path: Path) -> set[str]:
        if path not in self._anchors:
            self._anchors[path] = anchors_of(read_text(path) or "")
        return self._anchors[path]

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def check_target(self, where: str, base: Path, target: str) -> str | None:
        """A problem with one link target (``path#anchor``, ``#anchor`` or ``path``) resolved from ``base``."""
        path_part, _, anchor = target.partition("#")
        dest = (base / path_part).resolve() if path_part else None
        if dest is not None:
            if not dest.is_relative_to(self.root):
                return f"{where}: {target} points outside the repository"
            if not dest.exists():
                return f"{where}: {target}: no such file in the repository"
        if anchor and dest is not None and dest.suffix == ".md" and anchor not in self.anchors(dest):
            return f"{where}: {target}: {self.rel(dest)} has no heading with the anchor #{anchor}"
        return None

    def problems(self, path: Path) -> list[str]:
        text = read_text(path)
        if text is None:
            return []
        name = self.rel(path)
        out: list[str] = []
        lines = text.splitlines()
        for no, line in enumerate(lines, 1):
            for why, pattern in FORBIDDEN.items():
                for m in pattern.finditer(line):
                    out.append(f"{name}:{no}: {m.group(0)!r}: {why}")
            for m in BARE_DOC.finditer(line):
                target = m.group(1) + (f"#{m.group(2)}" if m.group(2) else "")
                problem = self.check_target(f"{name}:{no}", self.root, target)
                if problem:
                    out.append(problem)
        if path.suffix == ".md":
            for no, line in prose_lines(text):
                for m in MD_LINK.finditer(line):
                    target = m.group(1)
                    if SCHEME.match(target):
                        continue
                    if target.startswith("#"):
                        if target[1:] not in self.anchors(path):
                            out.append(f"{name}:{no}: {target}: no heading with this anchor in the file")
                        continue
                    problem = self.check_target(f"{name}:{no}", path.parent, target)
                    if problem:
                        out.append(problem)
        return out


def repo_files(root: Path) -> list[Path]:
    """The files git tracks or would track (new ones too, ignored ones not); without git, a walk of the tree."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        files = [root / p for p in listed.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = [
            p
            for p in root.rglob("*")
            if p.is_file()
            and not SKIP_DIRS.intersection(p.relative_to(root).parts)
            and not any(part.endswith(".egg-info") for part in p.relative_to(root).parts)
        ]
    # a symlink (benchsvc/workloads) repeats files listed under their own name
    return sorted(p for p in files if p.is_file() and not p.is_symlink())


def check_repo(root: Path, files: list[Path] | None = None) -> list[str]:
    checker = Checker(root)
    return [
        problem
        for path in (files if files is not None else repo_files(root))
        for problem in checker.problems(path)
    ]


# ---------------------------------------------------------------------------------------------- the repository
def test_repository_is_self_contained() -> None:
    files = repo_files(ROOT)
    names = {p.relative_to(ROOT).as_posix() for p in files}
    # the scan really covers code, tests, docs, workload files and migrations
    assert {"README.md", "docs/kernel-history.md", "docs/design.md", "benchsvc/engine/cost.py"} <= names
    assert any(n.startswith("workloads/") for n in names) and any(n.startswith("migrations/") for n in names)
    problems = check_repo(ROOT, files)
    assert not problems, "dangling or foreign references:\n" + "\n".join(problems)


def test_docs_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for doc in ("docs/design.md", "docs/kernel-history.md"):
        assert f"]({doc})" in readme, f"README.md does not link {doc}"


# ---------------------------------------------------------------------------------------------- the checker itself
@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Deferred split", "deferred-split"),
        ("The v2–v4 forced flush", "the-v2v4-forced-flush"),
        ("5. Corrections to the expected counters", "5-corrections-to-the-expected-counters"),
        ("The mmu_gather and its capacity", "the-mmu_gather-and-its-capacity"),
        ("(g) PTE-mapped 2 MiB THP", "g-pte-mapped-2-mib-thp"),
        ("Observed on this host (6.18.44, x86-64, 2 CPUs)", "observed-on-this-host-61844-x86-64-2-cpus"),
        ("`benchsvc run` and [links](x.md)", "benchsvc-run-and-links"),
        ("Change points — across nights", "change-points--across-nights"),
    ],
)
def test_slug_is_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_duplicate_headings_are_numbered() -> None:
    text = '# Notes\n## Setup\n## Setup\n```\n## not a heading\n```\n<a id="here"></a>\n'
    assert anchors_of(text) == {"notes", "setup", "setup-1", "here"}


# The samples below are built from parts, so that this file itself holds no bad reference for the
# repository-wide test to find.
DOCS = "docs" + "/"
UP = ".." + "/"
README = "READ" + "ME.md"
SHARED = "sha" + "red"


def test_checker_finds_every_kind_of_bad_reference(tmp_path: Path) -> None:
    """A small repository with one problem of each kind, and the same links made good: only the bad ones are
    reported, each with its file and line."""
    label = "K" + "\u00a7" + "3 (a)"
    doc = DOCS + "guide.md"
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(
        "# Guide\n\n## Good section\n\nSee [above](#good-section) and [missing](#nowhere).\n"
        f"Also [the readme]({UP}{README}#usage), [gone]({UP}{README}#gone) and [a file](other.md).\n"
        "```\n[inside a fence](nowhere.md)\n```\n"
    )
    (tmp_path / "README.md").write_text(
        f"# Tool\n\n## Usage\n\n[guide]({doc}#good-section), [bad anchor]({doc}#bad), [web](https://example.org)\n"
    )
    (tmp_path / "mod.py").write_text(
        f'"""Counts as in {label}; details in {doc}#good-section and {doc}#no-such-section."""\n'
        f"# see {UP}{SHARED}/spec and {DOCS}absent.md\n"
    )
    problems = check_repo(tmp_path, sorted(p for p in tmp_path.rglob("*") if p.is_file()))
    text = "\n".join(problems)
    expected = {
        f"{doc}:5: #nowhere: no heading with this anchor in the file",
        f"{doc}:6: {UP}{README}#gone: README.md has no heading with the anchor #gone",
        f"{doc}:6: other.md: no such file in the repository",
        f"README.md:5: {doc}#bad: {doc} has no heading with the anchor #bad",
        f"mod.py:1: {label[:2]!r}: a section label of a document the repository does not contain",
        f"mod.py:1: {doc}#no-such-section: {doc} has no heading with the anchor #no-such-section",
        f"mod.py:2: {(UP + SHARED)!r}: a path outside the repository",
        f"mod.py:2: {DOCS}absent.md: no such file in the repository",
    }
    for line in sorted(expected):
        assert line in problems, f"not reported: {line}\nreported:\n{text}"
    # README's bad anchor is found both as a markdown link and as a root-relative mention; nothing else is
    # reported: not the good links, not the fenced block, not the web link
    assert set(problems) == expected, text


def test_checker_accepts_a_clean_repository(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Part one\n\n[b](b.md#b-title), [top](#a)\n")
    (tmp_path / "docs" / "b.md").write_text("# B title\n\nBack to [a](a.md#part-one).\n")
    (tmp_path / "code.py").write_text(f'"""See {DOCS}a.md#part-one and {DOCS}b.md."""\n')
    assert check_repo(tmp_path, sorted(p for p in tmp_path.rglob("*") if p.is_file())) == []
