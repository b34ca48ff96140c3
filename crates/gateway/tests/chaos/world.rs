//! What the scenarios share: a worker as a real process, a ledger of what the API answered,
//! and the consistency check that compares API, metadata and engines.

use std::{
    collections::{HashMap, HashSet},
    process::Command,
    sync::Mutex,
    time::{Duration, Instant},
};

use hepdb_core::DatabaseState;
use mysql_async::prelude::Queryable;
use serde_json::Value;

use hepdb_testkit::*;

/// A small deterministic generator (xorshift64*), so a failing run can be repeated by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// The seed of this run: `HEPDB_CHAOS_SEED`, or the clock.
pub fn seed() -> u64 {
    std::env::var("HEPDB_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// What the API told the client, per database.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<LedgerInner>,
}

#[derive(Default, Clone)]
struct LedgerInner {
    /// Passwords the API returned with a 201 or 200, per database id.
    passwords: HashMap<String, Vec<String>>,
    /// Rotates whose outcome the client could not know (503 JOB_TIMEOUT).
    uncertain: HashSet<String>,
    /// Creates answered 503 JOB_TIMEOUT: each may finish later, as a database the client
    /// has not seen (it finds it by listing, and its password by revealing).
    uncertain_creates: usize,
    created: Vec<String>,
    /// Databases a deletion was recorded for (answered 200, or 503 JOB_TIMEOUT while it ran):
    /// a recorded deletion always completes, so each must be gone once settled.
    deleted: HashSet<String>,
    /// Answers by status and code.
    answers: HashMap<String, usize>,
}

impl Ledger {
    /// Records an answer to a create or rotate of `db` (None for a create that made nothing).
    pub fn record(&self, db: Option<&str>, status: u16, body: &Value) {
        let mut l = self.inner.lock().unwrap();
        let label = match body["code"].as_str() {
            Some(code) => format!("{status} {code}"),
            None => status.to_string(),
        };
        *l.answers.entry(label).or_default() += 1;
        if status == 200 || status == 201 {
            let d = &body["data"];
            let id = d["id"].as_str().unwrap().to_owned();
            if status == 201 {
                l.created.push(id.clone());
            }
            l.passwords
                .entry(id)
                .or_default()
                .push(d["password"].as_str().unwrap().to_owned());
        } else if body["code"] == "JOB_TIMEOUT" {
            if let Some(db) = db {
                l.uncertain.insert(db.to_owned());
            } else {
                l.uncertain_creates += 1;
            }
        }
    }

    /// Records the answer to a deletion of `db` through the platform API.
    pub fn record_deletion(&self, db: &str, status: u16, body: &Value) {
        let mut l = self.inner.lock().unwrap();
        let label = match body["code"].as_str() {
            Some(code) => format!("DELETE {status} {code}"),
            None => format!("DELETE {status}"),
        };
        *l.answers.entry(label).or_default() += 1;
        if status == 200 || body["code"] == "JOB_TIMEOUT" {
            l.deleted.insert(db.to_owned());
        }
    }

    pub fn created(&self) -> Vec<String> {
        self.inner.lock().unwrap().created.clone()
    }

    /// How many answers had this status (and code, as in `answers`).
    pub fn count(&self, label: &str) -> usize {
        let l = self.inner.lock().unwrap();
        l.answers.get(label).copied().unwrap_or(0)
    }

    pub fn answers(&self) -> String {
        let l = self.inner.lock().unwrap();
        let mut a: Vec<_> = l.answers.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        a.sort();
        a.join(" ")
    }
}

/// Waits until no job is pending or running (the reconciler and redeliveries finish them),
/// then until no row is left creating, failed or deleting (the reconciler's passes clean up
/// what a failed create or an interrupted delete left, one bounded engine step at a time).
/// A row still unsettled at `limit` is left for [`inconsistencies`] to report.
pub async fn settle(app: &TestApp, limit: Duration) {
    let started = Instant::now();
    loop {
        let open = app.store.stale_jobs(0).await.unwrap();
        if open.is_empty() && unsettled_rows(app).await == 0 {
            return;
        }
        if open.is_empty() && started.elapsed() >= limit {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "{} jobs still open after {limit:?}",
            open.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The account's rows in a state that holds a slot without being a usable database.
async fn unsettled_rows(app: &TestApp) -> usize {
    let mut n = 0;
    for state in UNSETTLED {
        n += rows_in(app, state).await;
    }
    n
}

/// How many of the account's rows are in `state`.
async fn rows_in(app: &TestApp, state: DatabaseState) -> usize {
    app.store
        .databases_in_state(state)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.account_id == app.account.to_text())
        .count()
}

const UNSETTLED: [DatabaseState; 3] = [
    DatabaseState::Creating,
    DatabaseState::Failed,
    DatabaseState::Deleting,
];

/// The account's hepdb objects on the engines, by database name.
async fn engine_objects(tag: &str) -> (HashSet<String>, HashSet<String>) {
    let mut maria: HashSet<String> = engine_databases(tag).await.into_iter().collect();
    // A user without its database would be a leak too.
    for user in engine_users(tag).await {
        maria.insert(user.trim_start_matches('d').to_owned());
    }
    let (client, conn) = tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let pattern = format!("um\\_{tag}\\_%");
    let mut pg: HashSet<String> = client
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let role_pattern = format!("dum\\_{tag}\\_%");
    for r in client
        .query(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
            &[&role_pattern],
        )
        .await
        .unwrap()
    {
        let role: String = r.get(0);
        pg.insert(role.trim_start_matches('d').to_owned());
    }
    (maria, pg)
}

/// Prints a database's jobs, to explain an inconsistency.
async fn job_history(app: &TestApp, id: &str) {
    let url = app.settings.metadata.url.expose();
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sql = "SELECT kind, state, attempts, coalesce(error_code, ''), updated_at::text \
               FROM jobs WHERE database_id = $1 ORDER BY created_at";
    for r in client.query(sql, &[&id]).await.unwrap() {
        let (kind, state, attempts, error, at): (String, String, i32, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        eprintln!("chaos:   {id}: {kind} {state} attempts={attempts} {error} {at}");
    }
}

/// Every inconsistency found so far, for a failure message that repeats them last (CI shows
/// a failure's tail).
static COMPLAINTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn complaints() -> String {
    COMPLAINTS.lock().unwrap().join("; ")
}

/// Compares API answers, metadata and engines; returns how many things disagree, and prints
/// each.
pub async fn inconsistencies(app: &TestApp, ledger: &Ledger) -> usize {
    let mut bad = 0;
    let mut complain = |what: String| {
        eprintln!("chaos: INCONSISTENT: {what}");
        COMPLAINTS.lock().unwrap().push(what);
        bad += 1;
    };
    let l = ledger.inner.lock().unwrap().clone();
    let (_, listed) = app.list().await;
    let listed = data(&listed)["databases"].as_array().unwrap().clone();
    let listed_ids: HashSet<&str> = listed.iter().map(|d| d["id"].as_str().unwrap()).collect();
    for id in &l.created {
        if !listed_ids.contains(id.as_str()) && !l.deleted.contains(id) {
            complain(format!("created {id} (201) is not listed"));
        }
    }
    for id in &l.deleted {
        if listed_ids.contains(id.as_str()) {
            complain(format!("deleted {id} is still listed"));
        }
        if app
            .store
            .database(id.parse().unwrap())
            .await
            .unwrap()
            .is_some()
        {
            complain(format!("deleted {id} still has a metadata row"));
        }
    }
    let unseen: HashSet<&str> = listed_ids
        .iter()
        .copied()
        .filter(|id| !l.created.iter().any(|c| c == id))
        .collect();
    if unseen.len() > l.uncertain_creates {
        complain(format!(
            "{} databases listed that no create answered, but only {} creates timed out",
            unseen.len(),
            l.uncertain_creates
        ));
    }
    // Every row is settled: nothing stuck in creating, failed or deleting holds a slot.
    for state in UNSETTLED {
        let stuck = rows_in(app, state).await;
        if stuck > 0 {
            complain(format!(
                "{stuck} rows still {} after settling",
                state.as_str()
            ));
        }
    }
    let disagree = app.placement_counts_disagree().await;
    if disagree > 0 {
        complain(format!(
            "{disagree} hosts' placement counts disagree with their databases"
        ));
    }
    let (maria, pg) = engine_objects(&app.tag().await).await;
    let mut expect_maria = HashSet::new();
    let mut expect_pg = HashSet::new();
    for d in &listed {
        let id = d["id"].as_str().unwrap();
        let (_, revealed) = app.reveal(id).await;
        let r = data(&revealed);
        let (cs, pw) = (
            r["connectionString"].as_str().unwrap(),
            r["password"].as_str().unwrap(),
        );
        if !can_login(cs).await {
            job_history(app, id).await;
            complain(format!("{id}: the revealed password does not log in"));
        }
        let known = l.passwords.get(id).cloned().unwrap_or_default();
        if !known.iter().any(|k| k == pw) && !l.uncertain.contains(id) && !unseen.contains(id) {
            complain(format!("{id}: revealed password was never returned"));
        }
        for old in known.iter().filter(|k| *k != pw) {
            if can_login(&cs.replace(pw, old)).await {
                complain(format!("{id}: a superseded password still logs in"));
            }
        }
        let name = d["dbName"].as_str().unwrap().to_owned();
        match d["engine"].as_str().unwrap() {
            "mariadb" => expect_maria.insert(name),
            _ => expect_pg.insert(name),
        };
    }
    for (engine, found, want) in [
        ("mariadb", &maria, &expect_maria),
        ("postgres", &pg, &expect_pg),
    ] {
        for extra in found.difference(want) {
            complain(format!("{engine}: {extra} on the engine has no active row"));
        }
        for missing in want.difference(found) {
            complain(format!(
                "{engine}: {missing} is in metadata, not on the engine"
            ));
        }
    }
    bad
}

/// Puts the broker back even if a scenario fails half-way.
pub struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
    }
}

pub fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {arg}");
}

/// Writes a table into a foreign MariaDB database as root (scenario 5).
pub async fn foreign_mariadb(name: &str) {
    let mut c = root().await;
    for sql in [
        format!("CREATE DATABASE `{name}`"),
        format!("CREATE TABLE `{name}`.precious (v TEXT)"),
        format!("INSERT INTO `{name}`.precious VALUES ('keep me')"),
    ] {
        c.query_drop(sql).await.unwrap();
    }
}

pub async fn foreign_mariadb_intact(name: &str) -> bool {
    let v: Option<String> = root()
        .await
        .query_first(format!("SELECT v FROM `{name}`.precious"))
        .await
        .unwrap_or(None);
    v.as_deref() == Some("keep me")
}

pub async fn drop_foreign_mariadb(name: &str) {
    root()
        .await
        .query_drop(format!("DROP DATABASE IF EXISTS `{name}`"))
        .await
        .unwrap();
}
