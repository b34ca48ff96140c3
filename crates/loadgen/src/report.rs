//! The printed summary and the self-contained HTML report (inline SVG, no external assets).

use std::fmt::Write;

use crate::run::Measured;

pub fn line(label: &str, m: &Measured) -> String {
    let errors: u64 = m.errors.values().sum();
    format!(
        "{label:<9} {:>7} ok {:>6} errors {:>10.1} req/s  p50 {:>8.2} ms  p95 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        m.ok(),
        errors,
        m.rps(),
        m.quantile_ms(0.50),
        m.quantile_ms(0.95),
        m.quantile_ms(0.99),
        m.max_ms()
    )
}

/// Bars of the latency histogram on log-spaced buckets (µs).
fn latency_svg(m: &Measured) -> String {
    let mut buckets: Vec<(u64, u64)> = vec![];
    let mut upper = 50u64;
    while upper < m.latency_us.max().max(1) * 2 {
        let lower = buckets.last().map_or(0, |(u, _)| *u);
        let count = m
            .latency_us
            .iter_recorded()
            .filter(|v| v.value_iterated_to() > lower && v.value_iterated_to() <= upper)
            .map(|v| v.count_at_value())
            .sum();
        buckets.push((upper, count));
        upper = upper * 3 / 2 + 1;
    }
    let peak = buckets.iter().map(|(_, c)| *c).max().unwrap_or(1).max(1);
    let width = 8 * buckets.len().max(1) + 40;
    let mut svg =
        format!(r#"<svg width="{width}" height="220" xmlns="http://www.w3.org/2000/svg">"#);
    for (i, (upper, count)) in buckets.iter().enumerate() {
        let h = 180 * count / peak;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="7" height="{h}" fill="steelblue"><title>≤ {:.2} ms: {count}</title></rect>"#,
            20 + 8 * i,
            190 - h,
            *upper as f64 / 1000.0
        );
    }
    svg.push_str(
        r#"<text x="20" y="212" font-size="11">latency, log scale (hover a bar)</text></svg>"#,
    );
    svg
}

fn throughput_svg(m: &Measured) -> String {
    let peak = m.per_second.iter().copied().max().unwrap_or(1).max(1);
    let step = 600 / m.per_second.len().max(1);
    let points: Vec<String> = m
        .per_second
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{},{}", 20 + step * i, 190 - 180 * n / peak))
        .collect();
    format!(
        r#"<svg width="640" height="220" xmlns="http://www.w3.org/2000/svg"><polyline fill="none" stroke="darkorange" stroke-width="2" points="{}"/><text x="20" y="212" font-size="11">requests per second over the run (peak {peak})</text></svg>"#,
        points.join(" ")
    )
}

pub fn html(title: &str, summary: &[String], runs: &[(&str, &Measured)]) -> String {
    let mut out = format!(
        "<!doctype html><meta charset=utf-8><title>{title}</title>\
         <body style=\"font-family:sans-serif\"><h1>{title}</h1><pre>{}</pre>",
        summary.join("\n")
    );
    for (label, m) in runs {
        let _ = write!(
            out,
            "<h2>{label}</h2><pre>{}</pre>{}{}",
            line(label, m),
            latency_svg(m),
            throughput_svg(m)
        );
    }
    out.push_str("</body>");
    out
}

/// Resident memory (kB) of each running process with this command name.
pub fn rss_kb(name: &str) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() != name {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((pid, kb))
    })
    .collect()
}
