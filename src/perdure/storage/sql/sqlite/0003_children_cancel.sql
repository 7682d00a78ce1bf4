-- perdure schema version 3 (SQLite): child workflows, cancellation, deadlines,
-- continue_as_new.

-- The workflow that started this one as its child: its outcome is delivered to the parent
-- as a message, and cancelling the parent cancels it.
ALTER TABLE perdure_workflows ADD COLUMN parent_id TEXT;
-- Set by app.cancel (on the workflow and its active descendants): the workflow is told at
-- its next step or wait.
ALTER TABLE perdure_workflows ADD COLUMN cancel_requested_at REAL;
-- app.start(..., timeout=): when the workflow must have finished (measured from start).
ALTER TABLE perdure_workflows ADD COLUMN deadline_at REAL;
-- How many times the workflow continued as new (its history restarts each time).
ALTER TABLE perdure_workflows ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
-- Cancelling walks a workflow's children.
CREATE INDEX perdure_workflows_parent ON perdure_workflows (parent_id)
    WHERE parent_id IS NOT NULL;
-- Executors look up the cancel requests of the workflows they own.
CREATE INDEX perdure_workflows_cancel ON perdure_workflows (owner)
    WHERE cancel_requested_at IS NOT NULL AND owner IS NOT NULL;
