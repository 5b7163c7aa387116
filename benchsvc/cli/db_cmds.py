"""``benchsvc db upgrade|current``."""

from __future__ import annotations

import typer

from benchsvc.cli.common import DbOption

app = typer.Typer(
    help="Create or upgrade the result database's schema, or show its revision.", no_args_is_help=True
)


@app.command("upgrade")
def upgrade(db: DbOption = None) -> None:
    """Apply the schema migrations to the database (creating it if needed); refuses a newer database."""
    from benchsvc.store.db import create_db_engine, current_revision, describe, head_revision, resolve_url
    from benchsvc.store.db import upgrade as run_upgrade

    url = resolve_url(db)
    engine = create_db_engine(url)
    try:
        before = current_revision(engine)
        run_upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        typer.echo(f"{describe(url)}: already at {after} (head {head_revision()})")
    else:
        typer.echo(f"{describe(url)}: upgraded {before or 'empty'} -> {after}")


@app.command("current")
def current(db: DbOption = None) -> None:
    """Show the database's schema revision and the revision this benchsvc expects."""
    from benchsvc.store.db import create_db_engine, current_revision, describe, head_revision, resolve_url

    url = resolve_url(db)
    engine = create_db_engine(url)
    try:
        rev = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = (
        "up to date"
        if rev == head
        else ("empty" if rev is None else "behind or unknown: see benchsvc db upgrade")
    )
    typer.echo(f"{describe(url)}: revision {rev or '-'}, code expects {head} ({state})")
