//! A whole stack (gateway, worker, migrations) on a metadata database reached over verified
//! TLS: the PostgreSQL on 5433 that `.ci/services.sh` runs with `ssl=on` and the tests' own CA.

use hepdb_core::settings::Secret;
use hepdb_testkit::{servers::tls_file, *};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_stack_works_on_metadata_over_verified_tls() {
    let root = postgres_root_url();
    let (server, _) = root.rsplit_once('/').unwrap();
    let db = format!("hepdb_tls_stack_{}", std::process::id());
    let url = format!(
        "{server}/{db}?sslmode=verify-full&sslrootcert={}",
        tls_file("ca.crt")
    );
    let metadata = url.clone();
    let app = spawn_app_with(Options::default(), move |s| {
        s.metadata.url = Secret::new(metadata);
    })
    .await;
    let (s, created) = app.create(json!({"name": "over-tls"})).await;
    assert_eq!(s, 201, "{created}");
    let d = data(&created);
    assert!(can_login(d["connectionString"].as_str().unwrap()).await);
    let id = d["id"].as_str().unwrap();
    let (s, revealed) = app.reveal(id).await;
    assert_eq!(
        (s.as_u16(), &data(&revealed)["password"]),
        (200, &d["password"])
    );
    let (s, rotated) = app.rotate(id).await;
    assert_eq!(s, 200, "{rotated}");
    assert!(can_login(data(&rotated)["connectionString"].as_str().unwrap()).await);
    drop(app);
    hepdb_store::migrate::drop_database(&url).await.unwrap();
}
