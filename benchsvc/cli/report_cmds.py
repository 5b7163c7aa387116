"""``benchsvc report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchsvc.cli.common import DbOption, open_db


def report(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Directory of the site: absent, empty, or a site benchsvc wrote (it is replaced whole; "
            "anything else is refused).",
        ),
    ] = Path("reports"),
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Only nights started at or after this UTC date or time (YYYY-MM-DD, ISO 8601 with an offset).",
        ),
    ] = None,
    machine: Annotated[
        str | None, typer.Option("--machine", help="Only this machine's runs (hostname).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the static HTML report: one card per version (what defines it against its parent), what
    changed tonight, one page per workload, the version lineage, an Atom feed. Every modelled cost is priced
    by one cost model, which the pages name; the simulated engine's timing is called the simulator's CPU
    time and is not ranked among kernel-cost differences (docs/report.md).

    The pages open from the file system with no network (the chart JavaScript is written once, under
    assets/, and nothing outside the site is requested). The site is
    written beside --out and swapped in at once, so a reader never sees a half-written site; files whose
    content did not change are not rewritten (docs/limits.md).
    """
    from benchsvc.cli.analysis_cmds import _date

    since_at = _date(since, "--since")
    writing = False
    try:
        from benchsvc.records import utcnow
        from benchsvc.report.collect import collect
        from benchsvc.report.publish import check_out_dir
        from benchsvc.report.site import build_site, write_site
        from benchsvc.store.cost_models import cost_model_for
        from benchsvc.store.db import read_session
        from benchsvc.store.queries import NotFound, run_hostnames

        check_out_dir(out)
        engine = open_db(db, create=False)
        with read_session(engine) as s:
            hosts = run_hostnames(s)
            if not hosts:
                raise NotFound(
                    "the database has no runs yet, so there is nothing to report — run benchsvc run "
                    "(or benchsvc import results) first"
                )
            if machine is not None and machine not in hosts:
                raise NotFound(f"no run from machine {machine!r} — give one of: {', '.join(hosts)}")
            data = collect(s, since=since_at, machine=machine)
            # every cost is priced by the latest calibrated model of the machine whose night leads the site
            model = cost_model_for(s, data.latest.run.hostname if data.latest else machine)
        files = build_site(
            data, cost_model=model, generated_at=utcnow().replace(microsecond=0) if data.latest else None
        )
        writing = True
        written, unchanged = write_site(files, out)
    except KeyboardInterrupt:
        if writing:
            said = f"interrupted while writing: the site is published whole or not at all, {out} keeps the previous one"
        else:
            said = f"interrupted before writing: nothing was written, {out} is as it was"
        typer.echo(said, err=True)
        raise typer.Exit(130) from None
    typer.echo(f"report: {out / 'index.html'} ({written} files written, {unchanged} unchanged)")
