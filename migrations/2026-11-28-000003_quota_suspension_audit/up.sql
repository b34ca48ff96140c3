-- What the engine currently grants each database's user: 'full', 'restricted' (over its
-- storage quota: read and delete only) or 'locked' (suspended: no login). The wanted access
-- follows from metadata (account suspended -> locked, state over_quota -> restricted, else
-- full); a row where the two differ is work for an access job or the reconciler.
ALTER TABLE databases ADD COLUMN engine_access TEXT NOT NULL DEFAULT 'full'
    CHECK (engine_access IN ('full', 'restricted', 'locked'));

-- Access jobs carry a suspension, unsuspension or quota change to one database's engine.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('create', 'rotate', 'access'));

-- One row per periodic task (the quota watcher): when its last pass started, so that several
-- worker replicas together run it once per interval.
CREATE TABLE periodic_runs (
    name        TEXT PRIMARY KEY,
    last_run_at TIMESTAMPTZ NOT NULL
);

-- Who did what, when, from where. Never a secret: no password, no key, only ids.
CREATE TABLE audit_log (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    database_id TEXT,
    key_id      TEXT,
    address     TEXT,
    detail      TEXT
);
CREATE INDEX audit_log_account ON audit_log (account_id, at);
