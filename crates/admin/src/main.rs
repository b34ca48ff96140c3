//! `hepdb-admin`: the operator's CLI. Every command prints one JSON object on stdout, or a
//! message on stderr and a non-zero exit.

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use hepdb_core::{AccountId, DatabaseId, Engine, KeyId, secret::MasterKey, settings::Settings};
use hepdb_store::{Store, accounts::AccountUpdate, migrate};
use hepdb_worker::engines::{EngineDriver, MariaDb, Target};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(name = "hepdb-admin", version, about = "Operate a hepdb deployment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// Databases (deletion is operator-only).
    #[command(subcommand)]
    Database(DatabaseCmd),
    /// Engine servers.
    #[command(subcommand)]
    Engine(EngineCmd),
    /// Print a fresh master key for HEPDB__CRYPTO__MASTER_KEY.
    Keygen,
}

#[derive(Subcommand)]
enum AccountCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(0..))]
        slots: i32,
        #[arg(long = "storage-mb", default_value_t = 1024, value_parser = clap::value_parser!(i64).range(0..))]
        storage_mb: i64,
    },
    /// Top up slots or storage, or switch database access.
    Update {
        id: String,
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        slots: Option<i32>,
        #[arg(long = "storage-mb", value_parser = clap::value_parser!(i64).range(0..))]
        storage_mb: Option<i64>,
        #[arg(long = "db-access")]
        db_access: Option<bool>,
    },
    /// Suspend: every key of the account stops authenticating at once.
    Suspend { id: String },
    /// Lift a suspension: keys the suspension disabled work again.
    Unsuspend { id: String },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Mint a key; the key is shown only here.
    Mint {
        #[arg(long)]
        account: String,
    },
    Disable {
        key_id: String,
    },
    Enable {
        key_id: String,
    },
}

#[derive(Subcommand)]
enum DatabaseCmd {
    /// Drop the engine database and user (only if hepdb's mark is on them) and the metadata row.
    Delete { id: String },
}

#[derive(Subcommand)]
enum EngineCmd {
    /// Create or update the least-privilege provisioner account named in the engine's admin_url.
    Bootstrap {
        engine: String,
        /// An engine account allowed to create users and grant (kept out of hepdb's settings).
        #[arg(long = "root-url", env = "HEPDB_ENGINE_ROOT_URL")]
        root_url: String,
    },
}

fn parse<T: std::str::FromStr>(what: &str, s: &str) -> anyhow::Result<T> {
    s.parse()
        .map_err(|_| anyhow!("`{s}` is not a valid {what} id"))
}

#[tokio::main]
async fn main() {
    match run(Cli::parse()).await {
        Ok(out) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{out}");
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
    let url = settings.metadata.url.expose();
    if let Command::Migrate = cli.command {
        let (created, applied) = migrate::migrate(url).await?;
        return Ok(json!({ "database_created": created, "applied": applied }));
    }
    if let Command::Engine(EngineCmd::Bootstrap { engine, root_url }) = &cli.command {
        let engine: Engine = engine.parse()?;
        let admin_url = settings.engines.get(engine).admin_url.expose();
        let user = match engine {
            Engine::Mariadb => MariaDb::bootstrap(root_url, admin_url).await?,
            other => bail!("bootstrap of {other} is not implemented yet"),
        };
        return Ok(json!({ "engine": engine, "provisioner": user }));
    }
    let store = Store::connect(url, 2)?;
    Ok(match cli.command {
        Command::Account(cmd) => account(&store, cmd).await?,
        Command::Key(cmd) => key(&store, cmd).await?,
        Command::Database(DatabaseCmd::Delete { id }) => {
            delete_database(&store, &settings, parse("database", &id)?).await?
        }
        Command::Migrate | Command::Keygen | Command::Engine(_) => unreachable!("handled above"),
    })
}

async fn account(store: &Store, cmd: AccountCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        AccountCmd::Create {
            name,
            slots,
            storage_mb,
        } => {
            let a = store.create_account(&name, slots, storage_mb).await?;
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
            let a = store
                .update_account(parse::<AccountId>("account", &id)?, &update)
                .await?
                .context("no such account")?;
            json!({ "id": a.id, "slots": a.slots, "storage_mb": a.storage_mb, "db_access": a.db_access })
        }
        AccountCmd::Suspend { id } => {
            let keys = store
                .suspend_account(parse("account", &id)?)
                .await?
                .context("no such account")?;
            json!({ "id": id, "suspended": true, "keys_disabled": keys })
        }
        AccountCmd::Unsuspend { id } => {
            let keys = store
                .unsuspend_account(parse("account", &id)?)
                .await?
                .context("no such account")?;
            json!({ "id": id, "suspended": false, "keys_enabled": keys })
        }
    })
}

async fn key(store: &Store, cmd: KeyCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        KeyCmd::Mint { account } => {
            let (id, key) = store
                .mint_key(parse("account", &account)?)
                .await?
                .context("no such account")?;
            json!({ "id": id, "key": key.expose() })
        }
        KeyCmd::Disable { key_id } => set_key(store, &key_id, false).await?,
        KeyCmd::Enable { key_id } => set_key(store, &key_id, true).await?,
    })
}

async fn set_key(store: &Store, id: &str, enabled: bool) -> anyhow::Result<Value> {
    if !store
        .set_key_enabled(parse::<KeyId>("key", id)?, enabled)
        .await?
    {
        bail!("no such key");
    }
    Ok(json!({ "id": id, "enabled": enabled }))
}

/// Crash-safe: the row is marked `deleting` first, the engine objects are dropped only if they
/// carry hepdb's mark (idempotently), and the row goes last. Running it again finishes the job.
async fn delete_database(
    store: &Store,
    settings: &Settings,
    id: DatabaseId,
) -> anyhow::Result<Value> {
    let db = store.mark_deleting(id).await?.context("no such database")?;
    let names = db
        .names()
        .context("stored names are malformed; refusing to run DDL")?;
    let engine = db.engine();
    let driver = EngineDriver::from_settings(engine, settings.engines.get(engine))?;
    driver.drop_owned(&Target { id, names }).await?;
    store.remove_deleted(id).await?;
    Ok(json!({ "id": id, "deleted": true, "engine": engine, "db_name": db.db_name }))
}
