//! `hepdb-load` (run through `cargo xtask load`): drives a running hepdb stack with one
//! scenario, then measures baselines in the same run with the same concurrency and count:
//! for create and rotate the raw engine DDL and the pipeline floor (the same durable steps,
//! bare: [`floor`]), for the read paths point selects on the metadata database (as
//! `pgbench -S` does). Prints them, their ratios, hepdb's time per step (from its span
//! metrics: [`steps`]), each applicable target of issue 14 with the step that holds a missed one
//! ([`targets`]), the resident memory of the hepdb processes, and writes a self-contained HTML
//! report.

mod engine;
mod floor;
mod report;
mod run;
mod scale;
mod steps;
mod targets;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use tokio::sync::Mutex;

use crate::{
    engine::EngineWork,
    run::{Limit, Measured},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    List,
    Reveal,
    Create,
    Rotate,
    Mixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engine {
    Mariadb,
    Postgres,
}

#[derive(Parser, Debug)]
#[command(name = "hepdb-load", about = "Load-test a running hepdb stack")]
struct Args {
    #[arg(long, value_enum, required_unless_present = "seed_only")]
    scenario: Option<Scenario>,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to run (ignored with --count).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Run exactly this many operations instead of for a duration.
    #[arg(long)]
    count: Option<u64>,
    #[arg(long, value_enum, default_value = "mariadb")]
    engine: Engine,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key of an account with enough slots (`cargo xtask load` mints one).
    #[arg(long, env = "HEPDB_LOAD_KEY", required_unless_present = "seed_only")]
    key: Option<String>,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/hepdb")]
    metadata_url: String,
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mariadb_root_url: String,
    #[arg(
        long,
        default_value = "postgres://postgres:hepdb-dev-root@127.0.0.1:5433/postgres"
    )]
    postgres_root_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// The gateway's and the worker's `/metrics`, for hepdb's time per step (from its span
    /// metrics); leave out to skip the breakdown.
    #[arg(long)]
    gateway_metrics: Option<String>,
    #[arg(long)]
    worker_metrics: Option<String>,
    /// Also run the scenario again after writing this many more databases (ten per account)
    /// into metadata, and print both side by side with the hot queries' plans at that scale.
    #[arg(long, default_value_t = 0)]
    scale: u64,
    /// With --scale: also this many finished jobs and this many audit entries.
    #[arg(long, default_value_t = 0)]
    history: u64,
    /// With --scale: only write the databases (on --seed-host), run nothing.
    #[arg(long)]
    seed_only: bool,
    #[arg(long, default_value = "mariadb")]
    seed_host: String,
    /// Where the HTML report goes.
    #[arg(long, default_value = "target/load")]
    report_dir: std::path::PathBuf,
}

impl Args {
    fn scenario(&self) -> Scenario {
        self.scenario.unwrap_or(Scenario::List)
    }
}

/// A unique tag for the names this run creates.
fn run_tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{:x}", t.as_micros() % 0xffff_ffff)
}

struct Api {
    client: reqwest::Client,
    base: String,
    auth: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut req = self
            .client
            .request(method, format!("{}/api/v1/db{path}", self.base))
            .header("Authorization", &self.auth);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|_| "connection".to_owned())?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.map_err(|_| format!("{status} no json"))?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(format!("{status} {}", body["code"].as_str().unwrap_or("-")))
        }
    }

    async fn create(&self, name: &str, engine: Engine) -> Result<String, String> {
        let engine = match engine {
            Engine::Mariadb => "mariadb",
            Engine::Postgres => "postgres",
        };
        let b = self
            .call(
                reqwest::Method::POST,
                "/databases",
                Some(serde_json::json!({"name": name, "engine": engine})),
            )
            .await?;
        Ok(b["data"]["id"].as_str().unwrap_or_default().to_owned())
    }
}

fn limit(args: &Args) -> Limit {
    match args.count {
        Some(c) => Limit::Count(c),
        None => Limit::Duration(Duration::from_secs(args.duration)),
    }
}

/// The hepdb side of the run.
async fn drive(args: &Args, api: Arc<Api>, tag: &str) -> anyhow::Result<Measured> {
    // Databases to read and rotate: one per task, so rotates of different tasks do not queue
    // on one database's lock.
    let mut ids = vec![];
    if args.scenario() != Scenario::Create && args.scenario() != Scenario::List {
        for i in 0..args.concurrency {
            let id = api
                .create(&format!("load-{tag}-seed-{i}"), args.engine)
                .await
                .map_err(|e| anyhow::anyhow!("seeding databases: {e}"))?;
            ids.push(id);
        }
    }
    let ids = Arc::new(ids);
    let (scenario, engine, tag) = (args.scenario(), args.engine, tag.to_owned());
    Ok(run::run(args.concurrency, limit(args), move |worker, n| {
        let (api, ids, tag) = (api.clone(), ids.clone(), tag.clone());
        async move {
            let pick = match scenario {
                Scenario::Mixed => match n % 10 {
                    0 => Scenario::Create,
                    1 | 2 => Scenario::Rotate,
                    3..=5 => Scenario::List,
                    _ => Scenario::Reveal,
                },
                s => s,
            };
            let mine = || ids[worker % ids.len().max(1)].clone();
            let (method, path) = match pick {
                Scenario::List => (reqwest::Method::GET, "/databases".to_owned()),
                Scenario::Reveal => (reqwest::Method::GET, format!("/databases/{}", mine())),
                Scenario::Rotate => (
                    reqwest::Method::POST,
                    format!("/databases/{}/rotate", mine()),
                ),
                Scenario::Create | Scenario::Mixed => {
                    return api
                        .create(&format!("load-{tag}-{n}"), engine)
                        .await
                        .map(drop);
                }
            };
            api.call(method, &path, None).await.map(drop)
        }
    })
    .await)
}

/// What the DDL baseline and the pipeline floor do on the engine, for a create or rotate run.
fn engine_work(args: &Args, tag: &str) -> Option<EngineWork> {
    let rotate = match args.scenario() {
        Scenario::Create => false,
        Scenario::Rotate => true,
        _ => return None,
    };
    let root = match args.engine {
        Engine::Mariadb => &args.mariadb_root_url,
        Engine::Postgres => &args.postgres_root_url,
    };
    Some(EngineWork::new(args.engine, rotate, root, tag))
}

/// The same amount of raw work, without hepdb: the engine DDL alone for a create or rotate,
/// point selects on the metadata database for the read paths.
async fn baseline(args: &Args, tag: &str) -> anyhow::Result<(String, Measured)> {
    let lim = limit(args);
    if let Some(work) = engine_work(args, tag) {
        let mut sessions = vec![];
        for lane in 0..args.concurrency {
            let mut s = work.connect().await?;
            work.prepare(&mut s, lane).await?;
            sessions.push(Mutex::new(s));
        }
        let (work, sessions) = (Arc::new(work), Arc::new(sessions));
        let (w, ss) = (work.clone(), sessions.clone());
        let m = run::run(args.concurrency, lim, move |lane, n| {
            let (work, sessions) = (w.clone(), ss.clone());
            async move {
                let mut s = sessions[lane].lock().await;
                work.ddl(&mut s, lane, n).await.map(drop)
            }
        })
        .await;
        work.clean(&mut *sessions[0].lock().await).await?;
        return Ok((format!("raw {}", work.describe()), m));
    }
    let conns = pg_conns(&args.metadata_url, args.concurrency).await?;
    let ids: Vec<String> = conns[0]
        .lock()
        .await
        .query("SELECT id FROM accounts LIMIT 100", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(!ids.is_empty(), "the metadata database has no accounts");
    let ids = Arc::new(ids);
    let m = run::run(args.concurrency, lim, move |w, n| {
        let (conns, ids) = (conns.clone(), ids.clone());
        async move {
            let c = conns[w].lock().await;
            let id = &ids[n as usize % ids.len()];
            c.query_one("SELECT id, name FROM accounts WHERE id = $1", &[id])
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    })
    .await;
    Ok(("metadata point selects (pgbench -S style)".into(), m))
}

type Shared<T> = Arc<Vec<Mutex<T>>>;

async fn pg_conns(url: &str, n: usize) -> anyhow::Result<Shared<tokio_postgres::Client>> {
    let mut v = vec![];
    for _ in 0..n {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        v.push(Mutex::new(client));
    }
    Ok(Arc::new(v))
}

fn ratio_line(label: &str, hepdb: &Measured, base: &Measured) -> String {
    format!(
        "ratio hepdb/{label}: throughput {:.2}, p50 {:.2} (+{:.2} ms), p99 {:.2}",
        hepdb.rps() / base.rps().max(1e-9),
        hepdb.quantile_ms(0.5) / base.quantile_ms(0.5).max(1e-9),
        hepdb.quantile_ms(0.5) - base.quantile_ms(0.5),
        hepdb.quantile_ms(0.99) / base.quantile_ms(0.99).max(1e-9),
    )
}

/// A fresh worker runs its first reconciler and quota passes at once: waits (up to two
/// minutes) until both are done, so that they fall in neither hepdb's run nor a baseline's.
/// Later passes come at their intervals, as in a deployment.
async fn wait_for_first_passes(client: &reqwest::Client, worker_metrics: &str) {
    let started = std::time::Instant::now();
    let worker = [("worker", worker_metrics.to_owned())];
    while started.elapsed() < std::time::Duration::from_secs(120) {
        let scraped = steps::scrape(client, &worker).await;
        if ["reconcile.pass", "quota.pass"]
            .iter()
            .all(|pass| scraped.closed("worker", pass) >= 1.0)
        {
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "the worker's first passes took {:.1} s; measuring now",
                    started.elapsed().as_secs_f64()
                );
            }
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Each hepdb process's resident memory must stay under this through every scenario.
const RESIDENT_TARGET_MB: f64 = 30.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.seed_only {
        let took = scale::seed(&args.metadata_url, args.scale, &args.seed_host).await?;
        #[allow(clippy::print_stdout)]
        {
            println!(
                "seeded {} databases on {} in {:.0} s",
                args.scale,
                args.seed_host,
                took.as_secs_f64()
            );
        }
        return Ok(());
    }
    let tag = run_tag();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let api = Arc::new(Api {
        client: client.clone(),
        base: args.url.trim_end_matches('/').to_owned(),
        auth: format!("Bearer {}", args.key.as_deref().unwrap_or_default()),
    });
    let metrics: Vec<(&str, String)> = [
        ("gateway", &args.gateway_metrics),
        ("worker", &args.worker_metrics),
    ]
    .into_iter()
    .filter_map(|(p, url)| Some((p, url.clone()?)))
    .collect();
    if let Some(url) = &args.worker_metrics {
        wait_for_first_passes(&client, url).await;
    }
    let before = steps::scrape(&client, &metrics).await;
    let hepdb = drive(&args, api.clone(), &tag)
        .await
        .context("the hepdb run")?;
    let after = steps::scrape(&client, &metrics).await;
    let at_scale = if args.scale > 0 {
        let mut took = scale::seed(&args.metadata_url, args.scale, &args.seed_host)
            .await
            .context("seeding metadata")?;
        if args.history > 0 {
            took += scale::seed_history(&args.metadata_url, args.scale, args.history)
                .await
                .context("seeding jobs and audit entries")?;
        }
        let again = drive(&args, api, &format!("{tag}s"))
            .await
            .context("the hepdb run at scale")?;
        let plans = scale::explain(&args.metadata_url, args.scale).await?;
        Some((took, again, plans))
    } else {
        None
    };
    let (baseline_label, base) = baseline(&args, &tag).await.context("the baseline run")?;
    let floor = match engine_work(&args, &format!("{tag}f")) {
        Some(work) => Some(
            floor::run(
                Arc::new(work),
                &args.metadata_url,
                &args.amqp_url,
                args.concurrency,
                limit(&args),
                &tag,
            )
            .await
            .context("the pipeline floor run")?,
        ),
        None => None,
    };
    let title = format!(
        "hepdb load: {:?} on {:?}, concurrency {}",
        args.scenario(),
        args.engine,
        args.concurrency
    );
    let mut summary = vec![
        title.clone(),
        report::line("hepdb", &hepdb),
        report::line("baseline", &base),
    ];
    if let Some((f, _)) = &floor {
        summary.push(report::line("floor", f));
    }
    summary.push(format!("baseline = {baseline_label}"));
    if floor.is_some() {
        summary.push(
            "floor = the bare pipeline: intent commit, persistent confirmed publish, a bare \
             consumer's DDL, login check, result commit, ack and reply"
                .into(),
        );
    }
    summary.push(ratio_line("baseline", &hepdb, &base));
    if let Some((f, _)) = &floor {
        summary.push(ratio_line("floor", &hepdb, f));
    }
    if !hepdb.errors.is_empty() {
        summary.push(format!("hepdb errors: {:?}", hepdb.errors));
    }
    if let Some((took, again, plans)) = &at_scale {
        summary.push(format!(
            "at scale: {} more databases over {} accounts, {} finished jobs and {} audit entries \
             written into metadata and analyzed in {:.0} s",
            args.scale,
            args.scale / 10,
            args.history,
            args.history,
            took.as_secs_f64()
        ));
        summary.push(report::line("at scale", again));
        summary.push(format!(
            "ratio at scale/as before: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            again.rps() / hepdb.rps().max(1e-9),
            again.quantile_ms(0.5) / hepdb.quantile_ms(0.5).max(1e-9),
            again.quantile_ms(0.99) / hepdb.quantile_ms(0.99).max(1e-9),
        ));
        if !again.errors.is_empty() {
            summary.push(format!("errors at scale: {:?}", again.errors));
        }
        for (name, plan) in plans {
            summary.push(format!("EXPLAIN ANALYZE at scale: {name}"));
            summary.extend(plan.iter().map(|l| format!("  {l}")));
        }
    }
    let hepdb_steps = steps::between(&before, &after, hepdb.ok());
    let mut sides: Vec<(&str, Vec<(&str, f64)>)> = vec![];
    if let Some((_, times)) = &floor {
        summary.push("the floor, mean ms per operation by step:".into());
        for (step, ms) in times.per_op_ms() {
            summary.push(format!("  {step:<34} {ms:>8.2}"));
        }
        sides.push(("floor", times.aligned()));
        if !hepdb_steps.is_empty() {
            sides.push(("hepdb", steps::aligned(&hepdb_steps)));
            summary.push(format!(
                "mean ms per operation: {:<26} {:>8} {:>8}",
                "", "floor", "hepdb"
            ));
            for (step, ms) in &sides[1].1 {
                let floor_ms = sides[0].1.iter().find(|(s, _)| s == step).map(|p| p.1);
                summary.push(format!(
                    "  {step:<34} {:>8} {ms:>8.2}",
                    floor_ms.map_or("-".into(), |f| format!("{f:.2}"))
                ));
            }
        }
    }
    if !hepdb_steps.is_empty() {
        summary.push(
            "hepdb, mean ms per operation by span (spans nest: a parent includes its children):"
                .into(),
        );
        for s in &hepdb_steps {
            summary.push(format!(
                "  {:<8} {:<36} {:>8.2}  ({:.2} per operation)",
                s.process, s.span, s.ms_per_op, s.per_op
            ));
        }
    }
    let sample = |m: &Measured| targets::Sample {
        rps: m.rps(),
        p50_ms: m.quantile_ms(0.5),
        p99_ms: m.quantile_ms(0.99),
    };
    let run = targets::Run {
        scenario: &format!("{:?}", args.scenario()).to_lowercase(),
        postgres: args.engine == Engine::Postgres,
        concurrency: args.concurrency,
    };
    let parts = (sides.len() == 2).then(|| (&sides[0].1[..], &sides[1].1[..]));
    let floor_sample = floor.as_ref().map(|(f, _)| sample(f));
    for verdict in targets::judge(run, sample(&hepdb), sample(&base), floor_sample, parts) {
        summary.push(verdict.to_string());
    }
    // The peak is the process's high-water mark since it started: every scenario this stack
    // has run so far, not a reading after this one.
    for name in ["hepdb-gateway", "hepdb-worker"] {
        for r in report::resident(name) {
            let mb = |kb: u64| kb as f64 / 1024.0;
            summary.push(format!(
                "{name} (pid {}) resident: {:.1} MB now, peak {:.1} MB ({} the {RESIDENT_TARGET_MB} MB target)",
                r.pid,
                mb(r.now_kb),
                mb(r.peak_kb),
                if mb(r.peak_kb) < RESIDENT_TARGET_MB { "under" } else { "OVER" },
            ));
        }
    }
    for l in &summary {
        #[allow(clippy::print_stdout)]
        {
            println!("{l}");
        }
    }
    std::fs::create_dir_all(&args.report_dir)?;
    let file = args.report_dir.join(format!(
        "{}-{}.html",
        format!("{:?}", args.scenario()).to_lowercase(),
        tag
    ));
    let mut runs = vec![("hepdb", &hepdb), ("baseline", &base)];
    if let Some((f, _)) = &floor {
        runs.push(("floor", f));
    }
    if let Some((_, again, _)) = &at_scale {
        runs.push(("at scale", again));
    }
    std::fs::write(&file, report::html(&title, &summary, &runs, &sides))?;
    #[allow(clippy::print_stdout)]
    {
        println!("report: {}", file.display());
    }
    Ok(())
}
