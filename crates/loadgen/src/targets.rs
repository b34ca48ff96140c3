//! issue 14's targets, judged on a run's numbers: each applicable target with what the run got,
//! whether it was met, and for a missed one the step that holds it, with why that step costs
//! what it does. For create and rotate the step is read off the per-step breakdown against the
//! floor; list and reveal have no floor, and their one extra step is named.

/// One run's headline numbers.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What a run is, for choosing its targets.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// `list`, `reveal`, `create`, `rotate` or `mixed`.
    pub scenario: &'a str,
    pub postgres: bool,
    pub concurrency: usize,
}

/// Mean ms per operation by part: the floor's, then hepdb's.
pub type Parts<'a> = (&'a [(&'a str, f64)], &'a [(&'a str, f64)]);

/// One target's verdict.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub target: String,
    pub got: String,
    pub met: bool,
    /// For a missed target: the step that holds it and why.
    pub held_by: Option<String>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let met = if self.met { "met" } else { "MISSED" };
        write!(f, "target {}: {} ({met})", self.target, self.got)?;
        if let Some(held) = &self.held_by {
            write!(f, "; held by {held}")?;
        }
        Ok(())
    }
}

/// Why each part of [`crate::steps::PARTS`] costs more than the floor's, and what it buys.
fn why(part: &str, run: Run<'_>) -> &'static str {
    let postgres = run.postgres;
    match part {
        "engine DDL + login check" if run.scenario == "rotate" => {
            "the rotate proves the database is hepdb's (its claim in the ownership registry), \
             then changes the password through a routine that checks the claim and the \
             statement's deadline (so a late statement cannot undo a later change), then \
             logs in with the new password; the engine serializes password changes"
        }
        "intent commit" => {
            "one transaction that locks the account row (N parallel creates against k free \
             slots reserve exactly k) and the engine's host rows (no host is overfilled), \
             checks slots, bytes and name, and binds the Idempotency-Key; each create waits \
             for the one before it on the same account or host to commit"
        }
        "engine DDL + login check" if postgres => {
            "the role and the database are separate transactions, and the new database is \
             secured from a session inside it before the login proof opens a second one: \
             each first session in a fresh database builds its catalog caches"
        }
        "engine DDL + login check" => {
            "the ownership claim is an InnoDB commit (an fsync) made before the database \
             exists, so that hepdb never drops what it did not create, and the DDL runs \
             through procedures that check the claim and the statement's deadline"
        }
        "claim, lock, result commit" => {
            "the claim counts the attempt before the step (a delivery that dies in it still \
             counts toward the cap), the database's advisory lock keeps two jobs of one \
             database from interleaving, and the result commits with the job and the row \
             locked"
        }
        "broker, HTTP and the rest" => {
            "HTTP, the dispatcher's correlation of replies, and the worker's delivery \
             handling: two more processes' CPU on the same two cores"
        }
        "key lookup (hepdb only)" => {
            "the API key is looked up on every request, not cached, so that a disabled key \
             or a suspended account stops at once (a rotate reads its database in the same \
             statement)"
        }
        "audit entry (hepdb only)" => "the audit entry is durable before the answer",
        _ => "",
    }
}

/// The part where hepdb spends the most above the floor (all of a part the floor does not
/// have), with its excess in ms.
fn widest_gap<'a>(floor: &[(&str, f64)], hepdb: &[(&'a str, f64)]) -> Option<(&'a str, f64)> {
    hepdb
        .iter()
        .map(|(part, ms)| {
            let base = floor.iter().find(|(p, _)| p == part).map_or(0.0, |p| p.1);
            (*part, ms - base)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The targets that apply to `run`, judged. `parts` are the floor's and hepdb's mean ms per
/// operation by part, when the run measured them.
pub fn judge(
    run: Run<'_>,
    hepdb: Sample,
    raw: Sample,
    floor: Option<Sample>,
    parts: Option<Parts<'_>>,
) -> Vec<Verdict> {
    let held = || {
        let (f, h) = parts?;
        let (part, ms) = widest_gap(f, h)?;
        Some(format!(
            "{part} ({ms:+.2} ms against the floor's): {}",
            why(part, run)
        ))
    };
    let mut out = vec![];
    let mut push = |target: &str, got: String, met: bool, held_by: Option<String>| {
        out.push(Verdict {
            target: target.into(),
            got,
            met,
            held_by: if met { None } else { held_by },
        })
    };
    let of = |a: f64, b: f64| a / b.max(1e-9);
    match run.scenario {
        "list" if run.concurrency >= 16 => {
            let r = of(hepdb.rps, raw.rps);
            let why = "the gateway's CPU (HTTP, JSON, the key check) on the two cores that \
                       PostgreSQL and the load generator share";
            push(
                "list throughput >= 0.8 of raw",
                format!("{r:.2}"),
                r >= 0.8,
                Some(why.into()),
            );
        }
        "reveal" if run.concurrency >= 16 => {
            let r = of(hepdb.rps, raw.rps);
            let why = "the audit entry, durable before the answer: every reveal waits for a \
                       group commit (an fsync), which a point select never does";
            let ok = r >= 0.6 && hepdb.p99_ms <= 10.0;
            let got = format!("{r:.2}, p99 {:.1} ms", hepdb.p99_ms);
            push(
                "reveal throughput >= 0.6 of raw, p99 <= 10 ms",
                got,
                ok,
                Some(why.into()),
            );
        }
        "create" | "rotate" => {
            if let Some(floor) = floor {
                if run.concurrency == 1 {
                    let r = of(hepdb.p50_ms, floor.p50_ms);
                    push(
                        "p50 <= 1.25x the floor",
                        format!("{r:.2}x"),
                        r <= 1.25,
                        held(),
                    );
                } else if run.concurrency >= 16 {
                    let r = of(hepdb.rps, floor.rps);
                    push(
                        "throughput >= 0.8 of the floor",
                        format!("{r:.2}"),
                        r >= 0.8,
                        held(),
                    );
                }
            }
            if run.scenario == "create" && run.postgres && run.concurrency == 1 {
                let r = of(hepdb.p50_ms, raw.p50_ms);
                let why = format!(
                    "engine DDL + login check: {}",
                    why("engine DDL + login check", run)
                );
                push(
                    "PostgreSQL create p50 <= 1.3x raw",
                    format!("{r:.2}x"),
                    r <= 1.3,
                    Some(why),
                );
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64, p50_ms: f64, p99_ms: f64) -> Sample {
        Sample {
            rps,
            p50_ms,
            p99_ms,
        }
    }

    #[test]
    fn a_missed_create_names_the_part_furthest_above_the_floor() {
        let run = Run {
            scenario: "create",
            postgres: false,
            concurrency: 1,
        };
        let floor_parts = [("intent commit", 0.4), ("engine DDL + login check", 1.8)];
        let hepdb_parts = [
            ("intent commit", 1.0),
            ("engine DDL + login check", 4.0),
            ("audit entry (hepdb only)", 0.9),
        ];
        let v = judge(
            run,
            sample(100.0, 9.0, 20.0),
            sample(900.0, 1.0, 2.0),
            Some(sample(300.0, 3.0, 5.0)),
            Some((&floor_parts, &hepdb_parts)),
        );
        assert_eq!(v.len(), 1);
        assert!(!v[0].met);
        assert_eq!(v[0].got, "3.00x");
        let held = v[0].held_by.as_deref().unwrap();
        assert!(
            held.starts_with("engine DDL + login check (+2.20 ms"),
            "{held}"
        );
        assert!(held.contains("ownership claim"), "{held}");
        // A rotate's engine step is not a create's.
        let rotate = Run {
            scenario: "rotate",
            ..run
        };
        let v = judge(
            rotate,
            sample(100.0, 9.0, 20.0),
            sample(900.0, 1.0, 2.0),
            Some(sample(300.0, 3.0, 5.0)),
            Some((&floor_parts, &hepdb_parts)),
        );
        let held = v[0].held_by.as_deref().unwrap();
        assert!(held.contains("proves the database is hepdb's"), "{held}");
    }

    #[test]
    fn a_met_target_names_no_step_and_others_do_not_apply() {
        let run = Run {
            scenario: "rotate",
            postgres: false,
            concurrency: 16,
        };
        let v = judge(
            run,
            sample(900.0, 9.0, 20.0),
            sample(5000.0, 1.0, 2.0),
            Some(sample(1000.0, 3.0, 5.0)),
            None,
        );
        assert_eq!(
            v,
            [Verdict {
                target: "throughput >= 0.8 of the floor".into(),
                got: "0.90".into(),
                met: true,
                held_by: None,
            }]
        );
        let run = Run {
            scenario: "list",
            postgres: false,
            concurrency: 4,
        };
        assert!(
            judge(
                run,
                sample(1.0, 1.0, 1.0),
                sample(1.0, 1.0, 1.0),
                None,
                None
            )
            .is_empty()
        );
    }

    #[test]
    fn a_reveal_needs_both_its_throughput_and_its_p99() {
        let run = Run {
            scenario: "reveal",
            postgres: false,
            concurrency: 64,
        };
        let v = judge(
            run,
            sample(700.0, 2.0, 12.0),
            sample(1000.0, 1.0, 3.0),
            None,
            None,
        );
        assert!(!v[0].met, "p99 over 10 ms");
        assert!(
            v[0].to_string()
                .contains("(MISSED); held by the audit entry")
        );
        let v = judge(
            run,
            sample(700.0, 2.0, 9.0),
            sample(1000.0, 1.0, 3.0),
            None,
            None,
        );
        assert!(v[0].met);
    }
}
