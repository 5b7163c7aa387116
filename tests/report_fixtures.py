"""A real generated report site, and a headless-Chromium harness that visits its pages offline.

The site is built the way a user builds it: ``benchsvc run`` (debug mode, three "nights") on two shipped
workloads plus a hostile one, then ``benchsvc report``, each in a subprocess. The browser is Debian's
chromium driven by Playwright with ``executable_path`` (never
``playwright install``). :func:`visit` loads one page once and records everything the tests look at.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --- The data behind the site ---

VERSIONS = "base65,base65-p1,v1,v2,up612"
SHIPPED_WORKLOADS = ("a-munmap-aligned", "c-straddle-munmap")
NIGHTS = 3

XSS_WORKLOAD = "xss-test"
XSS_SCRIPT = "<script>window.__xss=1</script>"
XSS_ATTRIBUTE = '"><img src=x onerror="window.__xss=2">'
XSS_DESCRIPTION = f"{XSS_SCRIPT} {XSS_ATTRIBUTE}"
XSS_TAG = "<b>bold</b>"
HOSTILE_STRINGS = (XSS_SCRIPT, XSS_ATTRIBUTE, XSS_TAG)

WORKLOADS = (*SHIPPED_WORKLOADS, XSS_WORKLOAD)
#: Every page the site must have, relative to the output directory.
EXPECTED_PAGES = ("index.html", *(f"workloads/{name}.html" for name in WORKLOADS), "lineage.html")

# --- The browser ---

CHROMIUM = os.environ.get("BENCHSVC_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT_HEIGHT_PX = 900  # the browser window's height: what "the first screen" of a page means here
LOAD_TIMEOUT_MS = 30_000
CHART_TIMEOUT_MS = 15_000

SUBPROCESS_TIMEOUT_S = 120
#: a fixture's ``benchsvc run`` waits (``--wait``) for another run holding the machine's lock: other work on a
#: shared machine may hold it for minutes, and the fixtures' debug-mode timings are not what they check
RUN_TIMEOUT_S = 1200


def _benchsvc(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BENCHSVC_DB"}
    env["COLUMNS"] = "200"
    waits = args[:1] == ("run",) and "--wait" in args
    return subprocess.run(
        [sys.executable, "-m", "benchsvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S if waits else SUBPROCESS_TIMEOUT_S,
    )


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise AssertionError(
            f"{what} failed with exit code {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )


def report_command_available(cwd: Path) -> bool:
    """True when ``benchsvc report --help`` answers (the command is wired into the CLI)."""
    return _benchsvc("report", "--help", cwd=cwd).returncode == 0


def write_xss_workload(directory: Path) -> Path:
    """``xss-test.toml``: the shipped ``a-munmap-aligned`` with a hostile description and tags."""
    from benchsvc.workload import shipped_workloads_dir

    lines = (shipped_workloads_dir() / "a-munmap-aligned.toml").read_text(encoding="utf-8").splitlines()
    replaced = 0
    for i, line in enumerate(lines):
        if line.startswith("description = "):
            # A TOML literal string: no escapes, so the double quotes go through as they are.
            lines[i] = f"description = '{XSS_DESCRIPTION}'"
            replaced += 1
        elif line.startswith("tags = "):
            lines[i] = f"tags = ['{XSS_TAG}', 'canonical']"
            replaced += 1
    assert replaced == 2, "a-munmap-aligned.toml: expected one description line and one tags line"
    path = directory / f"{XSS_WORKLOAD}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_database(db: Path, workdir: Path, nights: int = NIGHTS) -> None:
    """``nights`` nightly debug runs of :data:`VERSIONS` on the shipped workloads and ``xss-test``."""
    xss = write_xss_workload(workdir)
    workloads = [arg for name in (*SHIPPED_WORKLOADS, str(xss)) for arg in ("-w", name)]
    for night in range(1, nights + 1):
        proc = _benchsvc(
            "run", "--wait", "--mode", "debug", "--db", str(db), *workloads, "-V", VERSIONS,
            "--trigger", "nightly", "--no-report", "-q", cwd=workdir,
        )  # fmt: skip
        _check(proc, f"benchsvc run (night {night})")


def build_site(db: Path, out: Path, workdir: Path) -> None:
    _check(_benchsvc("report", "--db", str(db), "--out", str(out), cwd=workdir), "benchsvc report")


# --- One page, loaded once ---


@dataclass(repr=False)
class PageVisit:
    """What one load of one page showed."""

    path: Path
    url: str
    requests: list[str] = field(default_factory=list)  # every request the page (or a frame of it) made
    blocked: list[str] = field(default_factory=list)  # non-file requests that the route aborted
    local_scripts: list[str] = field(default_factory=list)  # file:// scripts other than the page itself
    failed: list[str] = field(default_factory=list)  # file:// requests that failed
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    chart_ids: list[str] = field(default_factory=list)
    charts_without_drawing: list[str] = field(default_factory=list)  # "id: what the div held instead"
    inner_text: str = ""
    text_content: str = ""
    xss_type: str = ""  # typeof window.__xss after load
    injected: dict[str, int] = field(default_factory=dict)  # elements an escape failure would create
    hrefs: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # short, for pytest's assertion messages
        return f"PageVisit({self.url})"

    def network_violations(self) -> list[str]:
        outside = [u for u in self.requests if not u.startswith("file://")]
        return sorted(set(outside) | set(self.blocked))


_CHARTS_DRAWN = """() => {
    const charts = [...document.querySelectorAll('.chart')];
    return charts.every(c => c.querySelector('svg, canvas') !== null);
}"""

_CHARTS_STATE = """() => [...document.querySelectorAll('.chart')].map(c => ({
    id: c.id || '(no id)',
    drawn: c.querySelector('svg, canvas') !== null,
    html: c.innerHTML.slice(0, 300),
}))"""

_INJECTED = """() => ({
    'script window.__xss=1': [...document.scripts].filter(s => s.text.trim() === 'window.__xss=1').length,
    'img[src=x]': document.querySelectorAll('img[src="x"]').length,
    '[onerror]': document.querySelectorAll('[onerror]').length,
    '<b>bold</b> element': [...document.querySelectorAll('b')].filter(b => b.textContent === 'bold').length,
})"""


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def visit(browser: Any, path: Path) -> PageVisit:
    """Load ``path`` from the file system in a fresh context with every non-file request aborted."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    result = PageVisit(path=path, url=path.resolve().as_uri())
    context = browser.new_context(
        service_workers="block", viewport={"width": 1280, "height": VIEWPORT_HEIGHT_PX}
    )
    try:

        def route(r: Any) -> None:
            if r.request.url.startswith("file://"):
                r.continue_()
            else:
                result.blocked.append(r.request.url)
                r.abort()

        def on_request(request: Any) -> None:
            result.requests.append(request.url)
            if (
                request.url.startswith("file://")
                and request.url != result.url
                and request.resource_type == "script"
            ):
                result.local_scripts.append(request.url)

        def on_request_failed(request: Any) -> None:
            if request.url.startswith("file://"):
                result.failed.append(f"{request.url}: {request.failure}")

        def on_console(msg: Any) -> None:
            if msg.type == "error":
                loc = msg.location or {}
                result.console_errors.append(
                    f"{msg.text} (at {loc.get('url', '?')}:{loc.get('lineNumber', '?')})"
                )

        def on_dialog(dialog: Any) -> None:
            result.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        context.route("**/*", route)
        context.on("request", on_request)
        context.on("requestfailed", on_request_failed)
        page = context.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda exc: result.page_errors.append(str(exc)))
        page.on("dialog", on_dialog)

        page.goto(result.url, wait_until="load", timeout=LOAD_TIMEOUT_MS)
        result.chart_ids = page.eval_on_selector_all(".chart", "els => els.map(e => e.id || '(no id)')")
        if result.chart_ids:
            with contextlib.suppress(PlaywrightTimeout):  # recorded below, chart by chart
                page.wait_for_function(_CHARTS_DRAWN, timeout=CHART_TIMEOUT_MS)
        for chart in page.evaluate(_CHARTS_STATE):
            if not chart["drawn"]:
                result.charts_without_drawing.append(f"#{chart['id']}: {chart['html']!r}")
        page.wait_for_timeout(100)  # let a late console error or rejected promise arrive
        result.inner_text = page.inner_text("body")
        result.text_content = page.evaluate("() => document.body.textContent")
        result.xss_type = page.evaluate("() => typeof window.__xss")
        result.injected = page.evaluate(_INJECTED)
        result.hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    finally:
        context.close()
    return result


_BOXES = """sel => [...document.querySelectorAll(sel)].map(e => ({
    id: e.id, text: e.innerText, top: e.getBoundingClientRect().top + window.scrollY,
}))"""


def boxes(browser: Any, path: Path, selector: str) -> list[dict[str, Any]]:
    """Every element matching ``selector`` on the page, in document order: id, visible text and top (pixels
    from the top of the page; below :data:`VIEWPORT_HEIGHT_PX` is not on the first screen). Offline, as
    :func:`visit`."""
    context = browser.new_context(viewport={"width": 1280, "height": VIEWPORT_HEIGHT_PX})
    try:
        context.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
        page = context.new_page()
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=LOAD_TIMEOUT_MS)
        return list(page.evaluate(_BOXES, selector))
    finally:
        context.close()


def relative_html_link(page: Path, href: str) -> tuple[Path, str] | None:
    """(file, fragment) of a relative ``.html`` link (or a ``#fragment`` on ``page``); None for any other link."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(href)
    if parts.scheme or parts.netloc or parts.path.startswith("/"):
        return None
    fragment = unquote(parts.fragment)
    if not parts.path:
        return (page.resolve(), fragment) if fragment else None
    if not parts.path.endswith(".html"):
        return None
    return (page.parent / unquote(parts.path)).resolve(), fragment


@functools.cache
def element_ids(path: Path) -> frozenset[str]:
    """The ``id`` values (and ``<a name>``) in the HTML file: what a ``#fragment`` can point to."""
    from html.parser import HTMLParser

    ids: set[str] = set()

    class _Ids(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for key, value in attrs:
                if value and (key == "id" or (key == "name" and tag == "a")):
                    ids.add(value)

    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return frozenset(ids)
