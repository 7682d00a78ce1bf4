"""A start whose commit fails in a way that leaves its outcome unknown says so, and how to
find out (issue 10, item 11): SQLite can fail at COMMIT after the writes went to its
-wal file (an I/O error while committing), and the next recovery of the file may find
them committed, so ``start()`` may have started the workflow although it raised.

Made deterministic with a real file: a limit on file sizes (``RLIMIT_FSIZE``) lets the
statements run in SQLite's cache but fails the write of the -wal file at COMMIT, in a
process of its own (the limit holds for every file of the process).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

import perdure

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")

SCRIPT = textwrap.dedent(
    """
    import asyncio, os, resource, signal, sys
    import perdure

    # Past the limit, write() fails with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    path = sys.argv[1]
    app = perdure.App(f"sqlite:///{path}")

    @app.workflow(name="big")
    def big(data: str) -> int:
        return len(data)

    def limited(start):
        # Room for nothing more than the files hold now: the new workflow's 300 KB of
        # arguments fit in SQLite's cache, and fail only when COMMIT writes the -wal file.
        _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        limit = max(os.path.getsize(path), os.path.getsize(path + "-wal"))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            start()
        except perdure.StoreError as exc:
            print(type(exc).__name__, "|", exc)
        else:
            print("no error")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))

    app.start(big, "warm", workflow_id="warm")  # migrated, and one commit in the -wal file
    limited(lambda: app.start(big, "y" * 300_000, workflow_id="order-1"))
    limited(lambda: asyncio.run(app.start_async(big, "z" * 300_000, workflow_id="order-2")))
    # As the error says: starting again with the same ID is safe.
    for workflow_id in ("order-1", "order-2"):
        app.start(big, "y" * 300_000, workflow_id=workflow_id)
    with app:
        print("results", [app.retrieve(w).result(timeout=30) for w in ("order-1", "order-2")])
    """
)


def test_a_start_whose_commit_is_in_doubt_says_so_and_how_to_find_out(tmp_path: Path) -> None:
    path = tmp_path / "perdure.db"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    first, second, results = done.stdout.strip().splitlines()
    for line, workflow_id in ((first, "order-1"), (second, "order-2")):
        kind, _, message = line.partition(" | ")
        assert kind == "StoreInDoubtError", line
        assert message.startswith(f"workflow '{workflow_id}' may have been started or not: "), line
        assert f"app.retrieve('{workflow_id}')" in message, line
        assert f"workflow_id='{workflow_id}'" in message and "idempotent" in message, line
        # What failed, on which file, and when.
        assert f"creating workflow '{workflow_id}'" in message, line
        assert "disk I/O error" in message and str(path) in message, line
        assert "at COMMIT" in message, line
    assert results == "results [300000, 300000]", done.stdout


def test_a_start_that_found_sqlite_busy_says_nothing_was_recorded(tmp_path: Path) -> None:
    """The other side: a start that met another process's write lock past the busy
    timeout wrote nothing, and says so, naming the (here random) ID it would have had."""
    path = tmp_path / "perdure.db"
    app = perdure.App(f"sqlite:///{path}?busy_timeout=100")

    @app.workflow(name="noop")
    def noop() -> None:
        pass

    try:
        app.list_workflows()  # migrated
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # holds the write lock
            with pytest.raises(perdure.StoreUnavailableError) as info:
                app.start(noop)
            other.execute("ROLLBACK")
        message = str(info.value)
        assert message.startswith("workflow '"), message
        assert "was not started (nothing was recorded): " in message, message
        assert "locked by another process for 100 ms" in message, message
        workflow_id = message.split("'")[1]
        assert app.list_workflows() == []
        app.start(noop, workflow_id=workflow_id)
        assert [w.workflow_id for w in app.list_workflows()] == [workflow_id]
    finally:
        app.shutdown()
