"""What a reader sees first, in headless Chromium: the index's "what changed tonight" per machine, the empty and
partial states, the canary's page, each machine's history apart; and no page of these sites asks for anything
outside the site.

Two machines' nights are written with the store's own ingest and analysed night by night as ``benchsvc run``
does (synthetic timings, as in ``tests/test_nightly.py``): on ``bench-a`` a code change makes ``w0`` 10% slower
and ``w1`` 10% faster a few nights before the last one; on ``bench-b`` the last night is 8% slower for every
series and the canary (one machine event). The partial site is one real debug night of v2 and v3 (v2's parent
v1 not measured); the empty site is a database without runs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_fixtures import (
    CHROMIUM,
    VIEWPORT_HEIGHT_PX,
    _benchsvc,
    _check,
    boxes,
    launch_browser,
    relative_html_link,
    visit,
)

from benchsvc.findings import analyze_run
from benchsvc.records import (
    EnvironmentInfo,
    MachineInfo,
    ProcessValues,
    ResultRecord,
    RunRecord,
    VersionInfo,
    WorkloadRef,
)
from benchsvc.store.db import open_store, write_session
from benchsvc.store.ingest import ingest, registry_versions

pytestmark = pytest.mark.slow

ENV = EnvironmentInfo("3.11.7", {"pyperf": "2.11.0"})
WORKLOADS = [WorkloadRef(f"w{i}", f"{i:064x}", "definition", f"workload {i}") for i in range(6)]
CANARY = WorkloadRef("canary", "c" * 64, "canary definition", "calibration")
VERSIONS = [*registry_versions(), VersionInfo("canary-1", "canary", None, "canary")]
NIGHTS, CODE_CHANGE = 30, 26
START = dt.datetime(2026, 3, 1, 2)
#: bench-a measures an hour after bench-b, so its run is the latest and its section comes first
HOSTS = {"bench-a": dt.timedelta(hours=1), "bench-b": dt.timedelta(0)}


def _values(level: float, rng: np.random.Generator) -> tuple[ProcessValues, ...]:
    return tuple(
        ProcessValues(tuple(float(level * (1 + e)) for e in rng.normal(0, 0.01, 5))) for _ in range(10)
    )


def _night(host: str, night: int, rng: np.random.Generator) -> tuple[RunRecord, list[ResultRecord]]:
    run = RunRecord(
        uuid=str(uuid.UUID(int=(1 << 32) * (host == "bench-b") + night + 1)),
        started_at=START + dt.timedelta(days=night) + HOSTS[host],
        machine=MachineInfo(host, "test cpu", 2, "6.18", "x86_64"),
        environment=ENV,
        benchsvc_version="0.1.0",
        git_commit=f"{night:040x}",
        mode="default",
        trigger="nightly",
        status="complete",
    )
    changed = host == "bench-a" and night >= CODE_CHANGE
    slow = 1.08 if host == "bench-b" and night == NIGHTS - 1 else 1.0
    code = {"benchsvc_engine_hash": ("b" if changed else "a") * 64}
    results = []
    for i, ref in enumerate(WORKLOADS):
        level = 0.001 * (1 + i) * slow * (1 + rng.normal(0, 0.008))
        if changed and i == 0:
            level *= 1.10
        if changed and i == 1:
            level *= 0.90
        results.append(ResultRecord("sim", "up612", ref, processes=_values(level, rng), pyperf_metadata=code))
    canary_level = 0.002 * slow * (1 + rng.normal(0, 0.005))
    results.append(ResultRecord("canary", "canary-1", CANARY, processes=_values(canary_level, rng)))
    return run, results


def _site(db: Path, out: Path) -> Path:
    _check(_benchsvc("report", "--db", str(db), "--out", str(out), cwd=out.parent), "benchsvc report")
    return out


def _need_chromium() -> None:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium, or set $BENCHSVC_TEST_CHROMIUM)")


@pytest.fixture(scope="module")
def fleet_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_chromium()
    work = tmp_path_factory.mktemp("fleet")
    db = work / "fleet.db"
    engine = open_store(str(db))
    rng = np.random.default_rng(5)
    first = True
    for night in range(NIGHTS):
        for host in sorted(HOSTS, key=lambda h: HOSTS[h]):
            run, results = _night(host, night, rng)
            with write_session(engine) as s:
                stored, _ = ingest(s, run, results, VERSIONS if first else ())
                run_id = stored.id
            first = False
            analyze_run(engine, run_id)
    engine.dispose()
    return _site(db, work / "site")


@pytest.fixture(scope="module")
def partial_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need_chromium()
    work = tmp_path_factory.mktemp("partial")
    db = work / "partial.db"
    proc = _benchsvc(
        "run", "--wait", "--mode", "debug", "--db", str(db), "-w", "a-munmap-aligned", "-V", "v2,v3", "--no-report",
        "-q", cwd=work,
    )  # fmt: skip
    _check(proc, "benchsvc run")
    return _site(db, work / "site")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_browser(p)
        yield chromium
        chromium.close()


def check_page(browser: Any, site: Path, rel: str) -> None:
    """No request outside the site (nor any network), no console error, every relative link resolves."""
    v = visit(browser, site / rel)
    root = site.resolve().as_uri() + "/"
    assert not v.network_violations(), f"{rel}: requests other than file://: {v.network_violations()}"
    assert all(u.startswith(root) for u in v.requests), f"{rel}: requests outside {root}: {v.requests}"
    assert not v.console_errors and not v.page_errors and not v.failed, (v.console_errors, v.page_errors)
    assert not v.charts_without_drawing, f"{rel}: charts not drawn: {v.charts_without_drawing}"
    for href in v.hrefs:
        link = relative_html_link(v.path, href)
        if link is not None:
            assert link[0].is_file(), f"{rel}: broken link {href}"


def _pages(site: Path) -> list[str]:
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))


# --- two machines ---------------------------------------------------------------------------------------


def test_index_first_screen_is_tonight_per_machine(fleet_site: Path, browser: Any) -> None:
    index = fleet_site / "index.html"
    sections = boxes(browser, index, "section.machine")
    assert [s["id"] for s in sections] == ["machine-bench-a", "machine-bench-b"]
    headings = boxes(browser, index, "h2")
    assert headings[0]["text"] == "The series, version by version"  # the version cards open the index
    assert headings[1]["text"] == "What changed tonight on bench-a"
    assert headings[2]["text"] == "What changed tonight on bench-b"
    later = [h for h in headings[3:] if h["top"] < sections[1]["top"]]
    assert later == [], "the second machine's section comes right after the first"

    a_rows = boxes(browser, index, "#machine-bench-a table.findings tbody tr")
    assert a_rows, "bench-a: no finding listed"
    first = a_rows[0]
    assert first["top"] < VIEWPORT_HEIGHT_PX, f"bench-a's first finding is below the first screen: {first}"
    cells = first["text"].split("\t")
    assert cells[0] == "worse" and cells[1] == "w0 · up612" and cells[2] == "simulator CPU time", cells
    assert cells[3].startswith("+") and "[" in cells[3], cells  # size with its interval
    change_nights = {f"{START + dt.timedelta(days=n, hours=1):%Y-%m-%d %H:%M}" for n in (25, 26, 27)}
    assert cells[4] in change_nights, cells  # the first night on the new level (the detector may say +-1)
    assert "→" in cells[6], cells  # the commits on both sides
    assert cells[8] == "chart", cells
    improvements = [r for r in a_rows if r["text"].startswith("better")]
    assert [r["text"].split("\t")[1] for r in improvements] == ["w1 · up612"]
    assert all(r["text"].split("\t")[1] in ("w0 · up612", "w1 · up612") for r in a_rows)

    b_rows = boxes(browser, index, "#machine-bench-b table.findings tbody tr")
    assert len(b_rows) == 1, b_rows
    cells = b_rows[0]["text"].split("\t")
    assert cells[1] == "whole machine" and cells[3].startswith("machine event: every series"), cells
    assert "slower tonight" in cells[3], cells

    text = boxes(browser, index, "#machine-bench-a > p")[0]["text"]
    assert f"{len(WORKLOADS)} results + canary" in text and f"night {NIGHTS} " in text, text


def test_finding_links_to_its_machines_history(fleet_site: Path, browser: Any) -> None:
    links = boxes(browser, fleet_site / "index.html", "#machine-bench-a table.findings a")
    v = visit(browser, fleet_site / "index.html")
    hrefs = [h for h in v.hrefs if "#history-" in h]
    assert "workloads/w0.html#history-bench-a" in hrefs, hrefs
    assert links
    page = fleet_site / "workloads" / "w0.html"
    charts = visit(browser, page).chart_ids
    assert [c for c in charts if c.startswith("history-")] == ["history-bench-a", "history-bench-b"]


def test_findings_and_feed_never_read_nan(fleet_site: Path, browser: Any) -> None:
    """A machine event without a note reads its status alone; the feed (strict XML) has an author, no
    ``nan`` and links only to pages and anchors of the site."""
    import re
    import xml.etree.ElementTree as ET

    from test_report_story import check_feed_links

    rows = boxes(browser, fleet_site / "index.html", "table.findings tbody tr")
    event = next(r for r in rows if "\twhole machine\t" in r["text"])
    assert event["text"].split("\t")[7] == "new", event["text"]
    assert not [r["text"] for r in rows if re.search(r"\bnan\b", r["text"], re.I)]
    raw = (fleet_site / "feed.atom").read_text(encoding="utf-8")
    assert not re.search(r"\bnan\b", raw, re.I)
    feed = ET.fromstring(raw.encode())
    atom = "{http://www.w3.org/2005/Atom}"
    assert feed.findtext(f"{atom}author/{atom}name") == "benchsvc"
    entries = feed.findall(f"{atom}entry")
    assert entries and all(e.find(f"{atom}link") is not None for e in entries)
    check_feed_links(fleet_site)


def test_canary_page_says_what_the_canary_is(fleet_site: Path, browser: Any) -> None:
    page = fleet_site / "workloads" / "canary.html"
    v = visit(browser, page)
    assert "This is the canary" in v.inner_text
    assert "counters" not in v.chart_ids and "modeled (µs)" not in v.inner_text
    assert "bad_pte" not in v.inner_text  # no empty counter rows


def test_fleet_pages_stay_inside_the_site(fleet_site: Path, browser: Any) -> None:
    for rel in _pages(fleet_site):
        check_page(browser, fleet_site, rel)


# --- one night, a parent missing ------------------------------------------------------------------------


def test_partial_states_say_what_is_missing(partial_site: Path, browser: Any) -> None:
    missing = boxes(browser, partial_site / "lineage.html", "#missing-v2")
    assert len(missing) == 1 and missing[0]["top"] < VIEWPORT_HEIGHT_PX, missing
    assert "its parent v1 was not measured in this run" in missing[0]["text"]
    assert "benchsvc run -V v1,v2" in missing[0]["text"]
    state = boxes(browser, partial_site / "index.html", "#machine-vm .state, section.machine .state")
    assert any("First night of this machine's history" in s["text"] for s in state), state
    history = visit(browser, partial_site / "workloads" / "a-munmap-aligned.html").inner_text
    assert "One night so far on" in history and "the history starts with the second night" in history


def test_partial_pages_stay_inside_the_site(partial_site: Path, browser: Any) -> None:
    for rel in _pages(partial_site):
        check_page(browser, partial_site, rel)


# --- no runs at all -------------------------------------------------------------------------------------


def test_no_runs_at_all(tmp_path: Path, browser: Any) -> None:
    from benchsvc.report.collect import collect
    from benchsvc.report.site import build_site, write_site
    from benchsvc.store.db import read_session

    engine = open_store(str(tmp_path / "empty.db"))
    try:
        with read_session(engine) as s:
            data = collect(s)
    finally:
        engine.dispose()
    out = tmp_path / "site"
    write_site(build_site(data), out)
    text = visit(browser, out / "index.html").inner_text
    assert "No runs yet" in text and "benchsvc run" in text and "benchsvc import" in text
    for rel in _pages(out):
        check_page(browser, out, rel)


def test_nightly_note_with_control_characters_keeps_the_feed_well_formed(
    fleet_site: Path, tmp_path: Path
) -> None:
    """The feed holds the nightly findings and machine events, each naming its machine; a note with
    characters XML cannot carry is shown without them (and the feed still parses)."""
    import json
    import shutil
    import xml.etree.ElementTree as ET

    from test_report import CONTROL_NOTE, CONTROL_NOTE_SHOWN

    db = tmp_path / "fleet.db"
    shutil.copyfile(fleet_site.parent / "fleet.db", db)
    proc = _benchsvc("regressions", "--all", "--format", "json", "--db", str(db), cwd=tmp_path)
    _check(proc, "benchsvc regressions")
    found = json.loads(proc.stdout)
    nightly = [r for r in found if r["axis"] == "nightly"]
    assert nightly, found
    _check(
        _benchsvc(
            "regressions", "ack", str(nightly[0]["id"]), "--note", CONTROL_NOTE, "--db", str(db), cwd=tmp_path
        ),
        "benchsvc regressions ack",
    )
    site = _site(db, tmp_path / "site")
    feed = ET.fromstring((site / "feed.atom").read_bytes())
    atom = "{http://www.w3.org/2005/Atom}"
    titles = [e.findtext(f"{atom}title") or "" for e in feed.iter(f"{atom}entry")]
    wanted = [
        r for r in found if r["axis"] in ("nightly", "machine") and r["status"] in ("new", "acknowledged")
    ]
    assert len(titles) == len(wanted) and all(t.startswith(("bench-a: ", "bench-b: ")) for t in titles), (
        titles
    )
    contents = [e.findtext(f"{atom}content") or "" for e in feed.iter(f"{atom}entry")]
    assert any(f"note: {CONTROL_NOTE_SHOWN}" in c for c in contents), contents
