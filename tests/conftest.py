"""Shared fixtures: a fresh database per test, and apps that are always shut down."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import perdure


class OffsetClock(perdure.SystemClock):
    """The real clock moved by ``offset`` seconds: lets a test make leases expire."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def database_url(tmp_path: Any) -> str:
    """A fresh SQLite database for this test."""
    return f"sqlite:///{tmp_path}/perdure.db"


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., perdure.App]]:
    """Build apps on the test's database; each is shut down at the end of the test."""
    apps: list[perdure.App] = []

    def make(**kwargs: Any) -> perdure.App:
        kwargs.setdefault("poll_interval", 0.05)
        kwargs.setdefault("shutdown_grace", 2.0)
        app = perdure.App(database_url, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in reversed(apps):
        app.shutdown(grace=0.5)


@pytest.fixture
def app(make_app: Callable[..., perdure.App]) -> perdure.App:
    """One app on the test's database (launch it with ``with app:``)."""
    return make_app()
