-- perdure schema version 2 (SQLite): durable timers, suspension, messages and events.

-- A suspended workflow stays active with no owner: no executor claims it before wake_at.
-- wait_topic is the message topic a suspended recv waits on ('' is the default topic),
-- NULL for a sleep: a message on that topic wakes it at once.
ALTER TABLE perdure_workflows ADD COLUMN wake_at REAL;
ALTER TABLE perdure_workflows ADD COLUMN wait_topic TEXT;
-- Finding the earliest wake time is one index lookup.
CREATE INDEX perdure_workflows_wake ON perdure_workflows (wake_at)
    WHERE wake_at IS NOT NULL;

-- seq (the rowid) orders the messages of a workflow. A consumed message is kept, marked,
-- so that its idempotency key still makes a repeated send a no-op.
CREATE TABLE perdure_messages (
    seq              INTEGER PRIMARY KEY,
    workflow_id      TEXT NOT NULL REFERENCES perdure_workflows (id) ON DELETE CASCADE,
    topic            TEXT NOT NULL,
    payload          TEXT NOT NULL,
    idempotency_key  TEXT,
    created_at       REAL NOT NULL,
    consumed_at      REAL,
    UNIQUE (workflow_id, idempotency_key)
);
CREATE INDEX perdure_messages_pending ON perdure_messages (workflow_id, topic, seq)
    WHERE consumed_at IS NULL;

CREATE TABLE perdure_events (
    workflow_id      TEXT NOT NULL REFERENCES perdure_workflows (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    value            TEXT NOT NULL,
    updated_at       REAL NOT NULL,
    PRIMARY KEY (workflow_id, key)
);
