//! TLS for every PostgreSQL connection hepdb makes (metadata, and the worker's engine and
//! login-check connections), configured through the URL as libpq users expect:
//!
//! - `sslmode=require` asks for TLS. With rustls the server's certificate and name are always
//!   verified: there is no unverified mode (so `require` means what libpq's `verify-full`
//!   does).
//! - `sslrootcert=/path/ca.pem` trusts exactly the CAs in that PEM file (and implies
//!   `sslmode=require`); without it, the system's roots.
//!
//! Without either, connections are plain, as before.

use std::{path::PathBuf, str::FromStr, sync::Arc};

use tokio_postgres::{
    Client, Config, NoTls, Socket,
    config::SslMode,
    tls::{MakeTlsConnect, TlsConnect},
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Makes ring rustls's process-wide provider. Several crates in the tree turn on both of
/// rustls's providers, and a driver that asks rustls for the process default (mysql_async
/// does) then panics at its first TLS handshake. Idempotent; every driver constructor calls it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A URL's connection settings and, when it asks for TLS, the connector.
#[derive(Clone)]
pub struct PgTarget {
    pub config: Config,
    pub tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Parses a PostgreSQL URL (without echoing it: it carries a password).
pub fn parse(url: &str) -> Result<PgTarget, String> {
    install_crypto_provider();
    let (url, root) = hepdb_core::url::take_param(url, "sslrootcert");
    // libpq's verifying modes are what `require` is with rustls; tokio-postgres knows only
    // disable / prefer / require.
    let (url, mode) = hepdb_core::url::take_param(&url, "sslmode");
    let mut config = Config::from_str(&url).map_err(|e| format!("not a PostgreSQL URL ({e})"))?;
    match mode.as_deref() {
        // Unverified TLS is not offered: `prefer` and `allow` stay plaintext, as no sslmode.
        None | Some("disable" | "prefer" | "allow") => {
            config.ssl_mode(SslMode::Disable);
        }
        Some("require" | "verify-ca" | "verify-full") => {
            config.ssl_mode(SslMode::Require);
        }
        Some(other) => return Err(format!("sslmode={other} is not a PostgreSQL sslmode")),
    }
    if root.is_some() {
        if mode.as_deref() == Some("disable") {
            return Err("sslrootcert= with sslmode=disable".into());
        }
        config.ssl_mode(SslMode::Require);
    }
    let tls = match config.get_ssl_mode() {
        SslMode::Require => Some(connector(root.map(PathBuf::from))?),
        _ => None,
    };
    Ok(PgTarget { config, tls })
}

impl PgTarget {
    /// Connects, and drives the connection on a task of its own (ended when the client is
    /// dropped); the handle says when it has closed.
    pub async fn connect(
        &self,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        match &self.tls {
            Some(tls) => spawned(&self.config, tls.clone()).await,
            None => spawned(&self.config, NoTls).await,
        }
    }
}

/// A diesel-async connection to `target`, over TLS when it asks for it.
pub async fn diesel_connection(
    target: &PgTarget,
) -> diesel::ConnectionResult<diesel_async::AsyncPgConnection> {
    use diesel_async::AsyncPgConnection;
    let bad = |e: tokio_postgres::Error| diesel::ConnectionError::BadConnection(describe(&e));
    match &target.tls {
        Some(tls) => {
            let (client, connection) = target.config.connect(tls.clone()).await.map_err(bad)?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        }
        None => {
            let (client, connection) = target.config.connect(NoTls).await.map_err(bad)?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        }
    }
}

/// A driver error with its cause: tokio-postgres's own text is only "db error" or "error
/// performing TLS handshake". (Server messages and TLS causes carry no password.)
pub fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{e}: {}", db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

async fn spawned<T>(
    config: &Config,
    tls: T,
) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + Send,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = config.connect(tls).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

/// rustls, verifying against the CAs of `root` (a PEM file) or the system's.
fn connector(root: Option<PathBuf>) -> Result<MakeRustlsConnect, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match &root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert {}: no CA certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    // Explicitly ring: several crates in the tree turn on both of rustls's providers.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_unless_asked() {
        assert!(
            parse("postgres://u@127.0.0.1:5432/db")
                .unwrap()
                .tls
                .is_none()
        );
        assert!(
            parse("postgres://u@127.0.0.1:5432/db?sslmode=require")
                .unwrap()
                .tls
                .is_some()
        );
        // A CA file that is not there is named, and nothing connects without it.
        let err = parse("postgres://u:secret@h/db?sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(
            err.contains("/nonexistent/ca.pem") && !err.contains("secret"),
            "{err}"
        );
    }
}
