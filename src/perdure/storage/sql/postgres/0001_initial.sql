-- perdure schema version 1 (PostgreSQL): the SQLite schema, translated.
-- Times are seconds since the epoch (DOUBLE PRECISION), set by the app's clock.
-- Runs with search_path set to the store's schema, so every object lands there.

CREATE TABLE perdure_workflows (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL,           -- PENDING RUNNING SUCCEEDED FAILED CANCELLED
    inputs           TEXT NOT NULL,
    output           TEXT,
    error            TEXT,
    serializer       TEXT NOT NULL,
    app_version      TEXT NOT NULL,
    owner            TEXT,                    -- executor holding the lease, NULL if none
    epoch            BIGINT NOT NULL DEFAULT 0,  -- fencing token, +1 at every claim
    lease_expires_at DOUBLE PRECISION,
    note             TEXT,                    -- why an active workflow is not progressing
    recoveries       INTEGER NOT NULL DEFAULT 0,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    finished_at      DOUBLE PRECISION
);

-- Listing by status, by name and by time stays an index range scan at millions of rows.
CREATE INDEX perdure_workflows_created ON perdure_workflows (created_at);
CREATE INDEX perdure_workflows_status_created ON perdure_workflows (status, created_at);
CREATE INDEX perdure_workflows_name_created ON perdure_workflows (name, created_at);
-- Claiming and heartbeats touch only active workflows: keep their indexes small.
CREATE INDEX perdure_workflows_active ON perdure_workflows (created_at)
    WHERE status IN ('PENDING', 'RUNNING');
CREATE INDEX perdure_workflows_owner ON perdure_workflows (owner)
    WHERE owner IS NOT NULL;

-- seq gives the order in which steps were first recorded (SQLite's rowid). It is not
-- cached per session, so that steps recorded by two executors in turn stay in order.
CREATE TABLE perdure_steps (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY,
    workflow_id      TEXT NOT NULL REFERENCES perdure_workflows (id) ON DELETE CASCADE,
    position         TEXT NOT NULL,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL,           -- SUCCEEDED FAILED RETRYING
    output           TEXT,
    error            TEXT,
    attempts         INTEGER NOT NULL,
    next_attempt_at  DOUBLE PRECISION,
    updated_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow_id, position)
);

CREATE TABLE perdure_executors (
    id               TEXT PRIMARY KEY,
    host             TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    app_version      TEXT NOT NULL,
    started_at       DOUBLE PRECISION NOT NULL,
    heartbeat_at     DOUBLE PRECISION NOT NULL,
    lease_expires_at DOUBLE PRECISION NOT NULL,
    stopped_at       DOUBLE PRECISION
);
