"""What text a store accepts as a key: one rule, checked before writing, on every store.

IDs, names, event keys, message topics and idempotency keys are indexed. PostgreSQL
refuses an index entry over about 2,700 bytes (and cannot store NUL), SQLite takes
anything: without a check of its own, the same value would work on one store and
fail on the other, and on PostgreSQL it failed only at the write, deep inside a
running workflow. Every such value is checked here, with the same limit everywhere,
well under PostgreSQL's (an index may hold two of them: a workflow ID and a topic).
"""

from __future__ import annotations

from .._errors import InvalidValueError, StoreRejectedError
from .._model import WaitReason
from .._validation import MAX_KEY_BYTES as MAX_KEY_BYTES
from .._validation import check_key as _check_text


def check_key(field: str, value: str | None) -> None:
    """Refuse ``value`` (the ``field`` named in the message) unless every store can index
    it (the rule of ``perdure._validation``, which the API applies first; checked here
    again so that no caller can write what one store takes and the other refuses); None
    passes (an optional key not given)."""
    # The common case inline (short ASCII text without NUL: what _validation's own fast
    # path accepts), without two more calls per key on every start and write.
    if value is None or (
        type(value) is str
        and value.isascii()
        and len(value) <= MAX_KEY_BYTES
        and "\x00" not in value
    ):
        return
    _check_text(field, value)


def check_topic(field: str, topic: str | None) -> None:
    """Like ``check_key``, for a topic that may carry one of perdure's own prefixes (a
    child's outcome, a retry, a breaker): the limit applies to what follows it."""
    if topic is None:
        return
    if not isinstance(topic, str):
        raise InvalidValueError(f"the {field} must be a str, not {type(topic).__name__}")
    check_key(field, WaitReason.parse(topic).subject)


def not_utf8(exc: UnicodeEncodeError) -> StoreRejectedError:
    """The error for a value that no database can store as text (a lone surrogate)."""
    return StoreRejectedError(
        f"a value holds text that is not valid Unicode ({exc.reason} at character "
        f"{exc.start}), which no database stores; retrying will not help: fix the value"
    )
