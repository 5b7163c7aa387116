"""The scaling chart: modelled throughput against CPUs, one line per version, N* marked
(docs/contention.md).

Self-contained so that any page can show it: :func:`scaling_rows` turns the stored ``scale_*`` metrics of a
run's results (or :class:`~benchsvc.analysis.contention.ScaleCurve` objects) into rows, :func:`scaling_chart`
builds the Altair chart, :func:`saturation_table` the "saturates from N CPUs" rows a page prints beside it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from benchsvc.analysis.contention import STORED_PREFIX, ScaleCurve

_OPS_COL = re.compile(rf"^(?:c_)?{STORED_PREFIX}ops_s_n(\d+)$")
_NSTAR_COLS = (f"c_{STORED_PREFIX}n_star_centi", f"{STORED_PREFIX}n_star_centi")


def rows_from_curves(curves: Iterable[ScaleCurve]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, marks) frames from curves: points have version, cpus, ops_s, speedup; marks version, n_star."""
    pts = [
        {"version": c.version, "cpus": p.cpus, "ops_s": p.throughput_ops_s, "speedup": p.speedup}
        for c in curves
        for p in c.points
    ]
    marks = [{"version": c.version, "n_star": c.n_star} for c in curves if c.n_star is not None]
    return pd.DataFrame(pts, columns=["version", "cpus", "ops_s", "speedup"]), pd.DataFrame(
        marks, columns=["version", "n_star"]
    )


def scaling_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(points, marks) from one workload's result rows carrying the stored ``c_scale_*`` columns (a result
    without them, e.g. the live kernel's or one stored before the model existed, is left out)."""
    pts: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    ncol = next((c for c in _NSTAR_COLS if c in results.columns), None)
    cols = {int(m.group(1)): c for c in results.columns if (m := _OPS_COL.match(str(c)))}
    for r in results.to_dict("records"):
        values = {n: r[c] for n, c in cols.items() if r[c] is not None and not _isnan(r[c])}
        if 1 not in values or not values[1]:
            continue
        for n, v in sorted(values.items()):
            pts.append(
                {"version": r["version"], "cpus": n, "ops_s": float(v), "speedup": float(v) / values[1]}
            )
        if ncol is not None and r[ncol] is not None and not _isnan(r[ncol]):
            marks.append({"version": r["version"], "n_star": float(r[ncol]) / 100})
    return pd.DataFrame(pts, columns=["version", "cpus", "ops_s", "speedup"]), pd.DataFrame(
        marks, columns=["version", "n_star"]
    )


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


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
                "saturates": "never (no split-queue lock taken)"
                if ns is None
                else f"from {math.ceil(ns)} CPUs",
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
