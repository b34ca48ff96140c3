//! Benchmark (`cargo xtask bench`): the gateway's resident memory under a long run of requests
//! with nothing scraping `/metrics`, against its own level after a warm-up in the same run.
//! Request metrics (histograms) must be folded into their buckets whether or not anything
//! scrapes; before, every request grew the process by about 18 bytes. Not a pass/fail timing
//! test: `#[ignore]`d, run on demand.

use std::time::Instant;

use hepdb_testkit::*;

/// Resident set of this process (gateway, worker and load generator, all in-process), bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Sends `n` requests from `lanes` concurrent clients.
async fn burst(app: &TestApp, n: usize, lanes: usize) {
    let url = format!("{}/healthz", app.address);
    let tasks: Vec<_> = (0..lanes)
        .map(|_| {
            let (client, url) = (app.client.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..n / lanes {
                    let r = client.get(&url).send().await.unwrap();
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with `cargo xtask bench`"]
async fn soak_memory_stays_flat_without_a_scraper() {
    let n: usize = std::env::var("HEPDB_SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (lanes, step) = (32, 100_000);
    let app = spawn_app().await;
    // Warm-up: connection pools, allocator arenas, every metric's first series.
    burst(&app, step, lanes).await;
    let baseline = rss();
    let started = Instant::now();
    let mut sent = 0;
    let mut peak = baseline;
    while sent < n {
        burst(&app, step, lanes).await;
        sent += step;
        peak = peak.max(rss());
    }
    let end = rss();
    let mb = |b: u64| b as f64 / 1_048_576.0;
    eprintln!(
        "bench: soak: {sent} requests in {:?} ({:.0} req/s), no scraper; resident memory after \
         warm-up {:.1} MB (baseline), at the end {:.1} MB, peak {:.1} MB; ratio end/baseline = \
         {:.3}; growth {:.2} bytes per request",
        started.elapsed(),
        sent as f64 / started.elapsed().as_secs_f64(),
        mb(baseline),
        mb(end),
        mb(peak),
        end as f64 / baseline as f64,
        (end as f64 - baseline as f64) / sent as f64,
    );
}
