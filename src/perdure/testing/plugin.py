"""The pytest plugin of ``perdure.testing`` (registered as ``perdure`` by an entry point:
installing perdure makes its fixtures available to every test suite).

Fixtures:

- ``perdure_database_url``: a fresh database for the test: a SQLite file in its
  ``tmp_path``; or, when a PostgreSQL server is configured (``--perdure-postgres-url``
  or ``PERDURE_TEST_POSTGRES_URL``), a fresh schema on it, dropped after the test.
- ``perdure_app``: a launched ``TestApp`` on that database (virtual clock, time
  skipping), closed after the test. Register the workflows under test on it, or use
  ``perdure_database_url`` to build your own.
- ``perdure_clock``: the ``VirtualClock`` of ``perdure_app``.

Nothing here runs unless a test asks for these fixtures.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from ._app import TestApp
from ._clock import VirtualClock

try:  # PostgreSQL is optional (perdure[postgres])
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - without the extra, SQLite only
    psycopg = None  # type: ignore[assignment]

#: The environment variable naming a PostgreSQL server to test on.
POSTGRES_ENV = "PERDURE_TEST_POSTGRES_URL"
#: Options of a perdure URL that psycopg does not take.
_PERDURE_OPTIONS = ("schema", "pool_min", "pool_max")


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--perdure-postgres-url``: test on fresh schemas of this PostgreSQL server."""
    group = parser.getgroup("perdure")
    group.addoption(
        "--perdure-postgres-url",
        default=None,
        help=(
            "PostgreSQL server for perdure_database_url and perdure_app: each test gets a "
            f"fresh schema on it, dropped after the test (default: ${POSTGRES_ENV}; "
            "neither: a SQLite file per test)"
        ),
    )


def _options(url: str, drop: tuple[str, ...] = (), **options: str) -> str:
    parts = urlsplit(url)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in options and key not in drop
    ]
    return urlunsplit(parts._replace(query=urlencode([*query, *options.items()])))


def _drop_schema(server: str, schema: str) -> None:
    if psycopg is None:  # pragma: no cover
        return
    with psycopg.connect(_options(server, _PERDURE_OPTIONS), autocommit=True) as conn:
        conn.execute("SET lock_timeout = '10s'")  # a connection left open must not hang us
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def perdure_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for this test (see the module)."""
    server = request.config.getoption("--perdure-postgres-url") or os.environ.get(POSTGRES_ENV)
    if not server:
        yield f"sqlite:///{tmp_path}/perdure.db"
        return
    if psycopg is None:  # pragma: no cover
        pytest.fail("a PostgreSQL server is configured but psycopg is missing: perdure[postgres]")
    schema = f"perdure_test_{uuid.uuid4().hex}"
    yield _options(server, schema=schema)
    _drop_schema(server, schema)


@pytest.fixture
def perdure_app(perdure_database_url: str) -> Iterator[TestApp]:
    """A launched ``TestApp`` on ``perdure_database_url``, closed after the test."""
    with TestApp(perdure_database_url) as app:
        yield app


@pytest.fixture
def perdure_clock(perdure_app: TestApp) -> VirtualClock:
    """The virtual clock of ``perdure_app``."""
    return perdure_app.clock
