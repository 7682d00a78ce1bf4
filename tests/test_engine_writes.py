"""The run's pending writes: side effects wait for what they may rest on."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

import pytest

from perdure import StoreError
from perdure._engine import writes as writes_module
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


def test_a_record_the_holder_lets_go_of_is_held_or_pending_at_every_moment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI (Python 3.13) once recorded an async workflow's patch marker before the step
    that ran before it: the holder had taken the step's record out of ``held`` and not
    yet submitted it, so the run saw nothing held and nothing pending, and its next
    write went out first (and a step's attempt could have, before the record was
    durable). The run's thread must see the record held, or pending, at every moment."""
    seen: list[tuple[bool, bool]] = []

    class Holder:
        """The holder's bookkeeping, looking at the run from inside ``release``."""

        def watch(self, writes: Writes) -> None:
            return None

        def forget(self, writes: Writes) -> None:
            seen.append((bool(writes.held), writes.clear))

    monkeypatch.setattr(writes_module, "holder", Holder())
    store, writes = FakeStore(), Writes()
    store_write = store.write("step")

    def submit() -> Future[Any]:
        seen.append((bool(writes.held), writes.clear))  # as the run's thread would look
        return store_write()

    writes.hold("step", submit, accept)
    releasing = threading.Thread(target=writes.release)  # the holder's thread
    releasing.start()
    releasing.join()
    assert store.submitted == ["step"]
    # At each look: held (the run would take it, or wait for the holder), or pending.
    assert seen and all(held or not clear for held, clear in seen), seen
    assert not writes.held and not writes.clear
    store.futures["step"].set_result(True)
    assert writes.clear
