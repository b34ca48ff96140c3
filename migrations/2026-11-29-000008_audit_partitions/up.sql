-- The audit log, partitioned by month (UTC), so that retention drops whole partitions: no
-- DELETE, no bloat, no long lock (hepdb_store::retention detaches them CONCURRENTLY). There is
-- no default partition (it would forbid concurrent detaching); the reconciler keeps three
-- months of partitions ahead, and this creates them from the oldest row on.
ALTER TABLE audit_log RENAME TO audit_log_unpartitioned;
ALTER INDEX audit_log_account RENAME TO audit_log_unpartitioned_account;
ALTER TABLE audit_log_unpartitioned RENAME CONSTRAINT audit_log_pkey TO audit_log_unpartitioned_pkey;
ALTER SEQUENCE audit_log_id_seq OWNED BY NONE;

CREATE TABLE audit_log (
    id          BIGINT NOT NULL DEFAULT nextval('audit_log_id_seq'),
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    database_id TEXT,
    key_id      TEXT,
    address     TEXT,
    detail      TEXT,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;
-- An account's entries, newest first by id (the platform API's listing).
CREATE INDEX audit_log_account ON audit_log (account_id, id);

-- The partition of the UTC month starting `month_start`, made if missing.
CREATE FUNCTION hepdb_ensure_audit_partition(month_start date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  name text := 'audit_log_' || to_char(month_start, 'YYYYMM');
BEGIN
  IF to_regclass(name) IS NULL THEN
    EXECUTE format('CREATE TABLE %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
      name,
      date_trunc('month', month_start)::timestamp AT TIME ZONE 'UTC',
      (date_trunc('month', month_start) + interval '1 month')::timestamp AT TIME ZONE 'UTC');
  END IF;
END $$;

SELECT hepdb_ensure_audit_partition(m::date)
FROM generate_series(
  date_trunc('month', coalesce((SELECT min(at) FROM audit_log_unpartitioned), now()) AT TIME ZONE 'UTC'),
  date_trunc('month', now() AT TIME ZONE 'UTC') + interval '3 months',
  interval '1 month') AS m;

INSERT INTO audit_log SELECT * FROM audit_log_unpartitioned;
DROP TABLE audit_log_unpartitioned;
