"""The static report site: index, one page per workload, the version lineage, an Atom feed.

Input is a :class:`ReportData` of pre-aggregated pandas DataFrames (built from the store by
:mod:`benchsvc.report.collect`); nothing here touches the database. Pages are Jinja2 templates
(``benchsvc/report/templates``) with autoescaping; the feed is written with ElementTree. Every page opens from
the file system with no network: the Vega/Vega-Lite/vega-embed JavaScript (from vl-convert) is written once
per site as ``assets/vega.js`` and each chart is a Vega-Lite spec in a JSON data block that
``assets/charts.js`` hands to vega-embed, under a Content-Security-Policy that allows scripts from the site
only. The same data gives the same bytes, except the generation time printed on the index page; a file whose
bytes would not change is not rewritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pandas as pd

from benchsvc import __version__
from benchsvc.analysis.contention import STORED_PREFIX as SCALE_PREFIX
from benchsvc.analysis.describe import finding_size, signed_count
from benchsvc.analysis.noise import AA_PAIR
from benchsvc.limits import is_usable_name

if TYPE_CHECKING:
    import jinja2

    from benchsvc.analysis.noise import NoiseFloor
    from benchsvc.engine.cost import CostModel
    from benchsvc.store.report_data import RunSummary

#: how many groups of the lineage view the index repeats on its first screen
INDEX_LINEAGE_GROUPS = 5
#: how many defining counters a version's card shows
CARD_DIFFERENCES = 3
#: a modelled cost smaller than this prints as ±0.0 µs: rounding noise, below any counter that defines a version
ROUNDING_NS = 50.0
#: what the simulated engine's timing is called everywhere in the report: it is not a kernel cost
SIM_TIME = "simulator CPU time"
#: the name of the modelled cost in the report
MODELLED = "modelled cost"


@dataclass
class MachineNight:
    """One machine's latest run, as the first screen of the index shows it."""

    run: RunSummary
    results: int  # planned results (the canary's not counted)
    canary: int  # canary results of the run
    noise: NoiseFloor | None
    nights: int  # nights in the run's series so far (this one included)
    changes: pd.DataFrame  # list_regressions rows: tonight's nightly findings on this machine
    events: pd.DataFrame  # list_regressions rows: tonight's machine events
    open_earlier: pd.DataFrame  # nightly findings and machine events of earlier nights still open


@dataclass
class ReportData:
    """Everything a site shows, as DataFrames (see :func:`benchsvc.report.collect.collect`)."""

    latest: MachineNight | None  # the machine night whose run the lineage and the workload pages show
    runs: pd.DataFrame
    versions: pd.DataFrame  # id, engine, parent, title, source
    workloads: pd.DataFrame  # name, content_hash, description, definition, tags, canary
    lineage: pd.DataFrame  # compare_lineage of the latest run, all metrics
    results: (
        pd.DataFrame
    )  # latest run: workload, version, status, mean_s, ci_low_s, ci_high_s, modeled_ns, c_*, warnings
    history: pd.DataFrame  # machine, engine, workload, version, run_id, started_at, mean_ms
    changes: pd.DataFrame  # machine, workload, version, run_id, started_at, label, kind ("change", "machine")
    regressions: pd.DataFrame  # list_regressions (new and acknowledged)
    nights: list[MachineNight] = field(default_factory=list)  # one per machine, the latest's first


def _named(frame: pd.DataFrame, datasets: dict[str, Any]) -> Any:
    """``frame`` as a dataset of the chart (its rows encoded by pandas: dates as ISO 8601, NaN as null), added
    to ``datasets`` and referred to by name. Altair's own conversion sanitizes every cell in Python, and
    inline values are walked and validated cell by cell: on a year of ten machines either was most of the
    site's build; a named dataset is put into the spec after Altair is done (:meth:`Page.chart`)."""
    import altair as alt

    name = f"rows-{len(datasets)}"
    datasets[name] = json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))
    return alt.NamedData(name=name)


#: the rules drawn on a history chart: recorded change points and machine events
HISTORY_MARKS = (("change", "#b00020"), ("machine", "#888888"))


@cache
def _history_spec(series: tuple[str, ...], kinds: tuple[str, ...], modes: bool = False) -> str:
    """The Vega-Lite spec (JSON) of a history chart whose data are the named datasets ``rows-0`` (the
    series' nightly means and intervals) and ``rows-1``... (the rules of ``kinds``): the same for every
    machine and workload with the same series and kinds of rules, so Altair builds it once per site, not per
    chart. One line per series and mode (``line``): nights of two modes are never joined; ``modes``: the
    point shape tells the modes apart."""
    import altair as alt

    colors = dict(HISTORY_MARKS)
    color = alt.Color(
        "series:N",
        sort=list(series),
        title="version",
        scale=alt.Scale(domain=list(series), range=list(PALETTE)),
    )
    x = alt.X(
        "started_at:T",
        title="night (UTC)",
        axis=alt.Axis(labelOverlap=True, labelFlush=True),
        scale=alt.Scale(padding=16),  # the first and last nights' intervals are drawn inside the frame
    )
    base = alt.Chart(alt.NamedData(name="rows-0"))
    line = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("mean_ms:Q", title=f"mean {SIM_TIME} (ms)", scale=alt.Scale(zero=False)),
        color=color,
        detail="line:N",
        tooltip=["series:N", "mode:N", "started_at:T", alt.Tooltip("mean_ms:Q", format=".4~g")],
    )
    if modes:
        line = line.encode(shape=alt.Shape("mode:N", title="mode"))
    band = base.mark_rule(opacity=0.6).encode(x=x, y="low_ms:Q", y2="high_ms:Q", color=color)
    layers = band + line
    for i, kind in enumerate(kinds, start=1):
        layers = layers + (
            alt.Chart(alt.NamedData(name=f"rows-{i}"))
            .mark_rule(color=colors[kind], strokeDash=[4, 3])
            .encode(x="started_at:T", tooltip=["label:N"])
        )
    return json.dumps(layers.properties(width=760, height=300).to_dict(validate=False))


@cache
def vega_bundle() -> str:
    """Vega, Vega-Lite and vega-embed in one classic script that sets ``window.vegaEmbed`` (from vl-convert,
    which ships them for its own offline rendering)."""
    import vl_convert

    version = str(getattr(vl_convert, "__version__", ""))
    cached = _cache_dir() / f"vega-bundle-{version}.js" if version else None
    if cached is not None and cached.is_file():
        return cached.read_text(encoding="utf-8")
    bundle = str(vl_convert.javascript_bundle())  # type: ignore[call-arg]  # about 1.3 s
    if cached is not None:
        try:  # a cache only: a read-only home costs the 1.3 s again next time, nothing else
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.{os.getpid()}")
            partial.write_text(bundle, encoding="utf-8")
            os.replace(partial, cached)
        except OSError:
            pass
    return bundle


def _cache_dir() -> Path:
    """``$XDG_CACHE_HOME/benchsvc`` (default ``~/.cache/benchsvc``): the Vega bundle of each vl-convert
    version, so that a nightly report does not build the same 0.9 MB of JavaScript every time."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "benchsvc"


#: characters XML 1.0 does not allow (control characters but tab, newline, return; lone surrogates; U+FFFE/F)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(value: Any) -> str:
    """A user string without the characters XML cannot carry (a note with a control character would make
    feed.atom ill-formed; a lone surrogate cannot even be written as UTF-8)."""
    return _NOT_XML.sub("", "" if value is None else str(value))


def _missing(x: Any) -> bool:
    """None, NaN or pandas' NA: a cell with nothing in it (never printed as "nan")."""
    if x is None or x is pd.NA:
        return True
    try:
        return bool(isinstance(x, float) and math.isnan(x)) or bool(pd.isna(x) is True)
    except (TypeError, ValueError):
        return False


def _text(x: Any) -> str:
    """A stored string for a page: empty when the cell is missing (a note of NaN is no note)."""
    return "" if _missing(x) else str(x)


def _num(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "∞"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and digits == 0):
        return f"{int(x):,}"
    return f"{float(x):,.{digits}f}"


def workload_page(name: str) -> str:
    """The page of a workload, relative to the site: ``workloads/NAME.html`` for a name by the name rule
    (benchsvc.limits), else ``workloads/_w-<sha256 prefix>.html`` (an old database may hold any name; the
    page never leaves ``workloads/``, and the rule's names start with a letter or digit, so never collide)."""
    if is_usable_name(name):
        return f"workloads/{name}.html"
    digest = hashlib.sha256(str(name).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"workloads/_w-{digest}.html"


def slug(text: str) -> str:
    """An element id made of ``text``: letters, digits, ``._-`` kept, anything else ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(text))


def history_anchor(hostname: str) -> str:
    return f"history-{slug(hostname)}"


# --- templates ------------------------------------------------------------------------------------------


@cache
def _templates() -> jinja2.Environment:
    import jinja2
    import markupsafe

    def finalize(value: Any) -> Any:
        if isinstance(value, jinja2.runtime.Undefined | markupsafe.Markup):
            return value
        return _clean(value)

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("benchsvc.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "separators": (",", ":")}
    return env


class _Page:
    """One page: its template, its charts (id -> Vega-Lite spec) and where the site's root is."""

    def __init__(self, template: str, title: str, depth: int = 0) -> None:
        self.template = template
        self.title = title
        self.root = "../" * depth
        self.charts: dict[str, dict[str, Any]] = {}

    def chart(self, chart_id: str, spec: Any, datasets: dict[str, Any] | None = None) -> None:
        """Add a chart; ``datasets``: the rows of the chart's named data (:func:`_named`)."""
        # no JSON-schema validation at publish time: it dominates the build, and the specs are fixed code that
        # the browser tests render (tests/test_report_browser.py)
        d = spec.to_dict(validate=False) if hasattr(spec, "to_dict") else spec
        if datasets:
            d.setdefault("datasets", {}).update(datasets)
        self.charts[chart_id] = d

    def render(self, **context: Any) -> str:
        return (
            _templates()
            .get_template(self.template)
            .render(title=self.title, root=self.root, charts=self.charts, **context)
        )


# --- the site -------------------------------------------------------------------------------------------

CHARTS_JS = """\
// Draws every .chart of the page: its Vega-Lite spec is the JSON data block #spec-<id> (benchsvc report).
for (const el of document.querySelectorAll('.chart')) {
  const block = document.getElementById('spec-' + el.id);
  if (block === null) continue;
  vegaEmbed(el, JSON.parse(block.textContent), {actions: false, renderer: 'svg'}).catch(e => console.error(e));
}
"""


def build_site(
    data: ReportData, *, cost_model: CostModel | None = None, generated_at: dt.datetime | None = None
) -> dict[str, str]:
    """Every file of the site: relative path -> text.

    ``cost_model`` prices every cost the site shows (default: the shipped reference model): the modelled cost
    of each result is recomputed from its stored counters, the lineage's modelled-cost differences with it,
    and the pages name the model (:meth:`~benchsvc.engine.cost.CostModel.label`)."""
    import altair as alt

    from benchsvc.engine.cost import CostModel

    model = cost_model if cost_model is not None else CostModel.default()
    data = reprice(data, model)
    alt.data_transformers.disable_max_rows()  # the data is pre-aggregated; the pages stay small
    index, listed = _index(data, generated_at, model)
    files: dict[str, str] = {
        "assets/site.css": _templates().get_template("site.css").render(),
        "index.html": index,
        "lineage.html": _lineage(data, model),
        "feed.atom": _feed(data, listed),
    }
    for w in data.workloads.itertuples(index=False):
        files[workload_page(w.name)] = _workload(data, w, model)
    charts = any('class="chart"' in text for rel, text in files.items() if rel.endswith(".html"))
    if charts:
        files["assets/vega.js"] = vega_bundle()
        files["assets/charts.js"] = CHARTS_JS
    return files


def reprice(data: ReportData, model: CostModel) -> ReportData:
    """``data`` with every modelled cost recomputed by ``model`` from the stored counters: the results'
    ``modeled_ns`` and the lineage's ``modeled_ns`` rows (value, parent's value, difference, ratio,
    direction). A result that had no modelled cost (the canary, a failed result) gets none."""
    res = data.results
    if res.empty or "modeled_ns" not in res.columns:
        return data
    priced = res["modeled_ns"].notna()
    total = pd.Series(0.0, index=res.index)
    for name, ns in model.coefficients.items():
        column = f"c_{name}"
        if column in res.columns and ns:
            total = total + pd.to_numeric(res[column], errors="coerce").fillna(0.0).astype(float) * float(ns)
    res = res.assign(modeled_ns=total.where(priced))
    lin = data.lineage
    if not lin.empty and (lin["metric"] == "modeled_ns").any():
        cost = {
            (str(e), str(w), str(v)): float(c)
            for e, w, v, c in zip(
                res["engine"], res["workload"], res["version"], res["modeled_ns"], strict=True
            )
            if not _missing(c)
        }
        lin = lin.copy()
        for i in lin.index[lin["metric"] == "modeled_ns"]:
            key = (str(lin.at[i, "engine"]), str(lin.at[i, "workload"]))
            value, base = (
                cost.get((*key, str(lin.at[i, "version"]))),
                cost.get((*key, str(lin.at[i, "baseline"]))),
            )
            if value is None or base is None:
                continue
            delta = value - base
            lin.at[i, "value"] = value
            lin.at[i, "baseline_value"] = base
            lin.at[i, "delta"] = delta
            lin.at[i, "ratio"] = value / base if base else (1.0 if value == base else float("inf"))
            lin.at[i, "significant"] = bool(delta != 0)
            lin.at[i, "direction"] = "worse" if delta > 0 else "better" if delta < 0 else "same"
            lin.at[i, "settled"] = bool(delta == 0)
    return dataclasses.replace(data, results=res, lineage=lin)


def write_site(files: dict[str, str], out: Path, option: str = "--out") -> tuple[int, int]:
    """Publish the site atomically (:func:`benchsvc.report.publish.publish_site`); returns (written,
    unchanged): unchanged files are hard links to the previous site's, not rewritten."""
    from benchsvc.report.publish import publish_site

    return publish_site(files, out, option)


# --- what changed tonight (the index's first screen) ----------------------------------------------------


def _commits(before: Any, after: Any) -> str:
    def short(c: Any) -> str:
        return str(c)[:12] if isinstance(c, str) and c else "?"

    return f"{short(before)} → {short(after)}"


@dataclass(frozen=True)
class FindingRow:
    """A nightly finding or a machine event as the index lists it."""

    id: int
    axis: str
    status: str
    direction: str
    workload: str
    version: str
    metric: str
    size: str  # with the 95% interval for a timing change
    first_night: str  # the first night on the new level
    against: str  # what it was compared with
    commits: str  # benchsvc commits before → after (a machine event: the engine code)
    note: str
    machine: str
    link: str | None  # the history chart of its machine on the workload's page


def _finding_rows(df: pd.DataFrame, pages: set[str]) -> list[FindingRow]:
    rows = []
    for r in df.itertuples(index=False):
        d = r.details or {}
        page = workload_page(r.workload) if r.workload in pages else None
        if d.get("kind") == "changepoint":
            first = str(d.get("night_after", ""))[:16]
            commits = _commits(d.get("commit_before"), d.get("commit_after"))
            against = f"{d.get('nights_before', '?')} nights before, {d.get('nights_after', '?')} after"
        elif d.get("kind") == "counter":
            first = f"{r.started_at:%Y-%m-%d %H:%M}"
            commits = _commits(d.get("previous_commit"), d.get("commit"))
            against = f"{_num(d.get('previous_value'))} → {_num(d.get('value'))}"
        else:  # a machine event
            first = f"{r.started_at:%Y-%m-%d %H:%M}"
            commits = "engine code " + (str(d.get("code"))[:12] if d.get("code") else "?")
            against = f"level of the previous {d.get('baseline_nights', '?')} nights"
            if d.get("wander") is not None and d.get("wander") == d.get("wander"):
                against += (
                    f"; usual wander ±{float(d['wander']):.1%} over {d.get('wander_nights', '?')} nights"
                )
        rows.append(
            FindingRow(
                id=int(r.id),
                axis=str(r.axis),
                status=str(r.status),
                direction=str(r.direction),
                workload=str(r.workload),
                version=str(r.version),
                metric=metric_label(str(r.metric), str(getattr(r, "engine", "sim"))),
                size=finding_size(r.details, r.effect, r.ci_low, r.ci_high),
                first_night=first,
                against=against,
                commits=commits,
                note=_text(r.note),
                machine=str(r.machine),
                link=f"{page}#{history_anchor(r.machine)}" if page else None,
            )
        )
    return rows


def _night_state(night: MachineNight) -> str:
    """What the nightly comparison of this machine can say yet, and how to get more."""
    if night.nights <= 1:
        return (
            "First night of this machine's history (mode "
            f"{night.run.mode}): nightly changes are found by comparing each series with its own earlier "
            "nights, so they appear from the next nights on. Run benchsvc run every night in the same mode "
            "(benchsvc schedule --install sets up a timer)."
        )
    if night.changes.empty and night.events.empty:
        return (
            f"No confirmed change tonight: {night.results} series compared with their history of "
            f"{night.nights} nights ({night.run.mode} mode)."
        )
    return ""


def _noise_text(noise: NoiseFloor | None) -> str:
    """The run's noise floor in words, or what is missing to know it."""
    if noise is None:
        return ""
    parts = []
    if noise.aa_workloads:
        parts.append(
            f"A/A {AA_PAIR[0]}/{AA_PAIR[1]} (same code) on {noise.aa_workloads} workloads: 95% interval "
            f"±{noise.aa_half_width_median:.1%} median, ±{noise.aa_half_width_max:.1%} widest; largest A/A "
            f"difference {noise.aa_deviation_max:.1%}; {noise.aa_significant} flagged"
        )
    if noise.canary_processes >= 2 and math.isfinite(noise.canary_cv):
        parts.append(f"canary spread {noise.canary_cv:.1%} over {noise.canary_processes} processes")
    if parts:
        return "; ".join(parts)
    return (
        f"unknown: this run has no A/A interval ({AA_PAIR[0]} and {AA_PAIR[1]} measured together with two "
        "processes or more each) and no canary spread (two processes or more); a default-mode run has both"
    )


def _noise_short(noise: NoiseFloor | None) -> str:
    """The floor a timing row is read against, in a few words."""
    if noise is None or not noise.aa_workloads:
        return "noise floor unknown: this run has no A/A pair (measure v2 and v3 together)"
    return (
        f"noise floor ±{noise.aa_half_width_median:.1%} (A/A median; widest ±{noise.aa_half_width_max:.1%})"
    )


@dataclass(frozen=True)
class MachineSection:
    """One machine's part of the index's first screen."""

    run: RunSummary
    anchor: str
    results: int
    canary: int
    nights: int
    noise: str
    state: str
    events: list[FindingRow]
    regressions: list[FindingRow]
    improvements: list[FindingRow]
    earlier: list[FindingRow]


def _machine_section(night: MachineNight, pages: set[str]) -> MachineSection:
    changes = night.changes
    worse = changes[changes["direction"] == "worse"] if not changes.empty else changes
    better = changes[changes["direction"] != "worse"] if not changes.empty else changes
    return MachineSection(
        run=night.run,
        anchor=f"machine-{slug(night.run.hostname)}",
        results=night.results,
        canary=night.canary,
        nights=night.nights,
        noise=_noise_text(night.noise),
        state=_night_state(night),
        events=_finding_rows(night.events, pages),
        regressions=_finding_rows(worse, pages),
        improvements=_finding_rows(better, pages),
        earlier=_finding_rows(night.open_earlier, pages),
    )


#: pyperf's warning that the values spread widely, which the paired design expects (see docs/report.md)
EXPECTED_WARNING = re.compile(r"standard deviation .*?is (\d+(?:\.\d+)?)\s*% of the mean", re.IGNORECASE)
#: pyperf's advice lines that follow its warnings (nothing a reader of the report can act on)
PYPERF_ADVICE = re.compile(
    r"^(Try to rerun|Use pyperf|Use --quiet|Run .*pyperf system tune|Use pyperf stats)", re.IGNORECASE
)


def _warning_lines(warnings: Any) -> list[str]:
    if not isinstance(warnings, list | tuple):
        return []
    return [str(w) for w in warnings if str(w).strip()]


def split_warnings(warnings: Any) -> tuple[list[float], list[str]]:
    """(the percentages of pyperf's "standard deviation is N% of the mean" warnings, every other warning);
    pyperf's advice lines are dropped."""
    expected, other = [], []
    for line in _warning_lines(warnings):
        m = EXPECTED_WARNING.search(line)
        if m:
            expected.append(float(m.group(1)))
        elif not PYPERF_ADVICE.match(line.strip()):
            other.append(line)
    return expected, other


def _warning_summary(results: pd.DataFrame) -> str:
    """pyperf's expected spread warnings of the run, once: how many results, the largest spread."""
    if results.empty or "warnings" not in results.columns:
        return ""
    spreads = [max(e) for e, _ in map(split_warnings, results["warnings"]) if e]
    if not spreads:
        return ""
    return (
        f"pyperf warned on {len(spreads)} of {len(results)} results that the standard deviation is a large "
        f"part of the mean (up to {max(spreads):.0f}%). That is expected here: every value is one zap call, and "
        "the versions are measured interleaved, call by call, so the comparisons use paired ratios whose "
        "intervals (and the A/A noise floor) account for the spread. Other pyperf warnings are listed on the "
        "workload pages."
    )


#: colours of versions and engines: 20 distinct ones (a series never shares a colour with another)
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#393b79", "#ad494a", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
    "#31a354", "#756bb1",
)  # fmt: skip


def _index(
    data: ReportData, generated_at: dt.datetime | None, model: CostModel
) -> tuple[str, dict[int, str]]:
    """The index page, and the findings it lists (id -> anchor on the index), which the feed links to."""
    import altair as alt

    page = _Page("index.html", "benchsvc: batch-zap patch versions")
    when = (
        f"Generated {generated_at:%Y-%m-%d %H:%M:%S} UTC by benchsvc {__version__}." if generated_at else ""
    )
    if data.latest is None:
        return page.render(latest=None, footer=when), {}
    pages = set(data.workloads["name"])
    lin = _lineage_rows(data)
    if not lin.empty:
        heat = lin[
            ["engine", "workload", "version", "baseline", "metric", "ratio", "delta", "direction"]
        ].copy()
        heat["metric"] = [metric_label(m, e) for m, e in zip(heat["metric"], heat["engine"], strict=True)]
        heat = heat.drop(columns="engine")
        heat["log2_ratio"] = heat["ratio"].map(lambda r: _clip_log2(r))
        heat["label"] = heat["ratio"].map(lambda r: "∞" if r == float("inf") else f"{r:.3g}×")
        metrics = sorted(heat["metric"].unique(), key=lambda m: (m != MODELLED, m == SIM_TIME, m))
        pick = alt.param(
            name="metric",
            value=metrics[0],
            bind=alt.binding_select(options=metrics, name="metric "),
        )
        page.chart(
            "matrix",
            alt.Chart(heat)
            .mark_rect()
            .encode(
                x=alt.X("version:N", sort=list(data.versions["id"]), axis=alt.Axis(labelAngle=0)),
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
            # a band wide enough for the longest version id: no tick label runs into the next
            .properties(
                width=max(520, 64 * heat["version"].nunique()), height=22 * max(1, heat["workload"].nunique())
            ),
        )
    groups = lineage_groups(data, model)
    cards = version_cards(data, model, groups)
    ranked = [g for g in groups if not g.simulator]
    workloads = [
        {
            "name": w.name,
            "page": workload_page(w.name),
            "tags": ", ".join(w.tags),
            "description": w.description,
            "canary": bool(w.canary),
        }
        for w in data.workloads.itertuples(index=False)
    ]
    machines = [_machine_section(n, pages) for n in data.nights]
    listed = {
        r.id: f"finding-{r.id}"
        for mc in machines
        for rows in (mc.events, mc.regressions, mc.improvements, mc.earlier)
        for r in rows
    }
    html = page.render(
        latest=data.latest.run,
        machines=machines,
        several=len(data.nights) > 1,
        cards=cards,
        model=model.label(),
        sim_time=SIM_TIME,
        groups=ranked[:INDEX_LINEAGE_GROUPS],
        group_count=len(ranked),
        sim_count=len(groups) - len(ranked),
        workloads=[w for w in workloads if not w["canary"]],
        canaries=[w for w in workloads if w["canary"]],
        runs=list(data.runs.head(15).itertuples(index=False)),
        warnings=_warning_summary(data.results),
        footer=when,
    )
    return html, listed


def _clip_log2(r: float) -> float:
    if r is None or r != r:
        return 0.0
    if r <= 0:
        return -3.0
    if r == float("inf"):
        return 3.0
    return max(-3.0, min(3.0, math.log2(r)))


# --- what each version changes (the lineage view) -------------------------------------------------------


def _lineage_rows(data: ReportData) -> pd.DataFrame:
    """The lineage rows the pages list: not the canary's, and not the contention model's ``scale_*`` metrics
    (derived from the counters already listed; the scaling chart and the saturation table show them)."""
    lin = data.lineage
    if lin.empty:
        return lin
    return lin[(lin["engine"] != "canary") & ~lin["metric"].astype(str).str.startswith(SCALE_PREFIX)]


def _prices(model: CostModel) -> dict[str, float]:
    """ns per event of each counter (``modeled_ns`` itself at 1 ns per ns)."""
    return {**model.coefficients, "modeled_ns": 1.0}


def metric_label(metric: str, engine: str = "sim") -> str:
    """What a metric is called on the pages: the simulated engine's timing is the simulator's CPU time."""
    if metric == "time":
        return SIM_TIME if engine == "sim" else f"{engine} time"
    if metric == "modeled_ns":
        return MODELLED
    return str(metric)


def _us(ns: Any, signed: bool = False) -> str:
    """Nanoseconds as microseconds: two decimals below 10 µs, one above (as the tables print them)."""
    if _missing(ns):
        return ""
    x = float(ns) / 1e3
    digits = 2 if abs(x) < 10 else 1
    return f"{x:+,.{digits}f}" if signed else f"{x:,.{digits}f}"


def _change_text(r: Any) -> str:
    if r.kind == "timing":
        if _missing(r.ci_low) or _missing(r.ci_high):
            return f"{r.ratio - 1:+.1%} (no interval)"
        return f"{r.ratio - 1:+.1%} [{r.ci_low - 1:+.1%}, {r.ci_high - 1:+.1%}]"
    if r.metric == "modeled_ns":
        return f"{_us(r.delta, signed=True)} µs"
    return signed_count(r.delta)


@dataclass(frozen=True)
class LineageRow:
    """One workload of a lineage group: the version's value, its parent's, the difference (formatted)."""

    workload: str
    link: str
    direction: str
    value: str
    parent: str
    change: str
    note: str


@dataclass(frozen=True)
class LineageGroup:
    """One (version, parent, metric, direction) of the lineage view, with the workloads it affects."""

    id: str
    version: str
    baseline: str
    metric: str
    label: str  # what the metric is called on the page ("simulator CPU time", "modelled cost", a counter)
    kind: str  # "exact" (counters, modelled cost) or "timing"
    direction: str
    count: int
    size: str  # the range per workload
    total: str  # summed (counters) or mean (timings)
    cost_ns: float  # what orders the groups: modelled nanoseconds summed over the workloads
    cost: str
    noise: str  # timing groups: the run's noise floor
    rows: list[LineageRow]
    per_workload: float  # |summed difference| per affected workload, the second ordering key
    defining: bool  # one of the counters that define its version (its card)
    unit: str  # of the rows' values

    @property
    def workloads(self) -> list[str]:
        return [r.workload for r in self.rows]

    @property
    def simulator(self) -> bool:
        """The simulated engine's CPU time: shown and tracked, never ranked among kernel-cost differences."""
        return self.kind == "timing"


def _canonical(data: ReportData) -> list[str]:
    """The workloads tagged ``canonical`` (each isolates one behaviour): what a version is judged on."""
    if data.workloads.empty or "tags" not in data.workloads.columns:
        return []
    return sorted(
        str(w.name)
        for w in data.workloads.itertuples(index=False)
        if "canonical" in (w.tags or []) and not bool(getattr(w, "canary", False))
    )


def _defining(data: ReportData) -> pd.DataFrame:
    """:func:`~benchsvc.analysis.lineage.defining_differences` of the simulated engine's lineage."""
    from benchsvc.analysis.lineage import defining_differences

    lin = _lineage_rows(data)
    if lin.empty:
        return defining_differences(lin)
    return defining_differences(lin[lin["engine"] == "sim"], _canonical(data) or None)


def lineage_groups(data: ReportData, model: CostModel | None = None) -> list[LineageGroup]:
    """One group per (version, parent, metric, direction) with a significant difference, most important first.

    Importance: the difference in modelled nanoseconds (priced by ``model``) summed over the affected
    workloads (a counter's difference times its coefficient; ``modeled_ns`` itself), then the count per
    affected workload. A counter that defines its version (:func:`_defining`) never sorts below a
    difference whose cost is rounding noise (under :data:`ROUNDING_NS`), priced or not. The simulator's CPU
    time is not a kernel cost: its groups come after every counter and cost group (the pages list them
    apart)."""
    from benchsvc.engine.cost import CostModel

    model = model if model is not None else CostModel.default()
    lin = _lineage_rows(data)
    if lin.empty:
        return []
    sig = lin[lin["significant"].astype(bool)]
    mode = data.latest.run.mode if data.latest else "default"
    intervals = timing_intervals_allowed(mode)
    noise = _noise_short(data.latest.noise if data.latest else None)
    if not intervals:
        noise = f"{mode} mode: no timing intervals"
    notes = _lineage_notes(data.regressions)
    cost = _prices(model)
    defining = _defining(data)
    top = {
        (str(r.version), str(r.baseline), str(r.metric))
        for r in defining[defining["rank"] <= CARD_DIFFERENCES].itertuples(index=False)
    }
    groups = []
    for (version, baseline, metric, direction), g in sig.groupby(
        ["version", "baseline", "metric", "direction"], sort=False
    ):
        kind = str(g["kind"].iloc[0])
        timing = kind == "timing"
        n = len(g)
        engine = str(g["engine"].iloc[0])
        if timing:
            total_ns = 0.0  # the simulator's time is not priced: it ranks apart
            low, high = float(g["ratio"].min()) - 1, float(g["ratio"].max()) - 1
            size = f"{low:+.1%}" if n == 1 else f"{low:+.1%} to {high:+.1%}"
            total = f"{float(g['ratio'].mean()) - 1:+.1%} mean"
            per_workload = 0.0
        elif metric == "modeled_ns":
            deltas = g["delta"].astype(float)
            total_ns = float(deltas.sum())
            low, high = float(deltas.min()), float(deltas.max())
            size = f"{_us(low, True)} µs" if low == high else f"{_us(low, True)} to {_us(high, True)} µs"
            total = f"{_us(deltas.sum(), True)} µs summed"
            per_workload = abs(float(deltas.sum())) / n
        else:
            deltas = g["delta"].astype(float)
            total_ns = float(deltas.sum()) * cost.get(str(metric), 0.0)
            low, high = float(deltas.min()), float(deltas.max())
            size = signed_count(low) if low == high else f"{signed_count(low)} to {signed_count(high)}"
            total = f"{signed_count(deltas.sum())} summed"
            per_workload = abs(float(deltas.sum())) / n

        def shown(x: Any, metric: str = str(metric), timing: bool = timing) -> str:
            if timing:
                return _num(float(x) * 1e3, 3)  # ms
            return _us(x) if metric == "modeled_ns" else _num(x)

        rows = [
            LineageRow(
                workload=str(r.workload),
                link=f"{workload_page(r.workload)}#{quote(str(version))}-{quote(str(metric))}",
                direction=str(r.direction),
                value=shown(r.value),
                parent=shown(r.baseline_value),
                change=_change_text(r) if intervals or not timing else f"{float(r.ratio) - 1:+.1%}",
                note=notes.get((str(version), str(baseline), str(metric), str(r.workload)), ""),
            )
            for r in g.sort_values("workload").itertuples(index=False)
        ]
        groups.append(
            LineageGroup(
                id=f"{slug(version)}--{slug(baseline)}--{slug(metric)}--{direction}",
                version=str(version),
                baseline=str(baseline),
                metric=str(metric),
                label=metric_label(str(metric), engine),
                kind=kind,
                direction=str(direction),
                count=n,
                size=size,
                total=total,
                cost_ns=total_ns,
                cost=_cost_text(total_ns, kind, str(metric), model),
                noise=noise if timing else "",
                rows=rows,
                per_workload=per_workload,
                defining=(str(version), str(baseline), str(metric)) in top,
                unit="ms" if timing else "µs" if metric == "modeled_ns" else "events",
            )
        )
    groups.sort(key=_group_order)
    return groups


def _group_order(g: LineageGroup) -> tuple[int, float, float, str, str]:
    """First the modelled cost itself and the counters that define each version (its card), by |cost|:
    a defining counter the model does not price still comes before every other difference; then the
    other differences, those whose cost is not rounding noise (:data:`ROUNDING_NS`) first; the simulator's
    CPU time last (it is not a kernel cost)."""
    if g.simulator:
        band = 3
    elif g.defining or g.metric == "modeled_ns":
        band = 0
    elif abs(g.cost_ns) >= ROUNDING_NS:
        band = 1
    else:
        band = 2
    return (band, -abs(g.cost_ns), -g.per_workload, g.version, g.metric)


def _cost_text(total_ns: float, kind: str, metric: str, model: CostModel) -> str:
    if kind == "timing":
        return "the simulator's own CPU time, not a kernel cost (not ranked)"
    if metric == "modeled_ns":
        return f"{total_ns / 1e3:+,.1f} µs: the {model.kind} model's total"
    if total_ns == 0:
        return f"{metric} is not priced by the cost model"
    return f"{total_ns / 1e3:+,.1f} µs modelled"


def _lineage_notes(regs: pd.DataFrame) -> dict[tuple[str, str, str, str], str]:
    """Notes of acknowledged lineage findings, by (version, parent, metric, workload)."""
    if regs.empty:
        return {}
    lin = regs[(regs["axis"] == "lineage") & regs["note"].notna()]
    return {
        (str(r.version), str(r.baseline), str(r.metric), str(r.workload)): str(r.note)
        for r in lin.itertuples(index=False)
    }


@dataclass(frozen=True)
class Defining:
    """One counter that defines a version against its parent, on the workload where it moves the most."""

    metric: str
    workload: str
    link: str
    value: str
    parent: str
    change: str
    direction: str
    workloads: int  # judged workloads on which it changes
    priced: str  # what the cost model says it costs there, or that it does not price it


@dataclass(frozen=True)
class VersionCard:
    """A version's card: what it is, and what defines it against its parent (the story's unit)."""

    id: str
    parent: str
    title: str
    date: str
    source: str
    state: str
    missing_parent: bool
    defining: list[Defining]
    cost: str  # the modelled cost's change over the judged workloads, or ""
    cost_direction: str
    disagreement: str  # one line when the simulator's time and the modelled cost disagree, or ""
    groups: list[LineageGroup]
    scaling: str = ""  # on the lineage view: the id of the card's scaling chart (one line per workload)
    scaling_rows: list[dict[str, str]] = field(default_factory=list)


def _disagreement(lin: pd.DataFrame, version: str) -> str:
    """One line when the simulator's CPU time and the modelled cost of ``version`` move in opposite
    directions on a workload (both changes significant), naming the largest such workload."""
    mine = lin[(lin["version"] == version) & (lin["engine"] == "sim")]
    timing = mine[(mine["metric"] == "time") & mine["significant"].astype(bool)]
    cost = mine[(mine["metric"] == "modeled_ns") & (mine["delta"].astype(float) != 0)]
    if timing.empty or cost.empty:
        return ""
    cost_by = {str(r.workload): r for r in cost.itertuples(index=False)}
    opposed = [
        (abs(float(t.ratio) - 1), t, cost_by[str(t.workload)])
        for t in timing.itertuples(index=False)
        if str(t.workload) in cost_by and (float(t.ratio) > 1) != (float(cost_by[str(t.workload)].delta) > 0)
    ]
    if not opposed:
        return ""
    _, t, c = max(opposed, key=lambda x: (x[0], str(x[1].workload)))
    more = (
        f" and {len(opposed) - 1} more workload{'s' if len(opposed) > 2 else ''}" if len(opposed) > 1 else ""
    )
    return (
        f"{SIM_TIME} and {MODELLED} disagree in direction on {t.workload}{more}: {SIM_TIME} "
        f"{float(t.ratio) - 1:+.1%}, {MODELLED} {float(c.ratio) - 1:+.1%}; the modelled cost estimates "
        "the kernel, the simulator's time only the Python simulator."
    )


def version_cards(data: ReportData, model: CostModel, groups: list[LineageGroup]) -> list[VersionCard]:
    """One card per version of the run (lineage order), its defining counters from :func:`_defining`."""
    measured = set(data.results["version"]) if not data.results.empty else set()
    lin = _lineage_rows(data)
    defining = _defining(data)
    judged = set(_canonical(data))
    cost_rows = lin[(lin["metric"] == "modeled_ns") & (lin["engine"] == "sim")] if not lin.empty else lin
    if judged and not cost_rows.empty and cost_rows["workload"].isin(judged).any():
        cost_rows = cost_rows[cost_rows["workload"].isin(judged)]
    prices = _prices(model)
    cards = []
    for v in data.versions.itertuples(index=False):
        if v.engine == "canary":
            continue
        vid = str(v.id)
        mine = [g for g in groups if g.version == vid]
        missing = isinstance(v.parent, str) and v.parent not in measured
        d = defining[(defining["version"] == vid) & (defining["rank"] <= CARD_DIFFERENCES)]
        items = []
        for r in d.itertuples(index=False):
            price = prices.get(str(r.metric), 0.0)
            items.append(
                Defining(
                    metric=str(r.metric),
                    workload=str(r.workload),
                    link=f"{workload_page(r.workload)}#{quote(vid)}-{quote(str(r.metric))}",
                    value=_num(r.value),
                    parent=_num(r.baseline_value),
                    change=signed_count(r.delta),
                    direction="worse" if float(r.delta) > 0 else "better",
                    workloads=int(r.workloads),
                    priced=f"{_us(float(r.delta) * price, True)} µs" if price else "not priced",
                )
            )
        cost, cost_direction = "", "same"
        c = cost_rows[cost_rows["version"] == vid] if not cost_rows.empty else cost_rows
        if not c.empty:
            total = float(c["delta"].astype(float).sum())
            base = float(c["baseline_value"].astype(float).sum())
            rel = f" ({total / base:+.1%})" if base else ""
            over = f"{len(c)} workload{'s' if len(c) != 1 else ''}"
            cost = (
                f"{MODELLED} {_us(total, True)} µs{rel} summed over {over}"
                if total
                else f"{MODELLED} unchanged on {over}"
            )
            cost_direction = "worse" if total > 0 else "better" if total < 0 else "same"
        if not isinstance(v.parent, str):
            state = "the root of the lineage"
        elif missing:
            state = (
                f"its parent {v.parent} was not measured in this run, so nothing is compared — measure "
                f"both: benchsvc run -V {v.parent},{vid}"
            )
        elif not items and not mine:
            state = "no difference from its parent on this run"
        else:
            state = f"{len(mine)} differences from its parent"
        cards.append(
            VersionCard(
                id=vid,
                parent=v.parent if isinstance(v.parent, str) else "—",
                title=_text(v.title),
                date=_text(getattr(v, "date", "")),
                source=_text(v.source),
                state=state,
                missing_parent=missing,
                defining=items,
                cost=cost,
                cost_direction=cost_direction,
                disagreement=_disagreement(lin, vid) if not lin.empty else "",
                groups=mine,
            )
        )
    return cards


def _lineage(data: ReportData, model: CostModel) -> str:
    import altair as alt

    page = _Page("lineage.html", "What each version changes")
    if data.latest is None:
        return page.render(latest=None, footer="")
    lin = _lineage_rows(data)
    if not lin.empty:
        cost = lin[lin["metric"] == "modeled_ns"][["workload", "version", "baseline", "ratio"]].copy()
        if not cost.empty:
            cost["change"] = cost["ratio"] - 1
            page.chart(
                "cost",
                alt.Chart(cost)
                .mark_point(filled=True, size=60)
                .encode(
                    x=alt.X(
                        "change:Q",
                        axis=alt.Axis(format="+%", labelOverlap=True),
                        title="modelled cost against the parent",
                    ),
                    y=alt.Y("version:N", sort=list(data.versions["id"])),
                    color=alt.Color("workload:N", scale=alt.Scale(range=list(PALETTE))),
                    tooltip=["workload", "version", "baseline", alt.Tooltip("change:Q", format="+.1%")],
                )
                .properties(width=620),
            )
    groups = lineage_groups(data, model)
    cards = [_card_scaling(page, data, c) for c in version_cards(data, model, groups)]
    return page.render(
        saturation=_saturation_hook(data),
        latest=data.latest.run,
        groups=[g for g in groups if not g.simulator],
        sim_groups=[g for g in groups if g.simulator],
        cards=cards,
        versions=cards,
        missing=[v for v in cards if v.missing_parent],
        noise=_noise_text(data.latest.noise),
        model=model.label(),
        sim_time=SIM_TIME,
        sim_title=SIM_TIME[0].upper() + SIM_TIME[1:],
        footer="",
    )


# --- a workload ---------------------------------------------------------------------------------------


def _series(version: Any, engine: Any) -> str:
    """A history series' name: the version for the simulated engine, else "version (engine)" (the kernel's
    line is not the simulator's, and has its own colour)."""
    return str(version) if str(engine) in ("sim", "canary") else f"{version} ({engine})"


def timing_intervals_allowed(mode: str) -> bool:
    from benchsvc.runner.blocks import supports_timing_inference

    return bool(supports_timing_inference(mode))


def _workload(data: ReportData, w: Any, model: CostModel) -> str:
    import altair as alt

    page = _Page("workload.html", f"Workload {w.name}", depth=1)
    order = list(data.versions["id"])
    mode = data.latest.run.mode if data.latest else "default"
    intervals = timing_intervals_allowed(mode)
    res = data.results[data.results["workload"] == w.name] if not data.results.empty else data.results
    table: dict[str, Any] | None = None
    warned: list[tuple[str, str]] = []
    spread = 0
    time_label = "time" if w.canary else SIM_TIME
    scaling: list[dict[str, str]] = []
    if not res.empty:
        ok = res[res["status"] == "ok"].copy()
        ok["version"] = [_series(v, e) for v, e in zip(ok["version"], ok["engine"], strict=True)]
        ok["mean_ms"] = ok["mean_s"] * 1e3
        ok["low_ms"] = ok["ci_low_s"] * 1e3 if intervals else math.nan
        ok["high_ms"] = ok["ci_high_s"] * 1e3 if intervals else math.nan
        base = alt.Chart(ok[["version", "mean_ms", "low_ms", "high_ms"]]).encode(
            y=alt.Y("version:N", sort=order, title="version")
        )
        what = "one canary value (ms)" if w.canary else f"{SIM_TIME} of the measured zap calls (ms)"
        if (ok["engine"] == "kernel").any():
            what = f"time of the measured zap calls (ms): {SIM_TIME}; (kernel): the live kernel's"
        timing = base.mark_point(filled=True).encode(
            x=alt.X("mean_ms:Q", title=f"mean {what}", axis=alt.Axis(labelOverlap=True))
        )
        if intervals:
            timing = timing + base.mark_rule().encode(x="low_ms:Q", x2="high_ms:Q")
        page.chart("timing", timing.properties(width=520))
        counter_cols = sorted(c for c in ok.columns if c.startswith("c_") and ok[c].notna().any())
        if counter_cols and not w.canary:
            long = ok.melt(
                id_vars=["version"],
                value_vars=[*counter_cols, "modeled_ns"],
                var_name="metric",
                value_name="value",
            )
            long["value"] = long["value"].astype(float)
            cost_rows = long["metric"] == "modeled_ns"
            long.loc[cost_rows, "value"] = long.loc[cost_rows, "value"] / 1e3  # µs, as in the table
            long["metric"] = [
                f"{MODELLED} (µs)" if m == "modeled_ns" else f"{m[2:]} (events)" for m in long["metric"]
            ]
            metrics = sorted(long["metric"].unique(), key=lambda m: (not m.startswith(MODELLED), m))
            pick = alt.param(
                name="counter", value=metrics[0], bind=alt.binding_select(options=metrics, name="counter ")
            )
            page.chart(
                "counters",
                alt.Chart(long)
                .mark_bar()
                .encode(
                    y=alt.Y("version:N", sort=order, title="version"),
                    x=alt.X(
                        "value:Q",
                        title="events counted (modelled cost: µs)",
                        axis=alt.Axis(labelOverlap=True, format="~s"),
                    ),
                    tooltip=["version", "metric", alt.Tooltip("value:Q", format=",.6~g")],
                )
                .add_params(pick)
                .transform_filter(alt.datum.metric == pick)
                .properties(width=520),
            )
        by_version = {_series(r["version"], r["engine"]): r for r in res.to_dict("records")}
        if any(r["engine"] == "kernel" for r in by_version.values()):
            time_label = f"time: {SIM_TIME}, the live kernel's for a (kernel) column"
        scaling = _scaling_hook(page, ok, order)
        present = [v for v in order if v in by_version] + sorted(set(by_version) - set(order))

        def ms(r: dict[str, Any]) -> str:
            return _num((r["mean_s"] if r["mean_s"] is not None else math.nan) * 1e3, 3)

        def us(r: dict[str, Any]) -> str:
            return _us(r["modeled_ns"])

        summary = [("status", "status", lambda r: r["status"]), ("time", f"{time_label} (ms)", ms)]
        if not w.canary:
            summary.append(("modeled", f"{MODELLED} (µs)", us))
        table = {
            "versions": present,
            "summary": [(rid, label, [get(by_version[v]) for v in present]) for rid, label, get in summary],
            "counters": []
            if w.canary
            else [(c[2:], [_num(by_version[v][c]) for v in present]) for c in counter_cols],
        }
        for v in present:
            expected, other = split_warnings(by_version[v]["warnings"])
            spread += bool(expected)
            if other:
                warned.append((v, "; ".join(other)))
    lineage = _lineage_rows(data)
    lin = lineage[lineage["workload"] == w.name] if not lineage.empty else lineage
    changed = lin[lin["significant"].astype(bool)] if not lin.empty else lin

    def shown(r: Any, x: Any) -> str:
        if r.kind == "timing":
            return _num(float(x) * 1e3, 3)
        return _us(x) if r.metric == "modeled_ns" else _num(x)

    changes = [
        {
            "id": f"{r.version}-{r.metric}",
            "version": r.version,
            "baseline": r.baseline,
            "metric": metric_label(str(r.metric), str(r.engine)),
            "direction": r.direction,
            "value": shown(r, r.value),
            "parent": shown(r, r.baseline_value),
            "change": _change_text(r) if intervals or r.kind != "timing" else f"{r.ratio - 1:+.1%}",
        }
        for r in changed.itertuples(index=False)
    ]
    histories = []
    hist = data.history[data.history["workload"] == w.name] if not data.history.empty else data.history
    for night in data.nights:
        host = night.run.hostname
        h = hist[hist["machine"] == host] if not hist.empty else hist
        chart_id = history_anchor(host)
        nights = int(h["run_id"].nunique()) if not h.empty else 0
        modes = sorted(set(h["mode"])) if not h.empty else []
        entry = {
            "host": host,
            "id": chart_id,
            "mode": night.run.mode,
            "modes": modes,
            "nights": nights,
            "chart": False,
            "quick": [m for m in modes if not timing_intervals_allowed(str(m))],
        }
        if nights >= 2:
            chg = data.changes
            if not chg.empty:
                chg = chg[
                    (chg["machine"] == host) & ((chg["workload"] == w.name) | (chg["kind"] == "machine"))
                ]
            datasets: dict[str, Any] = {}
            rows = h.assign(series=[_series(v, e) for v, e in zip(h["version"], h["engine"], strict=True)])
            rows = rows.assign(line=rows["series"] + " · " + rows["mode"].astype(str) + " mode")
            _named(rows[["series", "line", "mode", "started_at", "mean_ms", "low_ms", "high_ms"]], datasets)
            kinds = []
            for kind, _ in HISTORY_MARKS:
                marks = chg[chg["kind"] == kind] if not chg.empty else chg
                if not marks.empty:
                    _named(marks[["version", "started_at", "label"]], datasets)
                    kinds.append(kind)
            series = [s for s in order if s in set(rows["series"])]
            series += sorted(set(rows["series"]) - set(series))
            spec = json.loads(_history_spec(tuple(series), tuple(kinds), len(modes) > 1))
            page.chart(chart_id, spec, datasets)
            entry["chart"] = True
        histories.append(entry)
    return page.render(
        w=w,
        scaling=scaling,
        canary=bool(w.canary),
        measured=not res.empty,
        table=table,
        warned=warned,
        spread=spread,
        intervals=intervals,
        mode=mode,
        changes=changes,
        histories=histories,
        noise=_noise_text(data.latest.noise) if data.latest else "",
        model=model.label(),
        sim_time=SIM_TIME,
        sim_title=SIM_TIME[0].upper() + SIM_TIME[1:],
        footer="",
    )


#: the workloads whose split-queue lock saturation the lineage page lists (queueing and non-queueing)
SATURATION_WORKLOADS = ("b-dontneed-first-page", "a-munmap-aligned")


def _saturation_hook(data: ReportData) -> list[tuple[str, str, list[dict[str, str]]]]:
    """Per workload of :data:`SATURATION_WORKLOADS` measured in the latest run: from how many CPUs in one
    memcg each version saturates the split-queue lock (the contention model, benchsvc/report/scaling.py)."""
    from benchsvc.report.scaling import saturation_table, scaling_rows

    out: list[tuple[str, str, list[dict[str, str]]]] = []
    if data.results.empty:
        return out
    order = list(data.versions["id"])
    for name in SATURATION_WORKLOADS:
        res = data.results[(data.results["workload"] == name) & (data.results["status"] == "ok")]
        points, marks = scaling_rows(res)
        if not points.empty:
            out.append((workload_page(name), name, saturation_table(points, marks, order)))
    return out


def _card_scaling(page: _Page, data: ReportData, card: VersionCard) -> VersionCard:
    """``card`` with the contention model's scaling chart of its version on the canonical workloads (one line
    per workload, N* marked), added to ``page``; unchanged when its results carry no stored model metrics."""
    from benchsvc.report.scaling import scaling_block

    res = data.results
    if res.empty:
        return card
    canonical = _canonical(data)
    mine = res[
        (res["version"] == card.id)
        & (res["engine"] == "sim")
        & (res["status"] == "ok")
        & (res["workload"].isin(canonical) if canonical else True)
    ]
    block = scaling_block(mine, sorted(set(mine["workload"])), by="workload") if not mine.empty else None
    if block is None:
        return card
    chart_id = f"scaling-card-{card.id}"
    # a card is narrow: a small chart, its legend underneath
    page.chart(chart_id, block[0].properties(width=200, height=150).configure_legend(orient="bottom"))
    return dataclasses.replace(card, scaling=chart_id, scaling_rows=block[1])


def _scaling_hook(page: _Page, ok: pd.DataFrame, order: list[str]) -> list[dict[str, str]]:
    """The contention model's scaling chart (benchsvc/report/scaling.py) on a page; its table rows."""
    from benchsvc.report.scaling import scaling_block

    block = scaling_block(ok, order) if not ok.empty else None
    if block is None:
        return []
    page.chart("scaling", block[0])
    return block[1]


# --- the feed -------------------------------------------------------------------------------------------

ATOM = "http://www.w3.org/2005/Atom"


def _feed(data: ReportData, listed: dict[int, str] | None = None) -> str:
    """Open nightly findings and machine events as an Atom feed, each naming its machine (ElementTree: every
    text is escaped by the XML writer). Lineage differences are the versions' character, shown on the lineage
    view, not alerts. Each entry links to an element that exists: its machine's history chart on the
    workload's page when the site has that page, else its row on the index (``listed``), else the index.
    ``<updated>``: the latest finding's detection, else the latest run's start."""
    ET.register_namespace("", ATOM)
    listed = listed or {}

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = _clean(text)
        return el

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "id", "urn:benchsvc:regressions")
    sub(feed, "title", "benchsvc: nightly findings and machine events")
    author = sub(feed, "author")
    sub(author, "name", "benchsvc")
    sub(feed, "link", href="index.html")
    regs = data.regressions
    if not regs.empty:
        regs = regs[regs["axis"].isin(["nightly", "machine"])]
    updated = "1970-01-01T00:00:00Z"
    if not regs.empty:
        updated = max(regs["detected_at"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    elif data.latest is not None:
        updated = _atom_time(data.latest.run.started_at)
    sub(feed, "updated", updated)
    pages = set(data.workloads["name"]) if not data.workloads.empty else set()
    hosts = {n.run.hostname for n in data.nights}
    for r in regs.itertuples(index=False):
        size = finding_size(r.details, r.effect, None, None)
        if r.axis == "machine":
            title = f"{r.machine}: {size}"
        else:
            metric = metric_label(str(r.metric), str(getattr(r, "engine", "sim")))
            title = f"{r.machine}: {r.direction}: {metric} of {r.version} on {r.workload} ({size}, {r.axis})"
        if r.workload in pages and r.machine in hosts:
            href = f"{workload_page(r.workload)}#{history_anchor(r.machine)}"
        elif int(r.id) in listed:
            href = f"index.html#{listed[int(r.id)]}"
        else:
            href = "index.html"
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:benchsvc:regression:{r.id}")
        sub(entry, "title", title)
        sub(entry, "updated", f"{r.detected_at:%Y-%m-%dT%H:%M:%SZ}")
        sub(entry, "link", href=href)
        note = _text(r.note)
        note = f"; note: {note}" if note else ""
        sub(entry, "content", f"{title}; status {r.status}; run {r.run_id}{note}", type="text")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"


def _atom_time(started_at: str) -> str:
    """A run's "YYYY-MM-DD HH:MM" (UTC) as an Atom date."""
    try:
        return dt.datetime.strptime(str(started_at)[:16], "%Y-%m-%d %H:%M").strftime("%Y-%m-%dT%H:%M:00Z")
    except ValueError:
        return "1970-01-01T00:00:00Z"
