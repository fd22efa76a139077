-- Outbound webhooks, lighter on the engine's path. 0009 wrote, in the engine's transaction, an
-- event row per event (a webhook-id, a sequence found by max() under a unique index, the
-- contact's fields as JSON) and a delivery row per event and endpoint: an attempt that finished
-- a contact cost four rows and their indexes. With one endpoint, 10,000 instant calls wrote 72%
-- more to the log (7.9 MB) and ran about 55% more SQLite instructions than without, and the job
-- took 1.2-1.6 times as long, all the same whether the endpoint answered or was dead.
--
-- Now the change's transaction writes one small row per change (webhook_changes): an attempt
-- that ended is one row whichever of its two events (contact.attempt_finished, contact.finished)
-- it makes. Still by triggers, still in the same transaction, so a crash loses no event. What
-- the events need besides is made later by the sender, outside the engine's transactions:
--   * an event's webhook-id is worked out from the change (8 random bytes) and the event id;
--   * its `sequence` is given when the sender first takes it or a later event of the
--     organization (webhook_sequences: numbered in event order, so the numbers are the ones
--     they would have had if given at the change);
--   * a delivery is a row (webhook_taken_deliveries) once the sender takes it; until then it is
--     pending by construction: an endpoint's events after its `taken_through` that it asked
--     for. So a dead endpoint, which takes four at a time, costs the engine nothing beyond
--     the change rows.
-- The views webhook_events, webhook_event_documents and webhook_deliveries show events and
-- deliveries with 0009's columns, taken or not. 0009's rows are carried over (webhook-ids and
-- sequences kept; a delivery's id is now `event id * 32 + endpoint slot`, which it has from
-- the event on, before it is taken).

-- The events each kind of change makes: (kind, k) is the k-th event of a change, event id
-- `change id * 2 + k`. `complete`: the change holds every field of the contact it reports;
-- otherwise the attempt that ended gives the rest (attempt rows do not change once ended).
CREATE TABLE webhook_event_kinds (
    kind     INTEGER NOT NULL,
    k        INTEGER NOT NULL,
    type     TEXT NOT NULL,
    complete INTEGER NOT NULL,
    PRIMARY KEY (kind, k)
) WITHOUT ROWID;
INSERT INTO webhook_event_kinds (kind, k, type, complete) VALUES
    (1, 0, 'job.started', 0),
    (2, 0, 'job.paused', 0),
    (3, 0, 'job.resumed', 0),
    (4, 0, 'job.completed', 0),
    (5, 0, 'job.cancelled', 0),
    (6, 0, 'job.failed', 0),
    (7, 0, 'contact.attempt_finished', 0),   -- an attempt ended (contact.finished not wanted)
    (8, 0, 'contact.attempt_finished', 0),   -- an attempt ended and the contact is final
    (8, 1, 'contact.finished', 0),
    (9, 0, 'contact.finished', 0),           -- as 8 when only contact.finished is wanted
    (10, 0, 'contact.finished', 1),          -- final without an attempt ending (a cancel)
    (11, 0, 'contact.attempt_finished', 1);  -- written by 0009 (its full snapshot kept)

-- One change that makes events, written in the change's transaction, only when an endpoint of
-- the organization takes at least one of its events.
CREATE TABLE webhook_changes (
    id              INTEGER PRIMARY KEY,
    organization_id TEXT NOT NULL,
    kind            INTEGER NOT NULL,              -- webhook_event_kinds
    created_at      REAL NOT NULL,
    token           BLOB,                          -- 8 random bytes of the webhook-ids
    sequence        INTEGER,                       -- of the first event; NULL until numbered
    data            TEXT,                          -- job events: the job document at the change
    -- Contact events: the contact's fields at the change (the others are the attempt's, or
    -- do not change). attempt_no: the contact's attempt count, the attempt that ended.
    contact_id      INTEGER,
    attempt_no      INTEGER,
    status          TEXT,
    error_code      TEXT,
    failure_reason  TEXT,
    next_retry_at   REAL,
    completed_at    REAL,
    call_duration   INTEGER,
    max_attempts    INTEGER,
    last_attempt_at REAL,                          -- complete kinds only
    room_name       TEXT,                          -- complete kinds only
    legacy_webhook_id TEXT                         -- events written by 0009 keep theirs
);

-- Per organization: the last sequence given, and the change up to which its changes are
-- numbered.
CREATE TABLE webhook_sequences (
    organization_id TEXT PRIMARY KEY,
    last_sequence   INTEGER NOT NULL,
    through_change  INTEGER NOT NULL
) WITHOUT ROWID;

-- A delivery the sender took (sent, or about to be): id `event id * 32 + endpoint slot`, the id
-- it had as a pending delivery before. pending (due at next_attempt_at), delivered, failed.
CREATE TABLE webhook_taken_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id),
    organization_id TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_attempt_at REAL,
    last_status     INTEGER,
    last_error      TEXT,
    delivered_at    REAL
);

-- An endpoint's slot (0-31, unique in its organization) numbers its deliveries; it has rows for
-- its events up to taken_through (an event id), and none after.
ALTER TABLE webhook_endpoints ADD COLUMN slot INTEGER CHECK (slot BETWEEN 0 AND 31);
ALTER TABLE webhook_endpoints ADD COLUMN taken_through INTEGER NOT NULL DEFAULT 0;

-- ---------------------------------------------------------------- what 0009 wrote

DROP TRIGGER webhook_contact_result;  -- 0010's, written for 0009's outbox: made again below
DROP TRIGGER webhook_job_status;
DROP TRIGGER webhook_attempt_finished;
DROP TRIGGER webhook_contact_finished;
DROP TRIGGER webhook_outbox_insert;
DROP VIEW webhook_outbox;
DROP VIEW webhook_event_documents;

UPDATE webhook_endpoints SET slot = s.n - 1
FROM (SELECT id, row_number() OVER (PARTITION BY organization_id ORDER BY created_at, id) AS n
      FROM webhook_endpoints) AS s
WHERE webhook_endpoints.id = s.id;
CREATE UNIQUE INDEX webhook_endpoints_slot ON webhook_endpoints (organization_id, slot);

-- Each 0009 event is a change of one event, with the same id (so event id = old id * 2), its
-- webhook-id, sequence and snapshot.
INSERT INTO webhook_changes (id, organization_id, kind, created_at, sequence, data, contact_id,
                             attempt_no, status, error_code, failure_reason, next_retry_at,
                             completed_at, call_duration, max_attempts, last_attempt_at,
                             room_name, legacy_webhook_id)
SELECT e.id, e.organization_id, CASE e.type
        WHEN 'job.started' THEN 1 WHEN 'job.paused' THEN 2 WHEN 'job.resumed' THEN 3
        WHEN 'job.completed' THEN 4 WHEN 'job.cancelled' THEN 5 WHEN 'job.failed' THEN 6
        WHEN 'contact.attempt_finished' THEN 11 ELSE 10 END,
    e.created_at, e.sequence, CASE WHEN e.contact_id IS NULL THEN e.data END, e.contact_id,
    CASE WHEN e.contact_id IS NOT NULL THEN coalesce(
        (SELECT attempt_no FROM attempts WHERE id = e.attempt_id), e.data ->> 2) END,
    e.data ->> 0, e.data ->> 1, e.data ->> 8, e.data ->> 5, e.data ->> 6, e.data ->> 9,
    e.data ->> 3, e.data ->> 4, e.data ->> 7, e.webhook_id
FROM webhook_events AS e;

INSERT INTO webhook_sequences (organization_id, last_sequence, through_change)
SELECT organization_id, max(sequence), (SELECT max(id) FROM webhook_changes)
FROM webhook_changes GROUP BY organization_id;

INSERT INTO webhook_taken_deliveries (id, event_id, endpoint_id, organization_id, status,
                                      attempts, next_attempt_at, last_attempt_at, last_status,
                                      last_error, delivered_at)
SELECT d.event_id * 64 + p.slot, d.event_id * 2, d.endpoint_id, d.organization_id, d.status,
       d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status, d.last_error,
       d.delivered_at
FROM webhook_deliveries AS d JOIN webhook_endpoints AS p ON p.id = d.endpoint_id;

-- 0009 wrote every delivery: each endpoint has its rows up to here.
UPDATE webhook_endpoints
SET taken_through = coalesce((SELECT max(id) FROM webhook_changes), 0) * 2 + 1;

DROP TABLE webhook_deliveries;
DROP TABLE webhook_events;

CREATE INDEX webhook_taken_due ON webhook_taken_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_taken_org ON webhook_taken_deliveries (organization_id, id);

-- ---------------------------------------------------------------- views

-- The views the store reads, looked up by (change_id, k), a row id and a key.
--
-- Every event. webhook-id: `msg_` + the change's random bytes + the event id in hex (0009's
-- events keep theirs); the same on every delivery and retry of the event.
CREATE VIEW webhook_change_events AS
SELECT c.id * 2 + k.k AS id, c.id AS change_id, k.k, c.organization_id,
       coalesce(c.legacy_webhook_id,
                'msg_' || lower(hex(c.token)) || printf('%x', c.id * 2 + k.k)) AS webhook_id,
       k.type, c.sequence + k.k AS sequence, c.created_at, c.contact_id, c.attempt_no
FROM webhook_changes AS c JOIN webhook_event_kinds AS k ON k.kind = c.kind;

-- The event's `data` as it is sent: a job event's document as written; a contact event's the
-- contact as the detail route shows it (contact_documents) with the fields it had at the change,
-- plus the attempt for contact.attempt_finished.
CREATE VIEW webhook_change_documents AS
SELECT c.id * 2 + k.k AS id, c.id AS change_id, k.k,
    CASE WHEN c.contact_id IS NULL THEN c.data ELSE (
    SELECT json_set(
        CASE WHEN k.type = 'contact.attempt_finished' THEN json_set(d.doc, '$.attempt',
            CASE WHEN a.id IS NOT NULL THEN json_object(
                'attemptNumber', a.attempt_no,
                'startedAt', strftime('%Y-%m-%dT%H:%M:%SZ', a.started_at, 'unixepoch'),
                'answeredAt', strftime('%Y-%m-%dT%H:%M:%SZ', a.answered_at, 'unixepoch'),
                'endedAt', strftime('%Y-%m-%dT%H:%M:%SZ', a.ended_at, 'unixepoch'),
                'outcome', a.outcome, 'sipCode', a.sip_code, 'reason', a.reason,
                'roomName', a.room_name, 'durationSeconds', a.duration) END) ELSE d.doc END,
        '$.status', c.status, '$.errorCode', c.error_code,
        '$.attemptCount', c.attempt_no, '$.maxAttempts', c.max_attempts,
        '$.lastAttemptAt', strftime('%Y-%m-%dT%H:%M:%SZ',
            CASE WHEN k.complete THEN c.last_attempt_at ELSE a.started_at END, 'unixepoch'),
        '$.nextRetryAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.next_retry_at, 'unixepoch'),
        '$.completedAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.completed_at, 'unixepoch'),
        '$.roomName', CASE WHEN k.complete THEN c.room_name ELSE a.room_name END,
        '$.failureReason', c.failure_reason, '$.callDuration', c.call_duration)
    FROM contact_documents AS d
    LEFT JOIN attempts AS a ON a.contact_id = c.contact_id AND a.attempt_no = c.attempt_no
    WHERE d.id = c.contact_id) END AS data
FROM webhook_changes AS c JOIN webhook_event_kinds AS k ON k.kind = c.kind;

-- The deliveries not taken yet: for each endpoint, the events of its organization after its
-- taken_through, of the types it asked for. Pending since the event, never sent. (CROSS JOIN
-- and the unary +: each endpoint, then the changes from its taken_through on, whatever the query
-- around it; never an index built over every change.)
CREATE VIEW webhook_untaken_deliveries AS
SELECT (c.id * 2 + k.k) * 32 + p.slot AS id, c.id * 2 + k.k AS event_id, p.id AS endpoint_id,
       p.organization_id, c.created_at, c.id AS change_id, k.k
FROM webhook_endpoints AS p
CROSS JOIN webhook_changes AS c
    ON c.id >= p.taken_through / 2 AND +c.organization_id = p.organization_id
JOIN webhook_event_kinds AS k ON k.kind = c.kind
WHERE c.id * 2 + k.k > p.taken_through
  AND (p.events IS NULL OR instr(p.events, '"' || k.type || '"') > 0);

-- The views to read the outbox by (0009's names and columns), for people and audits. An event
-- id is computed, so no index serves a join on it: `LIMIT -1` keeps SQLite from flattening these
-- into such a join, and it reads each once and joins through an automatic index instead.
--
-- Every event.
CREATE VIEW webhook_events AS
SELECT id, organization_id, webhook_id, type, sequence, created_at, contact_id, attempt_no,
       change_id, k
FROM webhook_change_events LIMIT -1;

-- Every event's `data`.
CREATE VIEW webhook_event_documents AS
SELECT id, data, change_id, k FROM webhook_change_documents LIMIT -1;

-- Every delivery, taken or not.
CREATE VIEW webhook_deliveries AS
SELECT * FROM (
    SELECT id, event_id, endpoint_id, organization_id, status, attempts, next_attempt_at,
           last_attempt_at, last_status, last_error, delivered_at
    FROM webhook_taken_deliveries
    UNION ALL
    SELECT id, event_id, endpoint_id, organization_id, 'pending', 0, created_at, NULL, NULL,
           NULL, NULL
    FROM webhook_untaken_deliveries)
LIMIT -1;

-- ---------------------------------------------------------------- the event sources

-- Each first checks that there is an endpoint at all (one probe, so an installation without
-- endpoints pays nothing more), then that the organization has one taking the event's type.
-- Endpoints' `events` is a JSON array of event types (or NULL: all), so a type is taken when
-- its quoted name is in it.

-- job.started / paused / resumed / completed / cancelled / failed, on the status change.
CREATE TRIGGER webhook_job_status AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status
  AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE organization_id = NEW.organization_id)
BEGIN
    INSERT INTO webhook_changes (organization_id, kind, created_at, token, data)
    SELECT NEW.organization_id, k.kind, NEW.updated_at, randomblob(8),
           (SELECT doc FROM job_documents WHERE id = NEW.id)
    FROM webhook_event_kinds AS k
    WHERE k.kind <= 6 AND k.type = CASE
            WHEN NEW.status IN ('completed', 'cancelled', 'failed') THEN 'job.' || NEW.status
            WHEN NEW.status = 'paused' THEN 'job.paused'
            WHEN OLD.status = 'paused' THEN 'job.resumed'
            WHEN NEW.status = 'running' THEN 'job.started'
          END
      AND EXISTS (SELECT 1 FROM webhook_endpoints AS e
                  WHERE e.organization_id = NEW.organization_id
                    AND (e.events IS NULL OR instr(e.events, '"' || k.type || '"') > 0));
END;

-- An attempt ended (the contact leaves `dialing` with its attempt counted; a dial that never
-- reached the provider gives its attempt back, and is no attempt): contact.attempt_finished,
-- and contact.finished when the contact is now final. One row from the contact's new fields,
-- not a read of it.
CREATE TRIGGER webhook_attempt_finished AFTER UPDATE OF status ON contacts
WHEN OLD.status = 'dialing' AND NEW.status <> 'dialing' AND NEW.attempt_count = OLD.attempt_count
  AND EXISTS (SELECT 1 FROM webhook_endpoints)
BEGIN
    INSERT INTO webhook_changes (organization_id, kind, created_at, token, contact_id,
                                 attempt_no, status, error_code, failure_reason, next_retry_at,
                                 completed_at, call_duration, max_attempts)
    SELECT t.organization_id,
           CASE WHEN t.attempts AND t.finishes THEN 8 WHEN t.attempts THEN 7 ELSE 9 END,
           NEW.updated_at, randomblob(8), NEW.id, NEW.attempt_count, NEW.status,
           NEW.error_code, NEW.failure_reason, NEW.next_retry_at, NEW.completed_at,
           NEW.call_duration, NEW.max_attempts
    FROM (SELECT j.organization_id,
              EXISTS (SELECT 1 FROM webhook_endpoints AS e
                      WHERE e.organization_id = j.organization_id
                        AND (e.events IS NULL
                             OR instr(e.events, '"contact.attempt_finished"') > 0)) AS attempts,
              NEW.status NOT IN ('pending', 'queued') AND EXISTS (
                  SELECT 1 FROM webhook_endpoints AS e
                  WHERE e.organization_id = j.organization_id
                    AND (e.events IS NULL OR instr(e.events, '"contact.finished"') > 0))
                  AS finishes
          FROM jobs AS j WHERE j.id = NEW.job_id) AS t
    WHERE t.attempts OR t.finishes;
END;

-- contact.finished for a contact that reached a final status without an attempt ending: the
-- pending or queued contacts of a cancelled job, a dial given back for a cancelled job. (Rare:
-- the whole contact is kept.)
CREATE TRIGGER webhook_contact_finished AFTER UPDATE OF status ON contacts
WHEN OLD.status <> NEW.status
  AND NEW.status NOT IN ('pending', 'queued', 'dialing')
  AND NOT (OLD.status = 'dialing' AND NEW.attempt_count = OLD.attempt_count)
  AND EXISTS (SELECT 1 FROM webhook_endpoints)
BEGIN
    INSERT INTO webhook_changes (organization_id, kind, created_at, token, contact_id,
                                 attempt_no, status, error_code, failure_reason, next_retry_at,
                                 completed_at, call_duration, max_attempts, last_attempt_at,
                                 room_name)
    SELECT j.organization_id, 10, NEW.updated_at, randomblob(8), NEW.id, NEW.attempt_count,
           NEW.status, NEW.error_code, NEW.failure_reason, NEW.next_retry_at,
           NEW.completed_at, NEW.call_duration, NEW.max_attempts, NEW.last_attempt_at,
           NEW.room_name
    FROM jobs AS j
    WHERE j.id = NEW.job_id AND EXISTS (
        SELECT 1 FROM webhook_endpoints AS e
        WHERE e.organization_id = j.organization_id
          AND (e.events IS NULL OR instr(e.events, '"contact.finished"') > 0));
END;

-- contact.result: an agent's result, once per result posted, with the result itself as its data
-- (kind 12: written here, after 0010 made results).
INSERT INTO webhook_event_kinds (kind, k, type, complete) VALUES (12, 0, 'contact.result', 0);

CREATE TRIGGER webhook_contact_result AFTER INSERT ON call_results
WHEN EXISTS (SELECT 1 FROM webhook_endpoints)
  AND EXISTS (SELECT 1 FROM webhook_endpoints AS e
              WHERE e.organization_id = NEW.organization_id
                AND (e.events IS NULL OR instr(e.events, '"contact.result"') > 0))
BEGIN
    INSERT INTO webhook_changes (organization_id, kind, created_at, token, data)
    VALUES (NEW.organization_id, 12, NEW.received_at, randomblob(8), json_object(
        'contactId', 'contact_' || NEW.contact_id, 'jobId', NEW.job_id,
        'attemptNumber', NEW.attempt_no, 'roomName', NEW.room_name,
        'disposition', NEW.disposition,
        'callbackAt', strftime('%Y-%m-%dT%H:%M:%SZ', NEW.callback_at, 'unixepoch'),
        'summary', NEW.summary, 'resultData', json(NEW.data),
        'receivedAt', strftime('%Y-%m-%dT%H:%M:%SZ', NEW.received_at, 'unixepoch')));
END;
