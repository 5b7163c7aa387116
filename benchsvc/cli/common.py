"""Options shared by the commands that use the result database, the database in use (named by the error
edge in its messages), and checks of numeric option values."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from benchsvc.errors import BenchsvcError

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="Database: a SQLite file path or a URL (sqlite:///..., postgresql://...). "
        "Default: $BENCHSVC_DB, else ./benchsvc.db.",
        show_default=False,
    ),
]

#: The largest integer SQLite and PostgreSQL (bigint) store; larger ids and limits are refused up front.
MAX_DB_INT = 2**63 - 1

_db_in_use: list[str] = []


def db_in_use() -> str | None:
    """The URL of the database the command opened last (None before it opened one)."""
    return _db_in_use[-1] if _db_in_use else None


def forget_db() -> None:
    """Start a command with no database in use."""
    _db_in_use.clear()


def use_db(db: str | None) -> str:
    """Resolve ``--db`` and remember it as the database in use (for the error edge's messages)."""
    from benchsvc.store.db import resolve_url

    url = resolve_url(db)
    _db_in_use.append(url)
    return url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (also of a ``sqlite:///file:...?mode=ro&uri=true`` one); None for an
    in-memory database or another kind of database."""
    if not url.startswith("sqlite:///"):
        return None
    database = url[len("sqlite:///") :]
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return Path(database)


def require_existing(url: str) -> None:
    """Refuse a SQLite file that does not exist (query commands: a mistyped --db is an error, and no empty
    file is left behind)."""
    from benchsvc.store.db import StoreError

    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StoreError(f"no database at {path} — run benchsvc run first, or give --db / BENCHSVC_DB")


def open_db(db: str | None, *, create: bool = True) -> Any:
    """Open the store and mark runs killed earlier as interrupted.

    ``create``: a missing SQLite file becomes a new database at head (run, import); query commands pass
    False, so that a mistyped --db is an error instead of an empty answer."""
    from benchsvc.store.db import open_store
    from benchsvc.store.lock import recover

    url = use_db(db)
    if not create:
        require_existing(url)
    engine = open_store(url)
    for found in recover(engine):
        from benchsvc.safe_text import clean

        typer.echo(clean(f"note: {found.describe()}"), err=True)
    return engine


def int_range(option: str, low: int, high: int = MAX_DB_INT) -> Callable[[int | None], int | None]:
    """A Typer callback refusing an integer outside [low, high] with one ``Error:`` line."""

    def check(value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise BenchsvcError(
                f"{option} {value} is out of range — give a whole number from {low} to {high}"
            )
        return value

    return check


def float_range(option: str, low: float, high: float, *, low_open: bool = False) -> Callable[[Any], Any]:
    """A Typer callback refusing NaN, infinities and a float outside [low, high] (or (low, high] with
    ``low_open``) with one ``Error:`` line."""

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        above = low < value if low_open else low <= value
        if not (math.isfinite(value) and above and value <= high):
            interval = f"{'more than' if low_open else 'from'} {low:g} {'and at most' if low_open else 'to'} {high:g}"
            raise BenchsvcError(f"{option} {value!r} is out of range — give a number {interval}")
        return value

    return check


def noise_line(floor: Any, mode: str, timing_ok: bool) -> str:
    """The noise-floor line heading ``show`` and ``compare``: the A/A intervals and canary spread, or for a
    run whose mode supports no timing interval, that it has none (and the canary's spread, a plain spread)."""
    if timing_ok:
        return str(floor.describe())
    canary = (
        f"; canary spread {floor.canary_cv:.1%} over {floor.canary_processes} processes"
        if floor.canary_processes
        else ""
    )
    return (
        f"noise floor: {mode} mode: no timing intervals (its sampling does not support them; counters are "
        f"exact){canary}"
    )
