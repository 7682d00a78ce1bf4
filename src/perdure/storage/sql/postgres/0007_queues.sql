-- perdure schema version 7: queues (flow control). Depends on versions 1-3 only: it adds
-- a table, nullable columns and indexes, and rebuilds the claim index of version 3.

-- One row per queue: the limits every worker obeys at each claim (NULL: no limit).
-- declared holds the limits the code last declared (JSON): a declaration that differs
-- from it replaces the limits; app.update_queue changes them in between.
CREATE TABLE perdure_queues (
    name               TEXT PRIMARY KEY,
    concurrency        INTEGER,
    worker_concurrency INTEGER,
    key_concurrency    INTEGER,
    rate_limit         INTEGER,              -- starts per rate_period seconds
    rate_period        DOUBLE PRECISION,
    declared           TEXT NOT NULL,
    updated_at         DOUBLE PRECISION NOT NULL
);

-- A queued workflow: its queue, key and priority (lower first). dedup_key and
-- debounce_key (JSON, built by perdure) are unique among active, resp. not yet started,
-- workflows. dequeued_at is when a queue first started it (the rate counts those).
ALTER TABLE perdure_workflows ADD COLUMN queue TEXT;
ALTER TABLE perdure_workflows ADD COLUMN queue_key TEXT;
ALTER TABLE perdure_workflows ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE perdure_workflows ADD COLUMN dedup_key TEXT;
ALTER TABLE perdure_workflows ADD COLUMN debounce_key TEXT;
ALTER TABLE perdure_workflows ADD COLUMN dequeued_at DOUBLE PRECISION;

-- The claim of workflows outside queues never sees a queued one: its index leaves them out
-- (a backlog of queued workflows costs that claim nothing).
DROP INDEX perdure_workflows_claimable;
CREATE INDEX perdure_workflows_claimable ON perdure_workflows (created_at)
    WHERE status IN ('PENDING', 'RUNNING') AND owner IS NULL AND wake_at IS NULL
    AND queue IS NULL;
-- A queue's claim: those waiting, in the order they start; those running (counted under
-- the queue's lock, per key and per worker); the starts within the rate's window.
CREATE INDEX perdure_workflows_queued ON perdure_workflows (queue, priority, created_at)
    WHERE queue IS NOT NULL AND owner IS NULL AND wake_at IS NULL
    AND status IN ('PENDING', 'RUNNING');
CREATE INDEX perdure_workflows_queue_owned ON perdure_workflows (queue, queue_key)
    WHERE queue IS NOT NULL AND owner IS NOT NULL;
CREATE INDEX perdure_workflows_queue_starts ON perdure_workflows (queue, dequeued_at)
    WHERE dequeued_at IS NOT NULL;
-- When each key last started one (the round robin between keys).
CREATE INDEX perdure_workflows_queue_served ON perdure_workflows (queue, queue_key, dequeued_at)
    WHERE dequeued_at IS NOT NULL;
CREATE UNIQUE INDEX perdure_workflows_dedup ON perdure_workflows (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('PENDING', 'RUNNING');
CREATE UNIQUE INDEX perdure_workflows_debounce ON perdure_workflows (debounce_key)
    WHERE debounce_key IS NOT NULL AND status = 'PENDING';
-- Queued workflows asked to cancel before they started: ended at once by a worker.
CREATE INDEX perdure_workflows_queue_cancelled ON perdure_workflows (created_at)
    WHERE status = 'PENDING' AND cancel_requested_at IS NOT NULL AND queue IS NOT NULL;
