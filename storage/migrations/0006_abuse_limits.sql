-- The client's own id of a contact (see 0002): an integer id is compared as the digits it was
-- sent with (`->` keeps them), so ids beyond 64 bits still match; an empty text id is no id
-- (the same rule as api.compat.external_id).
DROP VIEW contact_external_ids;
CREATE VIEW contact_external_ids AS
SELECT id, job_id, CASE
    WHEN json_type(contact_data, '$.external_id') = 'integer'
    THEN contact_data -> '$.external_id'
    WHEN json_type(contact_data, '$.external_id') = 'text'
         AND json_extract(contact_data, '$.external_id') <> ''
    THEN json_extract(contact_data, '$.external_id')
    WHEN json_type(contact_data, '$.contact_id') = 'integer'
    THEN contact_data -> '$.contact_id'
    WHEN json_type(contact_data, '$.contact_id') = 'text'
         AND json_extract(contact_data, '$.contact_id') <> ''
    THEN json_extract(contact_data, '$.contact_id')
END AS external_id
FROM contacts;

-- What each job has been charged, so that the part of its estimate it has not spent yet can be
-- held back from its organization's credits while it runs (credit reservations).
ALTER TABLE jobs ADD COLUMN spent_usd REAL NOT NULL DEFAULT 0;
UPDATE jobs SET spent_usd = coalesce(
    (SELECT sum(a.charged_usd) FROM attempts a WHERE a.job_id = jobs.id), 0);

-- Idempotent creates: the first answer to a create that carried an Idempotency-Key, kept for
-- a day, replayed to a retry with the same body (fingerprint) from the same organization.
CREATE TABLE idempotency_keys (
    organization_id TEXT NOT NULL,
    key             TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,               -- sha256 of the request's content
    job_id          TEXT NOT NULL,
    response        TEXT NOT NULL,               -- the 201 body, JSON
    created_at      REAL NOT NULL,
    PRIMARY KEY (organization_id, key)
) WITHOUT ROWID;
