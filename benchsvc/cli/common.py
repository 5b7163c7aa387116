"""Options shared by the commands that use the result database."""

from __future__ import annotations

from typing import Annotated, Any

import typer

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database: a SQLite file path or a URL (sqlite:///..., postgresql://...). "
        "Default: $BENCHSVC_DB, else ./benchsvc.db.",
        show_default=False,
    ),
]


def open_db(db: str | None) -> Any:
    """Open the store (creating a new database at head) and mark runs killed earlier as interrupted."""
    from benchsvc.store.db import open_store
    from benchsvc.store.lock import recover

    engine = open_store(db)
    for run_id in recover(engine):
        typer.echo(
            f"note: run {run_id} was left running by a process that is gone; marked interrupted", err=True
        )
    return engine
