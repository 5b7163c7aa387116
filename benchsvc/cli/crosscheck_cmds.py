"""``benchsvc crosscheck``: the simulated version of the running release against the live kernel.

See docs/kernel-oracle.md.
"""

from __future__ import annotations

from typing import Annotated

import typer

from benchsvc.cli.common import DbOption
from benchsvc.cli.output import Format, render

COLUMNS = ["workload", "counter", "sim", "kernel", "agree", "status"]
JSON_COLUMNS = [*COLUMNS, "reason"]


def crosscheck(
    workloads: Annotated[
        list[str] | None,
        typer.Argument(help="Workload files or names of shipped workloads (default: every shipped one)."),
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    trace: Annotated[
        bool,
        typer.Option(
            "--trace/--no-trace",
            help="Also compare tlb_flushes, folios_freed and pages_freed from the kernel's tracepoints "
            "(tracefs is mounted for the run if needed, and left as found).",
        ),
    ] = True,
    db: DbOption = None,
) -> None:
    """Run each workload the kernel can express on the live kernel and on the simulated version of its
    release (up615 from 6.15, up612 for 6.12-6.14); compare counter by counter.

    Compared: split_deferred, partially_mapped_after, anon_fault_alloc (kernel) against the number of
    folios of the layout, with tracing tlb_flushes, folios_freed and pages_freed, and (workloads whose
    steps are all measured and none is exit) the change of the region's VMA count against vma_splits minus
    vmas_removed and the PMD splits (thp_split_pmd) against pmd_splits. Then, per workload, the kernel's
    measured time of the zap calls beside the time the machine's latest cost model predicts (benchsvc
    calibrate; the reference model without one). Workloads the kernel cannot express are skipped with the
    reason. Exits 1 on any counter disagreement, when the kernel did not reproduce a layout, or when the
    kernel (or its tracepoints) cannot be used here; the times never fail.
    """
    from benchsvc.cli.engine_cmds import machine_model
    from benchsvc.crosscheck import crosscheck as run_crosscheck
    from benchsvc.workload import discover, load_workload, resolve

    specs = [resolve(w) for w in workloads] if workloads else [load_workload(p) for p in discover()]
    model = machine_model(db)
    report = run_crosscheck(specs, trace=trace, cost=model)
    rows = report.rows()
    times = {r["workload"]: r for r in report.time_rows()}
    if fmt is Format.json:
        for r in rows:
            t = times.get(str(r["workload"]))
            r["predicted_ns"] = None if t is None else t["predicted_ns"]
            r["measured_ns"] = None if t is None else t["measured_ns"]
            r["priced_by"] = model.label() if t is not None else None
        render(rows, [*JSON_COLUMNS, "predicted_ns", "measured_ns", "priced_by"], fmt)
    else:
        table_rows = [
            {
                **r,
                "counter": r["counter"] or "-",
                "agree": "" if r["agree"] is None else ("yes" if r["agree"] else "no"),
                "status": f"{r['status']}: {r['reason']}" if r["counter"] is None else r["status"],
            }
            for r in rows
        ]
        render(table_rows, COLUMNS, fmt, title=f"{report.version} (sim) vs the live kernel")
        if times:
            render(
                [
                    {
                        "workload": t["workload"],
                        "predicted_us": f"{float(t['predicted_ns']) / 1e3:.1f}",  # type: ignore[arg-type]
                        "measured_us": f"{float(t['measured_ns']) / 1e3:.1f}",  # type: ignore[arg-type]
                        "measured/predicted": f"{float(t['ratio']):.2f}",  # type: ignore[arg-type]
                    }
                    for t in times.values()
                ],
                ["workload", "predicted_us", "measured_us", "measured/predicted"],
                fmt,
                title=f"kernel time (one traced run, wall) vs predicted by the {model.label()}",
            )
    failures = report.failures
    if failures:
        listed = ", ".join(f"{w.workload} ({w.status})" for w in failures)
        typer.echo(f"Error: crosscheck failed for {len(failures)} workload(s): {listed}", err=True)
        raise typer.Exit(1)
