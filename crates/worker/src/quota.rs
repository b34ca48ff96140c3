//! The quota watcher: measures every database with one query per engine host, stores the
//! sizes, moves databases between `active` and `over_quota` by their account's total, and
//! applies each change on the engine through an access job run here and now.

use hepdb_core::AccountId;
use hepdb_store::StoreError;
use serde::Serialize;

use crate::{
    host_gate::HostGate,
    jobs::{JobContext, run_access},
};

/// The name under which the watcher claims its interval in metadata.
pub const PERIODIC_NAME: &str = "quota-watcher";
/// The advisory lock key that keeps two passes from overlapping ("hepdbquo").
pub const LEASE_KEY: i64 = 0x6865_7064_6271_756f;

#[derive(Debug, Default, Serialize)]
pub struct QuotaReport {
    /// Per host: databases measured.
    pub measured: Vec<Measured>,
    pub unreachable_hosts: Vec<String>,
    /// Databases their (reachable) host did not measure this pass; each keeps its last size.
    /// The longest-unmeasured of each host, up to `hepdb_store::quota::UNMEASURED_SAMPLE`.
    pub unmeasured: Vec<hepdb_store::quota::Unmeasured>,
    /// How many were not measured in all.
    pub unmeasured_total: usize,
    pub changes: Vec<Change>,
}

#[derive(Debug, Serialize)]
pub struct Measured {
    pub host: String,
    pub databases: usize,
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct Change {
    pub database: String,
    pub account: String,
    pub from: &'static str,
    pub to: &'static str,
    /// Whether the engine now matches (`false`: its access job failed and will be retried by
    /// the reconciler).
    pub applied: bool,
}

/// One pass over every host this worker has configured; transitions for `account` only, or
/// for every account.
#[tracing::instrument(name = "quota.pass", skip_all)]
pub async fn pass(ctx: &JobContext, account: Option<AccountId>) -> Result<QuotaReport, StoreError> {
    let started = std::time::Instant::now();
    let mut report = QuotaReport::default();
    for (host, driver) in ctx.engines.iter() {
        match crate::jobs::bounded(ctx.engine_timeout, driver.sizes()).await {
            Ok(sizes) => {
                let record = ctx.store.record_sizes(host, &sizes).await?;
                report.measured.push(Measured {
                    host: host.to_owned(),
                    databases: record.measured,
                    bytes: sizes.iter().map(|(_, b)| b).sum(),
                });
                report.unmeasured.extend(record.unmeasured);
                report.unmeasured_total += record.unmeasured_total;
            }
            Err(error) => {
                tracing::warn!(%error, host, "quota watcher cannot measure the host");
                report.unreachable_hosts.push(host.to_owned());
            }
        }
    }
    if !report.unmeasured.is_empty() {
        let names: Vec<&str> = report
            .unmeasured
            .iter()
            .map(|u| u.db_name.as_str())
            .collect();
        tracing::warn!(
            alert = true,
            count = report.unmeasured_total,
            longest_unmeasured = ?names,
            max_passes = ctx.max_unmeasured_passes,
            "quota watcher could not measure some databases; they keep their last size, and \
             count as over quota after max_unmeasured_passes passes in a row"
        );
    }
    let transitions = ctx
        .store
        .quota_transitions(account, ctx.max_unmeasured_passes)
        .await?;
    // A host that could not be measured, or fails an access job, is not tried again in this
    // pass: its jobs stay pending, and the reconciler sends them through the broker later.
    let mut gate = HostGate::with_down(report.unreachable_hosts.iter().cloned());
    for t in transitions {
        let applied = gate.check(&t.host).is_ok() && {
            let applied = run_access(ctx, t.job, t.database).await.is_ok();
            if !applied {
                gate.action_failed(ctx, &t.host).await;
            }
            applied
        };
        tracing::info!(database = %t.database, from = t.from.as_str(), to = t.to.as_str(), applied, "quota state changed");
        report.changes.push(Change {
            database: t.database.to_text(),
            account: t.account,
            from: t.from.as_str(),
            to: t.to.as_str(),
            applied,
        });
    }
    metrics::histogram!("hepdb_quota_pass_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    Ok(report)
}
