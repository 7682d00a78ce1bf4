"""The statements both stores run, written once (rendered per database by ``Dialect.sql``).

Each is a template: named parameters ``:name`` (positional ``?`` for the hot path's
step record, whose parameters stay a plain tuple), and ``{slots}`` that a dialect
fills (see ``_dialect``). Nothing here is built from user input: every value
travels as a parameter.
"""

from __future__ import annotations

from ._queries import BREAKER_COLUMNS, EXECUTOR_COLUMNS, STEP_COLUMNS, WF_COLUMNS

# -- workflows ---------------------------------------------------------------------------

# A statement about one workflow finds its row by the primary key alone: what else it
# checks (the lease's owner and epoch, a status) is one condition tested on that row,
# ``(...) IS TRUE``, which no index can serve. Written as plain conditions, they let
# PostgreSQL's planner pick an index on status or owner instead (a generic plan, or
# statistics taken while the table was small), and such an index keeps an entry for every
# version of a row until vacuum: a step record's lease check then scanned every RUNNING
# entry since the last vacuum, and the server's CPU per workflow grew with the day's work.

# The hot path's statements take positional parameters: binding by name costs SQLite
# a lookup per parameter. A new workflow's record is known without reading it back
# (``_sql_base.created_record``): RETURNING its columns cost SQLite about a fifth of the
# insert. Its row count says whether it inserted, or (PostgreSQL's pipeline, see
# ``Dialect.rowcount_at_once``) a returned row.
_CREATE_INTO = (
    "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, app_version, "
    "owner, epoch, lease_expires_at, created_at, updated_at, parent_id, deadline_at, "
    "trace_context, root_id) "
)
_CREATE = (
    _CREATE_INTO + "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {root}) "
    "ON CONFLICT (id) DO NOTHING"
)
# A top-level workflow is the root of its family: its root_id is its ID, a parameter.
CREATE_WORKFLOW = _CREATE.format(root="?")
CREATE_WORKFLOW_RETURNING = CREATE_WORKFLOW + " RETURNING 1"
# A child inherits its parent's root_id (the parent's ID when the parent was written
# before schema version 15): the parent's row, by its primary key. Apart from the hot
# path's top-level starts, which look nothing up.
CREATE_CHILD = _CREATE.format(
    root="COALESCE((SELECT p.root_id FROM perdure_workflows p WHERE p.id = ?), ?)"
)
CREATE_CHILD_RETURNING = CREATE_CHILD + " RETURNING 1"
# A start that no executor owns yet, with its push of the READY event in one statement
# (stores that push in SQL, i.e. PostgreSQL): alone, one round trip; the event goes out
# only if it inserted (a row returned), as the other events do.
_AND_READY = "WITH ins AS ({insert} RETURNING 1) SELECT pg_notify(?, ?) FROM ins"
CREATE_WORKFLOW_AND_NOTIFY = _AND_READY.format(insert=CREATE_WORKFLOW)
CREATE_CHILD_AND_NOTIFY = _AND_READY.format(insert=CREATE_CHILD)
#: Many top-level ``CREATE_WORKFLOW``s in one statement (PostgreSQL): its parameter is a
#: JSON array of their parameter lists, in order; the IDs returned are those inserted.
_CREATE_FROM_ROWS = (
    _CREATE_INTO + "SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, e->>6, (e->>7)::bigint, "
    "(e->>8)::double precision, (e->>9)::double precision, (e->>10)::double precision, "
    "e->>11, (e->>12)::double precision, e->>13, e->>14 "
    "FROM {rows} AS e ON CONFLICT (id) DO NOTHING RETURNING id"
)
CREATE_WORKFLOWS_JSON = _CREATE_FROM_ROWS.format(rows="jsonb_array_elements(?::jsonb)")
#: Many ``CREATE_WORKFLOW_AND_NOTIFY``s in one statement (PostgreSQL), as above; each
#: inserted row pushes the event (the first write's channel and event: they are all the
#: same), which PostgreSQL delivers once per transaction.
CREATE_WORKFLOWS_AND_NOTIFY_JSON = (
    "WITH a AS (SELECT ?::jsonb AS j), ins AS ("
    + _CREATE_FROM_ROWS.format(rows="a, jsonb_array_elements(a.j)")
    + ") SELECT ins.id FROM ins CROSS JOIN LATERAL "
    "(SELECT pg_notify(a.j->0->>15, a.j->0->>16) FROM a WHERE ins.id IS NOT NULL) AS pushed"
)
GET_WORKFLOW = f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE id = ?"
#: ``GET_WORKFLOWS`` for a waiter in another process than the workflow's (PostgreSQL):
#: marks them first, so that their outcomes push their ``done`` event
#: (``COMPLETE_AND_NOTIFY``). The row's lock orders the mark and the outcome: the later
#: one sees the earlier. The mark is a hint for a wake-up, so its commit does not wait
#: for the WAL flush (``synchronous_commit`` off for its own transaction only): lost in
#: a crash of the server, its waiter wakes at its next look instead. A waiter in a
#: process with an executor (``:watcher``, its ID) marks ``watcher`` instead, when no
#: other executor's waiter did: the outcome pushes then only if recorded by another
#: executor than that one (``COMPLETE_WORKFLOW`` turns the mark into ``watched``).
WATCH_WORKFLOWS = (
    "UPDATE perdure_workflows SET watched = CASE WHEN :watcher::text IS NULL "
    "OR watcher <> :watcher THEN 1 ELSE watched END, watcher = COALESCE(watcher, :watcher) "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS hint "
    f"WHERE id {{in_ids}} RETURNING {WF_COLUMNS}"
)
GET_WORKFLOWS = f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE id {{in_ids}}"
UNFINISHED_AMONG = (
    "SELECT id FROM perdure_workflows WHERE id {in_ids} AND (status IN {ACTIVE}) IS TRUE"
)

# ``watched`` becomes 1 (its end pushed) when the executor whose process waits
# (``watcher``) is not the one recording the outcome: SET reads the row as it was, its
# ``owner`` the recording executor's.
COMPLETE_WORKFLOW = (
    "UPDATE perdure_workflows SET status = ?, output = ?, error = ?, "
    "owner = NULL, lease_expires_at = NULL, note = NULL, updated_at = ?, finished_at = ?, "
    "watched = CASE WHEN watcher <> owner THEN 1 ELSE watched END "
    "WHERE id = ? AND (owner = ? AND epoch = ? AND status IN {ACTIVE}) IS TRUE"
)
# The completion and its push of the DONE event in one statement (stores that push in
# SQL, i.e. PostgreSQL): alone, it needs no transaction, so one round trip; the event
# goes out only if the completion matched (a refused one has nothing to tell) and a
# process that does not run the workflow waits for it (``watched``, set by
# ``WATCH_WORKFLOWS``): PostgreSQL commits the transactions that notify one at a time,
# server wide (docs/scaling.md).
COMPLETE_AND_NOTIFY = (
    f"WITH done AS ({COMPLETE_WORKFLOW} RETURNING id, watched) "
    "SELECT CASE WHEN done.watched = 1 THEN pg_notify(?, ?) END FROM done"
)
#: Many ``COMPLETE_AND_NOTIFY``s in one statement (PostgreSQL): its parameter is a JSON
#: array of their parameter lists, in order; the IDs returned are those completed, each
#: with its event pushed if watched.
#: ``jsonb_typeof(e) = 'array'`` is true of every element; it is there for the planner,
#: which takes a JSON array for 100 rows: joined to that many, it hashed the whole
#: workflow table (a sequential scan of every row, in each batch, up to tens of
#: thousands of rows, and for good in a prepared statement's plan made while the table
#: was small). An equality it cannot estimate counts as 0.5 %: one row, so each
#: element's workflow is looked up by the primary key (``test_pg_plans.py``).
_COMPLETE_FROM_ROWS = (
    "done AS (UPDATE perdure_workflows AS w SET status = e->>0, output = e->>1, "
    "error = e->>2, owner = NULL, lease_expires_at = NULL, note = NULL, "
    "updated_at = (e->>3)::double precision, finished_at = (e->>4)::double precision, "
    "watched = CASE WHEN w.watcher <> w.owner THEN 1 ELSE w.watched END "
    "FROM jsonb_array_elements(?::jsonb) AS e WHERE jsonb_typeof(e) = 'array' "
    "AND w.id = e->>5 "
    "AND (w.owner = e->>6 AND w.epoch = (e->>7)::bigint AND w.status IN {ACTIVE}) IS TRUE "
    "RETURNING w.id, e->>6 AS was_owner, (e->>7)::bigint AS was_epoch, "
    "e->>8 AS channel, e->>9 AS event, w.watched)"
)
# Each completed row, its event pushed if it is watched.
_PUSH_DONE = (
    "FROM done LEFT JOIN LATERAL (SELECT pg_notify(done.channel, done.event) "
    "WHERE done.watched = 1) AS pushed ON TRUE"
)
COMPLETE_AND_NOTIFY_JSON = f"WITH {_COMPLETE_FROM_ROWS} SELECT done.id {_PUSH_DONE}"
# A child's outcome to its parent: sent behind the completion in the same transaction
# without reading its result (PostgreSQL pipelines them), so it is conditioned on the
# child's row holding this very outcome; the key makes it at most once (a completion
# that lost a race found an outcome whose own transaction delivered it).
DELIVER_OUTCOME = (
    "INSERT INTO perdure_messages (workflow_id, topic, payload, idempotency_key, "
    "created_at) SELECT :parent{text}, :topic{text}, :payload{text}, :topic{text}, "
    ":now{real} FROM perdure_workflows WHERE id = :id "
    "AND (status = :status AND finished_at = :now) IS TRUE "
    "ON CONFLICT (workflow_id, idempotency_key) DO NOTHING"
)
# Wake the workflow if it is suspended waiting on this topic. It always updates (so
# locks, on PostgreSQL) the workflow's row: a suspension in flight then either
# committed before (and is woken here) or waits for this commit (and sees the message).
WAKE_FOR_MESSAGE = (
    "UPDATE perdure_workflows SET wake_at = CASE WHEN owner IS NULL "
    "AND wait_topic = :topic AND wake_at > :now THEN :now ELSE wake_at END "
    "WHERE id = :id RETURNING owner IS NULL AND wake_at = :now"
)
SET_NOTE = "UPDATE perdure_workflows SET note = :note, updated_at = :now WHERE id = :id"
# Hold a workflow whose replay met another step: like a suspension (no owner, no lease)
# but with no wait topic (a message does not wake it: its code cannot run it) and the
# hold's columns set; fenced by the lease.
HOLD_WORKFLOW = (
    "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, wait_topic = NULL, "
    "wake_at = :retry_at, note = :note, held_code = :code, held_detail = :detail, "
    "updated_at = :now "
    "WHERE id = :id AND (owner = :owner AND epoch = :epoch AND status = {RUNNING}) IS TRUE "
    "RETURNING id"
)
# Held workflows of this version held by other code than this: due now. (A code names
# its workflow: a held code is among ``codes`` only if it is this code for that name.)
RELEASE_HOLDS = (
    "UPDATE perdure_workflows SET wake_at = :now, updated_at = :now "
    "WHERE held_code IS NOT NULL AND app_version = :version "
    "AND NOT (held_code IN {codes_set}) "
    "AND owner IS NULL AND status IN {ACTIVE} AND name IN {names_set} AND wake_at > :now"
)
RETRY_HELD = (
    "UPDATE perdure_workflows SET wake_at = :now, updated_at = :now WHERE id = :id "
    "AND (held_code IS NOT NULL AND owner IS NULL AND status IN {ACTIVE}) IS TRUE RETURNING id"
)
ACTIVE_VERSIONS = (
    "SELECT app_version, count(*), "
    "sum(CASE WHEN held_code IS NOT NULL THEN 1 ELSE 0 END), min(created_at) "
    "FROM perdure_workflows WHERE status IN {ACTIVE} GROUP BY app_version "
    "ORDER BY min(created_at)"
)

# -- steps ---------------------------------------------------------------------------------

LOAD_STEPS = (
    f"SELECT {STEP_COLUMNS} FROM perdure_steps WHERE workflow_id = :id ORDER BY {{step_order}}"
)
LOAD_STEPS_MANY = (
    f"SELECT workflow_id, {STEP_COLUMNS} FROM perdure_steps WHERE workflow_id {{in_ids}} "
    "ORDER BY workflow_id, {step_order}"
)
# Record a step. The fencing check and the write are one statement: no read before it.
# On PostgreSQL the check locks the workflow's row FOR KEY SHARE: a claim holds it FOR
# UPDATE, so a step racing a takeover waits for the claim to commit and is then checked
# against the new owner and epoch (a plain read would check the row as it was when the
# statement began, and record a stale step after the claim). Heartbeats and completions
# take weaker locks that do not conflict with it.
_STEP_INTO = (
    "INSERT INTO perdure_steps (workflow_id, position, name, status, output, error, "
    "attempts, next_attempt_at, updated_at, started_at) "
)
_STEP_UPSERT = (
    "ON CONFLICT (workflow_id, position) DO UPDATE SET status = excluded.status, "
    "output = excluded.output, error = excluded.error, attempts = excluded.attempts, "
    "next_attempt_at = excluded.next_attempt_at, updated_at = excluded.updated_at, "
    # The start of the first attempt stays: a retry's record does not move it.
    "started_at = COALESCE(perdure_steps.started_at, excluded.started_at) "
    "WHERE perdure_steps.status IN {REPLACEABLE}"
)
INSERT_STEP = (
    _STEP_INTO + "SELECT ?{text}, ?{text}, ?{text}, ?{text}, ?{text}, ?{text}, ?{int}, ?{real}, "
    "?{real}, ?{real} "
    "WHERE EXISTS (SELECT 1 FROM perdure_workflows "
    "WHERE id = ? AND (owner = ? AND epoch = ? AND status = {RUNNING}) IS TRUE{key_share}) "
    + _STEP_UPSERT
)
#: Many records of ``INSERT_STEP`` in one statement (PostgreSQL): its parameter is a JSON
#: array of their parameter lists, in ``INSERT_STEP``'s order; each row is fenced on its
#: own, and the rows returned are those written. Read as ``jsonb``, parsed once: on
#: ``json`` every ``->>`` parses its element again, and the server spent 12-29 % more CPU
#: per row than on a statement each; as ``jsonb`` 20-40 % less, from 40 rows up. (Two
#: records of one step would fail the statement; ``_pg_rows`` sends those one by one.)
_STEPS_FROM_ROWS = (
    _STEP_INTO + "SELECT e->>0, e->>1, e->>2, e->>3, e->>4, e->>5, (e->>6)::integer, "
    "(e->>7)::double precision, (e->>8)::double precision, (e->>9)::double precision "
    "FROM jsonb_array_elements(?::jsonb) AS e "
)
INSERT_STEPS_JSON = (
    _STEPS_FROM_ROWS + "WHERE EXISTS (SELECT 1 FROM perdure_workflows WHERE id = e->>10 "
    "AND (owner = e->>11 AND epoch = (e->>12)::bigint AND status = {RUNNING}) IS TRUE"
    "{key_share}) " + _STEP_UPSERT + " RETURNING workflow_id, position"
)
#: The same, saying whether it recorded (a row count is known only at the commit in
#: PostgreSQL's pipeline: a returned row is read instead).
INSERT_STEP_RETURNING = INSERT_STEP + " RETURNING 1"
# A run's last step record (held for its outcome) and its ``COMPLETE_AND_NOTIFY`` in one
# statement (PostgreSQL): one round trip for a workflow's last step and its end. The
# record is written only if the completion matched (``FROM done``): the completion's
# fence, whose UPDATE locks the row, is the record's too. (``INSERT_STEP``'s own fence
# would not do here: its FOR KEY SHARE skips a row this statement updates.)
RECORD_AND_COMPLETE = (
    f"WITH done AS ({COMPLETE_WORKFLOW} RETURNING id, watched), step AS ("
    + _STEP_INTO
    + "SELECT ?{text}, ?{text}, ?{text}, ?{text}, ?{text}, ?{text}, ?{int}, ?{real}, "
    "?{real}, ?{real} FROM done " + _STEP_UPSERT + ") "
    "SELECT CASE WHEN done.watched = 1 THEN pg_notify(?, ?) END FROM done"
)
#: A batch of step records and outcomes of workflows without a parent, in one statement
#: (PostgreSQL), so in autocommit like a batch of one kind: three JSON arrays, of
#: ``COMPLETE_AND_NOTIFY_JSON``'s outcomes, of ``INSERT_STEPS_JSON``'s records of other
#: workflows (each fenced on its own), and of the records that go with an outcome of the
#: batch (a last step held for it), written only if that outcome matched under their
#: own lease: ``RECORD_AND_COMPLETE``'s ``FROM done``, as a fence's FOR KEY SHARE would
#: skip a row the statement updates. It returns ``(0, workflow_id, position)`` for each
#: record written and ``(1, id, NULL)`` for each workflow completed (its event pushed if
#: watched).
#: (A batch with a record of a workflow it completes that is not under the outcome's
#: lease is not sent this way: ``_pg_rows``.)
STEPS_AND_OUTCOMES_JSON = (
    f"WITH {_COMPLETE_FROM_ROWS}, fenced AS ("
    + INSERT_STEPS_JSON
    + "), riding AS ("
    + _STEPS_FROM_ROWS
    + "JOIN done ON done.id = e->>10 AND done.was_owner = e->>11 "
    "AND done.was_epoch = (e->>12)::bigint " + _STEP_UPSERT + " RETURNING workflow_id, position) "
    "SELECT 0, workflow_id, position FROM fenced UNION ALL "
    "SELECT 0, workflow_id, position FROM riding UNION ALL "
    f"SELECT 1, done.id, NULL {_PUSH_DONE}"
)

# -- executors and leases --------------------------------------------------------------------

REGISTER_EXECUTOR = (
    f"INSERT INTO perdure_executors ({EXECUTOR_COLUMNS}) VALUES (:id, :host, :pid, "
    ":app_version, :started_at, :heartbeat_at, :lease, :stopped_at) "
    "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
    "app_version = excluded.app_version, started_at = excluded.started_at, "
    "heartbeat_at = excluded.heartbeat_at, lease_expires_at = excluded.lease_expires_at, "
    "stopped_at = excluded.stopped_at"
)
# Running again if others released it while its lease had lapsed (a pause, a partition):
# its later workflows must be released in turn if it dies.
RENEW_EXECUTOR = (
    "UPDATE perdure_executors SET heartbeat_at = :now, lease_expires_at = :lease, "
    "stopped_at = NULL WHERE id = :id"
)
# Another executor whose lease lapsed, locked (a heartbeat of its own then waits for the
# release to commit, and sees its workflows gone); skipped while a write of its holds it.
EXPIRED_EXECUTOR = (
    "SELECT id FROM perdure_executors WHERE id = :owner AND stopped_at IS NULL "
    "AND lease_expires_at < :now{skip_locked}"
)
LIST_EXECUTORS = f"SELECT {EXECUTOR_COLUMNS} FROM perdure_executors WHERE stopped_at IS NULL"
UNCLAIMABLE = (
    f"SELECT {WF_COLUMNS} FROM perdure_workflows "
    "WHERE status IN {ACTIVE} AND (owner IS NULL OR lease_expires_at < :now) "
    "AND (wake_at IS NULL OR wake_at <= :now) "
    "AND (app_version <> :version OR NOT (name IN {names_set})) "
    "ORDER BY created_at LIMIT :limit"
)
OWNED = "SELECT id FROM perdure_workflows WHERE owner = :owner AND status IN {ACTIVE}"
RELEASE = (
    "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, updated_at = :now "
    "WHERE owner = :owner AND status IN {ACTIVE}"
)
STOP_EXECUTOR = "UPDATE perdure_executors SET stopped_at = :now WHERE id = :owner"
# Another executor's (its lease lapsed): the rows that no transaction holds. A process
# frozen inside a transaction keeps its locks (a step record's fence holds one); waiting
# for them would stall this writer's other writes, so those rows stay its own until
# a claim has ended its sessions (_pg_session.end_expired_sessions) and a later round
# releases them; it is marked stopped only once it owns nothing.
RELEASE_UNLOCKED = (
    "UPDATE perdure_workflows SET owner = NULL, lease_expires_at = NULL, updated_at = :now "
    "WHERE id IN (SELECT id FROM perdure_workflows WHERE owner = :owner "
    "AND status IN {ACTIVE}{skip_locked})"
)
STOP_IF_RELEASED = (
    "UPDATE perdure_executors SET stopped_at = :now WHERE id = :owner AND NOT EXISTS "
    "(SELECT 1 FROM perdure_workflows WHERE owner = :owner AND status IN {ACTIVE})"
)

# -- waiting -------------------------------------------------------------------------------

NEXT_WAKE_AT = "SELECT min(wake_at) FROM perdure_workflows WHERE wake_at > :after"
SEND_MESSAGE = (
    "INSERT INTO perdure_messages (workflow_id, topic, payload, idempotency_key, created_at, "
    "trace_context) SELECT :id{text}, :topic{text}, :payload{text}, :key{text}, :now{real}, "
    ":trace{text} "
    "WHERE EXISTS (SELECT 1 FROM perdure_workflows "
    "WHERE id = :id AND (status IN {ACTIVE}) IS TRUE) "
    "ON CONFLICT (workflow_id, idempotency_key) DO NOTHING RETURNING seq"
)
#: Why a message was not stored: (the workflow is active, its key was used before); no
#: row when the workflow does not exist.
WHY_NOT_STORED = (
    "SELECT status IN {ACTIVE}, EXISTS (SELECT 1 FROM perdure_messages "
    "WHERE workflow_id = :id AND idempotency_key = :key) FROM perdure_workflows WHERE id = :id"
)
# The lock on the workflow's row (PostgreSQL's KEY SHARE, like a step record) holds until
# commit: no claim can take the workflow over between the check and the writes.
FENCE_FREE_POSITION = (
    "SELECT 1 FROM perdure_workflows WHERE id = :id AND (owner = :owner AND epoch = :epoch "
    "AND status = {RUNNING}) IS TRUE AND NOT EXISTS (SELECT 1 FROM perdure_steps "
    "WHERE workflow_id = :id AND position = :position "
    "AND status NOT IN {REPLACEABLE}){key_share}"
)
TAKE_MESSAGE = (
    "UPDATE perdure_messages SET consumed_at = :now WHERE seq = (SELECT seq FROM "
    "perdure_messages WHERE workflow_id = :id AND topic = :topic AND consumed_at IS NULL "
    "ORDER BY seq LIMIT 1{for_update}) RETURNING payload, trace_context"
)
COUNT_SUSPENDED = (
    "SELECT name, count(*) FROM perdure_workflows WHERE status IN {ACTIVE} "
    "AND owner IS NULL AND wake_at > :now AND held_code IS NULL GROUP BY name"
)
GET_EVENT = "SELECT value FROM perdure_events WHERE workflow_id = :id AND key = :key"

# -- cancellation and continue_as_new --------------------------------------------------------

EXISTS = "SELECT 1 FROM perdure_workflows WHERE id = :id"
# The workflow and its active descendants not asked before; suspended ones wake now.
CANCEL_TREE = (
    "WITH RECURSIVE tree (id) AS (SELECT :id{text} UNION SELECT w.id "
    "FROM perdure_workflows w JOIN tree ON w.parent_id = tree.id) "
    "UPDATE perdure_workflows SET cancel_requested_at = :now, updated_at = :now, "
    "wake_at = CASE WHEN owner IS NULL AND wake_at IS NOT NULL THEN :now ELSE wake_at END "
    "WHERE id IN (SELECT id FROM tree) AND status IN {ACTIVE} "
    "AND cancel_requested_at IS NULL RETURNING id"
)
CANCEL_REQUESTS = (
    "SELECT id FROM perdure_workflows WHERE owner = :owner "
    "AND cancel_requested_at IS NOT NULL AND status IN {ACTIVE}"
)
CONTINUE_WORKFLOW = (
    "UPDATE perdure_workflows SET inputs = :inputs, generation = generation + 1, "
    "updated_at = :now WHERE id = :id AND (owner = :owner AND epoch = :epoch "
    f"AND status = {{RUNNING}}) IS TRUE RETURNING {WF_COLUMNS}"
)
DELETE_STEPS = "DELETE FROM perdure_steps WHERE workflow_id = :id"

# -- circuit breakers --------------------------------------------------------------------------

GET_BREAKER = f"SELECT {BREAKER_COLUMNS} FROM perdure_breakers WHERE name = :name"
LIST_BREAKERS = (
    f"SELECT {BREAKER_COLUMNS}, (SELECT count(*) FROM perdure_workflows "
    "WHERE wait_topic = :prefix || perdure_breakers.name AND owner IS NULL "
    "AND status IN {ACTIVE}) FROM perdure_breakers ORDER BY name"
)
CREATE_BREAKER = (
    "INSERT INTO perdure_breakers (name, state, updated_at) VALUES (:name, {CLOSED}, :now) "
    "ON CONFLICT (name) DO NOTHING"
)
# Locks the row until commit on PostgreSQL (SQLite's one writer does as much): concurrent
# failures are counted one after the other, and only the one that reaches the threshold
# opens it.
COUNT_FAILURE = (
    "UPDATE perdure_breakers SET "
    "failures = CASE WHEN window_start IS NULL OR window_start + :window <= :now "
    "THEN 1 ELSE failures + 1 END, "
    "window_start = CASE WHEN window_start IS NULL OR window_start + :window <= :now "
    "THEN :now ELSE window_start END, last_error = :error, updated_at = :now "
    "WHERE name = :name AND state = {CLOSED} RETURNING failures"
)
OPEN_BREAKER = (
    "UPDATE perdure_breakers SET state = {OPEN}, opened_at = :now, retry_at = :retry_at "
    "WHERE name = :name"
)
CLAIM_PROBE = (
    "UPDATE perdure_breakers SET state = {HALF_OPEN}, probe_holder = :holder, "
    "probe_expires_at = :expires, updated_at = :now WHERE name = :name "
    "AND ((state = {OPEN} AND retry_at <= :now) OR (state = {HALF_OPEN} "
    "AND (probe_expires_at <= :now OR probe_holder = :holder))) RETURNING 1"
)
CLOSE_BREAKER = (
    "UPDATE perdure_breakers SET state = {CLOSED}, failures = 0, window_start = NULL, "
    "retry_at = NULL, probe_holder = NULL, probe_expires_at = NULL, updated_at = :now "
    "WHERE name = :name AND state <> {CLOSED} RETURNING 1"
)
# SKIP LOCKED (PostgreSQL): a parked row locked by someone else now is being claimed (it
# is due) or sent a message; waiting for it while holding the breaker's row could
# deadlock with a batch that parks another workflow. A skipped row still wakes by its
# own wake_at, and re-checks the breaker then.
WAKE_PARKED = (
    "UPDATE perdure_workflows SET wake_at = :now WHERE id IN (SELECT id "
    "FROM perdure_workflows WHERE wait_topic = :topic AND owner IS NULL "
    "AND status = {RUNNING} AND wake_at > :now{skip_locked})"
)
REOPEN_BREAKER = (
    "UPDATE perdure_breakers SET state = {OPEN}, opened_at = :now, retry_at = :retry_at, "
    "probe_holder = NULL, probe_expires_at = NULL, last_error = :error, updated_at = :now "
    "WHERE name = :name AND state = {HALF_OPEN} AND probe_holder = :holder RETURNING 1"
)

# -- operating: resume, fork, the actions log, inspection ---------------------------------------

# Locks the row on PostgreSQL until commit: a concurrent resume (or a late completion)
# waits, then finds the workflow no longer resumable.
READ_FOR_RESUME = f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE id = :id{{for_update}}"
# Back to PENDING and unowned, with a new epoch: any writer still holding an older lease
# is fenced out, and executors claim it as they claim any new workflow.
RESUME_WORKFLOW = (
    "UPDATE perdure_workflows SET status = {PENDING}, output = NULL, error = NULL, "
    "finished_at = NULL, owner = NULL, lease_expires_at = NULL, epoch = epoch + 1, "
    "note = NULL, wake_at = NULL, wait_topic = NULL, cancel_requested_at = NULL, "
    "deadline_at = NULL, resumes = resumes + 1, updated_at = :now "
    f"WHERE id = :id AND (status IN {{RESUMABLE}}) IS TRUE RETURNING {WF_COLUMNS}"
)
DROP_UNDONE_STEPS = (
    "DELETE FROM perdure_steps WHERE workflow_id = :id AND status IN {UNDONE} "
    "RETURNING position, name, status, attempts"
)
# Epoch 1, not 0: a claim that finds epoch 1 afterwards knows a workflow never owned
# before has no steps and skips reading them; a fork has steps from the start.
FORK_WORKFLOW = (
    "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, app_version, "
    "epoch, created_at, updated_at, forked_from, forked_steps, root_id) VALUES (:id, :name, "
    "{PENDING}, :inputs, :serializer, :version, 1, :now, :now, :source, :steps, :id) "
    f"ON CONFLICT (id) DO NOTHING RETURNING {WF_COLUMNS}"
)
COPY_STEPS = (
    "INSERT INTO perdure_steps (workflow_id, position, name, status, output, error, "
    "attempts, next_attempt_at, updated_at, started_at) SELECT :id{text}, position, name, "
    "status, output, error, attempts, next_attempt_at, updated_at, started_at "
    "FROM perdure_steps WHERE workflow_id = :source ORDER BY {step_order} LIMIT :steps"
)
ACTION_COLUMNS = "seq, at, actor, action, workflow_id, target_id, details"
LOG_ACTION = (
    "INSERT INTO perdure_operator_actions (at, actor, action, workflow_id, target_id, "
    "details) VALUES (:now, :actor, :action, :id, :target, :details) RETURNING seq"
)
LIST_ACTIONS = (
    f"SELECT {ACTION_COLUMNS} FROM perdure_operator_actions WHERE seq > :after "
    "ORDER BY seq LIMIT :limit"
)
LIST_WORKFLOW_ACTIONS = (
    f"SELECT {ACTION_COLUMNS} FROM perdure_operator_actions WHERE workflow_id = :id "
    "AND seq > :after ORDER BY seq LIMIT :limit"
)
LIST_EVENTS = (
    "SELECT key, value, updated_at FROM perdure_events WHERE workflow_id = :id ORDER BY key"
)
MESSAGE_COLUMNS = "seq, topic, payload, idempotency_key, created_at, consumed_at"
LIST_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS} FROM perdure_messages WHERE workflow_id = :id "
    "ORDER BY seq LIMIT :limit"
)
LIST_PENDING_MESSAGES = (
    f"SELECT {MESSAGE_COLUMNS} FROM perdure_messages WHERE workflow_id = :id "
    "AND consumed_at IS NULL ORDER BY seq LIMIT :limit"
)
LIST_CHILDREN = (
    f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE parent_id = :id "
    "ORDER BY created_at, id LIMIT :limit"
)
FORCE_OPEN_BREAKER = (
    "UPDATE perdure_breakers SET state = {OPEN}, opened_at = :now, retry_at = :retry_at, "
    "probe_holder = NULL, probe_expires_at = NULL, last_error = :error, updated_at = :now "
    "WHERE name = :name"
)
