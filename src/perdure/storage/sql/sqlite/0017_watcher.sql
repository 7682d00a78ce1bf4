-- perdure schema version 17: which process's executor waits for a workflow (issue 16).
-- On PostgreSQL a waiter in a process that has an executor marks the row with that
-- executor's ID, and the outcome pushes its `done` event only if another executor
-- records it. SQLite pushes nothing and never marks; the column is here because the
-- outcome's statement, shared by both stores, reads it (and keeps the schemas alike).
-- NULL by default: adding the column rewrites no row.
ALTER TABLE perdure_workflows ADD COLUMN watcher TEXT;
