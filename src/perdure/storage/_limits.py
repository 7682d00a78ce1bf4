"""What text a store accepts as a key: one rule, checked before writing, on every store.

IDs, names, event keys, message topics and idempotency keys are indexed. PostgreSQL
refuses an index entry over about 2,700 bytes (and cannot store NUL), SQLite takes
anything: without a check of its own, the same value would work on one store and
fail on the other, and on PostgreSQL it failed only at the write, deep inside a
running workflow. Every such value is checked here, with the same limit everywhere,
well under PostgreSQL's (an index may hold two of them: a workflow ID and a topic).
"""

from __future__ import annotations

from .._errors import InvalidKeyError, StoreRejectedError
from .._model import WaitReason

#: The most UTF-8 bytes of an ID, a name, an event key, a topic or an idempotency key.
MAX_KEY_BYTES = 1000


def check_key(field: str, value: str | None) -> None:
    """Refuse ``value`` (the ``field`` named in the message) unless every store can index
    it; None passes (an optional key not given)."""
    if value is None:
        return
    if not isinstance(value, str):
        raise InvalidKeyError(f"the {field} must be a str, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(
            f"the {field} {_preview(value)} holds a lone surrogate ({exc.reason} at "
            f"character {exc.start}): use text that encodes to UTF-8"
        ) from None
    if size > MAX_KEY_BYTES:
        raise InvalidKeyError(
            f"the {field} {_preview(value)} is {size:,} bytes long in UTF-8; the limit is "
            f"{MAX_KEY_BYTES:,} bytes: use a shorter {field} (a hash of a long one, say)"
        )
    if "\x00" in value:
        raise InvalidKeyError(
            f"the {field} {_preview(value)} holds a NUL character, which PostgreSQL cannot "
            "store: remove it"
        )


def check_topic(field: str, topic: str | None) -> None:
    """Like ``check_key``, for a topic that may carry one of perdure's own prefixes (a
    child's outcome, a retry, a breaker): the limit applies to what follows it."""
    if topic is None:
        return
    if not isinstance(topic, str):
        raise InvalidKeyError(f"the {field} must be a str, not {type(topic).__name__}")
    check_key(field, WaitReason.parse(topic).subject)


def not_utf8(exc: UnicodeEncodeError) -> StoreRejectedError:
    """The error for a value that no database can store as text (a lone surrogate)."""
    return StoreRejectedError(
        f"a value holds text that is not valid Unicode ({exc.reason} at character "
        f"{exc.start}), which no database stores; retrying will not help: fix the value"
    )


def _preview(value: str) -> str:
    shown = value if len(value) <= 40 else value[:40] + "..."
    return ascii(shown)
