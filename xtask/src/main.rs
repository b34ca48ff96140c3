//! `cargo xtask`: the project's own automation, in Rust so it runs wherever cargo does.
//!
//! - `dev`: start the local services (and the PostgreSQL and MongoDB engines), set up the
//!   provisioners, migrate, mint a key, and run the gateway and worker until Ctrl-C.
//! - `test`: start the local services and run the whole test suite.
//! - `load`: load tests against a release-built stack, with same-run baselines and an HTML
//!   report.
//! - `bench`: benchmarks, each printing its ratio to a baseline measured in the same run.
//! - `chaos`: the fault-injection scenarios, one at a time, each printing its counts.
//! - `fuzz`: Schemathesis against both OpenAPI documents of a running stack.
//! - `ci`: `cargo fmt --check`, `cargo clippy -D warnings`, `test`, `fuzz`, then `chaos` (what
//!   CI runs).
//! - `clean`: drop what earlier test runs left in metadata and on the local engines.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod cleanup;
mod fuzz;
mod scale_bench;

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchPart {
    Quota,
    Scale,
    Soak,
}

#[derive(Subcommand)]
enum Task {
    /// Run the whole stack locally and print a working key and a curl to try.
    Dev {
        /// Engine accounts that may create users and grant, used once to set up the
        /// provisioners (the defaults match what `.ci/services.sh` starts).
        #[arg(long, default_value = "mysql://root@127.0.0.1:3306")]
        mariadb_root_url: String,
        #[arg(
            long,
            default_value = "postgres://postgres:hepdb-dev-root@127.0.0.1:5433/postgres"
        )]
        postgres_root_url: String,
        #[arg(
            long,
            default_value = "mongodb://root:hepdb-dev-root@127.0.0.1:27017/admin"
        )]
        mongo_root_url: String,
    },
    /// Start local services and run every test.
    Test,
    /// The fault-injection scenarios (workers killed, broker restarted, races), with counts.
    Chaos,
    /// Benchmarks, each against a baseline measured in the same run: `quota` (one watcher pass
    /// over 10,000 real databases), `scale` (the background passes over 1,000,000 databases in
    /// metadata: time and peak memory), `soak` (a million requests); all of them by default.
    Bench { only: Option<BenchPart> },
    /// Load test: starts its own stack (release build, metadata database `hepdb_load`), then
    /// runs `hepdb-load` with the given arguments, e.g.
    /// `cargo xtask load -- --scenario reveal --concurrency 64 --duration 10`.
    Load {
        /// Arguments for hepdb-load (see `hepdb-load --help`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Schemathesis (installed from PyPI into a virtualenv) against both OpenAPI documents
    /// of a stack of its own (metadata database `hepdb_fuzz`), each for a fixed time budget.
    Fuzz,
    /// fmt --check, clippy -D warnings, the tests, the fuzzer and the chaos suite: the CI gate.
    Ci,
    /// Drop what earlier test runs left: their metadata databases, and the tenant databases
    /// and users that no remaining metadata database claims on the local engines (`test`
    /// does this first).
    Clean,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Dev {
            mariadb_root_url,
            postgres_root_url,
            mongo_root_url,
        } => dev(&[
            ("mariadb", &mariadb_root_url),
            ("postgres", &postgres_root_url),
            ("mongo", &mongo_root_url),
        ]),
        Task::Test => test(),
        Task::Clean => {
            drop_stale_test_databases();
            Ok(())
        }
        Task::Chaos => chaos(),
        Task::Fuzz => fuzz::fuzz(),
        Task::Load { args } => load(&args),
        Task::Bench { only } => {
            services()?;
            let part = |p: BenchPart| only.is_none_or(|o| o == p);
            if part(BenchPart::Quota) {
                run(cargo().args([
                    "test",
                    "-p",
                    "hepdb-worker",
                    "--test",
                    "bench_quota",
                    "--",
                    "--ignored",
                    "--nocapture",
                ]))?;
            }
            if part(BenchPart::Scale) {
                // The background passes at a platform's scale, as the release binaries run
                // them.
                run(cargo().args([
                    "build",
                    "--release",
                    "--bin",
                    "hepdb-admin",
                    "--bin",
                    "hepdb-load",
                ]))?;
                let scale = std::env::var("HEPDB_BENCH_SCALE")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1_000_000);
                scale_bench::passes_at_scale(&target_dir().join("release"), scale)?;
            }
            if part(BenchPart::Soak) {
                // Release: the soak sends a million requests.
                run(cargo().args([
                    "test",
                    "--release",
                    "-p",
                    "hepdb-gateway",
                    "--test",
                    "api",
                    "soak::",
                    "--",
                    "--ignored",
                    "--nocapture",
                ]))?;
            }
            Ok(())
        }
        Task::Ci => {
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            test()?;
            fuzz::fuzz()?;
            chaos()
        }
    }
}

/// The chaos suite stops the shared broker, so it runs alone, one scenario at a time.
fn chaos() -> anyhow::Result<()> {
    services()?;
    run(cargo().args(["build", "--bin", "hepdb-worker"]))?;
    run(cargo().args([
        "test",
        "-p",
        "hepdb-gateway",
        "--test",
        "chaos",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where cargo puts what it builds.
fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn services() -> anyhow::Result<()> {
    run(Command::new("bash").arg(root().join(".ci/services.sh")))
}

fn test() -> anyhow::Result<()> {
    services()?;
    drop_stale_test_databases();
    run(cargo().args(["test", "--workspace", "--all-targets", "--no-fail-fast"]))
}

/// Each test makes its own `hepdb_test_*` metadata database; drop those earlier runs left, and
/// the tenant databases and users their accounts made on the engines.
/// Best effort: a failure here only leaves clutter, so it is reported and ignored.
fn drop_stale_test_databases() {
    let list = "SELECT datname FROM pg_database WHERE datname LIKE 'hepdb\\_test\\_%'";
    let names = match output(&mut psql("postgres", list)) {
        Ok(names) => names,
        Err(e) => return eprintln!("xtask: not cleaning old test databases: {e:#}"),
    };
    // Tenants first: whatever no other metadata database claims was made by tests.
    cleanup::clean_engines(|db| db.starts_with("hepdb_test_"));
    for name in names.lines().filter(|n| !n.is_empty()) {
        let _ = output(&mut psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
        ));
    }
}

/// `psql` running `sql` in `database` of the machine's PostgreSQL, as its superuser.
fn psql(database: &str, sql: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        database,
        "-Atqc",
        sql,
    ]);
    c
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Pulls `"field": "value"` out of hepdb-admin's one-line JSON.
fn field(json: &str, name: &str) -> anyhow::Result<String> {
    let pat = format!("\"{name}\":\"");
    let start = json.find(&pat).context("field missing")? + pat.len();
    let end = json[start..].find('"').context("unterminated")? + start;
    Ok(json[start..end].to_owned())
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The three local engines' root accounts, as `.ci/services.sh` sets them up.
const ROOT_URLS: [(&str, &str); 3] = [
    ("mariadb", "mysql://root@127.0.0.1:3306"),
    (
        "postgres",
        "postgres://postgres:hepdb-dev-root@127.0.0.1:5433/postgres",
    ),
    (
        "mongo",
        "mongodb://root:hepdb-dev-root@127.0.0.1:27017/admin",
    ),
];

/// A running gateway and worker, with an account and its key, and a platform token.
struct Stack {
    children: Children,
    account: String,
    key: String,
    platform_token: String,
}

/// Builds the binaries (`release` or not), sets up the provisioners of `engines`, migrates,
/// creates an account with `slots` and `storage_mb`, mints its key, and starts worker and
/// gateway. `env` is given to every hepdb process.
fn start_stack(
    release: bool,
    env: &[(String, String)],
    engines: &[(&str, &str)],
    slots: &str,
    storage_mb: &str,
) -> anyhow::Result<Stack> {
    let mut build = cargo();
    build.arg("build");
    if release {
        build.arg("--release");
    }
    for bin in ["hepdb-gateway", "hepdb-worker", "hepdb-admin", "hepdb-load"] {
        build.args(["--bin", bin]);
    }
    run(&mut build)?;
    let target = target_dir().join(if release { "release" } else { "debug" });
    let hepdb = |name: &str| {
        let mut c = Command::new(target.join(name));
        // Every xtask stack runs on the development master key.
        c.env("HEPDB__DEVELOPMENT", "true");
        c.envs(env.iter().map(|(k, v)| (k, v)));
        c
    };
    let admin = |a: &[&str]| output(hepdb("hepdb-admin").args(a));
    for (engine, root_url) in engines {
        admin(&["engine", "bootstrap", engine, "--root-url", root_url])?;
    }
    admin(&["migrate"])?;
    let account = field(
        &admin(&[
            "account",
            "create",
            "--name",
            "dev",
            "--slots",
            slots,
            "--storage-mb",
            storage_mb,
        ])?,
        "id",
    )?;
    let key = field(&admin(&["key", "mint", "--account", &account])?, "key")?;
    let platform_token = field(
        &admin(&["platform-token", "mint", "--name", "dev"])?,
        "token",
    )?;
    let children = Children(vec![
        hepdb("hepdb-worker")
            .spawn()
            .context("starting hepdb-worker")?,
        hepdb("hepdb-gateway")
            .spawn()
            .context("starting hepdb-gateway")?,
    ]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    Ok(Stack {
        children,
        account,
        key,
        platform_token,
    })
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A release-built stack of its own (metadata database and queue prefix `hepdb_load`), an
/// account with room for any run, and hepdb-load against it.
fn load(args: &[String]) -> anyhow::Result<()> {
    services()?;
    // What the previous load run made goes first, so that runs do not add up on the engines.
    cleanup::clean_engines(|db| db == "hepdb_load");
    let _ = output(&mut psql(
        "postgres",
        "DROP DATABASE IF EXISTS hepdb_load WITH (FORCE)",
    ));
    let metadata = "postgres://postgres@127.0.0.1:5432/hepdb_load";
    let env = owned(&[
        ("HEPDB__METADATA__URL", metadata),
        ("HEPDB__AMQP__QUEUE_PREFIX", "hepdb_load"),
        ("HEPDB__GATEWAY__LISTEN", "127.0.0.1:18181"),
        ("HEPDB__PLATFORM__LISTEN", "127.0.0.1:18183"),
        ("HEPDB__GATEWAY__METRICS_LISTEN", "127.0.0.1:18184"),
        ("HEPDB__WORKER__ADMIN_LISTEN", "127.0.0.1:18182"),
        ("HEPDB__ENGINES__POSTGRES__ENABLED", "true"),
        // Runs add up: room on the engine hosts for any number of them.
        ("HEPDB__ENGINES__MARIADB__CAPACITY", "100000000"),
        ("HEPDB__ENGINES__POSTGRES__CAPACITY", "100000000"),
        ("HEPDB__TELEMETRY__LOG_FILTER", "warn"),
        // The benchmark measures hepdb, not its rate limiter (one key sends everything).
        ("HEPDB__RATE_LIMIT__ENABLED", "false"),
    ]);
    // The most an account may be given (hepdb_core::account): each run starts on a fresh
    // metadata database, and no scenario creates that many.
    let stack = start_stack(true, &env, &ROOT_URLS[..2], "100000", "100000000")?;
    run(
        Command::new(target_dir().join("release").join("hepdb-load"))
            .current_dir(root())
            .args([
                "--url",
                "http://127.0.0.1:18181",
                "--metadata-url",
                metadata,
                "--gateway-metrics",
                "http://127.0.0.1:18184/metrics",
                "--worker-metrics",
                "http://127.0.0.1:18182/metrics",
            ])
            .args(args)
            .env("HEPDB_LOAD_KEY", &stack.key),
    )
}

fn dev(root_urls: &[(&str, &str)]) -> anyhow::Result<()> {
    services()?;
    // All three engines, on the servers `.ci/services.sh` runs (unless the caller's
    // environment says otherwise).
    let env: Vec<(String, String)> = ["POSTGRES", "MONGO"]
        .into_iter()
        .map(|e| format!("HEPDB__ENGINES__{e}__ENABLED"))
        .filter(|var| std::env::var_os(var).is_none())
        .map(|var| (var, "true".to_owned()))
        .collect();
    let mut stack = start_stack(false, &env, root_urls, "5", "1024")?;
    let (account, key, token) = (&stack.account, &stack.key, &stack.platform_token);
    let listen =
        std::env::var("HEPDB__GATEWAY__LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    eprintln!(
        "\nhepdb is running on http://{listen} (Ctrl-C stops it)\n\n  \
         account: {account}\n  key:     {key}\n  platform token: {token} (the platform API, on \
         HEPDB__PLATFORM__LISTEN, default 127.0.0.1:8081)\n\nTry:\n  \
         curl -s -X POST http://{listen}/api/v1/db/databases \\\n    \
         -H \"Authorization: Bearer {key}\" -H \"Content-Type: application/json\" \\\n    \
         -d '{{\"name\":\"my-app\"}}'\n  \
         curl -s http://{listen}/api/v1/db/databases -H \"Authorization: Bearer {key}\"\n"
    );
    // Runs until either process exits or the user presses Ctrl-C (which reaches all of us).
    loop {
        for c in &mut stack.children.0 {
            if let Some(status) = c.try_wait()? {
                bail!("a hepdb process exited: {status}");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
