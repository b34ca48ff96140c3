-- Finished jobs by when they finished, for the retention pass (hepdb_store::retention): it
-- scrubs their sealed passwords once the idempotency window has passed, and deletes them after
-- `worker.job_retention_days`, in small batches that read only these indexes. The first holds
-- only jobs still to scrub, so a scrubbed job is never read again by the scrub.
CREATE INDEX jobs_finished_sealed ON jobs (updated_at)
  WHERE state IN ('done', 'failed', 'cancelled') AND password_sealed IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (updated_at) WHERE state IN ('done', 'failed', 'cancelled');
