"""What ``App`` offers for compliance: deleting old workflows (``gc``), erasing a data
subject (``erase``), encrypting old values again under the current key (``rekey``), and
reading the audit trail (``audit_log``). One function per method, each taking the app
first, bound as ``App`` methods (like ``_operating``).

Every one of them is an operator action: logged in the store's actions log with who
(``actor``, default the OS user) and when, in the same transaction as the change (a
``gc`` action per deleted tree, an ``erase`` action per erased workflow, one ``rekey``
action per run).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from ._client import Client
from ._crypto import EncryptingSerializer
from ._display import utc
from ._errors import ConfigurationError, ErasureRefusedError, InvalidValueError
from ._model import QUEUE_SUBJECT, SCHEDULE_SUBJECT, TERMINAL_STATES, OperatorAction, subject_of
from ._repair import actor_or_default
from ._retention import seconds_of, terminal_states
from ._validation import check_name, check_optional_key

#: The workflow ID under which actions on no one workflow are logged (a rekey).
REKEY_SUBJECT = "perdure.rekey"
#: Every outcome: what ``gc`` deletes unless told which.
FINISHED = tuple(str(state) for state in TERMINAL_STATES)
#: How many trees a dry run lists when no ``limit`` is given.
DRY_RUN_LIMIT = 1000


class ComplianceHost(Protocol):
    """What these functions need of the app: its client."""

    @property
    def client(self) -> Client: ...


@dataclass(frozen=True)
class GcResult:
    """What a garbage collection deleted (or, with ``dry_run``, would delete)."""

    #: The deleted trees, each a list of workflow IDs, its root first.
    trees: list[list[str]]
    #: Whether nothing was deleted (the trees are what would be).
    dry_run: bool

    @property
    def workflows(self) -> int:
        """How many workflows, children included."""
        return sum(len(tree) for tree in self.trees)


@dataclass(frozen=True)
class AuditEntry:
    """One operator action: who did what to which workflow, when, with what."""

    #: Increasing: pass the last one seen as ``after`` to read on.
    seq: int
    at: datetime
    #: Who: the OS user, ``--actor``, ``http:<name>`` from the HTTP API, or
    #: ``perdure-worker:<executor>`` for retention applied by a worker.
    actor: str
    #: ``resume``, ``fork``, ``restart``, ``cancel``, ``send``, ``open_breaker``,
    #: ``close_breaker``, ``retry_held``, ``erase``, ``gc``, ``rekey``,
    #: ``create_schedule``, ``pause_schedule``, ``resume_schedule``, ``delete_schedule``,
    #: ``update_queue``.
    action: str
    #: The workflow acted on, or a pseudo ID for what is not a workflow:
    #: ``perdure.breaker:<name>``, ``perdure.schedule:<name>``, ``perdure.queue:<name>``,
    #: ``perdure.rekey``.
    workflow_id: str
    #: The new workflow of a fork or restart.
    target_id: str | None
    #: What the action changed (JSON-ready).
    details: Any


def gc(
    app: ComplianceHost,
    *,
    older_than: float | timedelta,
    statuses: Sequence[str] | str = FINISHED,
    dry_run: bool = False,
    batch: int = 200,
    limit: int | None = None,
    actor: str | None = None,
) -> GcResult:
    """Delete the workflows that finished with one of ``statuses`` more than
    ``older_than`` (seconds or a ``timedelta``) ago, whole trees at a time (a root with
    every descendant, and only once none of them is active; a child never goes before
    its parent), ``batch`` trees per transaction, at most ``limit`` trees. Each takes its
    steps, messages, events and subject tags with it; a ``gc`` action per tree is
    logged. With ``dry_run``, deletes nothing and returns what would go (at most
    ``limit``, default 1,000 trees)."""
    seconds = seconds_of("older_than", older_than)
    states = [str(state) for state in terminal_states(statuses)]
    who = actor_or_default(actor)
    for name, value in (("batch", batch), ("limit", limit)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise InvalidValueError(f"{name} must be a whole number >= 1, not {value!r}")
    client = app.client
    now = client.clock.time()
    if dry_run:
        wanted = DRY_RUN_LIMIT if limit is None else limit
        trees = client.store.collect_garbage(states, now - seconds, wanted, now, who, True)
        return GcResult(trees, True)
    deleted: list[list[str]] = []
    while limit is None or len(deleted) < limit:
        size = batch if limit is None else min(batch, limit - len(deleted))
        trees = client.store.collect_garbage(states, now - seconds, size, now, who)
        deleted += trees
        if not trees:
            break
    return GcResult(deleted, False)


def erase(app: ComplianceHost, subject: str, *, actor: str | None = None) -> list[str]:
    """Erase the data of ``subject``: every stored payload (inputs, output, error, step
    results and errors, messages received, events set) of the workflows tagged with it
    at their start (``app.options(subjects=[...])``), of their descendants and of their
    forks is replaced with a tombstone, in one transaction; IDs, names, statuses,
    positions, topics, keys and times stay. Returns the IDs erased (empty when none is
    tagged; erasing again finds the same workflows and changes nothing more). Each is
    logged as an ``erase`` action.

    Refused with ``ErasureRefusedError`` (nothing changes) while any of those workflows
    is active: cancel them and wait for their end first, so that no running code writes
    the subject's data again after the erasure."""
    key = check_name("data subject", subject)
    client = app.client
    erased, active = client.store.erase_subject(key, actor_or_default(actor), client.clock.time())
    if active:
        raise ErasureRefusedError(key, active)
    return erased


def rekey(app: ComplianceHost, *, batch: int = 200, actor: str | None = None) -> int:
    """Encrypt again, under the current key of the app's ``EncryptingSerializer``, every
    stored value encrypted under another key (``batch`` rows per transaction; a value
    written meanwhile is left for the next run). Returns how many values were rewritten;
    then the old keys can be dropped. Logged as a ``rekey`` action. ``ConfigurationError``
    when the app's serializer does not encrypt."""
    client = app.client
    serializer = client.serializer
    if not isinstance(serializer, EncryptingSerializer):
        raise ConfigurationError(
            "rekey needs the app's serializer to be a perdure.EncryptingSerializer "
            f"(it is {type(serializer).__name__}): nothing to encrypt again"
        )
    who = actor_or_default(actor)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InvalidValueError(f"batch must be a whole number >= 1, not {batch!r}")
    count = client.store.rewrite_payloads(serializer.reseal, batch)
    details = json.dumps({"current_key": serializer.current, "rewritten": count})
    client.store.log_action(REKEY_SUBJECT, OperatorAction.REKEY, who, details, client.clock.time())
    return count


def retry_held(app: ComplianceHost, workflow_id: str, *, actor: str | None = None) -> bool:
    """``WorkflowHandle.retry_hold``, logged as a ``retry_held`` action by ``actor``
    (default: the OS user) when the workflow was held."""
    client = app.client
    who = actor_or_default(actor)
    retried = client.retrieve(workflow_id).retry_hold()
    if retried:
        now = client.clock.time()
        client.store.log_action(workflow_id, OperatorAction.RETRY_HELD, who, "{}", now)
    return retried


def audit_log(
    app: ComplianceHost,
    *,
    workflow_id: str | None = None,
    action: str | None = None,
    after: int = 0,
    limit: int = 100,
    schedule: str | None = None,
    queue: str | None = None,
) -> list[AuditEntry]:
    """Operator actions, oldest first: every one, or those on ``workflow_id`` (or on the
    schedule ``schedule``, or the queue ``queue``: one of the three), or of one
    ``action``; those logged after the entry ``after`` (its ``seq``), at most ``limit``.
    The log is append-only; erasing and deleting workflows keep its rows (they replace
    only a resume's copy of the outcome it replaced)."""
    check_optional_key("workflow ID", workflow_id)
    check_optional_key("schedule name", schedule)
    check_optional_key("queue name", queue)
    targets = [t for t in (workflow_id, schedule, queue) if t is not None]
    if len(targets) > 1:
        raise InvalidValueError(
            "the audit log is read for one target at a time: give one of workflow_id, "
            "schedule and queue"
        )
    if schedule is not None:
        workflow_id = subject_of(SCHEDULE_SUBJECT, schedule)
    if queue is not None:
        workflow_id = subject_of(QUEUE_SUBJECT, queue)
    if action is not None and action not in {str(a) for a in OperatorAction}:
        names = ", ".join(str(a) for a in OperatorAction)
        raise InvalidValueError(f"unknown action {action!r}: use one of {names}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidValueError(f"limit must be a whole number from 1 to 1,000, not {limit!r}")
    store = app.client.store
    found: list[AuditEntry] = []
    while len(found) < limit:
        page = store.list_actions(workflow_id, after=after, limit=limit)
        for record in page:
            if action is None or record.action == action:
                at = utc(record.at)
                assert at is not None
                details = json.loads(record.details) if record.details else None
                found.append(
                    AuditEntry(
                        record.seq,
                        at,
                        record.actor,
                        record.action,
                        record.workflow_id,
                        record.target_id,
                        details,
                    )
                )
        if len(page) < limit:
            break
        after = page[-1].seq
    return found[:limit]
