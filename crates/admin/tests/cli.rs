//! Drives the real `hepdb-admin` binary against real PostgreSQL and MariaDB, as an operator would.
// The test's futures nest deeper than the default limit lets rustc lay them out.
#![recursion_limit = "256"]

use std::process::Command;

use hepdb_core::{
    DatabaseId, Engine,
    job::{JobKindWire, JobMessage, JobOutcome, MESSAGE_VERSION},
    secret::{ApiKey, Password},
    settings::Settings,
};
use hepdb_store::{Store, databases::NewDatabase};
use hepdb_worker::{
    engines::Engines,
    jobs::{Disposition, JobContext, handle},
};
use serde_json::Value;

#[derive(Clone)]
struct Admin {
    metadata_url: String,
    /// The test's own queues, so that the jobs it publishes reach only its own worker.
    queue_prefix: String,
}

impl Admin {
    fn new() -> Self {
        let mut settings = Settings::load().unwrap();
        let tag = hepdb_testkit::metadata::own_metadata(&mut settings, "cli");
        Self {
            metadata_url: settings.metadata.url.expose().to_owned(),
            queue_prefix: format!("test_cli_{tag}"),
        }
    }

    /// The settings a worker for this test's metadata and queues runs with.
    fn worker_settings(&self) -> Settings {
        let mut s = Settings::load().unwrap();
        s.metadata.url = hepdb_core::settings::Secret::new(self.metadata_url.clone());
        s.amqp.queue_prefix = self.queue_prefix.clone();
        s.amqp.queue_expires_secs = 120;
        s.worker.admin_listen = "127.0.0.1:0".into();
        s.worker.reconcile_interval_secs = 0;
        s.quota.interval_secs = 0;
        s
    }

    /// Runs the binary; returns (success, stdout JSON or Null, stderr).
    fn run(&self, args: &[&str]) -> (bool, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_hepdb-admin"))
            .args(args)
            // The tests run on the development master key.
            .env("HEPDB__DEVELOPMENT", "true")
            .env("HEPDB__METADATA__URL", &self.metadata_url)
            .env("HEPDB__AMQP__QUEUE_PREFIX", &self.queue_prefix)
            .env("HEPDB__AMQP__QUEUE_EXPIRES_SECS", "120")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let json = if out.status.success() {
            assert_eq!(
                stdout.lines().count(),
                1,
                "exactly one JSON object: {stdout}"
            );
            serde_json::from_str(&stdout).unwrap()
        } else {
            assert!(stdout.is_empty(), "nothing on stdout on failure: {stdout}");
            Value::Null
        };
        (out.status.success(), json, stderr)
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (ok, json, err) = self.run(args);
        assert!(ok, "{args:?} failed: {err}");
        json
    }
}

/// Outside development mode, hepdb-admin refuses the published development key before it
/// touches anything (keygen, which needs no settings, still works).
#[test]
fn the_development_key_is_refused_outside_development_mode() {
    let run = |args: &[&str]| {
        hepdb_testkit::boot::run_isolated(env!("CARGO_BIN_EXE_hepdb-admin"), args, &[])
    };
    let out = run(&["account", "list"]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && why.contains("development key"),
        "{why}"
    );
    assert!(run(&["keygen"]).status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_commands_print_json_and_fail_clearly() {
    let admin = Admin::new();
    let migrated = admin.ok(&["migrate"]);
    assert_eq!(migrated["database_created"], true);
    assert_eq!(
        admin.ok(&["migrate"])["applied"],
        serde_json::json!([]),
        "idempotent"
    );
    assert_eq!(migrated["hosts"], serde_json::json!(["mariadb"]));
    // Hosts: listed with their state, drained and reopened; unknown names fail clearly.
    let listed = admin.ok(&["host", "list"]);
    assert_eq!(
        listed["hosts"],
        serde_json::json!([{"name": "mariadb", "engine": "mariadb", "state": "open",
            "capacity": 1000, "databases": 0, "size_bytes": 0,
            "public_endpoint": "127.0.0.1:3306"}])
    );
    assert_eq!(admin.ok(&["host", "drain", "mariadb"])["state"], "drained");
    assert_eq!(admin.ok(&["host", "list"])["hosts"][0]["state"], "drained");
    assert_eq!(admin.ok(&["host", "undrain", "mariadb"])["state"], "open");
    let (ok, _, err) = admin.run(&["host", "drain", "nope"]);
    assert!(!ok && err.contains("no host named `nope`"), "{err}");
    let boot = admin.ok(&[
        "engine",
        "bootstrap",
        "mariadb",
        "--root-url",
        "mysql://root@127.0.0.1:3306",
    ]);
    // 1000 databases x 20 sessions cannot fit this server's connections, and the provisioner
    // has no door of its own here: the operator is told.
    assert_eq!(boot["connections"]["tenants_max"], 20_000);
    assert_eq!(boot["connections"]["provisioner_reserved"], false);
    assert!(
        boot["warning"]
            .as_str()
            .is_some_and(|w| w.contains("max_connections")),
        "{boot}"
    );

    // Platform tokens: shown once, revoked for good.
    let minted = admin.ok(&["platform-token", "mint", "--name", "dashboard"]);
    let token_id = minted["id"].as_str().unwrap().to_owned();
    assert!(
        minted["token"]
            .as_str()
            .is_some_and(|t| t.starts_with(hepdb_core::secret::PLATFORM_TOKEN_PREFIX)),
        "{minted}"
    );
    assert_eq!(
        admin.ok(&["platform-token", "revoke", &token_id, "--yes"])["revoked"],
        true
    );
    let (ok, _, err) = admin.run(&["platform-token", "revoke", &token_id, "--yes"]);
    assert!(!ok && err.contains("no such live token"), "{err}");
    let (ok, _, err) = admin.run(&["platform-token", "mint", "--name", " "]);
    assert!(!ok && err.contains("--name"), "{err}");

    let account = admin.ok(&[
        "account",
        "create",
        "--name",
        "acme",
        "--slots",
        "2",
        "--storage-mb",
        "500",
    ]);
    let id = account["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (account["slots"].as_i64(), account["storage_mb"].as_i64()),
        (Some(2), Some(500))
    );
    let updated = admin.ok(&["account", "update", &id, "--slots", "5"]);
    assert_eq!(
        (updated["slots"].as_i64(), updated["storage_mb"].as_i64()),
        (Some(5), Some(500))
    );

    let minted = admin.ok(&["key", "mint", "--account", &id]);
    let key = ApiKey::parse(minted["key"].as_str().unwrap()).expect("hepgg_db_ + 32 alphanumerics");
    let key_id = minted["id"].as_str().unwrap().to_owned();
    let store = Store::connect(&admin.metadata_url, 2).unwrap();
    let enabled = || async {
        store
            .find_key(&key.hash())
            .await
            .unwrap()
            .unwrap()
            .0
            .enabled
    };
    assert!(enabled().await);
    admin.ok(&["key", "disable", &key_id]);
    assert!(!enabled().await);
    admin.ok(&["key", "enable", &key_id]);
    assert!(enabled().await);
    // The reads an operator needs, as JSON or as tables.
    let listed = admin.ok(&["account", "list"]);
    assert!(
        listed["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str()),
        "{listed}"
    );
    let shown = admin.ok(&["account", "show", &id]);
    assert_eq!(shown["slots"], serde_json::json!({"total": 5, "used": 0}));
    assert_eq!(shown["engine_access"]["converged"], true);
    // An account the platform made is found by the platform's own id.
    let external = store
        .insert_account(
            &hepdb_store::accounts::NewAccount {
                external_id: Some("user-4711"),
                name: "Ada",
                slots: 1,
                storage_mb: 1,
                db_access: true,
            },
            None,
        )
        .await
        .unwrap();
    let found = admin.ok(&["account", "show", "--external-id", "user-4711"]);
    assert_eq!(found["id"], external.id.as_str());
    let (ok, _, err) = admin.run(&["account", "show", "--external-id", "user-0"]);
    assert!(!ok && err.contains("no such account"), "{err}");
    // The platform API's bounds on what an account may be given.
    for (bad, flag) in [
        (vec!["--name", "x", "--slots", "100001"], "--slots"),
        (
            vec!["--name", "x", "--storage-mb", "100000001"],
            "--storage-mb",
        ),
        (vec!["--name", " "], "--name"),
        (vec!["--name", "a\u{7}b"], "--name"),
    ] {
        let args: Vec<&str> = ["account", "create"].into_iter().chain(bad).collect();
        let (ok, _, err) = admin.run(&args);
        assert!(!ok && err.contains(flag), "{args:?}: {err}");
    }
    let keys = admin.ok(&["key", "list", "--account", &id]);
    assert_eq!(keys["keys"][0]["id"], key_id.as_str());
    assert!(
        !keys.to_string().contains(key.expose()),
        "never the key itself"
    );
    assert_eq!(
        admin.ok(&["database", "list", "--account", &id])["databases"],
        serde_json::json!([])
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hepdb-admin"))
        .args(["key", "list", "--account", &id, "--output", "table"])
        .env("HEPDB__DEVELOPMENT", "true")
        .env("HEPDB__METADATA__URL", &admin.metadata_url)
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success() && table.contains(&key_id) && table.contains("keys: 1"),
        "{table}"
    );
    // Destructive: refused without a terminal unless confirmed with --yes.
    let (ok, _, err) = admin.run(&["account", "suspend", &id]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(
        admin.ok(&["account", "suspend", &id, "--yes"])["keys_changed"],
        1
    );
    assert!(!enabled().await);
    assert_eq!(admin.ok(&["account", "unsuspend", &id])["keys_changed"], 1);
    assert!(enabled().await);
    // Every operator action so far is in the audit log, with no secret in it.
    let audit = admin.ok(&["audit", "--account", &id]);
    let actions: Vec<_> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "account.create",
            "account.update",
            "key.mint",
            "key.disable",
            "key.enable",
            "account.suspend",
            "account.unsuspend"
        ]
    );
    assert!(!audit.to_string().contains(key.expose()));
    // A quota pass on demand reports what it measured and changed.
    let refreshed = admin.ok(&["quota", "refresh", "--account", &id]);
    assert!(refreshed["measured"].is_array() && refreshed["changes"] == serde_json::json!([]));
    // Revoked for good: asked first, and nothing enables it again.
    let (ok, _, err) = admin.run(&["key", "revoke", &key_id]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(
        admin.ok(&["key", "revoke", &key_id, "--yes"])["revoked"],
        true
    );
    let _ = admin.run(&["key", "enable", &key_id]);
    assert!(!enabled().await);
    let (ok, _, err) = admin.run(&["key", "revoke", &key_id, "--yes"]);
    assert!(!ok && err.contains("no such live key"), "{err}");

    for bad in [
        vec!["account", "update", "not-an-id", "--slots", "1"],
        vec!["account", "suspend", "01HV000000000000000000000A", "--yes"],
        vec!["key", "mint", "--account", "01HV000000000000000000000A"],
        vec!["key", "disable", "nope"],
        vec!["database", "delete", "01HV000000000000000000000A", "--yes"],
        vec!["account", "show", "01HV000000000000000000000A"],
        vec!["key", "list", "--account", "01HV000000000000000000000A"],
    ] {
        let (ok, _, err) = admin.run(&bad);
        assert!(!ok && err.starts_with("hepdb-admin: "), "{bad:?}: {err}");
    }
    let (ok, _, err) = admin.run(&["account", "create", "--name", "x", "--slots=-1"]);
    assert!(!ok && err.contains("--slots"), "{err}");

    // Deletion drops the engine objects and the row, and frees the slot.
    let settings = Settings::load().unwrap();
    let ctx = JobContext {
        store: store.clone(),
        engines: Engines::from_settings(&settings.engines).unwrap(),
        key: settings.crypto.master_key().unwrap(),
        max_attempts: 5,
        max_unmeasured_passes: 3,
        job_retention_days: 30,
        audit_retention_days: 400,
        engine_timeout: std::time::Duration::from_secs(45),
        heartbeat: std::time::Duration::from_secs(20),
        waiters: Default::default(),
    };
    let db_id = DatabaseId::new();
    let reserved = store
        .reserve_create(NewDatabase {
            id: db_id,
            account: id.parse().unwrap(),
            name: "doomed",
            engine: Engine::Mariadb,
            password_sealed: ctx.key.seal(db_id, &Password::generate()),
            hosts: &["mariadb"],
            idempotency: None,
        })
        .await
        .unwrap();
    let (db, job) = (reserved.database, reserved.job);
    let msg = JobMessage {
        v: MESSAGE_VERSION,
        job_id: job,
        database_id: db_id,
        kind: JobKindWire::Create,
    };
    assert_eq!(
        handle(&ctx, &msg).await,
        Disposition::Finished {
            outcome: JobOutcome::Done,
            dead_letter: None
        }
    );
    // Deletion runs behind the worker.
    let worker = hepdb_worker::Worker::start(&admin.worker_settings()).unwrap();
    assert!(
        worker
            .wait_consuming(std::time::Duration::from_secs(15))
            .await
    );
    let (runner, id_text) = (admin.clone(), db_id.to_text());
    let deleted =
        tokio::task::spawn_blocking(move || runner.ok(&["database", "delete", &id_text, "--yes"]))
            .await
            .unwrap();
    worker.shutdown().await;
    assert_eq!(
        (deleted["deleted"].as_bool(), deleted["db_name"].as_str()),
        (Some(true), Some(db.db_name.as_str()))
    );
    assert!(store.database(db_id).await.unwrap().is_none());
    let out = Command::new("mysql")
        .args(["-uroot", "-h127.0.0.1", "-N", "-e"])
        .arg(format!(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='{}'; \
             SELECT COUNT(*) FROM mysql.user WHERE User='{}'",
            db.db_name, db.db_user
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["0", "0"]
    );

    // A reconciler pass on demand: the dry run reports, the real one finds nothing stuck here.
    let plan = admin.ok(&["reconcile", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    for list in ["stale_jobs", "deletions", "failed_creates"] {
        assert_eq!(plan[list], serde_json::json!([]), "{list}");
    }
    assert!(plan["orphans"].is_array());
    assert_eq!(admin.ok(&["reconcile"])["dry_run"], false);

    assert!(
        admin.ok(&["keygen"])["master_key"]
            .as_str()
            .is_some_and(|k| k.len() == 44)
    );
}
