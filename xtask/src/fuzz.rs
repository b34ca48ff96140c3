//! `cargo xtask fuzz`: Schemathesis (from PyPI) against a running stack, from both OpenAPI
//! documents the gateway serves. Every check is on: no 5xx, every answer in the documents'
//! status codes, content types and schemas (the envelope included), bad input refused with a
//! 4xx, auth never ignored. Each run has a time budget, so the task ends in bounded time.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::{ROOT_URLS, cleanup, output, owned, psql, run, services, start_stack};

/// The version CI installs; a newer one is a deliberate upgrade.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Seconds each document is fuzzed for.
const BUDGET_SECS: &str = "90";

pub fn fuzz() -> anyhow::Result<()> {
    services()?;
    let st = schemathesis()?;
    // Its reports and caches go beside the virtualenv, not into the checkout.
    let work = st
        .parent()
        .and_then(|bin| bin.parent())
        .context("the virtualenv")?
        .join("work");
    std::fs::create_dir_all(&work)?;
    cleanup::clean_engines(|db| db == "hepdb_fuzz");
    let _ = output(&mut psql(
        "postgres",
        "DROP DATABASE IF EXISTS hepdb_fuzz WITH (FORCE)",
    ));
    let public = "127.0.0.1:18281";
    let platform = "127.0.0.1:18283";
    let env = owned(&[
        (
            "HEPDB__METADATA__URL",
            "postgres://postgres@127.0.0.1:5432/hepdb_fuzz",
        ),
        ("HEPDB__AMQP__QUEUE_PREFIX", "hepdb_fuzz"),
        ("HEPDB__GATEWAY__LISTEN", public),
        ("HEPDB__PLATFORM__LISTEN", platform),
        ("HEPDB__GATEWAY__METRICS_LISTEN", "127.0.0.1:18284"),
        ("HEPDB__WORKER__ADMIN_LISTEN", "127.0.0.1:18282"),
        ("HEPDB__ENGINES__POSTGRES__ENABLED", "true"),
        ("HEPDB__ENGINES__MONGO__ENABLED", "true"),
        ("HEPDB__TELEMETRY__LOG_FILTER", "warn"),
        // One key sends thousands of requests: with limits on, most would test the limiter
        // (which has its own test) rather than the API behind it.
        ("HEPDB__RATE_LIMIT__ENABLED", "false"),
    ]);
    let stack = start_stack(false, &env, &ROOT_URLS, "5", "1024")?;
    wait_ready(public)?;
    // The public API first: the platform run may suspend, drain and delete.
    let runs = [
        (
            format!("http://{public}/api/v1/db/openapi.json"),
            &stack.key,
        ),
        (
            format!("http://{platform}/platform/v1/openapi.json"),
            &stack.platform_token,
        ),
    ];
    let mut failed = Vec::new();
    for (document, credential) in runs {
        let status = Command::new(&st)
            .current_dir(&work)
            .arg("--config-file")
            .arg(crate::root().join("xtask/fuzz/schemathesis.toml"))
            .args(["run", &document])
            .args(["--checks", "all", "--max-time", BUDGET_SECS])
            .args(["--workers", "2", "--request-timeout", "30", "--seed", "1"])
            .args(["--header", &format!("Authorization: Bearer {credential}")])
            .env("NO_COLOR", "1")
            .status()
            .context("running schemathesis")?;
        if !status.success() {
            failed.push(document);
        }
    }
    drop(stack);
    if !failed.is_empty() {
        bail!("schemathesis found problems in {failed:?}");
    }
    Ok(())
}

/// Schemathesis in a virtualenv of its own (`HEPDB_FUZZ_VENV`, by default under /var/tmp so
/// that CI runs on one machine install it once).
fn schemathesis() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("HEPDB_FUZZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/hepdb-fuzz"));
    let st = venv.join("bin/st");
    let version = SCHEMATHESIS.rsplit("==").next().unwrap_or_default();
    let installed = Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if !installed {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", SCHEMATHESIS]))?;
    }
    Ok(st)
}

/// Waits until the gateway's `/readyz` answers 200: the broker and metadata are connected.
fn wait_ready(listen: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        if answers_200(listen, "/readyz") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the gateway at {listen} did not become ready")
}

fn answers_200(listen: &str, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(listen) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {listen}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}
