//! hepdb's time per step, from its traces: every info-level span's duration is a histogram
//! on the gateway's and the worker's `/metrics` (`hepdb_span_duration_seconds{span}`). Scraped
//! before and after a run, the difference of each span's sum and count is that run's time in
//! that step.

use std::collections::BTreeMap;

const SUM: &str = "hepdb_span_duration_seconds_sum{";
const COUNT: &str = "hepdb_span_duration_seconds_count{";

/// Seconds and closings of each `(process, span)` so far.
#[derive(Debug, Default, Clone)]
pub struct Scrape(BTreeMap<(String, String), (f64, f64)>);

impl Scrape {
    /// How many `span`s `process` has closed so far.
    pub fn closed(&self, process: &str, span: &str) -> f64 {
        self.0
            .get(&(process.to_owned(), span.to_owned()))
            .map_or(0.0, |(_, count)| *count)
    }
}

/// One step of the run: where it ran, its span, how often per operation, and its mean
/// milliseconds per operation.
#[derive(Debug)]
pub struct Step {
    pub process: String,
    pub span: String,
    pub per_op: f64,
    pub ms_per_op: f64,
}

/// The span series of one Prometheus text exposition, `process` naming where it came from.
pub fn parse(process: &str, text: &str, into: &mut Scrape) {
    for line in text.lines() {
        let (rest, is_sum) = if let Some(r) = line.strip_prefix(SUM) {
            (r, true)
        } else if let Some(r) = line.strip_prefix(COUNT) {
            (r, false)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Some(span) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("span=\""))
            .and_then(|s| s.strip_suffix('"'))
        else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let e = into
            .0
            .entry((process.to_owned(), span.to_owned()))
            .or_default();
        if is_sum {
            e.0 = value;
        } else {
            e.1 = value;
        }
    }
}

/// Scrapes each `(process, url)`; a process that does not answer is left out.
pub async fn scrape(client: &reqwest::Client, targets: &[(&str, String)]) -> Scrape {
    let mut s = Scrape::default();
    for (process, url) in targets {
        if let Ok(resp) = client.get(url).send().await
            && let Ok(text) = resp.text().await
        {
            parse(process, &text, &mut s);
        }
    }
    s
}

/// The steps of the run between two scrapes, `ops` operations long, slowest first.
pub fn between(before: &Scrape, after: &Scrape, ops: u64) -> Vec<Step> {
    let ops = ops.max(1) as f64;
    let mut steps: Vec<Step> = after
        .0
        .iter()
        .filter_map(|(key, (sum, count))| {
            let (s0, c0) = before.0.get(key).copied().unwrap_or_default();
            let (sum, count) = (sum - s0, count - c0);
            (count > 0.0).then(|| Step {
                process: key.0.clone(),
                span: key.1.clone(),
                per_op: count / ops,
                ms_per_op: sum * 1000.0 / ops,
            })
        })
        .collect();
    steps.sort_by(|a, b| b.ms_per_op.total_cmp(&a.ms_per_op));
    steps
}

/// The parts of [`aligned`], in order.
pub const PARTS: [&str; 6] = [
    "intent commit",
    "engine DDL + login check",
    "claim, lock, result commit",
    "broker, HTTP and the rest",
    "key lookup (hepdb only)",
    "audit entry (hepdb only)",
];

/// A create's or rotate's time in parts that do not overlap, named like the pipeline floor's
/// steps, from its spans (mean ms per operation). hepdb's own steps, which the floor does not
/// have, come last.
pub fn aligned(steps: &[Step]) -> Vec<(&'static str, f64)> {
    let ms = |process: &str, span: &str| {
        steps
            .iter()
            .filter(|s| s.process == process && s.span == span)
            .map(|s| s.ms_per_op)
            .sum::<f64>()
    };
    let request = ms("gateway", "request");
    // A rotate reads its key and its database in one statement, as a reveal does: both count
    // as the key lookup.
    let key = ms("gateway", "metadata.find_key") + ms("gateway", "metadata.reveal_for_key");
    let audit = ms("gateway", "metadata.audit");
    // Every other metadata step of the gateway is the intent (and its idempotency check).
    let intent: f64 = steps
        .iter()
        .filter(|s| s.process == "gateway" && s.span.starts_with("metadata."))
        .map(|s| s.ms_per_op)
        .sum::<f64>()
        - key
        - audit;
    let engine = ms("worker", "engine");
    let result = ms("worker", "metadata.claim_job")
        + ms("worker", "metadata.hold")
        + (ms("worker", "metadata.run_locked") - engine);
    let rest = request - key - audit - intent - engine - result;
    PARTS
        .into_iter()
        .zip([intent, engine, result, rest, key, audit])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_steps_are_the_difference_of_two_scrapes() {
        let mut before = Scrape::default();
        parse(
            "worker",
            "# TYPE hepdb_span_duration_seconds histogram\n\
             hepdb_span_duration_seconds_bucket{span=\"job\",le=\"0.005\"} 1\n\
             hepdb_span_duration_seconds_sum{span=\"job\"} 0.5\n\
             hepdb_span_duration_seconds_count{span=\"job\"} 10\n",
            &mut before,
        );
        let mut after = Scrape::default();
        parse(
            "worker",
            "hepdb_span_duration_seconds_sum{span=\"job\"} 2.5\n\
             hepdb_span_duration_seconds_count{span=\"job\"} 110\n\
             hepdb_span_duration_seconds_sum{span=\"metadata.hold\"} 0.1\n\
             hepdb_span_duration_seconds_count{span=\"metadata.hold\"} 100\n\
             hepdb_http_requests_total{route=\"x\"} 7\n",
            &mut after,
        );
        let steps = between(&before, &after, 100);
        let got: Vec<(&str, f64, f64)> = steps
            .iter()
            .map(|s| (s.span.as_str(), s.per_op, s.ms_per_op))
            .collect();
        assert_eq!(got, [("job", 1.0, 20.0), ("metadata.hold", 1.0, 1.0)]);
    }

    #[test]
    fn aligned_parts_add_up_to_the_request() {
        let step = |process: &str, span: &str, ms: f64| Step {
            process: process.into(),
            span: span.into(),
            per_op: 1.0,
            ms_per_op: ms,
        };
        let steps = [
            step("gateway", "request", 12.0),
            step("gateway", "metadata.find_key", 0.5),
            step("gateway", "metadata.reserve_create", 2.0),
            step("gateway", "metadata.audit", 0.5),
            step("gateway", "publish", 1.0),
            step("worker", "metadata.claim_job", 1.0),
            step("worker", "metadata.hold", 0.5),
            step("worker", "metadata.run_locked", 5.0),
            step("worker", "engine", 4.0),
        ];
        let parts = aligned(&steps);
        assert_eq!(
            parts,
            [
                ("intent commit", 2.0),
                ("engine DDL + login check", 4.0),
                ("claim, lock, result commit", 2.5),
                ("broker, HTTP and the rest", 2.5),
                ("key lookup (hepdb only)", 0.5),
                ("audit entry (hepdb only)", 0.5),
            ]
        );
        assert_eq!(parts.iter().map(|p| p.1).sum::<f64>(), 12.0);
    }
}
