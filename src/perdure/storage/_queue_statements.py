"""The statements of queues, shared by both stores (templates, rendered by ``Dialect.sql``).

Nothing here is built from user input: every value travels as a parameter.
"""

from __future__ import annotations

from ._queries import WF_COLUMNS

QUEUE_COLUMNS = "name, concurrency, worker_concurrency, key_concurrency, rate_limit, rate_period"

# A declaration in code replaces the stored limits only when it differs from the last
# declaration: a restart with the same code keeps what app.update_queue set since, a
# deploy that changes the code's limits applies them.
DECLARE_QUEUE = (
    "INSERT INTO perdure_queues (name, concurrency, worker_concurrency, key_concurrency, "
    "rate_limit, rate_period, declared, updated_at) VALUES (:name, :concurrency, "
    ":worker_concurrency, :key_concurrency, :rate_limit, :rate_period, :declared, :now) "
    "ON CONFLICT (name) DO UPDATE SET concurrency = excluded.concurrency, "
    "worker_concurrency = excluded.worker_concurrency, "
    "key_concurrency = excluded.key_concurrency, rate_limit = excluded.rate_limit, "
    "rate_period = excluded.rate_period, declared = excluded.declared, "
    "updated_at = excluded.updated_at WHERE perdure_queues.declared <> excluded.declared"
)
GET_QUEUE = f"SELECT {QUEUE_COLUMNS} FROM perdure_queues WHERE name = :name"
# Every claim of the queue takes this lock first (PostgreSQL; SQLite has one writer):
# claims of one queue run one after the other, each counting what the previous admitted.
LOCK_QUEUE = GET_QUEUE + "{for_update}"
LIST_QUEUES = f"SELECT {QUEUE_COLUMNS} FROM perdure_queues ORDER BY name"
UPDATE_QUEUE = (
    "UPDATE perdure_queues SET concurrency = :concurrency, "
    "worker_concurrency = :worker_concurrency, key_concurrency = :key_concurrency, "
    "rate_limit = :rate_limit, rate_period = :rate_period, updated_at = :now "
    "WHERE name = :name"
)

# Every queue's active workflows by where they stand (QueueDepth): running, waiting,
# delayed. One grouped read over the queued workflows (an operator's look, not a hot path).
QUEUE_DEPTHS = (
    "SELECT queue, "
    "COALESCE(sum(CASE WHEN owner IS NOT NULL AND lease_expires_at >= :now THEN 1 ELSE 0 END), 0), "
    "COALESCE(sum(CASE WHEN (owner IS NULL AND (wake_at IS NULL OR wake_at <= :now)) "
    "OR (owner IS NOT NULL AND lease_expires_at < :now) THEN 1 ELSE 0 END), 0), "
    "COALESCE(sum(CASE WHEN owner IS NULL AND wake_at > :now THEN 1 ELSE 0 END), 0) "
    "FROM perdure_workflows WHERE queue IS NOT NULL AND status IN {ACTIVE} GROUP BY queue"
)

# -- entering a queue --------------------------------------------------------------------

# Debounce: a start finds the workflow not started yet with the same name, queue and key,
# gives it the latest inputs and pushes its start back.
DEBOUNCE = (
    "UPDATE perdure_workflows SET inputs = :inputs, wake_at = :wake, "
    "deadline_at = :deadline, updated_at = :now "
    "WHERE debounce_key = :debounce AND status = {PENDING} AND owner IS NULL "
    f"RETURNING {WF_COLUMNS}"
)
# No conflict target: the ID, the deduplication key among active workflows and the
# debounce key among those not started are all unique; the caller finds which conflicted.
ENQUEUE = (
    "INSERT INTO perdure_workflows (id, name, status, inputs, serializer, app_version, "
    "epoch, created_at, updated_at, deadline_at, wake_at, queue, queue_key, priority, "
    "dedup_key, debounce_key, trace_context, root_id) VALUES (:id, :name, {PENDING}, "
    ":inputs, :serializer, :version, 0, :created, :created, :deadline, :wake, :queue, :key, "
    f":priority, :dedup, :debounce, :trace, :id) ON CONFLICT DO NOTHING RETURNING {WF_COLUMNS}"
)
DEDUPLICATED = (
    f"SELECT {WF_COLUMNS} FROM perdure_workflows WHERE dedup_key = :dedup AND status IN {{ACTIVE}}"
)

# -- claiming --------------------------------------------------------------------------------

# Waiting in the queue: unowned and not suspended, or owned by an executor whose lease
# expired (its slot is free again, and the workflow must run elsewhere).
_WAITING = (
    "queue = :queue AND status IN {ACTIVE} AND ((owner IS NULL AND wake_at IS NULL) "
    "OR (owner IS NOT NULL AND lease_expires_at < :now))"
)
# Running in the queue: owned, its lease alive.
_RUNNING = (
    "queue = :queue AND owner IS NOT NULL AND lease_expires_at >= :now AND status IN {ACTIVE}"
)
# Delayed or suspended workflows of the queue whose time came: waiting in the queue now
# (the claim's index holds those with no wake time).
QUEUE_WAKE_DUE = (
    "UPDATE perdure_workflows SET wake_at = NULL WHERE queue = :queue AND owner IS NULL "
    "AND wake_at <= :now AND status IN {ACTIVE}"
)
# (whether the queue has workflows waiting, whether it has delayed or suspended ones due):
# a read before the claim's locking transaction, so that an idle queue costs a worker's
# poll no write, and the wake-up of due ones only runs when there are some.
QUEUE_HAS_WORK = (
    "SELECT EXISTS (SELECT 1 FROM perdure_workflows WHERE queue = :queue "
    "AND owner IS NULL AND wake_at IS NULL AND status IN {ACTIVE}) "
    "OR EXISTS (SELECT 1 FROM perdure_workflows WHERE queue = :queue "
    "AND owner IS NOT NULL AND lease_expires_at < :now AND status IN {ACTIVE}), "
    "EXISTS (SELECT 1 FROM perdure_workflows WHERE queue = :queue AND owner IS NULL "
    "AND wake_at <= :now AND status IN {ACTIVE})"
)
# (running in the queue, of them on this executor, of them with this key).
QUEUE_RUNNING = (
    "SELECT count(*), COALESCE(sum(CASE WHEN owner = :me THEN 1 ELSE 0 END), 0), "
    "COALESCE(sum(CASE WHEN queue_key = :key THEN 1 ELSE 0 END), 0) "
    f"FROM perdure_workflows WHERE {_RUNNING}"
)
# Per key (None: the workflows without one): how many run, and of them on this executor.
QUEUE_RUNNING_BY_KEY = (
    "SELECT queue_key, count(*), COALESCE(sum(CASE WHEN owner = :me THEN 1 ELSE 0 END), 0) "
    f"FROM perdure_workflows WHERE {_RUNNING} GROUP BY queue_key"
)
QUEUE_STARTS = (
    "SELECT count(*) FROM perdure_workflows WHERE queue = :queue AND dequeued_at > :since"
)
# (first starts within the rate's window, the oldest of them): the window holds one start
# fewer once the oldest leaves it.
QUEUE_WINDOW = (
    "SELECT count(*), min(dequeued_at) FROM perdure_workflows "
    "WHERE queue = :queue AND dequeued_at > :since"
)
# Each waiting workflow's turn within its key (1 for each key's next), and when its key
# last started one (0: never). Ordering by (priority, turn, that time) takes the next of
# the key served longest ago first: round robin between keys at equal priority, across
# claims. turn + the key's running count bounds each key. (Workflows without a key are
# one key.)
_TURNS = (
    "SELECT id, queue_key, priority, created_at, dequeued_at, row_number() OVER "
    "(PARTITION BY queue_key ORDER BY priority, created_at, id) AS turn "
    f"FROM perdure_workflows WHERE {_WAITING}"
)
_SERVED = (
    "SELECT k.queue_key, (SELECT max(s.dequeued_at) FROM perdure_workflows s "
    "WHERE s.queue = :queue AND s.queue_key = k.queue_key AND s.dequeued_at IS NOT NULL) "
    "AS at FROM (SELECT DISTINCT queue_key FROM waiting WHERE queue_key IS NOT NULL) AS k"
)
_SERVED_UNKEYED = (
    "(SELECT max(dequeued_at) FROM perdure_workflows WHERE queue = :queue "
    "AND queue_key IS NULL AND dequeued_at IS NOT NULL)"
)
_ORDER = (
    "ORDER BY c.priority, c.turn, COALESCE(CASE WHEN c.queue_key IS NULL "
    f"THEN {_SERVED_UNKEYED} ELSE v.at END, 0), c.created_at, c.id"
)
QUEUE_CANDIDATES = (
    "WITH waiting AS (" + _TURNS + " AND app_version = :version AND name IN {names_set} "
    "AND (:fresh_ok = 1 OR dequeued_at IS NOT NULL)), "
    f"served AS ({_SERVED}), "
    f"running AS (SELECT queue_key, count(*) AS n FROM perdure_workflows WHERE {_RUNNING} "
    "AND queue_key IS NOT NULL GROUP BY queue_key) "
    "SELECT c.id, c.dequeued_at IS NULL, c.queue_key FROM waiting c "
    "LEFT JOIN running r ON r.queue_key = c.queue_key "
    "LEFT JOIN served v ON v.queue_key = c.queue_key "
    "WHERE c.queue_key IS NULL OR c.turn + COALESCE(r.n, 0) <= :key_limit "
    f"{_ORDER} LIMIT :limit"
)
# The chosen ones, checked again (a cancel or a debounce may have changed a row since).
QUEUE_ADMIT = (
    "UPDATE perdure_workflows SET owner = :me, epoch = epoch + 1, status = {RUNNING}, "
    "lease_expires_at = :lease, note = NULL, updated_at = :now, "
    "recoveries = recoveries + CASE WHEN owner IS NOT NULL THEN 1 ELSE 0 END, "
    "wake_at = NULL, wait_topic = NULL, held_code = NULL, held_detail = NULL, "
    "dequeued_at = COALESCE(dequeued_at, :now) "
    f"WHERE id IN {{ids_set}} AND {_WAITING} RETURNING {WF_COLUMNS}"
)
# Where a waiting workflow stands: 1 + how many start before it.
QUEUE_POSITION = (
    f"WITH waiting AS ({_TURNS}), served AS ({_SERVED}) "
    f"SELECT position FROM (SELECT c.id, row_number() OVER ({_ORDER}) AS position "
    "FROM waiting c LEFT JOIN served v ON v.queue_key = c.queue_key) AS p WHERE id = :id"
)

# -- cancelled before they started ----------------------------------------------------------

# Workflows of these queues asked to cancel before they ever started (the cancel woke
# nothing: they wait for their turn). An index holds exactly these.
CANCELLED_WAITING = (
    "SELECT id FROM perdure_workflows WHERE status = {PENDING} "
    "AND cancel_requested_at IS NOT NULL AND queue IN {names_set} AND owner IS NULL "
    "ORDER BY created_at LIMIT :limit"
)
# Ends one CANCELLED without running it (it never started: no step, no lease).
CANCEL_WAITING = (
    "UPDATE perdure_workflows SET status = :cancelled, error = :error, wake_at = NULL, "
    "note = NULL, finished_at = :now, updated_at = :now WHERE id = :id AND (status = {PENDING} "
    "AND cancel_requested_at IS NOT NULL AND owner IS NULL AND queue IS NOT NULL) IS TRUE "
    "RETURNING id"
)
