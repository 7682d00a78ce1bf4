"""How perdure turns values and call arguments into TEXT for the database and back.

``JSONSerializer`` (the default) uses pydantic, so a value read back has the type its
annotation names; ``PickleSerializer`` is an explicit opt-in. Errors have their own
codec (``_error_codec``), built on the sealing defined here.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import inspect
import json
import pickle
import types
import typing
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import ConfigDict, TypeAdapter
from pydantic.errors import PydanticUserError

from perdure._errors import SerializationError
from perdure._model import ERASED

_R = TypeVar("_R")
_ADVICE = (
    "pass JSON-compatible values, dataclasses or pydantic models, "
    "or configure App(serializer=PickleSerializer())"
)
# How many levels of nesting pydantic reads back from JSON (a text with fewer brackets
# cannot be deeper).
_READ_DEPTH = 200
# What pydantic says when it gives up on depth (reading JSON, writing it), and what
# perdure says: a SerializationError that already says so is not wrapped again.
_DEPTH_MESSAGES = (
    "recursion limit exceeded",
    "Maximum serialization depth exceeded",
    "nested too deeply to be",
)


def too_deep(exc: BaseException) -> bool:
    """Whether ``exc`` says a value was nested more deeply than could be handled: a
    ``RecursionError`` (Python's json, pickle) or pydantic's depth limits."""
    if isinstance(exc, RecursionError):
        return True
    try:
        text = str(exc)
    except Exception:
        return False
    return any(message in text for message in _DEPTH_MESSAGES)


def nested_too_deeply(what: str, verb: str = "read back") -> SerializationError:
    """The error for a value nested too deeply; ``what`` names it (``"the result of step
    'fetch' in workflow 'order-1'"``), ``verb`` is ``"read back"`` or ``"stored"``."""
    return SerializationError(
        f"{what}: nested too deeply to be {verb} (more levels of lists, dicts or objects "
        "inside each other than the serializer handles; the JSON serializer reads back "
        "about 200); store a flatter value"
    )


@runtime_checkable
class Serializer(Protocol):
    """Turns values into text and back; ``type_hint`` is the value's annotation, or ``Any``."""

    name: str

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Encode ``value``; raise ``SerializationError`` if it cannot be."""
        ...

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Decode text made by ``dumps``; raise ``SerializationError`` if it cannot be."""
        ...


# Bytes as base64, since the default (UTF-8) fails on arbitrary bytes; NaN and infinity
# as constants, since the default (null) then fails to load as a float.
_CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", ser_json_inf_nan="constants")
# Hints that add nothing to decode with: values are stored by runtime type, read as JSON.
_PLAIN_HINTS = frozenset([Any, object, dict, list, str, int, float, bool, None, type(None)])
# Per hint: the adapter, whether the hint is boxed in a one-element list, and whether a
# strict check vets its values all the way down (``_vetted``).
_Entry = tuple[TypeAdapter[Any], bool, bool]
_ADAPTERS: dict[Any, _Entry] = {}
# The core-schema kinds whose strict check (``isinstance_python(strict=True)``) looks at
# every value the serializer will write: plain data. Models, dataclasses and TypedDicts
# are absent (an instance is taken as it is, its fields unchecked), and so are custom
# validators and serializers.
_VETTED_KINDS = frozenset(
    {"any", "none", "bool", "int", "float", "decimal", "str", "bytes", "uuid", "enum", "literal"}
    | {"date", "time", "datetime", "timedelta"}
    | {"list", "tuple", "set", "frozenset", "dict", "nullable", "union"}
)


def _vetted(schema: Any) -> bool:
    """Whether every node of this core schema is of a kind in ``_VETTED_KINDS``, with no
    custom serializer: a value that passes the strict check then serializes without a
    warning."""
    if isinstance(schema, (list, tuple)):
        return all(_vetted(item) for item in schema if isinstance(item, (dict, list, tuple)))
    if schema.get("type") not in _VETTED_KINDS or "serialization" in schema:
        return False
    return all(
        _vetted(value)
        for key, value in schema.items()
        if key not in ("metadata", "expected") and isinstance(value, (dict, list, tuple))
    )


def _build_adapter(hint: Any) -> _Entry:
    try:
        adapter = TypeAdapter(hint, config=_CONFIG)
        return adapter, False, _vetted(adapter.core_schema)
    except PydanticUserError as exc:
        if exc.code != "type-adapter-config-unused":
            raise
    # TypeAdapter refuses a config for a dataclass, TypedDict or model, yet a stdlib
    # dataclass does get it when nested in a list or under Any. Unboxed, its bytes would
    # be stored as base64 under Any but read back as UTF-8 under its hint: silently wrong.
    boxed: Any = types.GenericAlias(list, (hint,))
    return TypeAdapter(boxed, config=_CONFIG), True, False


_ANY = _build_adapter(Any)[0]


def _is_plain(hint: Any) -> bool:
    try:
        return hint in _PLAIN_HINTS
    except TypeError:  # unhashable
        return False


def _type_name(value: Any) -> str:
    cls = type(value)
    return f"{'' if cls.__module__ == 'builtins' else cls.__module__ + '.'}{cls.__qualname__}"


def _dump_any(value: Any) -> str:
    """Encode by runtime type; serialize_as_any keeps the fields of subclasses too."""
    # by_alias and round_trip (here and below): models with aliases or computed fields
    # must validate again. Keywords spelled out: **kwargs would double the call's cost.
    try:
        raw = _ANY.serializer.to_json(value, by_alias=True, round_trip=True, serialize_as_any=True)
        return raw.decode()
    except Exception as exc:
        if too_deep(exc):
            raise nested_too_deeply(f"a value of type {_type_name(value)}", "stored") from None
        # A model's fields follow its own config, where bytes are UTF-8 by default.
        tip = "; for bytes in a pydantic model, set ser_json_bytes='base64' in its model_config"
        raise SerializationError(
            f"a value of type {_type_name(value)} cannot be stored as JSON ({exc}); {_ADVICE}"
            + (tip if "utf-8" in str(exc) else "")
        ) from exc


def _readable(text: str, value: Any) -> str:
    """``text``, unless it is nested more deeply than pydantic reads JSON back (about 200
    levels; it writes a few hundred): such a value would be stored and then fail every
    read, poisoning the workflow that recorded it. Checked only when the text holds
    enough brackets to be that deep, so ordinary values cost a length check."""
    # Deeper than _READ_DEPTH takes that many opening brackets and as many closing ones:
    # shorter text (nearly every value) is not even counted.
    if len(text) > 2 * _READ_DEPTH and text.count("[") + text.count("{") > _READ_DEPTH:
        try:
            _ANY.validator.validate_json(text)
        except Exception as exc:
            if too_deep(exc):
                raise nested_too_deeply(f"a value of type {_type_name(value)}", "stored") from None
    return text


def _wrong_class(value: Any, hint: Any) -> bool:
    # Under a model or dataclass hint pydantic picks the fields from any object with a
    # __dict__, without a warning: an unrelated object would be stored as {}.
    try:
        return isinstance(hint, type) and not isinstance(value, hint)
    except TypeError:  # TypedDicts, protocols: no isinstance(), no such risk either
        return False


def _load(entry: _Entry, data: str) -> Any:
    # Straight to the validator: TypeAdapter.validate_json's keyword plumbing costs
    # about as much as validating a small value.
    adapter, boxed, _ = entry
    if boxed:
        return adapter.validator.validate_json(f"[{data}]")[0]
    return adapter.validator.validate_json(data)


class JSONSerializer:
    """The default serializer: JSON through pydantic, read back as the annotated type.

    Dataclasses, pydantic models, datetime, date, Decimal, UUID, bytes (as base64),
    enums, tuples, sets and containers of these round-trip. Under ``Any`` or a plain
    hint (dict, list, str, int, float, bool, None) values are stored by runtime type
    and read back as plain JSON: a dataclass as a dict, a datetime as a str.
    """

    name: str = "json"

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Encode ``value`` as JSON text, shaped by ``type_hint``."""
        return _readable(self._dumps(value, type_hint), value)

    def _dumps(self, value: Any, type_hint: Any) -> str:
        if _is_plain(type_hint):
            return _dump_any(value)
        entry = self._entry(type_hint)
        adapter, boxed, vetted = entry
        try:
            if _wrong_class(value, type_hint):
                raise ValueError("not an instance of the annotated class")
            data = [value] if boxed else value
            if vetted and adapter.validator.isinstance_python(data, strict=True):
                # Nothing for the serializer to warn about. warnings="error" is left out
                # for its cost: pydantic-core converts that string argument on every
                # call, ~1 us alone and 10-20 us with 64 threads serializing at once
                # (measured), where the check costs ~0.4 us.
                raw = adapter.serializer.to_json(
                    data, by_alias=True, round_trip=True, warnings=False
                )
            else:  # warnings="error": never write a shape the hint can't read back
                raw = adapter.serializer.to_json(
                    data, by_alias=True, round_trip=True, warnings="error"
                )
                if vetted:
                    # Refused by the strict check: read back what the serializer wrote,
                    # as it does not warn about everything (a literal it does not
                    # expect); a value that cannot be read back fails below.
                    _load(entry, raw.decode())
        except Exception:
            # The annotation is wrong about the value (say `-> Order` returning a dict):
            # store it by runtime type if the hint reads that back, and fail now if not,
            # rather than when the workflow is replayed.
            text = _dump_any(value)
            try:
                _load(entry, text)
            except Exception as exc:
                if too_deep(exc):
                    raise nested_too_deeply(f"a value of type {_type_name(value)}") from None
                raise SerializationError(
                    f"a value of type {_type_name(value)} does not match its annotation "
                    f"{type_hint!r} ({exc}); fix the annotation or the value"
                ) from exc
            return text
        return (raw[1:-1] if boxed else raw).decode()

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Decode JSON text into ``type_hint`` (plain JSON for ``Any`` and plain hints)."""
        entry = (_ANY, False, True) if _is_plain(type_hint) else self._entry(type_hint)
        try:
            return _load(entry, data)
        except Exception as exc:
            if too_deep(exc):
                raise nested_too_deeply("a stored value") from None
            raise SerializationError(
                f"cannot read a stored value as {type_hint!r} ({exc}); did the annotation "
                "change while workflows were running?"
            ) from exc

    def _entry(self, hint: Any) -> _Entry:
        try:  # not contextlib.suppress: this runs for every value, and it's slower
            return _ADAPTERS[hint]
        except (KeyError, TypeError):  # TypeError: an unhashable hint
            pass
        try:
            entry = _build_adapter(hint)
        except Exception as exc:
            raise SerializationError(
                f"cannot store values annotated as {hint!r}: pydantic cannot handle this type "
                f"({exc}); annotate with a JSON-compatible type, or {_ADVICE}"
            ) from exc
        with contextlib.suppress(TypeError):
            _ADAPTERS[hint] = entry
        return entry


class PickleSerializer:
    """Opt-in serializer: base64-encoded pickle, for values JSON cannot hold.

    Warning: unpickling runs code chosen by whoever wrote the data, so use it only with
    a database no untrusted party can write to. And stored values stop loading when
    their classes are renamed, moved or changed while workflows are still running.
    """

    name: str = "pickle"

    def dumps(self, value: Any, type_hint: Any = Any) -> str:
        """Pickle ``value`` (``type_hint`` is ignored) and return it as base64 text."""
        try:
            # Pinned: a newer Python's default must not make records unreadable by
            # older workers during a rolling upgrade.
            raw = pickle.dumps(value, protocol=5)
        except Exception as exc:
            if too_deep(exc):
                raise nested_too_deeply(f"a value of type {_type_name(value)}", "stored") from None
            msg = f"a value of type {_type_name(value)} cannot be pickled ({exc})"
            raise SerializationError(msg) from exc
        return base64.b64encode(raw).decode("ascii")

    def loads(self, data: str, type_hint: Any = Any) -> Any:
        """Unpickle base64 text made by ``dumps``."""
        try:
            return pickle.loads(base64.b64decode(data, validate=True))
        except Exception as exc:
            if too_deep(exc):
                raise nested_too_deeply("a stored (pickled) value") from None
            raise SerializationError(f"cannot unpickle a stored value ({exc!r})") from exc


def erased(what: str) -> SerializationError:
    """The error for reading a value that ``app.erase`` replaced with ``ERASED``."""
    return SerializationError(
        f"cannot read {what}: it was erased (app.erase / perdure erase replaced the data of "
        "a data subject); the workflow's structure and times are kept, its values are not"
    )


#: What a value sealed by an encrypting serializer starts with (``perdure._crypto``).
SEALED = "pdx1:"


def seal(serializer: Serializer | None, text: str) -> str:
    """``text`` encrypted by ``serializer`` when it encrypts (has a ``seal`` method, as
    ``EncryptingSerializer`` does), else as it is: recorded errors are not values of the
    serializer, yet must not be stored in clear under an encrypting one."""
    sealer = getattr(serializer, "seal", None)
    return text if sealer is None else str(sealer(text))


def unseal(serializer: Serializer | None, text: str) -> str:
    """The reverse of ``seal``."""
    unsealer = getattr(serializer, "unseal", None)
    return text if unsealer is None else str(unsealer(text))


def encode_value(serializer: Serializer, value: Any, type_hint: Any, what: str) -> str:
    """``serializer.dumps(value, type_hint)``, with every failure a ``SerializationError``
    that names ``what`` (``"the result of step 'fetch' in workflow 'order-1'"``): also a
    ``RecursionError`` from a serializer of the user's, for a value nested too deeply."""
    try:
        return serializer.dumps(value, type_hint)
    except SerializationError as exc:
        raise SerializationError(f"cannot store {what}: {exc}") from exc
    except Exception as exc:
        if too_deep(exc):
            raise nested_too_deeply(what, "stored") from None
        raise SerializationError(f"cannot store {what}: {exc!r}") from exc


def decode_value(serializer: Serializer, data: str, type_hint: Any, what: str) -> Any:
    """``serializer.loads(data, type_hint)``, with every failure a ``SerializationError``
    that names ``what``, and a value nested too deeply said to be so (not a bare
    ``RecursionError``, which would fail the workflow without a word of why); a value
    that ``app.erase`` replaced says so."""
    if data == ERASED:
        raise erased(what)
    try:
        return serializer.loads(data, type_hint)
    except SerializationError as exc:
        raise SerializationError(f"cannot read {what}: {exc}") from exc
    except Exception as exc:
        if too_deep(exc):
            raise nested_too_deeply(what) from None
        raise SerializationError(f"cannot read {what}: {exc!r}") from exc


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
        # One unresolvable forward reference must not lose the other hints: keep
        # those already evaluated; the unresolved ones (strings) become Any.
        try:
            raw = dict(getattr(fn, "__annotations__", None) or {})
        except Exception:
            return {}
        return {k: type(None) if v is None else v for k, v in raw.items() if not isinstance(v, str)}


def return_hint(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (``type(None)`` for ``None``), or ``Any``."""
    return _type_hints(fn).get("return", Any)


# For callables inspect cannot describe (some builtins): any arguments, annotated Any.
_ANY_SIGNATURE = inspect.signature(lambda *args, **kwargs: None)


@_per_callable
def _signature(fn: Any) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return _ANY_SIGNATURE


def _convert_each(
    bound: inspect.BoundArguments, fn: Any, convert: Callable[[str, Any, Any], Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Replace each argument by ``convert(label, hint, value)``; return (args, kwargs)."""
    hints = _type_hints(fn)
    for name, value in bound.arguments.items():
        kind, hint = bound.signature.parameters[name].kind, hints.get(name, Any)
        if kind is inspect.Parameter.VAR_POSITIONAL:  # the annotation is each element's
            bound.arguments[name] = tuple(
                convert(f"{name}[{i}]", hint, v) for i, v in enumerate(value)
            )
        elif kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: convert(k, hint, v) for k, v in value.items()}
        else:
            bound.arguments[name] = convert(name, hint, value)
    return bound.args, bound.kwargs


def encode_call(
    serializer: Serializer,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    what: str,
) -> str:
    """Encode a call's arguments as ``{"args": [...], "kwargs": {...}}`` JSON text.

    Each argument is encoded with its parameter's annotation; with ``JSONSerializer``
    the elements are the JSON itself (readable), otherwise the serializer's text.
    ``what`` names the callable in messages (``"workflow 'checkout'"``). Raises
    ``TypeError`` if the arguments don't fit the signature, ``SerializationError``
    if one cannot be encoded.
    """
    try:
        bound = _signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"cannot call {what} with these arguments: {exc}") from None
    embed = isinstance(serializer, JSONSerializer)

    def encode(label: str, hint: Any, value: Any) -> str:
        try:
            text = serializer.dumps(value, hint)
        except Exception as exc:
            if too_deep(exc):
                raise nested_too_deeply(f"argument {label!r} of {what}", "stored") from None
            raise SerializationError(
                f"cannot serialize argument {label!r} of {what}: {exc}"
            ) from exc
        return text if embed else json.dumps(text)

    # Splice the elements' JSON text rather than parse and dump it all again.
    parts, named = _convert_each(bound, fn, encode)
    keyed = ",".join(f"{json.dumps(k)}:{v}" for k, v in named.items())
    return f'{{"args":[{",".join(parts)}],"kwargs":{{{keyed}}}}}'


def decode_call(
    serializer: Serializer, fn: Callable[..., Any], data: str, what: str
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode ``encode_call`` text into ``(args, kwargs)`` of the annotated types.

    Raises ``SerializationError`` if it cannot, ``TypeError`` if the arguments no
    longer fit ``fn``'s signature.
    """
    if data == ERASED:
        raise erased(f"the recorded arguments of {what}")
    try:
        record = json.loads(data)
        args, kwargs = record["args"], record["kwargs"]
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise TypeError("'args' must be a list and 'kwargs' an object")
    except RecursionError:
        # Python's json recurses once per level: a hostile or damaged record must fail
        # the workflow with a SerializationError that says why, not a bare RecursionError.
        raise nested_too_deeply(f"the recorded arguments of {what}") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise SerializationError(f"the recorded arguments of {what} are invalid: {exc!r}") from exc
    try:
        bound = _signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        msg = f"the recorded arguments of {what} no longer fit its signature: {exc}"
        raise TypeError(msg) from None
    embed = isinstance(serializer, JSONSerializer)

    sealing = getattr(serializer, "unseal", None) is not None

    def decode(label: str, hint: Any, element: Any) -> Any:
        try:
            if sealing and not (isinstance(element, str) and element.startswith(SEALED)):
                # Recorded before an encrypting serializer was turned on, by the JSON
                # serializer (embedded JSON): it reads unsealed text as its inner one does.
                return serializer.loads(_dump_any(element), hint)
            if not embed:
                if not isinstance(element, str):
                    raise SerializationError(f"expected text, found {type(element).__name__}")
                return serializer.loads(element, hint)
            # Already parsed, but pydantic must see JSON text again: it reads bytes as
            # base64 only from JSON, not from a Python str.
            return element if _is_plain(hint) else serializer.loads(_dump_any(element), hint)
        except Exception as exc:
            if too_deep(exc):
                raise nested_too_deeply(f"argument {label!r} of {what}") from None
            raise SerializationError(f"cannot decode argument {label!r} of {what}: {exc}") from exc

    return _convert_each(bound, fn, decode)
