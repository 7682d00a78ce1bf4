"""Shared fixtures: a fresh database per test, and apps that are always shut down.

Every test that uses ``database_url`` (and so ``make_app`` and ``app``) runs twice:
on a fresh SQLite file, and on a fresh schema of the PostgreSQL database named by
``PERDURE_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
dropped after the test. Without a reachable server the PostgreSQL runs are skipped,
unless ``PERDURE_REQUIRE_POSTGRES=1`` makes that a failure (for CI).

``make test`` runs the suite on two processes (pytest-xdist, ``-n 2``). A test marked
``alone`` runs while no other test runs, as in a serial run: one restarts the PostgreSQL
server every test shares; others measure how late something happens, which the load of a
test beside them would skew. Without ``-n`` the mark changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

import perdure

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


class OffsetClock(perdure.SystemClock):
    """The real clock moved by ``offset`` seconds: lets a test make leases expire."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


def with_options(url: str, **options: str) -> str:
    """``url`` with these query options set (replacing any of the same name)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in options]
    return urlunsplit(parts._replace(query=urlencode([*query, *options.items()])))


def schema_of(url: str) -> str:
    """The schema named by a PostgreSQL store URL."""
    return dict(parse_qsl(urlsplit(url).query)).get("schema", "perdure")


def server_url(url: str) -> str:
    """A PostgreSQL store URL without perdure's own options: what psycopg.connect takes."""
    parts = urlsplit(url)
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("schema", "pool_min", "pool_max")
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


@contextlib.contextmanager
def admin_connection(url: str, schema: str | None = None) -> Iterator[Any]:
    """An autocommit psycopg connection to the test server, on ``schema`` if given."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url(url), autocommit=True, connect_timeout=5) as conn:
        if schema is not None:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        yield conn


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The test server's URL, once it answered; skips (or fails) the test otherwise."""
    url = os.environ.get("PERDURE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        with admin_connection(url) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # ImportError of psycopg, or any connection failure
        reason = " ".join(str(exc).split())
        message = (
            f"PostgreSQL not reachable at {url} ({type(exc).__name__}: {reason}); "
            "set PERDURE_TEST_POSTGRES_URL"
        )
        if os.environ.get("PERDURE_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " (PERDURE_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(message)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A store URL on a fresh schema of the test server (created by ``migrate``), dropped
    after the test."""
    from psycopg import sql

    schema = f"t_{uuid.uuid4().hex}"
    yield with_options(postgres_server, schema=schema)
    with admin_connection(postgres_server) as conn:
        # A connection left open by the test would block the drop: fail, don't hang.
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
    ids=["sqlite", "postgresql"],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database for this test: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/perdure.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., perdure.App]]:
    """Build apps on the test's database; each is shut down at the end of the test."""
    apps: list[perdure.App] = []

    def make(**kwargs: Any) -> perdure.App:
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("shutdown_grace", 2.0)
        app = perdure.App(database_url, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.shutdown(grace=0.5)


@pytest.fixture
def app(make_app: Callable[..., perdure.App]) -> perdure.App:
    """One app on the test's database (launch it with ``with app:``)."""
    return make_app()


# -- tests beside each other (pytest-xdist) ---------------------------------------------------

#: The folder of the lock files, made by the controller of a distributed run.
_TURNS_FOLDER = pytest.StashKey[Path]()
#: The lock of this worker process.
_TURNS = pytest.StashKey["Turns"]()


class Turns:
    """A lock over the worker processes of one run: any number of tests hold it shared, a
    test marked ``alone`` holds it exclusive. A test waiting for it holds the gate, so
    that nobody overtakes it: an ``alone`` test waits only for the tests under way."""

    def __init__(self, folder: Path) -> None:
        self._gate: IO[bytes] = open(folder / "gate", "ab")  # noqa: SIM115 (kept open)
        self._room: IO[bytes] = open(folder / "room", "ab")  # noqa: SIM115 (kept open)

    @contextlib.contextmanager
    def hold(self, alone: bool) -> Iterator[None]:
        import fcntl  # POSIX only, as is running the suite on several processes here

        fcntl.flock(self._gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(self._room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self._room, fcntl.LOCK_UN)

    def close(self) -> None:
        self._gate.close()
        self._room.close()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """On the controller of a distributed run: one folder of lock files for its workers."""
    config: pytest.Config = node.config
    if _TURNS_FOLDER not in config.stash:
        config.stash[_TURNS_FOLDER] = Path(tempfile.mkdtemp(prefix="perdure-tests-"))
    node.workerinput["perdure_turns"] = str(config.stash[_TURNS_FOLDER])


def pytest_configure(config: pytest.Config) -> None:
    folder = getattr(config, "workerinput", {}).get("perdure_turns")
    if folder is not None:  # a worker of a distributed run
        config.stash[_TURNS] = Turns(Path(folder))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _TURNS in config.stash:
        config.stash[_TURNS].close()
    if _TURNS_FOLDER in config.stash:
        shutil.rmtree(config.stash[_TURNS_FOLDER], ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Each test, with its fixtures' setup and teardown, inside the run's lock (outside
    pytest-timeout's clock: waiting for one's turn is not the test's time)."""
    turns = item.config.stash.get(_TURNS, None)
    if turns is None:
        return (yield)
    with turns.hold(alone=item.get_closest_marker("alone") is not None):
        return (yield)
