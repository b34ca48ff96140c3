//! The broker connection. `amqps://` is TLS (rustls, verified against the system's roots);
//! `cacertfile=/path/ca.pem` on the URL (hepdb's parameter, taken out before lapin sees the
//! URL) adds that CA to them.

use lapin::{Connection, ConnectionProperties, tcp::OwnedTLSConfig};

/// Connecting failed: the CA file, or the broker.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A CA for a plaintext URL: the operator asked for TLS and would not get it.
    #[error("amqp.url has cacertfile but is not amqps://")]
    NotTls,
    #[error("amqp.url cacertfile {0}: {1}")]
    CaFile(String, std::io::Error),
    #[error(transparent)]
    Broker(#[from] lapin::Error),
}

/// Connects to the broker at `url` (which may carry credentials: it is never logged).
pub async fn connect(
    url: &str,
    properties: ConnectionProperties,
) -> Result<Connection, ConnectError> {
    let (url, ca) = hepdb_core::url::take_param(url, "cacertfile");
    if ca.is_some() && !url.starts_with("amqps://") {
        return Err(ConnectError::NotTls);
    }
    let cert_chain = ca
        .map(|path| std::fs::read_to_string(&path).map_err(|e| ConnectError::CaFile(path, e)))
        .transpose()?;
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain,
    };
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_with_config(&url, properties, tls, runtime).await?)
}
