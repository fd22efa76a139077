-- A contact stored final at its job's create (cancelled: its number on the do-not-call list, or
-- no calling window in common with its time zones) reached its final status without any update
-- of its row, so no trigger wrote its contact.finished: a receiver counting one per contact
-- missed those. Now the insert writes it, as a cancel of a waiting contact does (kind 10: the
-- contact's every field in the change).
CREATE TRIGGER webhook_contact_created_final AFTER INSERT ON contacts
WHEN NEW.status NOT IN ('pending', 'queued', 'dialing') AND EXISTS (SELECT 1 FROM webhook_endpoints)
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

-- Older code may still run on this database (oldest_code is unchanged): it reads nothing this
-- changes; it only finds these changes among the others, sent as any kind-10 change.
