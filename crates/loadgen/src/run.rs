//! The load driver: `concurrency` tasks repeat one operation until a duration or a count is
//! reached, recording each latency (µs) in an HDR histogram and each completion in a
//! throughput series of 100 ms ticks.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// The resolution of the throughput series: short runs (a count of slow creates) still have
/// a shape.
pub const TICK: Duration = Duration::from_millis(100);

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Duration(Duration),
    Count(u64),
}

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    pub latency_us: Histogram<u64>,
    /// Completions in each [`TICK`] of the run.
    pub per_tick: Vec<u64>,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Measured {
    pub fn ok(&self) -> u64 {
        self.latency_us.len()
    }

    pub fn rps(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latency_us.max() as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Runs `op(worker, sequence)` from `concurrency` tasks. Errors are counted by their message
/// (keep messages short and low-cardinality: a status and a code).
pub async fn run<F, Fut>(concurrency: usize, limit: Limit, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latency = histogram();
                let mut per_tick: Vec<u64> = vec![];
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let done = match limit {
                        Limit::Count(c) => n >= c,
                        Limit::Duration(d) => started.elapsed() >= d,
                    };
                    if done {
                        break;
                    }
                    let t = Instant::now();
                    match op(worker, n).await {
                        Ok(()) => {
                            latency.saturating_record(t.elapsed().as_micros() as u64);
                            let tick = (started.elapsed().as_millis() / TICK.as_millis()) as usize;
                            if per_tick.len() <= tick {
                                per_tick.resize(tick + 1, 0);
                            }
                            per_tick[tick] += 1;
                        }
                        Err(e) => *errors.entry(e).or_default() += 1,
                    }
                }
                (latency, per_tick, errors)
            })
        })
        .collect();
    let mut total = Measured {
        latency_us: histogram(),
        per_tick: vec![],
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (latency, per_tick, errors) = t.await.expect("load task");
        total.latency_us.add(&latency).expect("same bounds");
        if total.per_tick.len() < per_tick.len() {
            total.per_tick.resize(per_tick.len(), 0);
        }
        for (i, n) in per_tick.into_iter().enumerate() {
            total.per_tick[i] += n;
        }
        for (e, n) in errors {
            *total.errors.entry(e).or_default() += n;
        }
    }
    total.elapsed = started.elapsed();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn a_counted_run_does_exactly_that_many_operations() {
        let m = run(4, Limit::Count(103), |_, n| async move {
            tokio::time::sleep(Duration::from_micros(200)).await;
            if n % 10 == 0 {
                Err("boom".into())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(m.ok(), 92);
        assert_eq!(m.errors["boom"], 11);
        assert_eq!(m.per_tick.iter().sum::<u64>(), 92);
        assert!(m.quantile_ms(0.5) >= 0.2, "{}", m.quantile_ms(0.5));
        let steps = [
            ("floor", vec![("a", 1.0), ("b", 2.0)]),
            ("hepdb", vec![("a", 3.0)]),
        ];
        let html = crate::report::html("t", &["s".into()], &[("x", &m)], &steps);
        assert_eq!(html.matches("<svg").count(), 3, "{html}");
        assert!(html.contains("<polyline") && html.contains("<rect"));
        assert!(!html.contains("chart not drawn"), "{html}");
        assert!(html.contains("p99.99") && html.contains("operations per second"));
    }
}
