"""Transactional steps under SIGKILL: worker processes killed again and again, inside and
around their transactions' commits; every transaction's effect is present exactly once.

The app under test is ``tests/transaction_app.py``: each ``transfer`` workflow runs three
transactional steps, each inserting one row into the user's ``effects`` table and adding
one to the balance in ``accounts``, and writes its progress to a stream from the workflow.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import admin_connection, schema_of
from ledger import read_ledger, wait_for

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent
WORKFLOWS = 50
KILLS = 6


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "perdure_transaction_app", TESTS_DIR / "transaction_app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


transaction_app = _load()


class UserTables:
    """The user's ``effects`` and ``accounts`` tables, in the app's database (in a schema
    of their own on PostgreSQL)."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.postgres = database_url.startswith("postgresql")
        self.schema = f"u{schema_of(database_url)}" if self.postgres else ""
        prefix = f"{self.schema}." if self.schema else ""
        statements = [
            f"CREATE TABLE {prefix}effects (workflow TEXT NOT NULL, step INTEGER NOT NULL, "
            "pid INTEGER NOT NULL)",
            f"CREATE TABLE {prefix}accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
            f"INSERT INTO {prefix}accounts VALUES (1, 0)",
        ]
        if self.postgres:
            statements.insert(0, f"CREATE SCHEMA {self.schema}")
        self.execute(statements)

    def execute(self, statements: list[str]) -> list[Any]:
        if self.postgres:
            with admin_connection(self.url) as conn:
                return [
                    conn.execute(sql).fetchall() if "SELECT" in sql else conn.execute(sql)
                    for sql in statements
                ][-1]  # type: ignore[no-any-return]
        with contextlib.closing(sqlite3.connect(self.url[len("sqlite:///") :])) as conn, conn:
            return [conn.execute(sql).fetchall() for sql in statements][-1]

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        prefix = f"{self.schema}." if self.schema else ""
        return list(self.execute([sql.format(prefix=prefix)]))

    def drop(self) -> None:
        if self.postgres:
            with admin_connection(self.url) as conn:
                conn.execute(f"DROP SCHEMA {self.schema} CASCADE")


@pytest.fixture
def setup(database_url: str, tmp_path: Path) -> Iterator[tuple[Any, UserTables, dict[str, str]]]:
    """A client app (never launched), the user's tables, and the workers' environment."""
    client = transaction_app.build_app(database_url)
    client.store  # noqa: B018 - migrated before the user's tables are made beside it
    tables = UserTables(database_url)
    env = dict(os.environ)
    env["PERDURE_DATABASE_URL"] = database_url
    env["PERDURE_LEDGER"] = str(tmp_path / "ledger.jsonl")
    env["PERDURE_USER_SCHEMA"] = tables.schema
    # Absolute: the workers run in tmp_path.
    paths = [str(TESTS_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(path) for path in paths)
    yield client, tables, env
    client.shutdown()
    tables.drop()


def start_worker(tmp_path: Path, env: dict[str, str], number: int) -> subprocess.Popen[bytes]:
    with open(tmp_path / f"worker-{number}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "perdure", "worker", "transaction_app:app"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def test_each_transaction_commits_exactly_once_through_repeated_sigkill(
    setup: tuple[Any, UserTables, dict[str, str]], tmp_path: Path
) -> None:
    client, tables, env = setup
    seed = int(os.environ.get("PERDURE_CRASH_SEED", random.randrange(2**32)))
    print(f"seed {seed} (PERDURE_CRASH_SEED={seed} repeats the kill plan)")
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.jsonl"
    total = WORKFLOWS * transaction_app.STEPS
    handles = [client.start("transfer", n, workflow_id=f"t-{n}") for n in range(WORKFLOWS)]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for kill in range(KILLS):
            worker = start_worker(tmp_path, env, kill)
            workers.append(worker)
            before = len(read_ledger(ledger))
            # Kill once it began 5-10% of all transactions: work is left for the next one.
            target = before + max(1, int(rng.uniform(0.05, 0.1) * total))

            def progressed(
                worker: subprocess.Popen[bytes] = worker, target: int = target, number: int = kill
            ) -> bool:
                assert worker.poll() is None, (tmp_path / f"worker-{number}.err").read_text()
                return len(read_ledger(ledger)) >= target

            wait_for(progressed, 60, f"worker {kill} to begin transactions", interval=0.005)
            time.sleep(rng.uniform(0.0, 0.03))  # anywhere: in a body, at a commit, between
            worker.send_signal(signal.SIGKILL)
            assert worker.wait(timeout=10) == -signal.SIGKILL
        final = start_worker(tmp_path, env, KILLS)
        workers.append(final)

        def all_done() -> bool:
            assert final.poll() is None, (tmp_path / f"worker-{KILLS}.err").read_text()
            done = client.list_workflows(status="SUCCEEDED", name="transfer", limit=2 * WORKFLOWS)
            return len(done) == WORKFLOWS

        wait_for(all_done, 120, "every transfer to succeed", interval=0.1)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(timeout=10)

    for n, handle in enumerate(handles):
        assert handle.result(timeout=5) == [n, [0, 10, 20]]
        # The workflow's own stream writes, exactly once too.
        assert list(client.read_stream(handle.workflow_id, "progress")) == [0, 1, 2]
    # Each transaction's effect is present exactly once.
    effects = Counter(
        (workflow, step)
        for workflow, step in tables.query("SELECT workflow, step FROM {prefix}effects")
    )
    expected = {(f"t-{n}", step) for n in range(WORKFLOWS) for step in range(transaction_app.STEPS)}
    assert set(effects) == expected
    assert set(effects.values()) == {1}, [key for key, count in effects.items() if count > 1]
    assert tables.query("SELECT balance FROM {prefix}accounts") == [(total,)]
    # Bodies that a kill cut (begun, rolled back, begun again elsewhere) did happen.
    began = Counter((e["wf"], e["step"]) for e in read_ledger(ledger))
    repeated = sum(count - 1 for count in began.values())
    print(f"{repeated} transactions ran again after {KILLS} kills; every effect once")
    assert repeated >= 1, "no kill landed in a transaction: the test proved nothing"
