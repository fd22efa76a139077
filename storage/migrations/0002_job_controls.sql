-- Job controls: how many operator retry rounds a job has had (the compat routes' retry_count).
ALTER TABLE jobs ADD COLUMN retry_rounds INTEGER NOT NULL DEFAULT 0;

-- The client's own id of a contact, as the compatibility routes show and filter it: its
-- `external_id` field, else its `contact_id`, when that is a non-empty string or an integer
-- (the same rule as api.compat.external_id).
CREATE VIEW contact_external_ids AS
SELECT id, job_id, CASE
    WHEN json_type(contact_data, '$.external_id') IN ('text', 'integer')
         AND json_extract(contact_data, '$.external_id') <> ''
    THEN CAST(json_extract(contact_data, '$.external_id') AS TEXT)
    WHEN json_type(contact_data, '$.contact_id') IN ('text', 'integer')
    THEN CAST(json_extract(contact_data, '$.contact_id') AS TEXT)
END AS external_id
FROM contacts;
