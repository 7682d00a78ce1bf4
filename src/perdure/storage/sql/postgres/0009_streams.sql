-- perdure schema version 9 (PostgreSQL): streams (perdure.write_stream, app.read_stream).
-- Depends only on version 1.

-- The entries of each stream of a workflow, in order: seq is the entry's offset (0, 1,
-- 2 ... per workflow and key). A NULL value is the close marker, the stream's last
-- entry. writer says which write made it: "<position>" for a write from the workflow
-- (recorded at that position, so written once), "<position>#<attempt>" for one from
-- inside a step (a failed attempt's entries stay, and its retry writes again).
CREATE TABLE perdure_streams (
    workflow_id      TEXT NOT NULL REFERENCES perdure_workflows (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    value            TEXT,
    writer           TEXT NOT NULL,
    written_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (workflow_id, key, seq)
);
