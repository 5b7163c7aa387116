"""The static site without a browser: same database in, same bytes out (but the generation time); user strings
escaped; only changed files rewritten; no reference to anything outside the page. (tests/test_report_browser.py
opens the pages in Chromium.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<script>window.__xss=1</script> "><img src=x onerror="window.__xss=2">'


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args], capture_output=True, text=True, timeout=1200
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
            "run", "--wait", "--mode", "debug", "--no-report", "-w", str(hostile), "-w", "c-straddle-munmap",
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
    """Scripts and styles come from the site's own assets/ (the Vega bundle once per site), under a
    Content-Security-Policy that runs no inline script; nothing is fetched from elsewhere."""
    site = _site(db, tmp_path)
    assert site["assets/vega.js"].count(b"window.vegaEmbed=") == 1
    for name, data in site.items():
        if not name.endswith(".html"):
            continue
        text = data.decode()
        up = "../" * name.count("/")
        sources = re.findall(r'<script[^>]*\bsrc="([^"]*)"', text)
        assert sources == [f"{up}assets/vega.js", f"{up}assets/charts.js"], (name, sources)
        inline = re.findall(r"<script(?![^>]*\b(?:src=|type=\"application/json\"))[^>]*>", text)
        assert inline == [], (name, inline)  # the CSP below would refuse them
        assert "script-src 'self' 'unsafe-eval';" in text and "'unsafe-inline'; img-src" in text, name
        assert re.findall(r'<link[^>]*\bhref="([^"]*)"', text) == [f"{up}assets/site.css"], name
        assert "window.vegaEmbed=" not in text and "cdn.jsdelivr" not in text, name
        assert len(data) < 500_000, name


# --- hostile names, control characters, --out, atomic publishing --------------------------------------


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    return lines[0]


#: names an old database may hold (import refuses them now): each must get a page inside workloads/
BAD_NAMES = ("../../../PWNED", "w" * 255, "two words/and a <b>", ".hidden", "-rf")


@pytest.fixture(scope="module")
def old_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database written before the name rule: results of workloads whose names are paths, too long, ..."""
    import datetime as dt
    import uuid

    from benchsvc.engine import simulate
    from benchsvc.records import (
        EnvironmentInfo,
        MachineInfo,
        ProcessValues,
        ResultRecord,
        RunRecord,
        WorkloadRef,
    )
    from benchsvc.store.db import open_store, write_session
    from benchsvc.store.ingest import ingest, registry_versions
    from benchsvc.workload import resolve

    database = tmp_path_factory.mktemp("old") / "old.db"
    spec = resolve("a-munmap-aligned")
    sim = simulate(spec, "v1")
    results = [
        ResultRecord(
            engine="sim",
            version="v1",
            workload=WorkloadRef(name, spec.content_hash, spec.source_text, f"workload {name}"),
            counters=sim.counters,
            modeled_ns=sim.modeled_ns,
            processes=(ProcessValues((1e-4, 1.1e-4)), ProcessValues((1.2e-4, 1e-4))),
        )
        for name in (*BAD_NAMES, "good")
    ]
    run = RunRecord(
        uuid=str(uuid.uuid4()),
        started_at=dt.datetime(2026, 11, 24, 3, 0),
        machine=MachineInfo("bench-a", "cpu", 2, "6.12.0", "x86_64"),
        environment=EnvironmentInfo("3.11.7", {"pyperf": "2.11.0"}),
        benchsvc_version="0.1.0",
        git_commit=None,
        status="complete",
    )
    engine = open_store(str(database))
    try:
        with write_session(engine) as s:
            ingest(s, run, results, registry_versions())
    finally:
        engine.dispose()
    return database


def test_stored_names_never_leave_the_site(old_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "er" / "site"
    site = _site(old_db, out)
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and out not in p.parents]
    assert outside == []  # no PWNED.html above --out, nothing anywhere else
    pages = sorted(name for name in site if name.startswith("workloads/"))
    assert "workloads/good.html" in pages
    safe = [p for p in pages if p != "workloads/good.html"]
    assert len(safe) == len(BAD_NAMES)
    assert all(re.fullmatch(r"workloads/_w-[0-9a-f]{16}\.html", p) for p in safe), safe
    index = site["index.html"].decode()
    links = re.findall(r'href="(workloads/[^"]+)"', index)
    assert sorted(links) == pages  # every page linked from the index, every link to a page
    for name in BAD_NAMES:  # the page of each name is the one that shows it
        title = f"<h1>Workload {html_escape(name)}</h1>"
        assert sum(title in site[p].decode() for p in safe) == 1, name


def html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


CONTROL_NOTE = "bad\x01\x08 bytes\x1b[31m, a form feed\x0c, a NUL-free DEL\x7f and \ufffe end"
#: the note as the pages and the feed show it: the characters XML cannot carry dropped
CONTROL_NOTE_SHOWN = "bad bytes[31m, a form feed, a NUL-free DEL\x7f and  end"


def test_control_characters_in_a_note_of_a_lineage_finding(db: Path, tmp_path: Path) -> None:
    """A lineage finding's note is shown beside its row in the lineage view; lineage differences are not in
    the feed (tests/test_report_screens.py checks a nightly finding's note there)."""
    import json
    import shutil
    import xml.etree.ElementTree as ET

    copy = tmp_path / "x.db"
    shutil.copyfile(db, copy)
    proc = _cli("regressions", "--all", "--format", "json", "--db", str(copy))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert {r["axis"] for r in found} == {"lineage"}
    proc = _cli("regressions", "ack", str(found[0]["id"]), "--note", CONTROL_NOTE, "--db", str(copy))
    assert proc.returncode == 0, proc.stderr
    site = _site(copy, tmp_path / "out")
    assert CONTROL_NOTE_SHOWN in html_unescape(site["lineage.html"].decode())
    feed = ET.fromstring(site["feed.atom"])
    assert list(feed.iter("{http://www.w3.org/2005/Atom}entry")) == []


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


def test_out_that_cannot_hold_a_site_is_one_line(db: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    line = _one_line_error(_cli("report", "--db", str(db), "--out", str(a_file)))
    assert line == f"Error: --out {a_file}: is a file, not a directory — give a directory, or remove the file"
    assert a_file.read_text() == "not a directory"
    line = _one_line_error(_cli("report", "--db", str(db), "--out", "/proc/self"))
    assert line.startswith("Error: --out /proc/self: is not empty and is not a report site benchsvc wrote")
    line = _one_line_error(_cli("report", "--db", str(db), "--out", str(a_file / "sub")))
    assert line.startswith(f"Error: --out {a_file / 'sub'}: cannot create {a_file}: ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory whatever its mode")
def test_out_in_an_unwritable_directory_is_one_line(db: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = _one_line_error(_cli("report", "--db", str(db), "--out", str(locked / "site")))
        assert line.startswith(f"Error: --out {locked / 'site'}: cannot create a directory in {locked}: ")
    finally:
        locked.chmod(0o755)


def test_run_checks_the_report_directory_before_measuring(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    database = tmp_path / "never.db"
    proc = _cli("run", "--mode", "debug", "-w", "a-munmap-aligned", "-V", "v1", "--db", str(database),
                "--report-dir", str(a_file))  # fmt: skip
    line = _one_line_error(proc)
    assert line.startswith(f"Error: --report-dir {a_file}: is a file, not a directory")
    assert proc.stdout == "" and not database.exists()  # nothing measured, no database created
    proc = _cli("run", "--mode", "debug", "-w", "a-munmap-aligned", "-V", "v1", "--db", str(database),
                "--report-dir", "/proc/self/reports")  # fmt: skip
    assert _one_line_error(proc).startswith("Error: --report-dir /proc/self/reports: ")
    assert not database.exists()


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_ino)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_publishing_keeps_unchanged_files_and_other_files(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "site"
    _site(db, out)
    (out / "robots.txt").write_text("User-agent: *\n")  # a file of someone else's
    (out / "workloads" / "gone.html").write_text("a page of a workload no longer run")
    first = _tree(out)
    proc = _cli("report", "--db", str(db), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    second = _tree(out)
    assert sorted(second) == sorted(first)  # nothing lost
    for name, (data, inode) in second.items():
        if name != "index.html":  # the generation time changes
            assert (data, inode) == first[name], name  # the very same file: not rewritten
    assert [p.name for p in tmp_path.iterdir()] == ["site"]  # no temporary directory left


def test_interrupted_publishing_leaves_the_previous_site(db: Path, tmp_path: Path) -> None:
    """Ctrl-C while the new site is being written: the site is the previous one byte for byte, or, when the
    interrupt came too late, the whole new one; never a mix, and no temporary directory is left. The first
    two attempts are interrupted halfway through writing (the publisher waits there for the test, through
    BENCHSVC_TEST_PUBLISH_HOLD); the third as soon as its temporary directory appears, wherever it then is."""
    import json
    import os
    import shutil
    import signal
    import time

    copy = tmp_path / "x.db"
    shutil.copyfile(db, copy)
    proc = _cli("regressions", "--all", "--format", "json", "--db", str(copy))
    regression = json.loads(proc.stdout)[0]["id"]
    out = tmp_path / "site"
    _site(copy, out)
    previous = {k: v[0] for k, v in _tree(out).items()}
    caught = 0
    for attempt in range(3):
        note = f"attempt-{attempt}"  # the new site differs from the previous one in the lineage view
        assert _cli("regressions", "ack", str(regression), "--note", note, "--db", str(copy)).returncode == 0
        hold = tmp_path / f"hold-{attempt}"
        env = dict(os.environ, BENCHSVC_TEST_PUBLISH_HOLD=str(hold)) if attempt < 2 else None
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchsvc", "report", "--db", str(copy), "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            started = any(p.name.startswith(".site.new-") for p in tmp_path.iterdir())
            if hold.exists() if env else started:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.0005)
        proc.communicate(timeout=120)
        site = {k: v[0] for k, v in _tree(out).items()}
        assert sorted(site) == sorted(previous)
        if site == previous:
            caught += proc.returncode != 0
        else:
            assert env is None, "interrupted halfway, yet the new site was published"
            assert note.encode() in site["lineage.html"]
            previous = site
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary directory
    assert caught >= 2, "never interrupted while publishing"
