"""How perdure turns values into TEXT for the database and back.

A ``Serializer`` encodes step results, workflow results and workflow arguments.
The default, ``JSONSerializer``, uses pydantic so that a value read back from the
database has the type its annotation names (a dataclass, a model, a ``datetime``)
rather than the plain JSON it was stored as. ``PickleSerializer`` is an explicit
opt-in for values JSON cannot hold.

Errors are stored as JSON too (``encode_error``) and rebuilt into their original
type when that is safe (``decode_error``); otherwise they come back as
``WorkflowFailedError`` or ``StepFailedError``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import json
import pickle
import sys
import traceback
import types
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeVar, runtime_checkable

from pydantic import ConfigDict, TypeAdapter
from pydantic.errors import PydanticUserError

from perdure._errors import SerializationError, _RecordedFailure

_R = TypeVar("_R")

_ADVICE = (
    "pass JSON-compatible values, dataclasses or pydantic models, "
    "or configure App(serializer=PickleSerializer())"
)


@runtime_checkable
class Serializer(Protocol):
    """Turns values into text for the database and back.

    ``type_hint`` is the annotation the value was declared with (a parameter's or
    a function's return annotation), or ``Any`` when there is none. ``loads`` is
    always called with the same hint ``dumps`` was.
    """

    name: str

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Encode ``value``; raise ``SerializationError`` if it cannot be."""
        ...

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Decode text made by ``dumps``; raise ``SerializationError`` if it cannot be."""
        ...


# Bytes as base64 because the default (UTF-8) fails on arbitrary bytes; NaN and
# infinities as JSON constants (which Python and pydantic read back) because
# the default writes null, which then fails to load as a float.
_CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", ser_json_inf_nan="constants")

# Hints for which the stored value is whatever JSON the runtime value makes: the
# annotation adds nothing to decode with, so these skip the per-type adapter.
_PLAIN_HINTS: frozenset[Any] = frozenset(
    [Any, object, dict, list, str, int, float, bool, None, type(None)]
)


class _Adapter(NamedTuple):
    adapter: TypeAdapter[Any]
    boxed: bool  # the hint is wrapped in a one-element list; see _build_adapter


def _build_adapter(hint: Any) -> _Adapter:
    try:
        return _Adapter(TypeAdapter(hint, config=_CONFIG), False)
    except PydanticUserError as exc:
        if exc.code != "type-adapter-config-unused":
            raise
    # TypeAdapter refuses a config for a dataclass, TypedDict or model, yet a
    # stdlib dataclass nested in a list (or serialized under Any) does get it:
    # without the box, bytes in a dataclass would be base64 when stored under
    # Any but read back as UTF-8 under the dataclass hint, corrupting silently.
    boxed: Any = types.GenericAlias(list, (hint,))
    return _Adapter(TypeAdapter(boxed, config=_CONFIG), True)


_ANY = _build_adapter(Any)
_ADAPTERS: dict[Any, _Adapter] = {}


def _adapter_for(hint: Any) -> _Adapter:
    try:
        return _ADAPTERS[hint]
    except KeyError:
        pass
    except TypeError:  # an unhashable hint, e.g. Annotated with a list in it
        return _build_adapter(hint)
    built = _ADAPTERS[hint] = _build_adapter(hint)
    return built


def _is_plain(hint: Any) -> bool:
    try:
        return hint in _PLAIN_HINTS
    except TypeError:
        return False


def _type_name(value: Any) -> str:
    cls = type(value)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _dump_any(value: Any) -> str:
    # By runtime type; serialize_as_any keeps the fields of subclasses too.
    # by_alias and round_trip make models with aliases or computed fields
    # readable again by their own validators.
    try:
        raw = _ANY.adapter.serializer.to_json(
            value, by_alias=True, round_trip=True, serialize_as_any=True
        )
        return raw.decode()
    except Exception as exc:
        raise SerializationError(
            f"a value of type {_type_name(value)} cannot be stored as JSON ({exc}); {_ADVICE}"
        ) from exc


def _load(entry: _Adapter, data: str) -> Any:
    if entry.boxed:
        return entry.adapter.validate_json(f"[{data}]")[0]
    return entry.adapter.validate_json(data)


class JSONSerializer:
    """The default serializer: JSON text through pydantic.

    Values round-trip to their annotated type: dataclasses, pydantic models,
    ``datetime``, ``date``, ``Decimal``, ``UUID``, ``bytes`` (as base64), enums,
    tuples, sets, ``Optional``, and containers of these. With no annotation
    (``Any``), or a plain one (``dict``, ``list``, ``str``, ``int``, ``float``,
    ``bool``, ``None``), the value is stored by its runtime type and read back
    as plain JSON: a dataclass comes back as a ``dict``, a ``datetime`` as a ``str``.
    """

    name: str = "json"

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Encode ``value`` as JSON text, shaped by ``type_hint``."""
        if _is_plain(type_hint):
            return _dump_any(value)
        entry = self._entry(type_hint)
        try:
            # warnings="error": a value that doesn't match its hint must not be
            # written in a shape its hint can't read back.
            raw = entry.adapter.serializer.to_json(
                [value] if entry.boxed else value,
                by_alias=True,
                round_trip=True,
                warnings="error",
            )
        except Exception:
            # The annotation is wrong about the value (say `-> Order` returning a
            # dict): store it by runtime type, but only if the hint reads it back,
            # so the failure shows now rather than when a workflow is replayed.
            text = _dump_any(value)
            try:
                _load(entry, text)
            except Exception as exc:
                raise SerializationError(
                    f"a value of type {_type_name(value)} does not match its annotation "
                    f"{type_hint!r} and could not be read back as one ({exc}); fix the "
                    f"annotation or the value"
                ) from exc
            return text
        return (raw[1:-1] if entry.boxed else raw).decode()

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Decode JSON text into ``type_hint`` (plain JSON for ``Any``)."""
        entry = _ANY if _is_plain(type_hint) else self._entry(type_hint)
        try:
            return _load(entry, data)
        except Exception as exc:
            raise SerializationError(
                f"cannot read a stored value as {type_hint!r} ({exc}); did the annotation "
                "change while workflows were running?"
            ) from exc

    def _entry(self, hint: Any) -> _Adapter:
        try:
            return _adapter_for(hint)
        except Exception as exc:
            raise SerializationError(
                f"cannot store values annotated as {hint!r}: pydantic cannot handle this type "
                f"({exc}); annotate with a JSON-compatible type, or {_ADVICE}"
            ) from exc


class PickleSerializer:
    """Opt-in serializer: base64-encoded pickle, for values JSON cannot hold.

    Warning: unpickling runs code chosen by whoever wrote the data, so use it only
    with a database that no untrusted party can write to. Pickles also refer to
    classes by module and name, so a stored value stops loading when its class is
    renamed, moved or changed incompatibly while workflows are still running.
    """

    name: str = "pickle"

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Pickle ``value`` (``type_hint`` is ignored) and return it as base64 text."""
        try:
            # Pinned so a newer Python's default protocol can't make records
            # unreadable by older workers during a rolling upgrade.
            raw = pickle.dumps(value, protocol=5)
        except Exception as exc:
            raise SerializationError(
                f"a value of type {_type_name(value)} cannot be pickled ({exc})"
            ) from exc
        return base64.b64encode(raw).decode("ascii")

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Unpickle base64 text made by ``dumps``."""
        try:
            return pickle.loads(base64.b64decode(data, validate=True))
        except Exception as exc:
            raise SerializationError(f"cannot unpickle a stored value ({exc!r})") from exc


def _per_callable(build: Callable[[Any], _R]) -> Callable[[Any], _R]:
    """Cache ``build`` per callable; unhashable callables are just not cached."""
    cached = functools.lru_cache(maxsize=1024)(build)

    def get(fn: Any) -> _R:
        try:
            hash(fn)
        except TypeError:
            return build(fn)
        return cached(fn)

    return get


@_per_callable
def _type_hints(fn: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        # One unresolvable forward reference shouldn't lose the other hints:
        # keep those already evaluated; strings (unresolved) become Any.
        try:
            raw = dict(getattr(fn, "__annotations__", None) or {})
        except Exception:
            return {}
        return {k: type(None) if v is None else v for k, v in raw.items() if not isinstance(v, str)}


def return_hint(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (``type(None)`` for ``None``), or ``Any``."""
    return _type_hints(fn).get("return", Any)


class _Shape(NamedTuple):
    """Which annotation applies to each argument of a call."""

    signature: inspect.Signature | None
    positional: tuple[tuple[str, Any], ...]
    var_positional: tuple[str, Any] | None
    keyword: dict[str, Any]
    var_keyword: Any  # the **kwargs annotation, or None when there is no **kwargs

    def at(self, index: int) -> tuple[str, Any]:
        if index < len(self.positional):
            return self.positional[index]
        if self.var_positional is not None:
            name, hint = self.var_positional
            return f"{name}[{index - len(self.positional)}]", hint
        return f"#{index}", Any

    def named(self, key: str) -> tuple[str, Any]:
        if key in self.keyword:
            return key, self.keyword[key]
        return key, Any if self.var_keyword is None else self.var_keyword


@_per_callable
def _shape(fn: Any) -> _Shape:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return _Shape(None, (), None, {}, Any)
    hints = _type_hints(fn)
    positional: list[tuple[str, Any]] = []
    var_positional: tuple[str, Any] | None = None
    var_keyword: Any = None
    keyword: dict[str, Any] = {}
    for p in signature.parameters.values():
        hint = hints.get(p.name, Any)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append((p.name, hint))
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            keyword[p.name] = hint
        elif p.kind is p.VAR_POSITIONAL:
            var_positional = (p.name, hint)
        elif p.kind is p.VAR_KEYWORD:
            var_keyword = hint
    return _Shape(signature, tuple(positional), var_positional, keyword, var_keyword)


def encode_call(
    serializer: Serializer,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    what: str,
) -> str:
    """Encode the arguments of a call to ``fn`` as one JSON text.

    The text is ``{"args": [...], "kwargs": {...}}``; each argument is encoded
    with its parameter's annotation. With ``JSONSerializer`` the elements are
    the JSON itself, so the record stays readable; with any other serializer
    each element is the serializer's text, as a JSON string. ``what`` names the
    callable in messages, e.g. ``"workflow 'checkout'"``.

    Raises ``TypeError`` if the arguments don't fit ``fn``'s signature and
    ``SerializationError`` if one cannot be encoded.
    """
    shape = _shape(fn)
    if shape.signature is not None:
        try:
            shape.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"cannot call {what} with these arguments: {exc}") from None
    embed = isinstance(serializer, JSONSerializer)

    def encode(label: str, hint: Any, value: Any) -> str:
        try:
            text = serializer.dumps(value, hint)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize argument {label!r} of {what}: {exc}"
            ) from exc
        return text if embed else json.dumps(text)

    parts = [encode(*shape.at(i), value) for i, value in enumerate(args)]
    named = [f"{json.dumps(k)}:{encode(*shape.named(k), v)}" for k, v in kwargs.items()]
    return '{"args":[' + ",".join(parts) + '],"kwargs":{' + ",".join(named) + "}}"


def decode_call(
    serializer: Serializer, fn: Callable[..., Any], data: str, what: str
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode text made by ``encode_call`` into ``(args, kwargs)`` of the annotated types.

    Raises ``SerializationError`` if the text or an argument cannot be decoded and
    ``TypeError`` if the arguments no longer fit ``fn``'s signature.
    """
    try:
        record = json.loads(data)
        raw_args, raw_kwargs = record["args"], record["kwargs"]
        if not isinstance(raw_args, list) or not isinstance(raw_kwargs, dict):
            raise TypeError("'args' must be a list and 'kwargs' an object")
    except (ValueError, TypeError, KeyError) as exc:
        raise SerializationError(f"the recorded arguments of {what} are invalid: {exc!r}") from exc
    shape = _shape(fn)
    embed = isinstance(serializer, JSONSerializer)

    def decode(label: str, hint: Any, element: Any) -> Any:
        try:
            if embed:
                # Already parsed; only a non-plain hint needs pydantic, which
                # reads JSON text (base64 bytes differ between JSON and Python input).
                return element if _is_plain(hint) else serializer.loads(_dump_any(element), hint)
            if not isinstance(element, str):
                raise SerializationError(f"expected text, found {type(element).__name__}")
            return serializer.loads(element, hint)
        except Exception as exc:
            raise SerializationError(f"cannot decode argument {label!r} of {what}: {exc}") from exc

    args = tuple(decode(*shape.at(i), element) for i, element in enumerate(raw_args))
    kwargs = {k: decode(*shape.named(k), element) for k, element in raw_kwargs.items()}
    if shape.signature is not None:
        try:
            shape.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(
                f"the recorded arguments of {what} no longer fit its signature: {exc}"
            ) from None
    return args, kwargs


def encode_error(exc: BaseException) -> str:
    """Record an exception as JSON: its type, message, args and formatted traceback.

    ``args`` is left out unless plain ``json`` can hold it: ``decode_error``
    rebuilds the exception from it, so an approximation would be worse than none.
    """
    cls = type(exc)
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the failure itself
        message = f"<unprintable {cls.__qualname__}>"
    record: dict[str, Any] = {"type": f"{cls.__module__}:{cls.__qualname__}", "message": message}
    with contextlib.suppress(TypeError, ValueError, RecursionError):
        record["args"] = json.loads(json.dumps(list(exc.args)))
    record["traceback"] = "".join(traceback.format_exception(exc))
    return json.dumps(record)


def _resolve(type_name: str) -> type[Exception] | None:
    module_name, _, qualname = type_name.partition(":")
    # Only modules already imported: importing a name read from the database
    # would run code the database chose.
    obj: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        # vars(), not getattr(): a module __getattr__ could import on demand.
        obj = getattr(obj, "__dict__", {}).get(part)
    if isinstance(obj, type) and issubclass(obj, Exception):
        return obj
    return None  # unknown, or a BaseException-only signal such as KeyboardInterrupt


def decode_error(data: str, fallback: type[_RecordedFailure]) -> BaseException:
    """Rebuild an exception recorded by ``encode_error``.

    The original type comes back when its module is already imported, it is an
    ``Exception`` subclass and ``cls(*args)`` succeeds; otherwise ``fallback``
    (``WorkflowFailedError`` or ``StepFailedError``) holds what was recorded.
    Either way the recorded traceback text is in ``exc.perdure_traceback``.
    """
    try:
        record = json.loads(data)
        type_name, message = str(record["type"]), str(record["message"])
        tb = str(record.get("traceback", ""))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SerializationError(f"a recorded error is invalid: {exc!r}") from exc
    result: BaseException | None = None
    cls = _resolve(type_name)
    args = record.get("args")
    if cls is not None and isinstance(args, list):
        try:
            result = cls(*args)
        except Exception:  # e.g. an __init__ with keyword-only parameters
            result = None
    rebuilt: BaseException = fallback(type_name, message, tb) if result is None else result
    rebuilt.perdure_traceback = tb  # type: ignore[attr-defined]
    return rebuilt
