//! The pipeline floor: the durable steps a hepdb create or rotate is made of, bare, without
//! any hepdb code, in the same run at the same concurrency. The caller commits an intent in
//! PostgreSQL and publishes it (persistent, confirmed) to a durable queue. A bare consumer
//! takes it, runs the engine DDL, logs in with what it set, commits the result, acks, and
//! replies (confirmed) to the caller's reply queue. What hepdb adds above this is its own.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
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
/// over the run. The last step is what the whole leaves over the others.
#[derive(Default)]
pub struct StepTimes {
    steps: [AtomicU64; 4],
    total: AtomicU64,
}

impl StepTimes {
    fn add(&self, step: usize, since: Instant) {
        self.steps[step].fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    /// Mean milliseconds per operation of each step.
    pub fn per_op_ms(&self, ops: u64) -> Vec<(&'static str, f64)> {
        let ms = |us: u64| us as f64 / 1000.0 / ops.max(1) as f64;
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
    pub fn aligned(&self, ops: u64) -> Vec<(&'static str, f64)> {
        let s = self.per_op_ms(ops);
        vec![
            (crate::steps::PARTS[0], s[0].1),
            (crate::steps::PARTS[1], s[1].1 + s[2].1),
            (crate::steps::PARTS[2], s[3].1),
            (crate::steps::PARTS[3], s[4].1),
        ]
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>;

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

async fn publish(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
) -> Result<(), String> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            payload,
            properties,
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    match confirm {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        _ => Err("publish not confirmed".into()),
    }
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
        while let Some(Ok(d)) = reply_stream.next().await {
            let n = std::str::from_utf8(&d.data)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(tx) = n.and_then(|n| w2.lock().expect("waiters").remove(&n)) {
                let _ = tx.send(());
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
                let state = if ok { "done" } else { "failed" };
                let _ = me
                    .metadata
                    .execute(
                        &format!("UPDATE {table} SET state = $1, updated_at = now() WHERE n = $2"),
                        &[&state, &(n as i64)],
                    )
                    .await;
                times.add(3, step);
                let _ = d.acker.ack(BasicAckOptions::default()).await;
                if let Some(to) = d.properties.reply_to() {
                    let _ = publish(
                        &channel,
                        to.as_str(),
                        n.to_string().as_bytes(),
                        BasicProperties::default().with_delivery_mode(1),
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
            publish(
                &publisher,
                &queue,
                format!("{lane} {n}").as_bytes(),
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_reply_to(reply_queue.as_str().into()),
            )
            .await?;
            rx.await.map_err(|_| "no reply".to_owned())?;
            times
                .total
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
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
