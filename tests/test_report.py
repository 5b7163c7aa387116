"""The static site without a browser: same database in, same bytes out (but the generation time); user strings
escaped; only changed files rewritten; no reference to anything outside the page. (tests/test_report_browser.py
opens the pages in Chromium.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<script>window.__xss=1</script> "><img src=x onerror="window.__xss=2">'


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    shipped = (ROOT / "workloads" / "a-munmap-aligned.toml").read_text()
    layout_and_zaps = shipped[shipped.index("[layout]") :]
    hostile = tmp / "hostile.toml"
    hostile.write_text(f'description = """{HOSTILE}"""\ntags = ["<b>bold</b>"]\n\n{layout_and_zaps}')
    database = tmp / "x.db"
    for _ in range(2):
        proc = _cli(
            "run", "--mode", "debug", "--no-report", "-w", str(hostile), "-w", "c-straddle-munmap",
            "-V", "base65,base65-p1,v1,v2", "--db", str(database),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    return database


def _site(db: Path, out: Path) -> dict[str, bytes]:
    proc = _cli("report", "--db", str(db), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_database_same_bytes_but_the_generation_time(db: Path, tmp_path: Path) -> None:
    a, b = _site(db, tmp_path / "a"), _site(db, tmp_path / "b")
    assert sorted(a) == sorted(b)
    assert set(a) >= {
        "index.html",
        "lineage.html",
        "feed.atom",
        "workloads/hostile.html",
        "workloads/c-straddle-munmap.html",
    }
    for name in a:
        if name == "index.html":
            strip = re.compile(rb"Generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
            assert strip.sub(b"", a[name]) == strip.sub(b"", b[name])
        else:
            assert a[name] == b[name], name


def test_second_report_rewrites_only_what_changed(db: Path, tmp_path: Path) -> None:
    _site(db, tmp_path)
    proc = _cli("report", "--db", str(db), "--out", str(tmp_path))
    written, unchanged = map(
        int, re.search(r"\((\d+) files written, (\d+) unchanged\)", proc.stdout).groups()
    )
    assert written <= 1 and unchanged >= 4  # at most the index, for its generation time


def test_user_strings_are_escaped(db: Path, tmp_path: Path) -> None:
    site = _site(db, tmp_path)
    page = site["workloads/hostile.html"].decode()
    assert "<script>window.__xss" not in page
    assert '<img src=x onerror="window.__xss' not in page
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    index = site["index.html"].decode()
    assert "<script>window.__xss" not in index and "&lt;script&gt;window.__xss=1" in index


def test_pages_reference_nothing_outside(db: Path, tmp_path: Path) -> None:
    site = _site(db, tmp_path)
    for name, data in site.items():
        if not name.endswith(".html"):
            continue
        text = data.decode()
        assert not re.search(r"""<script[^>]*\bsrc=""", text), name
        assert not re.search(r"""<link[^>]*\bhref=["']https?:""", text), name
        assert "cdn.jsdelivr" not in text, name
        assert text.count("window.vegaEmbed=") <= 1, name  # the bundle inlined once per page
        assert len(data) < 5_000_000, name
