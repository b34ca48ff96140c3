DROP INDEX jobs_finished;
DROP INDEX jobs_finished_sealed;
