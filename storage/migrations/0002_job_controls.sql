-- Job controls: how many operator retry rounds a job has had (the compat routes' retry_count).
ALTER TABLE jobs ADD COLUMN retry_rounds INTEGER NOT NULL DEFAULT 0;
