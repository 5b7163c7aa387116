"""The scaling chart: modelled throughput against CPUs, one line per version, N* marked
(docs/contention.md).

Self-contained so that any page can show it: :func:`scaling_rows` turns the stored ``scale_*`` metrics of a
run's results (or :func:`rows_from_curves` :class:`~benchsvc.analysis.contention.ScaleCurve` objects) into
rows, :func:`scaling_chart` builds the Altair chart, :func:`saturation_table` the "saturates from N CPUs" rows
a page prints beside it, :func:`scaling_block` all of it for one page (the ``scaling.html`` macro shows it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from benchsvc.analysis.contention import (
    MAX_CPUS,
    STORED_PREFIX,
    ScaleCurve,
    n_star_of,
    throughput_from_stored,
)

_ADDED_COL = re.compile(rf"^c_{STORED_PREFIX}added_ns_n(\d+)$")


def rows_from_curves(curves: Iterable[ScaleCurve]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, marks) frames from curves: points have version, cpus, ops_s, speedup; marks version, n_star."""
    pts = [
        {"version": c.version, "cpus": p.cpus, "ops_s": p.throughput_ops_s, "speedup": p.speedup}
        for c in curves
        for p in c.points
    ]
    marks = [{"version": c.version, "n_star": c.n_star} for c in curves if c.n_star is not None]
    return _frames(pts, marks)


def scaling_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, marks) from result rows (one workload) that carry the stored ``c_scale_added_ns_n<N>`` columns
    beside ``modeled_ns`` and ``c_ds_lock``: X(N) = N / (modeled_ns + added_ns(N)); N* from the counters. A
    result without them (the live kernel's, or one stored before the model existed) is left out."""
    pts: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    cols = {int(m.group(1)): c for c in results.columns if (m := _ADDED_COL.match(str(c)))}
    if not cols or "modeled_ns" not in results.columns:
        return _frames(pts, marks)
    for r in results.to_dict("records"):
        t = r.get("modeled_ns")
        if t is None or _isnan(t) or t <= 0:
            continue
        added = {n: float(r[c]) for n, c in cols.items() if r[c] is not None and not _isnan(r[c])}
        if 1 not in added:
            continue
        x1 = throughput_from_stored(1, t, added[1])
        for n, a in sorted(added.items()):
            x = throughput_from_stored(n, t, a)
            pts.append({"version": r["version"], "cpus": n, "ops_s": x, "speedup": x / x1})
        ds = r.get("c_ds_lock")
        ns = None if ds is None or _isnan(ds) else n_star_of({"ds_lock": int(ds)}, float(t))
        if ns is not None:
            marks.append({"version": r["version"], "n_star": ns})
    return _frames(pts, marks)


def _frames(pts: list[dict[str, Any]], marks: list[dict[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.DataFrame(pts, columns=["version", "cpus", "ops_s", "speedup"]), pd.DataFrame(
        marks, columns=["version", "n_star"]
    )


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def saturation_text(n_star: float | None) -> str:
    """ "from N CPUs" (ceil N*), or why never within the model's 256 CPUs."""
    if n_star is None:
        return "never (takes no split-queue lock)"
    n = max(1, math.ceil(n_star))
    if n > MAX_CPUS:
        return f"not within {MAX_CPUS} CPUs"
    return f"from {n} CPUs"


def saturation_table(points: pd.DataFrame, marks: pd.DataFrame, order: Sequence[str]) -> list[dict[str, str]]:
    """Per version: N* and the CPU count from which one memcg's split-queue lock is saturated (ceil N*), or
    that it never is (the stream takes no lock)."""
    out = []
    have = set(points["version"]) if not points.empty else set()
    nstar = dict(zip(marks["version"], marks["n_star"], strict=True)) if not marks.empty else {}
    for v in [*[v for v in order if v in have], *sorted(have - set(order))]:
        ns = nstar.get(v)
        top = points[points["version"] == v].sort_values("cpus").iloc[-1]
        out.append(
            {
                "version": v,
                "n_star": "—" if ns is None else f"{ns:.1f}",
                "saturates": saturation_text(ns),
                "best": f"{top['speedup']:.1f}× at {int(top['cpus'])} CPUs",
            }
        )
    return out


def scaling_chart(
    points: pd.DataFrame, marks: pd.DataFrame, order: Sequence[str], *, width: int = 520
) -> Any:
    """Throughput (zap streams per second) against CPUs on log-log axes, one line per version; a dashed
    rule at each version's N* (where the lock saturates)."""
    import altair as alt

    color = alt.Color("version:N", sort=list(order))
    lines = (
        alt.Chart(points)
        .mark_line(point=True)
        .encode(
            x=alt.X("cpus:Q", scale=alt.Scale(type="log", base=2), title="CPUs (one memcg)"),
            y=alt.Y("ops_s:Q", scale=alt.Scale(type="log"), title="modelled throughput (zap streams / s)"),
            color=color,
            tooltip=[
                "version:N",
                "cpus:Q",
                alt.Tooltip("ops_s:Q", format=",.0f"),
                alt.Tooltip("speedup:Q", format=".1f"),
            ],
        )
    )
    chart = lines
    if not marks.empty:
        rules = (
            alt.Chart(marks)
            .mark_rule(strokeDash=[4, 3])
            .encode(
                x="n_star:Q",
                color=color,
                tooltip=["version:N", alt.Tooltip("n_star:Q", format=".1f", title="N*")],
            )
        )
        chart = lines + rules
    return chart.properties(width=width, height=260)


def scaling_block(
    results: pd.DataFrame, order: Sequence[str], *, by: str = "version"
) -> tuple[Any, list[dict[str, str]]] | None:
    """(chart, saturation rows) for one workload's results of a run, or None when none carries the model's
    stored metrics. ``by="workload"`` draws one line per workload instead (a version's card: pass that
    version's results over all workloads, with a ``workload`` column)."""
    if by == "workload":
        results = results.assign(version=results["workload"])
    points, marks = scaling_rows(results)
    if points.empty:
        return None
    return scaling_chart(points, marks, order), saturation_table(points, marks, order)
