//! TLS to every dependency, against real servers presenting a certificate from the tests' own
//! CA (`.ci/services.sh` makes it): PostgreSQL (metadata, migrations, an engine), MariaDB,
//! MongoDB and RabbitMQ. Each connection is TLS (the server says so where it can), the
//! certificate is verified (a client trusting another CA is refused), and what hepdb does over
//! it works.

use hepdb_core::{
    DatabaseId, Engine,
    naming::{DbTag, EngineNames},
    secret::Password,
};
use hepdb_store::{Store, tls};
use hepdb_testkit::{
    bootstrap_provisioners, postgres_root_url, provisioner_url,
    servers::{PrivateMariadb, PrivateMongo, tls_file},
};
use hepdb_worker::engines::{EngineDriver, Target};

/// The certificates `.ci/services.sh` made.
fn ca(name: &str) -> String {
    tls_file(name)
}

/// `url` with a query parameter added.
fn with(url: &str, param: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{param}")
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_connections_are_tls_verified_against_the_configured_ca() {
    let root = postgres_root_url();
    // Our CA: a TLS session, as the server sees it.
    let good = tls::parse(&with(&root, &format!("sslrootcert={}", ca("ca.crt")))).unwrap();
    assert!(good.tls.is_some());
    let (client, task) = good.connect().await.expect("TLS with the right CA");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the session is encrypted");
    drop(client);
    let _ = task.await;

    // Another CA: refused, whatever the password.
    let wrong = tls::parse(&with(&root, &format!("sslrootcert={}", ca("other-ca.crt")))).unwrap();
    let err = wrong
        .connect()
        .await
        .expect_err("a server our CA did not sign");
    // The handshake failed on the certificate (rustls: an unknown issuer), not on anything else.
    let cause = format!("{err:?}");
    assert!(cause.contains("UnknownIssuer"), "{cause}");
    // `require` with the system's roots: they do not know the tests' CA either.
    let system = tls::parse(&with(&root, "sslmode=require")).unwrap();
    assert!(system.connect().await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_over_tls_and_a_wrong_ca_refused() {
    let root = postgres_root_url();
    let store = Store::connect(&with(&root, &format!("sslrootcert={}", ca("ca.crt"))), 2).unwrap();
    store.ping().await.expect("metadata over verified TLS");
    let wrong = Store::connect(
        &with(&root, &format!("sslrootcert={}", ca("other-ca.crt"))),
        2,
    )
    .unwrap();
    assert!(wrong.ping().await.is_err());
    // A CA file that is not there stops the binary at start.
    assert!(Store::connect(&with(&root, "sslrootcert=/nonexistent.pem"), 2).is_err());
    // libpq's spelling of a verified connection is accepted (and is what require means here).
    let verify_full = with(
        &root,
        &format!("sslmode=verify-full&sslrootcert={}", ca("ca.crt")),
    );
    Store::connect(&verify_full, 2)
        .unwrap()
        .ping()
        .await
        .unwrap();

    // Migrations (what the migration Job runs) over the same TLS URL: database and schema.
    let db = format!("hepdb_tls_{}", std::process::id());
    let (server, _) = root.rsplit_once('/').unwrap();
    let url = format!("{server}/{db}");
    let url = with(&url, &format!("sslrootcert={}", ca("ca.crt")));
    let (created, applied) = hepdb_store::migrate::migrate(&url).await.unwrap();
    assert!(created && !applied.is_empty());
    hepdb_store::migrate::drop_database(&url).await.unwrap();
}

/// A database's whole life through `driver`: created, its password logs in, rotated (the old
/// one refused), dropped (nothing logs in).
async fn lifecycle(driver: &EngineDriver) {
    let t = Target {
        id: DatabaseId::new(),
        names: EngineNames::new(&DbTag::generate(), 1),
    };
    let (first, second) = (Password::generate(), Password::generate());
    driver.create(&t, &first).await.unwrap();
    assert!(driver.can_login(&t, &first).await.unwrap());
    driver.set_password(&t, &second).await.unwrap();
    assert!(driver.can_login(&t, &second).await.unwrap());
    assert!(!driver.can_login(&t, &first).await.unwrap());
    driver.drop_owned(&t).await.unwrap();
    assert!(!driver.can_login(&t, &second).await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_driver_provisions_over_tls() {
    bootstrap_provisioners().await;
    let url = with(
        &provisioner_url(Engine::Postgres),
        &format!("sslrootcert={}", ca("ca.crt")),
    );
    let driver = EngineDriver::new(Engine::Postgres, &url, 5).unwrap();
    lifecycle(&driver).await;

    let wrong = with(
        &provisioner_url(Engine::Postgres),
        &format!("sslrootcert={}", ca("other-ca.crt")),
    );
    let refused = EngineDriver::new(Engine::Postgres, &wrong, 5).unwrap();
    assert!(refused.ping().await.is_err(), "a wrong CA is refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_connections_are_tls_verified_against_the_configured_ca() {
    use mysql_async::prelude::Queryable;
    let server = PrivateMariadb::start(true);
    let url = |ca_file: &str| {
        format!(
            "mysql://root@127.0.0.1:{}/mysql?sslrootcert={}",
            server.port,
            ca(ca_file)
        )
    };
    // Our CA: the session is encrypted, as the server sees it.
    let opts = hepdb_worker::engines::mariadb_opts(&url("ca.crt")).unwrap();
    let mut conn = {
        let mut tries = 0;
        loop {
            match mysql_async::Conn::new(opts.clone()).await {
                Ok(c) => break c,
                // The server may still be starting behind its open port.
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err(e) => panic!("TLS with the right CA: {e}"),
            }
        }
    };
    let cipher: Option<(String, String)> = conn
        .query_first("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .await
        .unwrap();
    let cipher = cipher.map(|(_, v)| v).unwrap_or_default();
    assert!(!cipher.is_empty(), "the session is encrypted");
    conn.disconnect().await.unwrap();
    // The driver, over the same URL.
    let driver = EngineDriver::new(Engine::Mariadb, &url("ca.crt"), 5).unwrap();
    driver.ping().await.expect("the driver's ping over TLS");
    // The provisioner over TLS does a database's whole life: create, login, rotate, drop.
    let provisioner = format!(
        "mysql://hepdb_provisioner:hepdb-dev-provisioner@127.0.0.1:{}/?sslrootcert={}",
        server.port,
        ca("ca.crt")
    );
    hepdb_worker::engines::MariaDb::bootstrap(&url("ca.crt"), &provisioner)
        .await
        .unwrap();
    let provisioner = EngineDriver::new(Engine::Mariadb, &provisioner, 5).unwrap();
    lifecycle(&provisioner).await;

    // Another CA: refused.
    let wrong = hepdb_worker::engines::mariadb_opts(&url("other-ca.crt")).unwrap();
    let err = mysql_async::Conn::new(wrong)
        .await
        .expect_err("a server our CA did not sign");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    let refused = EngineDriver::new(Engine::Mariadb, &url("other-ca.crt"), 5).unwrap();
    assert!(refused.ping().await.is_err());
}

/// RabbitMQ over `amqps://` (the listener `.ci/services.sh` adds on 5671): verified against the
/// URL's CA, refused with another; and a whole stack runs its jobs over it.
#[tokio::test(flavor = "multi_thread")]
async fn the_broker_over_amqps_verified_and_a_stack_working_through_it() {
    let url = |ca_file: &str| {
        format!(
            "amqps://guest:guest@127.0.0.1:5671/%2f?cacertfile={}",
            ca(ca_file)
        )
    };
    let props = lapin::ConnectionProperties::default;
    let conn = hepdb_queue::connect(&url("ca.crt"), props())
        .await
        .expect("amqps with the right CA");
    conn.create_channel().await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    let err = hepdb_queue::connect(&url("other-ca.crt"), props())
        .await
        .expect_err("a broker our CA did not sign");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
    assert!(
        hepdb_queue::connect("amqps://guest:guest@127.0.0.1:5671/%2f", props())
            .await
            .is_err(),
        "the system's roots do not know the tests' CA"
    );
    // A CA for a plaintext URL is a mistake to report, not a reason to connect in clear.
    let plain = format!(
        "amqp://guest:guest@127.0.0.1:5672/%2f?cacertfile={}",
        ca("ca.crt")
    );
    assert!(matches!(
        hepdb_queue::connect(&plain, props()).await,
        Err(hepdb_queue::ConnectError::NotTls)
    ));

    // Gateway and worker, both on amqps: a create goes through the broker and logs in.
    let amqps = url("ca.crt");
    let app = hepdb_testkit::spawn_app_with(hepdb_testkit::Options::default(), |s| {
        s.amqp.url = hepdb_core::settings::Secret::new(amqps.clone());
    })
    .await;
    let (status, body) = app.create(serde_json::json!({"name": "over-amqps"})).await;
    assert_eq!(status, 201, "{body}");
    let conn = body["data"]["connectionString"].as_str().unwrap();
    assert!(hepdb_testkit::can_login(conn).await);
}

/// The URL of a TLS-only stand-in, trusting `ca_file`.
fn tls_mongo_url(server: &PrivateMongo, ca_file: &str) -> String {
    format!(
        "mongodb://root:tls-root@127.0.0.1:{}/admin?tls=true&tlsCAFile={}&serverSelectionTimeoutMS=3000",
        server.port,
        ca(ca_file)
    )
}

/// MongoDB with the driver's own URL options (`tls=true&tlsCAFile=…`): verified against that
/// CA, refused with another.
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_connections_are_tls_verified_against_the_configured_ca() {
    let server = PrivateMongo::start("tls-root", true);
    let driver = EngineDriver::new(Engine::Mongo, &tls_mongo_url(&server, "ca.crt"), 5).unwrap();
    driver.ping().await.expect("TLS with the right CA");
    lifecycle(&driver).await;
    let refused =
        EngineDriver::new(Engine::Mongo, &tls_mongo_url(&server, "other-ca.crt"), 5).unwrap();
    assert!(refused.ping().await.is_err(), "a wrong CA is refused");
    // The server speaks only TLS: a plain client is not served.
    let plain = format!(
        "mongodb://root:tls-root@127.0.0.1:{}/admin?serverSelectionTimeoutMS=2000",
        server.port
    );
    let plain = EngineDriver::new(Engine::Mongo, &plain, 5).unwrap();
    assert!(plain.ping().await.is_err());
}
