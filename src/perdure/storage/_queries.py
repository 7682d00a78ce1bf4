"""SQL shared by both stores: column lists, the claim and listing statements, migrations.

Nothing here is built from user input: statements are assembled from fixed
fragments chosen by code, and every value travels as a parameter.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from .._errors import ConfigurationError
from .._model import ACTIVE_STATES, StepRecord, WorkflowRecord, row_reader
from ._base import BREAKER_TOPIC

WF_COLUMNS = (
    "id, name, status, inputs, output, error, serializer, app_version, owner, epoch, "
    "lease_expires_at, note, recoveries, created_at, updated_at, finished_at, wake_at, "
    "wait_topic, parent_id, cancel_requested_at, deadline_at, generation, "
    "held_code, held_detail, forked_from, forked_steps, resumes, trace_context, "
    "queue, queue_key, priority, dequeued_at"
)
STEP_COLUMNS = (
    "position, name, status, output, error, attempts, next_attempt_at, updated_at, started_at"
)
EXECUTOR_COLUMNS = (
    "id, host, pid, app_version, started_at, heartbeat_at, lease_expires_at, stopped_at"
)
BREAKER_COLUMNS = (
    "name, state, failures, window_start, opened_at, retry_at, probe_holder, "
    "probe_expires_at, last_error, updated_at"
)
#: The record of a row of ``WF_COLUMNS`` / ``STEP_COLUMNS`` (``WorkflowRecord(*row)``,
#: built without a Python call per field: every start, claim and read makes one).
workflow_record = row_reader(WorkflowRecord, WF_COLUMNS)
step_record = row_reader(StepRecord, STEP_COLUMNS)


def parked_on(wait_topic: str | None) -> str | None:
    """The name of the breaker a workflow suspended with ``wait_topic`` is parked on."""
    if wait_topic is None or not wait_topic.startswith(BREAKER_TOPIC):
        return None
    return wait_topic[len(BREAKER_TOPIC) :]


def claim_candidates(
    param: str, names: str, dead: str, index_hints: bool, distinct: bool = False
) -> str:
    """The IDs of claimable workflows, oldest first: a union of index range scans (new or
    released; suspended and due; owned with an expired lease; owned by a dead executor),
    each limited, so that suspended and running workflows cost a claim nothing.

    ``param % name`` spells a named parameter (``:%s`` or ``%%(%s)s``); ``names`` and
    ``dead`` are the SQL for the sets of workflow names and dead owners. Queued workflows
    are left out (their queue's claim takes them, within its limits). With
    ``index_hints`` each branch names its index (SQLite's planner, without statistics,
    would otherwise pick the status index and walk every active workflow). The caller
    takes its limit of them: each branch returns up to four times as many, so that
    concurrent claims (which skip each other's locked rows) still find enough. With
    ``distinct`` a workflow found by two branches (a dead owner's, its lease expired) is
    listed once.
    """
    # A literal, not a parameter: the partial index perdure_workflows_claimable states it.
    active = "status IN ({})".format(", ".join(f"'{state}'" for state in ACTIVE_STATES))
    mine = f"app_version = {param % 'version'} AND name IN {names}"
    now, limit = param % "now", param % "limit"
    unqueued = f"queue IS NULL AND {active}"
    branches = (
        ("perdure_workflows_claimable", f"owner IS NULL AND wake_at IS NULL AND {unqueued}"),
        ("perdure_workflows_wake", f"wake_at <= {now} AND owner IS NULL AND {unqueued}"),
        (
            "perdure_workflows_lease",
            f"lease_expires_at < {now} AND owner IS NOT NULL AND {unqueued}",
        ),
        ("perdure_workflows_owner", f"owner IN {dead} AND {unqueued}"),
    )
    union = " UNION ALL ".join(
        f"SELECT * FROM (SELECT id, created_at FROM perdure_workflows"
        f"{f' INDEXED BY {index}' if index_hints else ''} WHERE {where} "
        f"AND {mine} ORDER BY created_at LIMIT 4 * {limit}) AS b{n}"
        for n, (index, where) in enumerate(branches)
    )
    group = " GROUP BY id, created_at" if distinct else ""
    return f"SELECT id FROM ({union}) AS candidates{group} ORDER BY created_at LIMIT 4 * {limit}"


def migrations(dialect: str) -> list[tuple[int, str]]:
    """The migrations of ``dialect`` ("sqlite" or "postgres") shipped with perdure, as
    (version, script), in order."""
    folder = resources.files("perdure.storage") / "sql" / dialect
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    return sorted(found)


def check_versions(applied: set[int], shipped: list[tuple[int, str]], where: str) -> None:
    """Refuse a database that holds a schema version this perdure does not ship: a newer
    perdure migrated it (and this one, an older release or a rollback, would run against
    a schema it does not know). ``where`` names the database in the message."""
    known = {version for version, _ in shipped}
    unknown = sorted(applied - known)
    if unknown:
        newest = max(known, default=0)
        raise ConfigurationError(
            f"the database {where} has schema version(s) {', '.join(map(str, unknown))}, "
            f"which this perdure does not know (it knows up to version {newest}): a newer "
            "perdure migrated it. Upgrade perdure to the version that did (or restore the "
            "database from before that upgrade); perdure will not run against it."
        )


def list_query(
    placeholder: str,
    status: str | None,
    name: str | None,
    created_after: float | None,
    created_before: float | None,
    limit: int,
    newest_first: bool,
    after: tuple[float, str] | None = None,
    queue: str | None = None,
    key: str | None = None,
) -> tuple[str, list[Any]]:
    """The listing statement for these filters, with ``placeholder`` ("?" or "%s") for
    each value: fixed fragments chosen by which filters are given, so that the database
    can use an index for each combination. ``after`` is the ``(created_at, id)`` of the
    last row of the previous page: the page continues past it (keyset pagination on the
    indexes' ``(created_at, id)``: as fast on the thousandth page as on the first).
    ``queue`` and ``key`` (a queue's key: only with ``queue``) read the queue indexes of
    version 14."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("status =", status),
        ("name =", name),
        ("queue =", queue),
        ("queue_key =", key),
        ("created_at >", created_after),
        ("created_at <", created_before),
    ):
        if value is not None:
            clauses.append(f"{column} {placeholder}")
            params.append(value)
    order = "DESC" if newest_first else "ASC"
    if after is not None:
        # A row value: both databases read it as one range of the (.., created_at, id)
        # index.
        clauses.append(
            f"(created_at, id) {'<' if newest_first else '>'} ({placeholder}, {placeholder})"
        )
        params.extend(after)
    where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
    params.append(limit)
    return (
        f"SELECT {WF_COLUMNS} FROM perdure_workflows {where}"
        f"ORDER BY created_at {order}, id {order} LIMIT {placeholder}",
        params,
    )
