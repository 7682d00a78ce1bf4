"""``perdure worker`` as a real process: it never shows a database password, it exits
at once with one clear line on a database that refuses it for good, and it waits only
for one that can come back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import with_options

TESTS_DIR = Path(__file__).resolve().parent
PASSWORD = "S3cretPW-7f3a"


def worker_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PERDURE_DATABASE_URL"] = url
    # tests/ for crash_app, and this tree's src (inherited PYTHONPATH) for perdure.
    # Absolute: a relative entry (PYTHONPATH=src) would miss this tree from another cwd.
    inherited = filter(None, env.get("PYTHONPATH", "").split(os.pathsep))
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *map(os.path.abspath, inherited)])
    return env


def run_worker(url: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """A worker that must exit by itself, within ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-m", "perdure", "worker", "crash_app:app", *args],
        env=worker_env(url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert "database unavailable" not in result.stderr, "it waited:\n" + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: cannot start the worker on "), result.stderr
    for text in expected:
        assert text in line, line
    return line


@pytest.fixture
def garbage_port() -> Iterator[int]:
    """A port where a TCP server answers every connection with garbage (not PostgreSQL)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(2)
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nnot a database\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


@pytest.mark.postgres
def test_unknown_database_exits_at_once(postgres_server: str) -> None:
    pytest.importorskip("psycopg")
    started = time.monotonic()
    result = run_worker("postgresql://postgres@127.0.0.1:5432/nosuchdb")
    assert_one_clear_line(result, 'database "nosuchdb" does not exist')
    assert time.monotonic() - started < 15


@pytest.mark.postgres
def test_unknown_role_exits_at_once(postgres_server: str) -> None:
    pytest.importorskip("psycopg")
    result = run_worker("postgresql://nosuchrole@127.0.0.1:5432/test")
    assert_one_clear_line(result, 'role "nosuchrole" does not exist')


@pytest.mark.postgres
def test_bad_sslmode_exits_at_once(postgres_server: str) -> None:
    pytest.importorskip("psycopg")
    result = run_worker("postgresql://postgres@127.0.0.1:5432/test?sslmode=bogus")
    assert_one_clear_line(result, "sslmode", "bogus")


@pytest.mark.parametrize("sslmode", ["prefer", "disable"])
def test_something_else_than_postgresql_at_the_port_exits_at_once(
    garbage_port: int, sslmode: str
) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://postgres@127.0.0.1:{garbage_port}/test?sslmode={sslmode}"
    assert_one_clear_line(run_worker(url), "PostgreSQL server at that host and port")


def test_unsupported_url_is_refused_without_its_password() -> None:
    result = run_worker(f"mysql://admin:{PASSWORD}@db/prod")
    line = assert_one_clear_line(result, "unsupported database URL", "mysql://admin:***@db/prod")
    assert PASSWORD not in result.stdout + result.stderr, line


@pytest.mark.postgres
@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_worker_never_shows_the_password(postgres_url: str, where: str) -> None:
    pytest.importorskip("psycopg")
    # The test server trusts local connections: the password is sent but not needed.
    if where == "userinfo":
        url = postgres_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")
        assert PASSWORD in url
    else:
        url = with_options(postgres_url, password=PASSWORD)
    proc = subprocess.Popen(
        [sys.executable, "-m", "perdure", "worker", "crash_app:app", "--log-level", "DEBUG"],
        env=worker_env(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not any("perdure worker running" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the worker exited:\n" + "".join(lines)
            lines.append(line)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
        output = "".join(lines) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0, output
    assert "postgresql://postgres" in output and "***" in output, output
    assert PASSWORD not in output, output
