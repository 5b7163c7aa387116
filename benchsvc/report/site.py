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
    from benchsvc.store.report_data import RunSummary

#: how many groups of the lineage view the index repeats on its first screen
INDEX_LINEAGE_GROUPS = 5


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
def _history_spec(order: tuple[str, ...], kinds: tuple[str, ...]) -> str:
    """The Vega-Lite spec (JSON) of a history chart whose data are the named datasets ``rows-0`` (the
    versions' nightly means) and ``rows-1``... (the rules of ``kinds``): the same for every machine and
    workload with the same versions and kinds of rules, so Altair builds it once per site, not per chart."""
    import altair as alt

    colors = dict(HISTORY_MARKS)
    layers = (
        alt.Chart(alt.NamedData(name="rows-0"))
        .mark_line(point=True)
        .encode(
            x=alt.X("started_at:T", title="night"),
            y=alt.Y("mean_ms:Q", title="mean time (ms)", scale=alt.Scale(zero=False)),
            color=alt.Color("version:N", sort=list(order)),
            tooltip=["version:N", "started_at:T", "mean_ms:Q"],
        )
    )
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


def build_site(data: ReportData, *, generated_at: dt.datetime | None = None) -> dict[str, str]:
    """Every file of the site: relative path -> text."""
    import altair as alt

    alt.data_transformers.disable_max_rows()  # the data is pre-aggregated; the pages stay small
    files: dict[str, str] = {
        "assets/site.css": _templates().get_template("site.css").render(),
        "index.html": _index(data, generated_at),
        "lineage.html": _lineage(data),
        "feed.atom": _feed(data),
    }
    for w in data.workloads.itertuples(index=False):
        files[workload_page(w.name)] = _workload(data, w)
    charts = any('class="chart"' in text for rel, text in files.items() if rel.endswith(".html"))
    if charts:
        files["assets/vega.js"] = vega_bundle()
        files["assets/charts.js"] = CHARTS_JS
    return files


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
        rows.append(
            FindingRow(
                id=int(r.id),
                axis=str(r.axis),
                status=str(r.status),
                direction=str(r.direction),
                workload=str(r.workload),
                version=str(r.version),
                metric=str(r.metric),
                size=finding_size(r.details, r.effect, r.ci_low, r.ci_high),
                first_night=first,
                against=against,
                commits=commits,
                note=str(r.note or ""),
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


def _index(data: ReportData, generated_at: dt.datetime | None) -> str:
    import altair as alt

    page = _Page("index.html", "benchsvc: batch-zap patch versions")
    when = (
        f"Generated {generated_at:%Y-%m-%d %H:%M:%S} UTC by benchsvc {__version__}." if generated_at else ""
    )
    if data.latest is None:
        return page.render(latest=None, footer=when)
    pages = set(data.workloads["name"])
    lin = _lineage_rows(data)
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
        page.chart(
            "matrix",
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
            .properties(width=520, height=22 * max(1, heat["workload"].nunique())),
        )
    groups = lineage_groups(data)
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
    return page.render(
        latest=data.latest.run,
        machines=[_machine_section(n, pages) for n in data.nights],
        several=len(data.nights) > 1,
        groups=groups[:INDEX_LINEAGE_GROUPS],
        group_count=len(groups),
        workloads=[w for w in workloads if not w["canary"]],
        canaries=[w for w in workloads if w["canary"]],
        runs=list(data.runs.head(15).itertuples(index=False)),
        footer=when,
    )


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


@cache
def _cost_ns() -> dict[str, float]:
    from benchsvc.engine.cost import CostModel

    return {**CostModel.default().coefficients, "modeled_ns": 1.0}


def _change_text(r: Any) -> str:
    if r.kind == "timing":
        return f"{r.ratio - 1:+.1%} [{r.ci_low - 1:+.1%}, {r.ci_high - 1:+.1%}]"
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

    @property
    def workloads(self) -> list[str]:
        return [r.workload for r in self.rows]


def lineage_groups(data: ReportData) -> list[LineageGroup]:
    """One group per (version, parent, metric, direction) with a significant difference, most important first.

    Importance: the difference in modelled nanoseconds summed over the affected workloads (a counter's
    difference times its cost-model coefficient; ``modeled_ns`` itself; a timing's relative change times the
    parent's modelled cost on that workload), then the count per affected workload (for counters the cost
    model does not price)."""
    lin = _lineage_rows(data)
    if lin.empty:
        return []
    sig = lin[lin["significant"].astype(bool)]
    noise = _noise_short(data.latest.noise if data.latest else None)
    notes = _lineage_notes(data.regressions)
    cost = _cost_ns()
    modelled = lin[lin["metric"] == "modeled_ns"]
    parent_cost = {
        (str(r.engine), str(r.workload), str(r.baseline)): float(r.baseline_value)
        for r in modelled.itertuples(index=False)
    }
    groups = []
    for (version, baseline, metric, direction), g in sig.groupby(
        ["version", "baseline", "metric", "direction"], sort=False
    ):
        kind = str(g["kind"].iloc[0])
        timing = kind == "timing"
        n = len(g)
        if timing:
            # on the cost model's scale: each workload's relative change times its parent's modelled cost
            total_ns = sum(
                (float(r.ratio) - 1) * parent_cost.get((str(r.engine), str(r.workload), str(baseline)), 0.0)
                for r in g.itertuples(index=False)
            )
            low, high = float(g["ratio"].min()) - 1, float(g["ratio"].max()) - 1
            size = f"{low:+.1%}" if n == 1 else f"{low:+.1%} to {high:+.1%}"
            total = f"{float(g['ratio'].mean()) - 1:+.1%} mean"
            per_workload = 0.0
        else:
            deltas = g["delta"].astype(float)
            total_ns = float(deltas.sum()) * cost.get(str(metric), 0.0)
            low, high = float(deltas.min()), float(deltas.max())
            size = signed_count(low) if low == high else f"{signed_count(low)} to {signed_count(high)}"
            total = f"{signed_count(deltas.sum())} summed"
            per_workload = abs(float(deltas.sum())) / n
        scale, digits = (1e3, 3) if timing else (1.0, 0)  # timings in ms
        rows = [
            LineageRow(
                workload=str(r.workload),
                link=f"{workload_page(r.workload)}#{quote(str(version))}-{quote(str(metric))}",
                direction=str(r.direction),
                value=_num(float(r.value) * scale, digits),
                parent=_num(float(r.baseline_value) * scale, digits),
                change=_change_text(r),
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
                kind=kind,
                direction=str(direction),
                count=n,
                size=size,
                total=total,
                cost_ns=total_ns,
                cost=_cost_text(total_ns, kind, str(metric)),
                noise=noise if timing else "",
                rows=rows,
                per_workload=per_workload,
            )
        )
    groups.sort(key=lambda g: (-abs(g.cost_ns), -g.per_workload, g.version, g.metric))
    return groups


def _cost_text(total_ns: float, kind: str, metric: str) -> str:
    if kind == "timing":
        return f"{total_ns / 1e3:+,.1f} µs at the parent's modelled cost"
    if metric == "modeled_ns":
        return f"{total_ns / 1e3:+,.1f} µs: the cost model's total"
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
class VersionState:
    """A version on the lineage view: what the run could compare, and its groups."""

    id: str
    parent: str
    title: str
    source: str
    state: str
    missing_parent: bool
    groups: list[LineageGroup]


def _version_states(data: ReportData, groups: list[LineageGroup]) -> list[VersionState]:
    measured = set(data.results["version"]) if not data.results.empty else set()
    rows = []
    for v in data.versions.itertuples(index=False):
        if v.engine == "canary":
            continue
        mine = [g for g in groups if g.version == v.id]
        missing = isinstance(v.parent, str) and v.parent not in measured
        if not isinstance(v.parent, str):
            state = "the root of the lineage"
        elif missing:
            state = (
                f"its parent {v.parent} was not measured in this run, so nothing is compared — measure "
                f"both: benchsvc run -V {v.parent},{v.id}"
            )
        elif not mine:
            state = "no difference from its parent on this run"
        else:
            state = f"{len(mine)} differences from its parent"
        rows.append(
            VersionState(
                id=str(v.id),
                parent=v.parent if isinstance(v.parent, str) else "—",
                title=str(v.title),
                source=str(v.source),
                state=state,
                missing_parent=missing,
                groups=mine,
            )
        )
    return rows


def _lineage(data: ReportData) -> str:
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
                    x=alt.X("change:Q", axis=alt.Axis(format="+%"), title="modelled cost against the parent"),
                    y=alt.Y("version:N", sort=list(data.versions["id"])),
                    color=alt.Color("workload:N"),
                    tooltip=["workload", "version", "baseline", alt.Tooltip("change:Q", format="+.1%")],
                )
                .properties(width=620),
            )
    groups = lineage_groups(data)
    versions = _version_states(data, groups)
    return page.render(
        saturation=_saturation_hook(data),
        latest=data.latest.run,
        groups=groups,
        versions=versions,
        missing=[v for v in versions if v.missing_parent],
        noise=_noise_text(data.latest.noise),
        footer="",
    )


# --- a workload ---------------------------------------------------------------------------------------


def _workload(data: ReportData, w: Any) -> str:
    import altair as alt

    page = _Page("workload.html", f"Workload {w.name}", depth=1)
    order = list(data.versions["id"])
    res = data.results[data.results["workload"] == w.name] if not data.results.empty else data.results
    table: dict[str, Any] | None = None
    warned: list[tuple[str, str]] = []
    scaling: list[dict[str, str]] = []
    if not res.empty:
        ok = res[res["status"] == "ok"].copy()
        ok["mean_ms"] = ok["mean_s"] * 1e3
        ok["low_ms"] = ok["ci_low_s"] * 1e3
        ok["high_ms"] = ok["ci_high_s"] * 1e3
        base = alt.Chart(ok[["version", "mean_ms", "low_ms", "high_ms"]]).encode(
            y=alt.Y("version:N", sort=order)
        )
        what = "one canary value" if w.canary else "the measured zap calls"
        timing = base.mark_point(filled=True).encode(
            x=alt.X("mean_ms:Q", title=f"mean time of {what} (ms)")
        ) + base.mark_rule().encode(x="low_ms:Q", x2="high_ms:Q")
        page.chart("timing", timing.properties(width=520))
        counter_cols = sorted(c for c in ok.columns if c.startswith("c_") and ok[c].notna().any())
        if counter_cols and not w.canary:
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
            page.chart(
                "counters",
                alt.Chart(long)
                .mark_bar()
                .encode(
                    y=alt.Y("version:N", sort=order),
                    x=alt.X("value:Q"),
                    tooltip=["version", "metric", "value"],
                )
                .add_params(pick)
                .transform_filter(alt.datum.metric == pick)
                .properties(width=520),
            )
        scaling = _scaling_hook(page, ok, order)
        by_version = {r["version"]: r for r in res.to_dict("records")}
        present = [v for v in order if v in by_version] + sorted(set(by_version) - set(order))

        def ms(r: dict[str, Any]) -> str:
            return _num((r["mean_s"] if r["mean_s"] is not None else math.nan) * 1e3, 3)

        def us(r: dict[str, Any]) -> str:
            return _num((r["modeled_ns"] if r["modeled_ns"] is not None else math.nan) / 1e3, 1)

        summary = [("status", "status", lambda r: r["status"]), ("time", "time (ms)", ms)]
        if not w.canary:
            summary.append(("modeled", "modeled (µs)", us))
        table = {
            "versions": present,
            "summary": [(rid, label, [get(by_version[v]) for v in present]) for rid, label, get in summary],
            "counters": []
            if w.canary
            else [(c[2:], [_num(by_version[v][c]) for v in present]) for c in counter_cols],
        }
        warned = [(v, "; ".join(by_version[v]["warnings"])) for v in present if by_version[v]["warnings"]]
    lineage = _lineage_rows(data)
    lin = lineage[lineage["workload"] == w.name] if not lineage.empty else lineage
    changed = lin[lin["significant"].astype(bool)] if not lin.empty else lin
    changes = [
        {
            "id": f"{r.version}-{r.metric}",
            "version": r.version,
            "baseline": r.baseline,
            "metric": r.metric,
            "direction": r.direction,
            # timings in ms, as in the table above
            "value": _num(float(r.value) * 1e3, 3) if r.kind == "timing" else _num(r.value),
            "parent": _num(float(r.baseline_value) * 1e3, 3)
            if r.kind == "timing"
            else _num(r.baseline_value),
            "change": _change_text(r),
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
        entry = {"host": host, "id": chart_id, "mode": night.run.mode, "nights": nights, "chart": False}
        if nights >= 2:
            chg = data.changes
            if not chg.empty:
                chg = chg[
                    (chg["machine"] == host) & ((chg["workload"] == w.name) | (chg["kind"] == "machine"))
                ]
            datasets: dict[str, Any] = {}
            _named(h[["version", "started_at", "mean_ms"]], datasets)
            kinds = []
            for kind, _ in HISTORY_MARKS:
                marks = chg[chg["kind"] == kind] if not chg.empty else chg
                if not marks.empty:
                    _named(marks[["version", "started_at", "label"]], datasets)
                    kinds.append(kind)
            page.chart(chart_id, json.loads(_history_spec(tuple(order), tuple(kinds))), datasets)
            entry["chart"] = True
        histories.append(entry)
    return page.render(
        w=w,
        scaling=scaling,
        canary=bool(w.canary),
        measured=not res.empty,
        table=table,
        warned=warned,
        changes=changes,
        histories=histories,
        noise=_noise_text(data.latest.noise) if data.latest else "",
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


def _feed(data: ReportData) -> str:
    """Open nightly findings and machine events as an Atom feed, each naming its machine (ElementTree: every
    text is escaped by the XML writer). Lineage differences are the versions' character, shown on the lineage
    view, not alerts."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        el = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            el.text = _clean(text)
        return el

    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "id", "urn:benchsvc:regressions")
    sub(feed, "title", "benchsvc: nightly findings and machine events")
    regs = data.regressions
    if not regs.empty:
        regs = regs[regs["axis"].isin(["nightly", "machine"])]
    updated = "1970-01-01T00:00:00Z"
    if not regs.empty:
        updated = max(regs["detected_at"]).strftime("%Y-%m-%dT%H:%M:%SZ")
    sub(feed, "updated", updated)
    for r in regs.itertuples(index=False):
        size = finding_size(r.details, r.effect, None, None)
        if r.axis == "machine":
            title = f"{r.machine}: {size}"
        else:
            title = (
                f"{r.machine}: {r.direction}: {r.metric} of {r.version} on {r.workload} ({size}, {r.axis})"
            )
        entry = sub(feed, "entry")
        sub(entry, "id", f"urn:benchsvc:regression:{r.id}")
        sub(entry, "title", title)
        sub(entry, "updated", f"{r.detected_at:%Y-%m-%dT%H:%M:%SZ}")
        sub(entry, "link", href=f"{workload_page(r.workload)}#{quote(r.version)}-{quote(r.metric)}")
        note = f"; note: {r.note}" if r.note else ""
        sub(entry, "content", f"{title}; status {r.status}; run {r.run_id}{note}", type="text")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(feed, encoding="unicode") + "\n"
