"""Tests for perdure._serialization: values, call arguments and errors as TEXT."""

from __future__ import annotations

import json
import math
import re
import socket
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Annotated, Any, Optional
from uuid import UUID

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field
from typing_extensions import TypedDict

import perdure
from perdure._error_codec import decode_error, encode_error
from perdure._errors import SerializationError, StepFailedError, WorkflowFailedError
from perdure._model import NewWorkflow
from perdure._serialization import (
    JSONSerializer,
    PickleSerializer,
    Serializer,
    decode_call,
    decode_value,
    encode_call,
    encode_value,
    return_hint,
)

JSON = JSONSerializer()
PICKLE = PickleSerializer()
WHEN = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=timezone.utc)
ID = UUID("12345678-1234-5678-1234-567812345678")


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Level(IntEnum):
    LOW = 1
    HIGH = 2


@dataclass(frozen=True)
class Address:
    street: str
    zip: str


@dataclass
class Item:
    sku: str
    qty: int
    price: Decimal
    photo: bytes = b""


class Order(BaseModel):
    # Models serialize their fields by their own config, where bytes default to UTF-8.
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
    id: str
    placed: datetime
    items: list[Item] = []
    tags: set[str] = set()
    address: Optional[Address] = None  # noqa: UP045 - Optional is one of the cases tested


class Shipment(TypedDict):
    order_id: str
    sent: date
    label: bytes


class Animal(BaseModel):
    name: str


class Dog(Animal):
    bark: str


class Aliased(BaseModel):
    model_config = ConfigDict(extra="forbid")
    order_id: str = Field(alias="orderId")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def shout(self) -> str:
        return self.order_id.upper()


class Opaque:
    """An arbitrary class: not JSON, but picklable."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.x == self.x


ORDER = Order(
    id="o-1",
    placed=WHEN,
    items=[Item("sku-1", 2, Decimal("9.99"), b"\x00\xff\xfe")],
    tags={"gift", "rush"},
    address=Address("1 Main St", "12345"),
)

ROUND_TRIPS: list[tuple[Any, Any]] = [
    (datetime, WHEN),
    (datetime, datetime(2024, 5, 1, 12, 30)),
    (date, date(2024, 2, 29)),
    (timedelta, timedelta(days=1, seconds=5)),
    (Decimal, Decimal("12345678901234567890.000000001")),
    (UUID, ID),
    (bytes, b"\x00\x01\xff binary"),
    (Color, Color.GREEN),
    (Level, Level.HIGH),
    (tuple[int, str, datetime], (1, "a", WHEN)),
    (tuple[Decimal, ...], (Decimal("1.1"), Decimal("2.2"))),
    (set[int], {1, 2, 3}),
    (frozenset[str], frozenset({"a", "b"})),
    (Optional[int], None),  # noqa: UP045
    (Optional[int], 5),  # noqa: UP045
    (int | None, 7),
    (Item, Item("sku-1", 1, Decimal("0.10"), b"\xff\x00")),
    (Address, Address("x", "y")),
    (Order, ORDER),
    (list[Order], [ORDER, Order(id="o-2", placed=WHEN)]),
    (dict[str, Order], {"a": ORDER}),
    (dict[str, list[Item]], {"k": [Item("s", 1, Decimal(1))]}),
    (Shipment, Shipment(order_id="o-1", sent=date(2024, 1, 2), label=b"\xff")),
    (Aliased, Aliased(orderId="o-9")),
    (Annotated[int, Field(gt=0)], 3),
    (float, 1.5),
    (float, float("inf")),
    (str, "héllo ✓"),
    (int, 10**30),
    (bool, True),
    (type(None), None),
    (dict, {"a": [1, 2.5, None, True, "x"], "b": {}}),
    (list, [1, "two", [3]]),
    (Any, {"order": "o-1", "step": "authorize_payment"}),
]


def case_id(value: Any) -> str:
    """``repr(value)`` with the items between innermost braces sorted: a set of strings
    prints in an order that follows the hash seed, and the processes of a distributed run
    (pytest-xdist, make test) must all give a test the same ID."""
    return re.sub(
        r"\{([^{}]*)\}",
        lambda braces: "{" + ", ".join(sorted(braces[1].split(", "))) + "}",
        repr(value),
    )


@pytest.mark.parametrize(("hint", "value"), ROUND_TRIPS, ids=case_id)
def test_json_round_trip_to_the_annotated_type(hint: Any, value: Any) -> None:
    text = JSON.dumps(value, hint)
    assert isinstance(text, str)
    back = JSON.loads(text, hint)
    assert back == value
    assert type(back) is type(value)


def test_json_round_trip_keeps_nested_types() -> None:
    back = JSON.loads(JSON.dumps(ORDER, Order), Order)
    assert back.items[0].photo == b"\x00\xff\xfe"
    assert isinstance(back.items[0].price, Decimal)
    assert back.address == Address("1 Main St", "12345")
    assert back.placed.tzinfo is not None


def test_model_with_utf8_bytes_explains_the_fix() -> None:
    class Blob(BaseModel):
        data: bytes

    assert JSON.loads(JSON.dumps(Blob(data=b"text"), Blob), Blob) == Blob(data=b"text")
    with pytest.raises(SerializationError, match="ser_json_bytes='base64'"):
        JSON.dumps(Blob(data=b"\xff"), Blob)


def test_nan_round_trips() -> None:
    assert math.isnan(JSON.loads(JSON.dumps(float("nan"), float), float))
    assert math.isnan(JSON.loads(JSON.dumps({"x": float("nan")}))["x"])
    assert JSON.loads(JSON.dumps([float("-inf")], list[float]), list[float]) == [float("-inf")]


def test_any_hint_gives_plain_json() -> None:
    value = {
        "order": ORDER,
        "item": Item("s", 1, Decimal("1.50"), b"\xff"),
        "when": WHEN,
        "day": date(2024, 1, 2),
        "id": ID,
        "raw": b"\xff",
        "color": Color.RED,
        "pair": (1, 2),
        "set": {3},
        "nested": [{"deep": [Decimal("2")]}],
    }
    back = JSON.loads(JSON.dumps(value))
    assert back["item"] == {"sku": "s", "qty": 1, "price": "1.50", "photo": "_w=="}
    assert back["when"] == "2024-05-01T12:30:15.123456Z"
    assert back["day"] == "2024-01-02"
    assert back["id"] == str(ID)
    assert back["raw"] == "_w=="
    assert back["color"] == "red"
    assert back["pair"] == [1, 2]
    assert back["set"] == [3]
    assert back["nested"] == [{"deep": ["2"]}]
    assert sorted(back["order"]["tags"]) == ["gift", "rush"]
    assert json.loads(json.dumps(back)) == back  # only plain JSON types


def test_any_hint_keeps_subclass_fields() -> None:
    assert JSON.loads(JSON.dumps([Dog(name="rex", bark="woof")])) == [
        {"name": "rex", "bark": "woof"}
    ]


def test_plain_json_is_compact() -> None:
    value = {"order": "o-1", "step": "authorize_payment"}
    assert JSON.dumps(value, dict) == '{"order":"o-1","step":"authorize_payment"}'
    assert JSON.dumps(value) == JSON.dumps(value, dict)


def test_value_that_differs_from_its_annotation_but_fits_it_is_accepted() -> None:
    text = JSON.dumps({"id": "o-1", "placed": WHEN}, Order)
    assert JSON.loads(text, Order) == Order(id="o-1", placed=WHEN)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("not a number", int | None),
        (Animal(name="a"), Order),
        ([Dog(name="a", bark="b")], list[Item]),
    ],
)
def test_value_that_does_not_fit_its_annotation_fails_early(value: Any, hint: Any) -> None:
    with pytest.raises(SerializationError, match="does not match its annotation"):
        JSON.dumps(value, hint)


def _lambda() -> Any:
    return lambda: 1


@pytest.mark.parametrize("hint", [Any, list[Any], dict])
@pytest.mark.parametrize(
    ("make", "type_name"),
    [
        (lambda: Opaque(1), "Opaque"),
        (_lambda, "function"),
        (object, "object"),
        (lambda: {"nested": [Opaque(2)]}, "dict"),
    ],
)
def test_unserializable_values_raise_a_clear_error(make: Any, type_name: str, hint: Any) -> None:
    value = make()
    if hint == list[Any]:
        value = [value]
        type_name = "list"
    with pytest.raises(SerializationError) as info:
        JSON.dumps(value, hint)
    message = str(info.value)
    assert type_name in message
    assert "pass JSON-compatible values, dataclasses or pydantic models" in message
    assert "App(serializer=PickleSerializer())" in message


def test_socket_is_unserializable() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError, match="socket.socket"):
        JSON.dumps(sock)


def test_unsupported_annotation_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="Opaque"):
        JSON.dumps(Opaque(1), Opaque)


def test_unhashable_annotation_still_works() -> None:
    hint = Annotated[list[int], ["unhashable metadata"]]
    assert JSON.loads(JSON.dumps([1, 2], hint), hint) == [1, 2]


@pytest.mark.parametrize(
    ("data", "hint"),
    [("{not json", Any), ("{not json", Order), ('{"id": 1}', Order), ('"x"', date), ("[1]", Item)],
)
def test_decoding_failures_raise_serialization_error(data: str, hint: Any) -> None:
    with pytest.raises(SerializationError, match="cannot read a stored value"):
        JSON.loads(data, hint)


def test_serializers_satisfy_the_protocol() -> None:
    assert isinstance(JSON, Serializer) and JSON.name == "json"
    assert isinstance(PICKLE, Serializer) and PICKLE.name == "pickle"


@pytest.mark.parametrize("value", [Opaque(3), {"a": (1, {2})}, ORDER, WHEN, None])
def test_pickle_round_trip(value: Any) -> None:
    text = PICKLE.dumps(value)
    assert text.isascii()
    assert PICKLE.loads(text) == value


def test_pickle_errors() -> None:
    with pytest.raises(SerializationError, match="function"):
        PICKLE.dumps(lambda: 1)
    with pytest.raises(SerializationError):
        PICKLE.loads("not base64!")


# --- call encoding -------------------------------------------------------------------------------


def checkout(
    order: Order, when: datetime, *items: Item, note: str = "", **extra: Decimal
) -> Address | None:
    return None


def test_encode_and_decode_call() -> None:
    item = Item("s", 1, Decimal("2.50"), b"\xff")
    args = (ORDER, WHEN, item, item)
    kwargs = {"note": "hi", "tip": Decimal("1.10"), "fee": Decimal("0.5")}
    text = encode_call(JSON, checkout, args, kwargs, "workflow 'checkout'")
    record = json.loads(text)  # one readable JSON document
    assert record["args"][1] == "2024-05-01T12:30:15.123456Z"
    assert record["kwargs"] == {"note": "hi", "tip": "1.10", "fee": "0.5"}
    new_args, new_kwargs = decode_call(JSON, checkout, text, "workflow 'checkout'")
    assert new_args == args and new_kwargs == kwargs
    assert isinstance(new_args[0], Order) and isinstance(new_args[3], Item)
    assert isinstance(new_kwargs["tip"], Decimal)


def test_arguments_are_stored_in_calling_order() -> None:
    text = encode_call(JSON, checkout, (), {"when": WHEN, "order": ORDER}, "workflow 'checkout'")
    assert decode_call(JSON, checkout, text, "w") == ((ORDER, WHEN), {})


def test_encode_call_with_pickle() -> None:
    args = (ORDER, WHEN, Item("s", 1, Decimal(1)))
    text = encode_call(PICKLE, checkout, args, {"x": Decimal(2)}, "workflow 'checkout'")
    assert decode_call(PICKLE, checkout, text, "w") == (args, {"x": Decimal(2)})


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((ORDER,), {}, "missing a required argument: 'when'"),
        ((ORDER, WHEN), {"order": ORDER}, "multiple values for argument 'order'"),
        ((), {}, "missing a required argument: 'order'"),
    ],
)
def test_binding_errors_name_the_workflow(args: Any, kwargs: Any, match: str) -> None:
    with pytest.raises(TypeError, match=f"cannot call workflow 'checkout' .*{match}"):
        encode_call(JSON, checkout, args, kwargs, "workflow 'checkout'")


def test_unexpected_keyword() -> None:
    def plain(a: int) -> None: ...

    with pytest.raises(TypeError, match="step 'plain'.*unexpected keyword argument 'b'"):
        encode_call(JSON, plain, (1,), {"b": 2}, "step 'plain'")


@pytest.mark.parametrize(
    ("args", "kwargs", "label"),
    [
        ((Opaque(1), WHEN), {}, "order"),
        ((ORDER, WHEN, Item("s", 1, Decimal(1)), Opaque(1)), {}, "items[1]"),
        ((ORDER, WHEN), {"note": Opaque(1)}, "note"),
        ((ORDER, WHEN), {"tip": Opaque(1)}, "tip"),
    ],
)
def test_unserializable_argument_names_the_parameter(args: Any, kwargs: Any, label: str) -> None:
    with pytest.raises(SerializationError) as info:
        encode_call(JSON, checkout, args, kwargs, "workflow 'checkout'")
    message = str(info.value)
    assert message.startswith(f"cannot serialize argument '{label}' of workflow 'checkout': ")
    assert "Opaque" in message and "PickleSerializer()" in message


def test_decode_call_errors() -> None:
    with pytest.raises(SerializationError, match="arguments of workflow 'w' are invalid"):
        decode_call(JSON, checkout, "[]", "workflow 'w'")
    bad = '{"args":[{"id":1},"2024-01-01T00:00:00"],"kwargs":{}}'
    with pytest.raises(SerializationError, match="cannot decode argument 'order' of workflow 'w'"):
        decode_call(JSON, checkout, bad, "workflow 'w'")

    def changed(order: Order) -> None: ...

    text = encode_call(JSON, checkout, (ORDER, WHEN), {}, "w")
    with pytest.raises(TypeError, match="arguments of workflow 'w' no longer fit its signature"):
        decode_call(JSON, changed, text, "workflow 'w'")


def test_unresolvable_annotations_fall_back_to_any() -> None:
    def partly(a: NotDefinedAnywhere, b: date) -> NotDefinedAnywhere:  # type: ignore[name-defined]  # noqa: F821
        return a

    text = encode_call(JSON, partly, (ORDER, date(2024, 1, 1)), {}, "w")
    args, _ = decode_call(JSON, partly, text, "w")
    assert args[0]["id"] == "o-1"  # no usable annotation: plain JSON
    assert return_hint(partly) is Any


@pytest.mark.parametrize("fn", [print, max, lambda *a, **k: None])
def test_callables_without_signature_or_annotations(fn: Any) -> None:
    text = encode_call(JSON, fn, ("x", 1), {"sep": "-"}, "w")
    assert decode_call(JSON, fn, text, "w") == (("x", 1), {"sep": "-"})
    assert return_hint(fn) is Any


async def _async_workflow(x: int) -> list[Order]:
    return []


def _returns_none() -> None: ...


@pytest.mark.parametrize(
    ("fn", "hint"),
    [(checkout, Address | None), (_async_workflow, list[Order]), (_returns_none, type(None))],
)
def test_return_hint(fn: Any, hint: Any) -> None:
    assert return_hint(fn) == hint


# --- errors --------------------------------------------------------------------------------------


class CustomError(Exception):
    pass


class Outer:
    class NestedError(ValueError):
        pass


class KeywordOnlyError(Exception):
    def __init__(self, *, code: int) -> None:
        super().__init__(f"failed with code {code}")
        self.code = code


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad value", 3),
        KeyError("missing"),
        FileNotFoundError(2, "No such file or directory"),
        CustomError("custom", {"detail": [1, 2]}),
        Outer.NestedError("nested"),
        SerializationError("cannot"),
    ],
    ids=repr,
)
def test_errors_round_trip_to_their_type(exc: Exception) -> None:
    record = json.loads(encode_error(_raised(exc)))
    assert record["type"] == f"{type(exc).__module__}:{type(exc).__qualname__}"
    assert record["message"] == str(exc)
    assert "Traceback (most recent call last)" in record["traceback"]
    back = decode_error(encode_error(exc), StepFailedError)
    assert type(back) is type(exc)
    assert str(back) == str(exc) and back.args == exc.args
    assert back.perdure_traceback == record["traceback"]  # type: ignore[attr-defined]


def test_keyword_only_constructor_falls_back() -> None:
    exc = _raised(KeywordOnlyError(code=7))
    back = decode_error(encode_error(exc), StepFailedError)
    assert isinstance(back, StepFailedError)
    assert back.type_name == f"{__name__}:KeywordOnlyError"
    assert back.message == "failed with code 7"
    assert "KeywordOnlyError" in back.traceback
    assert back.perdure_traceback == back.traceback  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "type_name",
    [
        "perdure_not_a_real_module:SomeError",
        "builtins:NoSuchError",
        "builtins:KeyboardInterrupt",  # a signal, not an error: never rebuilt
        "builtins:len",
        f"{__name__}:Outer",
        f"{__name__}:test_errors_round_trip_to_their_type.<locals>.Local",
    ],
)
def test_unknown_or_unsafe_types_fall_back(type_name: str) -> None:
    data = json.dumps({"type": type_name, "message": "boom", "args": ["boom"], "traceback": "tb"})
    back = decode_error(data, WorkflowFailedError)
    assert isinstance(back, WorkflowFailedError)
    assert (back.type_name, back.message, back.traceback) == (type_name, "boom", "tb")
    assert str(back) == f"{type_name}: boom"
    assert "perdure_not_a_real_module" not in sys.modules


def test_error_with_unserializable_args_falls_back() -> None:
    record = json.loads(encode_error(CustomError(Opaque(1))))
    assert "args" not in record
    back = decode_error(json.dumps(record), WorkflowFailedError)
    assert isinstance(back, WorkflowFailedError) and back.type_name.endswith(":CustomError")


def test_signals_fall_back() -> None:
    back = decode_error(encode_error(KeyboardInterrupt()), WorkflowFailedError)
    assert isinstance(back, WorkflowFailedError)


def test_broken_str_is_recorded() -> None:
    class Broken(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert "unprintable" in json.loads(encode_error(Broken()))["message"]


@pytest.mark.parametrize(
    ("data", "type_name", "message"),
    [("not json", "<unknown>", "not json"), ("{}", "<unknown>", ""), ("[1]", "<unknown>", "[1]")],
)
def test_damaged_error_record_still_gives_an_error(data: str, type_name: str, message: str) -> None:
    back = decode_error(data, StepFailedError)
    assert isinstance(back, StepFailedError)
    assert (back.type_name, back.message) == (type_name, message)


# -- values nested too deeply -----------------------------------------------------------------

DEPTH = 300_000
DEEP_JSON = "[" * DEPTH + "]" * DEPTH


def deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def assert_too_deep(exc: BaseException, *names: str) -> None:
    assert isinstance(exc, SerializationError), repr(exc)
    message = str(exc)
    assert "nested too deeply" in message, message
    assert "store a flatter value" in message, message
    assert len(message) < 500, message  # not the payload echoed back
    for name in names:
        assert name in message, message


def test_deep_call_arguments_read_back_give_a_serialization_error() -> None:
    def fn(x: Any) -> None:
        pass

    data = '{"args":[' + DEEP_JSON + '],"kwargs":{}}'
    for serializer in (JSON, PICKLE):
        with pytest.raises(SerializationError) as info:
            decode_call(serializer, fn, data, "workflow 'deep' (ID 'd-1')")
        assert_too_deep(info.value, "the recorded arguments of workflow 'deep' (ID 'd-1')")


@pytest.mark.parametrize("hint", [Any, list[Any], dict])
def test_deep_values_read_back_give_a_serialization_error(hint: Any) -> None:
    with pytest.raises(SerializationError) as info:
        JSON.loads(DEEP_JSON, hint)
    assert_too_deep(info.value)
    with pytest.raises(SerializationError) as info:
        decode_value(JSON, DEEP_JSON, hint, "the result of step 'fetch' in workflow 'w-1'")
    assert_too_deep(info.value, "the result of step 'fetch' in workflow 'w-1'")


def test_deep_values_are_refused_when_stored() -> None:
    value = deep_list(DEPTH)
    for serializer in (JSON, PICKLE):
        with pytest.raises(SerializationError) as info:
            serializer.dumps(value, Any)
        assert_too_deep(info.value)
        with pytest.raises(SerializationError) as info:
            encode_value(serializer, value, Any, "the message to workflow 'w-1'")
        assert_too_deep(info.value, "the message to workflow 'w-1'")
    with pytest.raises(SerializationError) as info:
        encode_call(JSON, lambda x: None, (value,), {}, "workflow 'deep'")
    assert_too_deep(info.value, "argument 'x' of workflow 'deep'")


def test_what_could_be_written_but_not_read_back_is_refused_when_written() -> None:
    # pydantic writes a few hundred levels but reads back 200: such a value, stored,
    # would fail every later read of the workflow that recorded it.
    for hint in (Any, list[Any]):
        with pytest.raises(SerializationError) as info:
            JSON.dumps(deep_list(250), hint)
        assert_too_deep(info.value, "list")
    with pytest.raises(SerializationError) as info:
        JSON.loads("[" * 250 + "]" * 250, Any)
    assert_too_deep(info.value)
    # As deep as can be read back, and wide, are fine.
    for value in (deep_list(199), [{"a": [i], "b": {"c": i}} for i in range(500)]):
        assert JSON.loads(JSON.dumps(value, Any), Any) == value


class _RecursingSerializer:
    """A serializer of the user's that lets RecursionError out."""

    name = "recursing"

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        raise RecursionError("maximum recursion depth exceeded")

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")


def test_a_user_serializer_recursion_error_is_named() -> None:
    serializer = _RecursingSerializer()
    with pytest.raises(SerializationError) as info:
        decode_value(serializer, "[]", Any, "the result of step 'fetch'")
    assert_too_deep(info.value, "the result of step 'fetch'")
    with pytest.raises(SerializationError) as info:
        encode_value(serializer, [], Any, "the result of step 'fetch'")
    assert_too_deep(info.value, "the result of step 'fetch'")


def test_deep_error_records_still_give_an_error() -> None:
    rebuilt = decode_error(DEEP_JSON, WorkflowFailedError)
    assert isinstance(rebuilt, WorkflowFailedError)
    assert "nested too deeply" in str(rebuilt)


def test_a_workflow_whose_recorded_inputs_are_too_deep_fails_clearly(
    make_app: Any,
) -> None:
    app: perdure.App = make_app()

    @app.workflow(name="deep")
    def deep(payload: Any) -> int:
        return 1

    with app:
        # As a hostile or damaged record would be: written to the database directly.
        new = NewWorkflow(
            id="deep-1",
            name="deep",
            inputs='{"args":[' + DEEP_JSON + '],"kwargs":{}}',
            serializer=app.serializer.name,
            app_version=app.settings.app_version,
            created_at=app.clock.time(),
        )
        app.store.create_workflow(new, None, None).result()
        app.executor.wake()  # type: ignore[union-attr]
        with pytest.raises(SerializationError) as info:
            app.retrieve("deep-1").result(timeout=30)
    assert_too_deep(info.value, "workflow 'deep'")
    assert app.retrieve("deep-1").status().status == "FAILED"
