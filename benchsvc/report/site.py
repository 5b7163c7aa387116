"""The static report site: index, one page per workload, the version lineage, an Atom feed.

Input is a :class:`ReportData` of pre-aggregated pandas DataFrames (built from the store by
:mod:`benchsvc.report.collect`); nothing here touches the database. Every page is self-contained and opens
from the file system with no network: the Vega/Vega-Lite/vega-embed JavaScript (from vl-convert) is inlined
once per page and each chart is a Vega-Lite spec embedded as JSON. Every user-supplied string is escaped.
The same data gives the same bytes, except the generation time printed on the index page; a file whose
bytes would not change is not rewritten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from benchsvc import __version__
from benchsvc.analysis.describe import finding_size, signed_count
from benchsvc.limits import is_usable_name

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1,h2,h3{font-weight:600} table{border-collapse:collapse;margin:.5em 0 1.5em} td,th{border-bottom:1px solid #ddd;
padding:3px 8px;text-align:left;vertical-align:top} th{background:#f4f4f4} .num{text-align:right;font-variant-numeric:tabular-nums}
.worse{color:#b00020} .better{color:#1b7a2c} .muted{color:#666} nav a{margin-right:1em} pre{background:#f7f7f7;padding:.6em;
overflow:auto} .chart{margin:1em 0} code{background:#f2f2f2;padding:0 3px}
"""


@dataclass
class ReportData:
    """Everything a site shows, as DataFrames (see :func:`benchsvc.report.collect.collect`)."""

    latest_run: dict[str, Any] | None
    runs: pd.DataFrame
    versions: pd.DataFrame  # id, parent, title, source
    workloads: pd.DataFrame  # name, content_hash, description, tags, definition
    lineage: pd.DataFrame  # compare_lineage of the latest run, all metrics
    results: (
        pd.DataFrame
    )  # latest run: workload, version, status, mean_s, ci_low_s, ci_high_s, modeled_ns, c_*, warnings
    history: pd.DataFrame  # workload, version, run_id, started_at, mean_s (one series per workload/version)
    changes: pd.DataFrame  # workload, version, run_id, started_at, effect (nightly change points)
    regressions: pd.DataFrame  # list_regressions (new and acknowledged)
    filters: dict[str, str] = field(default_factory=dict)


@cache
def vega_bundle() -> str:
    import vl_convert

    return str(vl_convert.javascript_bundle()).replace("</script", "<\\/script")  # type: ignore[call-arg]


#: characters XML 1.0 does not allow (control characters but tab, newline, return; lone surrogates; U+FFFE/F)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _e(value: Any) -> str:
    """Text for HTML and the Atom feed: escaped, with the characters XML cannot carry dropped (a note with a
    control character would make feed.atom ill-formed; a lone surrogate cannot even be written as UTF-8)."""
    return html.escape(_NOT_XML.sub("", "" if value is None else str(value)), quote=True)


def _num(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and digits == 0):
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


def workload_page(name: str) -> str:
    """The page of a workload, relative to the site: ``workloads/NAME.html`` for a name by the name rule
    (benchsvc.limits), else ``workloads/_w-<sha256 prefix>.html`` (an old database may hold any name; the
    page never leaves ``workloads/``, and the rule's names start with a letter or digit, so never collide)."""
    if is_usable_name(name):
        return f"workloads/{name}.html"
    digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"workloads/_w-{digest}.html"


class _Page:
    def __init__(self, title: str, depth: int = 0) -> None:
        self.title = title
        self.root = "../" * depth
        self.parts: list[str] = []
        self.charts: list[tuple[str, dict[str, Any]]] = []

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def chart(self, chart_id: str, spec: Any) -> None:
        # no JSON-schema validation at publish time: it dominates the build, and the specs are fixed code that
        # the browser tests render (tests/test_report_browser.py)
        self.charts.append((chart_id, spec.to_dict(validate=False) if hasattr(spec, "to_dict") else spec))
        self.add(f'<div class="chart" id="{_e(chart_id)}"></div>')

    def render(self, footer: str = "") -> str:
        nav = (
            f'<nav><a href="{self.root}index.html">Overview</a><a href="{self.root}lineage.html">Version lineage</a>'
            f'<a href="{self.root}feed.atom">Atom feed</a></nav>'
        )
        scripts = ""
        if self.charts:
            embeds = "\n".join(
                f"vegaEmbed({json.dumps('#' + cid)}, {_json(spec)}, {{actions: false, renderer: 'svg'}})"
                ".catch(e => console.error(e));"
                for cid, spec in self.charts
            )
            scripts = f"<script>{vega_bundle()}</script>\n<script>\n{embeds}\n</script>"
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline' "
            f"'unsafe-eval'; style-src 'unsafe-inline'; img-src data:\">"
            f"<title>{_e(self.title)} · benchsvc</title><style>{CSS}</style></head><body>\n{nav}\n"
            f"<h1>{_e(self.title)}</h1>\n"
            + "\n".join(self.parts)
            + f'\n<p class="muted">{footer}</p>\n{scripts}\n</body></html>\n'
        )


def _json(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")


def _table(rows: list[list[str]], header: list[str], row_ids: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for i, cells in enumerate(rows):
        rid = f' id="{_e(row_ids[i])}"' if row_ids else ""
        body.append(f"<tr{rid}>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(text: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def _regression_rows(df: pd.DataFrame, root: str) -> tuple[list[list[str]], list[str]]:
    header = [
        "id",
        "axis",
        "status",
        "direction",
        "run",
        "workload",
        "version",
        "against",
        "metric",
        "size",
        "note",
    ]
    rows = []
    for r in df.itertuples(index=False):
        size = finding_size(r.details, r.effect, r.ci_low, r.ci_high)
        link = f"{root}{workload_page(r.workload)}#{quote(r.version)}-{quote(r.metric)}"
        rows.append(
            [
                _cell(r.id, "num"),
                _cell(r.axis),
                _cell(r.status),
                _cell(r.direction, r.direction),
                _cell(r.run_id, "num"),
                f'<td><a href="{_e(link)}">{_e(r.workload)}</a></td>',
                _cell(r.version),
                _cell(r.baseline or "previous nights"),
                _cell(r.metric),
                _cell(size, "num"),
                _cell(r.note or ""),
            ]
        )
    return rows, header


def build_site(data: ReportData, *, generated_at: dt.datetime | None = None) -> dict[str, str]:
    """Every file of the site: relative path -> text."""
    import altair as alt

    alt.data_transformers.disable_max_rows()  # the data is pre-aggregated; the pages stay small
    files: dict[str, str] = {}
    files["index.html"] = _index(data, generated_at)
    for w in data.workloads.itertuples(index=False):
        files[workload_page(w.name)] = _workload(data, w)
    files["lineage.html"] = _lineage(data)
    files["feed.atom"] = _feed(data)
    return files


def write_site(files: dict[str, str], out: Path, option: str = "--out") -> tuple[int, int]:
    """Publish the site atomically (:func:`benchsvc.report.publish.publish_site`); returns (written,
    unchanged): unchanged files are hard links to the previous site's, not rewritten."""
    from benchsvc.report.publish import publish_site

    return publish_site(files, out, option)


def _noise_paragraph(run: dict[str, Any]) -> str:
    """The run's noise floor (its A/A intervals and the canary's spread), shown beside its timing findings."""
    if not run.get("noise_floor"):
        return ""
    return (
        f'<p class="noise"><b>Timing noise of this run</b> — {_e(run["noise_floor"])}. A timing difference '
        "smaller than this floor is not one to act on.</p>"
    )


def _index(data: ReportData, generated_at: dt.datetime | None) -> str:
    import altair as alt

    page = _Page("benchsvc: batch-zap patch versions")
    run = data.latest_run
    if run is None:
        page.add("<p>No runs yet: run <code>benchsvc run</code>.</p>")
        return page.render()
    page.add(
        f"<p>Latest run <b>{_e(run['id'])}</b>: {_e(run['started_at'])} UTC, <b>{_e(run['status'])}</b>, "
        f"{_e(run['mode'])} mode, {_e(run['results'])} results, benchsvc {_e(run['benchsvc_version'])} "
        f"<code>{_e((run['git_commit'] or '')[:12])}</code>.</p>"
        f"<p>Machine: {_e(run['hostname'])} ({_e(run['cpu_model'])}, {_e(run['cpu_count'])} CPUs, Linux "
        f"{_e(run['kernel'])}, {_e(run['arch'])}). Environment: Python {_e(run['python_version'])}, "
        + ", ".join(f"{_e(k)} {_e(v)}" for k, v in sorted(run["packages"].items()))
        + ".</p>"
        + _noise_paragraph(run)
    )
    open_regs = (
        data.regressions[data.regressions["direction"] == "worse"]
        if not data.regressions.empty
        else data.regressions
    )
    page.add(f"<h2>Open regressions ({len(open_regs)})</h2>")
    if open_regs.empty:
        page.add("<p>None.</p>")
    else:
        rows, header = _regression_rows(open_regs, "")
        page.add(_table(rows, header))
    page.add("<h2>Change against the parent version (latest run)</h2>")
    lin = data.lineage
    if not lin.empty:
        heat = lin[["workload", "version", "baseline", "metric", "ratio", "delta", "direction"]].copy()
        heat["log2_ratio"] = heat["ratio"].map(lambda r: _clip_log2(r))
        heat["label"] = heat["ratio"].map(lambda r: "∞" if r == float("inf") else f"{r:.3g}×")
        metrics = sorted(heat["metric"].unique(), key=lambda m: (m != "time", m != "modeled_ns", m))
        pick = alt.param(
            name="metric",
            value=metrics[0],
            bind=alt.binding_select(options=metrics, name="metric "),
        )
        chart = (
            alt.Chart(heat)
            .mark_rect()
            .encode(
                x=alt.X("version:N", sort=list(data.versions["id"])),
                y=alt.Y("workload:N"),
                color=alt.Color(
                    "log2_ratio:Q",
                    scale=alt.Scale(scheme="redblue", domain=[-3, 3], reverse=True),
                    title="log2(version / parent)",
                ),
                tooltip=["workload", "version", "baseline", "metric", "label", "delta", "direction"],
            )
            .add_params(pick)
            .transform_filter(alt.datum.metric == pick)
            .properties(width=520, height=22 * max(1, heat["workload"].nunique()))
        )
        page.chart("matrix", chart)
        page.add(
            '<p class="muted">Red: more than the parent (worse), blue: less. Time is the ratio of pyperf means.</p>'
        )
    page.add("<h2>Workloads</h2>")
    rows = [
        [
            f'<td><a href="{_e(workload_page(w.name))}">{_e(w.name)}</a></td>',
            _cell(", ".join(w.tags)),
            _cell(w.description),
        ]
        for w in data.workloads.itertuples(index=False)
    ]
    page.add(_table(rows, ["workload", "tags", "description"]))
    page.add("<h2>Recent runs</h2>")
    runs = data.runs.head(15)
    page.add(
        _table(
            [
                [
                    _cell(r.run_id, "num"),
                    _cell(r.started_at),
                    _cell(r.status),
                    _cell(r.mode),
                    _cell(r.ok, "num"),
                    _cell(r.failed, "num"),
                    _cell(r.machine),
                ]
                for r in runs.itertuples(index=False)
            ],
            ["run", "started (UTC)", "status", "mode", "ok", "failed", "machine"],
        )
    )
    when = (
        f"Generated {generated_at:%Y-%m-%d %H:%M:%S} UTC by benchsvc {__version__}." if generated_at else ""
    )
    return page.render(when)


def _clip_log2(r: float) -> float:
    if r is None or r != r:
        return 0.0
    if r <= 0:
        return -3.0
    if r == float("inf"):
        return 3.0
    return max(-3.0, min(3.0, math.log2(r)))


def _workload(data: ReportData, w: Any) -> str:
    import altair as alt

    page = _Page(f"Workload {w.name}", depth=1)
    page.add(
        f"<p>{_e(w.description)}</p><p>Tags: {_e(', '.join(w.tags)) or '—'}. Content hash <code>{_e(w.content_hash[:16])}</code>.</p>"
    )
    order = list(data.versions["id"])
    res = data.results[data.results["workload"] == w.name] if not data.results.empty else data.results
    if not res.empty:
        ok = res[res["status"] == "ok"].copy()
        page.add("<h2>Timing per version (latest run)</h2>")
        ok["mean_ms"] = ok["mean_s"] * 1e3
        ok["low_ms"] = ok["ci_low_s"] * 1e3
        ok["high_ms"] = ok["ci_high_s"] * 1e3
        base = alt.Chart(ok[["version", "mean_ms", "low_ms", "high_ms"]]).encode(
            y=alt.Y("version:N", sort=order)
        )
        timing = base.mark_point(filled=True).encode(
            x=alt.X("mean_ms:Q", title="mean time of the measured zap calls (ms)")
        ) + base.mark_rule().encode(x="low_ms:Q", x2="high_ms:Q")
        page.chart("timing", timing.properties(width=520))
        page.add(
            '<p class="muted">Points: mean of every value; bars: 95% interval over worker processes.</p>'
            + (_noise_paragraph(data.latest_run) if data.latest_run else "")
        )
        counter_cols = sorted(c for c in ok.columns if c.startswith("c_"))
        long = ok.melt(
            id_vars=["version"],
            value_vars=[*counter_cols, "modeled_ns"],
            var_name="metric",
            value_name="value",
        )
        long["metric"] = long["metric"].str.replace("c_", "", regex=False)
        long["value"] = long["value"].astype(float)
        metrics = sorted(long["metric"].unique(), key=lambda m: (m != "modeled_ns", m))
        pick = alt.param(
            name="counter", value="modeled_ns", bind=alt.binding_select(options=metrics, name="counter ")
        )
        bars = (
            alt.Chart(long)
            .mark_bar()
            .encode(
                y=alt.Y("version:N", sort=order), x=alt.X("value:Q"), tooltip=["version", "metric", "value"]
            )
            .add_params(pick)
            .transform_filter(alt.datum.metric == pick)
            .properties(width=520)
        )
        page.add("<h2>Counters and modelled cost per version (latest run)</h2>")
        page.chart("counters", bars)
        by_version = {r["version"]: r for r in res.to_dict("records")}
        present = [v for v in order if v in by_version] + sorted(set(by_version) - set(order))
        rows, ids = [], []
        summary_rows = [
            ("status", lambda r: r["status"]),
            ("time (ms)", lambda r: _num((r["mean_s"] if r["mean_s"] is not None else math.nan) * 1e3, 3)),
            (
                "modeled (µs)",
                lambda r: _num((r["modeled_ns"] if r["modeled_ns"] is not None else math.nan) / 1e3, 1),
            ),
        ]
        for label, get in summary_rows:
            rows.append([_cell(label), *[_cell(get(by_version[v]), "num") for v in present]])
            ids.append(label.split(" ")[0])
        for c in counter_cols:
            rows.append(
                [
                    _cell(c[2:]),
                    *[
                        f'<td class="num" id="{_e(v)}-{_e(c[2:])}">{_e(_num(by_version[v][c]))}</td>'
                        for v in present
                    ],
                ]
            )
            ids.append(c[2:])
        page.add(_table(rows, ["", *present], ids))
        warned = [(v, by_version[v]["warnings"]) for v in present if by_version[v]["warnings"]]
        if warned:
            items = "".join(f'<li id="{_e(v)}"><b>{_e(v)}</b>: {_e("; ".join(ws))}</li>' for v, ws in warned)
            page.add(f"<h3>pyperf warnings</h3><ul>{items}</ul>")
    lin = data.lineage[data.lineage["workload"] == w.name] if not data.lineage.empty else data.lineage
    changed = lin[lin["significant"]] if not lin.empty else lin
    page.add("<h2>What each version changes against its parent (latest run)</h2>")
    if changed.empty:
        page.add("<p>No significant change.</p>")
    else:
        page.add(
            _table(
                [
                    [
                        _cell(r.version),
                        _cell(r.baseline),
                        _cell(r.metric),
                        _cell(r.direction, r.direction),
                        _cell(_num(r.value, 6 if r.kind == "timing" else 0), "num"),
                        _cell(_num(r.baseline_value, 6 if r.kind == "timing" else 0), "num"),
                        _cell(
                            ("" if r.kind == "timing" else signed_count(r.delta))
                            if r.kind == "exact"
                            else f"{r.ratio - 1:+.1%} [{r.ci_low - 1:+.1%}, {r.ci_high - 1:+.1%}]",
                            "num",
                        ),
                    ]
                    for r in changed.itertuples(index=False)
                ],
                ["version", "against", "metric", "direction", "value", "parent", "change"],
                [f"{r.version}-{r.metric}" for r in changed.itertuples(index=False)],
            )
        )
    hist = data.history[data.history["workload"] == w.name] if not data.history.empty else data.history
    page.add("<h2>History across nights</h2>")
    if hist.empty or hist["run_id"].nunique() < 2:
        page.add("<p>Fewer than two nights so far.</p>")
    else:
        h = hist[["version", "started_at", "mean_ms"]]
        lines = (
            alt.Chart(h)
            .mark_line(point=True)
            .encode(
                x=alt.X("started_at:T", title="night"),
                y=alt.Y("mean_ms:Q", title="mean time (ms)", scale=alt.Scale(zero=False)),
                color=alt.Color("version:N", sort=order),
                tooltip=["version", "started_at:T", "mean_ms"],
            )
        )
        chg = data.changes[data.changes["workload"] == w.name] if not data.changes.empty else data.changes
        layers = lines
        if not chg.empty:
            rules = (
                alt.Chart(chg[["version", "started_at", "label"]])
                .mark_rule(color="#b00020", strokeDash=[4, 3])
                .encode(x="started_at:T", tooltip=["version", "label"])
            )
            layers = lines + rules
        page.chart("history", layers.properties(width=760, height=300))
        page.add(
            '<p class="muted">Dashed red rules: detected change points (benchsvc history shows them per series).</p>'
        )
    page.add(f"<h2>Definition</h2><pre>{_e(w.definition)}</pre>")
    return page.render()


def _lineage(data: ReportData) -> str:
    import altair as alt

    page = _Page("Version lineage")
    lin = data.lineage
    if not lin.empty:
        cost = lin[lin["metric"] == "modeled_ns"][["workload", "version", "baseline", "ratio"]].copy()
        cost["change"] = cost["ratio"] - 1
        page.add("<h2>Modelled cost of each version against its parent (latest run)</h2>")
        page.chart(
            "cost",
            alt.Chart(cost)
            .mark_point(filled=True, size=60)
            .encode(
                x=alt.X("change:Q", axis=alt.Axis(format="+%"), title="modelled cost against the parent"),
                y=alt.Y("version:N", sort=list(data.versions["id"])),
                color=alt.Color("workload:N"),
                tooltip=["workload", "version", "baseline", alt.Tooltip("change:Q", format="+.1%")],
            )
            .properties(width=620),
        )
    rows = []
    for v in data.versions.itertuples(index=False):
        changes = lin[(lin["version"] == v.id) & lin["significant"]] if not lin.empty else lin
        if changes.empty:
            what = (
                "no change against its parent on the latest run"
                if isinstance(v.parent, str)
                else "the root of the lineage"
            )
        else:
            parts = []
            for metric, grp in changes.groupby("metric", sort=True):
                worse = sorted(grp[grp["direction"] == "worse"]["workload"])
                better = sorted(grp[grp["direction"] == "better"]["workload"])
                if worse:
                    parts.append(
                        f'<span class="worse">{_e(metric)} worse</span> on '
                        + ", ".join(
                            f'<a href="{_e(workload_page(x))}#{_e(quote(v.id))}-{_e(quote(metric))}">{_e(x)}</a>'
                            for x in worse
                        )
                    )
                if better:
                    parts.append(
                        f'<span class="better">{_e(metric)} better</span> on '
                        + ", ".join(
                            f'<a href="{_e(workload_page(x))}#{_e(quote(v.id))}-{_e(quote(metric))}">{_e(x)}</a>'
                            for x in better
                        )
                    )
            what = "<br>".join(parts)
        rows.append(
            [_cell(v.id), _cell(v.parent or "—"), _cell(v.title), _cell(v.source), f"<td>{what}</td>"]
        )
    page.add(
        _table(
            rows,
            ["version", "parent", "title", "source", "what it changes (latest run)"],
            [str(v) for v in data.versions["id"]],
        )
    )
    return page.render()


def _feed(data: ReportData) -> str:
    entries = []
    updated = "1970-01-01T00:00:00Z"
    regs = data.regressions
    if not regs.empty:
        updated = max(regs["detected_at"]).strftime("%Y-%m-%dT%H:%M:%SZ")
        for r in regs.itertuples(index=False):
            size = finding_size(r.details, r.effect, None, None)
            title = f"{r.direction}: {r.metric} of {r.version} on {r.workload} ({size}, {r.axis})"
            entries.append(
                "<entry>"
                f"<id>urn:benchsvc:regression:{r.id}</id><title>{_e(title)}</title>"
                f"<updated>{r.detected_at:%Y-%m-%dT%H:%M:%SZ}</updated>"
                f'<link href="{_e(workload_page(r.workload))}#{_e(quote(r.version))}-{_e(quote(r.metric))}"/>'
                f'<content type="text">{_e(title)}; status {_e(r.status)}; run {r.run_id}'
                f"{'; note: ' + _e(r.note) if r.note else ''}</content>"
                "</entry>"
            )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>urn:benchsvc:regressions</id><title>benchsvc regressions</title>"
        f"<updated>{updated}</updated>" + "".join(entries) + "</feed>\n"
    )
