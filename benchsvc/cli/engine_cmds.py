"""``benchsvc versions`` and ``benchsvc simulate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from benchsvc.cli.output import Format, render

FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def versions(fmt: FormatOption = Format.table) -> None:
    """List the patch versions: id, parent, title and the patch they model (message-id or commit), then the
    live kernel (benchsvc run --engine kernel) and whether it can be used here."""
    from benchsvc.engine.versions import all_versions
    from benchsvc.kernel import unavailable_reason, version_id

    rows = [
        {
            "id": v.id,
            "engine": "sim",
            "parent": v.parent or "",
            "date": v.date,
            "title": v.title,
            "source": v.source,
        }
        for v in all_versions()
    ]
    reason = unavailable_reason()
    rows.append(
        {
            "id": version_id(),
            "engine": "kernel",
            "parent": "",
            "date": "",
            "title": "the live kernel of this machine, "
            + ("usable here" if reason is None else f"not usable here: {reason}"),
            "source": "uname -r; per-size mTHP stats",
        }
    )
    render(rows, ["id", "engine", "parent", "date", "title", "source"], fmt)


def simulate(
    workload: Annotated[str, typer.Argument(help="A workload file, or the name of a shipped workload.")],
    version: Annotated[
        list[str] | None,
        typer.Option(
            "--version",
            "-V",
            help="Version id; repeat it, give a comma list, or 'all' (the default).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON only: one object per version, a list for several.")
    ] = False,
    cost: Annotated[
        Path | None, typer.Option("--cost", help="TOML file of cost coefficients (counter = ns per event).")
    ] = None,
) -> None:
    """Run one deterministic simulation of WORKLOAD per version and print its counters and modelled cost.

    No pyperf and no database: the same workload file and version give the same numbers on every machine.
    """
    from benchsvc.engine import COUNTER_NAMES, CostModel
    from benchsvc.engine import simulate as run_simulation
    from benchsvc.engine.versions import resolve_versions
    from benchsvc.workload import resolve

    spec = resolve(workload)
    model = CostModel.from_file(cost) if cost else CostModel.default()
    results = [run_simulation(spec, vid, model) for vid in resolve_versions(version)]
    if as_json:
        payload = [r.as_json() for r in results]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
        return
    rows: list[dict[str, object]] = [
        {"counter": name, **{r.version: r.counters[name] for r in results}} for name in COUNTER_NAMES
    ]
    rows.append({"counter": "modeled_ns", **{r.version: r.modeled_ns for r in results}})
    render(
        rows,
        ["counter", *[r.version for r in results]],
        Format.table,
        title=f"{spec.name}: {spec.description}",
    )
