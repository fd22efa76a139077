-- Running totals of each job's ended attempts (slot time: claim to end), so that the observed
-- average call length behind estimatedCompletionTime never needs a scan of the attempts.
ALTER TABLE jobs ADD COLUMN calls_ended INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN call_seconds REAL NOT NULL DEFAULT 0;

UPDATE jobs SET
    calls_ended = (SELECT count(*) FROM attempts a
                   WHERE a.job_id = jobs.id AND a.outcome IS NOT NULL
                     AND a.outcome <> 'not_placed' AND a.ended_at IS NOT NULL),
    call_seconds = coalesce((SELECT sum(max(0, a.ended_at - a.started_at)) FROM attempts a
                             WHERE a.job_id = jobs.id AND a.outcome IS NOT NULL
                               AND a.outcome <> 'not_placed' AND a.ended_at IS NOT NULL), 0);
