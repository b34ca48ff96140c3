//! The statements the provisioner runs inside a tenant database. Role and database names are
//! hepdb's own, quoted by PostgreSQL's rules; names of the tenant's objects are never spliced
//! here: the `DO` blocks read them from the catalog and quote them server-side (`%I`,
//! `regclass`, `regprocedure`), under the session's pinned `search_path`.

use postgres_protocol::escape::{escape_identifier as ident, escape_literal as literal};

use super::Target;

/// Creating large objects needs no privilege by default, so a restricted tenant could still
/// grow its database with them: `bootstrap` revokes these from `PUBLIC` in the template, and
/// the provisioner grants them to the tenant only while its writes are allowed.
pub(super) const LARGE_OBJECT_CREATORS: &str = "pg_catalog.lo_creat(integer), \
     pg_catalog.lo_create(oid), pg_catalog.lo_from_bytea(oid, bytea)";

/// Inside a new database (cloned from the template, owned by the provisioner, which already
/// let only the tenant connect): the tenant may create large objects, and it owns `public`.
pub(super) fn secure_new_database(t: &Target) -> String {
    let (d, r) = (ident(t.names.db_name()), ident(t.names.db_user()));
    let role = literal(t.names.db_user());
    let mark = literal(&t.mark());
    format!(
        "GRANT EXECUTE ON FUNCTION {LARGE_OBJECT_CREATORS} TO {r}; \
         COMMENT ON DATABASE {d} IS {mark}; \
         DO $hepdb$ BEGIN \
           IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'public' \
                      AND nspowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {role})) \
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {role} || '_frozen') \
           THEN EXECUTE pg_catalog.format('ALTER SCHEMA public OWNER TO %I', {role}); \
           END IF; \
         END $hepdb$;"
    )
}

/// `REASSIGN OWNED` moves objects one by one, and PostgreSQL requires the new owner of an
/// object to have `CREATE` on its schema, whether or not that schema has moved yet: give it
/// first on every schema `from` owns.
fn create_on_schemas(from: &str, to: &str) -> String {
    let (from, to) = (literal(from), literal(to));
    format!(
        "DO $hepdb$ DECLARE o record; BEGIN \
           FOR o IN SELECT n.nspname FROM pg_catalog.pg_namespace n \
                    JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE r.rolname = {from} LOOP \
             EXECUTE pg_catalog.format('GRANT CREATE ON SCHEMA %I TO %I', o.nspname, {to}); \
           END LOOP; \
         END $hepdb$;"
    )
}

/// Hands everything the tenant owns to the holder role, takes back every grant on it (the
/// tenant's own grants to itself or `PUBLIC` would otherwise outlive its ownership), then
/// gives back:
/// - `USAGE` on its schemas and `SELECT` on its relations;
/// - `DELETE` and `TRUNCATE` on plain tables that run no code for them: no user triggers, no
///   rules, no inheritance children, not referenced by a foreign key (a rule or a cascade
///   would run as the holder, which owns everything and so could write), and no expression or
///   partial index (`TRUNCATE` rebuilds indexes as their owner, which can run their functions);
/// - nothing on `SECURITY DEFINER` routines, which would also run as the holder.
///
/// `CREATE` and `TEMPORARY` on the database and large-object creation are taken away, and
/// autovacuum is off on the holder's tables: its `ANALYZE` runs index expressions and type
/// functions as the owner.
pub(super) fn restrict(t: &Target, frozen: &str) -> String {
    let (d, r, f) = (
        ident(t.names.db_name()),
        ident(t.names.db_user()),
        ident(frozen),
    );
    let (role, holder) = (literal(t.names.db_user()), literal(frozen));
    let before = create_on_schemas(t.names.db_user(), frozen);
    format!(
        "{before} \
         REASSIGN OWNED BY {r} TO {f}; \
         REVOKE CREATE, TEMPORARY ON DATABASE {d} FROM {r}; \
         GRANT CONNECT ON DATABASE {d} TO {r}; \
         REVOKE EXECUTE ON FUNCTION {LARGE_OBJECT_CREATORS} FROM {r}; \
         DO $hepdb$ DECLARE \
           tenant text := {role}; \
           holder oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {holder}); \
           o record; \
         BEGIN \
           FOR o IN SELECT nspname FROM pg_catalog.pg_namespace WHERE nspowner = holder LOOP \
             EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA %I FROM PUBLIC, %I', o.nspname, tenant); \
             EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA %I TO %I', o.nspname, tenant); \
           END LOOP; \
           FOR o IN SELECT c.oid, c.relkind FROM pg_catalog.pg_class c \
                    WHERE c.relowner = holder AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') LOOP \
             EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC, %I', o.oid::pg_catalog.regclass, tenant); \
             EXECUTE pg_catalog.format('GRANT SELECT ON %s TO %I', o.oid::pg_catalog.regclass, tenant); \
             IF o.relkind = 'r' \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g \
                                WHERE g.tgrelid = o.oid AND NOT g.tgisinternal) \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w WHERE w.ev_class = o.oid) \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhparent = o.oid) \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.confrelid = o.oid) \
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = o.oid \
                                AND (x.indexprs IS NOT NULL OR x.indpred IS NOT NULL)) \
             THEN \
               EXECUTE pg_catalog.format('GRANT DELETE, TRUNCATE ON %s TO %I', \
                                         o.oid::pg_catalog.regclass, tenant); \
             END IF; \
             IF o.relkind = 'r' THEN \
               EXECUTE pg_catalog.format('ALTER TABLE %s SET (autovacuum_enabled = off, \
                 toast.autovacuum_enabled = off)', o.oid::pg_catalog.regclass); \
             ELSIF o.relkind = 'm' THEN \
               EXECUTE pg_catalog.format('ALTER MATERIALIZED VIEW %s SET \
                 (autovacuum_enabled = off, toast.autovacuum_enabled = off)', \
                 o.oid::pg_catalog.regclass); \
             END IF; \
           END LOOP; \
           FOR o IN SELECT p.oid FROM pg_catalog.pg_proc p \
                    WHERE p.proowner = holder AND p.prosecdef LOOP \
             EXECUTE pg_catalog.format('REVOKE ALL ON ROUTINE %s FROM PUBLIC, %I', \
                                       o.oid::pg_catalog.regprocedure, tenant); \
           END LOOP; \
           FOR o IN SELECT m.oid FROM pg_catalog.pg_largeobject_metadata m \
                    WHERE m.lomowner = holder LOOP \
             EXECUTE pg_catalog.format('REVOKE ALL ON LARGE OBJECT %s FROM PUBLIC, %I', o.oid, tenant); \
           END LOOP; \
         END $hepdb$;"
    )
}

/// Hands everything back to the tenant and returns what `restrict` took: `CREATE` and
/// `TEMPORARY`, large objects, autovacuum (the default; a table the tenant had set otherwise
/// comes back to it too), and `EXECUTE` for `PUBLIC` on its `SECURITY DEFINER` routines
/// (PostgreSQL's default; one the tenant had revoked itself comes back too).
pub(super) fn restore(t: &Target, frozen: &str) -> String {
    let (d, r, f) = (
        ident(t.names.db_name()),
        ident(t.names.db_user()),
        ident(frozen),
    );
    let role = literal(t.names.db_user());
    let before = create_on_schemas(frozen, t.names.db_user());
    format!(
        "{before} \
         REASSIGN OWNED BY {f} TO {r}; \
         GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {d} TO {r}; \
         GRANT EXECUTE ON FUNCTION {LARGE_OBJECT_CREATORS} TO {r}; \
         DO $hepdb$ DECLARE \
           owner oid := (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {role}); \
           o record; \
         BEGIN \
           FOR o IN SELECT p.oid FROM pg_catalog.pg_proc p \
                    WHERE p.proowner = owner AND p.prosecdef LOOP \
             EXECUTE pg_catalog.format('GRANT EXECUTE ON ROUTINE %s TO PUBLIC', \
                                       o.oid::pg_catalog.regprocedure); \
           END LOOP; \
           FOR o IN SELECT c.oid, c.relkind FROM pg_catalog.pg_class c \
                    WHERE c.relowner = owner AND c.relkind IN ('r', 'm') LOOP \
             EXECUTE pg_catalog.format('ALTER %s %s RESET (autovacuum_enabled, \
               toast.autovacuum_enabled)', \
               CASE o.relkind WHEN 'r' THEN 'TABLE' ELSE 'MATERIALIZED VIEW' END, \
               o.oid::pg_catalog.regclass); \
           END LOOP; \
         END $hepdb$;"
    )
}
