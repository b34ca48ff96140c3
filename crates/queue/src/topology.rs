//! Queue names and declarations. Gateway and worker both declare, with identical arguments, so
//! either may start first.

use lapin::{
    Channel,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};

/// Where jobs go, under one prefix so that several stacks can share a broker.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    expires_ms: Option<u32>,
    quorum: bool,
}

impl Topology {
    /// `expires_secs` > 0 makes idle queues disappear (for tests); production uses 0.
    pub fn new(prefix: &str, expires_secs: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            expires_ms: (expires_secs > 0).then(|| expires_secs.saturating_mul(1000)),
            quorum: false,
        }
    }

    /// Quorum queues (replicated across a RabbitMQ cluster) instead of classic ones. A queue's
    /// type is fixed when it is first declared: choose before the first deploy.
    /// The topology the AMQP settings describe: prefix, idle expiry, quorum queues.
    pub fn from_settings(amqp: &hepdb_core::settings::AmqpSettings) -> Self {
        Self::new(&amqp.queue_prefix, amqp.queue_expires_secs).with_quorum(amqp.quorum_queues)
    }

    pub fn with_quorum(mut self, quorum: bool) -> Self {
        self.quorum = quorum;
        self
    }

    /// Durable queue of create and rotate jobs.
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.prefix)
    }

    /// Durable queue of jobs that kept failing, with the reason in a header.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }

    /// Durable queue where a job whose database another delivery holds waits out its delay
    /// (the message's own expiration), then returns to the jobs queue by dead-lettering. A
    /// waiting job holds no worker slot.
    pub fn wait_queue(&self) -> String {
        format!("{}.jobs.wait", self.prefix)
    }

    fn arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ms) = self.expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        if self.quorum {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        args
    }

    /// The wait queue's arguments: expired messages go back to the jobs queue.
    fn wait_arguments(&self) -> FieldTable {
        let mut args = self.arguments();
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.jobs_queue().into()),
        );
        args
    }

    /// Declares the jobs, dead-letter and wait queues (idempotent).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        for (queue, arguments) in [
            (self.jobs_queue(), self.arguments()),
            (self.dead_letter_queue(), self.arguments()),
            (self.wait_queue(), self.wait_arguments()),
        ] {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    arguments,
                )
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let t = Topology::new("stack2", 0);
        assert_eq!(t.jobs_queue(), "stack2.jobs");
        assert_eq!(t.dead_letter_queue(), "stack2.jobs.dead");
        assert_eq!(t.wait_queue(), "stack2.jobs.wait");
        assert_eq!(
            t.wait_arguments().inner().get("x-dead-letter-routing-key"),
            Some(&AMQPValue::LongString("stack2.jobs".into()))
        );
        assert!(t.arguments().inner().is_empty());
        assert!(!Topology::new("t", 60).arguments().inner().is_empty());
        let q = Topology::new("t", 0).with_quorum(true).arguments();
        assert_eq!(
            q.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
    }
}
