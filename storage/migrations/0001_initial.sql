-- Jobs, contacts, call attempts, API keys.
-- Times are unix seconds (REAL); the API layer formats them.

CREATE TABLE jobs (
    id                    TEXT PRIMARY KEY,
    organization_id       TEXT NOT NULL,
    name                  TEXT NOT NULL,
    description           TEXT,
    status                TEXT NOT NULL CHECK (status IN
                            ('pending','scheduled','running','paused','completed','failed','cancelled')),
    agent_id              TEXT NOT NULL,
    phone_number_id       TEXT NOT NULL,
    concurrent_call_limit INTEGER NOT NULL,
    max_attempts          INTEGER NOT NULL,
    retry_statuses        TEXT NOT NULL,          -- JSON array
    retry_delay_seconds   REAL NOT NULL,
    retry_backoff         REAL NOT NULL,
    timezone              TEXT NOT NULL DEFAULT 'UTC',
    scheduled_start_time  REAL,
    actual_start_time     REAL,
    completed_at          REAL,
    created_at            REAL NOT NULL,
    updated_at            REAL NOT NULL,
    total_contacts        INTEGER NOT NULL,
    status_reason         TEXT,
    estimated_cost_usd    REAL NOT NULL DEFAULT 0
);
CREATE INDEX jobs_org_created ON jobs (organization_id, created_at DESC);
CREATE INDEX jobs_org_status_created ON jobs (organization_id, status, created_at DESC);
CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE contacts (
    id              INTEGER PRIMARY KEY,
    job_id          TEXT NOT NULL REFERENCES jobs (id),
    seq             INTEGER NOT NULL,              -- upload order within the job
    phone           TEXT NOT NULL,
    contact_data    TEXT NOT NULL,                 -- JSON object
    status          TEXT NOT NULL CHECK (status IN
                      ('pending','queued','dialing','completed','no_answer','busy','timeout',
                       'blocked','invalid_number','carrier_error','failed','cancelled')),
    attempt_count   INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    last_attempt_at REAL,
    next_retry_at   REAL,
    completed_at    REAL,
    error_code      TEXT,
    failure_reason  TEXT,
    room_name       TEXT,
    call_duration   INTEGER,
    updated_at      REAL NOT NULL,
    UNIQUE (job_id, seq)
);
CREATE INDEX contacts_job_status_seq ON contacts (job_id, status, seq);
CREATE INDEX contacts_dialing ON contacts (status) WHERE status = 'dialing';
CREATE INDEX contacts_queued_due ON contacts (job_id, next_retry_at) WHERE status = 'queued';

-- Every dial attempt: written when the contact is claimed (before the provider is asked to dial),
-- completed when the outcome is known. Never deleted. outcome 'not_placed' marks a claim whose
-- dial never reached the provider (no call was placed, the attempt was given back).
CREATE TABLE attempts (
    id             INTEGER PRIMARY KEY,
    contact_id     INTEGER NOT NULL REFERENCES contacts (id),
    job_id         TEXT NOT NULL,
    attempt_no     INTEGER NOT NULL,
    room_name      TEXT NOT NULL,
    started_at     REAL NOT NULL,
    answered_at    REAL,
    ended_at       REAL,
    outcome        TEXT,                            -- NULL while the call is live
    sip_code       INTEGER,
    reason         TEXT,
    duration       INTEGER,
    charged_usd    REAL NOT NULL DEFAULT 0
);
CREATE INDEX attempts_contact ON attempts (contact_id, attempt_no);
CREATE INDEX attempts_job ON attempts (job_id);
CREATE INDEX attempts_live ON attempts (contact_id) WHERE outcome IS NULL;

-- Per-job count of contacts in each status, kept by triggers so that counters always add up
-- to total_contacts and never need a scan of the contacts table.
CREATE TABLE job_status_counts (
    job_id TEXT NOT NULL,
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (job_id, status)
) WITHOUT ROWID;

CREATE TRIGGER contacts_count_insert AFTER INSERT ON contacts
BEGIN
    INSERT INTO job_status_counts (job_id, status, n) VALUES (NEW.job_id, NEW.status, 1)
    ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER contacts_count_update AFTER UPDATE OF status ON contacts
WHEN OLD.status <> NEW.status
BEGIN
    UPDATE job_status_counts SET n = n - 1 WHERE job_id = OLD.job_id AND status = OLD.status;
    INSERT INTO job_status_counts (job_id, status, n) VALUES (NEW.job_id, NEW.status, 1)
    ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1;
END;

-- Money charged per organization (answered seconds), kept by trigger for credit checks.
CREATE TABLE organization_spend (
    organization_id TEXT PRIMARY KEY,
    spent_usd       REAL NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    prefix          TEXT NOT NULL,
    name            TEXT,
    created_at      REAL NOT NULL,
    revoked_at      REAL
);
CREATE INDEX api_keys_org ON api_keys (organization_id);
