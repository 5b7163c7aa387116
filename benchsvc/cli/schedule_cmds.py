"""``benchsvc schedule``."""

from __future__ import annotations

from typing import Annotated

import typer

from benchsvc.cli.common import DbOption


def schedule(
    at: Annotated[
        str, typer.Option("--at", help="Time of day for the nightly run (HH:MM, local time).")
    ] = "02:30",
    install: Annotated[
        bool, typer.Option("--install", help="Write the systemd user timer + service and enable the timer.")
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="Schedule the quick mode instead of the default (its nights compare counters only: no timing "
            "alerts, creeps or machine events).",
        ),
    ] = False,
    engine_name: Annotated[
        str,
        typer.Option(
            "--engine",
            metavar="ENGINE",
            help="Passed to benchsvc run: sim, kernel or all (the kernel engine needs root).",
        ),
    ] = "sim",
    db: DbOption = None,
) -> None:
    """Print a cron line and a systemd user timer + service for the nightly run, or install the timer."""
    from benchsvc.runner.matrix import check_engine
    from benchsvc.schedule import install_timer, nightly_job

    check_engine(engine_name)
    extra = (("--quick",) if quick else ()) + (("--engine", engine_name) if engine_name != "sim" else ())
    job = nightly_job(at, db, extra)
    if install:
        for line in install_timer(job):
            typer.echo(line)
        return
    typer.echo(f"# crontab -e, then add:\n{job.cron_line()}\n")
    typer.echo(f"# ~/.config/systemd/user/benchsvc-nightly.service\n{job.service_unit()}")
    typer.echo(f"# ~/.config/systemd/user/benchsvc-nightly.timer\n{job.timer_unit()}")
    typer.echo("# or let benchsvc write and enable both: benchsvc schedule --install")
