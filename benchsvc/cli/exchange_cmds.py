"""``benchsvc export`` and ``benchsvc import``: results as JSON Lines or CSV, and back (docs/formats.md)."""

from __future__ import annotations

import contextlib
import enum
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from benchsvc.cli.common import DbOption, open_db


class ExportFormat(enum.StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def export(
    run: Annotated[
        str | None, typer.Option("--run", metavar="RUN", help="Only this run: its id or a uuid prefix.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Only runs started at or after this UTC date or time (YYYY-MM-DD, ISO 8601).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DATE",
            help="Only runs started up to this UTC date (the whole day) or time, inclusive.",
        ),
    ] = None,
    workload: Annotated[
        str | None, typer.Option("--workload", metavar="NAME", help="Only this workload (by name).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", metavar="ID", help="Only this version id.")
    ] = None,
    engine: Annotated[
        str | None, typer.Option("--engine", metavar="ENGINE", help="Only this engine (sim, kernel).")
    ] = None,
    machine: Annotated[
        str | None,
        typer.Option("--machine", metavar="HOST", help="Only this machine: hostname or fingerprint prefix."),
    ] = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", "-f", help="jsonl: benchsvc-result/1, everything; csv: summaries, counters."
        ),
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write to this file instead of stdout."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Export results with their provenance, raw values and counters as JSON Lines, or as CSV.

    The JSON Lines output reads back with benchsvc import; the same results give the same bytes from any
    database. The formats are described in docs/formats.md.
    """
    from benchsvc.store.db import read_session
    from benchsvc.store.exchange import ExchangeError, ExportFilter, export_csv, export_jsonl, parse_when

    flt = ExportFilter(
        run=run,
        since=parse_when(since, "--since") if since else None,
        until=parse_when(until, "--until", end=True) if until else None,
        workload=workload,
        version=version,
        engine=engine,
        machine=machine,
    )
    write = export_csv if fmt is ExportFormat.csv else export_jsonl
    engine_ = open_db(db, create=False)
    try:
        with read_session(engine_) as session:
            if output is None:
                try:
                    write(session, flt, sys.stdout)
                    sys.stdout.flush()
                except BrokenPipeError:
                    raise
                except OSError as exc:
                    raise ExchangeError(
                        f"cannot write the export to standard output: {exc.strerror or exc} — "
                        "free space where it goes, or write to a file with -o FILE"
                    ) from None
                return
            n = _export_to_file(output, lambda out: write(session, flt, out))
    finally:
        engine_.dispose()
    typer.echo(f"{output}: {n} results")


def _export_to_file(output: Path, write: Callable[[TextIO], int]) -> int:
    """Write the export into a temporary file beside ``output`` and rename it over ``output`` once complete,
    so that a full disk, an error or Ctrl-C never leaves a truncated FILE (nor removes an older one). A FILE
    that is not a regular file (``/dev/stdout``, a FIFO) is written directly; a symlink's target is replaced."""
    from benchsvc.store.exchange import ExchangeError

    target = Path(os.path.realpath(output))
    if target.exists() and not target.is_file():
        try:
            with target.open("w", encoding="utf-8", newline="") as out:
                return write(out)
        except OSError as exc:
            raise ExchangeError(f"cannot write {output}: {exc.strerror or exc}") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise ExchangeError(
            f"cannot write {output}: {exc.strerror or exc} — check that {target.parent} exists and is writable"
        ) from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # the mode open() would have given a new file
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            n = write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ExchangeError(
            f"cannot write {output}: {exc.strerror or exc} — free space there (or give another -o FILE) and "
            f"export again; {output} was left as it was"
        ) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return n


def import_files(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="benchsvc-result/1 JSON Lines files or pyperf JSON files (.json, .json.gz).",
            show_default=False,
        ),
    ],
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine", metavar="ENGINE", help="Engine of pyperf benchmarks that do not name theirs."
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            "--version", metavar="ID", help="Version id of pyperf benchmarks that do not name theirs."
        ),
    ] = None,
    workload: Annotated[
        str | None,
        typer.Option(
            "--workload",
            metavar="WORKLOAD",
            help="Workload (name or .toml path) of pyperf benchmarks; its file gives the content hash.",
        ),
    ] = None,
    db: DbOption = None,
) -> None:
    """Import results from JSON Lines files written by benchsvc export, or from pyperf JSON files.

    Every file is checked completely before anything is written; a bad line is reported as FILE:LINE and
    nothing is imported. Each file is then written in one transaction. Results already in the database are
    skipped, so importing a file twice adds nothing. The finished runs imported are then analysed as
    benchsvc analyze does (oldest night first; a run analysed before is not analysed again).
    """
    from benchsvc.store.db import read_session, write_session
    from benchsvc.store.exchange import PyperfDefaults, check_versions, read_import_file, store_batch

    defaults = PyperfDefaults(engine=engine, version=version, workload=workload)
    done: list[Path] = []
    try:
        batches = [read_import_file(path, defaults) for path in files]
        check_versions(None, batches)  # the files against each other, before a database is opened or created
        engine_ = open_db(db)
        try:
            with read_session(engine_) as session:
                check_versions(session, batches)  # and against the database, before any file is written
            for path, batch in zip(files, batches, strict=True):
                with write_session(engine_) as session:
                    counts = store_batch(session, batch)
                done.append(path)
                typer.echo(f"{counts.label}: {counts.added} results added, {counts.already} already there")
            _analyse_imported(engine_, [group.record.uuid for batch in batches for group in batch.runs])
        finally:
            engine_.dispose()
    except KeyboardInterrupt:
        # each file is written in one transaction: the one being written was rolled back
        left = [str(p) for p in files if p not in done]
        if not done:
            message = "nothing was imported (each file is one transaction)"
        elif left:
            message = (
                f"imported {', '.join(map(str, done))}; not imported: {', '.join(left)} "
                "— import those again to finish (each file is one transaction)"
            )
        else:  # every file was written: the analysis of the imported runs was cut short
            message = (
                f"imported {', '.join(map(str, done))}, but their analysis was cut short "
                "— run benchsvc analyze to finish it"
            )
        typer.echo(f"interrupted: {message}", err=True)
        raise typer.Exit(130) from None


def _analyse_imported(engine: Any, uuids: list[str]) -> None:
    """Analyse the imported runs no analysis has looked at yet: the path of benchsvc analyze (one run at a
    time, oldest night first), so that imported nights get their findings like nights run here. What it found
    goes to stderr, beside the notes: stdout says what was imported."""
    from benchsvc.findings import analyze_run
    from benchsvc.store.db import read_session
    from benchsvc.store.queries import analysed_runs
    from benchsvc.store.runs import finished_runs

    with read_session(engine) as s:
        ids = finished_runs(s, uuids)
        todo = [r for r in ids if r not in analysed_runs(s, ids)]
    for run_id in todo:
        f = analyze_run(engine, run_id, only_unanalysed=True)
        if f.analysed_meanwhile:
            typer.echo(
                f"analysis: run {run_id}: analysed meanwhile by another benchsvc; nothing recorded by this one",
                err=True,
            )
            continue
        typer.echo(
            f"analysis: run {run_id}: {f.lineage_new} lineage differences (the versions' character; {f.lineage_fixed} gone), "
            f"{f.nightly_new} new nightly findings, {f.machine_new} machine events",
            err=True,
        )
    if ids:
        typer.echo(
            f"analysis: {len(todo)} imported runs analysed, {len(ids) - len(todo)} analysed before; "
            "see benchsvc regressions",
            err=True,
        )
