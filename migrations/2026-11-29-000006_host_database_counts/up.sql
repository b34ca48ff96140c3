-- Placement reads each host's count of slot-holding databases (every state but `failed`) from
-- the host row it already locks, instead of counting the databases table on every create: O(1)
-- in the number of databases. Triggers keep the count exact whatever writes the rows (a create,
-- a failed create, a finished deletion, an operator's tool): each statement adjusts each host
-- row it changed the count of once, in the same transaction, and the row lock orders
-- concurrent changes. Statement-level, with transition tables: a statement that writes many
-- rows of one host (a bulk import) updates that host's row once, not once per row.

-- No write to databases between the count and the triggers (earlier releases keep running
-- while this migrates): it would be missed for good.
LOCK TABLE databases IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE engine_hosts ADD COLUMN databases BIGINT NOT NULL DEFAULT 0;

UPDATE engine_hosts h
SET databases = (SELECT count(*) FROM databases d WHERE d.host = h.name AND d.state <> 'failed');

-- Net change per host: rows that held a slot before count -1, rows that hold one after +1. A
-- statement that moves no count (the quota watcher's size and state updates) updates no host.
CREATE FUNCTION hepdb_count_host_databases() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE engine_hosts h SET databases = h.databases + d.n
    FROM (SELECT host, count(*) AS n FROM new_rows WHERE state <> 'failed' GROUP BY host) d
    WHERE h.name = d.host;
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE engine_hosts h SET databases = h.databases - d.n
    FROM (SELECT host, count(*) AS n FROM old_rows WHERE state <> 'failed' GROUP BY host) d
    WHERE h.name = d.host;
  ELSE
    UPDATE engine_hosts h SET databases = h.databases + d.n
    FROM (
      SELECT host, sum(n) AS n FROM (
        SELECT host, -1 AS n FROM old_rows WHERE state <> 'failed'
        UNION ALL
        SELECT host, 1 AS n FROM new_rows WHERE state <> 'failed'
      ) AS moves GROUP BY host HAVING sum(n) <> 0
    ) d
    WHERE h.name = d.host;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER databases_count_per_host_insert
AFTER INSERT ON databases REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION hepdb_count_host_databases();

CREATE TRIGGER databases_count_per_host_delete
AFTER DELETE ON databases REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION hepdb_count_host_databases();

CREATE TRIGGER databases_count_per_host_update
AFTER UPDATE ON databases REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION hepdb_count_host_databases();
