-- The oldest code that may run on this database, as the number of the newest migration that code
-- knows. Code that finds the database at a version it does not know (written by a newer
-- version, then rolled back) starts only if this row says it may; else it refuses, rather than
-- misread what the newer version wrote (a call it recorded differently could be dialed again).
-- A migration that older code would misread raises it to its own number; one that only adds
-- what older code never reads leaves it.
CREATE TABLE schema_compat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    oldest_code INTEGER NOT NULL
);

-- This migration only adds the table: code that knows 14 migrations may still run.
INSERT INTO schema_compat (id, oldest_code) VALUES (1, 14);
