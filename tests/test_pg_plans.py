"""PostgreSQL finds the workflow row of a fenced write by its primary key, whatever the
table's statistics say.

A write about one workflow checks more than its ID (the lease's owner and epoch, a
status). Given those as plain conditions, the planner may scan an index on status or
owner instead of the primary key: it did so on a table without statistics yet (a new
database, the start of a benchmark), and such an index holds an entry for every version of
a row until vacuum, so each step record scanned every RUNNING entry since the last vacuum.
The statements keep those checks out of the planner's reach (``_statements.py``); this
test asks the planner, on a fresh schema with no statistics and with the generic plans a
prepared statement gets after a few runs, which index each one uses, and that none
scans the whole table.
"""

from __future__ import annotations

import re

import pytest
from conftest import admin_connection, schema_of

from perdure.storage import _queue_statements as qq
from perdure.storage import _statements as q
from perdure.storage._dialect import POSTGRES
from perdure.storage._pg_statements import CLAIM
from perdure.storage._postgres import PostgresStore
from perdure.storage._sql_streams import FENCE_LEASE

pytestmark = pytest.mark.postgres

#: The statements that find one workflow by ID and check more of its row (the suspension
#: of ``_postgres.py`` is one too, left out: PostgreSQL cannot type its parameters alone).
FENCED = {
    "INSERT_STEP": q.INSERT_STEP,
    "INSERT_STEPS_JSON": q.INSERT_STEPS_JSON,
    "COMPLETE_AND_NOTIFY_JSON": q.COMPLETE_AND_NOTIFY_JSON,
    "STEPS_AND_OUTCOMES_JSON": q.STEPS_AND_OUTCOMES_JSON,
    "COMPLETE_WORKFLOW": q.COMPLETE_WORKFLOW,
    "COMPLETE_AND_NOTIFY": q.COMPLETE_AND_NOTIFY,
    "DELIVER_OUTCOME": q.DELIVER_OUTCOME,
    "HOLD_WORKFLOW": q.HOLD_WORKFLOW,
    "RETRY_HELD": q.RETRY_HELD,
    "SEND_MESSAGE": q.SEND_MESSAGE,
    "FENCE_FREE_POSITION": q.FENCE_FREE_POSITION,
    "CONTINUE_WORKFLOW": q.CONTINUE_WORKFLOW,
    "RESUME_WORKFLOW": q.RESUME_WORKFLOW,
    "CANCEL_WAITING": qq.CANCEL_WAITING,
    "FENCE_LEASE": FENCE_LEASE,
}


def _numbered(statement: str) -> tuple[str, int]:
    """``statement`` with psycopg's placeholders as ``$1, $2...`` (a name keeps its
    number), and how many there are."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        key = match.group(1) or f"#{len(numbers)}"
        return f"${numbers.setdefault(key, len(numbers) + 1)}"

    return re.sub(r"%(?:\((\w+)\))?s", number, statement), len(numbers)


def _workflow_indexes(plan: str) -> set[str]:
    return set(re.findall(r"using (perdure_workflows\w*)", plan))


def _generic_plan(postgres_url: str, statement: str, argument: str) -> str:
    """The plan PostgreSQL keeps for ``statement`` (psycopg's placeholders) once prepared
    and run a few times, on a fresh schema (its tables and indexes, no rows, no
    statistics), each parameter given as ``argument``."""
    store = PostgresStore(postgres_url)
    store.migrate()
    store.close()
    numbered, count = _numbered(statement)
    arguments = ", ".join([argument] * count)
    with admin_connection(postgres_url, schema=schema_of(postgres_url)) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE planned AS {numbered}")
        rows = conn.execute(f"EXPLAIN EXECUTE planned({arguments})").fetchall()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("name", sorted(FENCED))
def test_a_fenced_write_finds_its_workflow_by_the_primary_key(postgres_url: str, name: str) -> None:
    plan = _generic_plan(postgres_url, POSTGRES.sql(FENCED[name]), "'1'")
    assert _workflow_indexes(plan) <= {"perdure_workflows_pkey"}, plan
    # Nor the whole table: a batch's UPDATE joined to its JSON rows hashed every row of
    # it (a sequential scan per batch, whatever the table's size).
    assert "Seq Scan on perdure_workflows" not in plan, plan


#: Statements that find their workflows by other indexes (claimable rows, an executor's
#: workflows: the heartbeat's read, the release of an executor whose lease lapsed) and
#: must not read the whole table to do it either.
SCANS = {
    "claim": CLAIM,
    "owned": POSTGRES.sql(q.OWNED),
    "release": POSTGRES.sql(q.RELEASE),
}


@pytest.mark.parametrize("name", sorted(SCANS))
def test_a_claim_and_a_heartbeat_never_scan_the_workflow_table(
    postgres_url: str, name: str
) -> None:
    # NULL for every parameter: some are arrays, and a generic plan does not look at them.
    plan = _generic_plan(postgres_url, SCANS[name], "NULL")
    assert "Seq Scan on perdure_workflows" not in plan, plan
