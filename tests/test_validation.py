"""The rules for durations and identifiers (``_validation``), and the text helpers that
keep passwords and control characters out of what people read (``_text``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

import perdure
from perdure._model import WorkflowState
from perdure._text import escape_for_terminal, redact_url, shorten
from perdure._validation import (
    MAX_KEY_BYTES,
    InvalidValueError,
    check_idempotency_key,
    check_key,
    check_name,
    check_optional_key,
    check_optional_workflow_id,
    check_workflow_id,
    non_negative_seconds,
    optional_positive_seconds,
    positive_seconds,
)

# -- durations ------------------------------------------------------------------------------

BAD_TIMEOUTS = [float("nan"), 0, 0.0, -1, -0.5, float("inf"), float("-inf"), True, "3", None]


@pytest.mark.parametrize("value", BAD_TIMEOUTS, ids=repr)
def test_positive_seconds_refuses(value: Any) -> None:
    with pytest.raises(InvalidValueError, match=r"^the timeout must be a finite number") as info:
        positive_seconds("the timeout", value)
    assert isinstance(info.value, perdure.ConfigurationError)
    assert isinstance(info.value, ValueError)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


@pytest.mark.parametrize("value", [0.001, 1, 2.5, 10**6, Fraction(1, 2)], ids=repr)
def test_positive_seconds_accepts(value: Any) -> None:
    assert positive_seconds("t", value) == float(value)
    assert isinstance(positive_seconds("t", value), float)


def test_huge_ints_and_other_types() -> None:
    with pytest.raises(InvalidValueError, match="finite"):
        positive_seconds("t", 10**400)
    with pytest.raises(InvalidValueError, match="not Decimal"):
        positive_seconds("t", Decimal("1.5"))


def test_non_negative_seconds_allows_zero_only() -> None:
    assert non_negative_seconds("interval", 0) == 0.0
    for value in (float("nan"), -1, float("inf")):
        with pytest.raises(InvalidValueError, match="interval must be a finite number"):
            non_negative_seconds("interval", value)
    assert optional_positive_seconds("t", None) is None
    assert optional_positive_seconds("t", 2) == 2.0


@pytest.mark.parametrize("value", [float("nan"), 0, -1, float("inf")], ids=repr)
def test_step_timeouts_are_checked_at_decoration(value: float) -> None:
    app = perdure.App("sqlite:///unused.db")

    def fetch() -> None:
        pass

    with pytest.raises(
        perdure.ConfigurationError, match=r"^the timeout of step '.*fetch' must be"
    ) as info:
        app.step(timeout=value)(fetch)
    assert repr(value) in str(info.value)
    app.step(timeout=0.5)(fetch)  # a positive one is fine


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("initial_interval", float("nan")),
        ("initial_interval", float("inf")),
        ("initial_interval", -1),
        ("max_interval", float("nan")),
        ("max_interval", float("inf")),
        ("max_interval", -0.1),
        ("backoff", float("nan")),
        ("backoff", float("inf")),
        ("backoff", 0.5),
        ("jitter", float("nan")),
        ("jitter", 1.5),
        ("probe_interval", 0),
        ("probe_interval", float("nan")),
        ("probe_interval", float("inf")),
        ("probe_max_interval", float("nan")),
        ("probe_max_interval", float("inf")),
        ("max_attempts", 0),
        ("max_attempts", float("nan")),
        ("max_attempts", 2.5),
        ("max_attempts", True),
    ],
)
def test_retry_refuses_bad_values_naming_the_field(field: str, value: Any) -> None:
    with pytest.raises(perdure.ConfigurationError, match=field) as info:
        perdure.Retry(**{field: value})
    assert isinstance(info.value, ValueError)  # as before: Retry raised ValueError
    assert repr(value) in str(info.value)


def test_retry_accepts_zero_intervals_and_many_attempts() -> None:
    policy = perdure.Retry(initial_interval=0, max_interval=0, jitter=0)
    assert policy.delay(3) == 0
    forever = perdure.Retry(max_attempts=10**9, initial_interval=1, max_interval=60, jitter=0)
    assert forever.delay(100_000) == 60  # no OverflowError after thousands of attempts
    assert perdure.Retry(max_attempts=10**9, initial_interval=0, jitter=0).delay(100_000) == 0


# -- identifiers ----------------------------------------------------------------------------

IDENTIFIER_CHECKS: list[tuple[str, Callable[[Any], Any]]] = [
    ("workflow ID", check_workflow_id),
    ("workflow name", lambda v: check_name("workflow name", v)),
    ("step name", lambda v: check_name("step name", v)),
    ("topic", lambda v: check_key("topic", v)),
    ("event key", lambda v: check_key("event key", v)),
    ("idempotency_key", check_idempotency_key),
]


@pytest.mark.parametrize(("field", "check"), IDENTIFIER_CHECKS)
@pytest.mark.parametrize(
    ("value", "why"),
    [
        (42, "not int 42"),
        (b"order-1", "not bytes b'order-1'"),
        ("x" * (MAX_KEY_BYTES + 1), "is 1,001 bytes long in UTF-8"),
        ("order\x00-1", "contains a NUL character (at 5)"),
        ("order-\ud800", "contains a lone surrogate (at 6)"),
    ],
    ids=["int", "bytes", "too-long", "nul", "surrogate"],
)
def test_identifiers_refuse(field: str, check: Callable[[Any], Any], value: Any, why: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        check(value)
    message = str(info.value)
    assert message.startswith(field), message
    assert why in message, message
    assert "at most 1,000 bytes in UTF-8, without NUL characters or lone surrogates" in message
    assert len(message) < 300, message  # a long value is shortened
    # The message itself is safe to print and to store.
    message.encode("utf-8")
    assert "\x00" not in message


@pytest.mark.parametrize(("field", "check"), IDENTIFIER_CHECKS)
def test_identifiers_accept(field: str, check: Callable[[Any], Any]) -> None:
    for value in ("order-1", "x" * MAX_KEY_BYTES, "commande-é-😀", "line\nbreak"):
        assert check(value) == value
    assert type(check(WorkflowState.FAILED)) is str  # a str subclass is stored as plain text


def test_empty_values() -> None:
    for check in (check_workflow_id, lambda v: check_name("workflow name", v)):
        with pytest.raises(InvalidValueError, match="must be a non-empty str"):
            check("")
    with pytest.raises(InvalidValueError, match="^workflow_id must be a non-empty str"):
        check_optional_workflow_id("")  # not silently a random UUID
    with pytest.raises(InvalidValueError, match="^idempotency_key must be a non-empty"):
        check_idempotency_key("")
    assert check_key("topic", "") == ""  # the default topic
    assert check_key("event key", "") == ""
    assert check_optional_workflow_id(None) is None
    assert check_optional_key("topic", None) is None
    assert check_idempotency_key(None) is None
    with pytest.raises(InvalidValueError, match="^workflow ID must be .* not NoneType None"):
        check_workflow_id(None)


# -- text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres:s3cret@db:5432/shop", "postgresql://postgres:***@db:5432/shop"),
        ("mysql://admin:S3cretPW@db/prod", "mysql://admin:***@db/prod"),
        ("postgresql://u:p%40ss@h/d?sslmode=require", "postgresql://u:***@h/d?sslmode=require"),
        ("postgresql://u:pa@ss/word@h/d", "postgresql://u:***@h/d"),
        (
            "postgresql://u@h/d?password=hunter22&sslmode=require",
            "postgresql://u@h/d?password=***&sslmode=require",
        ),
        ("postgresql://h/d?user=u&sslpassword=k3y", "postgresql://h/d?user=u&sslpassword=***"),
        ("host=db user=u password='a b c' dbname=shop", "host=db user=u password=*** dbname=shop"),
        ("postgresql://u@h:5432/d", "postgresql://u@h:5432/d"),
        ("sqlite:///var/lib/app/perdure.db", "sqlite:///var/lib/app/perdure.db"),
        ("postgresql://u:pw@[::1]:5432/d", "postgresql://u:***@[::1]:5432/d"),
        ("postgresql://[::1]:5432/d", "postgresql://[::1]:5432/d"),
        ("postgresql://[::1:5432/d:x@", "postgresql://[:***@"),  # malformed: still redacted
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("order-42", "order-42"),
        ("café 😀 注文", "café 😀 注文"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("c1\x9bcsi\x7fdel", "c1\\x9bcsi\\x7fdel"),
        ("abc\u202edcba\u2066x\u2069", "abc\\u202edcba\\u2066x\\u2069"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone\ud800", "lone\\ud800"),
        (42, "42"),
    ],
)
def test_escape_for_terminal(text: Any, expected: str) -> None:
    escaped = escape_for_terminal(text)
    assert escaped == expected
    assert escaped.isprintable()


def test_shorten() -> None:
    assert shorten("short") == "short"
    long = "a" * 50 + "b" * 950
    cut = shorten(long)
    assert cut.endswith("(1000 characters)") and len(cut) < 100
    assert not math.isnan(len(cut))
