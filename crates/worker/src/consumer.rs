//! The AMQP side of the worker: consume jobs, reply, ack or requeue, dead-letter poison.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use hepdb_core::job::{JobMessage, JobOutcome, JobReply, MESSAGE_VERSION};
use hepdb_queue::{Topology, publish_confirmed};
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
/// outage of the metadata database does not turn into a hot redelivery loop.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One live connection's consumer; holding the channel keeps it open. It is in confirm mode,
/// so the reconciler publishes on it too.
#[derive(Debug)]
pub struct Session {
    pub(crate) channel: Channel,
}

/// Declares the topology and starts consuming; runs on every (re)connection.
pub async fn setup(
    conn: Arc<Connection>,
    topology: Topology,
    prefetch: u16,
    ctx: JobContext,
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
    let loop_channel = channel.clone();
    tokio::spawn(async move {
        let mut consumer = consumer;
        while let Some(delivery) = consumer.next().await {
            let Ok(delivery) = delivery else { break };
            let (ctx, channel, topology) = (ctx.clone(), loop_channel.clone(), topology.clone());
            // At most `prefetch` deliveries are unacked, which bounds this concurrency.
            tokio::spawn(async move { process(delivery, &channel, &topology, &ctx).await });
        }
        tracing::debug!("job consumer ended");
    });
    Ok(Session { channel })
}

async fn process(delivery: Delivery, channel: &Channel, topology: &Topology, ctx: &JobContext) {
    let msg = match serde_json::from_slice::<JobMessage>(&delivery.data) {
        Ok(msg) if msg.v == MESSAGE_VERSION => msg,
        _ => {
            tracing::error!("unreadable job message, dead-lettering it");
            dead_letter(channel, topology, &delivery, "unreadable message").await;
            let _ = delivery.ack(BasicAckOptions::default()).await;
            return;
        }
    };
    let span = tracing::info_span!("job", job = %msg.job_id, kind = ?msg.kind, database = %msg.database_id);
    match handle(ctx, &msg).instrument(span).await {
        Disposition::Finished {
            outcome,
            dead_letter: reason,
        } => {
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
        Disposition::Retry => {
            tokio::time::sleep(RETRY_PAUSE).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
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
    if let Err(error) = publish_confirmed(channel, reply_to.as_str(), &payload, props, false).await
    {
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
