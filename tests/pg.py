"""A PostgreSQL server for the store tests: the one in ``$BENCHSVC_TEST_PG_URL``, or a throwaway one.

The throwaway server uses Debian's binaries (not on PATH), a cluster
in a temporary directory owned by ``postgres`` (``initdb`` refuses to run as root, so root runs it through
``runuser``), trust authentication for the user ``bench``, TCP on 127.0.0.1 at a free port, the socket in
the temporary directory, durability off. Each test that needs isolation gets a database of its own
(:meth:`PgServer.create_database`). When the binaries are missing the PostgreSQL tests skip with that
reason, unless ``$BENCHSVC_TEST_REQUIRE_PG`` is set (``scripts/test`` sets it where it can install them),
in which case they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import URL, make_url

PG_URL_ENV = "BENCHSVC_TEST_PG_URL"
REQUIRE_ENV = "BENCHSVC_TEST_REQUIRE_PG"
USER = "bench"


class PgUnavailable(Exception):
    """No PostgreSQL server can be had here; the message says why."""


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` that has ``initdb``, else one on PATH, else None."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if (Path(p) / "initdb").exists()]
    if found:
        return max(found, key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.name)] or [0])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A server reachable through ``admin_url`` (a database to run CREATE/DROP DATABASE from)."""

    admin_url: URL
    created: list[str] = field(default_factory=list)
    can_create: bool = True

    def _admin(self):  # -> psycopg.Connection
        import psycopg

        u = self.admin_url
        return psycopg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
        )

    def url(self, database: str) -> str:
        return self.admin_url.set(drivername="postgresql+psycopg", database=database).render_as_string(
            hide_password=False
        )

    def create_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        if not self.can_create:
            self._reset_schema()
            return self.url(self.admin_url.database or USER)
        name = f"benchsvc_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        if name not in self.created:
            return
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.remove(name)

    def _reset_schema(self) -> None:
        """No CREATEDB privilege: empty the given database's public schema instead."""
        with self._admin() as conn:
            conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
            conn.execute("CREATE SCHEMA public")


def external_server(url: str) -> PgServer:
    """The server of ``$BENCHSVC_TEST_PG_URL``: databases are created beside the given one and dropped."""
    import psycopg

    server = PgServer(admin_url=make_url(url))
    try:
        with server._admin() as conn:
            row = conn.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error as exc:
        raise RuntimeError(f"{PG_URL_ENV}: cannot connect to {url}: {exc}") from exc
    server.can_create = bool(row and row[0])
    return server


@contextlib.contextmanager
def throwaway_server() -> Iterator[PgServer]:
    """Start a PostgreSQL server in a temporary directory; stop it and delete the directory at the end."""
    bindir = pg_bin()
    if bindir is None:
        raise PgUnavailable(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb): "
            "apt-get install postgresql, or set BENCHSVC_TEST_PG_URL"
        )
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    # /tmp itself, not pytest's tmp_path: that is mode 0700 under root's tree, where postgres cannot reach
    root = Path(tempfile.mkdtemp(prefix="benchsvc-pg-"))
    if as_root:
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, log = root / "data", root / "server.log"

    def run(*args: str) -> None:
        proc = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout}{proc.stderr}{tail}"
            )

    started = False
    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        for attempt in range(3):
            port = _free_port()
            opts = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=200"
            )
            try:
                run(
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "30",
                    "-o",
                    opts,
                    "start",
                )
            except RuntimeError:
                if attempt == 2:
                    raise
                continue  # most likely the port was taken in between
            started = True
            break
        yield PgServer(admin_url=make_url(f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"))
    finally:
        if started:
            with contextlib.suppress(Exception):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def session_server() -> Iterator[PgServer]:
    """The server the store tests use: ``$BENCHSVC_TEST_PG_URL`` when set, else a throwaway one.

    Raises :class:`PgUnavailable` when neither can be had (the fixture turns it into a skip)."""
    url = os.environ.get(PG_URL_ENV)
    if url:
        server = external_server(url)
        try:
            yield server
        finally:
            for name in list(server.created):
                with contextlib.suppress(Exception):
                    server.drop_database(server.url(name))
        return
    with throwaway_server() as server:
        yield server
