-- perdure schema version 8 (SQLite): schedules (cron), each tick run exactly once.
-- Depends only on version 1: it adds a table, and alters nothing.

-- One row per schedule, declared in code (source 'code': every executor that launches
-- writes its definition) or at run time (source 'api'). last_tick is the newest tick
-- handled (run or skipped under the catch-up policy), or when the schedule was created
-- or resumed; next_tick the first tick after it (NULL: an executor computes it). Every
-- change increments revision, and a firing is conditioned on the revision it read, so
-- that of executors firing the same tick at once exactly one advances the schedule; the
-- same transaction starts the tick's workflow under a deterministic ID.
CREATE TABLE perdure_schedules (
    name             TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    cron             TEXT NOT NULL,
    tz               TEXT NOT NULL,
    catch_up         TEXT NOT NULL,           -- skip latest all
    grace            REAL NOT NULL,
    source           TEXT NOT NULL,           -- code api
    paused           INTEGER NOT NULL DEFAULT 0,  -- 1 while paused
    last_tick        REAL NOT NULL,
    next_tick        REAL,
    last_workflow_id TEXT,
    revision         INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL
);
