"""``benchsvc db upgrade|current``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from benchsvc.cli.common import DbOption

app = typer.Typer(
    help="Create or upgrade the result database's schema, or show its revision.", no_args_is_help=True
)


def _with_engine(db: str | None, action: Callable[[Any], Any], *, create: bool) -> tuple[str, Any]:
    """Connect without the schema check (these commands are the way out of a failing one), act, dispose.

    ``create``: whether a missing SQLite file may be created (upgrade) or is an error (current)."""
    from benchsvc.cli.common import require_existing, use_db
    from benchsvc.store.db import create_db_engine

    url = use_db(db)
    if not create:
        require_existing(url)
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

    url, (before, after) = _with_engine(db, act, create=True)
    if before == after:
        typer.echo(f"{describe(url)}: already at {after} (head {head_revision()})")
    else:
        typer.echo(f"{describe(url)}: upgraded {before or 'empty'} -> {after}")


@app.command("current")
def current(db: DbOption = None) -> None:
    """Show the database's schema revision and the revision this benchsvc expects."""
    from benchsvc.store.db import describe, head_revision, stored_revision

    url, (rev, known) = _with_engine(db, stored_revision, create=False)
    head = head_revision()
    if rev == head:
        state = "up to date"
    elif rev is None:
        state = "empty: run benchsvc db upgrade"
    elif known:
        state = "behind: run benchsvc db upgrade"
    else:
        state = "written by a newer benchsvc: upgrade benchsvc to use it"
    typer.echo(f"{describe(url)}: revision {rev or '-'}, code expects {head} ({state})")
