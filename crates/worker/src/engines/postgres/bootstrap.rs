//! `hepdb-admin engine bootstrap postgres`: sets up (or upgrades in place) the least-privilege
//! provisioner, as the engine's root. Idempotent.

use hepdb_store::tls::PgTarget;
use tokio_postgres::Client;

use super::{Postgres, TEMPLATE, classify, config, ident, sql::LARGE_OBJECT_CREATORS};
use crate::engines::{Bootstrapped, EngineError};
use postgres_protocol::escape::escape_literal as literal;

async fn connect(target: &PgTarget) -> Result<(Client, tokio::task::JoinHandle<()>), EngineError> {
    target
        .connect()
        .await
        .map_err(|e| classify(&e, "connect as root"))
}

async fn run(c: &Client, what: &str, sql: &str) -> Result<(), EngineError> {
    c.batch_execute(sql).await.map_err(|e| classify(&e, what))
}

/// The large-object lock-down of one database (the template, or a database made before it).
fn large_objects_sql(prov: &str) -> String {
    format!(
        "REVOKE EXECUTE ON FUNCTION {LARGE_OBJECT_CREATORS} FROM PUBLIC; \
         GRANT EXECUTE ON FUNCTION {LARGE_OBJECT_CREATORS} TO {prov} WITH GRANT OPTION;"
    )
}

impl Postgres {
    /// Creates or updates the provisioner role named in `admin_url`, connecting with
    /// `root_url`: `CREATEDB` and `pg_read_all_stats`, `EXECUTE` on the `hepdb.*` role
    /// functions, never `CREATEROLE` (taken away from an earlier installation's provisioner).
    /// Also makes `hepdb_template`, closes the maintenance databases to tenants, and hands
    /// databases of an earlier installation (owned by their tenant role) to the provisioner.
    pub async fn bootstrap(root_url: &str, admin_url: &str) -> Result<Bootstrapped, EngineError> {
        let admin = config(admin_url)?.config;
        let (Some(name), Some(pass)) = (admin.get_user(), admin.get_password()) else {
            return Err(EngineError::Failed(
                "admin URL must carry a user and a password".into(),
            ));
        };
        let admin_db = admin.get_dbname().unwrap_or(name).to_owned();
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') || name.len() > 50 {
            return Err(EngineError::Failed(
                "provisioner user must be 1 to 50 of [A-Za-z0-9_]".into(),
            ));
        }
        let root_config = config(root_url)?;
        let (root, task) = connect(&root_config).await?;
        let prov = ident(name);
        let definer = ident(&format!("{name}_definer"));
        let exists = root
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&name],
            )
            .await
            .map_err(|e| classify(&e, "read role"))?
            .is_some();
        let verifier = postgres_protocol::password::scram_sha_256(pass);
        let verb = if exists { "ALTER" } else { "CREATE" };
        run(
            &root,
            "bootstrap provisioner",
            &format!(
                "{verb} ROLE {prov} WITH LOGIN NOCREATEROLE CREATEDB NOSUPERUSER NOREPLICATION \
                 NOBYPASSRLS CONNECTION LIMIT -1 PASSWORD {}",
                literal(&verifier)
            ),
        )
        .await?;
        let definer_exists = root
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&format!("{name}_definer")],
            )
            .await
            .map_err(|e| classify(&e, "read role"))?
            .is_some();
        let verb = if definer_exists { "ALTER" } else { "CREATE" };
        run(
            &root,
            "bootstrap definer",
            &format!(
                "{verb} ROLE {definer} WITH NOLOGIN CREATEROLE NOCREATEDB NOSUPERUSER \
                 NOREPLICATION NOBYPASSRLS; \
                 GRANT pg_read_all_stats TO {prov};"
            ),
        )
        .await?;
        let functions = include_str!("bootstrap.sql")
            .replace(":definer", &definer)
            .replace(":prov", &prov)
            .replace(":admin_db", &ident(&admin_db));
        run(&root, "install role functions", &functions).await?;
        Self::bootstrap_template(&root, &root_config, &prov).await?;
        let upgraded = Self::upgrade_databases(&root, &root_config, name).await?;
        let reserved_door = Self::reserve_connections(&root, &prov).await?;
        let max_connections: String = root
            .query_one("SELECT pg_catalog.current_setting('max_connections')", &[])
            .await
            .map_err(|e| classify(&e, "read connection settings"))?
            .get(0);
        drop(root);
        let _ = task.await;
        Ok(Bootstrapped {
            provisioner: name.to_owned(),
            upgraded_databases: upgraded,
            max_connections: max_connections.parse().unwrap_or(0),
            reserved_door,
        })
    }

    /// On PostgreSQL 16+, `reserved_connections` slots are kept for members of
    /// `pg_use_reserved_connections`: the provisioner becomes one, so tenants at their limits
    /// never take its last door. Returns whether such slots exist.
    async fn reserve_connections(root: &Client, prov: &str) -> Result<bool, EngineError> {
        let reserved: Option<String> = root
            .query_opt(
                "SELECT setting FROM pg_catalog.pg_settings WHERE name = 'reserved_connections'",
                &[],
            )
            .await
            .map_err(|e| classify(&e, "read connection settings"))?
            .map(|r| r.get(0));
        let Some(reserved) = reserved else {
            return Ok(false);
        };
        run(
            root,
            "reserve connections",
            &format!("GRANT pg_use_reserved_connections TO {prov}"),
        )
        .await?;
        Ok(reserved.parse::<u32>().unwrap_or(0) > 0)
    }

    /// `hepdb_template`: a copy of `template0` (which nobody can have changed) with large-object
    /// creation revoked from `PUBLIC`; nobody may connect to it.
    async fn bootstrap_template(
        root: &Client,
        root_config: &PgTarget,
        prov: &str,
    ) -> Result<(), EngineError> {
        let exists = root
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
                &[&TEMPLATE],
            )
            .await
            .map_err(|e| classify(&e, "read template"))?
            .is_some();
        let t = ident(TEMPLATE);
        if !exists {
            run(
                root,
                "create template",
                &format!("CREATE DATABASE {t} TEMPLATE template0"),
            )
            .await?;
        }
        run(
            root,
            "open template",
            &format!("ALTER DATABASE {t} WITH IS_TEMPLATE false ALLOW_CONNECTIONS true"),
        )
        .await?;
        let mut config = root_config.clone();
        config.config.dbname(TEMPLATE);
        let (c, task) = connect(&config).await?;
        let result = run(&c, "prepare template", &large_objects_sql(prov)).await;
        drop(c);
        let _ = task.await;
        result?;
        run(
            root,
            "close template",
            &format!(
                "ALTER DATABASE {t} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false; \
                 REVOKE ALL ON DATABASE {t} FROM PUBLIC"
            ),
        )
        .await
    }

    /// Tenant databases of an earlier installation were owned by their tenant role (or its
    /// holder, while restricted), which let the tenant change the database's settings and
    /// privileges. Hands each to the provisioner, keeping what the tenant had.
    async fn upgrade_databases(
        root: &Client,
        root_config: &PgTarget,
        prov: &str,
    ) -> Result<usize, EngineError> {
        let rows = root
            .query(
                "SELECT d.datname::text, r.rolname::text FROM pg_catalog.pg_database d \
                 JOIN pg_catalog.pg_roles r ON r.oid = d.datdba \
                 WHERE d.datname ~ '^um_[0-9a-f]{10}_[0-9]+$' \
                 AND r.rolname ~ '^dum_[0-9a-f]{10}_[0-9]+(_frozen)?$' \
                 AND pg_catalog.shobj_description(r.oid, 'pg_authid') LIKE 'hepdb:%'",
                &[],
            )
            .await
            .map_err(|e| classify(&e, "list databases to upgrade"))?;
        for row in &rows {
            let (db, owner): (String, String) = (row.get(0), row.get(1));
            let frozen = owner.ends_with("_frozen");
            let tenant = owner.trim_end_matches("_frozen");
            let rights = if frozen {
                "CONNECT"
            } else {
                "CONNECT, TEMPORARY, CREATE"
            };
            let (d, o, r) = (ident(&db), ident(&owner), ident(tenant));
            let mut config = root_config.clone();
            config.config.dbname(&db);
            let (c, task) = connect(&config).await?;
            // The `public` schema of PostgreSQL 15 belongs to whoever owns the database.
            let inside = format!(
                "DO $hepdb$ BEGIN \
                   IF EXISTS (SELECT 1 FROM pg_catalog.pg_namespace \
                              WHERE nspname = 'public' AND nspowner = 'pg_database_owner'::regrole) \
                   THEN ALTER SCHEMA public OWNER TO {o}; END IF; \
                 END $hepdb$; {} {}",
                large_objects_sql(&ident(prov)),
                if frozen {
                    String::new()
                } else {
                    format!("GRANT EXECUTE ON FUNCTION {LARGE_OBJECT_CREATORS} TO {r};")
                },
            );
            let result = run(&c, "upgrade database", &inside).await;
            drop(c);
            let _ = task.await;
            result?;
            run(
                root,
                "upgrade database",
                &format!(
                    "ALTER DATABASE {d} OWNER TO {}; REVOKE ALL ON DATABASE {d} FROM PUBLIC; \
                     GRANT {rights} ON DATABASE {d} TO {r};",
                    ident(prov)
                ),
            )
            .await?;
        }
        Ok(rows.len())
    }
}
