"""The statements only the PostgreSQL store sends: its claim and
suspension (which lock rows in ways SQLite has no words for), its session settings and
its migration checks. The statements both stores share are in ``_statements.py``."""

from __future__ import annotations

from ._dialect import POSTGRES
from ._queries import WF_COLUMNS, claim_candidates
from ._statements import INSERT_STEP

#: A process frozen inside a transaction (SIGSTOP, a VM pause) would hold its row locks,
#: and claims skip locked rows: let the server end such a session instead.
IDLE_IN_TRANSACTION = "SET idle_in_transaction_session_timeout = '10s'"
SET_APPLICATION_NAME = "SELECT set_config('application_name', %s, false)"

# Asked to cancel while it ran (the cancel woke nothing: it was not suspended yet): it
# wakes at once to be told, unless it was told already (it waits in its cleanup). The
# row lock orders it with the cancel's update either way.
SUSPEND = POSTGRES.sql(
    "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, "
    "wake_at = CASE WHEN cancel_requested_at IS NOT NULL AND NOT :delivered THEN :now "
    "ELSE :wake END, "
    "wait_topic = :topic, updated_at = :now "
    "WHERE id = :id AND (owner = :owner AND epoch = :epoch AND status = {RUNNING}) IS TRUE "
    "RETURNING id"
)
WAKE_IF_PENDING = POSTGRES.sql(
    "UPDATE perdure_workflows SET wake_at = :now WHERE id = :id "
    "AND EXISTS (SELECT 1 FROM perdure_messages WHERE workflow_id = :id "
    "AND topic = :topic AND consumed_at IS NULL)"
)
# Parked on a breaker: lock its row (whatever its state), so that a close either commits
# before this read (we see CLOSED and wake at once) or waits for our commit (and its
# wake-all then sees this workflow suspended).
LOCK_BREAKER = "SELECT state FROM perdure_breakers WHERE name = %s FOR SHARE"
WAKE = "UPDATE perdure_workflows SET wake_at = %s WHERE id = %s"
# One statement: the event is written only if the step was (a data-modifying CTE runs
# whether or not it is read).
SET_EVENT = POSTGRES.sql(
    "WITH step AS (" + INSERT_STEP + " RETURNING 1), "
    "event AS (INSERT INTO perdure_events (workflow_id, key, value, updated_at) "
    "SELECT ?::text, ?::text, ?::text, ?::double precision FROM step "
    "ON CONFLICT (workflow_id, key) DO UPDATE "
    "SET value = excluded.value, updated_at = excluded.updated_at) "
    "SELECT count(*) FROM step"
)


# SKIP LOCKED: rows another executor is claiming (or a writer is completing) right now
# are left to it, so concurrent claims never overlap or wait. The candidates' conditions
# are checked again by the claim itself once their rows are locked: a row may have
# changed since the candidates were read. The candidates are an ARRAY (an init plan, run
# once): as "id IN (subquery)", a table freshly filled (no statistics yet) led the planner
# to scan every active row and run the candidates' union again for each (3,000 pending
# workflows: 0.6 s per claim instead of 15 ms). Each candidate, in order, is then looked
# up by primary key and locked in a LATERAL subquery (its locking clause keeps the planner
# from flattening it): as "id = ANY(array)" beside the state conditions, the same missing
# statistics led the planner to walk every active row and compare each with every
# candidate (2,000 workflows: 18-28 ms per claim instead of 4-5 ms). The nested loop stops
# at the limit, so no more rows than it are locked.
CLAIM = POSTGRES.sql(
    "UPDATE perdure_workflows SET owner = :me, epoch = epoch + 1, "
    "status = {RUNNING}, lease_expires_at = :lease, note = NULL, updated_at = :now, "
    "recoveries = recoveries + CASE WHEN status = {RUNNING} AND wake_at IS NULL "
    "THEN 1 ELSE 0 END, wake_at = NULL, wait_topic = NULL, held_code = NULL, held_detail = NULL "
    # Distinct candidates: each takes one place of the limit.
    "WHERE id IN (SELECT w.id FROM unnest(ARRAY("
    + claim_candidates(
        ":%s", "(SELECT unnest(:names::text[]))", "(SELECT unnest(:dead::text[]))", False, True
    )
    + ")) WITH ORDINALITY AS c (id, n), "
    "LATERAL (SELECT id FROM perdure_workflows WHERE id = c.id AND status IN {ACTIVE} "
    "AND (owner IS NULL OR lease_expires_at < :now OR owner = ANY(:dead::text[])) "
    "AND (wake_at IS NULL OR wake_at <= :now) FOR UPDATE SKIP LOCKED) AS w "
    "ORDER BY c.n LIMIT :limit) "
    f"RETURNING {WF_COLUMNS}"
)


DEFAULT_SEARCH_PATH = (
    "SELECT set_config('search_path', reset_val, true) FROM pg_settings WHERE name = 'search_path'"
)
SET_SEARCH_PATH = "SELECT set_config('search_path', %s, true)"
LOCK_STREAM = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 7)::bigint)"
# Whether migrate() has set the schema up (the table of schema versions is its first).
HAS_SCHEMA = "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'perdure_schema'"
