-- Placement reads each host's count of slot-holding databases (every state but `failed`) from
-- the host row it already locks, instead of counting the databases table on every create: O(1)
-- in the number of databases. Triggers keep the count exact whatever writes the row (a create,
-- a failed create, a finished deletion, an operator's tool): each change adjusts the host row
-- in the same transaction, and the row lock orders concurrent changes.
-- No write to databases between the count and the triggers (earlier releases keep running
-- while this migrates): it would be missed for good.
LOCK TABLE databases IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE engine_hosts ADD COLUMN databases BIGINT NOT NULL DEFAULT 0;

UPDATE engine_hosts h
SET databases = (SELECT count(*) FROM databases d WHERE d.host = h.name AND d.state <> 'failed');

CREATE FUNCTION hepdb_count_host_databases() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.state <> 'failed' THEN
    UPDATE engine_hosts SET databases = databases - 1 WHERE name = OLD.host;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.state <> 'failed' THEN
    UPDATE engine_hosts SET databases = databases + 1 WHERE name = NEW.host;
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER databases_count_per_host_insert_delete
AFTER INSERT OR DELETE ON databases
FOR EACH ROW EXECUTE FUNCTION hepdb_count_host_databases();

-- Only a change that moves a database between hosts, or into or out of `failed`, touches a
-- host row: the quota watcher's state changes do not.
CREATE TRIGGER databases_count_per_host_update
AFTER UPDATE OF state, host ON databases
FOR EACH ROW
WHEN (OLD.host IS DISTINCT FROM NEW.host
      OR (OLD.state = 'failed') IS DISTINCT FROM (NEW.state = 'failed'))
EXECUTE FUNCTION hepdb_count_host_databases();
