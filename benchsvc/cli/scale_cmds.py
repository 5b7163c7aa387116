"""``benchsvc scale``: the split-queue lock contention model (docs/contention.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from benchsvc.cli.common import DbOption
from benchsvc.cli.engine_cmds import machine_model
from benchsvc.cli.output import Format, render, write_json

if TYPE_CHECKING:
    from benchsvc.analysis.contention import ScaleCurve

DEFAULT_CPUS_TEXT = "1,2,4,8,16,32,64,128,256"
LONG_COLUMNS = [
    "workload",
    "version",
    "cpus",
    "memcgs",
    "throughput_ops_s",
    "speedup",
    "lock_utilisation",
    "p_wait",
    "mean_wait_ns",
    "p99_wait_ns",
    "added_ns_per_op",
    "n_star",
]


def scale(
    workload: Annotated[str, typer.Argument(help="A workload file, or the name of a shipped workload.")],
    cpus: Annotated[
        str, typer.Option("--cpus", help="Comma list of CPU counts, each 1..256.")
    ] = DEFAULT_CPUS_TEXT,
    memcgs: Annotated[
        int, typer.Option("--memcgs", help="Spread the CPUs round-robin over this many memory cgroups.")
    ] = 1,
    shrinker: Annotated[
        bool, typer.Option("--shrinker", help="The deferred-split shrinker runs too (one more lock holder).")
    ] = False,
    version: Annotated[
        list[str] | None,
        typer.Option(
            "--version", "-V", help="Version id; repeat it, give a comma list, or 'all' (the default)."
        ),
    ] = None,
    hold_ns: Annotated[
        float | None,
        typer.Option("--hold-ns", help="Critical section per acquisition (ns); default: measured."),
    ] = None,
    handoff_ns: Annotated[
        float | None, typer.Option("--handoff-ns", help="Cache-line hand-off per contended acquisition (ns).")
    ] = None,
    cost: Annotated[
        Path | None, typer.Option("--cost", help="TOML file of cost coefficients (counter = ns per event).")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Also write the throughput chart to this SVG file.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Model WORKLOAD's zap stream on many CPUs sharing the deferred split queue's lock: per version, X(1)
    and the speed-up X(N)/X(1) on each CPU count, and N* (table); throughput X(N), lock utilisation, P(wait),
    mean and p99 wait and added ns per zap stream (csv, json). Deterministic: a seeded simulation priced by
    the cost model: this machine's latest calibrated model from the database (benchsvc calibrate), the
    reference model without one, or --cost FILE; the table names it."""
    from benchsvc.analysis.contention import LockParams, parse_cpus, sweep
    from benchsvc.engine import CostModel
    from benchsvc.engine.versions import resolve_versions
    from benchsvc.errors import ScaleInputError
    from benchsvc.workload import resolve

    counts = parse_cpus(cpus)
    if memcgs < 1:
        raise ScaleInputError(f"--memcgs {memcgs}: need at least one memory cgroup — give 1 or more")
    for name, value in (("--hold-ns", hold_ns), ("--handoff-ns", handoff_ns)):
        if value is not None and not value >= 0:
            raise ScaleInputError(f"{name} {value}: not a non-negative number of ns — give e.g. 40")
    spec = resolve(workload)
    model = CostModel.from_file(cost) if cost else machine_model(db)
    base = LockParams()
    params = LockParams(
        hold_ns=base.hold_ns if hold_ns is None else hold_ns,
        handoff_ns=base.handoff_ns if handoff_ns is None else handoff_ns,
        shrinker=shrinker,
    )
    curves = sweep(spec, resolve_versions(version), counts, memcgs=memcgs, params=params, cost=model)
    if chart is not None:
        _write_chart(chart, curves)
    if fmt is Format.table:
        rows: list[dict[str, object]] = []
        for c in curves:
            row: dict[str, object] = {
                "version": c.version,
                "ds_lock/op": c.acquisitions_per_op,
                "N*": None if c.n_star is None else round(c.n_star, 1),
                "X(1)/s": round(1e9 / c.op_ns, 1),
            }
            for p in c.points:
                row[f"x{p.cpus}"] = round(p.speedup, 2)
            rows.append(row)
        cols = ["version", "ds_lock/op", "N*", "X(1)/s", *[f"x{n}" for n in counts]]
        render(
            rows,
            cols,
            fmt,
            title=f"{spec.name}: speed-up X(N)/X(1) on N CPUs in {memcgs} memcg(s), X(1) in zap streams/s"
            + (", shrinker on" if shrinker else "")
            + f" — {model.label()}",
        )
        return
    if fmt is Format.json:
        write_json([c.as_json() for c in curves])
        return
    long = [
        {"workload": c.workload, "version": c.version, "n_star": c.n_star, **p.as_json()}
        for c in curves
        for p in c.points
    ]
    render(long, LONG_COLUMNS, fmt)


def _write_chart(path: Path, curves: list[ScaleCurve]) -> None:
    import vl_convert

    from benchsvc.errors import BenchsvcError
    from benchsvc.report.scaling import rows_from_curves, scaling_chart

    points, marks = rows_from_curves(curves)
    spec = scaling_chart(points, marks, [c.version for c in curves]).to_dict()
    try:
        path.write_text(vl_convert.vegalite_to_svg(spec), encoding="utf-8")
    except OSError as exc:
        raise BenchsvcError(f"--chart {path}: cannot write: {exc.strerror} — give a writable path") from None
