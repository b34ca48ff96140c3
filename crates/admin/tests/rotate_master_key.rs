//! A master-key rotation on a running stack: `hepdb-admin crypto rotate-master-key` killed
//! halfway, then run again to the end. Every stored password (databases' and jobs')
//! opens throughout with the ring (new key + previous), ends under the new key alone, and
//! still logs in to its engine.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use hepdb_core::{DatabaseId, secret::MasterKey, settings::Secret};
use hepdb_testkit::*;
use serde_json::{Value, json};

fn admin(app: &TestApp, new: &str, old: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hepdb-admin"));
    c.args(["crypto", "rotate-master-key"])
        .args(args)
        .env("HEPDB__METADATA__URL", app.settings.metadata.url.expose())
        .env("HEPDB__CRYPTO__MASTER_KEY", new)
        .env("HEPDB__CRYPTO__PREVIOUS_MASTER_KEYS", old);
    c
}

/// Every stored sealed value: each database's password, and each job's that carries one.
async fn sealed(app: &TestApp) -> Vec<(DatabaseId, Vec<u8>)> {
    let mut out = Vec::new();
    for db in app.store.databases_of(app.account).await.unwrap() {
        out.push((db.database_id(), db.password_sealed.clone()));
    }
    for (db, value) in app.sealed_job_passwords().await {
        out.push((db.parse().unwrap(), value));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_killed_halfway_resumes_and_every_password_still_opens_and_logs_in() {
    let (old, new) = (MasterKey::generate_base64(), MasterKey::generate_base64());
    let mut app = spawn_app_with(
        Options {
            slots: Some(6),
            ..Options::default()
        },
        |s| s.crypto.master_key = Secret::new(old.clone()),
    )
    .await;
    let mut passwords = Vec::new();
    for n in 0..5 {
        let (s, b) = app.create(json!({"name": format!("db{n}")})).await;
        assert_eq!(s, 201, "{b}");
        passwords.push(data(&b).clone());
    }
    // A rotate leaves its sealed password in its job too.
    let id = passwords[0]["id"].as_str().unwrap().to_owned();
    let (s, b) = app.rotate(&id).await;
    assert_eq!(s, 200, "{b}");
    passwords[0] = data(&b).clone();
    let before = sealed(&app).await;
    // Five databases, their five create jobs and the rotate job.
    assert_eq!(before.len(), 11);

    let (old_key, new_only) = (
        MasterKey::from_base64(&old).unwrap(),
        MasterKey::from_base64(&new).unwrap(),
    );
    let ring = MasterKey::from_base64(&new)
        .unwrap()
        .with_previous([old.as_str()])
        .unwrap();
    assert!(before.iter().all(|(_, v)| old_key.is_current(v)));

    // One value per batch, slowly: kill it after its first batch.
    // The rollout's second step: a gateway that seals with the new key and still opens the
    // old (no worker of its own yet: the first stack's still runs on the old key alone).
    let (url, prefix) = (
        app.settings.metadata.url.clone(),
        app.settings.amqp.queue_prefix.clone(),
    );
    let mut rolled = spawn_app_with(
        Options {
            no_worker: true,
            ..Options::default()
        },
        |s| {
            s.metadata.url = url;
            s.amqp.queue_prefix = prefix;
            s.crypto.master_key = Secret::new(new.clone());
            s.crypto.previous_master_keys = Some(Secret::new(old.clone()));
        },
    )
    .await;
    // Every password reveals through its API, whichever key holds it now.
    let reveals_all = async |rolled: &TestApp| {
        for p in &passwords {
            let id = p["id"].as_str().unwrap();
            let path = format!("/api/v1/db/databases/{id}");
            let (s, b) = rolled
                .send(reqwest::Method::GET, &path, Some(&app.bearer()), None)
                .await;
            assert_eq!((s.as_u16(), &data(&b)["password"]), (200, &p["password"]));
        }
    };
    reveals_all(&rolled).await;

    let mut child = admin(
        &app,
        &new,
        &old,
        &["--batch-size", "1", "--pause-ms", "3000"],
    )
    .env("HEPDB__DEVELOPMENT", "true")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut progress = BufReader::new(child.stderr.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&progress.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["resealed"]["databases"], 1, "{first}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Halfway: some values under each key, and the ring opens every one of them.
    let halfway = sealed(&app).await;
    let moved = halfway
        .iter()
        .filter(|(_, v)| new_only.is_current(v))
        .count();
    assert!((1..11).contains(&moved), "{moved} of 11 moved");
    for (db, value) in &halfway {
        ring.open(*db, value)
            .expect("every value opens during the rotation");
    }
    reveals_all(&rolled).await;

    // Run again: it goes on to the end, a few values per batch (so that a pass crosses from
    // databases to jobs, and from batch to batch by its cursor).
    let out = admin(&app, &new, &old, &["--batch-size", "3"])
        .env("HEPDB__DEVELOPMENT", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["left"], 0, "{report}");
    assert_eq!(report["key"], new_only.id());

    // Every value is under the new key alone, is the same password, and logs in.
    let after = sealed(&app).await;
    assert_eq!(after.len(), 11);
    for (db, value) in &after {
        assert!(new_only.is_current(value));
        new_only
            .open(*db, value)
            .expect("opens with the new key alone");
    }
    for p in &passwords {
        let db: DatabaseId = p["id"].as_str().unwrap().parse().unwrap();
        let (_, value) = after.iter().find(|(d, _)| *d == db).unwrap();
        let password = new_only.open(db, value).unwrap();
        assert_eq!(password.expose(), p["password"].as_str().unwrap());
        assert!(can_login(p["connectionString"].as_str().unwrap()).await);
    }
    reveals_all(&rolled).await;
    // The old stack's worker gives way to one with the new key: a rotate through the rolled
    // gateway works end to end, and its new password logs in.
    app.worker.take().unwrap().shutdown().await;
    rolled.start_worker().await;
    let path = format!("/api/v1/db/databases/{id}/rotate");
    let (s, b) = rolled
        .send(reqwest::Method::POST, &path, Some(&app.bearer()), None)
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(can_login(data(&b)["connectionString"].as_str().unwrap()).await);

    // With the old key gone from the ring, nothing is left to do.
    let out = admin(&app, &new, "", &[])
        .env("HEPDB__DEVELOPMENT", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
