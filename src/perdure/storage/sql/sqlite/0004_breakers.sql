-- perdure schema version 4 (SQLite): circuit breakers shared by every executor.
-- Depends only on version 2: it adds a table and an index, and alters nothing.

-- One row per breaker that ever counted a failure (a breaker without a row is CLOSED).
-- A step behind an OPEN breaker parks its workflow (suspended with wait_topic
-- 'perdure.breaker:<name>') until retry_at; then one workflow, the probe_holder, runs a
-- probe attempt (HALF_OPEN) until it succeeds (CLOSED, every parked workflow woken),
-- fails (OPEN again) or its probe_expires_at passes (another workflow may probe).
CREATE TABLE perdure_breakers (
    name             TEXT PRIMARY KEY,
    state            TEXT NOT NULL,           -- CLOSED OPEN HALF_OPEN
    failures         INTEGER NOT NULL DEFAULT 0,  -- counted in the window that began at window_start
    window_start     REAL,
    opened_at        REAL,                    -- when it last opened
    retry_at         REAL,                    -- end of the cool-down while OPEN
    probe_holder     TEXT,                    -- "<workflow id>#<position>" running the probe
    probe_expires_at REAL,
    last_error       TEXT,                    -- the last failure it counted
    updated_at       REAL NOT NULL
);

-- Waking every workflow parked on a breaker (or waiting on any topic) is an index range,
-- not a scan: only suspended workflows have a wait_topic.
CREATE INDEX perdure_workflows_wait_topic ON perdure_workflows (wait_topic)
    WHERE wait_topic IS NOT NULL;
