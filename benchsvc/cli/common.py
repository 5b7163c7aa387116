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


def open_db(db: str | None, *, create: bool = True) -> Any:
    """Open the store and mark runs killed earlier as interrupted.

    ``create``: a missing SQLite file becomes a new database at head (run, import); query commands pass
    False, so that a mistyped --db is an error instead of an empty answer."""
    from pathlib import Path

    from benchsvc.store.db import StoreError, open_store, resolve_url
    from benchsvc.store.lock import recover

    url = resolve_url(db)
    if not create and url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url[len("sqlite:///") :])
        if not path.exists():
            raise StoreError(f"no database at {path}: run benchsvc run first, or give --db / BENCHSVC_DB")
    engine = open_store(db)
    for run_id in recover(engine):
        typer.echo(
            f"note: run {run_id} was left running by a process that is gone; marked interrupted", err=True
        )
    return engine
