"""``benchsvc calibrate``: fit the cost model to this machine's live kernel and store it (docs/cost-model.md)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from benchsvc.cli.common import DbOption, int_range, open_db
from benchsvc.cli.output import Format, render


def _eta(done: int, total: int, secs: float) -> str:
    if done == 0:
        return "?"
    left = secs / done * (total - done)
    return f"{left:.0f} s" if left < 90 else f"{left / 60:.1f} min"


def calibrate(
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            help="Measure every layout of the suite this many times (interleaved); the fit uses the medians.",
            callback=int_range("--rounds", 1, 100),
        ),
    ] = 9,
    show: Annotated[
        bool, typer.Option("--show", help="Measure nothing: list the calibrations stored for this machine.")
    ] = False,
    store: Annotated[
        bool, typer.Option("--store/--no-store", help="Store the fitted model in the database (default).")
    ] = True,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
    db: DbOption = None,
) -> None:
    """Measure the calibration suite on the live kernel, fit the cost model's coefficients to it and store
    the machine's cost model; print the coefficients with their intervals and the hold-out error.

    The suite: 72 layouts over folio sizes 16KiB-2MiB, region sizes, offsets and call patterns (whole
    munmap, one page of each folio, every 4th folio, straddling, MADV_DONTNEED, in a forked child,
    PMD-mapped THPs), each measured --rounds times, interleaved, with the kernel engine's discipline (mTHP
    'madvise' only, sysfs restored). The fit is for the simulated version that models the running kernel
    (up615 from 6.15). From then on simulate, show, compare, export and crosscheck price every simulated
    version with this model and name it. Needs root and a kernel with per-size mTHP (6.8+).
    """
    import socket

    from benchsvc.store.cost_models import list_rows

    if show:
        from benchsvc.store.db import read_session

        engine = open_db(db, create=False)
        with read_session(engine) as s:
            stored_rows = [
                {
                    "id": r.id,
                    "date": r.created_at.strftime("%Y-%m-%d %H:%M"),
                    "kernel": r.kernel_release,
                    "version": r.version,
                    "suite": r.suite_hash,
                    "holdout_median": f"{r.holdout_median:.1%}",
                    "holdout_worst": f"{r.holdout_worst:.1%}",
                }
                for r in list_rows(s, socket.gethostname())
            ]
        if not stored_rows and fmt is not Format.json:
            typer.echo(f"no calibration stored for {socket.gethostname()} — run benchsvc calibrate")
            return
        cols = list(stored_rows[0]) if stored_rows else ["id"]
        render(stored_rows, cols, fmt, title=f"calibrations of {socket.gethostname()}")
        return

    from benchsvc.calibration import calibrate as run_calibration
    from benchsvc.calibration.suite import suite

    specs = suite()
    if store:
        engine = open_db(db)  # a database problem is reported before minutes of measuring

    def progress(done: int, total: int, secs: float) -> None:
        typer.echo(
            f"calibrate: {done}/{total} layout runs measured, {secs:.0f} s, ETA {_eta(done, total, secs)}",
            err=True,
        )

    typer.echo(f"calibrate: {len(specs)} layouts x {rounds} rounds on the live kernel", err=True)
    cal = run_calibration(rounds=rounds, progress=progress, specs=specs)
    f = cal.fit
    stored = ""
    if store:
        from benchsvc.store.cost_models import save
        from benchsvc.store.db import write_session

        with write_session(engine) as s:
            row = save(s, cal)
            stored = f"stored as cost model {row.id}"
    merged_into = {m: lead for lead, members in f.groups.items() for m in members if m != lead}
    rows: list[dict[str, Any]] = []
    for name, ns in f.coefficients.items():
        if name in f.unexercised or name not in f.intervals:
            continue
        lo, hi = f.intervals[name]
        rows.append(
            {
                "counter": name,
                "ns_per_event": round(ns, 2),
                "interval_5_95": f"{lo:.1f} - {hi:.1f}",
                "shares_with": merged_into.get(name, ""),
            }
        )
    summary = (
        f"{cal.model.label()}; {f.layouts} layouts, in-sample error {f.in_sample_median:.1%} median / "
        f"{f.in_sample_worst:.1%} worst; leave-one-layout-out (hold-out) error {f.holdout_median:.1%} median / "
        f"{f.holdout_worst:.1%} worst; {cal.measurements.seconds:.0f} s of measuring ({cal.load})"
    )
    if fmt is Format.json:
        doc = {
            "model": cal.model.label(),
            "provenance": dict(cal.model.provenance),
            "coefficients": f.coefficients,
            "intervals": f.intervals,
            "merged": f.groups,
            "unexercised": f.unexercised,
            "quality": f.quality(),
            "holdout_errors": f.holdout_errors,
            "not_reproduced": cal.measurements.failures,
            "stored": stored or None,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    render(
        rows,
        ["counter", "ns_per_event", "interval_5_95", "shares_with"],
        fmt,
        title=f"cost model of {cal.hostname}",
    )
    if cal.measurements.failures:
        typer.echo(f"not reproduced (left out of the fit): {', '.join(cal.measurements.failures)}")
    typer.echo(summary)
    typer.echo(f"hold-out error: {f.holdout_median:.1%} median, {f.holdout_worst:.1%} worst")
    if stored:
        typer.echo(stored)
