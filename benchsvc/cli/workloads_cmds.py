"""``benchsvc workloads list|show|validate``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from benchsvc.cli.output import Format, render

app = typer.Typer(help="List, show and validate workload definitions (TOML files).", no_args_is_help=True)

DirOption = Annotated[
    Path | None, typer.Option("--dir", help="Workload directory (default: the shipped workloads/).")
]


def _summary(spec: object) -> dict[str, object]:
    from benchsvc.workload import WorkloadSpec, format_size

    assert isinstance(spec, WorkloadSpec)
    folios = " + ".join(f"{format_size(size)}×{count}" for size, count in spec.folio_counts())
    calls = ", ".join(z.call + ("" if z.measure else " (prep)") for z in spec.zaps)
    return {
        "name": spec.name,
        "size": format_size(spec.size_bytes),
        "folios": folios,
        "zap": calls,
        "tags": list(spec.tags),
        "description": spec.description,
        "hash": spec.content_hash[:12],
    }


@app.command("list")
def list_(
    directory: DirOption = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Only workloads with this tag.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.table,
) -> None:
    """List the workloads: name, size, folio layout, zap calls, tags and description."""
    from benchsvc.workload import discover, load_workload

    specs = [load_workload(p) for p in discover(directory)]
    rows = [_summary(s) for s in specs if tag is None or tag in s.tags]
    render(rows, ["name", "size", "folios", "zap", "tags", "description"], fmt)


@app.command("show")
def show(
    workload: Annotated[str, typer.Argument(help="A workload file, or the name of a shipped workload.")],
    directory: DirOption = None,
) -> None:
    """Print a workload's definition file, its content hash and how it is laid out."""
    from benchsvc.workload import resolve

    spec = resolve(workload, directory)
    info = _summary(spec)
    typer.echo(f"# {spec.path}")
    typer.echo(f"# sha256 {spec.content_hash}")
    typer.echo(f"# {info['size']} as {info['folios']}; zap: {info['zap']}")
    typer.echo(spec.source_text.rstrip("\n"))


@app.command("validate")
def validate(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Workload files (default: every shipped workload).")
    ] = None,
    directory: DirOption = None,
) -> None:
    """Check workload files; print one line per file, and exit 1 if any of them is invalid."""
    from benchsvc.errors import WorkloadError
    from benchsvc.workload import discover, load_workload

    files = list(paths) if paths else discover(directory)
    if not files:
        raise WorkloadError(f"no workload files in {directory or 'the shipped workloads/ directory'}")
    if len(files) == 1:  # one file: its error is the command's error
        spec = load_workload(files[0])
        typer.echo(f"ok  {files[0]}  ({spec.name}, sha256 {spec.content_hash[:12]})")
        return
    bad = 0
    for f in files:
        try:
            spec = load_workload(f)
        except WorkloadError as exc:
            bad += 1
            print(f"Error: {exc}", file=sys.stderr)
        else:
            typer.echo(f"ok  {f}  ({spec.name}, sha256 {spec.content_hash[:12]})")
    if bad:
        raise typer.Exit(1)
