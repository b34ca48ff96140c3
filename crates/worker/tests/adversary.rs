//! Hostile tenants: each test gives tenants real credentials on the shared MariaDB and
//! PostgreSQL engines, lets them do what an attacker would inside their own databases, then
//! runs the provisioner's operations and asserts what a victim cares about: another tenant's
//! data stays unreachable, the provisioner runs nothing the tenant wrote, suspension and
//! over_quota hold, sizes are right. Every provisioner here is the least-privilege one that
//! `engine bootstrap` sets up, never root.

use hepdb_core::{
    Access, DatabaseId, Engine,
    naming::{DbTag, EngineNames},
    secret::Password,
};
use hepdb_testkit::{bootstrap_provisioners, postgres_root_url, provisioner_url, root_url};
use hepdb_worker::engines::{EngineDriver, EngineError, Target};
use mysql_async::prelude::Queryable;
use tokio_postgres::error::SqlState;

/// Sessions each tenant user may hold in these tests.
const LIMIT: u32 = 4;

/// The engine's driver, its provisioner bootstrapped once per process.
async fn driver(engine: Engine) -> EngineDriver {
    bootstrap_provisioners().await;
    EngineDriver::new(engine, &provisioner_url(engine), LIMIT).unwrap()
}

/// A tenant database made by the provisioner, with its password.
async fn tenant(d: &EngineDriver) -> (Target, Password) {
    let t = Target {
        id: DatabaseId::new(),
        names: EngineNames::new(&DbTag::generate(), 1),
    };
    let pw = Password::generate();
    d.create(&t, &pw).await.unwrap();
    (t, pw)
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

async fn pg(
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut c: tokio_postgres::Config = postgres_root_url().parse().unwrap();
    c.user(user).password(password).dbname(db);
    let (client, conn) = c.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn pg_tenant(
    t: &Target,
    pw: &Password,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    pg(t.names.db_user(), pw.expose(), t.names.db_name()).await
}

async fn pg_root(db: &str) -> tokio_postgres::Client {
    let mut c: tokio_postgres::Config = postgres_root_url().parse().unwrap();
    c.dbname(db);
    let (client, conn) = c.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

async fn pg_provisioner(db: &str) -> tokio_postgres::Client {
    let mut c: tokio_postgres::Config = provisioner_url(Engine::Postgres).parse().unwrap();
    c.dbname(db);
    let (client, conn) = c.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// A victim with a secret in its database.
async fn pg_victim(d: &EngineDriver) -> (Target, Password) {
    let (v, vpw) = tenant(d).await;
    pg_tenant(&v, &vpw)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE secret (s text); INSERT INTO secret VALUES ('victim data')")
        .await
        .unwrap();
    (v, vpw)
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_catalog_names_never_become_provisioner_sql() {
    let d = driver(Engine::Postgres).await;
    let (victim, vpw) = pg_victim(&d).await;
    let (a, pw) = tenant(&d).await;
    let attacker = pg_tenant(&a, &pw).await.unwrap();
    // Were this spliced into a GRANT by the provisioner (which owns every tenant database),
    // the attacker would get into the victim's database.
    let payload = format!(
        "s\" TO PUBLIC; GRANT CONNECT ON DATABASE \"{}\" TO \"{}\"; --",
        victim.names.db_name(),
        a.names.db_user()
    );
    let escaped = payload.replace('"', "\"\"");
    attacker
        .batch_execute(&format!(
            "CREATE SCHEMA \"{escaped}\"; \
             CREATE TABLE \"{escaped}\".\"t\"\"; DROP TABLE x; --\" (v int); \
             CREATE TABLE public.trap_fired (at timestamptz); \
             CREATE FUNCTION public.format(text, text, text) RETURNS text LANGUAGE plpgsql \
               AS $$ BEGIN INSERT INTO public.trap_fired VALUES (now()); RETURN 'SELECT 1'; END $$; \
             CREATE FUNCTION public.pg_terminate_backend(integer) RETURNS boolean \
               LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.trap_fired VALUES (now()); \
               RETURN true; END $$; \
             ALTER ROLE CURRENT_USER SET search_path = public, pg_catalog"
        ))
        .await
        .unwrap();
    d.set_access(&a, Access::Restricted).await.unwrap();
    d.set_access(&a, Access::Full).await.unwrap();
    d.lock_login(&a).await.unwrap();
    d.set_access(&a, Access::Full).await.unwrap();
    let err = pg(a.names.db_user(), pw.expose(), victim.names.db_name())
        .await
        .expect_err("the attacker cannot connect to the victim's database");
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let fired = pg_root(a.names.db_name())
        .await
        .query_one("SELECT count(*) FROM public.trap_fired", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(fired, 0, "the provisioner ran a function the tenant wrote");
    // The victim's data is its own, and its own login is untouched.
    let rows = pg_tenant(&victim, &vpw)
        .await
        .unwrap()
        .query("SELECT s FROM secret", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    for t in [a, victim] {
        d.drop_owned(&t).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_tenants_cannot_reach_shared_databases_or_lock_hepdb_out() {
    let d = driver(Engine::Postgres).await;
    let (a, pw) = tenant(&d).await;
    let (b, _) = tenant(&d).await;
    for db in ["postgres", "template1", "hepdb_template", b.names.db_name()] {
        let refused = pg(a.names.db_user(), pw.expose(), db).await.is_err();
        assert!(refused, "a tenant connected to {db}");
    }
    // The database is hepdb's: its settings, privileges and limits are out of the tenant's
    // reach, so nothing it tries can keep the provisioner out or change its statements.
    let c = pg_tenant(&a, &pw).await.unwrap();
    let db = a.names.db_name();
    for attempt in [
        format!("ALTER DATABASE \"{db}\" SET search_path = public"),
        format!("ALTER DATABASE \"{db}\" SET default_transaction_read_only = on"),
        format!("ALTER DATABASE \"{db}\" CONNECTION LIMIT 0"),
        format!("REVOKE CONNECT ON DATABASE \"{db}\" FROM PUBLIC, CURRENT_USER"),
        format!("DROP DATABASE \"{db}\""),
    ] {
        let _ = c.batch_execute(&attempt).await;
    }
    // The size pass reads `pg_database` by name and measures each database by OID: a tenant
    // that could rename its database, drop it, or make one under another tenant's name could
    // hide from it, fail it mid-statement (its retry is for deletions, bounded), or charge
    // another account. Each is refused.
    let b_db = b.names.db_name();
    for attempt in [
        format!("ALTER DATABASE \"{db}\" RENAME TO \"{db}x\""),
        format!("DROP DATABASE \"{db}\""),
        format!("CREATE DATABASE \"{b_db}0\""),
        "CREATE DATABASE um_0000000000_1".to_owned(),
    ] {
        assert!(c.batch_execute(&attempt).await.is_err(), "{attempt}");
    }
    // Revoking its own membership from the provisioner (refused by current PostgreSQL 15
    // releases, allowed by older ones) would change nothing: every operation grants it back.
    let _ = c
        .batch_execute("REVOKE CURRENT_USER FROM hepdb_provisioner")
        .await;
    drop(c);
    let sizes = d.sizes().await.unwrap();
    assert!(
        sizes.iter().any(|(n, _)| n == a.names.db_name()),
        "measured"
    );
    assert!(
        sizes.iter().any(|(n, _)| n == b.names.db_name()),
        "measured"
    );
    d.set_access(&a, Access::Restricted).await.unwrap();
    d.lock_login(&a).await.unwrap();
    assert!(!d.can_login(&a, &pw).await.unwrap());
    for t in [a, b] {
        d.drop_owned(&t).await.unwrap();
    }
}

/// Whether `sql` succeeds for the client.
async fn pg_ok(c: &tokio_postgres::Client, sql: &str) -> bool {
    c.batch_execute(sql).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_over_quota_holds_whatever_the_tenant_prepared() {
    let d = driver(Engine::Postgres).await;
    let (a, pw) = tenant(&d).await;
    let (helper, hpw) = tenant(&d).await;
    let c = pg_tenant(&a, &pw).await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE t (v text); INSERT INTO t VALUES ('x'); \
         CREATE TABLE logged (v text); CREATE TABLE sink (v text); \
         CREATE TABLE indexed (v text); CREATE INDEX ON indexed (lower(v)); \
         CREATE RULE copy AS ON DELETE TO logged DO ALSO INSERT INTO sink VALUES ('rule'); \
         INSERT INTO logged VALUES ('x'); \
         CREATE FUNCTION grow() RETURNS int LANGUAGE sql SECURITY DEFINER \
           AS $$ INSERT INTO t VALUES (repeat('x', 1000)); SELECT 1 $$; \
         CREATE VIEW v AS SELECT grow() AS g; \
         GRANT INSERT ON t TO PUBLIC; GRANT ALL ON t TO \"{h}\", CURRENT_USER; \
         GRANT CREATE ON SCHEMA public TO PUBLIC; \
         SELECT lo_from_bytea(4242, 'mine'); GRANT UPDATE ON LARGE OBJECT 4242 TO PUBLIC",
        h = helper.names.db_user(),
    ))
    .await
    .unwrap();
    // On PostgreSQL 15 a role may no longer hand itself to another role.
    let shared = format!(
        "GRANT \"{}\" TO \"{}\"",
        a.names.db_user(),
        helper.names.db_user()
    );
    assert!(!pg_ok(&c, &shared).await, "a tenant shared its role");
    // A session kept open from before, in a transaction that holds a lock on the table and a
    // large object open for writing: it is ended, so it neither blocks the hand-over nor keeps
    // writing.
    let kept = pg_tenant(&a, &pw).await.unwrap();
    kept.batch_execute("BEGIN; SELECT count(*) FROM t; SELECT lo_open(4242, 131072)")
        .await
        .unwrap();
    d.set_access(&a, Access::Restricted).await.unwrap();
    assert!(
        !pg_ok(&kept, "SELECT lowrite(0, 'more')").await,
        "kept session ended"
    );
    let client = pg_tenant(&a, &pw).await.unwrap();
    // (statement, whether it may succeed, what it tries)
    for (sql, allowed, what) in [
        ("SELECT count(*) FROM t", true, "read"),
        ("INSERT INTO t VALUES ('y')", false, "insert"),
        ("SELECT grow()", false, "a definer function"),
        ("SELECT * FROM v", false, "a view of it"),
        ("DELETE FROM logged", false, "a rule that writes"),
        (
            "SELECT lo_from_bytea(0, 'big')",
            false,
            "a new large object",
        ),
        (
            "SELECT lo_put(4242, 0, 'more')",
            false,
            "its own large object",
        ),
        ("CREATE TABLE more (v int)", false, "a new table"),
        ("CREATE TEMP TABLE tmp (v int)", false, "a temporary table"),
        ("CREATE SCHEMA more", false, "a schema"),
        (
            "TRUNCATE TABLE indexed",
            false,
            "a truncate that runs index code as the owner",
        ),
        ("DELETE FROM indexed", false, "a delete there either"),
        ("DELETE FROM t WHERE v = 'x'", true, "freeing space"),
        ("TRUNCATE TABLE t", true, "freeing space at once"),
    ] {
        assert_eq!(pg_ok(&client, sql).await, allowed, "{what}: {sql}");
    }
    // The helper tenant cannot write for it: it can no longer get into the database.
    let h = pg_tenant(&helper, &hpw).await.unwrap();
    assert!(!pg_ok(&h, &format!("SET ROLE \"{}\"", a.names.db_user())).await);
    assert!(
        pg(helper.names.db_user(), hpw.expose(), a.names.db_name())
            .await
            .is_err()
    );
    let sink = pg_root(a.names.db_name())
        .await
        .query_one("SELECT count(*) FROM sink", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(sink, 0, "the rule never ran");
    // Autovacuum's ANALYZE would run index expressions and type functions as the owner.
    let autovacuum_off = pg_root(a.names.db_name())
        .await
        .query_one(
            "SELECT bool_and(reloptions @> '{autovacuum_enabled=off}') FROM pg_class \
             WHERE relname IN ('t', 'logged', 'sink', 'indexed')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, bool>(0);
    assert!(autovacuum_off);

    d.set_access(&a, Access::Full).await.unwrap();
    let c = pg_tenant(&a, &pw).await.unwrap();
    assert!(
        pg_ok(&c, "INSERT INTO t VALUES ('back'); SELECT grow()").await,
        "restored"
    );
    for t in [a, helper] {
        d.drop_owned(&t).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_suspension_ends_every_way_in() {
    let d = driver(Engine::Postgres).await;
    let (a, pw) = tenant(&d).await;
    let (helper, hpw) = tenant(&d).await;
    pg_tenant(&a, &pw)
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE t (v int); GRANT ALL ON t TO PUBLIC, \"{}\"",
            helper.names.db_user()
        ))
        .await
        .unwrap();
    let kept = pg_tenant(&a, &pw).await.unwrap();
    d.lock_login(&a).await.unwrap();
    assert!(
        !pg_ok(&kept, "INSERT INTO t VALUES (1)").await,
        "open session ended"
    );
    assert!(pg_tenant(&a, &pw).await.is_err(), "no new login");
    assert!(
        pg(helper.names.db_user(), hpw.expose(), a.names.db_name())
            .await
            .is_err(),
        "no way in through another role"
    );
    d.set_access(&a, Access::Full).await.unwrap();
    assert!(
        pg_ok(
            &pg_tenant(&a, &pw).await.unwrap(),
            "INSERT INTO t VALUES (1)"
        )
        .await
    );
    for t in [a, helper] {
        d.drop_owned(&t).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_grants_from_other_tenants_do_not_block_a_drop() {
    let d = driver(Engine::Postgres).await;
    let (a, _) = tenant(&d).await;
    let (b, bpw) = tenant(&d).await;
    let c = pg_tenant(&b, &bpw).await.unwrap();
    c.batch_execute(&format!(
        "CREATE TABLE shared (v int); GRANT SELECT ON shared TO \"{}\"",
        a.names.db_user()
    ))
    .await
    .unwrap();
    d.drop_owned(&a).await.unwrap();
    assert!(
        pg_ok(&c, "SELECT * FROM shared").await,
        "the other tenant's table is intact"
    );
    d.drop_owned(&b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_a_stolen_provisioner_is_not_a_stolen_server() {
    let d = driver(Engine::Postgres).await;
    let root = pg_root("postgres").await;
    for sql in [
        "DROP DATABASE IF EXISTS ops_private",
        "CREATE DATABASE ops_private",
        "REVOKE ALL ON DATABASE ops_private FROM PUBLIC",
    ] {
        root.batch_execute(sql).await.unwrap();
    }
    let p = pg_provisioner("postgres").await;
    let mark = format!("hepdb:{}", DatabaseId::new());
    for attempt in [
        "GRANT pg_execute_server_program TO CURRENT_USER".to_owned(),
        "GRANT pg_write_server_files TO CURRENT_USER".to_owned(),
        "CREATE ROLE someone".to_owned(),
        "ALTER ROLE postgres PASSWORD 'taken'".to_owned(),
        "ALTER ROLE CURRENT_USER SUPERUSER".to_owned(),
        format!("SELECT hepdb.alter_role('postgres', '{mark}', NULL, false, NULL, false)"),
        format!("SELECT hepdb.create_role('postgres', '{mark}', NULL, false, 1)"),
        format!("SELECT hepdb.drop_role('hepdb_provisioner_definer', '{mark}')"),
        "COPY (SELECT 1) TO PROGRAM 'true'".to_owned(),
    ] {
        assert!(
            !pg_ok(&p, &attempt).await,
            "the provisioner could: {attempt}"
        );
    }
    let mut c: tokio_postgres::Config = provisioner_url(Engine::Postgres).parse().unwrap();
    c.dbname("ops_private");
    assert!(
        c.connect(tokio_postgres::NoTls).await.is_err(),
        "read a non-tenant database"
    );
    // A tenant role of ours that the root account marked: still only through the functions.
    let (a, _) = tenant(&d).await;
    assert!(
        !pg_ok(
            &p,
            &format!("ALTER ROLE \"{}\" SUPERUSER", a.names.db_user())
        )
        .await
    );
    d.drop_owned(&a).await.unwrap();
    root.batch_execute("DROP DATABASE ops_private")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pg_a_tenant_at_its_connection_limit_leaves_room_for_others() {
    let d = driver(Engine::Postgres).await;
    let (a, pw) = tenant(&d).await;
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(pg_tenant(&a, &pw).await.unwrap());
    }
    let err = pg_tenant(&a, &pw).await.expect_err("over the limit");
    assert_eq!(err.code(), Some(&SqlState::TOO_MANY_CONNECTIONS));
    // hepdb keeps working for everyone else meanwhile.
    let (b, bpw) = tenant(&d).await;
    assert!(pg_tenant(&b, &bpw).await.is_ok());
    // A login check of the tenant at its limit is an engine refusal, not a wrong password.
    assert!(matches!(
        d.can_login(&a, &pw).await,
        Err(EngineError::Unavailable(_))
    ));
    drop(held);
    for t in [a, b] {
        d.drop_owned(&t).await.unwrap();
    }
}

/// `CREATE DATABASE` runs in a session named `hepdb-create <database>`, which creates and
/// cleanups end (and wait for) first. A tenant names its own sessions after another tenant's
/// database, before that one is made and while it is dropped: its sessions are not the
/// provisioner's, so nothing ends them, nothing waits for them, and the other tenant's create
/// and deletion go through.
#[tokio::test(flavor = "multi_thread")]
async fn pg_a_tenant_cannot_pose_as_a_create_in_progress() {
    let d = driver(Engine::Postgres).await;
    let (a, pw) = tenant(&d).await;
    let victim = Target {
        id: DatabaseId::new(),
        names: EngineNames::new(&DbTag::generate(), 1),
    };
    let posing = format!("hepdb-create {}", victim.names.db_name());
    let mut config: tokio_postgres::Config = postgres_root_url().parse().unwrap();
    config
        .user(a.names.db_user())
        .password(pw.expose())
        .dbname(a.names.db_name())
        .application_name(&posing);
    let (attacker, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    // A second one sets the name after connecting.
    let late = pg_tenant(&a, &pw).await.unwrap();
    late.batch_execute(&format!("SET application_name = '{posing}'"))
        .await
        .unwrap();
    let vpw = Password::generate();
    d.create(&victim, &vpw).await.unwrap();
    assert!(d.can_login(&victim, &vpw).await.unwrap());
    d.drop_owned(&victim).await.unwrap();
    assert!(!d.can_login(&victim, &vpw).await.unwrap());
    for c in [&attacker, &late] {
        assert!(
            c.simple_query("SELECT 1").await.is_ok(),
            "a tenant's session was ended"
        );
    }
    d.drop_owned(&a).await.unwrap();
}

/// Every role change now reads a deadline (`hepdb.not_after`, set in the same statement). A
/// tenant plants whatever it can to make the provisioner's changes be refused or to run its
/// own code instead: the setting on its own role, on its database, on the provisioner; a
/// schema `hepdb` with an `alter_role`, and `set_config` / `to_timestamp` in `public`. None of
/// it reaches the provisioner's session, which runs in another database.
#[tokio::test(flavor = "multi_thread")]
async fn pg_a_tenant_cannot_plant_the_deadline_of_a_role_change() {
    let d = driver(Engine::Postgres).await;
    let (a, pw) = tenant(&d).await;
    let attacker = pg_tenant(&a, &pw).await.unwrap();
    attacker
        .batch_execute(
            "CREATE TABLE public.trap_fired (at timestamptz); \
             CREATE SCHEMA hepdb; \
             CREATE FUNCTION hepdb.alter_role(text, text, text, boolean, integer, boolean) \
               RETURNS void LANGUAGE plpgsql \
               AS $$ BEGIN INSERT INTO public.trap_fired VALUES (now()); END $$; \
             CREATE FUNCTION public.set_config(text, text, boolean) RETURNS text \
               LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.trap_fired VALUES (now()); \
               RETURN '0'; END $$; \
             CREATE FUNCTION public.to_timestamp(double precision) RETURNS timestamptz \
               LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.trap_fired VALUES (now()); \
               RETURN 'infinity'; END $$; \
             SET hepdb.not_after = '1'",
        )
        .await
        .unwrap();
    let own_role = format!(
        "ALTER ROLE \"{}\" SET hepdb.not_after = '1'",
        a.names.db_user()
    );
    // Its own role's default binds only its own sessions; the others are refused outright.
    let _ = attacker.batch_execute(&own_role).await;
    for sql in [
        format!(
            "ALTER DATABASE \"{}\" SET hepdb.not_after = '1'",
            a.names.db_name()
        ),
        "ALTER DATABASE postgres SET hepdb.not_after = '1'".to_owned(),
        "ALTER ROLE hepdb_provisioner SET hepdb.not_after = '1'".to_owned(),
    ] {
        assert!(
            attacker.batch_execute(&sql).await.is_err(),
            "the tenant may not: {sql}"
        );
    }
    let new = Password::generate();
    d.set_password(&a, &new).await.unwrap();
    assert!(d.can_login(&a, &new).await.unwrap());
    d.set_access(&a, Access::Locked).await.unwrap();
    assert!(!d.can_login(&a, &new).await.unwrap());
    d.set_access(&a, Access::Full).await.unwrap();
    let attacker = pg_tenant(&a, &new).await.unwrap();
    let fired: i64 = attacker
        .query_one("SELECT count(*) FROM public.trap_fired", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(fired, 0, "the provisioner ran none of the tenant's code");
    d.drop_owned(&a).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// MariaDB

async fn my(
    user: &str,
    password: &str,
    db: Option<&str>,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .prefer_socket(false)
        .user(Some(user))
        .pass(Some(password))
        .db_name(db);
    mysql_async::Conn::new(opts).await
}

async fn my_tenant(t: &Target, pw: &Password) -> Result<mysql_async::Conn, mysql_async::Error> {
    my(t.names.db_user(), pw.expose(), Some(t.names.db_name())).await
}

async fn my_root() -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(&root_url()).unwrap();
    mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
        .await
        .unwrap()
}

async fn my_ok(c: &mut mysql_async::Conn, sql: &str) -> bool {
    c.query_drop(sql).await.is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_ownership_survives_whatever_the_tenant_does_to_its_database() {
    let d = driver(Engine::Mariadb).await;
    let (a, pw) = tenant(&d).await;
    let db = a.names.db_name();
    let mut c = my_tenant(&a, &pw).await.unwrap();
    let other = format!("hepdb:{}", DatabaseId::new());
    assert!(my_ok(&mut c, &format!("ALTER DATABASE `{db}` COMMENT '{other}'")).await);
    // Dropped and made again by the tenant: still the database hepdb made, by name.
    assert!(my_ok(&mut c, &format!("DROP DATABASE `{db}`")).await);
    assert!(my_ok(&mut c, &format!("CREATE DATABASE `{db}` COMMENT 'mine'")).await);
    assert!(
        !my_ok(
            &mut c,
            "INSERT INTO hepdb.owners VALUES ('um_x', 'hepdb:x')"
        )
        .await
    );
    assert!(!my_ok(&mut c, "DELETE FROM hepdb.owners").await);
    drop(c);
    let rotated = Password::generate();
    d.set_password(&a, &rotated).await.unwrap();
    assert!(my_tenant(&a, &pw).await.is_err(), "old password refused");
    d.lock_login(&a).await.unwrap();
    assert!(my_tenant(&a, &rotated).await.is_err(), "suspended");
    d.set_access(&a, Access::Full).await.unwrap();
    assert!(my_tenant(&a, &rotated).await.is_ok());
    d.drop_owned(&a).await.unwrap();
    assert!(!d.can_login(&a, &rotated).await.unwrap(), "dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_restricted_and_locked_states_hold() {
    let d = driver(Engine::Mariadb).await;
    let (a, pw) = tenant(&d).await;
    let mut c = my_tenant(&a, &pw).await.unwrap();
    for sql in [
        "CREATE TABLE t (v TEXT)",
        "INSERT INTO t VALUES ('x')",
        "CREATE PROCEDURE grow() SQL SECURITY DEFINER INSERT INTO t VALUES (REPEAT('x', 1000))",
        "CREATE TABLE logged (v INT)",
        "CREATE TABLE sink (v INT)",
        "CREATE TRIGGER copy AFTER DELETE ON logged FOR EACH ROW INSERT INTO sink VALUES (1)",
        "INSERT INTO logged VALUES (1)",
    ] {
        c.query_drop(sql).await.unwrap();
    }
    d.set_access(&a, Access::Restricted).await.unwrap();
    assert!(
        !my_ok(&mut c, "SELECT 1").await,
        "the session open before was ended"
    );
    let mut c = my_tenant(&a, &pw).await.unwrap();
    assert!(my_ok(&mut c, "SELECT COUNT(*) FROM t").await, "read");
    assert!(!my_ok(&mut c, "INSERT INTO t VALUES ('y')").await, "insert");
    assert!(!my_ok(&mut c, "CALL grow()").await, "definer routine");
    assert!(
        !my_ok(&mut c, "DELETE FROM logged").await,
        "trigger that writes"
    );
    assert!(
        !my_ok(&mut c, "CREATE TABLE more (v INT) ENGINE = Aria").await,
        "create"
    );
    assert!(
        !my_ok(&mut c, "ALTER TABLE t ENGINE = MyISAM").await,
        "alter"
    );
    assert!(
        !my_ok(&mut c, "CREATE TEMPORARY TABLE tmp (v INT)").await,
        "temp"
    );
    assert!(
        my_ok(&mut c, "DELETE FROM t WHERE v = 'x'").await,
        "free space"
    );

    d.lock_login(&a).await.unwrap();
    assert!(!my_ok(&mut c, "SELECT 1").await, "locked: session ended");
    assert!(my_tenant(&a, &pw).await.is_err(), "locked: no login");
    let grants: Vec<String> = my_root()
        .await
        .exec(
            "SELECT Db FROM mysql.db WHERE User = ?",
            (a.names.db_user(),),
        )
        .await
        .unwrap();
    assert!(
        grants.is_empty(),
        "locked: no right left for its events and routines to use"
    );
    d.set_access(&a, Access::Full).await.unwrap();
    let mut c = my_tenant(&a, &pw).await.unwrap();
    assert!(my_ok(&mut c, "CALL grow()").await, "restored");
    d.drop_owned(&a).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_sizes_are_the_files_not_the_statistics() {
    let d = driver(Engine::Mariadb).await;
    let (a, pw) = tenant(&d).await;
    let mut c = my_tenant(&a, &pw).await.unwrap();
    c.query_drop("SET SESSION max_statement_time = 0")
        .await
        .unwrap();
    // Off-page values, which the InnoDB statistics miss until an ANALYZE.
    c.query_drop("CREATE TABLE big (v LONGBLOB)").await.unwrap();
    for _ in 0..16 {
        c.query_drop("INSERT INTO big VALUES (REPEAT('x', 1048576))")
            .await
            .unwrap();
    }
    // Another storage engine keeps its own files.
    c.query_drop("CREATE TABLE other (v LONGBLOB) ENGINE = Aria")
        .await
        .unwrap();
    for _ in 0..4 {
        c.query_drop("INSERT INTO other VALUES (REPEAT('y', 1048576))")
            .await
            .unwrap();
    }
    let sizes = d.sizes().await.unwrap();
    let size = sizes
        .iter()
        .find(|(n, _)| n == a.names.db_name())
        .map(|(_, b)| *b)
        .unwrap();
    assert!(
        size >= 20 * 1024 * 1024,
        "measured {size} bytes for 20 MiB of data"
    );
    // CSV reports 0 bytes whatever it holds: such a database is not measured at all (and the
    // quota watcher does not let that last), never measured as empty.
    c.query_drop("CREATE TABLE hidden (v LONGTEXT NOT NULL) ENGINE = CSV")
        .await
        .unwrap();
    c.query_drop("INSERT INTO hidden VALUES (REPEAT('z', 1048576))")
        .await
        .unwrap();
    let sizes = d.sizes().await.unwrap();
    assert!(
        !sizes.iter().any(|(n, _)| n == a.names.db_name()),
        "{sizes:?}"
    );
    d.drop_owned(&a).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_stolen_provisioner_is_not_a_stolen_server() {
    let d = driver(Engine::Mariadb).await;
    let opts = mysql_async::Opts::from_url(&provisioner_url(Engine::Mariadb)).unwrap();
    let mut p =
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
            .await
            .unwrap();
    for attempt in [
        "ALTER USER 'root'@'localhost' IDENTIFIED BY 'taken'",
        "CREATE USER 'someone'@'%'",
        "DROP USER 'root'@'localhost'",
        "GRANT ALL PRIVILEGES ON *.* TO CURRENT_USER",
        "SELECT * FROM mysql.user",
        "SELECT * FROM mysql.db",
        "CREATE DATABASE ops_private",
        "CALL hepdb.alter_user('root', NULL, NULL, TRUE)",
        "CALL hepdb.drop_user('root')",
        "CALL hepdb.end_sessions('root')",
        "CALL hepdb.create_user('dum_0000000000_1', '*0000000000000000000000000000000000000000', 1)",
        "SET GLOBAL max_connections = 1",
    ] {
        assert!(
            !my_ok(&mut p, attempt).await,
            "the provisioner could: {attempt}"
        );
    }
    let (a, _) = tenant(&d).await;
    // Spellings that MariaDB would match to the tenant's account, or to another one.
    let user = a.names.db_user();
    for name in [user.to_uppercase(), format!("{user}\\n")] {
        assert!(
            !my_ok(&mut p, &format!("CALL hepdb.drop_user('{name}')")).await,
            "{name}"
        );
    }
    assert!(d.can_login(&a, &Password::generate()).await.is_ok());
    assert!(
        !my_ok(
            &mut p,
            &format!("GRANT ALL ON *.* TO '{}'@'%'", a.names.db_user())
        )
        .await,
        "server-wide rights to a tenant"
    );
    d.drop_owned(&a).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_tenant_at_its_connection_limit_leaves_room_for_others() {
    let d = driver(Engine::Mariadb).await;
    let (a, pw) = tenant(&d).await;
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(my_tenant(&a, &pw).await.unwrap());
    }
    assert!(my_tenant(&a, &pw).await.is_err(), "over the limit");
    let (b, bpw) = tenant(&d).await;
    assert!(my_tenant(&b, &bpw).await.is_ok());
    assert!(matches!(
        d.can_login(&a, &pw).await,
        Err(EngineError::Unavailable(_))
    ));
    drop(held);
    for t in [a, b] {
        d.drop_owned(&t).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_tenants_see_only_their_own_database() {
    let d = driver(Engine::Mariadb).await;
    let (a, pw) = tenant(&d).await;
    let (b, _) = tenant(&d).await;
    let mut c = my(a.names.db_user(), pw.expose(), None).await.unwrap();
    let visible: Vec<String> = c
        .query("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        .await
        .unwrap();
    assert!(
        visible
            .iter()
            .all(|s| s == a.names.db_name() || s == "information_schema"),
        "{visible:?}"
    );
    assert!(!my_ok(&mut c, &format!("SELECT * FROM `{}`.t", b.names.db_name())).await);
    assert!(!my_ok(&mut c, "SELECT * FROM hepdb.owners").await);
    for t in [a, b] {
        d.drop_owned(&t).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_scheduled_events_stop_writing_when_locked_or_restricted() {
    let d = driver(Engine::Mariadb).await;
    let mut root = my_root().await;
    root.query_drop("SET GLOBAL event_scheduler = ON")
        .await
        .unwrap();
    for access in [Access::Locked, Access::Restricted] {
        let (a, pw) = tenant(&d).await;
        let mut c = my_tenant(&a, &pw).await.unwrap();
        for sql in [
            "CREATE TABLE log (at DATETIME(6))",
            // One long run that keeps writing, and a schedule that starts new ones.
            "CREATE EVENT forever ON SCHEDULE EVERY 1 SECOND DO \
             BEGIN DECLARE i INT DEFAULT 0; \
               WHILE i < 600 DO INSERT INTO log VALUES (NOW(6)); DO SLEEP(0.05); SET i = i + 1; \
               END WHILE; END",
        ] {
            c.query_drop(sql).await.unwrap();
        }
        drop(c);
        let count = |db: String| async move {
            let mut r = my_root().await;
            let n: Option<i64> = r
                .query_first(format!("SELECT COUNT(*) FROM `{db}`.log"))
                .await
                .unwrap();
            n.unwrap()
        };
        let db = a.names.db_name().to_owned();
        let started = std::time::Instant::now();
        while count(db.clone()).await == 0 {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "the event never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        d.set_access(&a, access).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let after = count(db.clone()).await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        assert_eq!(
            count(db.clone()).await,
            after,
            "{access:?}: the tenant's event kept writing"
        );
        d.drop_owned(&a).await.unwrap();
    }
    root.query_drop("SET GLOBAL event_scheduler = OFF")
        .await
        .unwrap();
}

/// MariaDB's user changes and creates read deadlines from the provisioner's own session
/// (`@hepdb_not_after`, `@hepdb_create_not_after`). A tenant sets both in its sessions, plants
/// `alter_user`, `create_database` and `create_user` procedures and a `unix_timestamp` function
/// in its database, and tries to replace hepdb's own: the provisioner's changes and another
/// tenant's create still go through, and none of the tenant's routines runs.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_a_tenant_cannot_plant_the_deadline_of_a_user_change() {
    let d = driver(Engine::Mariadb).await;
    let (a, pw) = tenant(&d).await;
    let mut attacker = my_tenant(&a, &pw).await.unwrap();
    for sql in [
        "CREATE TABLE trap_fired (at DATETIME)",
        "CREATE PROCEDURE alter_user(u VARCHAR(128), h VARCHAR(64), m INT, l BOOLEAN) \
         INSERT INTO trap_fired VALUES (NOW())",
        "CREATE FUNCTION unix_timestamp(t DATETIME(6)) RETURNS DECIMAL(20,6) \
         MODIFIES SQL DATA BEGIN INSERT INTO trap_fired VALUES (NOW()); RETURN 0; END",
        "SET @hepdb_not_after = 0",
        // The create's routines and deadline, too.
        "CREATE PROCEDURE create_database(d VARCHAR(64)) INSERT INTO trap_fired VALUES (NOW())",
        "CREATE PROCEDURE create_user(u VARCHAR(128), h VARCHAR(64), m INT) \
         INSERT INTO trap_fired VALUES (NOW())",
        "SET @hepdb_create_not_after = 0",
    ] {
        attacker.query_drop(sql).await.unwrap();
    }
    // hepdb's own routines are out of its reach.
    for sql in [
        "CREATE OR REPLACE PROCEDURE hepdb.create_database(d VARCHAR(64)) SELECT 1",
        "DROP PROCEDURE hepdb.create_user",
    ] {
        assert!(
            !my_ok(&mut attacker, sql).await,
            "the tenant may not: {sql}"
        );
    }
    // Another tenant's database is made while all of that is in place.
    let (other, other_pw) = tenant(&d).await;
    assert!(d.can_login(&other, &other_pw).await.unwrap());
    d.drop_owned(&other).await.unwrap();
    let new = Password::generate();
    d.set_password(&a, &new).await.unwrap();
    assert!(d.can_login(&a, &new).await.unwrap());
    d.set_access(&a, Access::Locked).await.unwrap();
    assert!(!d.can_login(&a, &new).await.unwrap());
    d.set_access(&a, Access::Full).await.unwrap();
    let mut attacker = my_tenant(&a, &new).await.unwrap();
    let fired: Option<i64> = attacker
        .query_first("SELECT COUNT(*) FROM trap_fired")
        .await
        .unwrap();
    assert_eq!(
        fired,
        Some(0),
        "the provisioner ran none of the tenant's code"
    );
    d.drop_owned(&a).await.unwrap();
}
