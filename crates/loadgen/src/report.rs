//! The printed summary and the self-contained HTML report: charts drawn by plotters as inline
//! SVG (latency by percentile, throughput over time, the per-step breakdown), no external
//! assets.

use std::fmt::Write;

use plotters::prelude::*;

use crate::run::{Measured, TICK};

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

/// The runs' colors, in order: hepdb first.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The "nines" of the percentile axis: x = -log10(1 - q), so 1 is p90, 2 p99, 4 p99.99.
const NINES: f64 = 4.0;

fn percentile_label(nines: f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-nines));
    let text = format!("{q:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("p{text}")
}

/// A log axis's label: only 1, 2 and 5 of each decade are named, so they do not crowd.
fn log_label(y: &f64) -> String {
    let decade = 10f64.powf(y.log10().floor());
    let lead = (y / decade).round();
    if [1.0, 2.0, 5.0].contains(&lead) && ((y / decade) - lead).abs() < 0.05 {
        let digits = if *y < 1.0 { 2 } else { 0 };
        format!("{y:.digits$}")
    } else {
        String::new()
    }
}

type Drawn = Result<(), String>;

/// The key of a line series in the legend: a short stroke of its color.
fn line_key(color: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
}

/// Draws the chart's legend box at `at`.
fn legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    at: SeriesLabelPosition,
) -> Drawn {
    drawn(
        chart
            .configure_series_labels()
            .position(at)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw(),
    )
}

fn drawn<E: std::fmt::Debug>(r: Result<impl Sized, E>) -> Drawn {
    r.map(drop).map_err(|e| format!("{e:?}"))
}

/// Each run's latency at every percentile up to p99.99 on one chart, HdrHistogram style: a log
/// percentile axis, a log latency axis.
fn percentiles_svg(runs: &[(&str, &Measured)]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 440)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let top = runs.iter().map(|(_, m)| m.max_ms()).fold(1.0f64, f64::max);
        let bottom = runs
            .iter()
            .filter(|(_, m)| m.ok() > 0)
            .map(|(_, m)| m.quantile_ms(0.0))
            .fold(top, f64::min)
            .max(0.01);
        let mut chart = ChartBuilder::on(&root)
            .caption("Latency by percentile", ("sans-serif", 18))
            .margin(12)
            .margin_right(40)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..NINES, (bottom * 0.8..top * 1.25).log_scale())
            .map_err(|e| format!("{e:?}"))?;
        drawn(
            chart
                .configure_mesh()
                .x_desc("percentile (log scale of 1 / (1 - q))")
                .y_desc("latency, ms (log scale)")
                .x_labels(NINES as usize + 1)
                .x_label_formatter(&|x| percentile_label(*x))
                .y_labels(40)
                .y_label_formatter(&log_label)
                .draw(),
        )?;
        for (i, (label, m)) in runs.iter().enumerate() {
            if m.ok() == 0 {
                continue;
            }
            let color = COLORS[i % COLORS.len()];
            let points = (0..=200).map(|k| {
                let nines = NINES * f64::from(k) / 200.0;
                let q = 1.0 - 10f64.powf(-nines);
                (nines, m.quantile_ms(q).max(bottom))
            });
            let series = chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| format!("{e:?}"))?;
            series.label(*label).legend(line_key(color));
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        drawn(root.present())?;
    }
    Ok(svg)
}

/// Completed operations per second of each run on shared axes, by 100 ms tick. Only whole
/// ticks: the last, partial one would look like a fall to zero.
/// A run's throughput line, as (seconds into the run, operations per second): each whole
/// tick's rate at the end of that tick (a partial last tick would draw a false fall); a run
/// shorter than one tick (a fast baseline) as its mean rate over its length.
fn throughput_points(m: &Measured) -> Vec<(f64, f64)> {
    let per_second = 1000.0 / TICK.as_millis() as f64;
    let ticks = (m.elapsed.as_millis() / TICK.as_millis()) as usize;
    let whole = &m.per_tick[..m.per_tick.len().min(ticks)];
    if whole.is_empty() {
        let secs = m.elapsed.as_secs_f64().max(1e-3);
        let rate = m.per_tick.iter().sum::<u64>() as f64 / secs;
        return vec![(0.0, rate), (secs, rate)];
    }
    whole
        .iter()
        .enumerate()
        .map(|(t, n)| ((t as f64 + 1.0) / per_second, *n as f64 * per_second))
        .collect()
}

fn throughput_svg(runs: &[(&str, &Measured)]) -> Result<String, String> {
    let per_second = 1000.0 / TICK.as_millis() as f64;
    let drawn_runs: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(label, m)| (*label, throughput_points(m)))
        .collect();
    let seconds = drawn_runs
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(x, _)| *x))
        .fold(1.0 / per_second, f64::max);
    let peak = drawn_runs
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 360)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput over the run", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..seconds, 0f64..peak * 1.1)
            .map_err(|e| format!("{e:?}"))?;
        drawn(
            chart
                .configure_mesh()
                .x_desc("seconds into the run")
                .y_desc("operations per second")
                .draw(),
        )?;
        for (i, (label, points)) in drawn_runs.into_iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let series = chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| format!("{e:?}"))?;
            series.label(label).legend(line_key(color));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        drawn(root.present())?;
    }
    Ok(svg)
}

/// Bars of mean milliseconds per operation, one per side (the floor, hepdb), stacked by step.
fn steps_svg(sides: &[(&str, Vec<(&str, f64)>)]) -> Result<String, String> {
    let mut steps: Vec<&str> = vec![];
    for (_, parts) in sides {
        for (step, _) in parts {
            if !steps.contains(step) {
                steps.push(step);
            }
        }
    }
    let top = sides
        .iter()
        .map(|(_, parts)| parts.iter().map(|(_, ms)| ms.max(0.0)).sum::<f64>())
        .fold(0.1f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 380)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        let names: Vec<String> = sides.iter().map(|(n, _)| (*n).to_owned()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption("Where an operation's time goes", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5f64..sides.len() as f64 + 1.5, 0f64..top * 1.1)
            .map_err(|e| format!("{e:?}"))?;
        drawn(
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(sides.len())
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        names.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_desc("mean ms per operation")
                .draw(),
        )?;
        for (k, step) in steps.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let bars: Vec<Rectangle<(f64, f64)>> = sides
                .iter()
                .enumerate()
                .filter_map(|(i, (_, parts))| {
                    let below: f64 = parts
                        .iter()
                        .take_while(|(s, _)| s != step)
                        .map(|(_, ms)| ms.max(0.0))
                        .sum();
                    let ms = parts.iter().find(|(s, _)| s == step)?.1.max(0.0);
                    let x = i as f64;
                    Some(Rectangle::new(
                        [(x - 0.3, below), (x + 0.3, below + ms)],
                        color.filled(),
                    ))
                })
                .collect();
            let series = chart.draw_series(bars).map_err(|e| format!("{e:?}"))?;
            series.label(*step).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        drawn(root.present())?;
    }
    Ok(svg)
}

/// The report: the summary, then the charts (inline SVG drawn by plotters, no external
/// assets). `steps` are the per-step breakdowns to stack, by side (empty: no such chart).
pub fn html(
    title: &str,
    summary: &[String],
    runs: &[(&str, &Measured)],
    steps: &[(&str, Vec<(&str, f64)>)],
) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = format!(
        "<!doctype html><meta charset=utf-8><title>{t}</title>\
         <body style=\"font-family:sans-serif;max-width:900px;margin:auto\"><h1>{t}</h1>",
        t = esc(title)
    );
    let mut charts = vec![percentiles_svg(runs), throughput_svg(runs)];
    if !steps.is_empty() {
        charts.push(steps_svg(steps));
    }
    for chart in charts {
        match chart {
            Ok(svg) => {
                let _ = write!(out, "<figure style=\"margin:0 0 24px\">{svg}</figure>");
            }
            Err(e) => {
                let _ = write!(out, "<p>chart not drawn: {}</p>", esc(&e));
            }
        }
    }
    let _ = write!(out, "<pre>{}</pre></body>", esc(&summary.join("\n")));
    out
}

/// Resident memory of one process, in kB: now, and its peak since it started (the kernel's
/// high-water mark), which no sampling can miss.
#[derive(Debug, Clone, Copy)]
pub struct Resident {
    pub pid: u32,
    pub now_kb: u64,
    pub peak_kb: u64,
}

/// The resident memory of each running process with this command name.
pub fn resident(name: &str) -> Vec<Resident> {
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
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Resident {
            pid,
            now_kb: field("VmRSS:")?,
            peak_kb: field("VmHWM:")?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use hdrhistogram::Histogram;

    use super::{throughput_points, throughput_svg};
    use crate::run::Measured;

    fn measured(per_tick: Vec<u64>, elapsed_ms: u64) -> Measured {
        Measured {
            latency_us: Histogram::new(3).unwrap(),
            per_tick,
            errors: BTreeMap::new(),
            elapsed: Duration::from_millis(elapsed_ms),
        }
    }

    /// A run shorter than one tick still gets its line (its mean rate over its length), and a
    /// longer run's partial last tick is left out rather than drawn as a fall.
    #[test]
    fn every_run_has_a_throughput_line() {
        let short = measured(vec![40], 50);
        assert_eq!(throughput_points(&short), [(0.0, 800.0), (0.05, 800.0)]);
        let long = measured(vec![10, 12, 3], 250);
        assert_eq!(throughput_points(&long), [(0.1, 100.0), (0.2, 120.0)]);
        let svg = throughput_svg(&[("raw", &short), ("hepdb", &long)]).unwrap();
        assert!(svg.contains("raw") && svg.contains("hepdb"));
    }
}
