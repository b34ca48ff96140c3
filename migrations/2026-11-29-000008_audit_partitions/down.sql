ALTER TABLE audit_log RENAME TO audit_log_partitioned;
ALTER INDEX audit_log_account RENAME TO audit_log_partitioned_account;
ALTER TABLE audit_log_partitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_partitioned_pkey;
ALTER SEQUENCE audit_log_id_seq OWNED BY NONE;
CREATE TABLE audit_log (
    id          BIGINT PRIMARY KEY DEFAULT nextval('audit_log_id_seq'),
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    database_id TEXT,
    key_id      TEXT,
    address     TEXT,
    detail      TEXT
);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
CREATE INDEX audit_log_account ON audit_log (account_id, at);
INSERT INTO audit_log SELECT * FROM audit_log_partitioned;
DROP TABLE audit_log_partitioned;
DROP FUNCTION hepdb_ensure_audit_partition(date);
