-- Idempotency-Key on the platform API: a key is bound, per platform token, to the resource the
-- first request made or changed, in the same transaction as the change. A retry answers from
-- that resource's current state; no response body is stored (a minted key is never replayed).
CREATE TABLE platform_idempotency (
    token_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint BYTEA NOT NULL,
    resource TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (token_id, key)
);
