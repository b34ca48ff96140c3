//! Each engine driver against its real server: convergence after partial work, ownership
//! (colliding objects are left untouched), rotation, dropping and sizes. The same checks run
//! for every engine, so a new driver gets them by being added to `drivers()`.
//!
//! MongoDB runs as a private smongo instance per test: the stand-in keeps every database in
//! one namespace, so its `dropDatabase` empties the whole server, and these tests drop.

use hepdb_core::{
    Access, DatabaseId, Engine,
    naming::{DbTag, EngineNames},
    secret::Password,
};
use hepdb_testkit::{
    bootstrap_provisioners, postgres_root_url, provisioner_url, root_url, servers::PrivateMongo,
};
use hepdb_worker::engines::{EngineDriver, EngineError, Mongo, Target};
use mongodb::bson::{Document, doc};
use mysql_async::prelude::Queryable;

const MONGO_ROOT_PW: &str = "private-root";

/// Runs a test body with a deadline. The MongoDB stand-in (smongo, whose server is native code)
/// has been seen to stop answering one connection for good; such a hang is retried once, with a
/// fresh stand-in and fresh names, and a second one fails the test instead of hanging CI.
async fn guarded<F, Fut>(body: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for attempt in 1..=2 {
        match tokio::time::timeout(std::time::Duration::from_secs(60), body()).await {
            Ok(()) => return,
            Err(_) if attempt == 1 => {
                eprintln!("drivers: the test hung; running it again with a fresh stand-in")
            }
            Err(_) => panic!("the test hung twice (the MongoDB stand-in stopped answering?)"),
        }
    }
}

/// A driver per engine with its provisioner set up (MariaDB and PostgreSQL once per process),
/// and the private MongoDB they talk to.
async fn drivers() -> (Vec<(Engine, EngineDriver)>, PrivateMongo) {
    bootstrap_provisioners().await;
    let mongo = PrivateMongo::start(MONGO_ROOT_PW, false);
    Mongo::bootstrap(&mongo.root_url(), &mongo.provisioner_url())
        .await
        .unwrap();
    let drivers = Engine::ALL
        .into_iter()
        .map(|engine| {
            let url = match engine {
                Engine::Mongo => mongo.provisioner_url(),
                _ => provisioner_url(engine),
            };
            (engine, EngineDriver::new(engine, &url, 5).unwrap())
        })
        .collect();
    (drivers, mongo)
}

fn target() -> Target {
    Target {
        id: DatabaseId::new(),
        names: EngineNames::new(&DbTag::generate(), 1),
    }
}

async fn pg_root() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn mongo_root_client(m: &PrivateMongo) -> mongodb::Client {
    mongodb::Client::with_uri_str(m.root_url()).await.unwrap()
}

/// Runs statements as the engine's root, to build states hepdb did not make.
async fn sql_as_root(engine: Engine, statements: &[String]) {
    match engine {
        Engine::Mariadb => {
            let mut c = hepdb_testkit::root().await;
            for s in statements {
                c.query_drop(s).await.unwrap();
            }
        }
        Engine::Postgres => {
            let c = pg_root().await;
            for s in statements {
                c.batch_execute(s).await.unwrap();
            }
        }
        Engine::Mongo => unreachable!("MongoDB setup uses commands"),
    }
}

async fn mongo_as_root(m: &PrivateMongo, db: &str, command: Document) {
    let c = mongo_root_client(m).await;
    c.database(db).run_command(command).await.unwrap();
    c.shutdown().await;
}

/// Makes `db` as root, with one row (or document) someone cares about.
async fn foreign_database_with_data(engine: Engine, db: &str) {
    match engine {
        Engine::Mariadb => {
            sql_as_root(
                engine,
                &[
                    format!("CREATE DATABASE `{db}`"),
                    format!("CREATE TABLE `{db}`.precious (v TEXT)"),
                    format!("INSERT INTO `{db}`.precious VALUES ('keep me')"),
                ],
            )
            .await;
        }
        Engine::Postgres => {
            sql_as_root(engine, &[format!("CREATE DATABASE \"{db}\"")]).await;
        }
        Engine::Mongo => unreachable!("the MongoDB stand-in has no separate databases"),
    }
}

/// Whether the foreign database is still there, with its data where the engine lets us look.
async fn foreign_database_intact(engine: Engine, db: &str) -> bool {
    match engine {
        Engine::Mariadb => {
            let v: Option<String> = hepdb_testkit::root()
                .await
                .query_first(format!("SELECT v FROM `{db}`.precious"))
                .await
                .unwrap();
            v.as_deref() == Some("keep me")
        }
        Engine::Postgres => pg_root()
            .await
            .query_opt(
                "SELECT r.rolname::text FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba \
                 WHERE datname = $1",
                &[&db],
            )
            .await
            .unwrap()
            .is_some_and(|row| row.get::<_, String>(0) == "postgres"),
        Engine::Mongo => unreachable!("the MongoDB stand-in has no separate databases"),
    }
}

async fn cleanup_foreign(m: &PrivateMongo, engine: Engine, t: &Target) {
    let (db, user) = (t.names.db_name(), t.names.db_user());
    match engine {
        Engine::Mariadb => {
            sql_as_root(
                engine,
                &[
                    format!("DROP DATABASE IF EXISTS `{db}`"),
                    format!("DROP USER IF EXISTS '{user}'@'%'"),
                ],
            )
            .await;
        }
        Engine::Postgres => {
            sql_as_root(
                engine,
                &[
                    format!("DROP DATABASE IF EXISTS \"{db}\""),
                    format!("DROP ROLE IF EXISTS \"{user}\""),
                ],
            )
            .await;
        }
        Engine::Mongo => {
            let c = mongo_root_client(m).await;
            c.database(db).drop().await.unwrap();
            let _ = c
                .database("admin")
                .run_command(doc! { "dropUser": user })
                .await;
            c.shutdown().await;
        }
    }
}

/// Logs in as `user` with the engine's own client, outside hepdb's driver.
async fn foreign_login(m: &PrivateMongo, engine: Engine, user: &str, password: &Password) -> bool {
    match engine {
        Engine::Mariadb => {
            let opts = mysql_async::OptsBuilder::from_opts(
                mysql_async::Opts::from_url(&root_url()).unwrap(),
            )
            .prefer_socket(false)
            .user(Some(user))
            .pass(Some(password.expose()));
            mysql_async::Conn::new(opts).await.is_ok()
        }
        Engine::Postgres => {
            let mut c: tokio_postgres::Config = postgres_root_url().parse().unwrap();
            c.user(user).password(password.expose()).dbname("postgres");
            // Tenants may not connect to `postgres`: a refusal after the password was accepted
            // (insufficient privilege) still proves the login is intact.
            match c.connect(tokio_postgres::NoTls).await {
                Ok(_) => true,
                Err(e) => {
                    e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
                }
            }
        }
        Engine::Mongo => {
            let url = format!(
                "mongodb://{user}:{}@127.0.0.1:{}/elsewhere?authSource=admin",
                password.expose(),
                m.port
            );
            let c = mongodb::Client::with_uri_str(url).await.unwrap();
            let ok = c
                .database("elsewhere")
                .list_collection_names()
                .await
                .is_ok();
            c.shutdown().await;
            ok
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_converges_rotates_and_drops_on_every_engine() {
    guarded(|| async {
        // Keeps the private MongoDB running for the test.
        let (drivers, _mongo) = drivers().await;
        for (engine, d) in drivers {
            let t = target();
            let (first, second, third) = (
                Password::generate(),
                Password::generate(),
                Password::generate(),
            );
            d.create(&t, &first)
                .await
                .unwrap_or_else(|e| panic!("{engine}: {e}"));
            assert!(d.can_login(&t, &first).await.unwrap(), "{engine}");
            // A redelivered create with the same intent is a no-op...
            d.create(&t, &first)
                .await
                .unwrap_or_else(|e| panic!("{engine} again: {e}"));
            // ...and one carrying another password converges on it.
            d.create(&t, &second).await.unwrap();
            assert!(d.can_login(&t, &second).await.unwrap(), "{engine}");
            assert!(!d.can_login(&t, &first).await.unwrap(), "{engine}");

            d.set_password(&t, &third).await.unwrap();
            assert!(d.can_login(&t, &third).await.unwrap(), "{engine}");
            assert!(
                !d.can_login(&t, &second).await.unwrap(),
                "{engine}: old password refused"
            );

            d.drop_owned(&t).await.unwrap();
            assert!(!d.can_login(&t, &third).await.unwrap(), "{engine}: dropped");
            d.drop_owned(&t)
                .await
                .unwrap_or_else(|e| panic!("{engine}: drop is idempotent: {e}"));
        }
    })
    .await;
}

/// A change to a user or role that reaches the server after the worker gave up on it (the
/// network held it) must change nothing: by then the worker may have put the previous
/// password back. Every user or role change carries a deadline, checked by the engine's own
/// routine; a driver whose deadline is "now" has every password change refused, as
/// unavailable, and the password stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_that_arrives_after_its_deadline_changes_nothing() {
    guarded(|| async {
        bootstrap_provisioners().await;
        for engine in [Engine::Mariadb, Engine::Postgres] {
            let url = provisioner_url(engine);
            let on_time = EngineDriver::new(engine, &url, 5).unwrap();
            let late = EngineDriver::new(engine, &url, 5)
                .unwrap()
                .with_engine_timeout(std::time::Duration::ZERO);
            let t = target();
            let (old, new) = (Password::generate(), Password::generate());
            on_time.create(&t, &old).await.unwrap();
            let refused = late.set_password(&t, &new).await;
            assert!(
                matches!(refused, Err(EngineError::Unavailable(_))),
                "{engine}: {refused:?}"
            );
            assert!(on_time.can_login(&t, &old).await.unwrap(), "{engine}");
            assert!(!on_time.can_login(&t, &new).await.unwrap(), "{engine}");
            // On time, the same change goes through.
            on_time.set_password(&t, &new).await.unwrap();
            assert!(on_time.can_login(&t, &new).await.unwrap(), "{engine}");
            on_time.drop_owned(&t).await.unwrap();
        }
        // MariaDB's create carries one too, from the start of the step: late, it makes
        // nothing (PostgreSQL's `CREATE DATABASE` is fenced by ending its session instead).
        let url = provisioner_url(Engine::Mariadb);
        let late = EngineDriver::new(Engine::Mariadb, &url, 5)
            .unwrap()
            .with_engine_timeout(std::time::Duration::ZERO);
        let t = target();
        let refused = late.create(&t, &Password::generate()).await;
        assert!(
            matches!(refused, Err(EngineError::Unavailable(_))),
            "{refused:?}"
        );
        let on_time = EngineDriver::new(Engine::Mariadb, &url, 5).unwrap();
        on_time.drop_owned(&t).await.unwrap();
        assert_eq!(on_engine(Engine::Mariadb, &t).await, (false, false));
    })
    .await;
}

/// Whether the target's database, and its user or role, exist on the engine (as root sees it).
async fn on_engine(engine: Engine, t: &Target) -> (bool, bool) {
    let (db, user) = (t.names.db_name(), t.names.db_user());
    match engine {
        Engine::Mariadb => {
            let mut c = hepdb_testkit::root().await;
            let mut count = async |sql: &str, name: &str| -> bool {
                let n: Option<i64> = c.exec_first(sql, (name,)).await.unwrap();
                n.unwrap_or(0) > 0
            };
            let d = count(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                db,
            )
            .await;
            let u = count("SELECT COUNT(*) FROM mysql.user WHERE User = ?", user).await;
            (d, u)
        }
        Engine::Postgres => {
            let c = pg_root().await;
            let count = async |sql: &str, name: &str| -> bool {
                c.query_one(sql, &[&name]).await.unwrap().get::<_, i64>(0) > 0
            };
            let d = count("SELECT count(*) FROM pg_database WHERE datname = $1", db).await;
            let r = count("SELECT count(*) FROM pg_roles WHERE rolname = $1", user).await;
            (d, r)
        }
        Engine::Mongo => unreachable!("MongoDB has no CREATE DATABASE"),
    }
}

/// A `CREATE DATABASE` the worker gave up on may still reach the server after the worker
/// cleaned the failed create up (the network held it; on PostgreSQL, the server may also still
/// be running it). It must not make a database then that no row owns and no cleanup finds:
/// MariaDB's carries a deadline and needs the ownership claim, and PostgreSQL's session is
/// ended by the cleanup.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_given_up_on_makes_nothing_after_its_cleanup() {
    use hepdb_testkit::proxy::Proxy;
    use std::time::Duration;
    bootstrap_provisioners().await;
    for (engine, upstream, statement) in [
        (Engine::Mariadb, "127.0.0.1:3306", "hepdb.create_database("),
        (Engine::Postgres, "127.0.0.1:5433", "CREATE DATABASE"),
    ] {
        let direct_url = provisioner_url(engine);
        let proxy = Proxy::start(upstream).await;
        assert!(direct_url.contains(upstream), "{engine}: {direct_url}");
        let via = direct_url.replace(upstream, &format!("127.0.0.1:{}", proxy.port));
        let limit = Duration::from_secs(2);
        let worker = EngineDriver::new(engine, &via, 5)
            .unwrap()
            .with_engine_timeout(limit);
        let cleanup = EngineDriver::new(engine, &direct_url, 5).unwrap();
        let t = target();
        proxy.hold_matching(Some(statement.as_bytes()));
        let gave_up = tokio::time::timeout(limit, worker.create(&t, &Password::generate())).await;
        assert!(gave_up.is_err(), "{engine}: the statement was not held");
        cleanup.drop_owned(&t).await.unwrap();
        // The network delivers the statement now, and the server has time to run it.
        proxy.hold_matching(None);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (database, user) = on_engine(engine, &t).await;
        assert!(
            !database,
            "{engine}: the database appeared after the cleanup"
        );
        assert!(!user, "{engine}: the user appeared after the cleanup");
        // The same driver, on time, still creates.
        proxy.hold_matching(None);
        let pw = Password::generate();
        let t = target();
        worker.create(&t, &pw).await.unwrap();
        assert!(worker.can_login(&t, &pw).await.unwrap(), "{engine}");
        cleanup.drop_owned(&t).await.unwrap();
    }
    // What such a late create left before sessions were ended: the provisioner's database
    // with its role already gone. A cleanup drops it (names are never reused, and only the
    // provisioner's own databases are taken for ours without the role).
    let t = target();
    let db = t.names.db_name();
    sql_as_root(
        Engine::Postgres,
        &[format!("CREATE DATABASE \"{db}\" OWNER hepdb_provisioner")],
    )
    .await;
    let pg = EngineDriver::new(Engine::Postgres, &provisioner_url(Engine::Postgres), 5).unwrap();
    pg.drop_owned(&t).await.unwrap();
    assert_eq!(on_engine(Engine::Postgres, &t).await, (false, false));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_steps_converges() {
    guarded(|| async {
        let (drivers, m) = drivers().await;
        for (engine, d) in drivers {
            let t = target();
            let (db, user, mark) = (t.names.db_name(), t.names.db_user(), t.mark());
            // The state each engine's create is in after its first step, before the second.
            match engine {
                // Claimed and database made, user not yet.
                Engine::Mariadb => {
                    sql_as_root(
                        engine,
                        &[
                            format!("INSERT INTO hepdb.owners VALUES ('{db}', '{mark}')"),
                            format!("CREATE DATABASE `{db}`"),
                        ],
                    )
                    .await;
                }
                // Role made, marked and granted to the provisioner; no database yet.
                Engine::Postgres => {
                    sql_as_root(
                        engine,
                        &[
                            format!("CREATE ROLE \"{user}\" LOGIN"),
                            format!("COMMENT ON ROLE \"{user}\" IS '{mark}'"),
                            format!("GRANT \"{user}\" TO hepdb_provisioner"),
                        ],
                    )
                    .await;
                }
                // Ownership claimed, user not yet created.
                Engine::Mongo => {
                    mongo_as_root(
                        &m,
                        "hepdb",
                        doc! { "insert": "owners",
                        "documents": [{ "_id": user, "db": db, "mark": &mark }] },
                    )
                    .await;
                }
            }
            let pw = Password::generate();
            d.create(&t, &pw)
                .await
                .unwrap_or_else(|e| panic!("{engine}: {e}"));
            assert!(d.can_login(&t, &pw).await.unwrap(), "{engine}");
            d.drop_owned(&t).await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_colliding_database_is_refused_and_left_untouched() {
    guarded(|| async {
        let (drivers, m) = drivers().await;
        for (engine, d) in drivers {
            // The smongo stand-in has no separate databases (one namespace for all, and
            // `listDatabases` answers per connection), so a foreign MongoDB database cannot even
            // be set up here; the driver's `listDatabases` check is written for real MongoDB.
            if engine == Engine::Mongo {
                continue;
            }
            let t = target();
            foreign_database_with_data(engine, t.names.db_name()).await;
            let pw = Password::generate();
            let Err(err) = d.create(&t, &pw).await else {
                panic!("{engine}: create over a foreign database succeeded")
            };
            assert!(matches!(err, EngineError::Conflict(_)), "{engine}: {err}");
            assert!(
                !d.can_login(&t, &pw).await.unwrap(),
                "{engine}: no user was left behind"
            );
            // Cleaning up after the failed create does not touch it either.
            let _ = d.drop_owned(&t).await;
            assert!(
                foreign_database_intact(engine, t.names.db_name()).await,
                "{engine}"
            );
            cleanup_foreign(&m, engine, &t).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_colliding_user_is_refused_and_left_untouched() {
    guarded(|| async {
        let (drivers, m) = drivers().await;
        for (engine, d) in drivers {
            let t = target();
            let user = t.names.db_user();
            let theirs = Password::generate();
            match engine {
                Engine::Mariadb => {
                    sql_as_root(
                        engine,
                        &[format!(
                            "CREATE USER '{user}'@'%' IDENTIFIED BY '{}'",
                            theirs.expose()
                        )],
                    )
                    .await;
                }
                Engine::Postgres => {
                    sql_as_root(
                        engine,
                        &[format!(
                            "CREATE ROLE \"{user}\" LOGIN PASSWORD '{}'",
                            theirs.expose()
                        )],
                    )
                    .await;
                }
                Engine::Mongo => {
                    mongo_as_root(
                        &m,
                        "admin",
                        doc! { "createUser": user, "pwd": theirs.expose(),
                        "roles": [{ "role": "read", "db": "elsewhere" }] },
                    )
                    .await;
                }
            }
            let err = d.create(&t, &Password::generate()).await.unwrap_err();
            assert!(matches!(err, EngineError::Conflict(_)), "{engine}: {err}");
            assert!(
                d.set_password(&t, &Password::generate()).await.is_err(),
                "{engine}: no rotate of a user we do not own"
            );
            let _ = d.drop_owned(&t).await;
            assert!(
                foreign_login(&m, engine, user, &theirs).await,
                "{engine}: their user still logs in with their password"
            );
            cleanup_foreign(&m, engine, &t).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sizes_cover_every_database_in_one_call() {
    guarded(|| async {
        // Keeps the private MongoDB running for the test.
        let (drivers, _mongo) = drivers().await;
        for (engine, d) in drivers {
            let t = target();
            d.create(&t, &Password::generate()).await.unwrap();
            let sizes = d.sizes().await.unwrap_or_else(|e| panic!("{engine}: {e}"));
            let mine = sizes.iter().find(|(name, _)| name == t.names.db_name());
            assert!(
                mine.is_some_and(|(_, bytes)| *bytes >= 0),
                "{engine}: {sizes:?}"
            );
            d.drop_owned(&t).await.unwrap();
            let sizes = d.sizes().await.unwrap();
            assert!(
                sizes.iter().all(|(name, _)| name != t.names.db_name()),
                "{engine}: dropped databases are not measured"
            );
        }
    })
    .await;
}

/// What the tenant can do with its database right now, tried with the engine's own client.
#[derive(Debug, PartialEq, Eq)]
struct Abilities {
    login: bool,
    read: bool,
    insert: bool,
    /// MariaDB and PostgreSQL: `DELETE`; MongoDB: dropping a collection.
    free_space: bool,
}

const ALL: Abilities = Abilities {
    login: true,
    read: true,
    insert: true,
    free_space: true,
};

const READ_AND_FREE: Abilities = Abilities {
    login: true,
    read: true,
    insert: false,
    free_space: true,
};

const READ_ONLY: Abilities = Abilities {
    login: true,
    read: true,
    insert: false,
    free_space: false,
};

const NOTHING: Abilities = Abilities {
    login: false,
    read: false,
    insert: false,
    free_space: false,
};

/// Gives the tenant a table (or collections) with a row in it, while it has full rights.
async fn seed(m: &PrivateMongo, engine: Engine, t: &Target, pw: &Password) {
    let (db, user) = (t.names.db_name(), t.names.db_user());
    match engine {
        Engine::Mariadb => {
            let mut c = mariadb_tenant(t, pw).await.unwrap();
            c.query_drop("CREATE TABLE t (v INT)").await.unwrap();
            c.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
        }
        Engine::Postgres => {
            let c = postgres_tenant(t, pw).await.unwrap();
            c.batch_execute("CREATE TABLE t (v INT); INSERT INTO t VALUES (1)")
                .await
                .unwrap();
        }
        Engine::Mongo => {
            let c = mongo_tenant(m, t, pw).await;
            for coll in [format!("t_{db}"), format!("scratch_{db}")] {
                c.database(db)
                    .collection::<Document>(&coll)
                    .insert_one(doc! { "v": 1, "by": user })
                    .await
                    .unwrap();
            }
            c.shutdown().await;
        }
    }
}

async fn mariadb_tenant(
    t: &Target,
    pw: &Password,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(3306)
        .prefer_socket(false)
        .user(Some(t.names.db_user()))
        .pass(Some(pw.expose()))
        .db_name(Some(t.names.db_name()));
    mysql_async::Conn::new(opts).await
}

async fn postgres_tenant(
    t: &Target,
    pw: &Password,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut c: tokio_postgres::Config = postgres_root_url().parse().unwrap();
    c.user(t.names.db_user())
        .password(pw.expose())
        .dbname(t.names.db_name());
    let (client, conn) = c.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn mongo_tenant(m: &PrivateMongo, t: &Target, pw: &Password) -> mongodb::Client {
    let url = format!(
        "mongodb://{}:{}@127.0.0.1:{}/{}?authSource=admin",
        t.names.db_user(),
        pw.expose(),
        m.port,
        t.names.db_name()
    );
    mongodb::Client::with_uri_str(url).await.unwrap()
}

async fn abilities(m: &PrivateMongo, engine: Engine, t: &Target, pw: &Password) -> Abilities {
    match engine {
        Engine::Mariadb => {
            let Ok(mut c) = mariadb_tenant(t, pw).await else {
                return NOTHING;
            };
            Abilities {
                login: true,
                read: c.query_drop("SELECT COUNT(*) FROM t").await.is_ok(),
                insert: c.query_drop("INSERT INTO t VALUES (2)").await.is_ok(),
                free_space: c.query_drop("DELETE FROM t WHERE v = 2").await.is_ok(),
            }
        }
        Engine::Postgres => {
            let Ok(c) = postgres_tenant(t, pw).await else {
                return NOTHING;
            };
            Abilities {
                login: true,
                read: c.batch_execute("SELECT count(*) FROM t").await.is_ok(),
                insert: c.batch_execute("INSERT INTO t VALUES (2)").await.is_ok(),
                free_space: c.batch_execute("DELETE FROM t WHERE v = 2").await.is_ok(),
            }
        }
        Engine::Mongo => {
            // A fresh client each time: the stand-in fixes a connection's rights at login.
            let c = mongo_tenant(m, t, pw).await;
            let db = c.database(t.names.db_name());
            let coll = db.collection::<Document>(&format!("t_{}", t.names.db_name()));
            let read = coll.find_one(doc! {}).await.is_ok();
            let a = Abilities {
                login: read,
                read,
                insert: coll.insert_one(doc! { "v": 2 }).await.is_ok(),
                free_space: db
                    .collection::<Document>(&format!("scratch_{}", t.names.db_name()))
                    .drop()
                    .await
                    .is_ok(),
            };
            c.shutdown().await;
            if a.free_space {
                // Put the scratch collection back for the next look.
                let c = mongo_root_client(m).await;
                c.database(t.names.db_name())
                    .collection::<Document>(&format!("scratch_{}", t.names.db_name()))
                    .insert_one(doc! { "v": 1 })
                    .await
                    .unwrap();
                c.shutdown().await;
            }
            a
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_restrict_and_restore_and_logins_lock_and_unlock() {
    guarded(|| async {
        let (drivers, m) = drivers().await;
        for (engine, d) in drivers {
            let t = target();
            let pw = Password::generate();
            d.create(&t, &pw).await.unwrap();
            seed(&m, engine, &t, &pw).await;
            assert_eq!(abilities(&m, engine, &t, &pw).await, ALL, "{engine}");

            for _ in 0..2 {
                d.set_access(&t, Access::Restricted)
                    .await
                    .unwrap_or_else(|e| panic!("{engine}: {e}"));
                // MongoDB keeps read only: dbAdmin, which could drop collections, can also grow
                // storage (indexes, capped collections, the profiler).
                let expected = if engine == Engine::Mongo {
                    READ_ONLY
                } else {
                    READ_AND_FREE
                };
                assert_eq!(
                    abilities(&m, engine, &t, &pw).await,
                    expected,
                    "{engine}: restricted (and again: idempotent)"
                );
            }
            for _ in 0..2 {
                d.set_access(&t, Access::Full).await.unwrap();
                assert_eq!(
                    abilities(&m, engine, &t, &pw).await,
                    ALL,
                    "{engine}: restored"
                );
            }

            for _ in 0..2 {
                d.lock_login(&t).await.unwrap();
                assert!(!d.can_login(&t, &pw).await.unwrap(), "{engine}: locked");
                assert!(!abilities(&m, engine, &t, &pw).await.read, "{engine}");
            }
            // What an unsuspension runs: rights first, then the login.
            d.set_access(&t, Access::Full).await.unwrap();
            assert_eq!(
                abilities(&m, engine, &t, &pw).await,
                ALL,
                "{engine}: unlocked, same password"
            );

            // A restricted database still drops cleanly, holder role and all.
            d.restrict_writes(&t).await.unwrap();
            d.drop_owned(&t)
                .await
                .unwrap_or_else(|e| panic!("{engine}: {e}"));
            assert!(!d.can_login(&t, &pw).await.unwrap(), "{engine}: dropped");
            if engine == Engine::Postgres {
                let holder = format!("{}_frozen", t.names.db_user());
                let left = pg_root()
                    .await
                    .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&holder])
                    .await
                    .unwrap();
                assert!(left.is_none(), "holder role dropped");
            }
        }
    })
    .await;
}

/// MariaDB's general log, when an operator turns it on, records every statement the server
/// receives. A create and a rotate send the server password hashes (`IDENTIFIED BY PASSWORD
/// '*…'` inside hepdb's routines), so no password of a tenant ever appears there.
#[tokio::test(flavor = "multi_thread")]
async fn no_mariadb_password_reaches_the_general_log() {
    guarded(|| async {
        let (drivers, _mongo) = drivers().await;
        let (_, d) = drivers
            .iter()
            .find(|(engine, _)| *engine == Engine::Mariadb)
            .unwrap();
        let mut root = hepdb_testkit::root().await;
        let (output, on): (String, u8) = root
            .query_first("SELECT @@global.log_output, @@global.general_log")
            .await
            .unwrap()
            .unwrap();
        root.query_drop("SET GLOBAL log_output = 'TABLE'")
            .await
            .unwrap();
        root.query_drop("SET GLOBAL general_log = ON")
            .await
            .unwrap();
        let t = target();
        let (first, second) = (Password::generate(), Password::generate());
        let outcome = async {
            d.create(&t, &first).await?;
            d.set_password(&t, &second).await?;
            d.can_login(&t, &second).await
        }
        .await;
        root.query_drop(format!("SET GLOBAL general_log = {on}"))
            .await
            .unwrap();
        root.query_drop(format!("SET GLOBAL log_output = '{output}'"))
            .await
            .unwrap();
        assert!(outcome.unwrap(), "the rotated password logs in");
        let logged: Vec<String> = root
            .query("SELECT CONVERT(argument USING utf8mb4) FROM mysql.general_log")
            .await
            .unwrap();
        // The log did record this test's statements, so their absence below means something.
        let ours: Vec<&String> = logged
            .iter()
            .filter(|a| a.contains(t.names.db_user()))
            .collect();
        assert!(
            ours.iter().any(|a| a.contains("create_user"))
                && ours.iter().any(|a| a.contains("alter_user")),
            "the general log recorded the create and the rotate: {ours:?}"
        );
        for password in [&first, &second] {
            assert!(
                !logged.iter().any(|a| a.contains(password.expose())),
                "a password reached the general log"
            );
        }
        root.query_drop("TRUNCATE mysql.general_log").await.unwrap();
        d.drop_owned(&t).await.unwrap();
    })
    .await;
}
