"""What the worker needs of the app it runs workflows for (a ``Protocol``, so that the
worker imports neither the app nor the client)."""

from __future__ import annotations

from typing import Protocol

from .._clock import Clock
from .._notifier import Notifier
from .._registry import Registry
from .._serialization import Serializer
from .._settings import Settings
from ..storage import Store


class WorkerHost(Protocol):
    """The store, codecs, code and settings a worker runs workflows with."""

    @property
    def database_url(self) -> str: ...

    @property
    def store(self) -> Store: ...

    @property
    def serializer(self) -> Serializer: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def wait_interval(self) -> float: ...
