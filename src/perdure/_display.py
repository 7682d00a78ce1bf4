"""How stored values are shown to people: timestamps as UTC datetimes, errors as
"Type: message". Shared by the workflow and breaker status views; imports nothing of
perdure, so that any view can use it without an import cycle."""

from __future__ import annotations

import json
from datetime import datetime, timezone


def utc(value: float | None) -> datetime | None:
    """A stored timestamp (seconds since the epoch) as an aware UTC datetime."""
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


def error_summary(error: str | None) -> str | None:
    """ "Type: message" of a stored (JSON-encoded) error, and its notes in parentheses
    if it has some; the text as is when it is not JSON."""
    if error is None:
        return None
    if error.startswith("pdx1:"):  # sealed by an EncryptingSerializer (perdure._crypto)
        return f"<encrypted with key {error.split(':')[1]!r}>"
    try:
        data = json.loads(error)
        if data.get("perdure.erased"):  # the tombstone of app.erase (perdure._model.ERASED)
            return "<erased>"
        type_name = str(data.get("type", "?")).removeprefix("builtins:").replace(":", ".")
        summary = f"{type_name}: {data.get('message', '')}"
        notes = data.get("notes")
        if isinstance(notes, list) and notes:  # e.g. what a saga compensated
            summary += f" ({'; '.join(str(note) for note in notes)})"
        return summary
    except (ValueError, AttributeError):
        return error
