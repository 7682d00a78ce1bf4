"""Applying the app's retention policy from the worker's maintenance thread: one batch
per pass, by the one worker of the fleet that holds the retention lease."""

from __future__ import annotations

import logging

from .._retention import LEASE_NAME, Retention, terminal_states
from ..storage import Store

log = logging.getLogger("perdure")


def apply_retention(
    store: Store, policy: Retention, holder: str, now: float, lease_seconds: float
) -> bool:
    """Delete one batch of finished trees older than the policy allows, if this worker
    holds (or takes) the retention lease; returns whether a full batch went (there may be
    more: call again soon). Logged as a ``gc`` action by ``perdure-worker:<holder>``."""
    # The lease outlives the time between two passes (the interval, or the maintenance
    # thread's round, at most a third of lease_seconds): its holder renews it at every
    # pass, another worker takes it over only once the holder stopped passing (it died,
    # or lost its database).
    expires = now + 1.5 * policy.interval + lease_seconds
    if not store.take_lease(LEASE_NAME, holder, now, expires):
        return False
    statuses = [str(state) for state in terminal_states(policy.statuses)]
    trees = store.collect_garbage(
        statuses, now - policy.seconds, policy.batch, now, f"perdure-worker:{holder}"
    )
    if trees:
        count = sum(len(tree) for tree in trees)
        log.info("retention deleted %d finished workflow(s) in %d tree(s)", count, len(trees))
    return len(trees) >= policy.batch
