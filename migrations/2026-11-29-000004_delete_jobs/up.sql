-- The platform's deletion is a job like the others: the row is marked `deleting` with a pending
-- delete job in one transaction, and the worker drops what carries hepdb's mark, then the row.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind IN ('create', 'rotate', 'access', 'delete'));
