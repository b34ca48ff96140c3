-- Idempotency-Key (IETF httpapi draft) on create and rotate. A key is bound, per account, to the
-- fingerprint of the request and to the job it started; a retry with the same key and request is
-- answered from that job (its sealed password and outcome), so nothing runs twice and no response
-- body, let alone a password, is stored. Keys expire after 24 hours.
CREATE TABLE idempotency_keys (
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    key         TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    fingerprint BYTEA NOT NULL CHECK (length(fingerprint) = 32),
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
