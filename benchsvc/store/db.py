"""Connecting to the result database, keeping its schema at the code's revision, and sessions.

SQLite (the default, ``./benchsvc.db``) runs in WAL mode with a busy timeout; benchsvc takes transaction
control from pysqlite so that writers start with ``BEGIN IMMEDIATE`` (a deferred ``BEGIN`` that later
upgrades to a write lock fails with "database is locked" under concurrency without waiting for the busy
timeout). PostgreSQL is used as given by URL.

Migrations live in ``migrations/`` (Alembic). A new, empty database is created at head on first use; a
database behind the code gives :class:`SchemaOutOfDate` (run ``benchsvc db upgrade``); a database written by a
newer benchsvc (a revision this code does not know) gives :class:`SchemaTooNew` and is not touched.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session

from benchsvc.errors import BenchsvcError

DEFAULT_DB = "benchsvc.db"
BUSY_TIMEOUT_MS = 30_000
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
#: the PostgreSQL advisory lock that keeps two processes from migrating one database at once
MIGRATION_LOCK_KEY = 0x62656E6368  # "bench"


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
    for alias in ("postgresql://", "postgres://"):
        if value.startswith(alias):
            return "postgresql+psycopg://" + value[len(alias) :]
    return value


def _hide_password(url: str) -> str:
    """``url`` with the password of ``scheme://user:password@host`` replaced by ``***`` (for a URL that
    SQLAlchemy cannot parse)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


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
    except ValueError as exc:  # a port that is not a number
        raise StoreError(
            f"the database URL {_hide_password(url)} cannot be read ({exc}) — the port, after host:, must be a "
            "number such as 5432"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            parent = Path(database).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"cannot create the database {database}: directory {parent} does not exist")
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        _sqlite_setup(engine)
        if database and database != ":memory:" and not database.startswith("file:"):
            _watch_file(engine, Path(database).expanduser())
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"no driver for {describe(url)}: {exc.name} is not installed — "
            + (
                "install it with pip install 'benchsvc[postgresql]'"
                if parsed.get_backend_name() == "postgresql"
                else f"install the Python package that provides {exc.name}"
            )
        ) from None
    except NoSuchModuleError:
        raise StoreError(
            f"{describe(url)}: unknown database kind {parsed.drivername!r} (use sqlite:/// or postgresql://)"
        ) from None


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # benchsvc emits BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # WAL is a lasting property of the file: set it on a new or a benchsvc database only, never on
        # another program's database (which the schema check then refuses, leaving the file as it was)
        tables = {row[0] for row in cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables or "alembic_version" in tables:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class DatabaseVanished(StoreError):
    """The SQLite file benchsvc writes was deleted or replaced by another file while it was open."""


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _watch_file(engine: Engine, path: Path) -> None:
    """Refuse to go on when the SQLite file at ``path`` is not the one the engine opened.

    SQLite keeps writing into a file that was deleted (or renamed away and replaced) while it is open, and
    every commit "succeeds" into a file nobody will ever read. So the file's device and inode are taken when
    the first connection opens it, and compared with what the path leads to before every commit and at every
    later connect: a file gone or replaced stops the command with :class:`DatabaseVanished` (the commit is
    not made)."""
    opened: list[tuple[int, int]] = []

    def check() -> None:
        now = _file_identity(path)
        if now is not None and now == opened[0]:
            return
        if now is None:
            what = "was deleted while benchsvc was using it"
            todo = (
                "what benchsvc wrote since it was deleted is lost; restore the file from a backup (or "
                "give another --db) and run the command again"
            )
        else:
            what = "was replaced by another file while benchsvc was using it"
            todo = (
                "nothing more was written to either file; check what replaced it, then run the command again"
            )
        raise DatabaseVanished(f"the database {path} {what} — {todo}")

    @event.listens_for(engine, "connect")
    def _identify(_dbapi_conn: Any, _record: Any) -> None:
        if not opened:
            identity = _file_identity(path)
            if identity is not None:
                opened.append(identity)
            return
        check()

    @event.listens_for(engine, "commit")
    def _before_commit(_conn: Connection) -> None:
        if opened:
            check()


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
    """The revision in ``alembic_version`` (None for an empty database); more than one row is an error."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) > 1:
        raise StoreError(
            f"database {describe(str(engine.url))} records {len(heads)} schema revisions "
            f"({', '.join(sorted(heads))}) in its table alembic_version, where benchsvc keeps one — "
            "it was changed by hand or by another program: restore it from a backup, or delete the rows "
            "that are wrong (benchsvc db current shows the revision this benchsvc expects)"
        )
    return heads[0] if heads else None


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_alembic_config()).walk_revisions()}


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (refuses a database newer than the code, or a foreign one)."""
    from alembic import command

    _check_migratable(engine)
    _migrate(engine, lambda cfg: command.upgrade(cfg, revision))


def downgrade(engine: Engine, revision: str) -> None:
    """Revert the migrations down to ``revision`` (for developers; data of dropped columns is lost)."""
    from alembic import command

    _check_migratable(engine)
    _migrate(engine, lambda cfg: command.downgrade(cfg, revision))


def stored_revision(engine: Engine) -> tuple[str | None, bool]:
    """The database's revision (None when empty) and whether this benchsvc knows it; a database with tables
    but no benchsvc revision (another program's) is refused."""
    current = current_revision(engine)
    if current is None and set(inspect(engine).get_table_names()) - {"alembic_version"}:
        current = current_revision(engine)  # another process may have created it in between
        if current is None:
            raise _not_benchsvc(engine)
    return current, current is None or current in _known_revisions()


def _check_migratable(engine: Engine) -> None:
    current, known = stored_revision(engine)
    if not known:
        assert current is not None
        raise _too_new(engine, current)


def _migrate(engine: Engine, step: Any) -> None:
    """Run a migration step in one write transaction.

    On SQLite, foreign keys are switched off for the duration (a batch migration rebuilds a table by copy,
    drop and rename, and with foreign keys on, dropping a referenced table cascades deletes into the
    tables that refer to it) and checked with ``PRAGMA foreign_key_check`` before the commit; the
    transaction starts with BEGIN IMMEDIATE so that a concurrent writer cannot slip in between."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # machines sharing a new store start together: one migrates, the others wait here and then
                # find the schema at head (alembic reads the revision after the lock is held)
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            step(_alembic_config(conn))
        return
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction, where the pragma takes effect
        try:
            with conn.execution_options(sqlite_immediate=True).begin():
                step(_alembic_config(conn))
                problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(
                        f"migration left {len(problems)} broken foreign keys (first: {problems[0]}); rolled back"
                    )
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def _not_benchsvc(engine: Engine) -> StoreError:
    return StoreError(
        f"database {describe(str(engine.url))} has tables but no benchsvc revision: "
        "it is not a benchsvc database — give a benchsvc database (or a new file) with --db"
    )


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
        if set(inspect(engine).get_table_names()) - {"alembic_version"}:
            if current_revision(engine) is None:
                raise _not_benchsvc(engine)
            return check_schema(engine, create=create)  # another process created it in between
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
    from sqlalchemy.exc import DBAPIError

    url = resolve_url(db)
    engine = create_db_engine(url)
    try:
        check_schema(engine, create=create)
    except DBAPIError as exc:
        engine.dispose()
        message = database_error_message(exc, url)
        if message is None:
            raise
        raise StoreError(message) from None
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


# --- Database errors a user or a file can cause, as one line ---------------------------------------------

#: SQLite's messages (sqlite3 error text, lower case) -> (what happened, what to do); ``{db}`` is the database.
_SQLITE_ADVICE: tuple[tuple[str, str, str], ...] = (
    (
        "unable to open database file",
        "cannot open the database {db} (unable to open database file)",
        "check that the file and its directory exist and that you may read and write both "
        "(SQLite keeps its -wal and -shm files beside the database)",
    ),
    (
        "readonly database",
        "the database {db} is read-only (attempt to write a readonly database)",
        "make the file and its directory writable for you, or give another --db",
    ),
    (
        "database or disk is full",
        "the disk holding the database {db} is full (database or disk is full)",
        "free space there and run the command again; the unfinished transaction was rolled back",
    ),
    (
        "disk image is malformed",
        "the database {db} is damaged (database disk image is malformed)",
        "restore it from a backup (sqlite3's .recover command can salvage what is left), or give another --db",
    ),
    (
        "file is not a database",
        "{db} is not a SQLite database (file is not a database)",
        "give a benchsvc database, or the path of a new file, with --db",
    ),
    (
        "database is locked",
        "the database {db} stayed locked by another program (database is locked)",
        "wait until that program is done, then run the command again",
    ),
    (
        "disk i/o error",
        "reading or writing the database {db} failed (disk I/O error)",
        "check the disk and the file system (dmesg), then run the command again",
    ),
)

#: PostgreSQL SQLSTATE classes and codes -> what to do.
_PG_ADVICE: tuple[tuple[str, str], ...] = (
    ("08", "check that the server is running and the host, port and database name of the URL"),
    ("28", "check the user name and password of the URL"),
    ("3D", "check the database name of the URL (the database must exist)"),
    ("42501", "grant the user of the URL the rights benchsvc needs, or use another user"),
    ("53100", "free disk space on the database server and run the command again"),
    ("53", "the server ran out of a resource: try again later, or ask its administrator"),
    ("57", "the server shut down or cancelled the statement: run the command again when it is back"),
    ("25006", "the server is read-only (a standby?): use the primary server's URL"),
)


def database_error_message(exc: BaseException, url: str | None = None) -> str | None:
    """``<what> — <what to do>`` for a database error that the database's state or environment causes
    (cannot open, read-only, disk full, damaged, not a database, server unreachable ...); None for anything
    else, which is a bug in benchsvc (a constraint violation, SQL the database rejects) and keeps its
    traceback. ``url`` names the database in the message when known."""
    import sqlite3

    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        if isinstance(exc, sa_exc.IntegrityError | sa_exc.NotSupportedError | sa_exc.DataError):
            return None
        orig: BaseException | None = exc.orig
        if (
            isinstance(exc, sa_exc.ProgrammingError)
            and _sqlstate(orig) is None
            and type(orig).__module__.startswith("psycopg")
        ):
            # the driver refused the URL before reaching a server (a bad connect_timeout, sslmode ...): the
            # server's own errors always carry a SQLSTATE
            first = " ".join(str(orig).split()).split(" [SQL:")[0]
            return (
                f"the database URL {_where(url)} is not usable: {first} — fix that parameter of the URL "
                "(see the PostgreSQL connection parameters) and run the command again"
            )
        if isinstance(exc, sa_exc.ProgrammingError) and _sqlstate(orig) != "42501":
            return None
    elif isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError:
        orig = exc
    else:
        return None
    where = _where(url)
    text = " ".join(str(orig if orig is not None else exc).split()) or type(exc).__name__
    first = text.split(" [SQL:")[0]
    lowered = first.lower()
    for needle, what, todo in _SQLITE_ADVICE:
        if needle in lowered:
            return f"{what.format(db=where)} — {todo}"
    state = _sqlstate(orig)
    if state is not None:
        for prefix, todo in sorted(_PG_ADVICE, key=lambda p: -len(p[0])):
            if state.startswith(prefix):
                return f"database error on {where}: {first} — {todo}"
    if isinstance(exc, sa_exc.OperationalError) and url is not None and not url.startswith("sqlite"):
        return (
            f"cannot use the database {where}: {first} — check that the server is running and the URL "
            "(host, port, database, user, password)"
        )
    return f"database error on {where}: {first} — check the database (or give another --db) and try again"


def _sqlstate(orig: BaseException | None) -> str | None:
    state = getattr(orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _where(url: str | None) -> str:
    if url is None:
        return "(the database)"
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path.startswith("file:"):
            path = path[len("file:") :].split("?", 1)[0]
        return path or "(in memory)"
    if url.startswith("sqlite:"):
        return "(in memory)"
    return describe(url)
