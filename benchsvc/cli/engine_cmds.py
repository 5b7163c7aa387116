"""``benchsvc versions`` and ``benchsvc simulate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from benchsvc.cli.common import DbOption
from benchsvc.cli.output import Format, render

if TYPE_CHECKING:
    from benchsvc.engine.cost import CostModel

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
    db: DbOption = None,
) -> None:
    """Run one deterministic simulation of WORKLOAD per version and print its counters and modelled kernel
    cost (modeled_ns).

    No pyperf: the same workload file and version give the same counters on every machine. The cost is
    priced with this machine's latest calibrated cost model from the database (benchsvc calibrate), or with
    the shipped reference model when there is none (or --cost FILE); the output names the model.
    """
    from benchsvc.engine import COUNTER_NAMES, CostModel
    from benchsvc.engine import simulate as run_simulation
    from benchsvc.engine.versions import resolve_versions
    from benchsvc.workload import resolve

    spec = resolve(workload)
    model = CostModel.from_file(cost) if cost else machine_model(db)
    results = [run_simulation(spec, vid, model) for vid in resolve_versions(version)]
    if as_json:
        payload = [{**r.as_json(), "cost_model": model.label()} for r in results]
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
    typer.echo(f"modeled_ns: modelled kernel cost, priced by the {model.label()}")


def machine_model(db: str | None) -> CostModel:
    """This machine's latest cost model from the database, or the reference model when there is no
    database (nothing is created) or no calibration in it."""
    from benchsvc.cli.common import open_db, sqlite_path, use_db
    from benchsvc.engine.cost import CostModel
    from benchsvc.errors import BenchsvcError
    from benchsvc.store.cost_models import cost_model_for
    from benchsvc.store.db import read_session

    path = sqlite_path(use_db(db))
    if path is not None and not path.exists():
        return CostModel.default()
    try:
        engine = open_db(db, create=False)
    except BenchsvcError as exc:
        typer.echo(f"note: no calibrated cost model read ({exc}); using the reference model", err=True)
        return CostModel.default()
    try:
        with read_session(engine) as s:
            return cost_model_for(s)
    finally:
        engine.dispose()
