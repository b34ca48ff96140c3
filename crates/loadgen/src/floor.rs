//! The pipeline floor: the durable steps a hepdb create or rotate is made of, bare, without
//! any hepdb code, in the same run at the same concurrency. The caller commits an intent in
//! PostgreSQL and publishes it (persistent, confirmed) to a durable queue. A bare consumer
//! takes it, runs the engine DDL, logs in with what it set, commits the result, acks, and
//! replies (confirmed) to the caller's reply queue, with the outcome. What hepdb adds above
//! this is its own. (The publish is the same mandatory, confirmed call hepdb makes:
//! `hepdb_queue::publish_confirmed`, a thin wrapper over lapin.)

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use futures_util::StreamExt;
use hepdb_queue::publish_confirmed;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
};
use tokio::sync::oneshot;

use crate::{
    engine::{EngineWork, Session},
    run::{Limit, Measured},
};

/// The floor's steps, as the report names them. The last is what the whole leaves over the
/// others: the broker's part (publish and confirm, which overlaps the consumer's start,
/// delivery, ack and the reply's way back).
pub const STEPS: [&str; 5] = [
    "intent commit",
    "engine DDL",
    "login check",
    "result commit",
    "broker: publish, deliver, reply",
];

/// Microseconds spent in each measured step of [`STEPS`], and in whole operations, summed
/// over every operation that got its reply (done or failed). The last step is what the whole
/// leaves over the others.
#[derive(Default)]
pub struct StepTimes {
    steps: [AtomicU64; 4],
    total: AtomicU64,
    ops: AtomicU64,
}

impl StepTimes {
    fn add(&self, step: usize, since: Instant) {
        self.steps[step].fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Mean milliseconds per operation of each step.
    pub fn per_op_ms(&self) -> Vec<(&'static str, f64)> {
        let ops = self.ops.load(Ordering::Relaxed).max(1) as f64;
        let ms = |us: u64| us as f64 / 1000.0 / ops;
        let steps: Vec<u64> = self
            .steps
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .collect();
        let rest = self
            .total
            .load(Ordering::Relaxed)
            .saturating_sub(steps.iter().sum());
        STEPS
            .iter()
            .zip(steps.into_iter().chain([rest]))
            .map(|(s, us)| (*s, ms(us)))
            .collect()
    }

    /// The same, in the parts hepdb's time is broken into (`steps::aligned`): the DDL and the
    /// login as one engine step, the result commit where hepdb claims, locks and records.
    pub fn aligned(&self) -> Vec<(&'static str, f64)> {
        let s = self.per_op_ms();
        vec![
            (crate::steps::PARTS[0], s[0].1),
            (crate::steps::PARTS[1], s[1].1 + s[2].1),
            (crate::steps::PARTS[2], s[3].1),
            (crate::steps::PARTS[3], s[4].1),
        ]
    }
}

/// Callers waiting for their operation's reply: whether it was done.
type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>>;

/// A lane's sessions on the consumer side: one engine session and one metadata session.
struct ConsumerLane {
    engine: tokio::sync::Mutex<Session>,
    metadata: tokio_postgres::Client,
}

async fn metadata(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs the floor: `concurrency` lanes until `limit`, with `work` as the engine step. Answers
/// the measurement and the time each step took.
pub async fn run(
    work: Arc<EngineWork>,
    metadata_url: &str,
    amqp_url: &str,
    concurrency: usize,
    limit: Limit,
    tag: &str,
) -> anyhow::Result<(Measured, Arc<StepTimes>)> {
    let table = format!("load_floor_{tag}");
    let callers = {
        let mut v = vec![];
        for _ in 0..concurrency {
            v.push(metadata(metadata_url).await?);
        }
        Arc::new(v)
    };
    // Shaped like a job row: an id, a state, a sealed password, a timestamp.
    callers[0]
        .batch_execute(&format!(
            "CREATE TABLE {table} (n bigint PRIMARY KEY, state text NOT NULL, \
             password_sealed bytea, updated_at timestamptz NOT NULL DEFAULT now())"
        ))
        .await?;
    let mut lanes = vec![];
    for lane in 0..concurrency {
        let mut engine = work.connect().await?;
        work.prepare(&mut engine, lane).await?;
        lanes.push(ConsumerLane {
            engine: tokio::sync::Mutex::new(engine),
            metadata: metadata(metadata_url).await?,
        });
    }
    let lanes = Arc::new(lanes);

    let conn = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let jobs_queue = format!("hepdb_load_floor.{tag}.jobs");
    let publisher = conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    publisher
        .queue_declare(
            jobs_queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let replies = conn.create_channel().await?;
    let reply_queue = replies
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .name()
        .to_string();
    let waiters: Waiters = Arc::default();
    let mut reply_stream = replies
        .basic_consume(
            reply_queue.as_str().into(),
            "floor-replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let w2 = waiters.clone();
    tokio::spawn(async move {
        // "<n> done" or "<n> failed".
        while let Some(Ok(d)) = reply_stream.next().await {
            let reply = String::from_utf8_lossy(&d.data).into_owned();
            let Some((n, state)) = reply.split_once(' ') else {
                continue;
            };
            let tx = n
                .parse::<u64>()
                .ok()
                .and_then(|n| w2.lock().expect("waiters").remove(&n));
            if let Some(tx) = tx {
                let _ = tx.send(state == "done");
            }
        }
    });

    let times = Arc::new(StepTimes::default());
    let consumer_channel = conn.create_channel().await?;
    consumer_channel
        .basic_qos(concurrency as u16, BasicQosOptions::default())
        .await?;
    consumer_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut deliveries = consumer_channel
        .basic_consume(
            jobs_queue.as_str().into(),
            "floor-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (w, l, t, tb, ch) = (
        work.clone(),
        lanes.clone(),
        times.clone(),
        table.clone(),
        consumer_channel.clone(),
    );
    tokio::spawn(async move {
        while let Some(Ok(d)) = deliveries.next().await {
            let (work, lanes, times, table, channel) =
                (w.clone(), l.clone(), t.clone(), tb.clone(), ch.clone());
            tokio::spawn(async move {
                let body = String::from_utf8_lossy(&d.data).into_owned();
                let Some((lane, n)) = body
                    .split_once(' ')
                    .and_then(|(l, n)| Some((l.parse::<usize>().ok()?, n.parse::<u64>().ok()?)))
                else {
                    return;
                };
                let me = &lanes[lane];
                let step = Instant::now();
                let login = work.ddl(&mut *me.engine.lock().await, lane, n).await;
                times.add(1, step);
                let step = Instant::now();
                let ok = match &login {
                    Ok(l) => work.login(l).await.is_ok(),
                    Err(_) => false,
                };
                times.add(2, step);
                let step = Instant::now();
                let mut state = if ok { "done" } else { "failed" };
                let recorded = me
                    .metadata
                    .execute(
                        &format!("UPDATE {table} SET state = $1, updated_at = now() WHERE n = $2"),
                        &[&state, &(n as i64)],
                    )
                    .await;
                if !matches!(recorded, Ok(1)) {
                    state = "failed";
                }
                times.add(3, step);
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                if let Some(to) = d.properties.reply_to() {
                    let _ = publish_confirmed(
                        &channel,
                        to.as_str(),
                        format!("{n} {state}").as_bytes(),
                        BasicProperties::default(),
                        false,
                    )
                    .await;
                }
            });
        }
    });

    let (t, tb, q, rq, p) = (
        times.clone(),
        table.clone(),
        jobs_queue.clone(),
        reply_queue.clone(),
        publisher.clone(),
    );
    let measured = crate::run::run(concurrency, limit, move |lane, n| {
        let (callers, times, table, queue, reply_queue, waiters, publisher) = (
            callers.clone(),
            t.clone(),
            tb.clone(),
            q.clone(),
            rq.clone(),
            waiters.clone(),
            p.clone(),
        );
        async move {
            let started = Instant::now();
            let step = Instant::now();
            callers[lane]
                .execute(
                    &format!(
                        "INSERT INTO {table} (n, state, password_sealed) VALUES ($1, 'pending', $2)"
                    ),
                    &[&(n as i64), &vec![0u8; 80]],
                )
                .await
                .map_err(|e| e.to_string())?;
            times.add(0, step);
            let (tx, rx) = oneshot::channel();
            waiters.lock().expect("waiters").insert(n, tx);
            publish_confirmed(
                &publisher,
                &queue,
                format!("{lane} {n}").as_bytes(),
                BasicProperties::default().with_reply_to(reply_queue.as_str().into()),
                true,
            )
            .await
            .map_err(|e| e.to_string())?;
            let done = rx.await.map_err(|_| "no reply".to_owned())?;
            times
                .total
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            times.ops.fetch_add(1, Ordering::Relaxed);
            if !done {
                return Err("floor operation failed".into());
            }
            Ok(())
        }
    })
    .await;

    publisher
        .queue_delete(jobs_queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(0, "done".into()).await;
    metadata(metadata_url)
        .await?
        .batch_execute(&format!("DROP TABLE {table}"))
        .await?;
    work.clean(&mut *lanes[0].engine.lock().await).await?;
    Ok((measured, times))
}

#[cfg(test)]
mod tests {
    use mysql_async::prelude::Queryable;

    use super::*;
    use crate::Engine;

    const MARIADB_ROOT: &str = "mysql://root@127.0.0.1:3306";
    const METADATA: &str = "postgres://postgres@127.0.0.1:5432/postgres";
    const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    async fn schemas_of(tag: &str) -> Vec<String> {
        let opts = mysql_async::Opts::from_url(MARIADB_ROOT).unwrap();
        let mut c =
            mysql_async::Conn::new(mysql_async::OptsBuilder::from_opts(opts).prefer_socket(false))
                .await
                .unwrap();
        c.exec(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ?",
            (format!("lb\\_{tag}\\_%"),),
        )
        .await
        .unwrap()
    }

    /// Every step for real on MariaDB, PostgreSQL and RabbitMQ: each operation's database is
    /// made and logged in to, a failed one is counted as an error (not as a fast success),
    /// and nothing of the run is left behind.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_floor_runs_every_step_counts_failures_and_cleans_up() {
        let tag = crate::run_tag();
        let work = Arc::new(EngineWork::new(Engine::Mariadb, false, MARIADB_ROOT, &tag));
        // Operation 0's database already exists: its DDL fails.
        let mut root = work.connect().await.unwrap();
        if let Session::Maria(c) = &mut root {
            c.query_drop(format!("CREATE DATABASE `lb_{tag}_0`"))
                .await
                .unwrap();
        }
        let (m, times) = run(work, METADATA, AMQP, 2, Limit::Count(6), &tag)
            .await
            .unwrap();
        assert_eq!(m.ok(), 5, "{:?}", m.errors);
        assert_eq!(m.errors.get("floor operation failed"), Some(&1));
        for (step, ms) in times.per_op_ms() {
            assert!(ms > 0.0, "{step} took no time");
        }
        assert!(
            schemas_of(&tag).await.is_empty(),
            "the run's databases are left"
        );
        let (client, conn) = tokio_postgres::connect(METADATA, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let table: Option<String> = client
            .query_one(
                &format!("SELECT to_regclass('load_floor_{tag}')::text"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(table, None, "the intent table is left");
    }
}
