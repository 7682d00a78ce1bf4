-- perdure schema version 6: held workflows (a replay that met a different step than the
-- one recorded). Depends only on version 1: it adds nullable columns and an index.

-- A held workflow stays active (RUNNING, unowned, its history and messages kept) with
-- held_code set to the fingerprint of the code that failed to replay it, held_detail to
-- what differed (JSON: position, recorded, actual, app_version, code, at) and wake_at to
-- when an executor with that same code may look again. An executor with other code
-- makes it due at once (Store.release_holds); a claim clears both columns.
ALTER TABLE perdure_workflows ADD COLUMN held_code TEXT;
ALTER TABLE perdure_workflows ADD COLUMN held_detail TEXT;

-- Finding the held workflows (to release them for other code, to count them) is an index
-- range: only held workflows have a held_code.
CREATE INDEX perdure_workflows_held ON perdure_workflows (app_version, held_code)
    WHERE held_code IS NOT NULL;
