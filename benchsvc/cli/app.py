"""The Typer application and the error edge.

Commands live one group per module and import their heavy dependencies inside the command body, so that
``benchsvc --help`` only imports Typer. A :class:`~benchsvc.errors.BenchsvcError` becomes one line on stderr
(``Error: ...``) and exit code 1; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import sys

import typer

from benchsvc import __version__
from benchsvc.cli import (
    analysis_cmds,
    calibrate_cmds,
    crosscheck_cmds,
    db_cmds,
    engine_cmds,
    exchange_cmds,
    report_cmds,
    run_cmds,
    scale_cmds,
    schedule_cmds,
    workloads_cmds,
)

app = typer.Typer(
    name="benchsvc",
    help="Benchmark the Linux large-folio batch-zap patch versions: simulate, measure, store, report.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"benchsvc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Benchmark the Linux large-folio batch-zap patch versions: simulate, measure, store, report."""


app.command("run")(run_cmds.run)
app.command("runs")(run_cmds.runs)
app.command("show")(run_cmds.show)
app.command("schedule")(schedule_cmds.schedule)
app.command("compare")(analysis_cmds.compare)
app.command("history")(analysis_cmds.history)
app.command("analyze")(analysis_cmds.analyze)
app.add_typer(analysis_cmds.regressions_app, name="regressions")
app.command("evaluate")(analysis_cmds.evaluate)
app.command("report")(report_cmds.report)
app.command("versions")(engine_cmds.versions)
app.command("simulate")(engine_cmds.simulate)
app.command("crosscheck")(crosscheck_cmds.crosscheck)
app.command("calibrate")(calibrate_cmds.calibrate)
app.command("scale")(scale_cmds.scale)
app.add_typer(workloads_cmds.app, name="workloads")
app.add_typer(db_cmds.app, name="db")
app.command("export")(exchange_cmds.export)
app.command("import")(exchange_cmds.import_files)


def run(argv: list[str] | None = None) -> None:
    from benchsvc.cli.common import forget_db
    from benchsvc.errors import BenchsvcError

    forget_db()
    _tolerant_streams()
    try:
        app(args=argv, prog_name="benchsvc")
    except BenchsvcError as exc:
        _fail(str(exc))
    except Exception as exc:
        message = _database_error(exc)
        if message is None:
            raise  # a bug: keep the traceback
        _fail(message)


def _tolerant_streams() -> None:
    """Output never fails on a character the terminal's encoding lacks (``LANG=C``, ``PYTHONIOENCODING=ascii``)
    or on a lone surrogate (bytes that were not UTF-8): such a character is written as a backslash escape."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a stream that cannot change now (closed)
                reconfigure(errors="backslashreplace")


def _fail(message: str) -> None:
    from benchsvc.safe_text import clean

    # one line, and no terminal control character from a stored string (a hostname, a path) in it
    one_line = clean(" ".join(message.split("\n")))
    print(f"Error: {one_line}", file=sys.stderr)
    sys.exit(1)


def _database_error(exc: Exception) -> str | None:
    """The one place where a database error (read-only, disk full, damaged file, not a database, server
    gone ...) becomes a message; anything else is a bug and None."""
    if not type(exc).__module__.startswith(("sqlalchemy", "sqlite3", "psycopg")):
        return None
    from benchsvc.cli.common import db_in_use
    from benchsvc.store.db import database_error_message

    return database_error_message(exc, db_in_use())
