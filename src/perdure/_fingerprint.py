"""A fingerprint of a workflow's code: which code failed to replay a held workflow.

An executor whose code for a workflow has the same fingerprint as the code that held
it would fail to replay it again, so it leaves it alone (until the hold's recheck
time); an executor with another fingerprint (a rollback, a fix) tries at once. The
fingerprint is that of one workflow: its name and its function's code (bytecode,
constants, names, nested functions), not line numbers or file names, so the same
source gives the same fingerprint in every process, and executors that register
other workflows beside it (or other step bodies) agree on it. It does not cover
helper functions the workflow calls, nor values its closure or globals hold: a fix
made only there is tried at the recheck time (``Settings.hold_recheck``) or when an
operator asks (``perdure retry-held``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

from ._registry import Registry, WorkflowDef


def _code_parts(code: CodeType) -> Iterator[bytes]:
    yield code.co_code
    yield repr(code.co_names).encode()
    yield repr(code.co_varnames).encode()
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_parts(const)
        elif isinstance(const, frozenset):
            # ``x in {"a", "b"}``: its order follows string hashing, which varies by process
            yield repr(sorted(repr(item) for item in const)).encode()
        else:
            yield repr(const).encode()


def _function_parts(fn: Callable[..., Any]) -> Iterator[bytes]:
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if isinstance(code, CodeType):
        yield from _code_parts(code)
    else:
        kind = type(fn)  # a callable object: its type stands for its code
        yield f"{kind.__module__}.{kind.__qualname__}".encode()


def fingerprint(definition: WorkflowDef) -> str:
    """The hex SHA-256 fingerprint of a registered workflow's code (it names the
    workflow: two workflows never share one)."""
    digest = hashlib.sha256(f"workflow\0{definition.name}\0".encode())
    for part in _function_parts(definition.fn):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def fingerprints(registry: Registry) -> list[str]:
    """The fingerprint of each workflow the registry holds."""
    return [fingerprint(definition) for definition in registry.workflows.values()]
