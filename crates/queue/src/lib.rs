//! RabbitMQ for hepdb: the queue topology, and a supervised connection that recovers by itself.
//!
//! lapin does not reconnect on its own. [`supervise`] owns the connection loop: connect, run a
//! role-specific setup (declare queues, start consumers), publish the resulting session, wait
//! until the connection is lost, withdraw the session, back off, and start over. Everything
//! else reads the current session from a `watch` channel, so "is the broker up?" is one load,
//! which is what `/readyz` reports.

mod connect;
mod supervisor;
mod topology;

pub use connect::{ConnectError, connect};
pub use supervisor::{SessionView, Supervised, supervise};
pub use topology::Topology;

use lapin::{BasicProperties, Channel, Confirmation, options::BasicPublishOptions};

/// Publishing failed or the broker did not confirm it.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message")]
    Nacked,
    /// No queue took it (the queue is gone): it was returned, not stored.
    #[error("no queue by that name: the message was returned")]
    Unroutable,
}

/// Publishes `payload` to `queue` through the default exchange and waits for the broker's
/// confirm (the channel must be in confirm mode). With `persistent`, the message survives a
/// broker restart. Mandatory: a message no queue takes is an error, not a silent drop that
/// the broker still confirms.
pub async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
    persistent: bool,
) -> Result<(), PublishError> {
    let properties = properties
        .with_content_type("application/json".into())
        .with_delivery_mode(if persistent { 2 } else { 1 });
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
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
    }
}

/// Publishes a job message to the jobs queue: persistent, confirmed, with the job id as its
/// message id and correlation id, `headers` (request id, trace context) and, when the publisher
/// waits for the outcome, the queue its reply goes to. The one way any process sends a job.
pub async fn publish_job(
    channel: &Channel,
    topology: &Topology,
    message: &hepdb_core::job::JobMessage,
    headers: lapin::types::FieldTable,
    reply_to: Option<&str>,
) -> Result<(), PublishError> {
    let payload = serde_json::to_vec(message).expect("job messages serialize");
    let id = message.job_id.to_text();
    let mut properties = BasicProperties::default()
        .with_headers(headers)
        .with_message_id(id.as_str().into())
        .with_correlation_id(id.as_str().into());
    if let Some(queue) = reply_to {
        properties = properties.with_reply_to(queue.into());
    }
    publish_confirmed(channel, &topology.jobs_queue(), &payload, properties, true).await
}

/// A text header of a message (`x-request-id`, `traceparent`, ...), if it has one.
pub fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match properties.headers().as_ref()?.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}
