"""What the engine needs from the app that runs it, as a small ``Protocol``.

The engine sits below the app, the client and the worker: it never imports them.
An operation that must reach the app (start a child, send a message, cancel a
workflow) takes a ``Host``, which the ``App`` satisfies.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._clock import Clock
from .._notifier import Notifier
from .._registry import WorkflowDef
from .._serialization import Serializer
from ..storage import Store


class Registry(Protocol):
    """Looks up registered workflows."""

    def workflow(self, fn: Any) -> WorkflowDef:
        """The definition of a registered workflow function, or of its name."""
        ...


class Settings(Protocol):
    """The settings an operation reads."""

    @property
    def app_version(self) -> str:
        """Recorded on every workflow the app starts."""
        ...


class Host(Protocol):
    """The app, as the engine's operations see it."""

    @property
    def store(self) -> Store:
        """The store (opened on first use)."""
        ...

    @property
    def serializer(self) -> Serializer:
        """Encodes arguments, results and messages."""
        ...

    @property
    def clock(self) -> Clock:
        """The app's clock."""
        ...

    @property
    def registry(self) -> Registry:
        """The registered workflows."""
        ...

    @property
    def settings(self) -> Settings:
        """The app's settings."""
        ...

    @property
    def notifier(self) -> Notifier:
        """Tells waiters in this process that a workflow finished."""
        ...

    def wake(self) -> None:
        """Make this process's worker look for work now (a no-op without one)."""
        ...

    def cancel_local(self, workflow_ids: list[str]) -> None:
        """Tell this process's runs of these workflows that they were asked to cancel
        (a no-op without a worker)."""
        ...
