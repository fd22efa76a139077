-- A deleted batch: hidden from every route (reads filter on deleted_at IS NULL) while its
-- contacts and attempt rows stay for the records.
ALTER TABLE jobs ADD COLUMN deleted_at REAL;
-- A job's own ringing timeout (the batch-calling submit's telephony_call_config); NULL: the
-- provider's configured one.
ALTER TABLE jobs ADD COLUMN ringing_timeout_seconds REAL;
