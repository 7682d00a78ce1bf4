"""The small requests a durable operation makes of the driver that runs it.

Each durable operation (run a step, sleep, receive, publish an event, start or
await a child...) is written once, as a generator that *yields* these effects and
gets their results back. ``drivers.py`` runs such a generator: the sync driver by
blocking the workflow's thread, the async driver by awaiting on the event loop
(the pattern of httpx's ``Auth.auth_flow``). An operation therefore never knows
whether its workflow is sync or async, and the two cannot drift apart.

An error of an effect is thrown into the operation at its ``yield``, so that its
``finally`` blocks and context managers run as in plain code. (Effects are plain,
not frozen, dataclasses: one or more is built per step, and frozen ones cost more
to build.)
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from .._registry import StepDef

T = TypeVar("T")


@dataclass(slots=True)
class Flush:
    """Wait until every write the run deferred is durable (raising the first failure):
    no side effect and no outcome may rest on a value whose record is not."""


#: The one ``Flush`` the hot path yields (it has no fields: one is as good as another).
FLUSH = Flush()


@dataclass(slots=True)
class Commit:
    """Make a write durable: ``submit()`` returns the store's future, ``check`` judges
    its result (raising what the workflow must see, e.g. ``LeaseLost``). The drivers
    wait for it, except for a sync form called on the event loop, which *defers* it
    (see ``writes.py``)."""

    submit: Callable[[], Future[Any]]
    check: Callable[[Any], None]
    #: A side effect (a child's start, a message, an event): submitted only once every
    #: pending write of the run committed.
    barrier: bool = False
    #: Submit it only if the write just before it succeeded (the record of a send or a
    #: child's start, after the send or the start itself).
    only_after_success: bool = False


@dataclass(slots=True)
class Await:
    """Wait for a store future and hand back its value (a consume, a read)."""

    future: Future[Any]


@dataclass(slots=True)
class Pause:
    """Wait in place up to ``seconds``; a release, a cancel, the deadline or ``wake``
    resolving ends it early."""

    seconds: float
    wake: Future[Any] | None = None


@dataclass(slots=True)
class Blocking:
    """Run a blocking callable (a probe, a store read, a breaker update): in place in a
    sync workflow, in a thread of its own in an async one."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(slots=True)
class Attempt:
    """Run one attempt of a step's body; the driver answers with an ``Attempted``."""

    definition: StepDef
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: The step's position: with the workflow's ID, what an abandoned attempt is
    #: remembered by.
    position: str
    #: Which attempt this is (1 for the first), for its span and log records.
    attempt: int = 1


@dataclass(slots=True)
class Attempted:
    """What an attempt did: returned ``value``, raised ``error``, or was interrupted by
    a cancel or the deadline (then nothing is recorded for it)."""

    value: Any = None
    error: BaseException | None = None
    interrupted: bool = False
    #: Its record is committed already (a transactional step records it in its own
    #: transaction): nothing more to write.
    recorded: bool = False


Effect = Flush | Commit | Await | Pause | Blocking | Attempt

#: A durable operation: a generator of effects that returns the operation's value.
Op = Generator[Effect, Any, T]
