"""The group committer commits the writes one thread queued in the order it queued them,
even while other threads lead commits of their own (a real SQLite file)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from perdure.storage._batch import GroupCommitter, queue_only


def _committer(path: Path) -> GroupCommitter[sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")  # the order is the point, not the disk
        conn.execute("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, tag TEXT)")
        return conn

    @contextlib.contextmanager
    def transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    return GroupCommitter(connect, transaction, lambda exc: exc, name="test-order-writer")


def _insert(tag: str) -> Any:
    return lambda conn: conn.execute("INSERT INTO log (tag) VALUES (?)", (tag,))


def test_one_threads_queued_writes_commit_in_its_order_while_others_lead(
    tmp_path: Path,
) -> None:
    # Eight runs: before the change, one run in two found writes out of order.
    for run in range(8):
        _queue_while_others_lead(tmp_path / f"order-{run}.db")


def _queue_while_others_lead(path: Path) -> None:
    # The shape of an async workflow's writes (a held step record, then a patch marker:
    # both queued by the event loop's thread) while a sync thread (the maintenance
    # thread, a sync workflow) leads commits of its own. The writer thread used to take
    # a write off its queue, then wait for the commit lock; a leader that got the lock
    # first took the writes queued after that one into an earlier transaction.
    writer = _committer(path)
    stop = threading.Event()

    def lead() -> None:
        while not stop.is_set():
            writer.submit(_insert("leader")).result()

    queued: list[str] = []

    def queue_pairs() -> None:
        queue_only()  # as an event loop's thread: every write queues
        futures: list[Future[Any]] = []
        for number in range(3000):
            for tag in (f"a{number}", f"b{number}"):
                queued.append(tag)
                futures.append(writer.submit(_insert(tag)))
            if number % 50 == 0:
                futures[-1].result()  # let the queue run dry now and then: leaders lead
        for future in futures:
            future.result()

    leaders = [threading.Thread(target=lead) for _ in range(2)]
    try:
        for thread in leaders:
            thread.start()
        queue_pairs()
    finally:
        stop.set()
        for thread in leaders:
            thread.join()
        writer.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT tag FROM log ORDER BY seq").fetchall()
    committed = [tag for (tag,) in rows if tag != "leader"]
    assert len(rows) > len(committed), "no leader committed: the test tested nothing"
    out_of_order = [(i, tag) for i, tag in enumerate(committed) if tag != queued[i]]
    assert not out_of_order, f"{len(out_of_order)} writes out of order: {out_of_order[:4]}"
