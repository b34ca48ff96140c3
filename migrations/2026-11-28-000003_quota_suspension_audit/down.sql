DROP TABLE audit_log;
DROP TABLE periodic_runs;
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('create', 'rotate'));
ALTER TABLE databases DROP COLUMN engine_access;
