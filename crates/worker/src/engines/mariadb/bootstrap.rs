//! `hepdb-admin engine bootstrap mariadb`: sets up (or upgrades in place) the least-privilege
//! provisioner, as root. Idempotent.

use mysql_async::{Conn, prelude::Queryable};

use super::{MariaDb, classify, native_hash_of, opts, server_code};
use crate::engines::{Bootstrapped, CONNECT_TIMEOUT, EngineError, parse_mark};

/// ER_NONEXISTING_GRANT
const NO_SUCH_GRANT: u16 = 1141;

impl MariaDb {
    /// Creates or updates the provisioner named in `admin_url`, connecting with `root_url`:
    /// `ALL` on `um\_%`.*, the registry, `EXECUTE` on the `hepdb` procedures, and no global
    /// privilege (an earlier installation's `CREATE USER` and `CONNECTION ADMIN` are taken
    /// back). The procedures run as `<provisioner>_definer@localhost`, a locked account.
    pub async fn bootstrap(root_url: &str, admin_url: &str) -> Result<Bootstrapped, EngineError> {
        let admin = opts(admin_url)?;
        let (Some(name), Some(pass)) = (admin.user(), admin.pass()) else {
            return Err(EngineError::Failed(
                "admin URL must carry a user and a password".into(),
            ));
        };
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.len() > 60 {
            return Err(EngineError::Failed(
                "provisioner user must be 1 to 60 of [A-Za-z0-9_]".into(),
            ));
        }
        if pass.contains(['\'', '\\']) {
            return Err(EngineError::Failed(
                "provisioner password must be free of quotes and backslashes".into(),
            ));
        }
        let hash = native_hash_of(pass.as_bytes());
        let mut c = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts(root_url)?)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(classify(e, "connect as root")),
            Err(_) => {
                return Err(EngineError::Unavailable(
                    "connect as root: timed out".into(),
                ));
            }
        };
        let who = format!("'{name}'@'%'");
        let definer = format!("'{name}_definer'@'localhost'");
        let mut statements = vec![
            format!("CREATE USER IF NOT EXISTS {who} IDENTIFIED BY PASSWORD '{hash}'"),
            format!("ALTER USER {who} IDENTIFIED BY PASSWORD '{hash}'"),
            format!("CREATE USER IF NOT EXISTS {definer} ACCOUNT LOCK"),
            format!("ALTER USER {definer} ACCOUNT LOCK"),
            // KILL of tenant sessions, user management, tablespace sizes.
            format!("GRANT CREATE USER, CONNECTION ADMIN, PROCESS ON *.* TO {definer}"),
            format!("GRANT SELECT ON `um\\_%`.* TO {definer}"),
        ];
        statements.extend(
            include_str!("bootstrap.sql")
                .split("\n\n")
                .map(|chunk| {
                    chunk
                        .lines()
                        .filter(|l| !l.starts_with("--"))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().trim_end_matches(';').replace(":definer", &definer)),
        );
        statements.extend([
            format!("GRANT SELECT ON hepdb.owners TO {definer}"),
            format!("GRANT EXECUTE ON hepdb.* TO {definer}"),
            format!("GRANT ALL PRIVILEGES ON `um\\_%`.* TO {who} WITH GRANT OPTION"),
            format!("GRANT SELECT, INSERT, DELETE ON hepdb.owners TO {who}"),
            format!("GRANT EXECUTE ON hepdb.* TO {who}"),
        ]);
        for sql in &statements {
            c.query_drop(sql)
                .await
                .map_err(|e| classify(e, "bootstrap provisioner"))?;
        }
        // An earlier installation gave the provisioner global powers: take them back.
        match c
            .query_drop(format!(
                "REVOKE CREATE USER, CONNECTION ADMIN ON *.* FROM {who}"
            ))
            .await
        {
            Ok(()) => {}
            Err(e) if server_code(&e) == Some(NO_SUCH_GRANT) => {}
            Err(e) => return Err(classify(e, "revoke global privileges")),
        }
        let upgraded = Self::claim_marked_databases(&mut c).await?;
        let (max_connections, extra_port): (u32, u16) = c
            .query_first("SELECT @@max_connections, @@extra_port")
            .await
            .map_err(|e| classify(e, "read connection settings"))?
            .unwrap_or_default();
        let _ = c.disconnect().await;
        Ok(Bootstrapped {
            provisioner: name.to_owned(),
            upgraded_databases: upgraded,
            max_connections,
            reserved_door: extra_port != 0 && admin.tcp_port() == extra_port,
        })
    }

    /// An earlier installation proved ownership by the database comment, which the tenant can
    /// rewrite: claim each such database in the registry once, as it is now.
    async fn claim_marked_databases(c: &mut Conn) -> Result<usize, EngineError> {
        let rows: Vec<(String, String)> = c
            .query(
                "SELECT s.SCHEMA_NAME, s.SCHEMA_COMMENT FROM information_schema.SCHEMATA s \
                 WHERE s.SCHEMA_NAME REGEXP '^um_[0-9a-f]{10}_[0-9]+$' \
                 AND s.SCHEMA_COMMENT LIKE 'hepdb:%' \
                 AND NOT EXISTS (SELECT 1 FROM hepdb.owners o WHERE o.db_name = s.SCHEMA_NAME)",
            )
            .await
            .map_err(|e| classify(e, "list databases to upgrade"))?;
        let mut claimed = 0;
        for (db, mark) in rows {
            if parse_mark(&mark).is_none() {
                continue;
            }
            c.exec_drop(
                "INSERT IGNORE INTO hepdb.owners (db_name, mark) VALUES (?, ?)",
                (db, mark),
            )
            .await
            .map_err(|e| classify(e, "claim database"))?;
            claimed += 1;
        }
        Ok(claimed)
    }
}
