//! TLS to PostgreSQL, for metadata and for an engine, against the tenant PostgreSQL that
//! `.ci/services.sh` runs with a certificate from the tests' own CA: the connection is TLS
//! (the server says so), the certificate is verified (a client trusting another CA is
//! refused), and everything a driver does works over it.

use std::path::PathBuf;

use hepdb_core::{
    DatabaseId, Engine,
    naming::{DbTag, EngineNames},
    secret::Password,
};
use hepdb_store::{Store, tls};
use hepdb_testkit::{bootstrap_provisioners, postgres_root_url, provisioner_url};
use hepdb_worker::engines::{EngineDriver, Target};

/// The certificates `.ci/services.sh` made.
fn ca(name: &str) -> String {
    let dir =
        std::env::var("HEPDB_ENGINES_DIR").unwrap_or_else(|_| "/var/tmp/hepdb-engines".into());
    let path = PathBuf::from(dir).join("tls").join(name);
    assert!(
        path.exists(),
        "{} (made by .ci/services.sh)",
        path.display()
    );
    path.to_string_lossy().into_owned()
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
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_driver_provisions_over_tls() {
    bootstrap_provisioners().await;
    let url = with(
        &provisioner_url(Engine::Postgres),
        &format!("sslrootcert={}", ca("ca.crt")),
    );
    let driver = EngineDriver::new(Engine::Postgres, &url, 5).unwrap();
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

    let wrong = with(
        &provisioner_url(Engine::Postgres),
        &format!("sslrootcert={}", ca("other-ca.crt")),
    );
    let refused = EngineDriver::new(Engine::Postgres, &wrong, 5).unwrap();
    assert!(refused.ping().await.is_err(), "a wrong CA is refused");
}
