//! The engine work of the baselines, without hepdb: a create's or a rotate's DDL as the
//! engine's root, the login with what it set, and the cleanup of what a baseline made. Every
//! name starts `lb_<tag>_`, so a run removes exactly its own objects.

use mysql_async::prelude::Queryable;

use crate::Engine;

/// A root session on the engine.
pub enum Session {
    Maria(mysql_async::Conn),
    Pg(tokio_postgres::Client),
}

/// Who logs in after the DDL, and with what.
pub struct Login {
    user: String,
    database: Option<String>,
    password: String,
}

/// One baseline's engine work: which engine, create or rotate, and its names' tag.
pub struct EngineWork {
    pub engine: Engine,
    pub rotate: bool,
    root_url: String,
    tag: String,
}

impl EngineWork {
    pub fn new(engine: Engine, rotate: bool, root_url: &str, tag: &str) -> Self {
        Self {
            engine,
            rotate,
            root_url: root_url.to_owned(),
            tag: tag.to_owned(),
        }
    }

    /// What the DDL is, for the report.
    pub fn describe(&self) -> &'static str {
        match (self.engine, self.rotate) {
            (Engine::Mariadb, false) => "MariaDB CREATE DATABASE + CREATE USER + GRANT",
            (Engine::Mariadb, true) => "MariaDB ALTER USER",
            (Engine::Postgres, false) => "PostgreSQL CREATE ROLE + CREATE DATABASE",
            (Engine::Postgres, true) => "PostgreSQL ALTER ROLE",
        }
    }

    fn maria_opts(&self) -> anyhow::Result<mysql_async::OptsBuilder> {
        let opts = mysql_async::Opts::from_url(&self.root_url)?;
        Ok(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
    }

    pub async fn connect(&self) -> anyhow::Result<Session> {
        Ok(match self.engine {
            Engine::Mariadb => Session::Maria(mysql_async::Conn::new(self.maria_opts()?).await?),
            Engine::Postgres => {
                let (client, conn) =
                    tokio_postgres::connect(&self.root_url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                Session::Pg(client)
            }
        })
    }

    /// Before a rotate run: the lane's user, to rotate again and again.
    pub async fn prepare(&self, s: &mut Session, lane: usize) -> anyhow::Result<()> {
        if !self.rotate {
            return Ok(());
        }
        let tag = &self.tag;
        match s {
            Session::Maria(c) => {
                c.query_drop(format!(
                    "CREATE USER 'lb_{tag}_u{lane}'@'%' IDENTIFIED BY 'x'"
                ))
                .await?
            }
            Session::Pg(c) => {
                c.batch_execute(&format!("CREATE ROLE lb_{tag}_u{lane} LOGIN"))
                    .await?
            }
        }
        Ok(())
    }

    /// The DDL of operation `n` of `lane`; answers the login it makes possible.
    pub async fn ddl(&self, s: &mut Session, lane: usize, n: u64) -> Result<Login, String> {
        let tag = &self.tag;
        let password = format!("P{n:039}");
        let (user, database) = if self.rotate {
            (format!("lb_{tag}_u{lane}"), None)
        } else {
            (format!("lb_{tag}_{n}"), Some(format!("lb_{tag}_{n}")))
        };
        let statements = match (self.engine, self.rotate) {
            (Engine::Mariadb, true) => {
                vec![format!(
                    "ALTER USER '{user}'@'%' IDENTIFIED BY '{password}'"
                )]
            }
            (Engine::Mariadb, false) => vec![
                format!("CREATE DATABASE `{user}`"),
                format!("CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"),
                format!("GRANT ALL PRIVILEGES ON `lb\\_{tag}\\_{n}`.* TO '{user}'@'%'"),
            ],
            (Engine::Postgres, true) => vec![format!("ALTER ROLE {user} PASSWORD '{password}'")],
            // CREATE DATABASE cannot share an implicit transaction: one call each.
            (Engine::Postgres, false) => vec![
                format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"),
                format!("CREATE DATABASE {user} OWNER {user}"),
            ],
        };
        for sql in statements {
            match s {
                Session::Maria(c) => c.query_drop(sql).await.map_err(|e| e.to_string())?,
                Session::Pg(c) => c.batch_execute(&sql).await.map_err(|e| e.to_string())?,
            }
        }
        Ok(Login {
            user,
            database,
            password,
        })
    }

    /// Logs in as the tenant would, and out again.
    pub async fn login(&self, l: &Login) -> Result<(), String> {
        match self.engine {
            Engine::Mariadb => {
                let opts = self
                    .maria_opts()
                    .map_err(|e| e.to_string())?
                    .user(Some(&l.user))
                    .pass(Some(&l.password))
                    .db_name(l.database.as_deref());
                let c = mysql_async::Conn::new(opts)
                    .await
                    .map_err(|_| "login refused".to_owned())?;
                c.disconnect().await.map_err(|e| e.to_string())
            }
            Engine::Postgres => {
                let mut config: tokio_postgres::Config =
                    self.root_url.parse().map_err(|_| "root url".to_owned())?;
                config
                    .user(&l.user)
                    .password(&l.password)
                    .dbname(l.database.as_deref().unwrap_or("postgres"));
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|_| "login refused".to_owned())?;
                drop(client);
                let _ = conn.await;
                Ok(())
            }
        }
    }

    /// Drops every database and user of this tag.
    pub async fn clean(&self, s: &mut Session) -> anyhow::Result<()> {
        let pattern = format!("lb\\_{}\\_%", self.tag);
        match s {
            Session::Maria(c) => {
                let dbs: Vec<String> = c
                    .exec(
                        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
                        (&pattern,),
                    )
                    .await?;
                for db in dbs {
                    c.query_drop(format!("DROP DATABASE `{db}`")).await?;
                }
                let users: Vec<String> = c
                    .exec("SELECT User FROM mysql.user WHERE User LIKE ?", (&pattern,))
                    .await?;
                for u in users {
                    c.query_drop(format!("DROP USER '{u}'@'%'")).await?;
                }
            }
            Session::Pg(c) => {
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
            }
        }
        Ok(())
    }
}
