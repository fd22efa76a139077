-- One trigger for the webhook changes of a contact's status instead of two (0011's
-- contact.attempt_finished and contact.finished), whose WHEN asks first whether any endpoint
-- exists: with none, a claim or an outcome no longer runs two triggers' statements for every
-- contact (a 100-contact cycle's transaction: 11.5-12.3 -> 10.5 ms). The statements are 0011's,
-- with its WHEN clauses moved into their WHERE clauses (the two changes exclude each other).
DROP TRIGGER webhook_attempt_finished;
DROP TRIGGER webhook_contact_finished;

CREATE TRIGGER webhook_contact_status AFTER UPDATE OF status ON contacts
WHEN OLD.status <> NEW.status AND EXISTS (SELECT 1 FROM webhook_endpoints)
BEGIN
    -- An attempt ended: contact.attempt_finished, and contact.finished when now final.
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
          FROM jobs AS j
          WHERE OLD.status = 'dialing' AND NEW.attempt_count = OLD.attempt_count
            AND j.id = NEW.job_id) AS t
    WHERE t.attempts OR t.finishes;
    -- Final without an attempt ending (a cancelled job's waiting contacts): contact.finished.
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
      AND NOT (OLD.status = 'dialing' AND NEW.attempt_count = OLD.attempt_count)
      AND j.id = NEW.job_id AND EXISTS (
        SELECT 1 FROM webhook_endpoints AS e
        WHERE e.organization_id = j.organization_id
          AND (e.events IS NULL OR instr(e.events, '"contact.finished"') > 0));
END;
