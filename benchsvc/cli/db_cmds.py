"""``benchsvc db upgrade|current``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from benchsvc.cli.common import DbOption

app = typer.Typer(
    help="Create or upgrade the result database's schema, or show its revision.", no_args_is_help=True
)


def _with_engine(db: str | None, action: Callable[[Any], Any]) -> tuple[str, Any]:
    """Connect without the schema check (these commands are the way out of a failing one), act, dispose."""
    from benchsvc.store.db import create_db_engine, resolve_url

    url = resolve_url(db)
    engine = create_db_engine(url)
    try:
        return url, action(engine)
    finally:
        engine.dispose()


@app.command("upgrade")
def upgrade(db: DbOption = None) -> None:
    """Apply the schema migrations to the database (creating it if needed); refuses a newer database."""
    from benchsvc.store.db import current_revision, describe, head_revision
    from benchsvc.store.db import upgrade as run_upgrade

    def act(engine: Any) -> tuple[str | None, str | None]:
        before = current_revision(engine)
        run_upgrade(engine)
        return before, current_revision(engine)

    url, (before, after) = _with_engine(db, act)
    if before == after:
        typer.echo(f"{describe(url)}: already at {after} (head {head_revision()})")
    else:
        typer.echo(f"{describe(url)}: upgraded {before or 'empty'} -> {after}")


@app.command("current")
def current(db: DbOption = None) -> None:
    """Show the database's schema revision and the revision this benchsvc expects."""
    from benchsvc.store.db import current_revision, describe, head_revision

    url, rev = _with_engine(db, current_revision)
    head = head_revision()
    state = (
        "up to date"
        if rev == head
        else ("empty" if rev is None else "behind or unknown: see benchsvc db upgrade")
    )
    typer.echo(f"{describe(url)}: revision {rev or '-'}, code expects {head} ({state})")
