-- Named queries, parsed once by storage.queries. A block starts with a line `-- name --`.

-- insert_job --
INSERT INTO jobs (id, organization_id, name, description, status, agent_id, phone_number_id,
                  concurrent_call_limit, max_attempts, retry_statuses, retry_delay_seconds,
                  retry_backoff, timezone, scheduled_start_time, created_at, updated_at,
                  total_contacts, estimated_cost_usd, ringing_timeout_seconds, calling_windows,
                  window_timezone, expires_at, from_number, retry_on_voicemail)
VALUES (:id, :organization_id, :name, :description, :status, :agent_id, :phone_number_id,
        :concurrent_call_limit, :max_attempts, :retry_statuses, :retry_delay_seconds,
        :retry_backoff, :timezone, :scheduled_start_time, :created_at, :created_at,
        :total_contacts, :estimated_cost_usd, :ringing_timeout_seconds, :calling_windows,
        :window_timezone, :expires_at, :from_number, :retry_on_voicemail)

-- insert_contact --
INSERT INTO contacts (job_id, seq, phone, contact_data, status, max_attempts, updated_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?)

-- insert_contacts --
-- A part of a list in one statement: :contacts is [[phone, {data}, zones, next_call_at,
-- call_until, status, failure reason], ...] in upload order, the first at upload position
-- :first_seq. A number on the organization's do-not-call
-- list is stored cancelled (do_not_call) here, in the transaction that reads the list.
INSERT INTO contacts (job_id, seq, phone, contact_data, status, max_attempts, updated_at,
                      timezone, next_call_at, call_until, failure_reason, completed_at)
SELECT :job_id, :first_seq + c.key, c.value ->> 0, c.value -> 1,
       CASE WHEN d.number IS NULL THEN c.value ->> 5 ELSE 'cancelled' END,
       :max_attempts, :now, c.value ->> 2,
       CASE WHEN d.number IS NULL AND c.value ->> 5 = 'pending' THEN c.value ->> 3 END,
       CASE WHEN d.number IS NULL AND c.value ->> 5 = 'pending' THEN c.value ->> 4 END,
       CASE WHEN d.number IS NULL THEN c.value ->> 6 ELSE 'do_not_call' END,
       CASE WHEN d.number IS NULL AND c.value ->> 5 = 'pending' THEN NULL ELSE :now END
FROM json_each(:contacts) AS c
LEFT JOIN dnc_numbers AS d ON d.organization_id = :org AND d.number = c.value ->> 0
ORDER BY c.key

-- main_zones --
-- The zones most of a job's contacts are in (for its estimate: see JobService.detail).
SELECT timezone FROM contacts WHERE job_id = ?
GROUP BY timezone ORDER BY count(*) DESC, timezone LIMIT 1

-- count_listed --
-- How many of a JSON array of numbers are on the organization's do-not-call list: each looked
-- up by the list's key. (As a join, SQLite chose to scan the organization's whole list and the
-- array for each of its numbers: 14 s for 1,000 contacts against 110,000 listed numbers, with
-- every other write waiting.)
SELECT count(*) FROM json_each(:numbers) AS n
WHERE EXISTS (SELECT 1 FROM dnc_numbers AS d WHERE d.organization_id = :org AND d.number = n.value)

-- insert_status_counts --
-- Every status of a job's breakdown exists from the start (zeros included).
INSERT OR IGNORE INTO job_status_counts (job_id, status, n)
SELECT ?, value, 0 FROM json_each(?)

-- get_job --
-- A deleted job is gone for every route (its rows stay for the records).
SELECT * FROM jobs WHERE id = ? AND organization_id = ? AND deleted_at IS NULL

-- get_job_any_org --
SELECT * FROM jobs WHERE id = ?

-- list_jobs_api --
-- A page of jobs rendered by SQLite in the list route's job shape (the job_documents view of
-- migration 0009, which a test holds to api.batch.job_summary), for the reasons of
-- contacts_page_api. Only the page's jobs are rendered.
-- The page's ids are looked up with IN, not joined: a join with the view's subquery cost
-- three times as much.
SELECT '[' || coalesce(group_concat(doc, ','), '') || ']' FROM (
    SELECT doc FROM job_documents WHERE id IN (
        SELECT id FROM jobs
        WHERE organization_id = :org AND (:status IS NULL OR status = :status)
          AND deleted_at IS NULL
        ORDER BY created_at DESC, id DESC
        LIMIT :limit OFFSET :offset)
    ORDER BY created_at DESC, id DESC)

-- count_jobs --
SELECT count(*) FROM jobs
WHERE organization_id = :org AND (:status IS NULL OR status = :status) AND deleted_at IS NULL

-- job_status_counts --
-- {status: n} of one job.
SELECT json_group_object(status, n) FROM job_status_counts WHERE job_id = ?

-- list_contacts --
-- Reads that return many rows answer one row of JSON (columns in the order of the store's row
-- classes): the reader then hands the GIL back and forth once, not once per row.
-- In upload order. Two shapes, so that each reads its index in order (job_id, seq) or
-- (job_id, status, seq) and stops after the page instead of filtering the whole job.
SELECT json_group_array(json_array(c.id, c.job_id, c.seq, c.phone, json(c.contact_data), c.status, c.attempt_count,
                  c.max_attempts, c.last_attempt_at, c.next_retry_at, c.completed_at, c.error_code,
                  c.failure_reason, c.room_name, c.call_duration, c.updated_at,
                  c.timezone, c.next_call_at, c.call_until,
                  c.disposition, c.summary, json(c.result_data))) FROM (
    SELECT * FROM contacts WHERE job_id = :job_id
    ORDER BY seq
    LIMIT :limit OFFSET :offset) AS c

-- list_contacts_in_status --
SELECT json_group_array(json_array(c.id, c.job_id, c.seq, c.phone, json(c.contact_data), c.status, c.attempt_count,
                  c.max_attempts, c.last_attempt_at, c.next_retry_at, c.completed_at, c.error_code,
                  c.failure_reason, c.room_name, c.call_duration, c.updated_at,
                  c.timezone, c.next_call_at, c.call_until,
                  c.disposition, c.summary, json(c.result_data))) FROM (
    SELECT * FROM contacts WHERE job_id = :job_id AND status = :status
    ORDER BY seq
    LIMIT :limit OFFSET :offset) AS c

-- count_jobs_in_status --
SELECT count(*) FROM jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN (SELECT value FROM json_each(:statuses))

-- contacts_page_api --
-- A page of contacts as the detail route shows them (see the contact_documents view): the JSON
-- is built in C without the GIL, not object by object on the event loop. The documents are
-- joined as text (a view's JSON reads back as text, and parsing it again would cost); a
-- contact waiting past :now gets its nextCallAt in place of the document's closing `null}`
-- (migration 0012). Second column: the earliest such wait on the page, when the page changes
-- with time alone.
SELECT '[' || coalesce(group_concat(doc, ','), '') || ']', min(waits) FROM (
    SELECT CASE WHEN wait_until > :now
        THEN substr(doc, 1, length(doc) - 5) || '"'
             || strftime('%Y-%m-%dT%H:%M:%SZ', wait_until, 'unixepoch') || '"}'
        ELSE doc END AS doc,
        CASE WHEN wait_until > :now THEN wait_until END AS waits
    FROM contact_documents WHERE job_id = :job_id
    ORDER BY seq
    LIMIT :limit OFFSET :offset)

-- contacts_page_api_in_status --
SELECT '[' || coalesce(group_concat(doc, ','), '') || ']', min(waits) FROM (
    SELECT CASE WHEN wait_until > :now
        THEN substr(doc, 1, length(doc) - 5) || '"'
             || strftime('%Y-%m-%dT%H:%M:%SZ', wait_until, 'unixepoch') || '"}'
        ELSE doc END AS doc,
        CASE WHEN wait_until > :now THEN wait_until END AS waits
    FROM contact_documents WHERE job_id = :job_id AND status = :status
    ORDER BY seq
    LIMIT :limit OFFSET :offset)

-- jobs_in_status --
SELECT * FROM jobs WHERE status IN (SELECT value FROM json_each(?)) ORDER BY created_at, id

-- due_jobs --
-- The jobs to start now: every pending one, and the scheduled ones whose start has come.
SELECT id FROM jobs
WHERE status = 'pending' OR (status = 'scheduled' AND scheduled_start_time <= :now)
ORDER BY created_at, id

-- next_scheduled_start --
SELECT min(scheduled_start_time) FROM jobs WHERE status = 'scheduled'

-- start_job --
UPDATE jobs SET status = 'running', actual_start_time = coalesce(actual_start_time, :now),
                updated_at = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:from_statuses))

-- pick_contacts --
-- The contacts a claim takes for one job, as one JSON array
-- [[id, next attempt no, phone, status], ...]:
-- due retries first (in due order), then fresh contacts callable since the job was created (in
-- upload order), then those whose window opened since (in opening order). Each part reads its
-- index in order and stops at :limit, so a claim costs the same in a job of any size. Only
-- within the contact's interval (next_call_at, call_until), and never a number on the
-- organization's do-not-call list, in a live call of the organization, or at its cap of dials
-- in 24 h (:cap, 0: none). Only for a running job not expired: a job paused (or cancelled)
-- after the scheduler chose it claims no one. Within a job contact ids grow with seq, so `id`
-- breaks ties in upload order.
SELECT json_group_array(json_array(id, attempt_count + 1, phone, status)) FROM (
    SELECT id, attempt_count, phone, status FROM (
        SELECT id, attempt_count, phone, status FROM contacts AS c
        WHERE job_id = :job_id AND status = 'queued' AND next_retry_at <= :now
          AND (call_until IS NULL OR call_until > :now)
          AND NOT EXISTS (SELECT 1 FROM dnc_numbers AS d
                          WHERE d.organization_id = :org AND d.number = c.phone)
          AND NOT EXISTS (SELECT 1 FROM attempts AS a
                          WHERE a.organization_id = :org AND a.to_number = c.phone
                            AND a.outcome IS NULL)
          AND (:cap = 0 OR (SELECT count(*) FROM attempts AS a
                            WHERE a.organization_id = :org AND a.to_number = c.phone
                              AND a.started_at > :now - 86400
                              AND coalesce(a.outcome, '') <> 'not_placed') < :cap)
        ORDER BY next_retry_at, id LIMIT :limit)
    UNION ALL
    SELECT id, attempt_count, phone, status FROM (
        SELECT id, attempt_count, phone, status FROM contacts AS c
        WHERE job_id = :job_id AND status = 'pending' AND next_call_at IS NULL
          AND (call_until IS NULL OR call_until > :now)
          AND NOT EXISTS (SELECT 1 FROM dnc_numbers AS d
                          WHERE d.organization_id = :org AND d.number = c.phone)
          AND NOT EXISTS (SELECT 1 FROM attempts AS a
                          WHERE a.organization_id = :org AND a.to_number = c.phone
                            AND a.outcome IS NULL)
          AND (:cap = 0 OR (SELECT count(*) FROM attempts AS a
                            WHERE a.organization_id = :org AND a.to_number = c.phone
                              AND a.started_at > :now - 86400
                              AND coalesce(a.outcome, '') <> 'not_placed') < :cap)
        ORDER BY seq LIMIT :limit)
    UNION ALL
    SELECT id, attempt_count, phone, status FROM (
        SELECT id, attempt_count, phone, status FROM contacts AS c
        WHERE job_id = :job_id AND status = 'pending' AND next_call_at <= :now
          AND (call_until IS NULL OR call_until > :now)
          AND NOT EXISTS (SELECT 1 FROM dnc_numbers AS d
                          WHERE d.organization_id = :org AND d.number = c.phone)
          AND NOT EXISTS (SELECT 1 FROM attempts AS a
                          WHERE a.organization_id = :org AND a.to_number = c.phone
                            AND a.outcome IS NULL)
          AND (:cap = 0 OR (SELECT count(*) FROM attempts AS a
                            WHERE a.organization_id = :org AND a.to_number = c.phone
                              AND a.started_at > :now - 86400
                              AND coalesce(a.outcome, '') <> 'not_placed') < :cap)
        ORDER BY next_call_at, seq LIMIT :limit)
    LIMIT :limit)
WHERE (SELECT status = 'running' AND (expires_at IS NULL OR expires_at > :now)
       FROM jobs WHERE id = :job_id)

-- job_organizations --
-- {job id: organization id} for a JSON array of job ids.
SELECT json_group_object(id, organization_id) FROM jobs
WHERE id IN (SELECT value FROM json_each(?))

-- next_call_due --
-- When a job's earliest waiting contact may be dialed (a window opening, a cap ending).
SELECT next_call_at FROM contacts
WHERE job_id = :job_id AND status = 'pending' AND next_call_at > :now
ORDER BY next_call_at LIMIT 1

-- next_window_end --
-- When the earliest interval of a job's open contacts ends (they are then rolled forward).
SELECT call_until FROM contacts
WHERE job_id = :job_id AND call_until > :now AND status IN ('pending', 'queued')
ORDER BY call_until LIMIT 1

-- ended_intervals --
-- A job's open contacts whose interval ended, with what computes their next one.
SELECT json_group_array(json_array(c.id, c.timezone, max(coalesce(c.next_call_at, 0),
                                   coalesce(c.next_retry_at, 0)))) FROM contacts AS c
WHERE c.job_id = :job_id AND c.call_until <= :now AND c.status IN ('pending', 'queued')

-- roll_intervals --
-- [[contact id, next_call_at, call_until], ...]: the next interval of each; a queued retry
-- waits for its opening.
UPDATE contacts
SET next_call_at = b.value ->> 1, call_until = b.value ->> 2,
    next_retry_at = CASE WHEN contacts.status = 'queued'
                         THEN max(contacts.next_retry_at, coalesce(b.value ->> 1, 0)) END,
    updated_at = :now
FROM json_each(:rows) AS b
WHERE contacts.id = b.value ->> 0 AND contacts.status IN ('pending', 'queued')

-- cancel_without_window --
-- Contacts whose windows are never open in all their zones any more.
UPDATE contacts
SET status = 'cancelled', failure_reason = 'no_common_window', next_retry_at = NULL,
    next_call_at = NULL, call_until = NULL, completed_at = :now, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('pending', 'queued')

-- open_phones --
-- The numbers of these contacts (a JSON array of ids) that are still open.
SELECT json_group_array(DISTINCT phone) FROM contacts
WHERE id IN (SELECT value FROM json_each(?)) AND status IN ('pending', 'queued')

-- defer_capped --
-- The open contacts of the organization with these numbers that are at the cap of dials in
-- 24 h wait until the oldest dial that counts turns 24 h old (each returned with what computes
-- its calling interval from then: see dialing.defer_capped). Only the numbers at the cap are looked for among the contacts
-- (one index probe each): a new list of 10,000 numbers, none dialed today, costs no more.
UPDATE contacts
SET next_call_at = d.release, call_until = d.release,
    next_retry_at = CASE WHEN contacts.status = 'queued'
                         THEN max(contacts.next_retry_at, d.release) END,
    updated_at = :now
FROM (
    SELECT c.id AS id, (
        SELECT a.started_at FROM attempts AS a
        WHERE a.organization_id = :org AND a.to_number = c.phone
          AND a.started_at > :now - 86400 AND coalesce(a.outcome, '') <> 'not_placed'
        ORDER BY a.started_at DESC LIMIT 1 OFFSET :cap - 1) + 86400 AS release
    FROM contacts AS c
    WHERE c.phone IN (
            SELECT n.value FROM json_each(:phones) AS n
            WHERE (SELECT count(*) FROM attempts AS a
                   WHERE a.organization_id = :org AND a.to_number = n.value
                     AND a.started_at > :now - 86400
                     AND coalesce(a.outcome, '') <> 'not_placed') >= :cap)
      AND c.status IN ('pending', 'queued')
      AND c.job_id IN (SELECT id FROM jobs WHERE organization_id = :org)) AS d
WHERE contacts.id = d.id AND d.release IS NOT NULL
RETURNING contacts.id, contacts.job_id, contacts.timezone, contacts.next_call_at

-- create_claim_batch --
CREATE TEMP TABLE IF NOT EXISTS claim_batch (
    contact_id INTEGER PRIMARY KEY,
    job_id     TEXT NOT NULL,
    attempt_no INTEGER NOT NULL,
    room_name  TEXT NOT NULL
)

-- clear_claim_batch --
DELETE FROM temp.claim_batch

-- load_claim_batch --
-- [[contact id, job id, attempt no, room name], ...]
INSERT INTO temp.claim_batch
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)

-- claim_batch --
-- pending/queued -> dialing for every picked contact, guarded on its status and attempt count.
-- (`id IN` so that the batch drives the update: a join would scan the contacts.)
UPDATE contacts
SET status = 'dialing', attempt_count = attempt_count + 1, last_attempt_at = :now,
    next_retry_at = NULL, updated_at = :now,
    room_name = (SELECT room_name FROM temp.claim_batch AS b WHERE b.contact_id = contacts.id)
WHERE id IN (SELECT contact_id FROM temp.claim_batch)
  AND status IN ('pending', 'queued')
  AND attempt_count + 1 = (SELECT attempt_no FROM temp.claim_batch AS b
                           WHERE b.contact_id = contacts.id)

-- insert_claimed_attempts --
-- With the call record's numbers: the contact's, and the caller number of its job.
INSERT INTO attempts (contact_id, job_id, attempt_no, room_name, started_at, organization_id,
                      to_number, from_number)
SELECT b.contact_id, b.job_id, b.attempt_no, b.room_name, :now, j.organization_id, c.phone,
       j.from_number
FROM temp.claim_batch AS b
JOIN contacts AS c ON c.id = b.contact_id
JOIN jobs AS j ON j.id = b.job_id

-- claimed_contacts --
-- The claimed contacts as one JSON array
-- [[id, seq, phone, data, attempt no, max attempts, zones, end of calling interval], ...]
SELECT json_group_array(json_array(c.id, c.seq, c.phone, json(c.contact_data), c.attempt_count,
                                   c.max_attempts, c.timezone, c.call_until))
FROM temp.claim_batch AS b JOIN contacts AS c ON c.id = b.contact_id

-- finish_contact --
UPDATE contacts
SET status = :status, next_retry_at = :next_retry_at, completed_at = :completed_at,
    error_code = :error_code, failure_reason = :failure_reason,
    call_duration = coalesce(:duration, call_duration), next_call_at = :next_call_at,
    call_until = :call_until, last_attempt_at = :started_at, updated_at = :now
WHERE id = :contact_id AND status = 'dialing' AND attempt_count = :attempt_no

-- give_back_attempt --
-- The dial never reached the provider: the attempt does not count (as give_back_batch).
UPDATE contacts
SET status = :status, attempt_count = attempt_count - 1, next_retry_at = :next_retry_at,
    next_call_at = :next_call_at, call_until = :call_until,
    last_attempt_at = (SELECT a.started_at FROM attempts AS a WHERE a.contact_id = contacts.id
                         AND a.attempt_no = contacts.attempt_count - 1),
    room_name = (SELECT a.room_name FROM attempts AS a WHERE a.contact_id = contacts.id
                   AND a.attempt_no = contacts.attempt_count - 1),
    updated_at = :now
WHERE id = :contact_id AND status = 'dialing' AND attempt_count = :attempt_no

-- create_outcome_batch --
-- The outcomes of one cycle, loaded with a few statements of many rows each (storage/dialing.py,
-- _load_outcome_batch) so that the whole batch is applied by a few set-based statements: a
-- statement per row would hand the GIL back and forth with the event loop once per row, which
-- under load costs far more than the SQL itself.
CREATE TEMP TABLE IF NOT EXISTS outcome_batch (
    contact_id     INTEGER PRIMARY KEY,
    job_id         TEXT NOT NULL,
    attempt_no     INTEGER NOT NULL,
    give_back      INTEGER NOT NULL,
    status         TEXT NOT NULL,
    next_retry_at  REAL,
    completed_at   REAL,
    error_code     TEXT,
    reason         TEXT,
    duration       INTEGER,
    outcome        TEXT NOT NULL,
    sip_code       INTEGER,
    answered_at    REAL,
    ended_at       REAL,
    charged_usd    REAL NOT NULL,
    next_call_at   REAL,
    call_until     REAL,
    started_at     REAL NOT NULL
)

-- clear_outcome_batch --
DELETE FROM temp.outcome_batch

-- finish_contacts_batch --
-- Guarded like finish_contact: only a contact still dialing that very attempt changes.
UPDATE contacts
SET status = b.status, next_retry_at = b.next_retry_at, completed_at = b.completed_at,
    error_code = b.error_code, failure_reason = b.reason,
    call_duration = coalesce(b.duration, contacts.call_duration), next_call_at = b.next_call_at,
    call_until = b.call_until, last_attempt_at = b.started_at, updated_at = :now
FROM temp.outcome_batch AS b
WHERE contacts.id = b.contact_id AND b.give_back = 0
  AND contacts.status = 'dialing' AND contacts.attempt_count = b.attempt_no

-- give_back_batch --
-- Its last attempt and room are its previous attempt's again (none before its first).
UPDATE contacts
SET status = b.status, attempt_count = contacts.attempt_count - 1,
    next_retry_at = b.next_retry_at, next_call_at = b.next_call_at, call_until = b.call_until,
    last_attempt_at = (SELECT a.started_at FROM attempts AS a WHERE a.contact_id = contacts.id
                         AND a.attempt_no = contacts.attempt_count - 1),
    room_name = (SELECT a.room_name FROM attempts AS a WHERE a.contact_id = contacts.id
                   AND a.attempt_no = contacts.attempt_count - 1),
    updated_at = :now
FROM temp.outcome_batch AS b
WHERE contacts.id = b.contact_id AND b.give_back = 1
  AND contacts.status = 'dialing' AND contacts.attempt_count = b.attempt_no

-- finish_attempts_batch --
-- started_at: the dial's (a contact claimed ahead is dialed a little after its claim wrote the row).
UPDATE attempts
SET outcome = b.outcome, sip_code = b.sip_code, reason = b.reason,
    answered_at = b.answered_at, ended_at = b.ended_at, duration = b.duration,
    charged_usd = b.charged_usd, started_at = b.started_at
FROM temp.outcome_batch AS b
WHERE attempts.contact_id = b.contact_id AND attempts.attempt_no = b.attempt_no
  AND attempts.outcome IS NULL AND b.give_back = 0

-- drop_given_back_attempts --
-- A dial that was never sent is no attempt: its row (written at the claim) goes, so that a
-- provider that cannot be reached does not add a row on every try.
DELETE FROM attempts
WHERE outcome IS NULL AND (contact_id, attempt_no) IN (
    SELECT contact_id, attempt_no FROM temp.outcome_batch WHERE give_back = 1)

-- forget_outcome --
DELETE FROM temp.outcome_batch WHERE contact_id = ?

-- cancel_listed_outcomes --
-- Contacts of this batch going back to wait whose number was listed meanwhile: never dialed
-- again.
UPDATE contacts
SET status = 'cancelled', failure_reason = 'do_not_call', next_retry_at = NULL,
    next_call_at = NULL, call_until = NULL, completed_at = :now, updated_at = :now
WHERE id IN (SELECT contact_id FROM temp.outcome_batch) AND status IN ('pending', 'queued')
  AND EXISTS (SELECT 1 FROM jobs AS j JOIN dnc_numbers AS d ON d.organization_id = j.organization_id
              WHERE j.id = contacts.job_id AND d.number = contacts.phone)

-- cancelled_jobs --
SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?)) AND status = 'cancelled'

-- add_call_stats_batch --
-- [[job_id, attempts ended, their seconds], ...]
UPDATE jobs SET calls_ended = calls_ended + b.n, call_seconds = call_seconds + b.secs
FROM (SELECT value ->> 0 AS job_id, value ->> 1 AS n, value ->> 2 AS secs FROM json_each(?)) AS b
WHERE jobs.id = b.job_id

-- complete_jobs_if_done --
-- complete_job_if_done for a JSON array of job ids; returns those completed. A job paused for
-- its organization's credits (:credits, the reason) whose last calls just ended is completed
-- too: nothing is left that resuming (refused without credits) could dial.
UPDATE jobs SET status = 'completed', completed_at = :now, updated_at = :now,
                status_reason = CASE WHEN status = 'paused' THEN NULL ELSE status_reason END
WHERE id IN (SELECT value FROM json_each(:ids))
  AND (status = 'running' OR (status = 'paused' AND status_reason = :credits))
  AND NOT EXISTS (
      SELECT 1 FROM job_status_counts c
      WHERE c.job_id = jobs.id AND c.status IN ('pending', 'queued', 'dialing') AND c.n > 0)
RETURNING id

-- add_spend --
INSERT INTO organization_spend (organization_id, spent_usd) VALUES (?, ?)
ON CONFLICT (organization_id) DO UPDATE SET spent_usd = spent_usd + excluded.spent_usd

-- get_spend --
SELECT coalesce((SELECT spent_usd FROM organization_spend WHERE organization_id = ?), 0)

-- contacts_ready --
-- Contacts ready to dial per organization, in running jobs: pending ones (from the kept
-- counts) plus queued ones whose retry is due (a range of the queued-due index, counted up to
-- :most per job so that a sample costs little in a job of any size).
SELECT j.organization_id,
       sum(coalesce((SELECT n FROM job_status_counts c
                     WHERE c.job_id = j.id AND c.status = 'pending'), 0)
           + (SELECT count(*) FROM (SELECT 1 FROM contacts q
                                    WHERE q.job_id = j.id AND q.status = 'queued'
                                      AND q.next_retry_at <= :now LIMIT :most)))
FROM jobs j WHERE j.status = 'running'
GROUP BY j.organization_id

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
                    next_call_at = NULL, call_until = NULL, updated_at = :now
WHERE job_id = :id AND status IN ('pending', 'queued')

-- fail_job --
UPDATE jobs SET status = 'failed', status_reason = :reason, completed_at = :now, updated_at = :now
WHERE id = :id AND status IN ('pending', 'scheduled', 'running', 'paused')

-- reschedule_job --
UPDATE jobs SET status = 'scheduled', scheduled_start_time = :when, timezone = :tz,
                updated_at = :now
WHERE id = :id AND organization_id = :org AND status IN ('pending', 'scheduled')

-- next_retry_due --
-- The earliest retry still to come (one due now but held back, by a live call to its number,
-- is woken when that call ends).
SELECT min(next_retry_at) FROM contacts
WHERE job_id = :job_id AND status = 'queued' AND next_retry_at > :now

-- dialing_contacts --
SELECT c.id, c.job_id, c.seq, c.phone, c.contact_data, c.attempt_count, c.max_attempts,
       a.room_name, a.started_at, c.timezone, c.call_until
FROM contacts c
JOIN attempts a ON a.contact_id = c.id AND a.attempt_no = c.attempt_count AND a.outcome IS NULL
WHERE c.status = 'dialing'
ORDER BY c.job_id, c.seq

-- last_call_due --
-- The latest time a job's waiting contact may first be dialed (estimates).
SELECT max(next_call_at) FROM contacts WHERE job_id = ? AND status = 'pending'

-- last_retry_due --
SELECT max(next_retry_at) FROM contacts WHERE job_id = ? AND status = 'queued'


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

-- job_status --
SELECT status FROM jobs WHERE id = :id AND (:org IS NULL OR organization_id = :org)

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
-- Their calling interval is recomputed by the next claim (it ends now). A number on the
-- organization's do-not-call list is left as it ended: no claim would ever take it, and its job
-- would wait for it for good. Returns the numbers re-queued (those at their cap then wait,
-- defer_capped).
UPDATE contacts
SET status = 'queued', next_retry_at = :now, completed_at = NULL, next_call_at = NULL,
    call_until = :now,
    max_attempts = max(max_attempts, attempt_count + :attempts), updated_at = :now
WHERE job_id = :job_id AND status IN (SELECT value FROM json_each(:statuses))
  AND NOT EXISTS (SELECT 1 FROM dnc_numbers AS d
                  WHERE d.organization_id = :org AND d.number = contacts.phone)
RETURNING phone

-- count_listed_in_statuses --
-- The job's contacts in one of :statuses whose number is on the organization's do-not-call list.
SELECT count(*) FROM contacts AS c
WHERE c.job_id = :job_id AND c.status IN (SELECT value FROM json_each(:statuses))
  AND EXISTS (SELECT 1 FROM dnc_numbers AS d
              WHERE d.organization_id = :org AND d.number = c.phone)

-- restart_job_for_retry --
-- A paused job stays paused (the operator resumes it); any other runs again. Never once expired.
UPDATE jobs
SET status = CASE status WHEN 'paused' THEN 'paused' ELSE 'running' END,
    status_reason = CASE status WHEN 'paused' THEN status_reason END,
    actual_start_time = coalesce(actual_start_time, :now),
    completed_at = NULL, retry_rounds = retry_rounds + 1, updated_at = :now
WHERE id = :id AND status IN (SELECT value FROM json_each(:from_statuses))
  AND (expires_at IS NULL OR expires_at > :now)

-- list_calls --
-- Contacts with their latest placed attempt, in upload order. Filters: statuses (JSON array or
-- NULL), external id (see the contact_external_ids view), seq after.
SELECT json_group_array(json_array(c.id, c.job_id, c.seq, c.phone, json(c.contact_data), c.status, c.attempt_count,
                  c.max_attempts, c.last_attempt_at, c.next_retry_at, c.completed_at, c.error_code,
                  c.failure_reason, c.room_name, c.call_duration, c.updated_at,
                  c.timezone, c.next_call_at, c.call_until,
                  c.disposition, c.summary, json(c.result_data),
                  a.started_at, a.answered_at, a.ended_at)) FROM (
    SELECT * FROM contacts
    WHERE job_id = :job_id AND seq > :after_seq
      AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
      AND (:external_id IS NULL OR id IN (
            SELECT id FROM contact_external_ids
            WHERE job_id = :job_id AND external_id = :external_id))
    ORDER BY seq
    LIMIT :limit OFFSET :offset) AS c
LEFT JOIN attempts a ON a.id = (
    SELECT max(id) FROM attempts
    WHERE contact_id = c.id AND (outcome IS NULL OR outcome <> 'not_placed'))

-- count_calls --
SELECT count(*) FROM contacts c
WHERE c.job_id = :job_id
  AND (:statuses IS NULL OR c.status IN (SELECT value FROM json_each(:statuses)))
  AND (:external_id IS NULL OR c.id IN (
        SELECT id FROM contact_external_ids
        WHERE job_id = :job_id AND external_id = :external_id))

-- batch_call_stats --
-- Per job: contacts with at least one call placed (a given-back claim does not count), the
-- dials made after each contact's first, and when a contact last changed.
-- [[job_id, dispatched, retries, last_change], ...]
SELECT json_group_array(json_array(job_id, dispatched, retries, last_change)) FROM (
    SELECT job_id, sum(attempt_count > 0) AS dispatched,
           sum(max(attempt_count - 1, 0)) AS retries, max(updated_at) AS last_change
    FROM contacts WHERE job_id IN (SELECT value FROM json_each(:ids))
    GROUP BY job_id)

-- contact_field_names --
-- Every key of the contacts' data, in the order they first appear.
SELECT j.key FROM contacts c, json_each(c.contact_data) j
WHERE c.job_id = ?
GROUP BY j.key
ORDER BY min(c.seq), min(j.id)

-- heartbeat --
INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at

-- list_batches --
-- A page of an organization's jobs, newest first, after the job :after_id (keyset paging: the
-- cursor job may itself have been deleted since, its row is still there).
SELECT * FROM jobs
WHERE organization_id = :org AND deleted_at IS NULL
  AND (:agent_id IS NULL OR agent_id = :agent_id)
  AND (:after_id IS NULL OR (created_at, id) < (
        SELECT created_at, id FROM jobs WHERE id = :after_id AND organization_id = :org))
ORDER BY created_at DESC, id DESC
LIMIT :limit

-- job_exists_any_state --
SELECT 1 FROM jobs WHERE id = ? AND organization_id = ?

-- delete_job --
-- Only a finished job with no call still live; its contacts and attempts stay.
UPDATE jobs SET deleted_at = :now
WHERE id = :id AND organization_id = :org AND deleted_at IS NULL
  AND status IN ('completed', 'failed', 'cancelled')
  AND NOT EXISTS (
      SELECT 1 FROM job_status_counts WHERE job_id = :id AND status = 'dialing' AND n > 0)
-- add_job_spend --
UPDATE jobs SET spent_usd = spent_usd + ? WHERE id = ?

-- organization_commitments --
-- What an organization's credits already cover: its spend, plus the unspent part of the
-- estimate of each of its unfinished jobs (released when the job finishes); its unfinished
-- jobs; and the contacts it stores (every job's).
SELECT
    coalesce((SELECT spent_usd FROM organization_spend WHERE organization_id = :org), 0)
        + coalesce((SELECT sum(max(estimated_cost_usd - spent_usd, 0)) FROM jobs
                    WHERE organization_id = :org
                      AND status IN ('pending', 'scheduled', 'running', 'paused')), 0),
    (SELECT count(*) FROM jobs
     WHERE organization_id = :org AND status IN ('pending', 'scheduled', 'running', 'paused')),
    coalesce((SELECT sum(total_contacts) FROM jobs WHERE organization_id = :org), 0)

-- pause_jobs_out_of_credits --
-- Running jobs of organizations whose spend reached their credits (:limits: {org: credits}),
-- with contacts still to dial or in a call (one with none cannot spend: it completes instead).
UPDATE jobs SET status = 'paused', status_reason = :reason, updated_at = :now
WHERE status = 'running' AND organization_id IN (
    SELECT s.organization_id FROM organization_spend s
    JOIN json_each(:limits) l ON l.key = s.organization_id
    WHERE s.spent_usd > 0 AND s.spent_usd >= l.value)
  AND EXISTS (
      SELECT 1 FROM job_status_counts c
      WHERE c.job_id = jobs.id AND c.status IN ('pending', 'queued', 'dialing') AND c.n > 0)
RETURNING id

-- find_idempotency_key --
SELECT fingerprint, response FROM idempotency_keys
WHERE organization_id = :org AND key = :key AND created_at >= :since

-- forget_old_idempotency_keys --
DELETE FROM idempotency_keys WHERE organization_id = :org AND created_at < :since

-- insert_idempotency_key --
INSERT INTO idempotency_keys (organization_id, key, fingerprint, job_id, response, created_at)
VALUES (:org, :key, :fingerprint, :job_id, :response, :now)


-- ------------------------------------------------------------------ expiry

-- next_expiry --
SELECT min(expires_at) FROM jobs
WHERE expires_at IS NOT NULL AND status IN ('pending', 'scheduled', 'running', 'paused')

-- expired_jobs --
SELECT id FROM jobs
WHERE expires_at IS NOT NULL AND expires_at <= :now
  AND status IN ('pending', 'scheduled', 'running', 'paused')

-- expire_contacts --
UPDATE contacts
SET status = 'cancelled', failure_reason = 'expired', next_retry_at = NULL, next_call_at = NULL,
    call_until = NULL, completed_at = :now, updated_at = :now
WHERE job_id = :id AND status IN ('pending', 'queued')

-- expire_job --
-- Completed now, or once the calls still live end (it runs until they are recorded).
UPDATE jobs
SET status = CASE WHEN coalesce((SELECT n FROM job_status_counts
                                 WHERE job_id = :id AND status = 'dialing'), 0) > 0
                  THEN 'running' ELSE 'completed' END,
    completed_at = CASE WHEN coalesce((SELECT n FROM job_status_counts
                                       WHERE job_id = :id AND status = 'dialing'), 0) > 0
                        THEN NULL ELSE :now END,
    actual_start_time = coalesce(actual_start_time, :now),
    status_reason = 'expired', updated_at = :now
WHERE id = :id AND status IN ('pending', 'scheduled', 'running', 'paused')

-- ------------------------------------------------------------------ do-not-call

-- dnc_add --
-- :numbers is a JSON array of E.164 numbers; returns those newly listed. Stamped after every
-- listing before it, whatever the clock says (stepped back, or this writer waited for the lock
-- behind a later stamp): the engine sees listings made from outside by max(added_at) growing
-- (dnc_latest), and one stamped earlier was not seen.
INSERT INTO dnc_numbers (organization_id, number, reason, source, added_at)
SELECT :org, value, :reason, :source,
       max(:now, coalesce((SELECT max(added_at) FROM dnc_numbers), 0) + 0.000001)
FROM json_each(:numbers) WHERE true
ON CONFLICT (organization_id, number) DO NOTHING
RETURNING number

-- dnc_cancel_contacts --
-- Listed numbers are never dialed again, in whichever job of the organization they wait.
UPDATE contacts
SET status = 'cancelled', failure_reason = 'do_not_call', next_retry_at = NULL,
    next_call_at = NULL, call_until = NULL, completed_at = :now, updated_at = :now
WHERE phone IN (SELECT value FROM json_each(:numbers)) AND status IN ('pending', 'queued')
  AND job_id IN (SELECT id FROM jobs WHERE organization_id = :org)
RETURNING job_id

-- dnc_remove --
DELETE FROM dnc_numbers WHERE organization_id = :org AND number = :number

-- dnc_page --
SELECT json_group_array(json_object('number', number, 'reason', reason, 'source', source,
    'addedAt', strftime('%Y-%m-%dT%H:%M:%SZ', added_at, 'unixepoch'), 'jobId', job_id)) FROM (
    SELECT * FROM dnc_numbers
    WHERE organization_id = :org AND (:number IS NULL OR number = :number)
    ORDER BY number LIMIT :limit OFFSET :offset)

-- dnc_count --
SELECT count(*) FROM dnc_numbers
WHERE organization_id = :org AND (:number IS NULL OR number = :number)

-- bump_dial_epoch --
-- A transaction recorded outcomes (see migration 0018).
UPDATE dial_epoch SET n = n + 1 WHERE id = 1 RETURNING n

-- dial_epoch --
SELECT n FROM dial_epoch WHERE id = 1

-- dnc_latest --
-- When the latest listing was made, any organization (index dnc_numbers_added).
SELECT max(added_at) FROM dnc_numbers

-- ------------------------------------------------------------------ call records

-- call_records_page --
-- Every attempt of the organization started in [:from, :to), in start order, after the
-- attempt :after_id (keyset on its start time and id), as one JSON array of rows in export
-- column order. The start time is the attempt's own, read here: the one in the JSON rows is
-- rounded to 15 digits, and attempts started in the same microsecond at a page's end were
-- repeated or left out. (:after_started, that rounded time, only if the attempt is gone.)
SELECT json_group_array(json_array(a.id, a.job_id, a.contact_id, a.from_number, a.to_number,
                                   a.started_at, a.answered_at, a.ended_at, a.duration,
                                   a.outcome, a.sip_code, a.reason)) FROM (
    SELECT * FROM attempts
    WHERE organization_id = :org AND started_at >= :from AND started_at < :to
      AND (started_at, id) > (
          coalesce((SELECT started_at FROM attempts WHERE id = :after_id), :after_started),
          :after_id)
    ORDER BY started_at, id LIMIT :limit) AS a


-- insert_webhook_endpoint --
-- In the first free slot of its organization, unless it has :limit endpoints already (no row
-- inserted; :limit is at most the 32 slots, so a free one is below it); it takes the events
-- recorded from now on.
INSERT INTO webhook_endpoints (id, organization_id, url, events, description, secret, created_at,
                               slot, taken_through)
SELECT :id, :org, :url, :events, :description, :secret, :now,
       (SELECT min(s.slot) FROM (
            SELECT 0 AS slot
            UNION ALL SELECT slot + 1 FROM webhook_endpoints WHERE organization_id = :org) AS s
        WHERE s.slot NOT IN (SELECT slot FROM webhook_endpoints WHERE organization_id = :org)),
       coalesce((SELECT max(id) FROM webhook_changes), 0) * 2 + 1
WHERE (SELECT count(*) FROM webhook_endpoints WHERE organization_id = :org) < :limit

-- list_webhook_endpoints --
SELECT id, organization_id, url, events, description, secret, created_at
FROM webhook_endpoints WHERE organization_id = ? ORDER BY created_at, id

-- delete_webhook_endpoint --
-- Its taken deliveries go first (delete_webhook_endpoint_deliveries); the others go with it.
DELETE FROM webhook_endpoints WHERE id = ? AND organization_id = ?

-- delete_webhook_endpoint_deliveries --
DELETE FROM webhook_taken_deliveries WHERE endpoint_id = ? AND organization_id = ?

-- prunable_webhook_changes --
-- Up to :limit of the oldest changes made before :before that no delivery needs any more, as a
-- JSON array of ids: no endpoint of the organization has one of their events still to take (as
-- webhook_untaken_deliveries: after its taken_through, of a type it asked for; an endpoint that
-- asked for other types holds nothing back), and none of their taken deliveries is pending
-- (each was delivered, or failed for good).
-- Read in id order from the oldest up to the first change made at or after :before (ids grow
-- with time), and never the newest change, so that change ids (rowids: the largest plus one)
-- keep growing, as taken_through and the numbering count on. With :ids (a JSON array), only
-- among those (checked again in the pruning write). Delivery ids of change c's events are
-- c * 64 .. c * 64 + 63 (event id * 32 + endpoint slot).
SELECT json_group_array(id) FROM (
    SELECT c.id FROM webhook_changes AS c
    WHERE c.id < coalesce(
              (SELECT n.id FROM webhook_changes AS n WHERE n.created_at >= :before
               ORDER BY n.id LIMIT 1),
              (SELECT max(id) FROM webhook_changes))
      AND (:ids IS NULL OR c.id IN (SELECT value FROM json_each(:ids)))
      AND NOT EXISTS (SELECT 1 FROM webhook_endpoints AS p
                      JOIN webhook_event_kinds AS k ON k.kind = c.kind
                      WHERE p.organization_id = c.organization_id
                        AND c.id * 2 + k.k > p.taken_through
                        AND (p.events IS NULL OR instr(p.events, '"' || k.type || '"') > 0))
      AND NOT EXISTS (SELECT 1 FROM webhook_taken_deliveries AS d
                      WHERE d.id BETWEEN c.id * 64 AND c.id * 64 + 63 AND d.status = 'pending')
    ORDER BY c.id LIMIT :limit)

-- prune_webhook_deliveries --
-- The taken deliveries of the changes :ids (a JSON array, ascending from :lo / 64 to :hi / 64).
DELETE FROM webhook_taken_deliveries
WHERE id BETWEEN :lo AND :hi AND id / 64 IN (SELECT value FROM json_each(:ids))

-- prune_webhook_changes --
DELETE FROM webhook_changes WHERE id IN (SELECT value FROM json_each(:ids))

-- webhook_sender_endpoints --
SELECT id, url, secret FROM webhook_endpoints ORDER BY id

-- webhook_due_deliveries --
-- Up to :limit taken deliveries of one endpoint that are due and not in flight (:busy, a JSON
-- array of delivery ids), oldest due first: [[delivery id, event id, attempts made, due at], ...]
SELECT json_group_array(json_array(id, event_id, attempts, next_attempt_at)) FROM (
    SELECT id, event_id, attempts, next_attempt_at FROM webhook_taken_deliveries
    WHERE endpoint_id = :endpoint_id AND status = 'pending' AND next_attempt_at <= :now
      AND id NOT IN (SELECT value FROM json_each(:busy))
    ORDER BY next_attempt_at, id LIMIT :limit)

-- webhook_next_untaken --
-- The next :limit deliveries of one endpoint not taken yet, in event order (as the view
-- webhook_untaken_deliveries has them, looked for after change :seen, which had none):
-- [[delivery id, event id, 0, due at], ...]
SELECT json_group_array(json_array(id, event_id, 0, created_at)) FROM (
    SELECT (c.id * 2 + k.k) * 32 + p.slot AS id, c.id * 2 + k.k AS event_id, c.created_at
    FROM webhook_endpoints AS p
    CROSS JOIN webhook_changes AS c
        ON c.id > max(:seen, p.taken_through / 2 - 1) AND +c.organization_id = p.organization_id
    JOIN webhook_event_kinds AS k ON k.kind = c.kind
    WHERE p.id = :endpoint_id AND c.id * 2 + k.k > p.taken_through
      AND (p.events IS NULL OR instr(p.events, '"' || k.type || '"') > 0)
    ORDER BY c.id, k.k LIMIT :limit)

-- last_webhook_change --
SELECT coalesce(max(id), 0) FROM webhook_changes

-- webhook_next_due --
-- When the earliest taken delivery of an endpoint that is not in flight is due (one not taken
-- is due at once: it is only left when every slot is busy).
SELECT min(next_attempt_at) FROM webhook_taken_deliveries
WHERE endpoint_id = :endpoint_id AND status = 'pending'
  AND id NOT IN (SELECT value FROM json_each(:busy))

-- webhook_changes_organizations --
-- The organizations of these changes (a JSON array of ids), each with the latest of them.
SELECT c.organization_id, max(c.id)
FROM json_each(?) AS i JOIN webhook_changes AS c ON c.id = i.value
GROUP BY c.organization_id

-- webhook_sequence_state --
SELECT last_sequence, through_change FROM webhook_sequences WHERE organization_id = ?

-- number_webhook_changes --
-- Give the organization's changes in (:through, :upto] their sequence, in order, from :last.
UPDATE webhook_changes SET sequence = n.sequence
FROM (SELECT c.id, :last + sum(k.events) OVER (ORDER BY c.id) - k.events + 1 AS sequence
      FROM webhook_changes AS c
      JOIN (SELECT kind, count(*) AS events FROM webhook_event_kinds GROUP BY kind) AS k
          ON k.kind = c.kind
      WHERE c.id > :through AND c.id <= :upto AND c.organization_id = :org) AS n
WHERE webhook_changes.id = n.id

-- save_webhook_sequence_state --
INSERT INTO webhook_sequences (organization_id, last_sequence, through_change)
VALUES (:org, coalesce((
    SELECT max(c.sequence + k.events - 1)
    FROM webhook_changes AS c
    JOIN (SELECT kind, count(*) AS events FROM webhook_event_kinds GROUP BY kind) AS k
        ON k.kind = c.kind
    WHERE c.id > :through AND c.id <= :upto AND c.organization_id = :org), :last), :upto)
ON CONFLICT (organization_id) DO UPDATE
SET last_sequence = excluded.last_sequence, through_change = excluded.through_change

-- take_webhook_deliveries --
-- [[delivery id, event id, endpoint id, due at], ...], each the next of its endpoint in order.
-- (An endpoint deleted meanwhile takes nothing.)
INSERT INTO webhook_taken_deliveries (id, event_id, endpoint_id, organization_id, status,
                                      next_attempt_at)
SELECT t.value ->> 0, t.value ->> 1, p.id, p.organization_id, 'pending', t.value ->> 3
FROM json_each(:taken) AS t JOIN webhook_endpoints AS p ON p.id = t.value ->> 2
WHERE t.value ->> 1 > p.taken_through

-- advance_webhook_taken --
-- [[endpoint id, event id], ...]: the endpoint's deliveries up to that event are taken.
UPDATE webhook_endpoints SET taken_through = max(taken_through, t.value ->> 1)
FROM json_each(:through) AS t
WHERE webhook_endpoints.id = t.value ->> 0

-- webhook_payloads --
-- The events as they are sent: [[event id, webhook id, type, sequence, created_at, data], ...]
SELECT json_group_array(json_array(i.value, e.webhook_id, e.type, e.sequence, e.created_at,
                                   json(d.data)))
FROM json_each(:events) AS i
JOIN webhook_change_events AS e ON e.change_id = i.value >> 1 AND e.k = i.value & 1
JOIN webhook_change_documents AS d ON d.change_id = i.value >> 1 AND d.k = i.value & 1

-- record_webhook_attempts --
-- The sends of a round: [[delivery id, attempts before, status, next attempt at, HTTP status,
-- error, attempted at], ...]. Guarded on the attempt count, so a result never lands twice.
UPDATE webhook_taken_deliveries
SET status = r.value ->> 2, attempts = attempts + 1, next_attempt_at = r.value ->> 3,
    last_status = r.value ->> 4, last_error = r.value ->> 5, last_attempt_at = r.value ->> 6,
    delivered_at = CASE WHEN r.value ->> 2 = 'delivered' THEN r.value ->> 6 END
FROM json_each(:results) AS r
WHERE webhook_taken_deliveries.id = r.value ->> 0
  AND webhook_taken_deliveries.status = 'pending'
  AND webhook_taken_deliveries.attempts = r.value ->> 1

-- list_webhook_deliveries --
-- Newest first, taken or not (as the webhook_deliveries view); filters: endpoint, status.
SELECT d.*, e.webhook_id, e.type, e.sequence, e.created_at FROM (
    SELECT id, event_id, endpoint_id, organization_id, status, attempts, next_attempt_at,
           last_attempt_at, last_status, last_error, delivered_at
    FROM webhook_taken_deliveries
    WHERE organization_id = :org
      AND (:endpoint_id IS NULL OR endpoint_id = :endpoint_id)
      AND (:status IS NULL OR status = :status)
    UNION ALL
    SELECT id, event_id, endpoint_id, organization_id, 'pending', 0, created_at, NULL, NULL,
           NULL, NULL
    FROM webhook_untaken_deliveries
    WHERE organization_id = :org
      AND (:endpoint_id IS NULL OR endpoint_id = :endpoint_id)
      AND coalesce(:status, 'pending') = 'pending'
    ORDER BY id DESC
    LIMIT :limit OFFSET :offset) AS d
JOIN webhook_change_events AS e ON e.change_id = d.event_id >> 1 AND e.k = d.event_id & 1
ORDER BY d.id DESC

-- count_webhook_deliveries --
SELECT (SELECT count(*) FROM webhook_taken_deliveries
        WHERE organization_id = :org
          AND (:endpoint_id IS NULL OR endpoint_id = :endpoint_id)
          AND (:status IS NULL OR status = :status))
     + (SELECT count(*) FROM webhook_untaken_deliveries
        WHERE organization_id = :org
          AND (:endpoint_id IS NULL OR endpoint_id = :endpoint_id)
          AND coalesce(:status, 'pending') = 'pending')

-- get_webhook_delivery --
-- By id: `event id * 32 + endpoint slot`, taken or not.
SELECT d.*, e.webhook_id, e.type, e.sequence, e.created_at FROM (
    SELECT id, event_id, endpoint_id, organization_id, status, attempts, next_attempt_at,
           last_attempt_at, last_status, last_error, delivered_at
    FROM webhook_taken_deliveries WHERE id = :id AND organization_id = :org
    UNION ALL
    SELECT u.id, u.event_id, u.endpoint_id, u.organization_id, 'pending', 0, u.created_at,
           NULL, NULL, NULL, NULL
    FROM webhook_untaken_deliveries AS u
    WHERE u.change_id = :id >> 6 AND u.k = (:id >> 5) & 1 AND u.organization_id = :org
      AND u.endpoint_id = (SELECT id FROM webhook_endpoints
                           WHERE organization_id = :org AND slot = :id & 31)
    LIMIT 1) AS d
JOIN webhook_change_events AS e ON e.change_id = d.event_id >> 1 AND e.k = d.event_id & 1

-- replay_webhook_delivery --
-- A dead letter is sent again now; failing again, it takes up the retry schedule where it left
-- it (one that had used every retry is failed again at once).
UPDATE webhook_taken_deliveries SET status = 'pending', next_attempt_at = :now
WHERE id = :id AND organization_id = :org AND status = 'failed'

-- ------------------------------------------------------------------ agents' results

-- callback_secret --
SELECT value FROM secrets WHERE name = 'callback_token'

-- contact_status --
SELECT status FROM contacts WHERE id = :contact_id

-- attempt_for_room --
-- The attempt a room belongs to (a dial given back is none), in a job not deleted.
SELECT j.organization_id, a.job_id, a.contact_id, a.attempt_no, a.outcome, a.ended_at
FROM attempts AS a JOIN jobs AS j ON j.id = a.job_id
WHERE a.contact_id = :contact_id AND a.attempt_no = :attempt_no AND a.room_name = :room
  AND j.deleted_at IS NULL AND (a.outcome IS NULL OR a.outcome <> 'not_placed')

-- count_results_for_attempt --
SELECT count(*) FROM call_results WHERE contact_id = :contact_id AND attempt_no = :attempt_no

-- insert_result --
INSERT INTO call_results (organization_id, job_id, contact_id, attempt_no, room_name,
                          disposition, callback_at, summary, data, source, received_at)
VALUES (:org, :job_id, :contact_id, :attempt_no, :room, :disposition, :callback_at, :summary,
        :data, :source, :now)

-- show_result_on_contact --
-- The latest result of the contact's latest attempt is what its document shows.
UPDATE contacts SET disposition = :disposition, summary = :summary, result_data = :data,
                    updated_at = :now
WHERE id = :contact_id AND attempt_count = :attempt_no

-- any_pending_result --
SELECT EXISTS (SELECT 1 FROM call_results WHERE applied_at IS NULL)

-- pending_results_in_batch --
-- Results posted while the calls of this batch of outcomes were live: the latest per attempt.
SELECT r.contact_id, r.attempt_no, max(r.id), max(b.give_back)
FROM temp.outcome_batch AS b
JOIN call_results AS r ON r.contact_id = b.contact_id AND r.attempt_no = b.attempt_no
WHERE r.applied_at IS NULL
GROUP BY r.contact_id, r.attempt_no

-- cancel_contact_if_listed --
UPDATE contacts
SET status = 'cancelled', failure_reason = 'do_not_call', next_retry_at = NULL,
    next_call_at = NULL, call_until = NULL, completed_at = :now, updated_at = :now
WHERE id = :contact_id AND status IN ('pending', 'queued')
  AND EXISTS (SELECT 1 FROM jobs AS j JOIN dnc_numbers AS d ON d.organization_id = j.organization_id
              WHERE j.id = contacts.job_id AND d.number = contacts.phone)

-- result_context --
SELECT r.disposition, r.callback_at, c.status, c.attempt_count, c.max_attempts, c.timezone,
       c.phone, j.id, j.organization_id, j.status, j.retry_statuses, j.retry_delay_seconds,
       j.retry_backoff, j.retry_on_voicemail, j.calling_windows
FROM call_results AS r JOIN contacts AS c ON c.id = r.contact_id JOIN jobs AS j ON j.id = c.job_id
WHERE r.id = :result_id

-- apply_result_to_contact --
-- Only a contact whose latest attempt this was, and that is not dialing again nor cancelled (by
-- an operator, a do-not-call listing or its job's expiry).
UPDATE contacts
SET status = :status, next_retry_at = :next_retry_at, next_call_at = :next_call_at,
    call_until = :call_until, max_attempts = :max_attempts, completed_at = :completed_at,
    error_code = NULL, failure_reason = :failure_reason, updated_at = :now
WHERE id = :contact_id AND attempt_count = :attempt_no AND status NOT IN ('dialing', 'cancelled')

-- mark_results_applied --
UPDATE call_results SET applied_at = :now
WHERE contact_id = :contact_id AND attempt_no = :attempt_no AND applied_at IS NULL

-- reopen_job --
-- A result queued a contact of a job that had completed: it runs again.
UPDATE jobs SET status = 'running', completed_at = NULL, updated_at = :now
WHERE id = :id AND status = 'completed'

-- dnc_add_from_agent --
INSERT INTO dnc_numbers (organization_id, number, reason, source, added_at, job_id)
VALUES (:org, :number, :reason, 'agent', :now, :job_id)
ON CONFLICT (organization_id, number) DO NOTHING

-- results_for_attempt --
SELECT json_group_array(json_array(id, organization_id, job_id, contact_id, attempt_no,
                                   room_name, disposition, callback_at, summary, json(data),
                                   source, received_at, applied_at)) FROM (
    SELECT * FROM call_results WHERE contact_id = :contact_id AND attempt_no = :attempt_no
    ORDER BY id)

-- results_since --
SELECT json_group_array(json_array(id, organization_id, job_id, contact_id, attempt_no,
                                   room_name, disposition, callback_at, summary, json(data),
                                   source, received_at, applied_at)) FROM (
    SELECT * FROM call_results WHERE job_id = :job_id AND id > :after_id
    ORDER BY id LIMIT :limit)

-- last_result_id --
SELECT coalesce(max(id), 0) FROM call_results WHERE job_id = :job_id

-- ------------------------------------------------------------------ chores (migration 0016)

-- chore_pending --
SELECT 1 FROM chores WHERE name = :name

-- chore_done --
DELETE FROM chores WHERE name = :name

-- open_phones_outside_nanp --
-- Contacts still to be dialed whose number may be spelled another way (+1 numbers cannot).
SELECT id, phone FROM contacts
WHERE status IN ('pending', 'queued', 'dialing') AND substr(phone, 1, 2) <> '+1'

-- set_contact_phone --
UPDATE contacts SET phone = :phone WHERE id = :id

-- listed_outside_nanp --
SELECT organization_id, number, reason, source, added_at FROM dnc_numbers
WHERE substr(number, 1, 2) <> '+1'

-- list_also_as --
INSERT INTO dnc_numbers (organization_id, number, reason, source, added_at)
VALUES (:org, :number, :reason, :source, :added_at)
ON CONFLICT (organization_id, number) DO NOTHING
