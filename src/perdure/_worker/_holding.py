"""Holding a workflow whose replay met another step than the one recorded.

The code changed under a running workflow (or depends on something other than its
arguments and recorded results). Failing it would lose work that a rollback or a fix
could finish, so it is *held*: the execution stops, nothing more is recorded for it,
its history and messages are kept and it stays active. The hold records the
fingerprint of the code that failed (``perdure._fingerprint``): executors with other
code make it due at once (``Store.release_holds``, when they start and at every
report round), executors with the same code only look again after
``Settings.hold_recheck``, so they do not spin replaying it.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

from .._display import utc
from .._errors import NonDeterminismError
from .._model import Hold, Lease
from ..storage import Store

log = logging.getLogger("perdure")


def _shown(when: float) -> str:
    moment = utc(when)
    assert moment is not None
    return moment.isoformat(timespec="seconds")


def hold(
    store: Store,
    workflow_id: str,
    lease: Lease,
    error: NonDeterminismError,
    *,
    app_version: str,
    code: str,
    recheck: float,
    now: float,
) -> Future[bool]:
    """Record the workflow held (fenced by ``lease``) and log what differed."""
    held = Hold(error.position, error.recorded, error.actual, app_version, code, now, now + recheck)
    note = held.describe(_shown(now), _shown(held.retry_at))
    log.error("workflow %s is not deterministic and is %s", workflow_id, note)
    return store.hold_workflow(workflow_id, lease, held, note, now)
