-- A contact as the detail route shows it (the same shape as api.batch.contact_json, which a
-- test holds it to), built by SQLite in C rather than object by object on the event loop.
-- Times as dialer.service.iso renders them. A view: only the rows a page selects are rendered.
CREATE VIEW contact_documents AS
SELECT c.id, c.job_id, c.seq, c.status, json_object(
    'id', 'contact_' || c.id, 'phoneNumber', c.phone, 'contactData', json(c.contact_data),
    'status', c.status, 'errorCode', c.error_code, 'attemptCount', c.attempt_count,
    'maxAttempts', c.max_attempts,
    'lastAttemptAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.last_attempt_at, 'unixepoch'),
    'nextRetryAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.next_retry_at, 'unixepoch'),
    'completedAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.completed_at, 'unixepoch'),
    'roomName', c.room_name, 'failureReason', c.failure_reason,
    'callDuration', c.call_duration) AS doc
FROM contacts AS c;
