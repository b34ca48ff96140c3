-- What `hepdb-admin engine bootstrap mariadb` installs, as root. Re-running it upgrades in place.
--
-- The provisioner (:prov) holds no global privilege: `ALL` on `um\_%`.* (its tenants'
-- databases, to create, grant and drop them), its ownership registry, and `EXECUTE` on these
-- procedures. They run as :definer, a locked account that nobody logs in as, accept only
-- hepdb's generated user names, and only for a database hepdb has claimed in `hepdb.owners`.
-- Tenants cannot read or write the registry, so they cannot forge or erase an ownership claim.

CREATE DATABASE IF NOT EXISTS hepdb;
CREATE TABLE IF NOT EXISTS hepdb.owners (
  db_name VARCHAR(64) NOT NULL PRIMARY KEY,
  mark VARCHAR(64) NOT NULL
) ENGINE = InnoDB;

CREATE OR REPLACE DEFINER = :definer FUNCTION hepdb.checked_user(u VARCHAR(128))
RETURNS VARCHAR(160) SQL SECURITY DEFINER READS SQL DATA
BEGIN
  -- A binary comparison: REGEXP on a text value ignores case, and `$` allows a final newline.
  IF u IS NULL OR CAST(u AS BINARY) NOT REGEXP '^dum_[0-9a-f]{10}_[0-9]{1,10}\\z' THEN
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'hepdb: not a tenant user name', MYSQL_ERRNO = 1227;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM hepdb.owners WHERE BINARY db_name = SUBSTRING(u, 2)) THEN
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'hepdb: no ownership claim for this user', MYSQL_ERRNO = 1227;
  END IF;
  RETURN CONCAT(QUOTE(u), '@''%''');
END;

CREATE OR REPLACE DEFINER = :definer PROCEDURE hepdb.create_user(
  IN u VARCHAR(128), IN hash VARCHAR(64), IN max_connections INT)
SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
  DECLARE who VARCHAR(160) DEFAULT hepdb.checked_user(u);
  -- Late, it could make the user after a cleanup dropped it and before the claim went.
  IF @hepdb_create_not_after IS NOT NULL AND UNIX_TIMESTAMP(NOW(6)) > @hepdb_create_not_after THEN
    SIGNAL SQLSTATE '70100' SET MESSAGE_TEXT = 'hepdb: arrived after its deadline', MYSQL_ERRNO = 1317;
  END IF;
  IF hash IS NULL OR hash NOT REGEXP '^[*][0-9A-F]{40}$' THEN
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'hepdb: not a password hash', MYSQL_ERRNO = 1227;
  END IF;
  EXECUTE IMMEDIATE CONCAT('CREATE USER ', who, ' IDENTIFIED BY PASSWORD ', QUOTE(hash),
    ' WITH MAX_USER_CONNECTIONS ', GREATEST(COALESCE(max_connections, 1), 1));
END;

-- CREATE DATABASE of a name hepdb has claimed, refused when the call starts after the caller's
-- deadline (@hepdb_create_not_after, taken when the worker's bounded step began; create_user
-- reads it too):
-- the worker gave up on it and may have undone the create since (dropped the database,
-- released the claim), so it must not make the database afterwards, unclaimed. One that starts
-- in time does so at least a quarter of the engine timeout before the worker gives up and
-- cleans up, and holds the name's metadata lock while it runs, so the cleanup's DROP waits for
-- it. It runs with the caller's rights.
CREATE OR REPLACE DEFINER = :definer PROCEDURE hepdb.create_database(IN d VARCHAR(64))
SQL SECURITY INVOKER MODIFIES SQL DATA
BEGIN
  IF @hepdb_create_not_after IS NOT NULL AND UNIX_TIMESTAMP(NOW(6)) > @hepdb_create_not_after THEN
    SIGNAL SQLSTATE '70100' SET MESSAGE_TEXT = 'hepdb: arrived after its deadline', MYSQL_ERRNO = 1317;
  END IF;
  IF d IS NULL OR CAST(d AS BINARY) NOT REGEXP '^um_[0-9a-f]{10}_[0-9]{1,10}\\z' THEN
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'hepdb: not a tenant database name', MYSQL_ERRNO = 1227;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM hepdb.owners WHERE BINARY db_name = d) THEN
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'hepdb: no ownership claim for this database', MYSQL_ERRNO = 1227;
  END IF;
  EXECUTE IMMEDIATE CONCAT('CREATE DATABASE `', d, '`');
END;

-- NULL leaves a field as it is. A call that starts after the caller's deadline
-- (@hepdb_not_after, epoch seconds, set by the worker right before the call on the same session)
-- changes nothing: it is a statement the worker gave up on that the network delivered late, and
-- it must not undo what the worker did since (put a password back, say).
CREATE OR REPLACE DEFINER = :definer PROCEDURE hepdb.alter_user(
  IN u VARCHAR(128), IN hash VARCHAR(64), IN max_connections INT, IN locked BOOLEAN)
SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
  DECLARE who VARCHAR(160) DEFAULT hepdb.checked_user(u);
  IF @hepdb_not_after IS NOT NULL AND UNIX_TIMESTAMP(NOW(6)) > @hepdb_not_after THEN
    SIGNAL SQLSTATE '70100' SET MESSAGE_TEXT = 'hepdb: arrived after its deadline', MYSQL_ERRNO = 1317;
  END IF;
  IF hash IS NOT NULL AND hash NOT REGEXP '^[*][0-9A-F]{40}$' THEN
    SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'hepdb: not a password hash', MYSQL_ERRNO = 1227;
  END IF;
  IF hash IS NOT NULL THEN
    EXECUTE IMMEDIATE CONCAT('ALTER USER ', who, ' IDENTIFIED BY PASSWORD ', QUOTE(hash));
  END IF;
  IF max_connections IS NOT NULL THEN
    EXECUTE IMMEDIATE CONCAT('ALTER USER ', who, ' WITH MAX_USER_CONNECTIONS ',
      GREATEST(max_connections, 1));
  END IF;
  IF locked IS NOT NULL THEN
    EXECUTE IMMEDIATE CONCAT('ALTER USER ', who, IF(locked, ' ACCOUNT LOCK', ' ACCOUNT UNLOCK'));
  END IF;
END;

CREATE OR REPLACE DEFINER = :definer PROCEDURE hepdb.end_sessions(IN u VARCHAR(128))
SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
  DECLARE who VARCHAR(160) DEFAULT hepdb.checked_user(u);
  EXECUTE IMMEDIATE CONCAT('KILL CONNECTION USER ', who);
END;

CREATE OR REPLACE DEFINER = :definer PROCEDURE hepdb.drop_user(IN u VARCHAR(128))
SQL SECURITY DEFINER MODIFIES SQL DATA
BEGIN
  DECLARE who VARCHAR(160) DEFAULT hepdb.checked_user(u);
  EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS ', who);
END;

-- On-disk bytes of every database hepdb claimed: the allocated size of each InnoDB tablespace
-- file (not the statistics, which lag), plus data and index length of Aria, MyISAM, MEMORY and
-- ARCHIVE tables (their own files, or memory). A claimed database the tenant dropped measures 0.
-- A database holding a table in any other engine (CSV reports 0 bytes for any amount of data)
-- measures NULL: unmeasured, which the quota watcher does not let last.
CREATE OR REPLACE DEFINER = :definer PROCEDURE hepdb.database_sizes()
SQL SECURITY DEFINER READS SQL DATA
BEGIN
  SELECT o.db_name,
         IF(COALESCE(x.unmeasurable, 0) > 0, NULL,
            CAST(COALESCE(i.bytes, 0) + COALESCE(x.bytes, 0) AS SIGNED))
  FROM hepdb.owners o
  LEFT JOIN (
    SELECT SUBSTRING_INDEX(NAME, '/', 1) AS db, SUM(ALLOCATED_SIZE) AS bytes
    FROM information_schema.INNODB_SYS_TABLESPACES
    WHERE NAME LIKE 'um\_%/%' GROUP BY db
  ) i ON i.db = o.db_name
  LEFT JOIN (
    SELECT TABLE_SCHEMA AS db,
           SUM(IF(ENGINE IN ('Aria', 'MyISAM', 'MEMORY', 'ARCHIVE'),
                  COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0), 0)) AS bytes,
           SUM(ENGINE NOT IN ('InnoDB', 'Aria', 'MyISAM', 'MEMORY', 'ARCHIVE', 'SEQUENCE',
                              'MRG_MyISAM')) AS unmeasurable
    FROM information_schema.TABLES
    WHERE TABLE_SCHEMA LIKE 'um\_%' AND TABLE_TYPE <> 'VIEW'
    GROUP BY TABLE_SCHEMA
  ) x ON x.db = o.db_name;
END;
