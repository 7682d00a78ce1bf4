-- perdure schema version 17: which process's executor waits for a workflow (issue 16).
-- A waiter in a process that has an executor marks the row with that executor's ID
-- instead of setting `watched`: the outcome then pushes its `done` event only if
-- another executor records it (the outcome's statement sets `watched` when the two
-- differ). A process that starts more workflows than it runs at once, and waits for
-- them all, then pushes nothing for those it runs itself once a slot frees. A second
-- process, or one without an executor, sets `watched` as before. NULL by default:
-- adding the column rewrites no row.
ALTER TABLE perdure_workflows ADD COLUMN watcher TEXT;
