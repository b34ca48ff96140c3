//! What earlier test and load runs left on the local engines (the ones `.ci/services.sh`
//! starts, which only hepdb's own runs use). A tenant database, user or role with a generated
//! name (`um_<tag>_<n>`, `dum_<tag>_<n>`) is kept while some metadata database on the local
//! server still has an account with its tag (the `cargo xtask dev` stack's, say); every other
//! one was made by a run whose metadata is gone or about to go, and is dropped. Nothing without
//! a generated name is touched. Best effort: a failure is reported and ignored.

use std::{
    collections::HashSet,
    io::Write,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

/// The root password of the engines `.ci/services.sh` starts.
const ROOT_PW: &str = "hepdb-dev-root";

fn psql(port: u16, db: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .env("PGPASSWORD", ROOT_PW)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(["-d", db, "-Atq", "-c", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Feeds `script` to `program` on standard input; statement errors are not fatal.
fn feed(program: &mut Command, script: &str) -> anyhow::Result<()> {
    let mut child = program
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting an engine client")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(script.as_bytes())?;
    child.wait()?;
    Ok(())
}

/// The tag of a generated name (`um_<tag>_<n>` or `dum_<tag>_<n>`, `_frozen` allowed), if it
/// is one.
fn tag_of(name: &str) -> Option<&str> {
    let rest = name
        .strip_prefix("dum_")
        .or_else(|| name.strip_prefix("um_"))?;
    let (tag, _) = rest.split_once('_')?;
    let generated = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (tag.len() == 10 && generated).then_some(tag)
}

/// Drops the tenants on the local engines that no metadata database claims, once those that
/// `dropping` names are left out (they are about to go).
pub fn clean_engines(dropping: impl Fn(&str) -> bool) {
    match live_tags(dropping) {
        Ok(live) => drop_stale_tenants(&live),
        Err(e) => eprintln!("xtask: not cleaning the engines: {e:#}"),
    }
}

/// The account tags of every database on the local metadata server, except those `dropping`
/// names (stale test databases, about to go).
fn live_tags(dropping: impl Fn(&str) -> bool) -> anyhow::Result<HashSet<String>> {
    let dbs = psql(
        5432,
        "postgres",
        "SELECT datname FROM pg_database WHERE NOT datistemplate",
    )?;
    Ok(dbs
        .lines()
        .filter(|db| !db.is_empty() && !dropping(db))
        // Databases without an `accounts` table are not hepdb's: the query fails, and they
        // add nothing.
        .filter_map(|db| psql(5432, db, "SELECT db_tag FROM accounts").ok())
        .flat_map(|out| out.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|t| !t.is_empty())
        .collect())
}

/// Drops every tenant object on the local MariaDB, PostgreSQL and MongoDB engines whose tag is
/// not in `live`.
fn drop_stale_tenants(live: &HashSet<String>) {
    let ours = |name: &&str| tag_of(name).is_some_and(|t| !live.contains(t));
    let mut dropped = 0;
    match mariadb_names() {
        Ok((dbs, users)) => {
            let mut script = String::new();
            for db in dbs.iter().map(String::as_str).filter(ours) {
                script.push_str(&format!(
                    "DROP DATABASE IF EXISTS `{db}`;\nDELETE FROM hepdb.owners WHERE db_name = '{db}';\n"
                ));
                dropped += 1;
            }
            for user in users.iter().map(String::as_str).filter(ours) {
                script.push_str(&format!("DROP USER IF EXISTS '{user}'@'%';\n"));
            }
            if let Err(e) = feed(Command::new("mariadb").args(["-uroot", "--force"]), &script) {
                eprintln!("xtask: not cleaning MariaDB: {e:#}");
            }
        }
        Err(e) => eprintln!("xtask: not cleaning MariaDB: {e:#}"),
    }
    match postgres_names() {
        Ok((dbs, roles)) => {
            let mut script = String::new();
            for db in dbs.iter().map(String::as_str).filter(ours) {
                script.push_str(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE);\n"));
                dropped += 1;
            }
            // Holder roles first: a tenant role may not go while its holder is a member.
            let mut roles: Vec<&str> = roles.iter().map(String::as_str).filter(ours).collect();
            roles.sort_by_key(|r| !r.ends_with("_frozen"));
            for role in roles {
                script.push_str(&format!("DROP ROLE IF EXISTS \"{role}\";\n"));
            }
            let mut c = Command::new("psql");
            c.env("PGPASSWORD", ROOT_PW).args([
                "-h",
                "127.0.0.1",
                "-p",
                "5433",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ]);
            if let Err(e) = feed(&mut c, &script) {
                eprintln!("xtask: not cleaning the PostgreSQL engine: {e:#}");
            }
        }
        Err(e) => eprintln!("xtask: not cleaning the PostgreSQL engine: {e:#}"),
    }
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    if let Err(e) = mongo_drop_users(&live) {
        eprintln!("xtask: not cleaning MongoDB: {e:#}");
    }
    eprintln!("xtask: dropped {dropped} tenant databases left by earlier runs");
}

fn mariadb_names() -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let query = |sql: &str| -> anyhow::Result<Vec<String>> {
        let out = Command::new("mariadb")
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .context("running mariadb")?;
        if !out.status.success() {
            bail!("mariadb: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?
            .lines()
            .map(str::to_owned)
            .collect())
    };
    Ok((
        query(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'um\\_%'",
        )?,
        query("SELECT User FROM mysql.user WHERE User LIKE 'dum\\_%'")?,
    ))
}

fn postgres_names() -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let lines = |s: String| s.lines().map(str::to_owned).collect::<Vec<_>>();
    Ok((
        lines(psql(
            5433,
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'um\\_%'",
        )?),
        lines(psql(
            5433,
            "postgres",
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'dum\\_%'",
        )?),
    ))
}

/// MongoDB users (and their ownership claims) whose tag is not in `live`, through pymongo,
/// which the smongo stand-in brings (in its virtualenv). Databases are left: the stand-in's `dropDatabase` empties
/// the whole server.
fn mongo_drop_users(live: &[&str]) -> anyhow::Result<()> {
    let script = format!(
        r#"
import sys
from pymongo import MongoClient
live = set({live:?})
c = MongoClient("mongodb://root:{ROOT_PW}@127.0.0.1:27017/admin", serverSelectionTimeoutMS=3000)
users = c.admin.command("usersInfo")["users"]
for u in users:
    name = u["user"]
    parts = name.split("_")
    if name.startswith("dum_") and len(parts) >= 3 and len(parts[1]) == 10 and parts[1] not in live:
        c.admin.command("dropUser", name)
        c.hepdb.owners.delete_one({{"_id": name}})
"#
    );
    let venv =
        std::env::var("HEPDB_SMONGO_VENV").unwrap_or_else(|_| "/var/tmp/hepdb-smongo".into());
    let out = Command::new(std::path::Path::new(&venv).join("bin/python"))
        .args(["-c", &script])
        .output()
        .context("running smongo's Python (made by .ci/services.sh)")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
