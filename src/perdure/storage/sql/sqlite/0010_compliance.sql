-- perdure schema version 10 (SQLite): compliance (issue 14): the data subjects a
-- workflow holds data of (erasure), a maintenance lease (retention runs on one worker at a
-- time), and an index that finds finished root workflows by age. Depends only on version 3.

-- The data subjects whose data a workflow holds, tagged at its start
-- (app.options(subjects=[...])). erased_at is set when app.erase(subject=...) replaced its
-- stored payloads with a tombstone. Its children and forks are found through parent_id and
-- forked_from when erasing: they are not tagged again.
CREATE TABLE perdure_workflow_subjects (
    subject          TEXT NOT NULL,
    workflow_id      TEXT NOT NULL REFERENCES perdure_workflows (id) ON DELETE CASCADE,
    erased_at        REAL,
    PRIMARY KEY (subject, workflow_id)
);
CREATE INDEX perdure_workflow_subjects_workflow ON perdure_workflow_subjects (workflow_id);

-- One row per periodic job that must run on one worker at a time (retention): the worker
-- holding it until expires_at; another takes it over once it expired.
CREATE TABLE perdure_maintenance_leases (
    name             TEXT PRIMARY KEY,
    holder           TEXT NOT NULL,
    expires_at       REAL NOT NULL
);

-- Retention deletes whole finished trees, oldest first: an index range over finished
-- root workflows (children go with their root).
CREATE INDEX perdure_workflows_finished_roots ON perdure_workflows (finished_at)
    WHERE finished_at IS NOT NULL AND parent_id IS NULL;
