-- The platform API (README, "The platform API"): the hosting platform's own services call it
-- with tokens minted by `hepdb-admin platform-token mint`. Only the token's SHA-256 is stored;
-- its name is the actor in the audit log.
CREATE TABLE platform_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ
);

-- The platform's own id for the account's owner, unique, so a retried create finds its account.
ALTER TABLE accounts ADD COLUMN external_id TEXT UNIQUE;

-- What the dashboard shows of a key: its label, when it was last used (coarse: written at most
-- once an hour per key, never a write per request), and whether it was revoked for good.
ALTER TABLE api_keys ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN last_used_at TIMESTAMPTZ;
ALTER TABLE api_keys ADD COLUMN revoked_at TIMESTAMPTZ;
