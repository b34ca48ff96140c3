//! The AMQP side of the worker: consume jobs, reply, ack or requeue, dead-letter poison.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use hepdb_core::{
    JobId,
    job::{JobMessage, JobOutcome, JobReply, MESSAGE_VERSION},
    state::JobKind,
};
use hepdb_queue::{Topology, header, publish_confirmed};
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable},
};
use tracing::Instrument;

use crate::jobs::{Disposition, JobContext, handle};

/// How long a message whose job could not be recorded waits before it is requeued, so an
/// outage of the metadata database does not turn into a hot redelivery loop. The pause doubles
/// with each retry of the same job, up to [`MAX_RETRY_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(500);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// How many times each job has been put back in this process (for the backoff).
pub type Retries = Arc<std::sync::Mutex<std::collections::HashMap<JobId, u32>>>;

fn backoff(retries: &Retries, job: JobId) -> Duration {
    let mut r = retries.lock().expect("retries lock");
    // Jobs finished by another worker never come back here; keep the map bounded.
    if r.len() > 10_000 {
        r.clear();
    }
    let n = r.entry(job).or_default();
    *n = n.saturating_add(1);
    RETRY_PAUSE
        .saturating_mul(1 << (*n - 1).min(10))
        .min(MAX_RETRY_PAUSE)
}

/// One live connection's consumer; holding the channel keeps it open. It is in confirm mode,
/// so the reconciler publishes on it too.
#[derive(Debug)]
pub struct Session {
    pub(crate) channel: Channel,
    consumer_tag: String,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl Session {
    /// Stops new deliveries, then waits until the jobs already taken are finished (acked or
    /// requeued), for at most `deadline`. Returns how many were still running at the deadline;
    /// closing the connection then puts them back on the queue.
    pub async fn drain(&self, deadline: Duration) -> usize {
        use std::sync::atomic::Ordering;
        let _ = self
            .channel
            .basic_cancel(
                self.consumer_tag.as_str().into(),
                lapin::options::BasicCancelOptions::default(),
            )
            .await;
        let started = std::time::Instant::now();
        while self.in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Declares the topology and starts consuming; runs on every (re)connection.
pub async fn setup(
    conn: Arc<Connection>,
    topology: Topology,
    prefetch: u16,
    ctx: JobContext,
    retries: Retries,
) -> lapin::Result<Session> {
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            topology.jobs_queue().as_str().into(),
            "hepdb-worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consumer_tag = consumer.tag().to_string();
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (loop_channel, loop_in_flight) = (channel.clone(), in_flight.clone());
    tokio::spawn(async move {
        let mut consumer = consumer;
        while let Some(delivery) = consumer.next().await {
            let Ok(delivery) = delivery else { break };
            let (ctx, channel, topology) = (ctx.clone(), loop_channel.clone(), topology.clone());
            let (retries, in_flight) = (retries.clone(), loop_in_flight.clone());
            in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // At most `prefetch` deliveries are unacked, which bounds this concurrency.
            tokio::spawn(async move {
                process(delivery, &channel, &topology, &ctx, &retries).await;
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        tracing::debug!("job consumer ended");
    });
    Ok(Session {
        channel,
        consumer_tag,
        in_flight,
    })
}

async fn process(
    delivery: Delivery,
    channel: &Channel,
    topology: &Topology,
    ctx: &JobContext,
    retries: &Retries,
) {
    let msg = match serde_json::from_slice::<JobMessage>(&delivery.data) {
        Ok(msg) if msg.v == MESSAGE_VERSION => msg,
        _ => {
            tracing::error!("unreadable job message, dead-lettering it");
            dead_letter(channel, topology, &delivery, "unreadable message").await;
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        }
    };
    // The id of the HTTP request that started the job, so one create reads as one story, and
    // its trace context, so it is one trace.
    let props = &delivery.properties;
    let span = tracing::info_span!(
        "job",
        job = %msg.job_id,
        kind = ?msg.kind,
        database = %msg.database_id,
        request_id = header(props, "x-request-id").unwrap_or_default(),
        otel.kind = "consumer",
        otel.name = format!("{} process", topology.jobs_queue()),
        otel.status_code = tracing::field::Empty,
        messaging.system = "rabbitmq",
        messaging.message.id = %msg.job_id,
    );
    hepdb_telemetry::continue_trace(&span, |name| header(props, name));
    finish(delivery, msg, channel, topology, ctx, retries)
        .instrument(span)
        .await;
}

/// Runs a readable job and settles its message: reply and ack, or requeue after a pause.
async fn finish(
    delivery: Delivery,
    msg: JobMessage,
    channel: &Channel,
    topology: &Topology,
    ctx: &JobContext,
    retries: &Retries,
) {
    let started = std::time::Instant::now();
    // Boxed: the job's future is deep (hold, step, failure paths), and the consumer's task
    // need not carry its layout.
    let disposition = Box::pin(handle(ctx, &msg)).await;
    let outcome = match &disposition {
        Disposition::Finished {
            outcome: JobOutcome::Done,
            ..
        } => "done",
        Disposition::Finished { .. } => {
            tracing::Span::current().record("otel.status_code", "error");
            "failed"
        }
        Disposition::Retry => "retry",
        Disposition::Busy => "busy",
    };
    let kind = JobKind::from(msg.kind).as_str();
    metrics::counter!("hepdb_jobs_total", "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!("hepdb_job_duration_seconds", "kind" => kind, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
    match disposition {
        Disposition::Finished {
            outcome,
            dead_letter: reason,
        } => {
            retries.lock().expect("retries lock").remove(&msg.job_id);
            if let Some(reason) = reason {
                dead_letter(channel, topology, &delivery, reason).await;
            }
            if outcome == JobOutcome::Done {
                tracing::info!(job = %msg.job_id, kind = ?msg.kind, "job done");
            }
            reply(
                channel,
                &delivery,
                JobReply {
                    v: MESSAGE_VERSION,
                    job_id: msg.job_id,
                    outcome,
                },
            )
            .await;
            // An ack lost with the connection means a redelivery, which answers from metadata.
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Disposition::Busy => match park(channel, topology, &delivery).await {
            Ok(()) => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
            Err(error) => {
                tracing::warn!(%error, job = %msg.job_id, "could not park a waiting job, requeueing it");
                requeue(&delivery, backoff(retries, msg.job_id)).await;
            }
        },
        Disposition::Retry => requeue(&delivery, backoff(retries, msg.job_id)).await,
    }
}

async fn requeue(delivery: &Delivery, pause: Duration) {
    tokio::time::sleep(pause).await;
    let _ = delivery
        .nack(BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        })
        .await;
}

/// How long a job waits, by how many times it has found its database held: it doubles from
/// [`FIRST_WAIT`] up to [`LONGEST_WAIT`]. The longest wait is also how long a parked message
/// can hold up the ones behind it in the wait queue (a queue expires only its head).
const FIRST_WAIT: Duration = Duration::from_millis(100);
const LONGEST_WAIT: Duration = Duration::from_secs(1);
const WAITS_HEADER: &str = "x-hepdb-waits";

fn wait_for(waits: u32) -> Duration {
    FIRST_WAIT
        .saturating_mul(1 << waits.min(10))
        .min(LONGEST_WAIT)
}

/// Parks a message whose database another delivery holds: a confirmed copy, with the same
/// properties (reply queue, correlation, trace context) and one more wait counted, goes to
/// the wait queue, which hands it back to the jobs queue when it expires. The caller acks the
/// original only once the copy is confirmed.
async fn park(
    channel: &Channel,
    topology: &Topology,
    delivery: &Delivery,
) -> Result<(), hepdb_queue::PublishError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    let waits = match headers.inner().get(WAITS_HEADER) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    };
    headers.insert(
        WAITS_HEADER.into(),
        AMQPValue::LongUInt(waits.saturating_add(1)),
    );
    let expiration = wait_for(waits).as_millis().to_string();
    let props = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_expiration(expiration.as_str().into());
    publish_confirmed(channel, &topology.wait_queue(), &delivery.data, props, true).await
}

async fn reply(channel: &Channel, delivery: &Delivery, reply: JobReply) {
    let Some(reply_to) = delivery.properties.reply_to() else {
        return;
    };
    let Some(correlation) = delivery.properties.correlation_id() else {
        return;
    };
    let payload = serde_json::to_vec(&reply).expect("replies serialize");
    let props = BasicProperties::default().with_correlation_id(correlation.clone());
    let span = tracing::info_span!(
        "reply",
        otel.kind = "producer",
        otel.name = "reply publish",
        messaging.system = "rabbitmq",
    );
    let sent = publish_confirmed(channel, reply_to.as_str(), &payload, props, false)
        .instrument(span)
        .await;
    if let Err(error) = sent {
        // The gateway falls back to reading the job's state from metadata.
        tracing::warn!(%error, "could not send the reply");
    }
}

async fn dead_letter(channel: &Channel, topology: &Topology, delivery: &Delivery, reason: &str) {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(
        "x-hepdb-reason".into(),
        AMQPValue::LongString(reason.into()),
    );
    let props = BasicProperties::default().with_headers(headers);
    if let Err(error) = publish_confirmed(
        channel,
        &topology.dead_letter_queue(),
        &delivery.data,
        props,
        true,
    )
    .await
    {
        tracing::error!(%error, "could not dead-letter a message");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_pause_doubles_up_to_a_cap() {
        let retries = Retries::default();
        let job = JobId::new();
        let pauses: Vec<u64> = (0..9)
            .map(|_| backoff(&retries, job).as_millis() as u64)
            .collect();
        assert_eq!(
            pauses,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff(&retries, JobId::new()), RETRY_PAUSE, "per job");
    }

    #[test]
    fn a_waiting_job_waits_longer_each_time_up_to_a_cap() {
        let waits: Vec<u128> = (0..7).map(|n| wait_for(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(wait_for(u32::MAX), LONGEST_WAIT);
    }
}
