//! One layered configuration for every binary: built-in defaults (`defaults.toml`), then the
//! TOML file named by `HEPDB_CONFIG`, then `HEPDB__<SECTION>__<KEY>` environment variables.
//! Everything is checked at start, and an error names the setting and its variable.

use std::{collections::BTreeMap, fmt, net::SocketAddr};

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

use crate::{Engine, secret::MasterKey};

const DEFAULTS: &str = include_str!("defaults.toml");
/// The development master key of `defaults.toml`; binaries warn when it is in use.
pub const DEV_MASTER_KEY: &str = "aGVwZGItZGV2LW1hc3Rlci1rZXktbm90LXNlY3JldCE=";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Development mode (`HEPDB__DEVELOPMENT=true`): the only mode in which the binaries accept
    /// the development master key published in this repository. `cargo xtask` and the tests
    /// turn it on; nothing else should.
    #[serde(default)]
    pub development: bool,
    pub gateway: GatewaySettings,
    pub rate_limit: RateLimitSettings,
    pub platform: PlatformSettings,
    pub worker: WorkerSettings,
    pub metadata: MetadataSettings,
    pub amqp: AmqpSettings,
    pub crypto: CryptoSettings,
    pub engines: EnginesSettings,
    pub quota: QuotaSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Seconds between quota watcher passes, across all workers together (0: only
    /// `hepdb-admin quota refresh`).
    pub interval_secs: u64,
    /// Passes in a row a database may go unmeasured (its host answered, but not for it) before
    /// its account counts as over quota; until then it keeps its last size.
    pub max_unmeasured_passes: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub listen: String,
    /// Networks (comma-separated, `10.0.0.0/8`) whose `Forwarded` / `X-Forwarded-For` name
    /// the client: the ingress. Empty: the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: String,
    /// The one header those proxies write: `x-forwarded-for` (nginx and most ingresses) or
    /// `forwarded` (RFC 7239).
    pub client_address_header: String,
    /// `/metrics` (Prometheus), on a listener of its own: never the public one, so that the
    /// ingress does not expose it and a NetworkPolicy can open it to the scraper alone.
    pub metrics_listen: String,
    pub job_timeout_ms: u64,
    pub max_body_bytes: usize,
    pub workers: usize,
    /// On SIGTERM, how long in-flight requests may take to finish.
    pub shutdown_secs: u64,
}

/// The public API's rate limits, per gateway process (GCRA: a full minute's budget at once, then
/// one request per `60 / n` seconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub key_reads_per_minute: u32,
    pub account_reads_per_minute: u32,
    pub key_changes_per_minute: u32,
    pub account_changes_per_minute: u32,
    /// Refused authentications (missing, unknown, disabled keys) per client address: key
    /// guessing from one address is slowed, and those answers carry budget headers too.
    pub address_failures_per_minute: u32,
}

/// The platform API (the hosting platform's own services), served by the gateway binary on a
/// listener of its own that is never the public one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSettings {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// The admin port: `/healthz` and `/readyz` (port 0 picks a free one).
    pub admin_listen: String,
    /// On SIGTERM, how long running jobs may take to finish before they are handed back.
    pub shutdown_secs: u64,
    pub prefetch: u16,
    pub max_attempts: u32,
    /// Seconds between reconciler passes (0: no periodic pass, only `hepdb-admin reconcile`).
    pub reconcile_interval_secs: u64,
    /// A pending or running job untouched this long is sent again by the reconciler. Longer
    /// than the gateway's job timeout, so a live gateway settles its own jobs first.
    pub stale_job_secs: u64,
    /// The longest one engine step (a create, a rotate, an access change) may take before it
    /// counts as the engine being unavailable. Keep it below `stale_job_secs`, so that the
    /// reconciler never sends again a job whose step is still running.
    pub engine_timeout_secs: u64,
    /// Finished jobs are deleted this many days after they finished (0: kept). Their sealed
    /// passwords go as soon as the idempotency window has passed.
    pub job_retention_days: u32,
    /// The audit log keeps each month's entries until that month ended this many days ago
    /// (0: kept); the reconciler drops whole monthly partitions.
    pub audit_retention_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSettings {
    pub url: Secret,
    pub pool_size: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: Secret,
    pub queue_prefix: String,
    pub queue_expires_secs: u32,
    /// Declare the job queues as quorum queues (a RabbitMQ cluster in production).
    pub quorum_queues: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoSettings {
    /// Seals every new password, and opens what it sealed.
    pub master_key: Secret,
    /// Keys that only open (comma-separated base64): the keys a master-key rotation moves
    /// away from, kept until `hepdb-admin crypto rotate-master-key` has re-sealed everything.
    #[serde(default)]
    pub previous_master_keys: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnginesSettings {
    pub mariadb: EngineSettings,
    pub postgres: EngineSettings,
    pub mongo: EngineSettings,
}

impl EnginesSettings {
    pub fn get(&self, engine: Engine) -> &EngineSettings {
        match engine {
            Engine::Mariadb => &self.mariadb,
            Engine::Postgres => &self.postgres,
            Engine::Mongo => &self.mongo,
        }
    }

    pub fn get_mut(&mut self, engine: Engine) -> &mut EngineSettings {
        match engine {
            Engine::Mariadb => &mut self.mariadb,
            Engine::Postgres => &mut self.postgres,
            Engine::Mongo => &mut self.mongo,
        }
    }

    /// The engines this deployment offers.
    pub fn enabled(&self) -> impl Iterator<Item = Engine> + '_ {
        Engine::ALL.into_iter().filter(|e| self.get(*e).enabled)
    }
}

/// One engine: whether it is offered, and its servers. The single-host keys (`admin_url`,
/// `public_host`, `public_port`, `capacity`) describe one server named after the engine; a
/// `hosts` table, when present, replaces them with named servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "RawEngineSettings")]
pub struct EngineSettings {
    pub enabled: bool,
    pub single: HostSettings,
    pub hosts: BTreeMap<String, HostSettings>,
}

/// The file/env shape of [`EngineSettings`]: the single-host keys sit beside `enabled`. (Not
/// `#[serde(flatten)]`, which would lose the key path in error messages.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngineSettings {
    enabled: bool,
    #[serde(default)]
    admin_url: Option<Secret>,
    public_host: String,
    public_port: u16,
    capacity: u32,
    #[serde(default = "default_connection_limit")]
    tenant_connection_limit: u32,
    #[serde(default)]
    hosts: BTreeMap<String, HostSettings>,
}

impl From<RawEngineSettings> for EngineSettings {
    fn from(r: RawEngineSettings) -> Self {
        Self {
            enabled: r.enabled,
            single: HostSettings {
                admin_url: r.admin_url,
                public_host: r.public_host,
                public_port: r.public_port,
                capacity: r.capacity,
                tenant_connection_limit: r.tenant_connection_limit,
            },
            hosts: r.hosts,
        }
    }
}

/// One engine server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// The provisioner account's URL (carries its password). Only the worker and
    /// `hepdb-admin` need it; the gateway runs without it (see [`EnginesSettings::forget_credentials`]).
    #[serde(default)]
    pub admin_url: Option<Secret>,
    /// Host and port written into users' connection strings.
    pub public_host: String,
    pub public_port: u16,
    /// How many databases this server may hold; placement fills the emptiest first.
    pub capacity: u32,
    /// Sessions one tenant user may hold at once (MariaDB `MAX_USER_CONNECTIONS`, PostgreSQL
    /// `CONNECTION LIMIT`), so that no tenant can take the whole server.
    #[serde(default = "default_connection_limit")]
    pub tenant_connection_limit: u32,
}

fn default_connection_limit() -> u32 {
    DEFAULT_TENANT_CONNECTION_LIMIT
}

/// The default of [`HostSettings::tenant_connection_limit`].
pub const DEFAULT_TENANT_CONNECTION_LIMIT: u32 = 20;

/// A configured engine server with its name.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub name: &'a str,
    pub engine: Engine,
    pub settings: &'a HostSettings,
}

impl Host<'_> {
    /// The provisioner URL. Only the worker and `hepdb-admin` are given one.
    pub fn admin_url(&self) -> Result<&str, SettingsError> {
        self.settings
            .admin_url
            .as_ref()
            .map(Secret::expose)
            .ok_or_else(|| {
                SettingsError(format!(
                    "the {} host `{}` has no admin_url: the worker and hepdb-admin need the \
                     provisioner URL of every enabled host (HEPDB__ENGINES__{}__ADMIN_URL, or \
                     the host's entry in the hosts table)",
                    self.engine,
                    self.name,
                    self.engine.as_str().to_uppercase()
                ))
            })
    }
}

impl EngineSettings {
    /// This engine's servers: the `hosts` table, or the single host named after the engine.
    pub fn hosts(&self, engine: Engine) -> Vec<Host<'_>> {
        if self.hosts.is_empty() {
            vec![Host {
                name: engine.as_str(),
                engine,
                settings: &self.single,
            }]
        } else {
            self.hosts
                .iter()
                .map(|(name, settings)| Host {
                    name,
                    engine,
                    settings,
                })
                .collect()
        }
    }
}

impl EnginesSettings {
    /// Drops every provisioner URL: what the internet-facing gateway does right after loading
    /// its settings, so that it never holds an engine credential.
    pub fn forget_credentials(&mut self) {
        for engine in Engine::ALL {
            let e = self.get_mut(engine);
            e.single.admin_url = None;
            for host in e.hosts.values_mut() {
                host.admin_url = None;
            }
        }
    }

    /// Every server of every enabled engine.
    pub fn enabled_hosts(&self) -> Vec<Host<'_>> {
        self.enabled().flat_map(|e| self.get(e).hosts(e)).collect()
    }

    /// Every configured server, enabled engine or not, by name.
    pub fn host(&self, name: &str) -> Option<Host<'_>> {
        Engine::ALL
            .into_iter()
            .flat_map(|e| self.get(e).hosts(e))
            .find(|h| h.name == name)
    }
}

/// Whether `name` can name an engine host: 1-63 of `[a-z0-9_-]`, starting with a letter or
/// digit (it appears in metadata, logs and the operator CLI).
pub fn valid_host_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_filter: String,
    /// The OTLP/HTTP base address traces are exported to; `None` (or empty) turns export off.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    pub trace_sample_ratio: f64,
}

impl TelemetrySettings {
    /// The OTLP traces address, when export is on.
    pub fn otlp_traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim().trim_end_matches('/');
        (!base.is_empty()).then(|| format!("{base}/v1/traces"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Compact,
    Json,
}

/// A setting that holds a credential: readable by code, `[redacted]` in `Debug`.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A setting is missing or invalid; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct SettingsError(String);

fn invalid(key: &str, why: impl fmt::Display) -> SettingsError {
    let var = format!("HEPDB__{}", key.replace('.', "__").to_uppercase());
    SettingsError(format!("`{key}` ({var}) {why}"))
}

impl Settings {
    /// Reads defaults, `HEPDB_CONFIG` and the process environment.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(std::env::var("HEPDB_CONFIG").ok(), None)
    }

    /// Like [`Settings::load`], with the config file path and (for tests) the environment given.
    pub fn load_from(
        file: Option<String>,
        env: Option<config::Map<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file {
            builder = builder.add_source(File::new(&path, FileFormat::Toml).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("HEPDB")
                .separator("__")
                .try_parsing(true)
                .source(env),
        );
        let settings: Settings = builder
            .build()
            .and_then(Config::try_deserialize)
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    /// What the binaries check before they start: the development master key, published in
    /// this repository, is refused outside development mode.
    pub fn refuse_dev_key(&self) -> Result<(), SettingsError> {
        if self.crypto.is_dev_key() && !self.development {
            return Err(invalid(
                "crypto.master_key",
                "is the development key published in hepdb's repository: set a key of your own \
                 (hepdb-admin keygen), or HEPDB__DEVELOPMENT=true on a development machine",
            ));
        }
        Ok(())
    }

    /// Checks what serde cannot: addresses, URL schemes, the master key, ranges.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let limits = &self.rate_limit;
        if limits.enabled
            && [
                limits.key_reads_per_minute,
                limits.account_reads_per_minute,
                limits.key_changes_per_minute,
                limits.account_changes_per_minute,
                limits.address_failures_per_minute,
            ]
            .contains(&0)
        {
            return Err(invalid(
                "rate_limit",
                "every *_per_minute must be positive (turn limits off with rate_limit.enabled)",
            ));
        }
        if self.quota.max_unmeasured_passes == 0 {
            return Err(invalid("quota.max_unmeasured_passes", "must be at least 1"));
        }
        self.gateway
            .listen
            .parse::<SocketAddr>()
            .map_err(|_| invalid("gateway.listen", "must be an address like 127.0.0.1:8080"))?;
        let platform =
            self.platform.listen.parse::<SocketAddr>().map_err(|_| {
                invalid("platform.listen", "must be an address like 127.0.0.1:8081")
            })?;
        let metrics = self
            .gateway
            .metrics_listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                invalid(
                    "gateway.metrics_listen",
                    "must be an address like 127.0.0.1:9090",
                )
            })?;
        if metrics.port() != 0 && Some(metrics) == self.gateway.listen.parse().ok() {
            return Err(invalid(
                "gateway.metrics_listen",
                "must not be the public listener (gateway.listen)",
            ));
        }
        if platform.port() != 0 && Some(platform) == self.gateway.listen.parse().ok() {
            return Err(invalid(
                "platform.listen",
                "must not be the public listener (gateway.listen)",
            ));
        }
        self.worker
            .admin_listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                invalid(
                    "worker.admin_listen",
                    "must be an address like 127.0.0.1:9091",
                )
            })?;
        if self.gateway.job_timeout_ms == 0 {
            return Err(invalid("gateway.job_timeout_ms", "must be positive"));
        }
        if self.worker.engine_timeout_secs == 0 {
            return Err(invalid("worker.engine_timeout_secs", "must be positive"));
        }
        if self.worker.prefetch == 0 || self.worker.max_attempts == 0 {
            return Err(invalid(
                "worker.prefetch",
                "and worker.max_attempts must be positive",
            ));
        }
        if self.worker.stale_job_secs.saturating_mul(1000) <= self.gateway.job_timeout_ms {
            return Err(invalid(
                "worker.stale_job_secs",
                "must be longer than gateway.job_timeout_ms",
            ));
        }
        check_scheme(
            "metadata.url",
            &self.metadata.url,
            &["postgres", "postgresql"],
        )?;
        check_scheme("amqp.url", &self.amqp.url, &["amqp", "amqps"])?;
        if let Some(url) = self.telemetry.otlp_traces_url()
            && !url.starts_with("http://")
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// address (an OTLP/HTTP collector, usually on port 4318)",
            ));
        }
        if !(0.0..=1.0).contains(&self.telemetry.trace_sample_ratio) {
            return Err(invalid(
                "telemetry.trace_sample_ratio",
                "must be between 0 and 1",
            ));
        }
        let prefix = &self.amqp.queue_prefix;
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(invalid(
                "amqp.queue_prefix",
                "must be non-empty letters, digits, `_`, `.` or `-`",
            ));
        }
        self.crypto
            .master_key()
            .map_err(|e| invalid("crypto.master_key", e))?;
        let mut seen = std::collections::HashSet::new();
        for engine in Engine::ALL {
            let e = self.engines.get(engine);
            let schemes: &[&str] = match engine {
                Engine::Mariadb => &["mysql", "mariadb"],
                Engine::Postgres => &["postgres", "postgresql"],
                Engine::Mongo => &["mongodb"],
            };
            for host in e.hosts(engine) {
                let prefix = if e.hosts.is_empty() {
                    format!("engines.{engine}")
                } else {
                    format!("engines.{engine}.hosts.{}", host.name)
                };
                let key = |k: &str| format!("{prefix}.{k}");
                if !valid_host_name(host.name) {
                    return Err(invalid(
                        &prefix,
                        "names a host: use 1-63 of a-z, 0-9, `_` and `-`",
                    ));
                }
                if !seen.insert(host.name) {
                    return Err(invalid(
                        &prefix,
                        "repeats a host name used by another engine",
                    ));
                }
                let h = host.settings;
                if let Some(url) = &h.admin_url {
                    check_scheme(&key("admin_url"), url, schemes)?;
                }
                if h.public_host.trim().is_empty() {
                    return Err(invalid(&key("public_host"), "must not be empty"));
                }
                if h.public_port == 0 {
                    return Err(invalid(&key("public_port"), "must be a port number"));
                }
                if h.tenant_connection_limit == 0 || h.tenant_connection_limit > 10_000 {
                    return Err(invalid(
                        &key("tenant_connection_limit"),
                        "must be between 1 and 10000",
                    ));
                }
            }
        }
        if self.engines.enabled().next().is_none() {
            return Err(invalid(
                "engines.mariadb.enabled",
                "(or another engine) must be true",
            ));
        }
        Ok(())
    }
}

impl CryptoSettings {
    /// The current key with the previous ones.
    pub fn master_key(&self) -> Result<MasterKey, crate::secret::BadMasterKey> {
        let previous = self
            .previous_master_keys
            .as_ref()
            .map(|s| {
                s.expose()
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
            })
            .into_iter()
            .flatten();
        MasterKey::from_base64(self.master_key.expose())?.with_previous(previous)
    }

    /// Whether the development key from the built-in defaults is in use.
    pub fn is_dev_key(&self) -> bool {
        self.master_key.expose() == DEV_MASTER_KEY
    }
}

fn check_scheme(key: &str, url: &Secret, schemes: &[&str]) -> Result<(), SettingsError> {
    let ok = url
        .expose()
        .split_once("://")
        .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty());
    if ok {
        Ok(())
    } else {
        Err(invalid(key, format!("must be a {}:// URL", schemes[0])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<config::Map<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.gateway.listen, "127.0.0.1:8080");
        assert!(s.engines.mariadb.enabled);
        assert!(s.crypto.is_dev_key());
        assert_eq!(s.engines.enabled().collect::<Vec<_>>(), [Engine::Mariadb]);
    }

    #[test]
    fn the_gateway_can_forget_every_engine_credential() {
        let mut s = Settings::load_from(
            None,
            env(&[
                ("HEPDB__ENGINES__POSTGRES__ENABLED", "true"),
                (
                    "HEPDB__ENGINES__MONGO__HOSTS__M1__ADMIN_URL",
                    "mongodb://p:secret@m1/admin",
                ),
                ("HEPDB__ENGINES__MONGO__HOSTS__M1__PUBLIC_HOST", "m1"),
                ("HEPDB__ENGINES__MONGO__HOSTS__M1__PUBLIC_PORT", "27017"),
                ("HEPDB__ENGINES__MONGO__HOSTS__M1__CAPACITY", "10"),
            ]),
        )
        .unwrap();
        let every_host = |s: &Settings| -> Vec<bool> {
            Engine::ALL
                .into_iter()
                .flat_map(|e| s.engines.get(e).hosts(e))
                .map(|h| h.admin_url().is_ok())
                .collect()
        };
        assert!(every_host(&s).iter().all(|ok| *ok));
        s.engines.forget_credentials();
        assert!(every_host(&s).iter().all(|ok| !*ok));
        // What it still has is enough to validate and to place databases.
        s.validate().unwrap();
        let err = s.engines.enabled_hosts()[0].admin_url().unwrap_err();
        assert!(
            err.to_string()
                .contains("HEPDB__ENGINES__MARIADB__ADMIN_URL"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let s = Settings::load_from(
            None,
            env(&[
                ("HEPDB__GATEWAY__LISTEN", "0.0.0.0:9000"),
                ("HEPDB__ENGINES__MARIADB__PUBLIC_PORT", "3307"),
                ("HEPDB__ENGINES__POSTGRES__ENABLED", "true"),
                ("HEPDB__AMQP__QUEUE_PREFIX", "stack2"),
            ]),
        )
        .unwrap();
        assert_eq!(s.gateway.listen, "0.0.0.0:9000");
        assert_eq!(s.engines.mariadb.single.public_port, 3307);
        assert!(s.engines.postgres.enabled);
        assert_eq!(s.amqp.queue_prefix, "stack2");
    }

    #[test]
    fn unknown_keys_are_refused_by_name_from_the_file_and_the_environment() {
        let why = Settings::load_from(None, env(&[("HEPDB__QUOTA__INTERVAL", "5")]))
            .unwrap_err()
            .to_string();
        assert!(why.contains("interval"), "{why}");
        let dir = std::env::temp_dir().join(format!("hepdb-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("typo.toml");
        std::fs::write(&file, "[gateway]\njob_timeout = 5\n").unwrap();
        let why = Settings::load_from(Some(file.to_string_lossy().into_owned()), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(why.contains("job_timeout"), "{why}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_development_key_needs_development_mode() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let why = s.refuse_dev_key().unwrap_err().to_string();
        assert!(why.contains("HEPDB__CRYPTO__MASTER_KEY"), "{why}");
        let dev = Settings::load_from(None, env(&[("HEPDB__DEVELOPMENT", "true")])).unwrap();
        assert!(dev.refuse_dev_key().is_ok());
        let own = Settings::load_from(
            None,
            env(&[("HEPDB__CRYPTO__MASTER_KEY", &MasterKey::generate_base64())]),
        )
        .unwrap();
        assert!(own.refuse_dev_key().is_ok());
    }

    #[test]
    fn invalid_settings_name_the_variable() {
        let cases = [
            (
                "HEPDB__CRYPTO__MASTER_KEY",
                "c2hvcnQ=",
                "HEPDB__CRYPTO__MASTER_KEY",
            ),
            ("HEPDB__GATEWAY__LISTEN", "nope", "HEPDB__GATEWAY__LISTEN"),
            ("HEPDB__AMQP__URL", "http://x", "HEPDB__AMQP__URL"),
            (
                "HEPDB__ENGINES__MARIADB__ADMIN_URL",
                "pg://x",
                "HEPDB__ENGINES__MARIADB__ADMIN_URL",
            ),
            (
                "HEPDB__ENGINES__MARIADB__PUBLIC_PORT",
                "not-a-port",
                "public_port",
            ),
            (
                "HEPDB__TELEMETRY__OTLP_ENDPOINT",
                "collector:4317",
                "HEPDB__TELEMETRY__OTLP_ENDPOINT",
            ),
            (
                "HEPDB__TELEMETRY__TRACE_SAMPLE_RATIO",
                "1.5",
                "HEPDB__TELEMETRY__TRACE_SAMPLE_RATIO",
            ),
        ];
        for (var, value, named) in cases {
            let err = Settings::load_from(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{var}={value}: {err}");
        }
    }

    /// The platform API and /metrics never share the public listener.
    #[test]
    fn the_public_listener_is_the_public_apis_alone() {
        for var in ["HEPDB__PLATFORM__LISTEN", "HEPDB__GATEWAY__METRICS_LISTEN"] {
            let same = [
                ("HEPDB__GATEWAY__LISTEN", "0.0.0.0:8080"),
                (var, "0.0.0.0:8080"),
            ];
            let err = Settings::load_from(None, env(&same))
                .unwrap_err()
                .to_string();
            assert!(err.contains("public listener"), "{var}: {err}");
        }
    }

    #[test]
    fn trace_export_is_off_unless_an_endpoint_is_set() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        assert_eq!(s.telemetry.otlp_traces_url(), None);
        let s = Settings::load_from(None, env(&[("HEPDB__TELEMETRY__OTLP_ENDPOINT", "")])).unwrap();
        assert_eq!(s.telemetry.otlp_traces_url(), None);
        let s = Settings::load_from(
            None,
            env(&[("HEPDB__TELEMETRY__OTLP_ENDPOINT", "http://jaeger:4318/")]),
        )
        .unwrap();
        assert_eq!(
            s.telemetry.otlp_traces_url().as_deref(),
            Some("http://jaeger:4318/v1/traces")
        );
    }

    #[test]
    fn a_hosts_table_replaces_the_single_host() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let names: Vec<_> = s.engines.enabled_hosts().iter().map(|h| h.name).collect();
        assert_eq!(names, ["mariadb"]);

        let s = Settings::load_from(
            None,
            env(&[
                (
                    "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-A__ADMIN_URL",
                    "mysql://p:x@10.0.0.1:3306",
                ),
                (
                    "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-A__PUBLIC_HOST",
                    "a.db",
                ),
                (
                    "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-A__PUBLIC_PORT",
                    "3306",
                ),
                ("HEPDB__ENGINES__MARIADB__HOSTS__MARIA-A__CAPACITY", "10"),
                (
                    "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-B__ADMIN_URL",
                    "mysql://p:x@10.0.0.2:3306",
                ),
                (
                    "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-B__PUBLIC_HOST",
                    "b.db",
                ),
                (
                    "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-B__PUBLIC_PORT",
                    "3307",
                ),
                ("HEPDB__ENGINES__MARIADB__HOSTS__MARIA-B__CAPACITY", "20"),
            ]),
        )
        .unwrap();
        let hosts = s.engines.enabled_hosts();
        let got: Vec<_> = hosts
            .iter()
            .map(|h| (h.name, h.settings.public_port, h.settings.capacity))
            .collect();
        assert_eq!(got, [("maria-a", 3306, 10), ("maria-b", 3307, 20)]);
        assert_eq!(s.engines.host("maria-b").unwrap().engine, Engine::Mariadb);
        assert!(s.engines.host("mariadb").is_none());

        let err = Settings::load_from(
            None,
            env(&[(
                "HEPDB__ENGINES__MARIADB__HOSTS__MARIA-A__ADMIN_URL",
                "mysql://p:x@10.0.0.1:3306",
            )]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("public_host"), "{err}");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = Settings::load_from(None, env(&[])).unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hepdb-dev-provisioner"));
        assert!(!dbg.contains(DEV_MASTER_KEY));
    }
}
