-- perdure schema version 15: every workflow names the top-level workflow of its family
-- (issue 16, the road past one server): a top-level workflow its own ID, a child its
-- parent's root_id. A distributed PostgreSQL (Citus) would distribute the workflow
-- tables by it, so that a family (a parent, its children, their steps, messages and
-- outcomes) lives on one shard and a child's outcome is never a cross-shard commit
-- (docs/scaling.md). A nullable column without a default: adding it rewrites no row.
-- Rows written before this version keep NULL (docs/scaling.md says how to fill them
-- before distributing); a child of such a parent gets the parent's ID.
ALTER TABLE perdure_workflows ADD COLUMN root_id TEXT;
