//! `engine bootstrap` upgrades an installation made by an earlier hepdb in place: the
//! provisioner loses the powers it no longer needs, and tenant databases made under the old
//! ownership rules keep working under the new ones. Its own test binary: it changes the shared
//! provisioner's privileges for a moment, which the other suites must never see.

use hepdb_core::{
    DatabaseId, Engine,
    naming::{DbTag, EngineNames},
    secret::Password,
};
use hepdb_testkit::{postgres_root_url, provisioner_url};
use hepdb_worker::engines::{EngineDriver, MariaDb, Postgres, Target};
use mysql_async::prelude::Queryable;

fn target() -> Target {
    Target {
        id: DatabaseId::new(),
        names: EngineNames::new(&DbTag::generate(), 1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_databases_of_an_earlier_installation_are_handed_to_the_provisioner() {
    let root_url = postgres_root_url();
    let url = provisioner_url(Engine::Postgres);
    Postgres::bootstrap(&root_url, &url).await.unwrap();
    let (root, conn) = tokio_postgres::connect(&root_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // What the earlier bootstrap and create left: a CREATEROLE provisioner, and a database
    // owned by its tenant role, cloned from template1.
    let t = target();
    let pw = Password::generate();
    let (db, user, mark) = (t.names.db_name(), t.names.db_user(), t.mark());
    for sql in [
        "ALTER ROLE hepdb_provisioner CREATEROLE".to_owned(),
        format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{}'", pw.expose()),
        format!("COMMENT ON ROLE \"{user}\" IS '{mark}'"),
        format!("GRANT \"{user}\" TO hepdb_provisioner"),
        format!("CREATE DATABASE \"{db}\" OWNER \"{user}\""),
        format!("REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC"),
        format!("GRANT CONNECT, TEMPORARY ON DATABASE \"{db}\" TO \"{user}\""),
    ] {
        root.batch_execute(&sql).await.unwrap();
    }
    let tenant = || {
        let mut c: tokio_postgres::Config = root_url.parse().unwrap();
        c.user(user).password(pw.expose()).dbname(db);
        async move {
            let (client, conn) = c.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(conn);
            client
        }
    };
    tenant()
        .await
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('data')")
        .await
        .unwrap();

    let done = Postgres::bootstrap(&root_url, &url).await.unwrap();
    assert!(done.upgraded_databases >= 1, "{done:?}");
    let row = root
        .query_one(
            "SELECT r.rolcreaterole, o.rolname::text FROM pg_roles r, pg_database d \
             JOIN pg_roles o ON o.oid = d.datdba \
             WHERE r.rolname = 'hepdb_provisioner' AND d.datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "CREATEROLE taken back");
    assert_eq!(row.get::<_, String>(1), "hepdb_provisioner");
    // The tenant still owns its schema and its data, and every operation works.
    let c = tenant().await;
    c.batch_execute("CREATE TABLE more (v int); INSERT INTO kept VALUES ('after')")
        .await
        .unwrap();
    assert!(
        c.batch_execute(&format!("ALTER DATABASE \"{db}\" CONNECTION LIMIT 0"))
            .await
            .is_err(),
        "the database is no longer the tenant's to configure"
    );
    let d = EngineDriver::new(Engine::Postgres, &url, 5).unwrap();
    drop(c);
    d.set_access(&t, hepdb_core::Access::Restricted)
        .await
        .unwrap();
    let c = tenant().await;
    c.batch_execute("SELECT count(*) FROM kept").await.unwrap();
    assert!(
        c.batch_execute("INSERT INTO kept VALUES ('x')")
            .await
            .is_err()
    );
    drop(c);
    d.set_access(&t, hepdb_core::Access::Full).await.unwrap();
    let rotated = Password::generate();
    d.set_password(&t, &rotated).await.unwrap();
    d.drop_owned(&t).await.unwrap();
    assert!(!d.can_login(&t, &rotated).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_databases_marked_by_comment_are_claimed_and_global_powers_taken_back() {
    let root_url = hepdb_testkit::root_url();
    let url = provisioner_url(Engine::Mariadb);
    MariaDb::bootstrap(&root_url, &url).await.unwrap();
    let opts = mysql_async::Opts::from_url(&root_url).unwrap();
    let mut root =
        mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
            .await
            .unwrap();
    let t = target();
    let pw = Password::generate();
    let (db, user, mark) = (t.names.db_name(), t.names.db_user(), t.mark());
    for sql in [
        "GRANT CREATE USER, CONNECTION ADMIN ON *.* TO 'hepdb_provisioner'@'%'".to_owned(),
        format!("CREATE DATABASE `{db}` COMMENT '{mark}'"),
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{}'", pw.expose()),
        format!(
            "GRANT ALL PRIVILEGES ON `{}`.* TO '{user}'@'%'",
            db.replace('_', "\\_")
        ),
    ] {
        root.query_drop(sql).await.unwrap();
    }

    let done = MariaDb::bootstrap(&root_url, &url).await.unwrap();
    assert!(done.upgraded_databases >= 1, "{done:?}");
    let claim: Option<String> = root
        .exec_first("SELECT mark FROM hepdb.owners WHERE db_name = ?", (db,))
        .await
        .unwrap();
    assert_eq!(claim.as_deref(), Some(mark.as_str()));
    let grants: Vec<String> = root
        .query("SHOW GRANTS FOR 'hepdb_provisioner'@'%'")
        .await
        .unwrap();
    assert!(
        !grants
            .iter()
            .any(|g| g.contains("CREATE USER") || g.contains("CONNECTION ADMIN")),
        "{grants:?}"
    );
    let d = EngineDriver::new(Engine::Mariadb, &url, 5).unwrap();
    let rotated = Password::generate();
    d.set_password(&t, &rotated).await.unwrap();
    assert!(!d.can_login(&t, &pw).await.unwrap());
    d.lock_login(&t).await.unwrap();
    assert!(!d.can_login(&t, &rotated).await.unwrap());
    d.drop_owned(&t).await.unwrap();
}
