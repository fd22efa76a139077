-- Named queries, parsed once by storage.queries. A block starts with a line `-- name --`.

-- insert_job --
INSERT INTO jobs (id, organization_id, name, description, status, agent_id, phone_number_id,
                  concurrent_call_limit, max_attempts, retry_statuses, retry_delay_seconds,
                  retry_backoff, timezone, scheduled_start_time, created_at, updated_at,
                  total_contacts, estimated_cost_usd)
VALUES (:id, :organization_id, :name, :description, :status, :agent_id, :phone_number_id,
        :concurrent_call_limit, :max_attempts, :retry_statuses, :retry_delay_seconds,
        :retry_backoff, :timezone, :scheduled_start_time, :created_at, :created_at,
        :total_contacts, :estimated_cost_usd)

-- insert_contact --
INSERT INTO contacts (job_id, seq, phone, contact_data, status, max_attempts, updated_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?)

-- get_job --
SELECT * FROM jobs WHERE id = ? AND organization_id = ?

-- get_job_any_org --
SELECT * FROM jobs WHERE id = ?

-- list_jobs --
SELECT * FROM jobs
WHERE organization_id = :org AND (:status IS NULL OR status = :status)
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset

-- count_jobs --
SELECT count(*) FROM jobs WHERE organization_id = :org AND (:status IS NULL OR status = :status)

-- job_status_counts --
SELECT status, n FROM job_status_counts WHERE job_id = ?

-- list_contacts --
-- In upload order. Two shapes, so that each reads its index in order (job_id, seq) or
-- (job_id, status, seq) and stops after the page instead of filtering the whole job.
SELECT * FROM contacts WHERE job_id = :job_id
ORDER BY seq
LIMIT :limit OFFSET :offset

-- list_contacts_in_status --
SELECT * FROM contacts WHERE job_id = :job_id AND status = :status
ORDER BY seq
LIMIT :limit OFFSET :offset

-- count_jobs_in_status --
SELECT count(*) FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN (SELECT value FROM json_each(:statuses))

-- jobs_in_status --
SELECT * FROM jobs WHERE status IN (SELECT value FROM json_each(?)) ORDER BY created_at, id

-- next_scheduled_start --
SELECT min(scheduled_start_time) FROM jobs WHERE status = 'scheduled'

-- start_job --
UPDATE jobs SET status = 'running', actual_start_time = coalesce(actual_start_time, :now),
                updated_at = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:from_statuses))

-- claim_contacts --
-- Due retries first (in due order), then fresh contacts in upload order; each part reads its
-- index in order and stops at :limit, so a claim costs the same in a job of any size. One
-- statement, so the guard on status and the update cannot be separated. Only for a running job:
-- a job paused (or cancelled) after the scheduler chose it claims no one. Within a job contact
-- ids grow with seq, so `id` breaks ties of next_retry_at in upload order.
UPDATE contacts
SET status = 'dialing', attempt_count = attempt_count + 1, last_attempt_at = :now,
    next_retry_at = NULL, updated_at = :now
WHERE (SELECT status FROM jobs WHERE id = :job_id) = 'running' AND id IN (
    SELECT id FROM (
        SELECT id FROM contacts
        WHERE job_id = :job_id AND status = 'queued' AND next_retry_at <= :now
        ORDER BY next_retry_at, id LIMIT :limit)
    UNION ALL
    SELECT id FROM (
        SELECT id FROM contacts WHERE job_id = :job_id AND status = 'pending'
        ORDER BY seq LIMIT :limit)
    LIMIT :limit)
RETURNING id, seq, phone, contact_data, attempt_count, max_attempts

-- insert_attempt --
INSERT INTO attempts (contact_id, job_id, attempt_no, room_name, started_at)
VALUES (?, ?, ?, ?, ?)

-- set_contact_room --
UPDATE contacts SET room_name = ? WHERE id = ?

-- finish_attempt --
UPDATE attempts
SET outcome = :outcome, sip_code = :sip_code, reason = :reason, answered_at = :answered_at,
    ended_at = :ended_at, duration = :duration, charged_usd = :charged_usd
WHERE contact_id = :contact_id AND attempt_no = :attempt_no AND outcome IS NULL

-- finish_contact --
UPDATE contacts
SET status = :status, next_retry_at = :next_retry_at, completed_at = :completed_at,
    error_code = :error_code, failure_reason = :failure_reason,
    call_duration = coalesce(:duration, call_duration), updated_at = :now
WHERE id = :contact_id AND status = 'dialing' AND attempt_count = :attempt_no

-- give_back_attempt --
-- The dial never reached the provider: the attempt does not count.
UPDATE contacts
SET status = :status, attempt_count = attempt_count - 1, next_retry_at = :next_retry_at,
    updated_at = :now
WHERE id = :contact_id AND status = 'dialing' AND attempt_count = :attempt_no

-- add_spend --
INSERT INTO organization_spend (organization_id, spent_usd) VALUES (?, ?)
ON CONFLICT (organization_id) DO UPDATE SET spent_usd = spent_usd + excluded.spent_usd

-- get_spend --
SELECT coalesce((SELECT spent_usd FROM organization_spend WHERE organization_id = ?), 0)

-- complete_job_if_done --
UPDATE jobs SET status = 'completed', completed_at = :now, updated_at = :now
WHERE id = :id AND status = 'running'
  AND NOT EXISTS (
      SELECT 1 FROM job_status_counts
      WHERE job_id = :id AND status IN ('pending', 'queued', 'dialing') AND n > 0)

-- cancel_job --
UPDATE jobs SET status = 'cancelled', status_reason = NULL, completed_at = :now, updated_at = :now
WHERE id = :id AND organization_id = :org
  AND status IN ('pending', 'scheduled', 'running', 'paused')

-- cancel_contacts --
UPDATE contacts SET status = 'cancelled', next_retry_at = NULL, completed_at = :now,
                    updated_at = :now
WHERE job_id = :id AND status IN ('pending', 'queued')

-- fail_job --
UPDATE jobs SET status = 'failed', status_reason = :reason, completed_at = :now, updated_at = :now
WHERE id = :id AND status IN ('pending', 'scheduled', 'running', 'paused')

-- reschedule_job --
UPDATE jobs SET status = 'scheduled', scheduled_start_time = :when, timezone = :tz,
                updated_at = :now
WHERE id = :id AND organization_id = :org AND status IN ('pending', 'scheduled')

-- next_retry_due --
SELECT min(next_retry_at) FROM contacts WHERE job_id = ? AND status = 'queued'

-- dialing_contacts --
SELECT c.id, c.job_id, c.seq, c.phone, c.contact_data, c.attempt_count, c.max_attempts,
       a.room_name, a.started_at
FROM contacts c
JOIN attempts a ON a.contact_id = c.id AND a.attempt_no = c.attempt_count AND a.outcome IS NULL
WHERE c.status = 'dialing'
ORDER BY c.job_id, c.seq

-- last_retry_due --
SELECT max(next_retry_at) FROM contacts WHERE job_id = ? AND status = 'queued'

-- add_call_stats --
-- Running totals of ended attempts: the observed average call length without a scan.
UPDATE jobs SET calls_ended = calls_ended + ?, call_seconds = call_seconds + ? WHERE id = ?

-- list_attempts --
SELECT * FROM attempts WHERE contact_id = ? ORDER BY id

-- insert_api_key --
INSERT INTO api_keys (id, organization_id, key_hash, prefix, name, created_at)
VALUES (?, ?, ?, ?, ?, ?)

-- find_api_key --
SELECT * FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL

-- list_api_keys --
SELECT * FROM api_keys WHERE (:org IS NULL OR organization_id = :org) ORDER BY created_at, id

-- revoke_api_key --
UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL

-- pause_job --
UPDATE jobs SET status = 'paused', status_reason = :reason, updated_at = :now
WHERE id = :id AND (:org IS NULL OR organization_id = :org)
  AND status IN (SELECT value FROM json_each(:from_statuses))

-- resume_job --
-- Back to where the job would be had it not been paused: running once it has started, else
-- waiting for its scheduled start (or starting now).
UPDATE jobs
SET status = CASE
        WHEN actual_start_time IS NOT NULL THEN 'running'
        WHEN scheduled_start_time > :now THEN 'scheduled'
        ELSE 'pending'
    END,
    status_reason = NULL, updated_at = :now
WHERE id = :id AND organization_id = :org AND status = 'paused'

-- retry_contacts --
-- Another round for contacts that ended in one of :statuses: due now, with :attempts more
-- attempts than they have made (never fewer than they had). Their attempt rows stay as they are.
UPDATE contacts
SET status = 'queued', next_retry_at = :now, completed_at = NULL,
    max_attempts = max(max_attempts, attempt_count + :attempts), updated_at = :now
WHERE job_id = :job_id AND status IN (SELECT value FROM json_each(:statuses))

-- restart_job_for_retry --
-- A paused job stays paused (the operator resumes it); any other runs again.
UPDATE jobs
SET status = CASE status WHEN 'paused' THEN 'paused' ELSE 'running' END,
    status_reason = CASE status WHEN 'paused' THEN status_reason END,
    actual_start_time = coalesce(actual_start_time, :now),
    completed_at = NULL, retry_rounds = retry_rounds + 1, updated_at = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:from_statuses))

-- list_calls --
-- Contacts with their latest placed attempt, in upload order. Filters: statuses (JSON array or
-- NULL), external id (see the contact_external_ids view), seq after.
SELECT c.*, a.started_at AS call_started_at, a.answered_at AS call_answered_at,
       a.ended_at AS call_ended_at
FROM contacts c
LEFT JOIN attempts a ON a.id = (
    SELECT max(id) FROM attempts
    WHERE contact_id = c.id AND (outcome IS NULL OR outcome <> 'not_placed'))
WHERE c.job_id = :job_id AND c.seq > :after_seq
  AND (:statuses IS NULL OR c.status IN (SELECT value FROM json_each(:statuses)))
  AND (:external_id IS NULL OR c.id IN (
        SELECT id FROM contact_external_ids
        WHERE job_id = :job_id AND external_id = :external_id))
ORDER BY c.seq
LIMIT :limit OFFSET :offset

-- count_calls --
SELECT count(*) FROM contacts c
WHERE c.job_id = :job_id
  AND (:statuses IS NULL OR c.status IN (SELECT value FROM json_each(:statuses)))
  AND (:external_id IS NULL OR c.id IN (
        SELECT id FROM contact_external_ids
        WHERE job_id = :job_id AND external_id = :external_id))

-- count_dispatched --
-- Contacts with at least one call placed (a given-back claim does not count).
SELECT count(*) FROM contacts WHERE job_id = ? AND attempt_count > 0

-- contact_field_names --
-- Every key of the contacts' data, in the order they first appear.
SELECT j.key FROM contacts c, json_each(c.contact_data) j
WHERE c.job_id = ?
GROUP BY j.key
ORDER BY min(c.seq), min(j.id)
