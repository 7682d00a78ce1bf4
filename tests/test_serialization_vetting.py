"""The JSON serializer's two ways of writing a value under its annotation.

Plain data that pydantic's strict check accepts (``_vetted`` hints) is written without
``warnings="error"``, whose string argument pydantic-core converts at a cost on every
call (and far more with many threads serializing at once); everything else goes the
checked way. Either way the text is the same as the checked way alone gives, and a
value that does not fit its annotation is still refused when written.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal
from uuid import UUID

import pytest
from pydantic import AfterValidator, BaseModel, PlainSerializer
from typing_extensions import TypedDict

from perdure._errors import SerializationError
from perdure._serialization import JSONSerializer

JSON = JSONSerializer()


class Color(Enum):
    RED = "red"


@dataclass
class Address:
    street: str


class Order(BaseModel):
    id: str


class Shipment(TypedDict):
    order_id: str


@pytest.mark.parametrize(
    ("hint", "vetted"),
    [
        (dict[str, Any], True),
        (int | None, True),
        (list[dict[str, list[int]]], True),
        (tuple[int, str], True),
        (set[Decimal], True),
        (datetime, True),
        (UUID, True),
        (Color, True),
        (Literal["a", "b"], True),
        # Instances are taken as they are by the strict check: their fields go unchecked.
        (Address, False),
        (list[Address], False),
        (Order, False),
        (dict[str, Order], False),
        (Shipment, False),
        # User code in the schema: the serializer may meet what the check did not.
        (Annotated[int, PlainSerializer(str)], False),
        (Annotated[int, AfterValidator(abs)], False),
    ],
)
def test_only_plain_data_hints_are_vetted(hint: Any, vetted: bool) -> None:
    assert JSON._entry(hint)[2] is vetted


WHEN = datetime(2026, 1, 1, tzinfo=timezone.utc)
STAMP = '"2026-01-01T00:00:00Z"'


@pytest.mark.parametrize(
    ("hint", "value", "text"),
    [
        # Accepted by the strict check: written straight away.
        (dict[str, Any], {"t": WHEN, "a": Address("x")}, f'{{"t":{STAMP},"a":{{"street":"x"}}}}'),
        (list[int] | None, None, "null"),
        (tuple[int, str], (1, "a"), '[1,"a"]'),
        (Color, Color.RED, '"red"'),
        # Refused by the strict check but fitting the annotation: the checked way.
        (tuple[int, ...], [1, 2], "[1,2]"),
        (list[int], (1, 2), "[1,2]"),
        (dict[str, int], {"a": True}, '{"a":1}'),
        (bytes, bytearray(b"ab"), '"YWI="'),
        (set[int], frozenset({1}), "[1]"),
        (dict[str, str], {1: "x"}, '{"1":"x"}'),
        (int | None, "7", '"7"'),
    ],
)
def test_plain_data_is_written_as_the_checked_way_writes_it(
    hint: Any, value: Any, text: str
) -> None:
    assert JSON.dumps(value, hint) == text


@pytest.mark.parametrize(
    ("hint", "value"),
    [
        (date, datetime(2026, 1, 1, 5)),
        (int | str, 3.5),
        (list[int], [1, "two"]),
        # pydantic's serializer does not warn about a literal it does not expect.
        (Literal["a", "b"], "c"),
        (dict[str, Literal[1, 2]], {"x": 3}),
    ],
)
def test_plain_data_that_does_not_fit_is_refused_when_written(hint: Any, value: Any) -> None:
    with pytest.raises(SerializationError, match="does not match its annotation"):
        JSON.dumps(value, hint)


def test_many_threads_write_plain_data_as_one_thread_does() -> None:
    # The pool of a worker serializes step results from dozens of threads at once.
    hint = dict[str, Any]
    values = [{"order": f"o-{n}", "n": n, "at": WHEN} for n in range(400)]
    expected = [JSON.dumps(value, hint) for value in values]
    results: dict[int, list[str]] = {}

    def write(index: int) -> None:
        results[index] = [JSON.dumps(value, hint) for value in values]

    threads = [threading.Thread(target=write, args=(index,)) for index in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[index] == expected for index in range(16))
