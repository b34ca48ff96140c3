UPDATE jobs SET database_id = NULL
    WHERE database_id IS NOT NULL AND database_id NOT IN (SELECT id FROM databases);
ALTER TABLE jobs ADD CONSTRAINT jobs_database_id_fkey
    FOREIGN KEY (database_id) REFERENCES databases (id) ON DELETE SET NULL;
