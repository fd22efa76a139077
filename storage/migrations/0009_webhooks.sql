-- Outbound webhooks: endpoints per organization, and an outbox of events and their deliveries
-- written by triggers, in the same transaction as the change each event reports (so no code
-- path can forget one, and a crash loses none). dialer/webhooks.py sends what is due.

-- An endpoint: `events` is a JSON array of event types, NULL for every type. The secret is kept
-- (it signs every delivery) and never shown again after the create answer.
CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    url             TEXT NOT NULL,
    events          TEXT,
    description     TEXT,
    secret          TEXT NOT NULL,
    created_at      REAL NOT NULL
);
CREATE INDEX webhook_endpoints_org ON webhook_endpoints (organization_id, created_at);

-- An event, once, whatever the number of endpoints: its webhook-id (128 random bits: unique
-- without the cost of an index on the engine's path) is the same on every delivery and retry.
-- `sequence` increases per organization.
CREATE TABLE webhook_events (
    id              INTEGER PRIMARY KEY,
    organization_id TEXT NOT NULL,
    webhook_id      TEXT NOT NULL,
    type            TEXT NOT NULL,
    sequence        INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    -- A job event: the job document at the change. A contact event: the contact's changing
    -- fields at the change, a JSON array (see contact_snapshot below), small to write on the
    -- engine's path; webhook_event_documents renders the document when it is sent.
    data            TEXT NOT NULL,
    contact_id      INTEGER,
    attempt_id      INTEGER,                       -- contact.attempt_finished: the attempt
    UNIQUE (organization_id, sequence)
);

-- One event to one endpoint. pending: to send at next_attempt_at; delivered; failed (dead
-- letter, until replayed). Deleting an endpoint deletes its deliveries.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    event_id        INTEGER NOT NULL,                -- webhook_events.id (written together)
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id),
    organization_id TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_attempt_at REAL,
    last_status     INTEGER,                       -- HTTP status of the last answer
    last_error      TEXT,
    delivered_at    REAL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_org ON webhook_deliveries (organization_id, id);

-- A job as the list route shows it (the same shape as api.batch.job_summary, which a test holds
-- it to). Failure statuses: dialer.states.FAILURE_STATUSES.
CREATE VIEW job_documents AS
SELECT j.id, j.organization_id, j.created_at, j.status, j.deleted_at, json_object(
    'id', j.id, 'name', j.name, 'description', j.description, 'status', j.status,
    'organizationId', j.organization_id, 'agentId', j.agent_id,
    'fromPhoneNumberId', j.phone_number_id, 'totalContacts', j.total_contacts,
    'contactsProcessed', j.successful + j.failed, 'successfulCalls', j.successful,
    'failedCalls', j.failed,
    'scheduledStartTime', strftime('%Y-%m-%dT%H:%M:%SZ', j.scheduled_start_time, 'unixepoch'),
    'actualStartTime', strftime('%Y-%m-%dT%H:%M:%SZ', j.actual_start_time, 'unixepoch'),
    'completedAt', strftime('%Y-%m-%dT%H:%M:%SZ', j.completed_at, 'unixepoch'),
    'createdAt', strftime('%Y-%m-%dT%H:%M:%SZ', j.created_at, 'unixepoch'),
    'concurrentCallLimit', j.concurrent_call_limit,
    'retryPolicy', json_object(
        'maxAttempts', j.max_attempts, 'retryableStatuses', json(j.retry_statuses),
        'retryDelaySeconds', j.retry_delay_seconds, 'backoffMultiplier', j.retry_backoff),
    'statusReason', j.status_reason,
    'pauseReason', CASE WHEN j.status = 'paused' THEN j.status_reason END,
    'retryRounds', j.retry_rounds, 'callingWindows', json(j.calling_windows),
    'windowTimezone', j.window_timezone,
    'expiresAt', strftime('%Y-%m-%dT%H:%M:%SZ', j.expires_at, 'unixepoch')) AS doc
FROM (
    SELECT jobs.*,
        coalesce((SELECT n FROM job_status_counts
                  WHERE job_id = jobs.id AND status = 'completed'), 0) AS successful,
        coalesce((SELECT sum(n) FROM job_status_counts
                  WHERE job_id = jobs.id AND status IN ('no_answer', 'busy', 'timeout',
                        'blocked', 'invalid_number', 'carrier_error', 'failed')), 0) AS failed
    FROM jobs) AS j;

-- Insert (organization_id, type, created_at, data, contact_id, attempt_id) here to record an
-- event: it becomes an event row and a delivery per endpoint of the organization that takes
-- that type, or nothing at all when no endpoint does.
CREATE VIEW webhook_outbox AS
SELECT organization_id, type, created_at, data, contact_id, attempt_id FROM webhook_events
WHERE 0;

CREATE TRIGGER webhook_outbox_insert INSTEAD OF INSERT ON webhook_outbox
WHEN EXISTS (
    SELECT 1 FROM webhook_endpoints AS e
    WHERE e.organization_id = NEW.organization_id
      AND (e.events IS NULL OR EXISTS (SELECT 1 FROM json_each(e.events) WHERE value = NEW.type)))
BEGIN
    INSERT INTO webhook_events (organization_id, webhook_id, type, sequence, created_at, data,
                                contact_id, attempt_id)
    VALUES (NEW.organization_id, 'msg_' || lower(hex(randomblob(16))), NEW.type,
            coalesce((SELECT max(sequence) FROM webhook_events
                      WHERE organization_id = NEW.organization_id), 0) + 1,
            NEW.created_at, NEW.data, NEW.contact_id, NEW.attempt_id);
    INSERT INTO webhook_deliveries (event_id, endpoint_id, organization_id, status,
                                    next_attempt_at)
    -- (the event just written has the highest id; last_insert_rowid() would move on to the
    -- first delivery row as soon as it is written)
    SELECT (SELECT max(id) FROM webhook_events), e.id, e.organization_id, 'pending',
           NEW.created_at
    FROM webhook_endpoints AS e
    WHERE e.organization_id = NEW.organization_id
      AND (e.events IS NULL OR EXISTS (SELECT 1 FROM json_each(e.events) WHERE value = NEW.type));
END;

-- The event's `data` as it is sent: a job event's document as written; a contact event's the
-- contact as the detail route shows it (contact_documents) with the fields it had at the change
-- (the snapshot [status, error_code, attempt_count, max_attempts, last_attempt_at,
-- next_retry_at, completed_at, room_name, failure_reason, call_duration]), plus the attempt
-- (immutable once it has its outcome) for contact.attempt_finished.
CREATE VIEW webhook_event_documents AS
SELECT e.id, CASE WHEN e.contact_id IS NULL THEN e.data ELSE (
    SELECT json_set(
        CASE WHEN e.attempt_id IS NULL THEN d.doc ELSE json_set(d.doc, '$.attempt', json((
            SELECT json_object(
                'attemptNumber', a.attempt_no,
                'startedAt', strftime('%Y-%m-%dT%H:%M:%SZ', a.started_at, 'unixepoch'),
                'answeredAt', strftime('%Y-%m-%dT%H:%M:%SZ', a.answered_at, 'unixepoch'),
                'endedAt', strftime('%Y-%m-%dT%H:%M:%SZ', a.ended_at, 'unixepoch'),
                'outcome', a.outcome, 'sipCode', a.sip_code, 'reason', a.reason,
                'roomName', a.room_name, 'durationSeconds', a.duration)
            FROM attempts AS a WHERE a.id = e.attempt_id))) END,
        '$.status', e.data ->> 0, '$.errorCode', e.data ->> 1,
        '$.attemptCount', e.data ->> 2, '$.maxAttempts', e.data ->> 3,
        '$.lastAttemptAt', strftime('%Y-%m-%dT%H:%M:%SZ', e.data ->> 4, 'unixepoch'),
        '$.nextRetryAt', strftime('%Y-%m-%dT%H:%M:%SZ', e.data ->> 5, 'unixepoch'),
        '$.completedAt', strftime('%Y-%m-%dT%H:%M:%SZ', e.data ->> 6, 'unixepoch'),
        '$.roomName', e.data ->> 7, '$.failureReason', e.data ->> 8,
        '$.callDuration', e.data ->> 9)
    FROM contact_documents AS d WHERE d.id = e.contact_id) END AS data
FROM webhook_events AS e;

-- The event sources. Each first checks that there is an endpoint at all, then that the
-- organization has one (an index probe or two), so that the engine's statements cost about the
-- same as before for an organization without.

-- job.started / paused / resumed / completed / cancelled / failed, on the status change.
CREATE TRIGGER webhook_job_status AFTER UPDATE OF status ON jobs
WHEN OLD.status <> NEW.status
  AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE organization_id = NEW.organization_id)
BEGIN
    INSERT INTO webhook_outbox (organization_id, type, created_at, data, contact_id, attempt_id)
    SELECT NEW.organization_id, t.type, NEW.updated_at,
           (SELECT doc FROM job_documents WHERE id = NEW.id), NULL, NULL
    FROM (SELECT CASE
            WHEN NEW.status IN ('completed', 'cancelled', 'failed') THEN 'job.' || NEW.status
            WHEN NEW.status = 'paused' THEN 'job.paused'
            WHEN OLD.status = 'paused' THEN 'job.resumed'
            WHEN NEW.status = 'running' THEN 'job.started'
          END AS type) AS t
    WHERE t.type IS NOT NULL;
END;

-- contact.attempt_finished when an attempt gets its outcome (a dial that never reached the
-- provider is no attempt: its row is deleted, never given one), then contact.finished when that
-- outcome was the contact's last. The engine writes the contact before the attempt in the same
-- transaction, so the contact read here is already the one the outcome made.
CREATE TRIGGER webhook_attempt_finished AFTER UPDATE OF outcome ON attempts
WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL AND NEW.outcome <> 'not_placed'
  AND EXISTS (SELECT 1 FROM webhook_endpoints)
  AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE organization_id = (
      SELECT organization_id FROM jobs WHERE id = NEW.job_id))
BEGIN
    INSERT INTO webhook_outbox (organization_id, type, created_at, data, contact_id, attempt_id)
    SELECT j.organization_id, t.type, c.updated_at,
           json_array(c.status, c.error_code, c.attempt_count, c.max_attempts,
                      c.last_attempt_at, c.next_retry_at, c.completed_at, c.room_name,
                      c.failure_reason, c.call_duration),
           c.id, CASE t.type WHEN 'contact.attempt_finished' THEN NEW.id END
    FROM contacts AS c JOIN jobs AS j ON j.id = c.job_id,
         (SELECT 'contact.attempt_finished' AS type, 1 AS k
          UNION ALL SELECT 'contact.finished', 2) AS t
    WHERE c.id = NEW.contact_id
      AND (t.type = 'contact.attempt_finished' OR (c.attempt_count = NEW.attempt_no
           AND c.status NOT IN ('pending', 'queued', 'dialing')))
    ORDER BY t.k;
END;

-- contact.finished for a contact that reached a final status without an attempt ending: the
-- pending or queued contacts of a cancelled job, a dial given back for a cancelled job. (An
-- outcome keeps the attempt count; those are reported by webhook_attempt_finished.)
CREATE TRIGGER webhook_contact_finished AFTER UPDATE OF status ON contacts
WHEN OLD.status <> NEW.status
  AND NEW.status NOT IN ('pending', 'queued', 'dialing')
  AND NOT (OLD.status = 'dialing' AND NEW.attempt_count = OLD.attempt_count)
  AND EXISTS (SELECT 1 FROM webhook_endpoints)
  AND EXISTS (SELECT 1 FROM webhook_endpoints WHERE organization_id = (
      SELECT organization_id FROM jobs WHERE id = NEW.job_id))
BEGIN
    INSERT INTO webhook_outbox (organization_id, type, created_at, data, contact_id, attempt_id)
    SELECT j.organization_id, 'contact.finished', NEW.updated_at,
           json_array(NEW.status, NEW.error_code, NEW.attempt_count, NEW.max_attempts,
                      NEW.last_attempt_at, NEW.next_retry_at, NEW.completed_at, NEW.room_name,
                      NEW.failure_reason, NEW.call_duration),
           NEW.id, NULL
    FROM jobs AS j WHERE j.id = NEW.job_id;
END;
