"""The error codec: an exception recorded as JSON (type, message, args, notes,
traceback) and rebuilt from it, as the original type when that is safe, else a
fallback that keeps the recorded text."""

from __future__ import annotations

import contextlib
import json
import sys
import traceback
from typing import Any

from perdure._errors import SerializationError, _RecordedFailure
from perdure._model import ERASED
from perdure._serialization import Serializer, erased, seal, unseal


def encode_error(exc: BaseException, serializer: Serializer | None = None) -> str:
    """Record an exception as JSON: type ("module:QualName"), message, args, notes (its
    ``__notes__``, when it has some), traceback (with the notes, on every Python);
    sealed (``seal``) when ``serializer`` encrypts.

    ``args`` (which ``decode_error`` rebuilds from) is left out unless plain json holds it.
    """
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the failure itself
        message = f"<unprintable {cls.__qualname__}>"
    record: dict[str, Any] = {"type": f"{cls.__module__}:{cls.__qualname__}", "message": message}
    with contextlib.suppress(TypeError, ValueError, RecursionError):
        record["args"] = json.loads(json.dumps(list(exc.args)))
    notes = _notes(exc)
    if notes:
        # Their own field (rebuilt on the decoded error), and in the traceback on every
        # Python: before 3.11 it leaves notes out (a saga's says what it compensated).
        record["notes"] = notes
    try:
        text = "".join(traceback.format_exception(exc))
        if notes and sys.version_info < (3, 11):
            text += "".join(f"{note}\n" for note in notes)
        record["traceback"] = text
    except RecursionError:  # a chain of thousands of causes
        record["traceback"] = (
            f"<traceback too deeply nested to format>\n{cls.__qualname__}: {message}"
        )
    return seal(serializer, json.dumps(record))


def _notes(exc: BaseException) -> list[str]:
    """The notes added to an exception (``add_note``, or ``__notes__`` before 3.11)."""
    notes = getattr(exc, "__notes__", None)
    if not isinstance(notes, list):
        return []
    return [note for note in notes if isinstance(note, str)]


def _resolve(type_name: str) -> type[Exception] | None:
    module_name, _, qualname = type_name.partition(":")
    # Only a module already imported: importing a name read from the database would
    # run code the database chose. Namespaces, not getattr(): a module __getattr__
    # may import on demand.
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, "__dict__", {}).get(part)
    # Exception, not BaseException: signals such as KeyboardInterrupt are not rebuilt.
    return obj if isinstance(obj, type) and issubclass(obj, Exception) else None


def decode_error(
    data: str, fallback: type[_RecordedFailure], serializer: Serializer | None = None
) -> BaseException:
    """Rebuild an exception recorded by ``encode_error``.

    The original type comes back if its module is already imported, it is an
    ``Exception`` subclass and ``cls(*args)`` works; otherwise ``fallback(type_name,
    message, traceback)``, also for a damaged record. Either way ``exc.perdure_traceback``
    holds the recorded traceback, and ``exc.__notes__`` the recorded notes (if any).
    """
    # Never raises: a failure must stay reportable even if its record is damaged.
    try:
        data = unseal(serializer, data)
    except SerializationError as exc:
        data = json.dumps({"message": f"the recorded error cannot be read: {exc}"})
    if data == ERASED:
        data = json.dumps({"type": "<erased>", "message": str(erased("the recorded error"))})
    try:
        record = json.loads(data)
    except (ValueError, TypeError):
        record = None
    except RecursionError:
        record = {"message": "the recorded error is nested too deeply to read"}
    if not isinstance(record, dict):
        record = {"message": str(data)}
    type_name = str(record.get("type", "<unknown>"))
    message, tb = str(record.get("message", "")), str(record.get("traceback", ""))
    rebuilt: BaseException | None = None
    cls, args = _resolve(type_name), record.get("args")
    if cls is not None and isinstance(args, list):
        with contextlib.suppress(Exception):  # e.g. an __init__ with keyword-only parameters
            rebuilt = cls(*args)
    if rebuilt is None:
        rebuilt = fallback(type_name, message, tb)
    rebuilt.perdure_traceback = tb  # type: ignore[attr-defined]
    notes = record.get("notes")
    if isinstance(notes, list) and notes:
        rebuilt.__notes__ = [str(note) for note in notes]  # type: ignore[attr-defined]
    return rebuilt
