-- perdure schema version 5 (PostgreSQL): operating workflows (issue 12): step start times,
-- resume and fork, the operator actions log, and listing pages keyed on (created_at, id).
-- Depends only on version 1.

-- When a step's first attempt began (NULL for records that are not timed, such as a
-- recorded value, and for steps recorded before version 5); updated_at is when it ended.
ALTER TABLE perdure_steps ADD COLUMN started_at DOUBLE PRECISION;
-- The workflow this one was forked from (app.fork, app.restart), and how many of its
-- recorded steps it took over.
ALTER TABLE perdure_workflows ADD COLUMN forked_from TEXT;
ALTER TABLE perdure_workflows ADD COLUMN forked_steps INTEGER;
-- How many times an operator resumed it (app.resume).
ALTER TABLE perdure_workflows ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;

-- Every operator action (resume, fork, restart, cancel, send), who and when: append-only
-- (perdure never updates or deletes a row); no foreign key, so that the log outlives the
-- workflows it names. details is JSON (for a resume: the outcome it replaced).
CREATE TABLE perdure_operator_actions (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at               DOUBLE PRECISION NOT NULL,
    actor            TEXT NOT NULL,
    action           TEXT NOT NULL,
    workflow_id      TEXT NOT NULL,
    target_id        TEXT,                    -- the new workflow of a fork or restart
    details          TEXT NOT NULL
);
CREATE INDEX perdure_operator_actions_workflow ON perdure_operator_actions (workflow_id, seq);
CREATE INDEX perdure_operator_actions_at ON perdure_operator_actions (at);

-- Listing pages are keyed on (created_at, id), newest or oldest first: the indexes carry
-- id, so that a page is an index range with no sort at any size.
DROP INDEX perdure_workflows_created;
DROP INDEX perdure_workflows_status_created;
DROP INDEX perdure_workflows_name_created;
DROP INDEX perdure_workflows_active;
CREATE INDEX perdure_workflows_created ON perdure_workflows (created_at, id);
CREATE INDEX perdure_workflows_status_created ON perdure_workflows (status, created_at, id);
CREATE INDEX perdure_workflows_name_created ON perdure_workflows (name, created_at, id);
CREATE INDEX perdure_workflows_active ON perdure_workflows (created_at, id)
    WHERE status IN ('PENDING', 'RUNNING');
-- A fork's origin lists its forks.
CREATE INDEX perdure_workflows_forked_from ON perdure_workflows (forked_from)
    WHERE forked_from IS NOT NULL;
