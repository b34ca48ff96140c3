-- Tenants. db_tag is the stable 10-hex part of every generated name; next_db_seq only grows,
-- so a name is never reused, even after a deletion.
CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    db_tag      TEXT NOT NULL UNIQUE CHECK (db_tag ~ '^[0-9a-f]{10}$'),
    slots       INTEGER NOT NULL CHECK (slots >= 0),
    storage_mb  BIGINT NOT NULL CHECK (storage_mb >= 0),
    db_access   BOOLEAN NOT NULL DEFAULT TRUE,
    suspended   BOOLEAN NOT NULL DEFAULT FALSE,
    next_db_seq INTEGER NOT NULL DEFAULT 1 CHECK (next_db_seq >= 1),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Bearer keys, stored only as SHA-256 of the key. disabled_by_suspension remembers which keys
-- the suspension cascade turned off, so unsuspending re-enables exactly those.
CREATE TABLE api_keys (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts (id),
    key_hash               BYTEA NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    enabled                BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_by_suspension BOOLEAN NOT NULL DEFAULT FALSE,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- Managed databases. password_sealed is XChaCha20-Poly1305 under the master key with the row's
-- id as associated data. State 'creating' rows are the write-ahead intent of a create job.
CREATE TABLE databases (
    id                TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    name              TEXT NOT NULL,
    engine            TEXT NOT NULL CHECK (engine IN ('mariadb', 'postgres', 'mongo')),
    seq               INTEGER NOT NULL,
    db_name           TEXT NOT NULL UNIQUE,
    db_user           TEXT NOT NULL UNIQUE,
    password_sealed   BYTEA NOT NULL,
    state             TEXT NOT NULL
        CHECK (state IN ('creating', 'active', 'over_quota', 'disabled', 'failed', 'deleting')),
    size_bytes        BIGINT NOT NULL DEFAULT 0,
    size_refreshed_at TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (account_id, seq)
);
-- A failed create releases its name; every other state holds it.
CREATE UNIQUE INDEX databases_account_name ON databases (account_id, name) WHERE state <> 'failed';
CREATE INDEX databases_account_created ON databases (account_id, created_at, id);

-- Jobs: one row per create or rotate, written in the same transaction as the intent, before the
-- AMQP message. For a rotate, password_sealed is the new password (sealed to the database id):
-- it exists durably before the engine is changed, so it cannot be lost.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    database_id     TEXT REFERENCES databases (id) ON DELETE SET NULL,
    kind            TEXT NOT NULL CHECK (kind IN ('create', 'rotate')),
    state           TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'cancelled')),
    password_sealed BYTEA,
    attempts        INTEGER NOT NULL DEFAULT 0,
    error_code      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_database ON jobs (database_id);
CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('pending', 'running');
