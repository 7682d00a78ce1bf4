"""The run's pending writes: side effects wait for what they may rest on."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

from perdure import StoreError
from perdure._engine.holder import INTERVAL
from perdure._engine.writes import Writes


class FakeStore:
    """Writes that commit when the test says so."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.futures: dict[str, Future[Any]] = {}

    def write(self, name: str) -> Any:
        def submit() -> Future[Any]:
            self.submitted.append(name)
            future: Future[Any] = Future()
            self.futures[name] = future
            return future

        return submit


def accept(_: object) -> None:
    return None


def test_records_go_out_at_once_and_side_effects_after_them() -> None:
    store, writes = FakeStore(), Writes()
    writes.submit(store.write("now"), accept)
    writes.submit(store.write("uuid"), accept)
    start = writes.submit(store.write("start"), accept, barrier=True)
    record = writes.submit(store.write("record"), accept, only_after_success=True)
    assert store.submitted == ["now", "uuid"]
    store.futures["uuid"].set_result(True)
    assert store.submitted == ["now", "uuid"]
    store.futures["now"].set_result(True)
    assert store.submitted == ["now", "uuid", "start"]
    store.futures["start"].set_result(True)
    store.futures["record"].set_result(True)
    assert start.result() is None and record.result() is None
    assert writes.pending() == [] and writes.seen() is None


def test_a_failed_record_keeps_the_side_effect_from_going_out() -> None:
    store, writes = FakeStore(), Writes()
    writes.submit(store.write("now"), accept)
    start = writes.submit(store.write("start"), accept, barrier=True)
    record = writes.submit(store.write("record"), accept, only_after_success=True)
    store.futures["now"].set_exception(StoreError("disk full"))
    assert store.submitted == ["now"]
    assert isinstance(start.exception(), StoreError)
    assert isinstance(record.exception(), StoreError)
    assert isinstance(writes.seen(), StoreError)
    assert writes.seen() is None


def test_a_refused_side_effect_is_not_recorded() -> None:
    store, writes = FakeStore(), Writes()

    def refuse(result: object) -> None:
        if result is None:
            raise LookupError("nobody to send to")

    send = writes.submit(store.write("send"), refuse, barrier=True)
    record = writes.submit(store.write("record"), accept, only_after_success=True)
    later = writes.submit(store.write("later"), accept, barrier=True)
    store.futures["send"].set_result(None)
    assert isinstance(send.exception(), LookupError)
    assert isinstance(record.exception(), LookupError)
    # Not a store failure: the run's later side effects may go on.
    assert store.submitted == ["send", "later"]
    assert not later.done()


def test_a_held_record_waits_for_the_next_write_or_goes_with_the_outcome() -> None:
    store, writes = FakeStore(), Writes()
    writes.hold("first", store.write("first"), accept)
    assert writes.held and store.submitted == []
    writes.release()  # the run's next durable operation
    assert store.submitted == ["first"] and not writes.held and not writes.clear
    store.futures["first"].set_result(True)
    assert writes.clear
    writes.hold("last", store.write("last"), accept)
    held = writes.take_held()  # the outcome writes it
    assert [record for record, _, _ in held] == ["last"]
    assert not writes.held and writes.clear and store.submitted == ["first"]
    writes.release()  # nothing held: nothing to do
    assert store.submitted == ["first"]


def test_a_record_held_too_long_is_let_go_by_the_holder() -> None:
    store, writes = FakeStore(), Writes()
    writes.hold("slow", store.write("slow"), accept)
    held_at = time.monotonic()
    while not store.submitted:
        assert time.monotonic() - held_at < 5, "the holder never let the record go"
        time.sleep(INTERVAL / 4)
    # Not before one interval, and the record is no longer held (it is pending).
    assert time.monotonic() - held_at >= INTERVAL
    assert writes.held == [] and writes.pending()
    store.futures["slow"].set_result(True)
    assert writes.clear
