//! `hepdb-load` (run through `cargo xtask load`): drives a running hepdb stack with one
//! scenario, then measures a baseline in the same run with the same concurrency and count:
//! the raw engine DDL for create and rotate, point selects on the metadata database (as
//! `pgbench -S` does) for the read paths. Prints both, their ratios, the resident memory of the
//! hepdb processes, and writes a self-contained HTML report.

mod report;
mod run;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use mysql_async::prelude::Queryable;
use tokio::sync::Mutex;

use crate::run::{Limit, Measured};

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
    #[arg(long, value_enum)]
    scenario: Scenario,
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
    #[arg(long, env = "HEPDB_LOAD_KEY")]
    key: String,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/hepdb")]
    metadata_url: String,
    #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
    mariadb_root_url: String,
    #[arg(
        long,
        default_value = "postgres://postgres:hepdb-dev-root@127.0.0.1:5433/postgres"
    )]
    postgres_root_url: String,
    /// Where the HTML report goes.
    #[arg(long, default_value = "target/load")]
    report_dir: std::path::PathBuf,
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
    if args.scenario != Scenario::Create && args.scenario != Scenario::List {
        for i in 0..args.concurrency {
            let id = api
                .create(&format!("load-{tag}-seed-{i}"), args.engine)
                .await
                .map_err(|e| anyhow::anyhow!("seeding databases: {e}"))?;
            ids.push(id);
        }
    }
    let ids = Arc::new(ids);
    let (scenario, engine, tag) = (args.scenario, args.engine, tag.to_owned());
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

/// The same amount of raw work, without hepdb.
async fn baseline(args: &Args, tag: &str) -> anyhow::Result<(String, Measured)> {
    let lim = limit(args);
    match (args.scenario, args.engine) {
        (Scenario::Create, Engine::Mariadb) | (Scenario::Rotate, Engine::Mariadb) => {
            let conns = mariadb_conns(&args.mariadb_root_url, args.concurrency).await?;
            let rotate = args.scenario == Scenario::Rotate;
            if rotate {
                for w in 0..args.concurrency {
                    conns[w]
                        .lock()
                        .await
                        .query_drop(format!("CREATE USER 'lb_{tag}_u{w}'@'%' IDENTIFIED BY 'x'"))
                        .await?;
                }
            }
            let tag2 = tag.to_owned();
            let c2 = conns.clone();
            let m = run::run(args.concurrency, lim, move |w, n| {
                let (conns, tag) = (c2.clone(), tag2.clone());
                async move {
                    let mut c = conns[w].lock().await;
                    let pw = format!("P{n:039}");
                    let sql = if rotate {
                        vec![format!(
                            "ALTER USER 'lb_{tag}_u{w}'@'%' IDENTIFIED BY '{pw}'"
                        )]
                    } else {
                        vec![
                            format!("CREATE DATABASE `lb_{tag}_{n}`"),
                            format!("CREATE USER 'lb_{tag}_{n}'@'%' IDENTIFIED BY '{pw}'"),
                            format!(
                                "GRANT ALL PRIVILEGES ON `lb\\_{tag}\\_{n}`.* TO 'lb_{tag}_{n}'@'%'"
                            ),
                        ]
                    };
                    for s in sql {
                        c.query_drop(s).await.map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
            })
            .await;
            // Clean up what the baseline made.
            let mut c = conns[0].lock().await;
            let dbs: Vec<String> = c
                .exec(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
                    (format!("lb\\_{tag}\\_%"),),
                )
                .await?;
            for db in dbs {
                c.query_drop(format!("DROP DATABASE `{db}`")).await?;
            }
            let users: Vec<String> = c
                .exec(
                    "SELECT User FROM mysql.user WHERE User LIKE ?",
                    (format!("lb\\_{tag}\\_%"),),
                )
                .await?;
            for u in users {
                c.query_drop(format!("DROP USER '{u}'@'%'")).await?;
            }
            let what = if rotate {
                "ALTER USER"
            } else {
                "CREATE DATABASE + CREATE USER + GRANT"
            };
            Ok((format!("raw MariaDB {what}"), m))
        }
        (Scenario::Create, Engine::Postgres) | (Scenario::Rotate, Engine::Postgres) => {
            let rotate = args.scenario == Scenario::Rotate;
            let conns = pg_conns(&args.postgres_root_url, args.concurrency).await?;
            if rotate {
                for (w, c) in conns.iter().enumerate() {
                    c.lock()
                        .await
                        .batch_execute(&format!("CREATE ROLE lb_{tag}_u{w} LOGIN"))
                        .await?;
                }
            }
            let tag2 = tag.to_owned();
            let c2 = conns.clone();
            let m = run::run(args.concurrency, lim, move |w, n| {
                let (conns, tag) = (c2.clone(), tag2.clone());
                async move {
                    let c = conns[w].lock().await;
                    let sql = if rotate {
                        format!("ALTER ROLE lb_{tag}_u{w} PASSWORD 'P{n:039}'")
                    } else {
                        format!("CREATE DATABASE lb_{tag}_{n}")
                    };
                    c.batch_execute(&sql).await.map_err(|e| e.to_string())
                }
            })
            .await;
            let c = conns[0].lock().await;
            let pattern = format!("lb\\_{tag}\\_%");
            // Databases first: a role cannot go while it owns one.
            for (list, drop) in [
                (
                    "SELECT datname::text FROM pg_database WHERE datname LIKE $1",
                    "DROP DATABASE",
                ),
                (
                    "SELECT rolname::text FROM pg_roles WHERE rolname LIKE $1",
                    "DROP ROLE",
                ),
            ] {
                for r in c.query(list, &[&pattern]).await? {
                    c.batch_execute(&format!("{drop} {}", r.get::<_, String>(0)))
                        .await?;
                }
            }
            let what = if rotate {
                "ALTER ROLE"
            } else {
                "CREATE DATABASE"
            };
            Ok((format!("raw PostgreSQL {what}"), m))
        }
        _ => {
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
    }
}

type Shared<T> = Arc<Vec<Mutex<T>>>;

async fn mariadb_conns(url: &str, n: usize) -> anyhow::Result<Shared<mysql_async::Conn>> {
    let opts =
        mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(url)?).prefer_socket(false);
    let mut v = vec![];
    for _ in 0..n {
        v.push(Mutex::new(mysql_async::Conn::new(opts.clone()).await?));
    }
    Ok(Arc::new(v))
}

async fn pg_conns(url: &str, n: usize) -> anyhow::Result<Shared<tokio_postgres::Client>> {
    let mut v = vec![];
    for _ in 0..n {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        v.push(Mutex::new(client));
    }
    Ok(Arc::new(v))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tag = run_tag();
    let api = Arc::new(Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?,
        base: args.url.trim_end_matches('/').to_owned(),
        auth: format!("Bearer {}", args.key),
    });
    let hepdb = drive(&args, api, &tag).await.context("the hepdb run")?;
    let (baseline_label, base) = baseline(&args, &tag).await.context("the baseline run")?;
    let title = format!(
        "hepdb load: {:?} on {:?}, concurrency {}",
        args.scenario, args.engine, args.concurrency
    );
    let mut summary = vec![
        title.clone(),
        report::line("hepdb", &hepdb),
        report::line("baseline", &base),
        format!("baseline = {baseline_label}"),
        format!(
            "ratio hepdb/baseline: throughput {:.2}, p50 {:.2} (+{:.2} ms), p99 {:.2}",
            hepdb.rps() / base.rps().max(1e-9),
            hepdb.quantile_ms(0.5) / base.quantile_ms(0.5).max(1e-9),
            hepdb.quantile_ms(0.5) - base.quantile_ms(0.5),
            hepdb.quantile_ms(0.99) / base.quantile_ms(0.99).max(1e-9),
        ),
    ];
    if !hepdb.errors.is_empty() {
        summary.push(format!("hepdb errors: {:?}", hepdb.errors));
    }
    for name in ["hepdb-gateway", "hepdb-worker"] {
        for (pid, kb) in report::rss_kb(name) {
            summary.push(format!(
                "{name} (pid {pid}) resident: {:.1} MB",
                kb as f64 / 1024.0
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
        format!("{:?}", args.scenario).to_lowercase(),
        tag
    ));
    std::fs::write(
        &file,
        report::html(&title, &summary, &[("hepdb", &hepdb), ("baseline", &base)]),
    )?;
    #[allow(clippy::print_stdout)]
    {
        println!("report: {}", file.display());
    }
    Ok(())
}
