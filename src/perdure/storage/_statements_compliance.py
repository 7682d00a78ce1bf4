"""The statements of compliance (retention, erasure, rekeying), written once for both
stores like ``_statements`` (rendered per database by ``Dialect.sql``).

``{ids_set}`` is the list of text in the parameter ``ids`` (see ``_dialect``). The
payload columns that rekeying rewrites are named here, in code: no statement is built
from user input.
"""

from __future__ import annotations

# -- data subjects --------------------------------------------------------------------------

TAG_SUBJECT = (
    "INSERT INTO perdure_workflow_subjects (subject, workflow_id) VALUES (:subject, :id) "
    "ON CONFLICT (subject, workflow_id) DO NOTHING"
)
LIST_SUBJECTS = (
    "SELECT subject FROM perdure_workflow_subjects WHERE workflow_id = :id ORDER BY subject"
)

# -- the maintenance lease --------------------------------------------------------------------

# Taken when nobody holds it, when its holder's time ran out, or renewed by its holder; the
# conflict's update (and so the returned row) happens only then.
TAKE_LEASE = (
    "INSERT INTO perdure_maintenance_leases (name, holder, expires_at) "
    "VALUES (:name, :holder, :expires) ON CONFLICT (name) DO UPDATE SET "
    "holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE perdure_maintenance_leases.expires_at < :now "
    "OR perdure_maintenance_leases.holder = :holder RETURNING 1"
)

# -- retention --------------------------------------------------------------------------------

# Finished root workflows of these statuses that finished before :before, oldest first (an
# index range of perdure_workflows_finished_roots). SKIP LOCKED on PostgreSQL: a root that a
# resume is changing now is left for the next batch.
# A root with an active child is skipped here already (deeper descendants are checked
# under lock), so that such roots cannot fill every batch. The status is compared as an
# expression, not a column: SQLite's planner (without statistics) would otherwise walk the
# status index over every finished workflow and sort, instead of this range of old roots.
GC_ROOTS = (
    "SELECT id FROM perdure_workflows w WHERE finished_at IS NOT NULL AND parent_id IS NULL "
    "AND finished_at < :before AND (status || '') IN {ids_set} AND NOT EXISTS (SELECT 1 FROM "
    "perdure_workflows c WHERE c.parent_id = w.id AND c.status IN {ACTIVE}) "
    "ORDER BY finished_at, id LIMIT :limit{skip_locked}"
)
# Every workflow of the trees rooted at :ids, with its root.
TREES = (
    "WITH RECURSIVE tree (id, root) AS (SELECT id, id FROM perdure_workflows "
    "WHERE id IN {ids_set} UNION SELECT w.id, tree.root FROM perdure_workflows w "
    "JOIN tree ON w.parent_id = tree.id) SELECT id, root FROM tree"
)
# Locks the rows until commit on PostgreSQL (a resume waits, then finds nothing), and reads
# their statuses under the lock.
LOCK_WORKFLOWS = (
    "SELECT id, status FROM perdure_workflows WHERE id IN {ids_set} ORDER BY id{for_update}"
)
DELETE_TREES = (
    "DELETE FROM perdure_steps WHERE workflow_id IN {ids_set}",
    "DELETE FROM perdure_messages WHERE workflow_id IN {ids_set}",
    "DELETE FROM perdure_events WHERE workflow_id IN {ids_set}",
    "DELETE FROM perdure_streams WHERE workflow_id IN {ids_set}",
    "DELETE FROM perdure_workflow_subjects WHERE workflow_id IN {ids_set}",
    "DELETE FROM perdure_workflows WHERE id IN {ids_set} AND status IN {TERMINAL}",
)
# The resume actions of these workflows: their details hold the outcome each replaced (a
# copy of a payload), which deleting or erasing the workflow replaces too.
RESUME_ACTIONS = (
    "SELECT seq, details FROM perdure_operator_actions WHERE workflow_id IN {ids_set} "
    "AND action = 'resume'"
)
SET_ACTION_DETAILS = "UPDATE perdure_operator_actions SET details = :details WHERE seq = :seq"

# -- erasure ----------------------------------------------------------------------------------

# The workflows tagged with the subject, their descendants and their forks (a child gets
# its data from its parent, a fork copies its source's inputs and steps).
SUBJECT_WORKFLOWS = (
    "WITH RECURSIVE tree (id) AS (SELECT workflow_id FROM perdure_workflow_subjects "
    "WHERE subject = :subject UNION SELECT w.id FROM perdure_workflows w "
    "JOIN tree ON w.parent_id = tree.id OR w.forked_from = tree.id) SELECT id FROM tree"
)
# Structure and times stay: only the payloads are replaced (a NULL stays NULL).
ERASE_PAYLOADS = (
    "UPDATE perdure_workflows SET inputs = :erased, "
    "output = CASE WHEN output IS NULL THEN NULL ELSE :erased END, "
    "error = CASE WHEN error IS NULL THEN NULL ELSE :erased END WHERE id IN {ids_set}",
    "UPDATE perdure_steps SET output = CASE WHEN output IS NULL THEN NULL ELSE :erased END, "
    "error = CASE WHEN error IS NULL THEN NULL ELSE :erased END WHERE workflow_id IN {ids_set}",
    "UPDATE perdure_messages SET payload = :erased WHERE workflow_id IN {ids_set}",
    "UPDATE perdure_events SET value = :erased WHERE workflow_id IN {ids_set}",
    # A NULL value is a stream's close marker: it stays one.
    "UPDATE perdure_streams SET value = CASE WHEN value IS NULL THEN NULL ELSE :erased END "
    "WHERE workflow_id IN {ids_set}",
)
MARK_ERASED = (
    "UPDATE perdure_workflow_subjects SET erased_at = :now WHERE subject = :subject "
    "AND erased_at IS NULL"
)

# -- rekeying: (table, key columns, payload columns) ----------------------------------------

PAYLOAD_COLUMNS = (
    ("perdure_workflows", ("id",), ("inputs", "output", "error")),
    ("perdure_steps", ("workflow_id", "position"), ("output", "error")),
    ("perdure_messages", ("seq",), ("payload",)),
    ("perdure_events", ("workflow_id", "key"), ("value",)),
    ("perdure_streams", ("workflow_id", "key", "seq"), ("value",)),
    ("perdure_operator_actions", ("seq",), ("details",)),
)


def page_of(table: str, keys: tuple[str, ...], columns: tuple[str, ...], first: bool) -> str:
    """The next page of ``table``'s payload ``columns`` by primary key (keyset: past the
    parameters ``k0``, ``k1`` ... unless ``first``), at most ``:limit`` rows."""
    key_list = ", ".join(keys)
    past = ", ".join(f":k{n}" for n in range(len(keys)))
    where = "" if first else f"WHERE ({key_list}) > ({past}) "
    return (
        f"SELECT {key_list}, {', '.join(columns)} FROM {table} {where}"
        f"ORDER BY {key_list} LIMIT :limit"
    )


def rewrite_of(table: str, keys: tuple[str, ...], column: str) -> str:
    """Replace one payload, only if it still holds what was read (``:old``): a value
    written meanwhile (a retry's record, say) is left for the next run."""
    match = " AND ".join(f"{key} = :k{n}" for n, key in enumerate(keys))
    return f"UPDATE {table} SET {column} = :new WHERE {match} AND {column} = :old"
