-- One-time work that needs the code (not SQL alone) after an upgrade: each migration that asks
-- for one adds its name; the service does it at its next start, before the engine runs, and
-- deletes the row in the same transaction.
CREATE TABLE chores (name TEXT PRIMARY KEY) WITHOUT ROWID;

-- Numbers stored before strict E.164 was written canonically (a trunk 0 kept after the country
-- code, +44 0 20...): the contacts still to be dialed take the canonical spelling, and each
-- listed number is listed under it too, so the do-not-call list, duplicates and caps see one
-- person under one spelling. Older code reads these rows as before: oldest_code is unchanged.
INSERT INTO chores (name) VALUES ('canonical_phones');
