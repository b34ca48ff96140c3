//! `hepdb-admin`: the operator's CLI. Every command prints one JSON object on stdout, or a
//! message on stderr and a non-zero exit.

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use hepdb_core::account::{MAX_NAME, MAX_SLOTS, MAX_STORAGE_MB};
use hepdb_core::state::JobKind;
use hepdb_core::{AccountId, DatabaseId, Engine, KeyId, secret::MasterKey, settings::Settings};
use hepdb_store::databases::DeleteIntent;
use hepdb_store::sealing::Cursor;
use hepdb_store::{Store, accounts::AccountUpdate, audit::Actor, migrate};
use hepdb_worker::engines::{MariaDb, Mongo, Postgres};
use serde_json::{Value, json};

use crate::output::Output;

mod confirm;
mod output;

#[derive(Parser)]
#[command(name = "hepdb-admin", version, about = "Operate a hepdb deployment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How to print the result: one JSON object (for scripts) or tables (for people).
    #[arg(long, global = true, value_enum, default_value_t = Output::Json)]
    output: Output,
    /// Confirm a destructive command without being asked (scripts; a terminal is asked).
    #[arg(long, global = true)]
    yes: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Create the metadata database if absent and apply migrations.
    Migrate,
    /// Accounts and their entitlements.
    #[command(subcommand)]
    Account(AccountCmd),
    /// Bearer API keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Tokens of the platform API (the hosting platform's dashboard, billing, abuse tools).
    #[command(subcommand, name = "platform-token")]
    PlatformToken(PlatformTokenCmd),
    /// Databases: list an account's, delete one.
    #[command(subcommand)]
    Database(DatabaseCmd),
    /// Engine provisioner accounts.
    #[command(subcommand)]
    Engine(EngineCmd),
    /// Engine hosts: placement state and what each holds.
    #[command(subcommand)]
    Host(HostCmd),
    /// Storage quotas.
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// What was done to an account, by whom, when, from where.
    Audit {
        /// The account's id.
        #[arg(long)]
        account: String,
    },
    /// One reconciler pass: publish stale jobs again, finish interrupted deletions and failed
    /// creates, report marked engine objects without a metadata row.
    Reconcile {
        /// Only report what a pass would do.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a fresh master key for HEPDB__CRYPTO__MASTER_KEY.
    Keygen,
    /// The master key: rotate it.
    #[command(subcommand)]
    Crypto(CryptoCmd),
}

#[derive(Subcommand)]
enum CryptoCmd {
    /// Re-seal every stored password under HEPDB__CRYPTO__MASTER_KEY, opening the old ones with
    /// HEPDB__CRYPTO__PREVIOUS_MASTER_KEYS. Run it once every gateway and worker runs with the
    /// new key as MASTER_KEY and the old one in PREVIOUS_MASTER_KEYS; the service keeps
    /// running. Safe to kill and run again: it goes on from what is left.
    RotateMasterKey {
        /// Passwords re-sealed per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch_size: i64,
        /// Pause between batches, to spare a busy metadata database.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
    },
}

#[derive(Subcommand)]
enum PlatformTokenCmd {
    /// Mint a token; prints `{"id", "token"}`. The token is shown only here.
    Mint {
        /// Who uses it (the actor in the audit log), e.g. `dashboard` or `billing`.
        #[arg(long)]
        name: String,
    },
    /// End a token for good (asks first).
    Revoke {
        /// The token's id (from `mint`).
        id: String,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account; prints it with its id.
    Create {
        /// A name for people (the platform's user name, say).
        #[arg(long, value_parser = account_name)]
        name: String,
        /// How many databases it may hold.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..=MAX_SLOTS as i64))]
        slots: i32,
        /// Its storage quota, in MiB.
        #[arg(long = "storage-mb", default_value_t = 1024, value_parser = clap::value_parser!(i64).range(0..=MAX_STORAGE_MB))]
        storage_mb: i64,
    },
    /// Accounts, oldest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
    },
    /// One account with what it uses (by id, or by the platform's id).
    Show {
        /// The account's id.
        #[arg(
            required_unless_present = "external_id",
            conflicts_with = "external_id"
        )]
        id: Option<String>,
        /// The platform's own id for the account (its `externalId`).
        #[arg(long = "external-id")]
        external_id: Option<String>,
    },
    /// Top up slots or storage, or switch database access.
    Update {
        /// The account's id.
        id: String,
        /// The new number of slots.
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..=MAX_SLOTS as i64))]
        slots: Option<i32>,
        /// The new storage quota, in MiB.
        #[arg(long = "storage-mb", value_parser = clap::value_parser!(i64).range(0..=MAX_STORAGE_MB))]
        storage_mb: Option<i64>,
        /// Whether the account may use databases at all.
        #[arg(long = "db-access")]
        db_access: Option<bool>,
    },
    /// Suspend: every key of the account stops authenticating at once (asks first).
    Suspend {
        /// The account's id.
        id: String,
    },
    /// Lift a suspension: keys the suspension disabled work again.
    Unsuspend {
        /// The account's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Mint a key; the key is shown only here.
    Mint {
        /// The account's id.
        #[arg(long)]
        account: String,
    },
    /// An account's keys (never the keys themselves).
    List {
        /// The account's id.
        #[arg(long)]
        account: String,
    },
    /// Switch a key off (the owner's switch).
    Disable {
        /// The key's id.
        key_id: String,
    },
    /// Switch a key on again.
    Enable {
        /// The key's id.
        key_id: String,
    },
    /// Revoke a key for good: nothing enables it again (asks first).
    Revoke {
        /// The key's id.
        key_id: String,
    },
}

#[derive(Subcommand)]
enum DatabaseCmd {
    /// An account's databases in every state, with host and size (never passwords).
    List {
        /// The account's id.
        #[arg(long)]
        account: String,
    },
    /// Delete through the worker: the engine database and user (only if hepdb's mark is on
    /// them), then the metadata row (asks first).
    Delete {
        /// The database's id.
        id: String,
    },
}

#[derive(Subcommand)]
enum EngineCmd {
    /// Create or update the least-privilege provisioner account named in the engine's admin_url.
    Bootstrap {
        /// `mariadb`, `postgres` or `mongo`.
        engine: String,
        /// An engine account allowed to create users and grant (kept out of hepdb's settings).
        #[arg(long = "root-url", env = "HEPDB_ENGINE_ROOT_URL")]
        root_url: String,
        /// Which configured host of the engine (needed when it has several).
        #[arg(long)]
        host: Option<String>,
    },
}

#[derive(Subcommand)]
enum QuotaCmd {
    /// Measure every database now and apply over_quota / active changes.
    Refresh {
        /// Only this account's transitions (every database is still measured).
        #[arg(long)]
        account: Option<String>,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Every host with its engine, state, capacity, databases and total size.
    List,
    /// Stop placing new databases on a host (existing ones keep working).
    Drain {
        /// The host's name (as configured).
        name: String,
    },
    /// Place new databases on a drained host again.
    Undrain {
        /// The host's name (as configured).
        name: String,
    },
}

/// An account's name, by the rule the platform API applies.
fn account_name(s: &str) -> Result<String, String> {
    hepdb_core::account::is_printable(s, MAX_NAME)
        .then(|| s.to_owned())
        .ok_or_else(|| format!("must be 1 to {MAX_NAME} printable characters"))
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> anyhow::Result<T> {
    s.parse()
        .map_err(|_| anyhow!("`{s}` is not a valid {what} id"))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let output = cli.output;
    match run(cli).await {
        Ok(out) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{}", output::render(&out, output));
            }
        }
        Err(e) => {
            eprintln!("hepdb-admin: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Value> {
    if let Command::Keygen = cli.command {
        return Ok(json!({ "master_key": MasterKey::generate_base64() }));
    }
    let settings = Settings::load()?;
    settings.refuse_dev_key()?;
    let url = settings.metadata.url.expose();
    if let Command::Engine(EngineCmd::Bootstrap {
        engine,
        root_url,
        host,
    }) = &cli.command
    {
        return bootstrap(&settings, engine, root_url, host.as_deref()).await;
    }
    if let Command::Quota(QuotaCmd::Refresh { account }) = &cli.command {
        let account = account
            .as_deref()
            .map(|a| parse("account", a))
            .transpose()?;
        let report = hepdb_worker::oneshot::quota_refresh(&settings, account).await?;
        return Ok(serde_json::to_value(report)?);
    }
    if let Command::Reconcile { dry_run } = cli.command {
        let report = hepdb_worker::oneshot::reconcile_once(&settings, dry_run).await?;
        return Ok(serde_json::to_value(report)?);
    }
    let store = Store::connect(url, 2)?;
    if let Command::Migrate = cli.command {
        let (created, applied) = migrate::migrate(url).await?;
        store.register_configured_hosts(&settings.engines).await?;
        let hosts: Vec<_> = settings
            .engines
            .enabled_hosts()
            .iter()
            .map(|h| h.name)
            .collect();
        return Ok(json!({ "database_created": created, "applied": applied, "hosts": hosts }));
    }
    if let Command::Crypto(CryptoCmd::RotateMasterKey {
        batch_size,
        pause_ms,
    }) = cli.command
    {
        return rotate_master_key(&store, &settings, batch_size, pause_ms).await;
    }
    let yes = cli.yes;
    Ok(match cli.command {
        Command::Account(cmd) => account(&store, &settings, cmd, yes).await?,
        Command::Key(cmd) => key(&store, cmd, yes).await?,
        Command::PlatformToken(cmd) => platform_token(&store, cmd, yes).await?,
        Command::Audit { account } => {
            let rows = store.audit_log(parse("account", &account)?).await?;
            json!({ "account": account, "entries": rows })
        }
        Command::Host(cmd) => host(&store, cmd).await?,
        Command::Database(DatabaseCmd::List { account }) => {
            let account: AccountId = parse("account", &account)?;
            store.account(account).await?.context("no such account")?;
            let rows = store.databases_of(account).await?;
            let databases: Vec<Value> = rows.iter().map(database_json).collect();
            json!({ "account": account, "databases": databases })
        }
        Command::Database(DatabaseCmd::Delete { id }) => {
            let id = parse("database", &id)?;
            confirm::destructive(&format!("delete database {id} and its user"), yes)?;
            delete_database(&store, &settings, id).await?
        }
        Command::Migrate
        | Command::Keygen
        | Command::Crypto(_)
        | Command::Engine(_)
        | Command::Reconcile { .. }
        | Command::Quota(_) => unreachable!("handled above"),
    })
}

async fn bootstrap(
    settings: &Settings,
    engine: &str,
    root_url: &str,
    host: Option<&str>,
) -> anyhow::Result<Value> {
    let engine: Engine = engine.parse()?;
    let hosts = settings.engines.get(engine).hosts(engine);
    let host = match host {
        Some(name) => hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no {engine} host named `{name}` in the configuration"))?,
        None if hosts.len() == 1 => &hosts[0],
        None => bail!("the {engine} engine has several hosts: name one with --host"),
    };
    let admin_url = host.admin_url()?;
    let done = match engine {
        Engine::Mariadb => MariaDb::bootstrap(root_url, admin_url).await?,
        Engine::Postgres => Postgres::bootstrap(root_url, admin_url).await?,
        Engine::Mongo => {
            let provisioner = Mongo::bootstrap(root_url, admin_url).await?;
            return Ok(json!({ "engine": engine, "host": host.name, "provisioner": provisioner }));
        }
    };
    // Tenants at their limits must leave the provisioner room: a door of its own, or a
    // server with more connections than all tenants together may hold.
    let tenants =
        u64::from(host.settings.capacity) * u64::from(host.settings.tenant_connection_limit);
    let warning = (!done.reserved_door && tenants >= u64::from(done.max_connections)).then(|| {
        format!(
            "capacity x tenant_connection_limit = {tenants} sessions, but the server allows \
             {}: tenants at their limits could leave the provisioner no connection. Give it a \
             door of its own (README, \"Tenant isolation\") or raise max_connections",
            done.max_connections
        )
    });
    Ok(json!({
        "engine": engine,
        "host": host.name,
        "provisioner": done.provisioner,
        "upgraded_databases": done.upgraded_databases,
        "connections": {
            "server_max": done.max_connections,
            "tenants_max": tenants,
            "provisioner_reserved": done.reserved_door,
        },
        "warning": warning,
    }))
}

async fn host(store: &Store, cmd: HostCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        HostCmd::List => {
            let hosts: Vec<Value> = store
                .host_summaries()
                .await?
                .into_iter()
                .map(|s| {
                    let h = s.host;
                    json!({
                        "name": h.name,
                        "engine": h.engine,
                        "state": if h.drained { "drained" } else { "open" },
                        "capacity": h.capacity,
                        "databases": s.databases,
                        "size_bytes": s.size_bytes,
                        "public_endpoint": format!("{}:{}", h.public_host, h.public_port),
                    })
                })
                .collect();
            json!({ "hosts": hosts })
        }
        HostCmd::Drain { name } => set_drained(store, &name, true).await?,
        HostCmd::Undrain { name } => set_drained(store, &name, false).await?,
    })
}

async fn set_drained(store: &Store, name: &str, drained: bool) -> anyhow::Result<Value> {
    if !store.set_drained(name, drained).await? {
        bail!(
            "no host named `{name}` (hosts are registered by `hepdb-admin migrate` and the gateway)"
        );
    }
    Ok(json!({ "name": name, "state": if drained { "drained" } else { "open" } }))
}

/// A database as the operator sees it: every state, where it lives, what it measures; never
/// its password.
fn database_json(db: &hepdb_store::models::Database) -> Value {
    json!({
        "id": db.id, "name": db.name, "engine": db.engine, "db_name": db.db_name,
        "state": db.state, "host": db.host, "size_bytes": db.size_bytes,
        "engine_access": db.engine_access, "created_at": db.created_at,
    })
}

/// The operator running this command, as the audit log's actor (`operator:<user>`); every
/// change is recorded in the same transaction as the change itself.
fn operator() -> String {
    format!(
        "operator:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

fn as_actor(name: &str) -> Option<Actor<'_>> {
    Some(Actor {
        name,
        address: None,
        idempotency: None,
    })
}

async fn account(
    store: &Store,
    settings: &Settings,
    cmd: AccountCmd,
    yes: bool,
) -> anyhow::Result<Value> {
    Ok(match cmd {
        AccountCmd::Create {
            name,
            slots,
            storage_mb,
        } => {
            let operator = operator();
            let new = hepdb_store::accounts::NewAccount {
                external_id: None,
                name: &name,
                slots,
                storage_mb,
                db_access: true,
            };
            let a = store
                .insert_account(&new, as_actor(&operator))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            json!({ "id": a.id, "name": a.name, "slots": a.slots, "storage_mb": a.storage_mb })
        }
        AccountCmd::Update {
            id,
            slots,
            storage_mb,
            db_access,
        } => {
            let update = AccountUpdate {
                slots,
                storage_mb,
                db_access,
            };
            let operator = operator();
            let a = store
                .update_account(
                    parse::<AccountId>("account", &id)?,
                    &update,
                    as_actor(&operator),
                )
                .await?
                .context("no such account")?;
            json!({ "id": a.id, "slots": a.slots, "storage_mb": a.storage_mb, "db_access": a.db_access })
        }
        AccountCmd::List { limit } => {
            let accounts: Vec<Value> = store
                .accounts(limit)
                .await?
                .into_iter()
                .map(|a| {
                    json!({
                        "id": a.id, "external_id": a.external_id, "name": a.name,
                        "slots": a.slots, "storage_mb": a.storage_mb,
                        "suspended": a.suspended, "db_access": a.db_access,
                    })
                })
                .collect();
            json!({ "accounts": accounts })
        }
        AccountCmd::Show { id, external_id } => {
            let found = match (id, external_id) {
                (Some(id), _) => store.account(parse("account", &id)?).await?,
                (None, Some(external)) => store.account_by_external_id(&external).await?,
                (None, None) => bail!("give an account id or --external-id"),
            };
            let a = found.context("no such account")?;
            let usage = store.usage(&a).await?;
            json!({
                "id": a.id, "external_id": a.external_id, "name": a.name, "db_tag": a.db_tag,
                "slots": { "total": a.slots, "used": usage.slots_used },
                "storage": { "quota_mb": a.storage_mb, "used_bytes": usage.used_bytes },
                "suspended": a.suspended, "db_access": a.db_access,
                "engine_access": {
                    "converged": usage.access_pending == 0,
                    "pending": usage.access_pending,
                },
                "created_at": a.created_at,
            })
        }
        AccountCmd::Suspend { id } => {
            confirm::destructive(&format!("suspend account {id}: its keys stop working"), yes)?;
            suspension(store, settings, &id, true).await?
        }
        AccountCmd::Unsuspend { id } => suspension(store, settings, &id, false).await?,
    })
}

/// The suspension cascade: keys and database states change in one transaction with one
/// access job per database, then the jobs are published for the workers (any the broker does
/// not take now, the reconciler delivers).
async fn suspension(
    store: &Store,
    settings: &Settings,
    id: &str,
    suspend: bool,
) -> anyhow::Result<Value> {
    let account = parse("account", id)?;
    let operator = operator();
    let done = if suspend {
        store.suspend_account(account, as_actor(&operator)).await?
    } else {
        store
            .unsuspend_account(account, as_actor(&operator))
            .await?
    }
    .context("no such account")?;
    let jobs: Vec<_> = done
        .jobs
        .iter()
        .map(|(job, db)| (*job, *db, hepdb_core::state::JobKind::Access))
        .collect();
    let published = hepdb_worker::oneshot::publish_jobs(settings, &jobs).await;
    Ok(json!({
        "id": id,
        "suspended": suspend,
        "keys_changed": done.keys,
        "databases": done.jobs.len(),
        "access_jobs_published": published,
    }))
}

async fn key(store: &Store, cmd: KeyCmd, yes: bool) -> anyhow::Result<Value> {
    Ok(match cmd {
        KeyCmd::List { account } => {
            let account: AccountId = parse("account", &account)?;
            store.account(account).await?.context("no such account")?;
            let keys: Vec<Value> = store
                .keys_of(account)
                .await?
                .into_iter()
                .map(|k| {
                    json!({
                        "id": k.id, "label": k.label, "enabled": k.enabled,
                        "disabled_by": k.disabled_by(), "created_at": k.created_at,
                        "last_used_at": k.last_used_at,
                    })
                })
                .collect();
            json!({ "account": account, "keys": keys })
        }
        KeyCmd::Mint { account } => {
            let operator = operator();
            let (row, key) = store
                .mint_labeled_key(parse("account", &account)?, "", as_actor(&operator))
                .await?
                .context("no such account")?;
            json!({ "id": row.id, "key": key.expose() })
        }
        KeyCmd::Disable { key_id } => set_key(store, &key_id, false).await?,
        KeyCmd::Enable { key_id } => set_key(store, &key_id, true).await?,
        KeyCmd::Revoke { key_id } => {
            let key: KeyId = parse("key", &key_id)?;
            confirm::destructive(&format!("revoke key {key_id} for good"), yes)?;
            let operator = operator();
            if store.revoke_key(key, as_actor(&operator)).await?.is_none() {
                bail!("no such live key");
            }
            json!({ "id": key_id, "revoked": true })
        }
    })
}

async fn platform_token(store: &Store, cmd: PlatformTokenCmd, yes: bool) -> anyhow::Result<Value> {
    Ok(match cmd {
        PlatformTokenCmd::Mint { name } => {
            if !hepdb_core::account::is_printable(&name, MAX_NAME) {
                bail!("--name must be 1 to {MAX_NAME} printable characters");
            }
            let (id, token) = store.mint_platform_token(&name).await?;
            json!({ "id": id, "token": token.expose() })
        }
        PlatformTokenCmd::Revoke { id } => {
            confirm::destructive(&format!("revoke platform token {id} for good"), yes)?;
            if !store.revoke_platform_token(parse("token", &id)?).await? {
                bail!("no such live token");
            }
            json!({ "id": id, "revoked": true })
        }
    })
}

async fn set_key(store: &Store, id: &str, enabled: bool) -> anyhow::Result<Value> {
    let key: KeyId = parse("key", id)?;
    let operator = operator();
    if store
        .set_key_enabled(key, enabled, as_actor(&operator))
        .await?
        .is_none()
    {
        bail!("no such key");
    }
    Ok(json!({ "id": id, "enabled": enabled }))
}

/// Deletion runs behind the worker, as the platform API's does: the row is marked `deleting`
/// with a delete job in one transaction, the job is published, and this waits for its
/// outcome. The worker drops only what carries hepdb's mark, then the row. If it has not
/// finished in time it still will (the reconciler delivers a job that was not published).
async fn delete_database(
    store: &Store,
    settings: &Settings,
    id: DatabaseId,
) -> anyhow::Result<Value> {
    let db = store.database(id).await?.context("no such database")?;
    let operator = operator();
    let job = match store.insert_delete_job(id, as_actor(&operator)).await? {
        DeleteIntent::Missing => bail!("no such database"),
        DeleteIntent::Unsettled => {
            bail!("the database's create has not settled; delete it once it has")
        }
        DeleteIntent::Job { job, .. } => job,
    };
    let published =
        hepdb_worker::oneshot::publish_jobs(settings, &[(job, id, JobKind::Delete)]).await;
    let started = std::time::Instant::now();
    let state = loop {
        let state = store.job(job).await?.map(|j| j.state().as_str());
        match state {
            Some("done") | Some("failed") => break state,
            _ if started.elapsed() > std::time::Duration::from_secs(60) => break state,
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    };
    match state {
        Some("done") => {}
        Some("failed") => {
            bail!("the delete job failed; the reconciler finishes the deletion (job {job})")
        }
        _ if published == 0 => bail!(
            "the deletion is recorded (job {job}), but the broker is unreachable: the \
             reconciler delivers it once it is back"
        ),
        _ => bail!("the deletion is recorded and still running (job {job}); it completes later"),
    }
    Ok(json!({
        "id": id,
        "deleted": true,
        "job": job,
        "engine": db.engine,
        "host": db.host,
        "db_name": db.db_name,
    }))
}

/// Re-seals every stored password under the current master key, a batch at a time, printing
/// each batch to stderr; fails if values are still under another key at the end (a gateway or
/// worker still seals with the old one).
async fn rotate_master_key(
    store: &Store,
    settings: &Settings,
    batch_size: i64,
    pause_ms: u64,
) -> anyhow::Result<Value> {
    let key = settings.crypto.master_key()?;
    let (mut databases, mut jobs) = (0, 0);
    // A pass reads every row once; a value a concurrent change replaced meanwhile is left to
    // the next pass. A few passes, then what is still left is reported.
    let mut left = store.unsealed(&key).await?;
    for _ in 0..3 {
        if left.databases + left.jobs == 0 {
            break;
        }
        let mut cursor = Cursor::default();
        loop {
            let batch = store.reseal_batch(&key, batch_size, &cursor).await?;
            if batch.seen == 0 {
                break;
            }
            databases += batch.databases;
            jobs += batch.jobs;
            cursor = batch.next;
            eprintln!(
                "{}",
                json!({ "key": key.id(), "resealed": { "databases": databases, "jobs": jobs } })
            );
            if pause_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
            }
        }
        left = store.unsealed(&key).await?;
    }
    if left.databases + left.jobs > 0 {
        anyhow::bail!(
            "{} database and {} job passwords are still sealed under another key: does every \
             gateway and worker run with the new key as HEPDB__CRYPTO__MASTER_KEY?",
            left.databases,
            left.jobs
        );
    }
    Ok(json!({
        "key": key.id(),
        "resealed": { "databases": databases, "jobs": jobs },
        "left": 0,
    }))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every flag and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "hepdb-admin", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
