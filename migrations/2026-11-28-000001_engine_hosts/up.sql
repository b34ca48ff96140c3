-- Engine servers. The list comes from configuration (each gateway and worker registers its
-- hosts at start); `drained` is operator state (`hepdb-admin host drain`) that lives only here,
-- so every gateway replica sees it. public_host/public_port are what connection strings carry.
CREATE TABLE engine_hosts (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    engine      TEXT NOT NULL CHECK (engine IN ('mariadb', 'postgres', 'mongo')),
    public_host TEXT NOT NULL,
    public_port INTEGER NOT NULL CHECK (public_port BETWEEN 0 AND 65535),
    capacity    INTEGER NOT NULL CHECK (capacity >= 0),
    drained     BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Databases made before hosts existed live on the single host named after their engine; its
-- endpoint is filled in when a process with that host configured starts.
INSERT INTO engine_hosts (name, engine, public_host, public_port, capacity)
SELECT DISTINCT engine, engine, '', 0, 0 FROM databases;

ALTER TABLE databases ADD COLUMN host TEXT REFERENCES engine_hosts (name);
UPDATE databases SET host = engine;
ALTER TABLE databases ALTER COLUMN host SET NOT NULL;
CREATE INDEX databases_host_state ON databases (host, state);
