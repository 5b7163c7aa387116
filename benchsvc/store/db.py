"""Connecting to the result database, keeping its schema at the code's revision, and sessions.

SQLite (the default, ``./benchsvc.db``) runs in WAL mode with a busy timeout; benchsvc takes transaction
control from pysqlite so that writers start with ``BEGIN IMMEDIATE`` (a deferred ``BEGIN`` that later
upgrades to a write lock fails with "database is locked" under concurrency without waiting for the busy
timeout; ``reference/stack-notes.md`` §6). PostgreSQL is used as given by URL.

Migrations live in ``migrations/`` (Alembic). A new, empty database is created at head on first use; a
database behind the code gives :class:`SchemaOutOfDate` (run ``benchsvc db upgrade``); a database written by a
newer benchsvc (a revision this code does not know) gives :class:`SchemaTooNew` and is not touched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session

from benchsvc.errors import BenchsvcError

DEFAULT_DB = "benchsvc.db"
BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


class StoreError(BenchsvcError):
    """The database cannot be used as asked."""


class SchemaOutOfDate(StoreError):
    """The database is at an older revision than the code."""


class SchemaTooNew(StoreError):
    """The database was written by a newer benchsvc."""


def resolve_url(db: str | None = None) -> str:
    """A SQLAlchemy URL from ``--db`` / ``BENCHSVC_DB`` / the default; a plain path means a SQLite file."""
    value = db or os.environ.get("BENCHSVC_DB") or DEFAULT_DB
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser()}"
    if value.startswith("postgresql://"):
        return "postgresql+psycopg://" + value[len("postgresql://") :]
    return value


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def create_db_engine(url: str) -> Engine:
    """An Engine for ``url``; SQLite gets WAL, a busy timeout, foreign keys and explicit BEGIN handling."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"{url!r} is not a database URL (use a file path or sqlite:///, postgresql://...)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot create the database {database}: directory {parent} does not exist")
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_setup(engine)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise StoreError(f"no driver for {describe(url)}: {exc.name} is not installed") from None


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # benchsvc emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _alembic_config(connection: Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (refuses a database newer than the code)."""
    from alembic import command

    current = current_revision(engine)
    if current is not None and current not in _known_revisions():
        raise _too_new(engine, current)
    with engine.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)


def _too_new(engine: Engine, current: str) -> SchemaTooNew:
    return SchemaTooNew(
        f"database {describe(str(engine.url))} is at revision {current}, which this benchsvc does not know "
        f"(it expects {head_revision()}): it was written by a newer benchsvc; upgrade benchsvc to use it"
    )


def check_schema(engine: Engine, *, create: bool = True) -> None:
    """Make sure the database is at the code's revision: create a new one, refuse an old or newer one."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        tables = set(inspect(engine).get_table_names())
        if tables - {"alembic_version"}:
            raise StoreError(
                f"database {describe(str(engine.url))} has tables but no benchsvc revision: "
                "it is not a benchsvc database; use another --db"
            )
        if create:
            upgrade(engine)
            return
        raise SchemaOutOfDate(f"database {describe(str(engine.url))} is empty: run benchsvc db upgrade")
    if current not in _known_revisions():
        raise _too_new(engine, current)
    raise SchemaOutOfDate(
        f"database {describe(str(engine.url))} is at revision {current}, code expects {head}: "
        "run benchsvc db upgrade"
    )


def open_store(db: str | None = None, *, create: bool = True) -> Engine:
    """Resolve, connect and check the schema: the one call the commands make."""
    engine = create_db_engine(resolve_url(db))
    try:
        check_schema(engine, create=create)
    except Exception:
        engine.dispose()
        raise
    return engine


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in one write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
    bind = engine.execution_options(sqlite_immediate=True) if engine.dialect.name == "sqlite" else engine
    with Session(bind, expire_on_commit=False) as session, session.begin():
        yield session


@contextlib.contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A session for queries (a deferred transaction, rolled back at the end)."""
    with Session(engine) as session:
        yield session
