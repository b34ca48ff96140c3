//! The scenarios.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use reqwest::Method;
use serde_json::json;

use hepdb_testkit::{
    proxy::{Hold, Proxy},
    *,
};

use crate::world::*;

fn report(scenario: &str, operations: usize, faults: usize, inconsistencies: usize) {
    eprintln!(
        "chaos: {scenario}: operations={operations} faults={faults} inconsistencies={inconsistencies}"
    );
}

/// One create, rotate or deletion (through the platform API, with `token`), recorded in the
/// ledger.
async fn operate(
    app: &TestApp,
    token: &str,
    ledger: &Ledger,
    ids: &Mutex<Vec<String>>,
    rng_pick: u64,
    n: usize,
) -> String {
    let target = {
        let ids = ids.lock().unwrap();
        (!ids.is_empty() && rng_pick % 10 >= 4).then(|| ids[rng_pick as usize % ids.len()].clone())
    };
    match target {
        Some(id) if rng_pick % 10 == 9 => {
            let path = format!("/databases/{id}");
            let (s, b) = app.platform(Method::DELETE, &path, Some(token), None).await;
            if s == 200 {
                ids.lock().unwrap().retain(|i| *i != id);
            }
            ledger.record_deletion(&id, s.as_u16(), &b);
            format!("DELETE {id}: {s}")
        }
        Some(id) => {
            let (s, b) = app.rotate(&id).await;
            ledger.record(Some(&id), s.as_u16(), &b);
            format!("rotate {id}: {s}")
        }
        None => {
            let engine = if rng_pick.is_multiple_of(3) {
                "postgres"
            } else {
                "mariadb"
            };
            let (s, b) = app
                .create(json!({"name": format!("db-{n}"), "engine": engine}))
                .await;
            if s == 201 {
                ids.lock()
                    .unwrap()
                    .push(b["data"]["id"].as_str().unwrap().to_owned());
            }
            ledger.record(None, s.as_u16(), &b);
            format!("create on {engine}: {s}")
        }
    }
}

/// The app of the mixed-load scenarios: room for any number of creates, a short gateway wait
/// and a short staleness, and no worker (the scenario runs one as a process).
async fn mixed_load_app() -> TestApp {
    spawn_app_with(
        Options {
            no_worker: true,
            slots: Some(500),
            ..Default::default()
        },
        |s| {
            s.gateway.job_timeout_ms = 3000;
            s.worker.stale_job_secs = 4;
        },
    )
    .await
}

/// `operations` creates and rotates chosen by `seed`, from 8 lanes; sets `done` at the end.
async fn mixed_load(
    app: &TestApp,
    ledger: &Ledger,
    ids: &Mutex<Vec<String>>,
    seed: u64,
    operations: usize,
    done: &AtomicBool,
) {
    let picks: Vec<u64> = {
        let mut rng = Rng::new(seed);
        (0..operations).map(|_| rng.below(1 << 30)).collect()
    };
    let token = app.platform_token("chaos").await;
    let token = &token;
    futures_util::stream::iter(picks.iter().enumerate())
        .for_each_concurrent(8, |(n, pick)| async move {
            operate(app, token, ledger, ids, *pick, n).await;
        })
        .await;
    done.store(true, Ordering::SeqCst);
}

/// 1. Workers killed with SIGKILL at random moments during 200 mixed creates and rotates.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn worker_killed_at_random_points() {
    let seed = seed();
    eprintln!("chaos: worker_killed_at_random_points: seed={seed}");
    let app = mixed_load_app().await;
    let mut worker = WorkerProcess::start(&app);
    let ledger = Ledger::default();
    let ids = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let kills = AtomicUsize::new(0);
    const OPERATIONS: usize = 200;

    let load = mixed_load(&app, &ledger, &ids, seed, OPERATIONS, &done);
    let killer = async {
        let mut rng = Rng::new(seed ^ 0x9E37_79B9);
        while !done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200 + rng.below(800))).await;
            worker.kill();
            kills.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            worker.restart();
        }
    };
    tokio::join!(load, killer);
    settle(&app, Duration::from_secs(90)).await;
    // The reconciler (every second in the worker) finishes any failed create's cleanup.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bad = inconsistencies(&app, &ledger).await;
    // Proof that kills landed mid-job: jobs that needed more than one delivery.
    let redelivered = app
        .metadata_sql("SELECT 1 FROM jobs WHERE attempts > 1")
        .await;
    eprintln!(
        "chaos: worker_killed_at_random_points: answers {}; jobs delivered more than once: {redelivered}",
        ledger.answers()
    );
    report(
        "worker_killed_at_random_points",
        OPERATIONS,
        kills.load(Ordering::SeqCst),
        bad,
    );
    assert_eq!(bad, 0, "seed {seed}");
    assert!(!ledger.created().is_empty(), "some creates succeeded");
}

/// Ends every engine session of the provisioner, as the engines' root: MariaDB `KILL`, and
/// PostgreSQL `pg_terminate_backend`. Returns how many it ended.
async fn kill_provisioner_sessions() -> usize {
    let mut root = root().await;
    let ids: Vec<u64> = root
        .query("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'hepdb_provisioner'")
        .await
        .unwrap_or_default();
    let mut ended = 0;
    for id in ids {
        if root.query_drop(format!("KILL {id}")).await.is_ok() {
            ended += 1;
        }
    }
    if let Ok((pg, conn)) =
        tokio_postgres::connect(&postgres_root_url(), tokio_postgres::NoTls).await
    {
        tokio::spawn(conn);
        if let Ok(rows) = pg
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE usename = 'hepdb_provisioner' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
        {
            ended += rows.len();
        }
    }
    ended
}

/// 6. The provisioner's engine sessions killed mid-statement, again and again, during mixed
/// creates and rotates on MariaDB and PostgreSQL: a statement may or may not have taken effect
/// when its session dies. Every failed create must converge to no engine objects, every
/// rotate to one password that engine and metadata agree on.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn engine_sessions_killed_mid_statement() {
    let seed = seed();
    eprintln!("chaos: engine_sessions_killed_mid_statement: seed={seed}");
    let app = mixed_load_app().await;
    let _worker = WorkerProcess::start(&app);
    let ledger = Ledger::default();
    let ids = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let (kills, sessions) = (AtomicUsize::new(0), AtomicUsize::new(0));
    const OPERATIONS: usize = 200;

    let load = mixed_load(&app, &ledger, &ids, seed, OPERATIONS, &done);
    let killer = async {
        let mut rng = Rng::new(seed ^ 0x5DEE_CE66);
        while !done.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50 + rng.below(250))).await;
            let ended = kill_provisioner_sessions().await;
            if ended > 0 {
                kills.fetch_add(1, Ordering::SeqCst);
                sessions.fetch_add(ended, Ordering::SeqCst);
            }
        }
    };
    tokio::join!(load, killer);
    let bad = settled_inconsistencies(&app, &ledger, Duration::from_secs(90)).await;
    eprintln!(
        "chaos: engine_sessions_killed_mid_statement: answers {}; sessions ended {}",
        ledger.answers(),
        sessions.load(Ordering::SeqCst)
    );
    report(
        "engine_sessions_killed_mid_statement",
        OPERATIONS,
        kills.load(Ordering::SeqCst),
        bad,
    );
    assert_eq!(bad, 0, "seed {seed}");
    assert!(kills.load(Ordering::SeqCst) >= 10, "too few faults landed");
}

/// Once every job has settled (within `limit`) and the reconciler (every second in the worker)
/// has finished failed creates' cleanup and dropped what abandoned attempts left: the
/// inconsistencies, counting every 500 as one (a fault is the engine or the broker being
/// unavailable: 503, never 500).
async fn settled_inconsistencies(app: &TestApp, ledger: &Ledger, limit: Duration) -> usize {
    settle(app, limit).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let bad = inconsistencies(app, ledger).await;
    let internal = ledger.count("500 INTERNAL");
    if internal > 0 {
        eprintln!("chaos: INCONSISTENT: {internal} answers were 500 INTERNAL");
    }
    bad + internal
}

/// 2. 50 concurrent creates against 3 free slots.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn fifty_creates_three_slots() {
    let app = spawn_app_with(
        Options {
            slots: Some(3),
            ..Default::default()
        },
        |_| {},
    )
    .await;
    let ledger = Ledger::default();
    let answers = futures_util::future::join_all(
        (0..50).map(|i| app.create(json!({"name": format!("race-{i}")}))),
    )
    .await;
    for (s, b) in &answers {
        ledger.record(None, s.as_u16(), b);
    }
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 402 && b["code"] == "OUT_OF_SLOTS")
        .count();
    let mut bad = inconsistencies(&app, &ledger).await;
    let on_engine = engine_databases(&app.tag().await).await.len();
    if (created, refused, on_engine) != (3, 47, 3) {
        eprintln!(
            "chaos: INCONSISTENT: created {created}, refused {refused}, on engine {on_engine}"
        );
        bad += 1;
    }
    report("fifty_creates_three_slots", 50, 0, bad);
    assert_eq!(bad, 0);
}

/// 3. 20 concurrent rotates of one database.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn twenty_concurrent_rotates() {
    let app = spawn_app().await;
    let ledger = Ledger::default();
    let (s, b) = app.create(json!({"name": "hot"})).await;
    ledger.record(None, s.as_u16(), &b);
    let id = data(&b)["id"].as_str().unwrap().to_owned();
    let answers = futures_util::future::join_all((0..20).map(|_| app.rotate(&id))).await;
    for (s, b) in &answers {
        ledger.record(Some(&id), s.as_u16(), b);
    }
    let mut bad = inconsistencies(&app, &ledger).await;
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    if ok != 20 {
        eprintln!(
            "chaos: INCONSISTENT: {ok} of 20 rotates answered 200: {}",
            ledger.answers()
        );
        bad += 1;
    }
    report("twenty_concurrent_rotates", 21, 0, bad);
    assert_eq!(bad, 0);
}

/// 4. The broker restarted under load; gateway and worker recover without a restart.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn broker_restart_under_load() {
    // The worker's reconciler runs as in a deployment: a deletion recorded while the broker
    // was down is never cancelled, and waits for it to publish the job again.
    let app = spawn_app_with(
        Options {
            slots: Some(500),
            ..Default::default()
        },
        |s| {
            s.gateway.job_timeout_ms = 3000;
            s.worker.reconcile_interval_secs = 1;
            s.worker.stale_job_secs = 4;
        },
    )
    .await;
    let ledger = Arc::new(Ledger::default());
    let ids = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    let slow = AtomicUsize::new(0);
    let ops = AtomicUsize::new(0);
    let token = app.platform_token("chaos").await;
    let (app_ref, ledger_ref, ids_ref, token_ref) = (&app, &*ledger, &ids, &token);
    let (stop_ref, ops_ref, slow_ref) = (&stop, &ops, &slow);
    let load = async move {
        futures_util::stream::iter(0..4)
            .for_each_concurrent(4, move |lane| async move {
                let (app, ledger, ids, token) = (app_ref, ledger_ref, ids_ref, token_ref);
                let (stop, ops, slow) = (stop_ref, ops_ref, slow_ref);
                let mut rng = Rng::new(seed() ^ lane);
                while !stop.load(Ordering::SeqCst) {
                    let n = ops.fetch_add(1, Ordering::SeqCst);
                    let started = Instant::now();
                    let what = operate(app, token, ledger, ids, rng.below(1 << 30), n).await;
                    // Never past the timeout (3 s) plus the broker's own reconnect window. A
                    // deletion commits its intent first, and on a two-core machine a commit
                    // can queue behind the disk writes of the broker's recovery: a second more.
                    let bound = if what.starts_with("DELETE") { 6 } else { 5 };
                    if started.elapsed() > Duration::from_secs(bound) {
                        eprintln!("chaos: SLOW: {what} took {:?}", started.elapsed());
                        slow.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .await;
    };
    let fault = async {
        let _guard = BrokerGuard;
        tokio::time::sleep(Duration::from_secs(2)).await;
        rabbitmqctl("stop_app");
        tokio::time::sleep(Duration::from_secs(3)).await;
        rabbitmqctl("start_app");
        // Keep the load on until both sides are back and have served for a while.
        assert!(
            app.worker
                .as_ref()
                .unwrap()
                .wait_consuming(Duration::from_secs(60))
                .await
        );
        tokio::time::sleep(Duration::from_secs(4)).await;
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(load, fault);
    // After recovery, requests work again on the same processes.
    let (s, b) = app.create(json!({"name": "after-restart"})).await;
    ledger.record(None, s.as_u16(), &b);
    let mut bad = 0;
    if s != 201 {
        eprintln!("chaos: INCONSISTENT: create after recovery answered {s}: {b}");
        bad += 1;
    }
    settle(&app, Duration::from_secs(60)).await;
    bad += inconsistencies(&app, &ledger).await;
    bad += slow.load(Ordering::SeqCst);
    eprintln!(
        "chaos: broker_restart_under_load: answers {}",
        ledger.answers()
    );
    report(
        "broker_restart_under_load",
        ops.load(Ordering::SeqCst) + 1,
        1,
        bad,
    );
    assert_eq!(bad, 0);
}

/// 5. A foreign database already has the next generated name.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn colliding_name_left_untouched() {
    let app = spawn_app().await;
    let ledger = Ledger::default();
    let name = format!("um_{}_1", app.tag().await);
    foreign_mariadb(&name).await;
    let (s, b) = app.create(json!({"name": "first"})).await;
    ledger.record(None, s.as_u16(), &b);
    let mut bad = 0;
    if (s.as_u16(), b["code"].as_str()) != (500, Some("ENGINE_CONFLICT")) {
        eprintln!("chaos: INCONSISTENT: create over a foreign database answered {s}: {b}");
        bad += 1;
    }
    if !foreign_mariadb_intact(&name).await {
        eprintln!("chaos: INCONSISTENT: the foreign database was touched");
        bad += 1;
    }
    // The next create gets the next name and works; the foreign one stays out of hepdb's view.
    let (s, b) = app.create(json!({"name": "first"})).await;
    ledger.record(None, s.as_u16(), &b);
    if s != 201 {
        bad += 1;
    }
    drop_foreign_mariadb(&name).await;
    bad += inconsistencies(&app, &ledger).await;
    report("colliding_name_left_untouched", 2, 1, bad);
    assert_eq!(bad, 0);
}

/// The kinds of fault [`every_fault_under_mixed_load`] injects, each at least
/// [`MIN_FAULTS_EACH`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The worker process SIGKILLed at a random moment.
    WorkerKilled,
    /// The provisioner's engine sessions ended mid-statement by the engines' root.
    SessionsKilled,
    /// The worker's broker connection cut: RabbitMQ redelivers its unacked jobs while the
    /// worker may still be running them (duplicate deliveries).
    BrokerCut,
    /// Engine statements hang (requests or replies held on the network) past the worker's
    /// engine timeout.
    HungStatement,
    /// The worker SIGKILLed while it undoes a failed create.
    KilledInCleanup,
    /// The worker SIGKILLed while it puts a failed rotate's previous password back.
    KilledInRollback,
}

const FAULTS: [Fault; 6] = [
    Fault::WorkerKilled,
    Fault::SessionsKilled,
    Fault::BrokerCut,
    Fault::HungStatement,
    Fault::KilledInCleanup,
    Fault::KilledInRollback,
];
const MIN_FAULTS_EACH: usize = 10;
const MIN_OPERATIONS: usize = 500;

/// What the worker logs when it starts undoing a failed create, and a failed rotate.
const CLEANUP_STARTS: &str = "undoing a failed create on the engine";
const ROLLBACK_STARTS: &str = "putting the previous password back";

/// The network between the worker and its dependencies, as proxies a scenario controls.
struct Network {
    broker: Proxy,
    mariadb: Proxy,
    postgres: Proxy,
}

impl Network {
    fn hold_engines(&self, hold: Hold) {
        self.mariadb.hold(hold);
        self.postgres.hold(hold);
    }
}

/// 7. Every kind of fault, again and again, under at least 500 mixed creates and rotates on
/// MariaDB and PostgreSQL: worker kills, engine sessions killed mid-statement, the worker's
/// broker connection cut while it runs jobs, engine statements that hang past the engine
/// timeout, and kills in the middle of a failed create's cleanup and of a failed rotate's
/// rollback. Afterwards API, metadata and engines agree, and no answer was a 500.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "fault injection: run with `cargo xtask chaos`"]
async fn every_fault_under_mixed_load() {
    let seed = seed();
    eprintln!("chaos: every_fault_under_mixed_load: seed={seed}");
    let app = mixed_load_app().await;
    let net = Network {
        broker: Proxy::start("127.0.0.1:5672").await,
        mariadb: Proxy::start("127.0.0.1:3306").await,
        postgres: Proxy::start("127.0.0.1:5433").await,
    };
    let via = |url: &str, upstream: &str, proxy: &Proxy| {
        assert!(url.contains(upstream), "{upstream} is not in the URL");
        url.replace(upstream, &format!("127.0.0.1:{}", proxy.port))
    };
    let s = &app.settings;
    let admin = |e: &hepdb_core::settings::EngineSettings| {
        e.single.admin_url.as_ref().unwrap().expose().to_owned()
    };
    let env = [
        (
            "HEPDB__AMQP__URL",
            via(s.amqp.url.expose(), "127.0.0.1:5672", &net.broker),
        ),
        (
            "HEPDB__ENGINES__MARIADB__ADMIN_URL",
            via(&admin(&s.engines.mariadb), "127.0.0.1:3306", &net.mariadb),
        ),
        (
            "HEPDB__ENGINES__POSTGRES__ADMIN_URL",
            via(&admin(&s.engines.postgres), "127.0.0.1:5433", &net.postgres),
        ),
        ("HEPDB__WORKER__ENGINE_TIMEOUT_SECS", "1".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let log = std::env::temp_dir().join(format!("hepdb-chaos-{}.log", s.amqp.queue_prefix));
    let mut worker = WorkerProcess::start_logged(&app, &env, Some(log.clone()));
    assert!(worker.wait_ready(Duration::from_secs(30)).await);

    let ledger = Ledger::default();
    let ids = Mutex::new(Vec::new());
    let (ops, enough_faults) = (AtomicUsize::new(0), AtomicBool::new(false));
    let counts: Mutex<Vec<usize>> = Mutex::new(vec![0; FAULTS.len()]);
    let token = app.platform_token("chaos").await;
    let load = futures_util::stream::iter(0..8u64).for_each_concurrent(8, |lane| {
        let (app, ledger, ids, ops, enough_faults) = (&app, &ledger, &ids, &ops, &enough_faults);
        let token = &token;
        async move {
            let mut rng = Rng::new(seed ^ (lane + 1));
            while !(enough_faults.load(Ordering::SeqCst)
                && ops.load(Ordering::SeqCst) >= MIN_OPERATIONS)
            {
                let n = ops.fetch_add(1, Ordering::SeqCst);
                let _ = operate(app, token, ledger, ids, rng.below(1 << 30), n).await;
            }
        }
    });
    let faults = async {
        let mut rng = Rng::new(seed ^ 0xC4A0_5EED);
        let started = Instant::now();
        loop {
            let fewest = {
                let c = counts.lock().unwrap();
                if c.iter().all(|n| *n >= MIN_FAULTS_EACH) {
                    break;
                }
                let least = *c.iter().min().unwrap();
                let tied: Vec<usize> = (0..FAULTS.len()).filter(|i| c[*i] == least).collect();
                tied[rng.below(tied.len() as u64) as usize]
            };
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "faults did not land: {:?}",
                counts.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(200 + rng.below(500))).await;
            if inject(FAULTS[fewest], &net, &mut worker, &mut rng).await {
                counts.lock().unwrap()[fewest] += 1;
            }
        }
        enough_faults.store(true, Ordering::SeqCst);
    };
    tokio::join!(load, faults);
    net.hold_engines(Hold::None);
    let bad = settled_inconsistencies(&app, &ledger, Duration::from_secs(120)).await;
    let counts = counts.into_inner().unwrap();
    let by_kind: Vec<String> = FAULTS
        .iter()
        .zip(&counts)
        .map(|(f, n)| format!("{f:?}={n}"))
        .collect();
    let redelivered = app
        .metadata_sql("SELECT 1 FROM jobs WHERE attempts > 1")
        .await;
    eprintln!(
        "chaos: every_fault_under_mixed_load: answers {}; faults {}; jobs delivered more than once: {redelivered}",
        ledger.answers(),
        by_kind.join(" ")
    );
    if bad > 0 {
        // What the worker said about failures, for the CI output: its own warnings and errors.
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        let noted: Vec<&str> = said
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        for line in &noted[noted.len().saturating_sub(150)..] {
            eprintln!("chaos: worker: {line}");
        }
    }
    if bad == 0 {
        let _ = std::fs::remove_file(&log);
    } else {
        eprintln!("chaos: the worker's whole log: {}", log.display());
    }
    report(
        "every_fault_under_mixed_load",
        ops.load(Ordering::SeqCst),
        counts.iter().sum(),
        bad,
    );
    assert_eq!(bad, 0, "seed {seed}: {}", complaints());
}

/// Injects one fault; answers whether it landed.
async fn inject(fault: Fault, net: &Network, worker: &mut WorkerProcess, rng: &mut Rng) -> bool {
    let held = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            Hold::Requests
        } else {
            Hold::Replies
        }
    };
    match fault {
        Fault::WorkerKilled => {
            worker.kill();
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            worker.restart();
            true
        }
        Fault::SessionsKilled => kill_provisioner_sessions().await > 0,
        Fault::BrokerCut => {
            net.broker.cut();
            true
        }
        Fault::HungStatement => {
            net.hold_engines(held(rng));
            // Past the worker's engine timeout (1 s).
            tokio::time::sleep(Duration::from_millis(1500 + rng.below(1000))).await;
            net.hold_engines(Hold::None);
            true
        }
        Fault::KilledInCleanup | Fault::KilledInRollback => {
            let marker = if fault == Fault::KilledInCleanup {
                CLEANUP_STARTS
            } else {
                ROLLBACK_STARTS
            };
            let before = worker.log_lines_with(marker);
            net.hold_engines(held(rng));
            // A step times out after 1 s; its cleanup or rollback then hangs too.
            let started = Instant::now();
            let mut landed = false;
            while started.elapsed() < Duration::from_secs(4) {
                if worker.log_lines_with(marker) > before {
                    tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
                    worker.kill();
                    landed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            net.hold_engines(Hold::None);
            if landed {
                worker.restart();
            }
            landed
        }
    }
}
