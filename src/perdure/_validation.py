"""The rules for what callers hand perdure: durations, and the texts that name things.

One rule for every identifier, checked where it enters the API, so that a value is
refused at once with a message that names it, instead of failing later in one store
and not the other (PostgreSQL refuses a NUL and an index entry over ~2.7 KB, SQLite
accepts both) or being silently replaced (an empty workflow ID by a random one):

- workflow IDs, workflow names and step names: a non-empty ``str`` of at most 1,000
  bytes in UTF-8 (1,000 ASCII characters);
- message topics and event keys: the same, and they may be empty (``""`` is the
  default topic);
- idempotency keys: like workflow IDs, or ``None``;
- none may contain a NUL character or a lone surrogate (text that is not valid
  Unicode cannot be stored as UTF-8).

Durations (timeouts, retry intervals) must be finite numbers of seconds: positive, or
for the intervals that may be zero, not negative.
"""

from __future__ import annotations

import math
import numbers
from typing import Final

from ._errors import InvalidValueError
from ._text import shorten

#: The most bytes (in UTF-8) a workflow ID, name, topic, event key or idempotency key may
#: have. The same on both stores (the stores check it again before writing); well below
#: what a PostgreSQL index entry can hold (about 2,700 bytes), also where one index entry
#: holds two of them (a workflow ID and a topic).
MAX_KEY_BYTES: Final = 1000

_RULE = "str of at most {limit:,} bytes in UTF-8, without NUL characters or lone surrogates"


def _show(value: object) -> str:
    """The value as a message shows it: shortened, and escaped by ``repr``."""
    if isinstance(value, str):
        return repr(shorten(value))
    return shorten(repr(value))


def _kind(value: object) -> str:
    return type(value).__name__


def _check_text(what: str, value: object, *, allow_empty: bool) -> str:
    # The common case, on every start and write: plain ASCII text, short enough (one byte
    # per character, so no lone surrogate either) and without NUL: a few C calls.
    if (
        type(value) is str
        and value.isascii()
        and len(value) <= MAX_KEY_BYTES
        and (value or allow_empty)
        and "\x00" not in value
    ):
        return value
    rule = ("a " if allow_empty else "a non-empty ") + _RULE.format(limit=MAX_KEY_BYTES)
    if not isinstance(value, str):
        raise InvalidValueError(f"{what} must be {rule}, not {_kind(value)} {_show(value)}")
    if not value and not allow_empty:
        raise InvalidValueError(f"{what} must be {rule}, not an empty str")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidValueError(
            f"{what} {_show(value)} contains a lone surrogate (at {exc.start}), which is not "
            f"valid Unicode; it must be {rule}"
        ) from None
    if size > MAX_KEY_BYTES:
        raise InvalidValueError(
            f"{what} {_show(value)} is {size:,} bytes long in UTF-8; it must be {rule} "
            "(use a shorter one: a hash of a long one, say)"
        )
    if "\x00" in value:
        raise InvalidValueError(
            f"{what} {_show(value)} contains a NUL character (at {value.index(chr(0))}); "
            f"it must be {rule}"
        )
    # A str subclass (an enum member, say) is stored as the plain text it holds.
    return value if type(value) is str else str.__str__(value)


def check_workflow_id(value: object, what: str = "workflow ID") -> str:
    """``value`` if it is a valid workflow ID (a non-empty ``str`` of at most 1,000
    characters, no NUL, valid Unicode); ``InvalidValueError`` naming ``what`` otherwise."""
    return _check_text(what, value, allow_empty=False)


def check_optional_workflow_id(value: object, what: str = "workflow_id") -> str | None:
    """``None`` (perdure then picks a random ID) or a valid workflow ID: an empty ``str``
    is refused, not taken for ``None``, since a repeated start would then no longer be
    idempotent."""
    return None if value is None else check_workflow_id(value, what)


def check_name(kind: str, value: object) -> str:
    """A workflow or step name (``kind``: ``"workflow name"``, ``"step name"``): like a
    workflow ID, non-empty."""
    return _check_text(kind, value, allow_empty=False)


def check_key(kind: str, value: object) -> str:
    """A message topic or an event key (``kind``: ``"topic"``, ``"event key"``): a ``str``
    of at most 1,000 characters, no NUL, valid Unicode; it may be empty."""
    return _check_text(kind, value, allow_empty=True)


def check_optional_key(kind: str, value: object) -> str | None:
    """``check_key``, or ``None`` for an optional key such as the default topic."""
    return None if value is None else check_key(kind, value)


def check_idempotency_key(value: object) -> str | None:
    """``None``, or a non-empty key with the rule of workflow IDs (an empty key would
    make every send with it one send)."""
    return None if value is None else _check_text("idempotency_key", value, allow_empty=False)


def _seconds(name: str, value: object, *, allow_zero: bool) -> float:
    bound = "at least 0" if allow_zero else "more than 0"
    rule = f"a finite number of seconds, {bound}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidValueError(f"{name} must be {rule}, not {_kind(value)} {_show(value)}")
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise InvalidValueError(f"{name} must be {rule}, not {_show(value)}")
    return seconds


def positive_seconds(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number of seconds above zero (a timeout);
    ``InvalidValueError`` naming ``name`` and the value otherwise (NaN, infinity, zero,
    a negative number, a bool, a str)."""
    return _seconds(name, value, allow_zero=False)


def non_negative_seconds(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number of seconds, zero allowed (a retry
    interval, where zero means at once); ``InvalidValueError`` otherwise."""
    return _seconds(name, value, allow_zero=True)


def optional_positive_seconds(name: str, value: object) -> float | None:
    """``None`` (no limit), or ``positive_seconds``."""
    return None if value is None else positive_seconds(name, value)
