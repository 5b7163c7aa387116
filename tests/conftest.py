"""Shared helpers for the engine and workload tests."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchsvc.workload import WorkloadSpec, parse_workload, shipped_workloads_dir

WORKLOADS = shipped_workloads_dir()


def load_variant(stem: str, *, size: str | None = None, va_offset: str | None = None) -> WorkloadSpec:
    """A shipped workload, optionally with another ``layout.size`` / ``layout.va_offset``, parsed from TOML."""
    text = (WORKLOADS / f"{stem}.toml").read_text()
    name = stem
    if size is not None:
        text, k = re.subn(r'(?m)^size = "[^"]*"$', f'size = "{size}"', text)
        assert k == 1, f"{stem}: no unique layout.size line"
        name += f"-{size}"
    if va_offset is not None:
        text, k = re.subn(r'(?m)^va_offset = "[^"]*"$', f'va_offset = "{va_offset}"', text)
        assert k == 1, f"{stem}: no unique layout.va_offset line"
        name += f"-off{va_offset}"
    return parse_workload(text.encode(), name=name)


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own machine run lock (``$BENCHSVC_RUNTIME_DIR``): tests and other benchsvc runs on this
    machine do not refuse each other; the tests of the machine lock set their own."""
    monkeypatch.setenv("BENCHSVC_RUNTIME_DIR", str(tmp_path_factory.mktemp("runtime")))


@pytest.fixture(scope="session")
def shipped_workloads() -> list[Path]:
    return sorted(WORKLOADS.glob("*.toml"))


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Any]:
    """A result database in ``tmp_path`` and the ``benchsvc`` processes run against it (``test_run.Bench``);
    every process it started is killed, with its pyperf children, at the end."""
    from test_run import Bench

    b = Bench(tmp_path)
    try:
        yield b
    finally:
        b.close()


# --- The result database: a SQLite file and a PostgreSQL server (tests/pg.py) for the store tests ---


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for the session ($BENCHSVC_TEST_PG_URL, or a throwaway one); skips without one."""
    import os

    import pg

    try:
        with pg.session_server() as server:
            yield server
    except pg.PgUnavailable as exc:
        if os.environ.get(pg.REQUIRE_ENV):
            pytest.fail(f"{exc} (and ${pg.REQUIRE_ENV} is set)")
        pytest.skip(str(exc))


@pytest.fixture
def pg_url(pg_server):
    """The URL of a new, empty PostgreSQL database of this test's own (dropped afterwards)."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a database that does not exist yet (SQLite file) or is empty (PostgreSQL)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'benchsvc.db'}"
    return request.getfixturevalue("pg_url")
