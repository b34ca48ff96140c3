DROP INDEX databases_host_state;
ALTER TABLE databases DROP COLUMN host;
DROP TABLE engine_hosts;
