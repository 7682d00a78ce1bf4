-- perdure schema version 14: listing workflows by queue and by a queue's key (issue 12),
-- as index ranges like the other filters. Depends only on version 7 (the queue columns).

-- A queue's workflows, newest or oldest first, and pages past a (created_at, id).
CREATE INDEX perdure_workflows_queue_created ON perdure_workflows (queue, created_at, id)
    WHERE queue IS NOT NULL;
-- A queue's workflows of one key (a tenant, a user): the same, one key at a time.
CREATE INDEX perdure_workflows_queue_key_created
    ON perdure_workflows (queue, queue_key, created_at, id)
    WHERE queue IS NOT NULL;
