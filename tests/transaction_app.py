"""The app that tests/test_transaction_crash.py runs in worker subprocesses and kills with
SIGKILL: workflows whose transactional steps write to the user's own tables.

Run as ``perdure worker transaction_app:app`` with ``tests/`` importable. The database
comes from ``PERDURE_DATABASE_URL``; the user's tables are named by ``PERDURE_USER_SCHEMA``
(a schema on PostgreSQL, empty on SQLite): ``effects`` (one row per committed
transaction) and ``accounts`` (one balance, incremented by each). Each transaction's body
appends a line to the ledger file ``PERDURE_LEDGER`` when it begins (see
``crash_app.ledger``), so the test tells how many bodies ran and were rolled back by a
kill.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import perdure

#: Transactional steps per workflow.
STEPS = 3
#: Threads of a worker (workflows running at once in one process).
MAX_THREADS = 16


def table(name: str) -> str:
    """A user table's name, qualified by the user's schema when there is one."""
    schema = os.environ.get("PERDURE_USER_SCHEMA", "")
    return f"{schema}.{name}" if schema else name


def ledger(workflow: str, step: int) -> None:
    line = json.dumps({"t": time.time(), "wf": workflow, "step": step, "pid": os.getpid()})
    fd = os.open(os.environ["PERDURE_LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def build_app(database_url: str | None = None) -> perdure.App:
    """The ``transfer`` workflow on ``database_url`` (default: ``PERDURE_DATABASE_URL``)."""
    app = perdure.App(database_url, poll_interval=0.05, max_threads=MAX_THREADS, shutdown_grace=5.0)

    @app.transaction(name="credit")
    def credit(workflow: str, step: int) -> int:
        ledger(workflow, step)
        conn = perdure.connection()
        mark = "%s" if app.store.kind == "postgresql" else "?"
        conn.execute(
            f"INSERT INTO {table('effects')} (workflow, step, pid) VALUES ({mark}, {mark}, {mark})",
            (workflow, step, os.getpid()),
        )
        conn.execute(f"UPDATE {table('accounts')} SET balance = balance + 1 WHERE id = 1")
        # The transaction stays open a little: kills land inside it, and around its commit.
        time.sleep(random.uniform(0.005, 0.03))
        return step * 10

    @app.workflow(name="transfer")
    def transfer(n: int) -> list[Any]:
        workflow = perdure.workflow_id()
        results = []
        for step in range(STEPS):
            perdure.write_stream("progress", step)  # exactly once, whatever the kills
            results.append(credit(workflow, step))
        perdure.close_stream("progress")
        return [n, results]

    return app


app = build_app()
