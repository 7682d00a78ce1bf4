"""The one input rule (``perdure._validation``) at the engine's public functions, and
values that cannot be read back or stored named by what they are (issue 10, items 9 and
12), on both stores.

A value that breaks the rule raises ``InvalidValueError`` where it is passed, before
anything is recorded: a NaN timeout must not become a deadline that never passes, a
topic or event key no store accepts must not fail the workflow later in one store and
not the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import perdure
from perdure import InvalidValueError, SerializationError

NAN, INF = float("nan"), float("inf")
LONG = "x" * 1001


def refused(call: Callable[[], Any]) -> str:
    """The message of the InvalidValueError that ``call`` raises (``"accepted"`` if none)."""
    try:
        call()
    except InvalidValueError as exc:
        return str(exc)
    return "accepted"


async def refused_async(call: Callable[[], Any]) -> str:
    try:
        await call()
    except InvalidValueError as exc:
        return str(exc)
    return "accepted"


def check_messages(messages: dict[str, str]) -> None:
    """Each refusal names what was wrong."""
    expected = {
        "set_event number": "event key must be a",
        "set_event NUL": "contains a NUL",
        "set_event long": "1,001 bytes",
        "recv topic": "topic must be a",
        "recv NaN": "the timeout of perdure.recv",
        "recv negative": "the timeout of perdure.recv",
        "recv inf": "the timeout of perdure.recv",
        "recv str": "not str '3'",
        "sleep NaN": "the duration of perdure.sleep",
        "sleep inf": "the duration of perdure.sleep",
        "sleep str": "the duration of perdure.sleep",
        "sleep_until float": "takes a datetime",
        "sleep_until str": "takes a datetime",
        "send empty ID": "workflow ID must be a non-empty",
        "send topic": "topic",
        "cancel empty ID": "workflow ID must be a non-empty",
        "child timeout NaN": "timeout must be a finite number",
        "child result NaN": "the timeout of handle.result",
        "child result negative": "the timeout of handle.result",
    }
    for case, text in expected.items():
        found = [message for name, message in messages.items() if name.startswith(case)]
        assert found, (case, sorted(messages))
        assert all(text in message for message in found), (case, found)


def test_a_sync_workflow_s_bad_arguments_are_refused_and_record_nothing(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="child")
    def child() -> str:
        return "done"

    @app.workflow(name="careless")
    def careless() -> dict[str, str]:
        handle = app.start(child, workflow_id="careless-child")
        messages = {
            "set_event number": refused(lambda: perdure.set_event(7, "v")),  # type: ignore[arg-type]
            "set_event NUL": refused(lambda: perdure.set_event("a\x00b", "v")),
            "set_event long": refused(lambda: perdure.set_event(LONG, "v")),
            "recv topic": refused(lambda: perdure.recv(topic=5)),  # type: ignore[arg-type]
            "recv NaN": refused(lambda: perdure.recv(timeout=NAN)),
            "recv negative": refused(lambda: perdure.recv(timeout=-1)),
            "recv inf": refused(lambda: perdure.recv(timeout=INF)),
            "recv str": refused(lambda: perdure.recv(timeout="3")),  # type: ignore[arg-type]
            "sleep NaN": refused(lambda: perdure.sleep(NAN)),
            "sleep inf": refused(lambda: perdure.sleep(INF)),
            "sleep str": refused(lambda: perdure.sleep("1")),  # type: ignore[arg-type]
            "sleep_until float": refused(lambda: perdure.sleep_until(1.0)),  # type: ignore[arg-type]
            "sleep_until str": refused(lambda: perdure.sleep_until("2030-01-01")),  # type: ignore[arg-type]
            "send empty ID": refused(lambda: app.send("", "hi")),
            "send topic": refused(lambda: app.send("careless-1", "hi", topic=LONG)),
            "cancel empty ID": refused(lambda: app.cancel("")),
            "child timeout NaN": refused(
                lambda: app.options(workflow_id="never", timeout=NAN).start(child)
            ),
            "child result NaN": refused(lambda: handle.result(timeout=NAN)),
            "child result negative": refused(lambda: handle.result(timeout=-2)),
        }
        # What the rule allows: a negative sleep waits not at all, a zero timeout looks
        # once, a past time has passed, a timedelta is seconds.
        perdure.sleep(-5)
        perdure.sleep(timedelta(seconds=-1))
        perdure.sleep_until(datetime(2000, 1, 1, tzinfo=timezone.utc))
        messages["recv zero"] = repr(perdure.recv(timeout=0))
        messages["recv timedelta"] = repr(perdure.recv(timeout=timedelta(milliseconds=10)))
        perdure.set_event("", "the empty key is a key")
        messages["child result"] = handle.result(timeout=30)
        return messages

    with app:
        messages = app.start(careless, workflow_id="careless-1").result(timeout=60)
    check_messages(messages)
    assert messages["recv zero"] == "None" and messages["recv timedelta"] == "None"
    assert messages["child result"] == "done"
    assert app.get_event("careless-1", "") == "the empty key is a key"
    # Nothing was recorded for a refused call: only what the rule allowed.
    names = [step.name for step in app.retrieve("careless-1").status().steps]
    assert names == [
        "perdure.start_child",
        "perdure.sleep",
        "perdure.sleep",
        "perdure.sleep",
        "perdure.recv",
        "perdure.recv",
        "perdure.set_event",
        "perdure.child_result",
    ], names
    with pytest.raises(perdure.WorkflowNotFoundError):  # the refused child never started
        app.retrieve("never")


def test_an_async_workflow_s_bad_arguments_are_refused(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app()

    @app.workflow(name="achild")
    async def achild() -> str:
        return "done"

    @app.workflow(name="acareless")
    async def acareless() -> dict[str, str]:
        handle = await app.start_async(achild, workflow_id="acareless-child")
        messages = {
            "set_event number": await refused_async(lambda: perdure.set_event_async(7, "v")),  # type: ignore[arg-type]
            "set_event long": await refused_async(lambda: perdure.set_event_async(LONG, "v")),
            "set_event NUL sync form": refused(lambda: perdure.set_event("\x00", "v")),
            "recv topic": await refused_async(lambda: perdure.recv_async(topic=b"t")),  # type: ignore[arg-type]
            "recv NaN": await refused_async(lambda: perdure.recv_async(timeout=NAN)),
            "recv negative": await refused_async(lambda: perdure.recv_async(timeout=-0.5)),
            "sleep NaN": await refused_async(lambda: perdure.sleep_async(NAN)),
            "sleep inf": await refused_async(lambda: perdure.sleep_async(-INF)),
            "sleep_until str": await refused_async(
                lambda: perdure.sleep_until_async("tomorrow")  # type: ignore[arg-type]
            ),
            "send empty ID": await refused_async(lambda: app.send_async("", "hi")),
            "cancel empty ID": await refused_async(lambda: app.cancel_async("")),
            "child result NaN": await refused_async(lambda: handle.result_async(timeout=NAN)),
        }
        await perdure.sleep_async(-1)
        messages["recv zero"] = repr(await perdure.recv_async(timeout=0))
        messages["child result"] = await handle.result_async(timeout=30)
        return messages

    with app:
        messages = app.start(acareless, workflow_id="acareless-1").result(timeout=60)
    assert messages["set_event number"].startswith("event key must be a"), messages
    assert "1,001 bytes" in messages["set_event long"]
    assert "contains a NUL" in messages["set_event NUL sync form"]
    assert "topic must be a" in messages["recv topic"]
    for case in ("recv NaN", "recv negative"):
        assert "the timeout of perdure.recv_async()" in messages[case], messages[case]
    for case in ("sleep NaN", "sleep inf"):
        assert "the duration of perdure.sleep_async()" in messages[case], messages[case]
    assert "perdure.sleep_until_async() takes a datetime" in messages["sleep_until str"]
    assert "workflow ID must be a non-empty" in messages["send empty ID"]
    assert "workflow ID must be a non-empty" in messages["cancel empty ID"]
    assert "the timeout of handle.result_async()" in messages["child result NaN"]
    assert messages["recv zero"] == "None" and messages["child result"] == "done"
    names = [step.name for step in app.retrieve("acareless-1").status().steps]
    assert names == [
        "perdure.start_child",
        "perdure.sleep",
        "perdure.recv",
        "perdure.child_result",
    ], names


def test_outside_a_workflow_the_same_rules_hold(app: perdure.App) -> None:
    @app.workflow(name="slow")
    def slow() -> str:
        perdure.sleep(0.5)
        return "late"

    handle = app.start(slow, workflow_id="slow-1")
    for bad in (NAN, INF, -1, "1", True):
        message = refused(lambda bad=bad: handle.result(timeout=bad))
        assert message.startswith("the timeout of handle.result() must be"), message
        message = asyncio.run(refused_async(lambda bad=bad: handle.result_async(timeout=bad)))
        assert message.startswith("the timeout of handle.result_async() must be"), message
    # Zero looks once: the workflow has not run (no worker), so it is not done.
    with pytest.raises(perdure.WorkflowTimeoutError):
        handle.result(timeout=0)
    assert "perdure.sleep()" in refused(lambda: perdure.sleep(NAN))
    assert "perdure.sleep_async()" in asyncio.run(refused_async(lambda: perdure.sleep_async(INF)))
    assert "takes a datetime" in refused(lambda: perdure.sleep_until(0))  # type: ignore[arg-type]
    perdure.sleep(-1)  # no wait, as before
    perdure.sleep_until(datetime(2000, 1, 1))
    assert "event key" in refused(lambda: perdure.set_event(None, 1))  # type: ignore[arg-type]
    with app:
        assert handle.result(timeout=timedelta(seconds=30)) == "late"  # type: ignore[arg-type]
        assert handle.result(timeout=0) == "late"  # done: looking once is enough


# -- values that cannot be read back or stored say which value it was (#12) ----------------


class FragileSerializer(perdure.JSONSerializer):
    """JSON, but a value holding "DEEP" fails to load as a serializer of the user's could
    (a bare RecursionError), and "UNSTORABLE" fails to dump with a ValueError."""

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        if "DEEP" in data:
            raise RecursionError("maximum recursion depth exceeded while decoding")
        return super().loads(data, type_hint)

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        if value == "UNSTORABLE":
            raise ValueError("this value cannot be stored")
        return super().dumps(value, type_hint)


def test_a_message_that_cannot_be_read_back_names_the_workflow_topic_and_position(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app(serializer=FragileSerializer())

    @app.workflow(name="listener")
    def listener() -> Any:
        perdure.set_event("ready", True)
        return perdure.recv("orders", timeout=30)

    with app:
        handle = app.start(listener, workflow_id="listener-1")
        assert app.get_event("listener-1", "ready", timeout=30) is True
        app.send("listener-1", ["DEEP"], topic="orders")
        with pytest.raises(SerializationError) as info:
            handle.result(timeout=30)
    message = str(info.value)
    assert "the message on topic 'orders' received by workflow 'listener-1'" in message
    assert "at position 1" in message and "nested too deeply" in message, message
    assert not isinstance(info.value, RecursionError)


def test_values_that_cannot_be_stored_or_read_back_are_named(
    make_app: Callable[..., perdure.App],
) -> None:
    app = make_app(serializer=FragileSerializer())

    @app.workflow(name="deep_child")
    def deep_child() -> str:
        return "DEEP"

    @app.workflow(name="publisher")
    def publisher() -> list[str]:
        messages = []
        try:
            perdure.set_event("status", "UNSTORABLE")
        except SerializationError as exc:
            messages.append(str(exc))
        try:
            app.send("publisher-1", "UNSTORABLE", topic="self")
        except SerializationError as exc:
            messages.append(str(exc))
        try:
            app.start(deep_child, workflow_id="deep-child").result(timeout=30)
        except SerializationError as exc:
            messages.append(str(exc))
        return messages

    with app:
        messages = app.start(publisher, workflow_id="publisher-1").result(timeout=60)
        with pytest.raises(SerializationError) as info:
            app.retrieve("deep-child").result(timeout=30)
    event, sent, child = messages
    assert event.startswith("cannot store the value of event 'status' of workflow 'publisher-1'")
    assert "this value cannot be stored" in event, event
    assert sent.startswith(
        "cannot store the message to workflow 'publisher-1' on topic 'self' sent by workflow "
        "'publisher-1'"
    ), sent
    assert "the result of child workflow 'deep-child' awaited by workflow 'publisher-1'" in child
    assert "nested too deeply" in child, child
    outside = str(info.value)
    assert outside.startswith("the result of workflow 'deep-child': nested too deeply"), outside
