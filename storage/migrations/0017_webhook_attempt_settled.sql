-- An attempt's webhook events (contact.attempt_finished, and contact.finished when the contact
-- is final) are written when its attempt row is finished, from the contact as it is then, instead
-- of when the contact leaves `dialing`. The engine records an ended call in one transaction:
-- the contact's transition, then the result its agent posted during the call (a voicemail
-- retried, a callback, do-not-call), then the attempt row. 0013's trigger wrote the events at
-- the first of these, showing a contact the result then changed (contact.finished, status
-- completed, for a contact queued for its retry; later a second contact.finished). The attempt
-- row is finished last (storage.dialing.record), so its trigger sees the contact as the attempt
-- left it.
DROP TRIGGER webhook_contact_status;

-- Final without an attempt ending (a cancelled job's waiting contacts, a late result): only
-- when the contact's latest attempt is not being recorded (its row unfinished): that attempt's
-- row writes its events.
CREATE TRIGGER webhook_contact_status AFTER UPDATE OF status ON contacts
WHEN OLD.status <> NEW.status AND EXISTS (SELECT 1 FROM webhook_endpoints)
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
    WHERE NEW.status NOT IN ('pending', 'queued', 'dialing')
      AND NOT EXISTS (SELECT 1 FROM attempts AS a
                      WHERE a.contact_id = NEW.id AND a.attempt_no = NEW.attempt_count
                        AND a.outcome IS NULL)
      AND j.id = NEW.job_id AND EXISTS (
        SELECT 1 FROM webhook_endpoints AS e
        WHERE e.organization_id = j.organization_id
          AND (e.events IS NULL OR instr(e.events, '"contact.finished"') > 0));
END;

-- An attempt ended: contact.attempt_finished, and contact.finished when the contact is now
-- final (0013's statement, reading the contact instead of the row its trigger saw change).
CREATE TRIGGER webhook_attempt_finished AFTER UPDATE OF outcome ON attempts
WHEN OLD.outcome IS NULL AND NEW.outcome IS NOT NULL
     AND EXISTS (SELECT 1 FROM webhook_endpoints)
BEGIN
    INSERT INTO webhook_changes (organization_id, kind, created_at, token, contact_id,
                                 attempt_no, status, error_code, failure_reason, next_retry_at,
                                 completed_at, call_duration, max_attempts)
    SELECT t.organization_id,
           CASE WHEN t.attempts AND t.finishes THEN 8 WHEN t.attempts THEN 7 ELSE 9 END,
           t.updated_at, randomblob(8), t.id, t.attempt_count, t.status, t.error_code,
           t.failure_reason, t.next_retry_at, t.completed_at, t.call_duration, t.max_attempts
    FROM (SELECT j.organization_id, c.updated_at, c.id, c.attempt_count, c.status,
              c.error_code, c.failure_reason, c.next_retry_at, c.completed_at,
              c.call_duration, c.max_attempts,
              EXISTS (SELECT 1 FROM webhook_endpoints AS e
                      WHERE e.organization_id = j.organization_id
                        AND (e.events IS NULL
                             OR instr(e.events, '"contact.attempt_finished"') > 0)) AS attempts,
              c.status NOT IN ('pending', 'queued') AND EXISTS (
                  SELECT 1 FROM webhook_endpoints AS e
                  WHERE e.organization_id = j.organization_id
                    AND (e.events IS NULL OR instr(e.events, '"contact.finished"') > 0))
                  AS finishes
          FROM contacts AS c JOIN jobs AS j ON j.id = c.job_id
          WHERE c.id = NEW.contact_id AND c.attempt_count = NEW.attempt_no
            AND c.status <> 'dialing') AS t
    WHERE t.attempts OR t.finishes;
END;

-- Code that knows 16 migrations may still run on this database (oldest_code is unchanged): it
-- reads nothing this changes, and since it finishes an attempt's row before applying its
-- results, its events are what 0013's trigger wrote.
