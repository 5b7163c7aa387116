"""``benchsvc report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from benchsvc.cli.common import DbOption, open_db


def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory of the site.")] = Path("reports"),
    since: Annotated[
        str | None, typer.Option("--since", help="Only nights from this date (YYYY-MM-DD).")
    ] = None,
    machine: Annotated[
        str | None, typer.Option("--machine", help="Only this machine's runs (hostname).")
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the static HTML report: overview, one page per workload, the version lineage, an Atom feed.

    The pages open from the file system with no network (the chart JavaScript is inlined). The site is
    written beside --out and swapped in at once, so a reader never sees a half-written site; files whose
    content did not change are not rewritten (docs/limits.md).
    """
    from benchsvc.cli.analysis_cmds import _date
    from benchsvc.records import utcnow
    from benchsvc.report.collect import collect
    from benchsvc.report.publish import check_out_dir
    from benchsvc.report.site import build_site, write_site
    from benchsvc.store.db import read_session

    check_out_dir(out)
    engine = open_db(db, create=False)
    with read_session(engine) as s:
        data = collect(s, since=_date(since, "--since"), machine=machine)
    files = build_site(data, generated_at=utcnow().replace(microsecond=0) if data.latest_run else None)
    written, unchanged = write_site(files, out)
    typer.echo(f"report: {out / 'index.html'} ({written} files written, {unchanged} unchanged)")
