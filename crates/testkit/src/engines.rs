//! The engines as a test sees them from outside hepdb: their root accounts, the provisioners
//! set up once per process, a tenant's login with each engine's own client library, and
//! what is on MariaDB for an account.

use hepdb_core::{Engine, settings::Settings};
use hepdb_worker::engines::{MariaDb, Mongo, Postgres};
use mysql_async::{Opts, OptsBuilder, prelude::Queryable};

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.into())
}

/// The root user of the MariaDB engine.
pub fn root_url() -> String {
    env_or("HEPDB_TEST_MARIADB_ROOT_URL", "mysql://root@127.0.0.1:3306")
}

/// The superuser of the tenant PostgreSQL instance (`.ci/services.sh` runs it on 5433).
pub fn postgres_root_url() -> String {
    env_or(
        "HEPDB_TEST_POSTGRES_ROOT_URL",
        "postgres://postgres:hepdb-dev-root@127.0.0.1:5433/postgres",
    )
}

/// The root user of the MongoDB engine (`.ci/services.sh` runs the smongo stand-in on 27017).
pub fn mongo_root_url() -> String {
    env_or(
        "HEPDB_TEST_MONGO_ROOT_URL",
        "mongodb://root:hepdb-dev-root@127.0.0.1:27017/admin",
    )
}

/// The provisioner URL of `engine`'s single host, from the default settings.
pub fn provisioner_url(engine: Engine) -> String {
    let settings = Settings::load().expect("settings");
    let url = settings.engines.get(engine).single.admin_url.clone();
    url.expect("a provisioner URL").expose().to_owned()
}

/// Sets up each shared engine's provisioner once per test process (concurrent `ALTER ROLE`s
/// of one role would trip over each other).
pub async fn bootstrap_provisioners() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        MariaDb::bootstrap(&root_url(), &provisioner_url(Engine::Mariadb))
            .await
            .expect("bootstrap the MariaDB provisioner");
        Postgres::bootstrap(&postgres_root_url(), &provisioner_url(Engine::Postgres))
            .await
            .expect("bootstrap the PostgreSQL provisioner (is the tenant instance on 5433 up?)");
        Mongo::bootstrap(&mongo_root_url(), &provisioner_url(Engine::Mongo))
            .await
            .expect("bootstrap the MongoDB provisioner (is the engine on 27017 up?)");
    })
    .await;
}

/// Connects with a connection string as a user would, with the engine's own client library,
/// and writes and reads back a table (MongoDB: a collection).
pub async fn use_database(connection_string: &str) -> Result<(), String> {
    let what = format!("use_database({})", scheme_of(connection_string));
    bounded_check(&what, use_database_unbounded(connection_string)).await
}

fn scheme_of(connection_string: &str) -> &str {
    connection_string.split("://").next().unwrap_or_default()
}

/// The MongoDB stand-in now and then stops answering one connection (seen about once in a few
/// runs of the engines tests), which no client timeout bounds: each tenant-side check gets
/// three tries of 15 s, each with a fresh client. The checks only read, or write their own
/// test row again.
async fn stand_in_retries<T, Fut: Future<Output = T>>(what: &str, check: impl Fn() -> Fut) -> T {
    for _ in 0..3 {
        if let Ok(done) = tokio::time::timeout(std::time::Duration::from_secs(15), check()).await {
            return done;
        }
        eprintln!("{what}: the MongoDB stand-in did not answer in 15 s; trying again");
    }
    panic!("{what}: the MongoDB stand-in did not answer three times");
}

/// A MongoDB client for a tenant's check: the connection string as given, with short
/// timeouts (a stand-in that stops answering one connection fails the check, not the run).
async fn mongo_client(connection_string: &str) -> mongodb::error::Result<mongodb::Client> {
    let mut options = mongodb::options::ClientOptions::parse(connection_string).await?;
    options.server_selection_timeout = Some(std::time::Duration::from_secs(10));
    options.connect_timeout = Some(std::time::Duration::from_secs(10));
    mongodb::Client::with_options(options)
}

/// A tenant-side check that hangs (an engine, or the MongoDB stand-in, that stops answering
/// one connection) fails the test with its name after a minute instead of hanging CI.
async fn bounded_check<T>(what: &str, check: impl Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), check)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for 60 s"))
}

async fn use_database_unbounded(connection_string: &str) -> Result<(), String> {
    let scheme = connection_string.split("://").next().unwrap();
    match scheme {
        "mysql" => use_mariadb(connection_string)
            .await
            .map_err(|e| e.to_string()),
        "postgresql" => use_postgres(connection_string)
            .await
            .map_err(|e| e.to_string()),
        "mongodb" => stand_in_retries("use_database", || use_mongo(connection_string))
            .await
            .map_err(|e| e.to_string()),
        other => panic!("unexpected scheme {other}"),
    }
}

async fn use_mariadb(connection_string: &str) -> Result<(), mysql_async::Error> {
    let opts = Opts::from_url(connection_string).expect("valid mysql:// URL");
    let mut conn =
        mysql_async::Conn::new(OptsBuilder::from_opts(opts).prefer_socket(false)).await?;
    conn.query_drop("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v TEXT)")
        .await?;
    conn.query_drop("REPLACE INTO t VALUES (1, 'hello')")
        .await?;
    let v: Option<String> = conn.query_first("SELECT v FROM t WHERE id = 1").await?;
    assert_eq!(v.as_deref(), Some("hello"));
    conn.disconnect().await
}

async fn use_postgres(connection_string: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(connection_string, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, v TEXT); \
             INSERT INTO t VALUES (1, 'hello') ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v",
        )
        .await?;
    let row = client
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .await?;
    assert_eq!(row.get::<_, String>(0), "hello");
    Ok(())
}

/// The smongo stand-in keeps all databases in one namespace, so the collection is named after
/// the database to keep tenants' test writes apart.
async fn use_mongo(connection_string: &str) -> Result<(), mongodb::error::Error> {
    use mongodb::bson::{Document, doc};
    let client = mongo_client(connection_string).await?;
    let db = client.default_database().expect("database in the URL");
    let coll = db.collection::<Document>(&format!("t_{}", db.name()));
    coll.insert_one(doc! { "v": "hello" }).await?;
    let found = coll.find_one(doc! { "v": "hello" }).await?;
    assert!(found.is_some());
    // Nothing of the check outlives it: do not wait on server-side cleanup.
    client.shutdown().immediate(true).await;
    Ok(())
}

/// Whether the server lets this user log in and open the database the string names, right now.
pub async fn can_login(connection_string: &str) -> bool {
    let what = format!("can_login({})", scheme_of(connection_string));
    bounded_check(&what, can_login_unbounded(connection_string)).await
}

async fn can_login_unbounded(connection_string: &str) -> bool {
    let scheme = connection_string.split("://").next().unwrap();
    match scheme {
        "mysql" => {
            let opts = Opts::from_url(connection_string).expect("valid mysql:// URL");
            match mysql_async::Conn::new(OptsBuilder::from_opts(opts).prefer_socket(false)).await {
                Ok(c) => {
                    let _ = c.disconnect().await;
                    true
                }
                // 1045 wrong password, 1044 no rights on the database, 4151 account locked,
                // 1698 access denied without a password mentioned (seen once in CI right after a
                // deletion: a refusal all the same).
                Err(mysql_async::Error::Server(e))
                    if [1045, 1044, 4151, 1698].contains(&e.code) =>
                {
                    false
                }
                Err(e) => panic!("unexpected login error: {e}"),
            }
        }
        "postgresql" => {
            match tokio_postgres::connect(connection_string, tokio_postgres::NoTls).await {
                Ok(_) => true,
                Err(e) => {
                    let code = e.code().map(|c| c.code().to_owned());
                    // 28P01 wrong password, 42501 no CONNECT on the database.
                    assert!(
                        matches!(code.as_deref(), Some("28P01" | "42501" | "28000")),
                        "unexpected login error: {e}"
                    );
                    false
                }
            }
        }
        "mongodb" => {
            let r = stand_in_retries("can_login", || async {
                let client = mongo_client(connection_string).await.unwrap();
                let db = client.default_database().expect("database in the URL");
                let r = db.list_collection_names().await;
                client.shutdown().immediate(true).await;
                r
            })
            .await;
            match r {
                Ok(_) => true,
                Err(e) => match &*e.kind {
                    mongodb::error::ErrorKind::Authentication { .. } => false,
                    // 13: Unauthorized, 18: AuthenticationFailed.
                    mongodb::error::ErrorKind::Command(c) if c.code == 13 || c.code == 18 => false,
                    _ => panic!("unexpected login error: {e}"),
                },
            }
        }
        other => panic!("unexpected scheme {other}"),
    }
}

/// A root connection, for checking the engine from outside hepdb.
pub async fn root() -> mysql_async::Conn {
    let opts = Opts::from_url(&root_url()).unwrap();
    mysql_async::Conn::new(OptsBuilder::from_opts(opts).prefer_socket(false))
        .await
        .unwrap()
}

/// Databases on the engine whose names carry this account tag.
pub async fn engine_databases(tag: &str) -> Vec<String> {
    let mut c = root().await;
    let pattern = format!("um\\_{tag}\\_%");
    c.exec(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ? ORDER BY 1",
        (pattern,),
    )
    .await
    .unwrap()
}

/// Users on the engine whose names carry this account tag.
pub async fn engine_users(tag: &str) -> Vec<String> {
    let mut c = root().await;
    let pattern = format!("dum\\_{tag}\\_%");
    c.exec(
        "SELECT User FROM mysql.user WHERE User LIKE ? ORDER BY 1",
        (pattern,),
    )
    .await
    .unwrap()
}
