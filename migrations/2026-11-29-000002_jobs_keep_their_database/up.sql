-- A job keeps the id of its database after the row is gone (a failed create's intent row is
-- deleted to free the slot): the reconciler needs it to recognise, and drop, engine objects
-- that a failed create left behind. Jobs are history; they never kept a row alive.
ALTER TABLE jobs DROP CONSTRAINT jobs_database_id_fkey;
