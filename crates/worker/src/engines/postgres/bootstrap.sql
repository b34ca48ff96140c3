-- What `hepdb-admin engine bootstrap postgres` installs, as the engine's root, in the database
-- the provisioner connects to. Re-running it upgrades in place.
--
-- The provisioner (:prov) has no CREATEROLE: role work goes through these SECURITY DEFINER
-- functions, owned by the NOLOGIN role :definer (CREATEROLE), executable by :prov only. Each
-- accepts only hepdb's generated role names (`dum_<10 hex>_<n>`, and `_frozen` holder roles)
-- and, for an existing role, only one that carries the caller's mark. Their search_path is
-- pinned, and every name reaches SQL through format('%I') / format('%L').

CREATE SCHEMA IF NOT EXISTS hepdb AUTHORIZATION :definer;
ALTER SCHEMA hepdb OWNER TO :definer;
REVOKE ALL ON SCHEMA hepdb FROM PUBLIC;
GRANT USAGE ON SCHEMA hepdb TO :prov;

-- Raises unless `name` is a hepdb tenant or holder role name and `mark` a hepdb mark; returns
-- the role's oid when it exists (raising if it exists without exactly this mark).
CREATE OR REPLACE FUNCTION hepdb.checked_role(name text, mark text) RETURNS oid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  r oid;
BEGIN
  IF name IS NULL OR name !~ '^dum_[0-9a-f]{10}_[0-9]{1,10}(_frozen)?$' THEN
    RAISE EXCEPTION 'hepdb: not a tenant role name' USING ERRCODE = '42501';
  END IF;
  IF mark IS NULL OR mark !~ '^hepdb:[0-9A-Za-z]{26}$' THEN
    RAISE EXCEPTION 'hepdb: not a hepdb mark' USING ERRCODE = '22023';
  END IF;
  SELECT oid INTO r FROM pg_roles WHERE rolname = name;
  IF r IS NOT NULL AND shobj_description(r, 'pg_authid') IS DISTINCT FROM mark THEN
    RAISE EXCEPTION 'hepdb: role exists without this mark' USING ERRCODE = '42501';
  END IF;
  RETURN r;
END $f$;

-- Creates a marked role (LOGIN with a SCRAM verifier, or a NOLOGIN holder) and makes the caller
-- a member, which CREATE DATABASE ... OWNER, REASSIGN OWNED and ending sessions need.
CREATE OR REPLACE FUNCTION hepdb.create_role(
  name text, mark text, verifier text, login boolean, conn_limit integer
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
    RAISE EXCEPTION 'hepdb: role already exists' USING ERRCODE = '42710';
  END IF;
  PERFORM hepdb.checked_role(name, mark);
  IF verifier IS NOT NULL AND verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
    RAISE EXCEPTION 'hepdb: not a SCRAM verifier' USING ERRCODE = '22023';
  END IF;
  EXECUTE format(
    'CREATE ROLE %I WITH %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS '
    'CONNECTION LIMIT %s PASSWORD %L',
    name, CASE WHEN login THEN 'LOGIN' ELSE 'NOLOGIN' END, greatest(coalesce(conn_limit, 0), 0),
    verifier);
  EXECUTE format('COMMENT ON ROLE %I IS %L', name, mark);
  EXECUTE format('GRANT %I TO %I', name, session_user);
END $f$;

-- Changes a marked role: password (a SCRAM verifier), login, connection limit; NULL leaves a
-- field as it is. Always makes the caller a member again (a role may revoke its own membership
-- from others on PostgreSQL 15). `isolate` also revokes every other role's membership in it,
-- so nobody keeps the role's rights through `SET ROLE` while it is locked or restricted.
CREATE OR REPLACE FUNCTION hepdb.alter_role(
  name text, mark text, verifier text, login boolean, conn_limit integer, isolate boolean
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
  r oid := hepdb.checked_role(name, mark);
  m text;
  not_after text := current_setting('hepdb.not_after', true);
BEGIN
  -- A call that starts after the caller's deadline (epoch seconds, set in the same statement)
  -- changes nothing: the worker gave up on it, and the network delivered it late.
  IF coalesce(not_after, '') <> ''
     AND statement_timestamp() > to_timestamp(not_after::double precision) THEN
    RAISE EXCEPTION 'hepdb: arrived after its deadline' USING ERRCODE = '57014';
  END IF;
  IF r IS NULL THEN
    RAISE EXCEPTION 'hepdb: role does not exist' USING ERRCODE = '42704';
  END IF;
  IF verifier IS NOT NULL THEN
    IF verifier !~ '^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$' THEN
      RAISE EXCEPTION 'hepdb: not a SCRAM verifier' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('ALTER ROLE %I WITH PASSWORD %L', name, verifier);
  END IF;
  IF login IS NOT NULL THEN
    EXECUTE format('ALTER ROLE %I WITH %s', name, CASE WHEN login THEN 'LOGIN' ELSE 'NOLOGIN' END);
  END IF;
  IF conn_limit IS NOT NULL THEN
    EXECUTE format('ALTER ROLE %I WITH CONNECTION LIMIT %s', name, greatest(conn_limit, 0));
  END IF;
  IF isolate THEN
    FOR m IN
      SELECT u.rolname FROM pg_auth_members a JOIN pg_roles u ON u.oid = a.member
      WHERE a.roleid = r AND u.rolname <> session_user
    LOOP
      EXECUTE format('REVOKE %I FROM %I', name, m);
    END LOOP;
  END IF;
  EXECUTE format('GRANT %I TO %I', name, session_user);
END $f$;

-- Drops a marked role; nothing to do when it is absent.
CREATE OR REPLACE FUNCTION hepdb.drop_role(name text, mark text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  IF hepdb.checked_role(name, mark) IS NOT NULL THEN
    EXECUTE format('DROP ROLE %I', name);
  END IF;
END $f$;

ALTER FUNCTION hepdb.checked_role(text, text) OWNER TO :definer;
ALTER FUNCTION hepdb.create_role(text, text, text, boolean, integer) OWNER TO :definer;
ALTER FUNCTION hepdb.alter_role(text, text, text, boolean, integer, boolean) OWNER TO :definer;
ALTER FUNCTION hepdb.drop_role(text, text) OWNER TO :definer;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hepdb FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hepdb.create_role(text, text, text, boolean, integer) TO :prov;
GRANT EXECUTE ON FUNCTION hepdb.alter_role(text, text, text, boolean, integer, boolean) TO :prov;
GRANT EXECUTE ON FUNCTION hepdb.drop_role(text, text) TO :prov;

-- Shared databases are not for tenants: nobody but root and the provisioner connects to the
-- maintenance databases (roles are listed in every database, but nothing else of the server).
REVOKE CONNECT, TEMPORARY ON DATABASE postgres FROM PUBLIC;
REVOKE CONNECT, TEMPORARY ON DATABASE template1 FROM PUBLIC;
GRANT CONNECT ON DATABASE :admin_db TO :prov;
