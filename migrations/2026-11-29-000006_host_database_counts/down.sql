DROP TRIGGER databases_count_per_host_update ON databases;
DROP TRIGGER databases_count_per_host_delete ON databases;
DROP TRIGGER databases_count_per_host_insert ON databases;
DROP FUNCTION hepdb_count_host_databases();
ALTER TABLE engine_hosts DROP COLUMN databases;
