"""Which app versions still have active workflows: when an old version's workers can go."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ._display import utc
from .storage import Store


@dataclass(frozen=True)
class VersionStatus:
    """The active (PENDING or RUNNING) workflows of one app version: how many, how many of
    them are held (their code no longer replays them), and when the oldest was created.
    A version that is not listed has no active workflow: its workers can be stopped."""

    app_version: str
    active: int
    held: int
    oldest_created_at: datetime


def versions(store: Store) -> list[VersionStatus]:
    """Every app version with active workflows, oldest first (one query)."""
    return [
        VersionStatus(
            count.app_version,
            count.active,
            count.held,
            utc(count.oldest_created_at) or datetime.now(timezone.utc),
        )
        for count in store.active_versions()
    ]
