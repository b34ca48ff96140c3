//! Part of `cargo xtask bench`: the worker's background passes at a platform's scale. A
//! metadata database of its own gets 1,000,000 databases over 100,000 accounts
//! (`hepdb-load --seed-only`) on a host this run does not measure (no engine server here holds
//! a million schemas). `hepdb-admin quota refresh` and `hepdb-admin reconcile --dry-run` then
//! run over them as one-shot processes, each measured for wall time and peak resident memory
//! (the kernel's high-water mark, `VmHWM`). Baselines from the same run: `hepdb-admin migrate` on the
//! same database (what the binary needs to start and reach metadata) for memory, and the bare
//! per-account size aggregate over every database for time.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

const DATABASE: &str = "hepdb_bench_scale";

/// What the passes must stay under at this scale (the worker's limit in `deploy/` is 256 Mi).
const MEMORY_LIMIT_MB: f64 = 64.0;

/// Wall time and peak resident memory of one process run to its end.
struct Usage {
    wall: Duration,
    peak_mb: f64,
}

/// The kernel's high-water mark of a process's resident memory (`VmHWM`, kB).
fn high_water_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs `cmd` to its end, reading its resident high-water mark every few milliseconds (the
/// mark only grows, so the last reading before it exits is its peak but for what it allocates
/// in its last moments, which is teardown).
fn measure(cmd: &mut Command) -> anyhow::Result<Usage> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("spawn")?;
    let mut peak_kb = 0;
    let status = loop {
        if let Some(kb) = high_water_kb(child.id()) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(Usage {
        wall,
        peak_mb: peak_kb as f64 / 1024.0,
    })
}

pub fn passes_at_scale(bin: &Path, databases: u64) -> anyhow::Result<()> {
    let psql = |db: &str, sql: &str| crate::output(&mut crate::psql(db, sql)).map(drop);
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
    )?;
    psql("postgres", &format!("CREATE DATABASE {DATABASE}"))?;
    let url = format!("postgres://postgres@127.0.0.1:5432/{DATABASE}");
    let admin = |args: &[&str]| {
        let mut c = Command::new(bin.join("hepdb-admin"));
        c.args(args)
            .env("HEPDB__DEVELOPMENT", "true")
            .env("HEPDB__METADATA__URL", &url)
            .env("HEPDB__TELEMETRY__LOG_FILTER", "error");
        c
    };
    let baseline_memory = measure(&mut admin(&["migrate"]))?;
    psql(
        DATABASE,
        "INSERT INTO engine_hosts (name, engine, public_host, public_port, capacity) \
         VALUES ('scale', 'mariadb', '127.0.0.1', 3306, 2000000000)",
    )?;
    let seeded = Instant::now();
    crate::run(
        Command::new(bin.join("hepdb-load"))
            .args([
                "--seed-only",
                "--seed-host",
                "scale",
                "--metadata-url",
                &url,
            ])
            .args(["--scale", &databases.to_string()]),
    )?;
    eprintln!(
        "bench: {databases} databases seeded in {:.0} s",
        seeded.elapsed().as_secs_f64()
    );
    let baseline_time = measure(&mut crate::psql(
        DATABASE,
        "SELECT account_id, sum(size_bytes) FROM databases GROUP BY 1",
    ))?;
    let mut over = vec![];
    for (name, args) in [
        ("quota refresh", &["quota", "refresh"][..]),
        ("reconcile --dry-run", &["reconcile", "--dry-run"][..]),
    ] {
        let u = measure(&mut admin(args))?;
        eprintln!(
            "bench: {name} over {databases} databases: {:.2} s, peak {:.1} MB resident; \
             baseline: the bare per-account size aggregate {:.2} s, `hepdb-admin migrate` peak \
             {:.1} MB; ratios: time {:.2}, memory {:.2}",
            u.wall.as_secs_f64(),
            u.peak_mb,
            baseline_time.wall.as_secs_f64(),
            baseline_memory.peak_mb,
            u.wall.as_secs_f64() / baseline_time.wall.as_secs_f64(),
            u.peak_mb / baseline_memory.peak_mb,
        );
        if u.peak_mb > MEMORY_LIMIT_MB {
            over.push(format!("{name} peaked at {:.1} MB", u.peak_mb));
        }
    }
    psql(
        "postgres",
        &format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
    )?;
    if !over.is_empty() {
        bail!("over {MEMORY_LIMIT_MB} MB at {databases} databases: {over:?}");
    }
    Ok(())
}
