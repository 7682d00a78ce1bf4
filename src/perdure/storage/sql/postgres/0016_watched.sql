-- perdure schema version 16: whether a process other than the one running a workflow
-- waits for it (issue 16, the road past one server). Only then does its outcome push
-- its `done` event: PostgreSQL commits transactions that notify one at a time, server
-- wide, so a busy worker's commits push nothing that nobody listens for. A waiter marks
-- the row (Store.watch_workflows) before it waits; the outcome's statement reads the
-- mark under the row's lock, so that one of the two always sees the other. A constant
-- default: adding the column rewrites no row.
ALTER TABLE perdure_workflows ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
