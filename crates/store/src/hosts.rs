//! Engine hosts: registration from configuration, the operator's drain switch, and the
//! per-host totals `hepdb-admin host list` prints. Placement itself happens inside
//! [`Store::reserve_create`](crate::Store::reserve_create), under the same locks as the slot check.

use diesel::{OptionalExtension, prelude::*, upsert::excluded};
use diesel_async::{AsyncConnection, RunQueryDsl};
use hepdb_core::{Engine, settings::Host};

use crate::{
    Result, Store, StoreError,
    databases::slot_holding,
    models::EngineHost,
    schema::{databases, engine_hosts},
};

/// A host as configuration describes it.
#[derive(Debug, Clone)]
pub struct HostRegistration<'a> {
    pub name: &'a str,
    pub engine: Engine,
    pub public_host: &'a str,
    pub public_port: u16,
    pub capacity: u32,
}

impl<'a> From<Host<'a>> for HostRegistration<'a> {
    fn from(h: Host<'a>) -> Self {
        Self {
            name: h.name,
            engine: h.engine,
            public_host: &h.settings.public_host,
            public_port: h.settings.public_port,
            capacity: h.settings.capacity,
        }
    }
}

/// A host with what it holds (databases in any slot-holding state).
#[derive(Debug, Clone)]
pub struct HostSummary {
    pub host: EngineHost,
    /// Counted now, from the databases table.
    pub databases: i64,
    /// The count placement reads, kept on the host row by triggers: always equal to
    /// `databases` once no transaction is in flight (the tests hold it to that).
    pub placement_count: i64,
    pub size_bytes: i64,
}

impl Store {
    /// Records the configured hosts (endpoint and capacity follow configuration; the drain
    /// flag is kept). Refuses a host whose name metadata already knows for another engine.
    pub async fn register_hosts(&self, hosts: &[HostRegistration<'_>]) -> Result<()> {
        let mut conn = self.conn().await?;
        conn.transaction(async |c| {
            for h in hosts {
                let known: Option<String> = engine_hosts::table
                    .find(h.name)
                    .select(engine_hosts::engine)
                    .for_update()
                    .first(c)
                    .await
                    .optional()?;
                if known.as_deref().is_some_and(|e| e != h.engine.as_str()) {
                    return Err(StoreError::Guard(format!(
                        "host `{}` is registered for another engine; pick a new name",
                        h.name
                    )));
                }
                diesel::insert_into(engine_hosts::table)
                    .values((
                        engine_hosts::name.eq(h.name),
                        engine_hosts::engine.eq(h.engine.as_str()),
                        engine_hosts::public_host.eq(h.public_host),
                        engine_hosts::public_port.eq(i32::from(h.public_port)),
                        engine_hosts::capacity.eq(i32::try_from(h.capacity).unwrap_or(i32::MAX)),
                    ))
                    .on_conflict(engine_hosts::name)
                    .do_update()
                    .set((
                        engine_hosts::public_host.eq(excluded(engine_hosts::public_host)),
                        engine_hosts::public_port.eq(excluded(engine_hosts::public_port)),
                        engine_hosts::capacity.eq(excluded(engine_hosts::capacity)),
                        engine_hosts::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Registers every host of every enabled engine in `settings`.
    pub async fn register_configured_hosts(
        &self,
        settings: &hepdb_core::settings::EnginesSettings,
    ) -> Result<()> {
        let hosts: Vec<HostRegistration<'_>> = settings
            .enabled_hosts()
            .into_iter()
            .map(HostRegistration::from)
            .collect();
        self.register_hosts(&hosts).await
    }

    /// Stops (or resumes) new placements on a host. `false` if no such host.
    pub async fn set_drained(&self, name: &str, drained: bool) -> Result<bool> {
        self.set_drained_bound(name, drained, None).await
    }

    /// [`Store::set_drained`], binding a platform request's Idempotency-Key to the host in the
    /// same transaction. `false` (and nothing bound) when there is no such host.
    pub async fn set_drained_bound(
        &self,
        name: &str,
        drained: bool,
        binding: Option<crate::audit::Binding<'_>>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        Ok(conn
            .transaction(async |c| {
                let n = diesel::update(engine_hosts::table.find(name))
                    .set((
                        engine_hosts::drained.eq(drained),
                        engine_hosts::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(c)
                    .await?;
                if let (1, Some(b)) = (n, binding) {
                    b.bind(c, name).await?;
                }
                Ok::<_, diesel::result::Error>(n == 1)
            })
            .await?)
    }

    pub async fn engine_host(&self, name: &str) -> Result<Option<EngineHost>> {
        let mut conn = self.conn().await?;
        Ok(engine_hosts::table
            .find(name)
            .select(EngineHost::as_select())
            .first(&mut conn)
            .await
            .optional()?)
    }

    /// Every host with its database count and total measured size, by engine then name.
    pub async fn host_summaries(&self) -> Result<Vec<HostSummary>> {
        let mut conn = self.conn().await?;
        let hosts: Vec<(EngineHost, i64)> = engine_hosts::table
            .order((engine_hosts::engine, engine_hosts::name))
            .select((EngineHost::as_select(), engine_hosts::databases))
            .load(&mut conn)
            .await?;
        // SUM(bigint) is numeric in PostgreSQL; cast back rather than pull in a decimal type.
        let total_size = diesel::dsl::sql::<diesel::sql_types::BigInt>(
            "CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT)",
        );
        let totals: Vec<(String, i64, i64)> = databases::table
            .filter(databases::state.eq_any(slot_holding()))
            .group_by(databases::host)
            .select((databases::host, diesel::dsl::count_star(), total_size))
            .load(&mut conn)
            .await?;
        Ok(hosts
            .into_iter()
            .map(|(host, placement_count)| {
                let (databases, size_bytes) = totals
                    .iter()
                    .find(|(name, ..)| *name == host.name)
                    .map_or((0, 0), |(_, n, size)| (*n, *size));
                HostSummary {
                    host,
                    databases,
                    placement_count,
                    size_bytes,
                }
            })
            .collect())
    }
}
