//! Request/reply over RabbitMQ: publish a job (persistent, confirmed), wait for the worker's
//! reply by correlation id, and when no reply comes, let metadata decide what happened.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use hepdb_core::{
    ApiError, DatabaseId, JobId, JobState,
    job::{JobFailure, JobMessage, JobOutcome, JobReply, MESSAGE_VERSION},
    state::JobKind,
};
use hepdb_queue::{Supervised, Topology, publish_job, supervise};
use hepdb_store::{Store, jobs::CancelOutcome};
use lapin::{
    Channel, Connection,
    options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};
use tokio::sync::oneshot;
use tracing::Instrument;

type Waiters = Arc<Mutex<HashMap<JobId, oneshot::Sender<JobReply>>>>;

/// What to do with a job whose reply did not come.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// Cancel it if no worker has taken it: nothing was changed (creates and rotates).
    CancelIfPending,
    /// Leave it to finish: once recorded, it must (deletions).
    LetItFinish,
}

/// One live broker connection: a confirm-mode channel to publish on, and this process's own
/// exclusive reply queue.
#[derive(Debug)]
pub struct Session {
    publisher: Channel,
    reply_queue: String,
    _replies: Channel,
}

#[derive(Debug)]
pub struct Dispatcher {
    broker: Supervised<Session>,
    waiters: Waiters,
    topology: Topology,
    store: Store,
    timeout: Duration,
}

/// Removes a waiter however the wait ends (reply, timeout, or a dropped request).
struct WaiterGuard<'a>(&'a Waiters, JobId);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().expect("waiters lock").remove(&self.1);
    }
}

impl Dispatcher {
    pub fn start(amqp_url: &str, topology: Topology, store: Store, timeout: Duration) -> Self {
        let waiters: Waiters = Arc::default();
        let (setup_waiters, setup_topology) = (waiters.clone(), topology.clone());
        let broker = supervise(amqp_url.to_owned(), "hepdb-gateway", move |conn| {
            setup(conn, setup_topology.clone(), setup_waiters.clone())
        });
        Self {
            broker,
            waiters,
            topology,
            store,
            timeout,
        }
    }

    /// How long a request waits for a job.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn broker_connected(&self) -> bool {
        self.broker.is_connected()
    }

    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.broker.wait_connected(timeout).await.is_some()
    }

    /// Publishes access jobs already recorded in metadata whose outcome nobody waits for (a
    /// suspension's): each confirmed by the broker, without a reply queue, within the request
    /// timeout.
    /// Returns how many went; the reconciler delivers the rest.
    pub async fn send_access_jobs(&self, jobs: &[(JobId, DatabaseId)]) -> usize {
        let Some(session) = self.broker.current() else {
            return 0;
        };
        let mut sent = 0;
        for (job, database) in jobs {
            let message = JobMessage {
                v: MESSAGE_VERSION,
                job_id: *job,
                database_id: *database,
                kind: JobKind::Access.into(),
            };
            let publish = publish_job(
                &session.publisher,
                &self.topology,
                &message,
                FieldTable::default(),
                None,
            );
            match tokio::time::timeout(self.timeout, publish).await {
                Ok(Ok(())) => sent += 1,
                _ => {
                    tracing::warn!(%job, "could not publish an access job; the reconciler will");
                    break;
                }
            }
        }
        sent
    }

    /// Runs a job whose intent is already in metadata, and returns once it is done, failed,
    /// or known to be still running. Never waits longer than the configured timeout.
    pub async fn run(
        &self,
        job: JobId,
        database: DatabaseId,
        kind: JobKind,
    ) -> Result<(), ApiError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.dispatch(job, database, kind, Settle::CancelIfPending, deadline)
            .await
    }

    /// Runs a job that must complete once it is recorded (a deletion): like [`Dispatcher::run`],
    /// but a job nobody has taken yet is never cancelled; the caller gets 503 `JOB_TIMEOUT`
    /// and the job finishes later (the reconciler delivers one that could not be published).
    /// Waits until `deadline`: the caller's request timeout, from when its request began.
    pub async fn run_to_completion(
        &self,
        job: JobId,
        database: DatabaseId,
        kind: JobKind,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        self.dispatch(job, database, kind, Settle::LetItFinish, deadline)
            .await
    }

    async fn dispatch(
        &self,
        job: JobId,
        database: DatabaseId,
        kind: JobKind,
        how: Settle,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        let settle = async |not_taken: ApiError| match how {
            Settle::CancelIfPending => self.settle(job, not_taken).await,
            Settle::LetItFinish => self.outcome(job).await,
        };
        // One deadline for the publish and the reply together: a slow publish (a broker on
        // its way down) must not double the caller's wait.
        let Some(session) = self.broker.current() else {
            return settle(ApiError::BrokerUnavailable).await;
        };
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(job, tx);
        let _guard = WaiterGuard(&self.waiters, job);

        let message = JobMessage {
            v: MESSAGE_VERSION,
            job_id: job,
            database_id: database,
            kind: kind.into(),
        };
        let queue = self.topology.jobs_queue();
        let span = tracing::info_span!(
            "publish",
            %job,
            otel.kind = "producer",
            otel.name = format!("{queue} publish"),
            messaging.system = "rabbitmq",
            messaging.destination.name = %queue,
        );
        let mut headers = FieldTable::default();
        if let Some(id) = crate::request_id::current() {
            headers.insert("x-request-id".into(), AMQPValue::LongString(id.into()));
        }
        // The worker's job span continues this trace as a child of the publish.
        for (name, value) in hepdb_telemetry::trace_context(&span) {
            headers.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        let published = tokio::time::timeout_at(
            deadline,
            publish_job(
                &session.publisher,
                &self.topology,
                &message,
                headers,
                Some(session.reply_queue.as_str()),
            ),
        )
        .instrument(span)
        .await;
        if !matches!(published, Ok(Ok(()))) {
            tracing::warn!(%job, "could not publish the job");
            return settle(ApiError::BrokerUnavailable).await;
        }
        let waited = tokio::time::timeout_at(deadline, rx)
            .instrument(tracing::info_span!("await reply", %job))
            .await;
        match waited {
            Ok(Ok(reply)) => match reply.outcome {
                JobOutcome::Done => Ok(()),
                JobOutcome::Failed(failure) => Err(failure.into()),
            },
            _ => {
                metrics::counter!("hepdb_job_reply_timeouts_total", "kind" => kind.as_str())
                    .increment(1);
                settle(ApiError::WorkerUnavailable).await
            }
        }
    }

    /// Waits, until `deadline` (the request timeout, from when the request began), for a job
    /// another request sent (joining it rather than sending it again): its recorded outcome,
    /// or `JOB_TIMEOUT` while it still runs.
    pub async fn await_outcome(
        &self,
        job: JobId,
        deadline: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        loop {
            match self.outcome(job).await {
                Err(ApiError::JobTimeout) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                answer => return answer,
            }
        }
    }

    /// No reply to a job that must finish: what metadata says of it now; still open is
    /// `JOB_TIMEOUT` (it will complete).
    async fn outcome(&self, job: JobId) -> Result<(), ApiError> {
        match self.store.job(job).await {
            Ok(Some(row)) => match row.state() {
                JobState::Done => Ok(()),
                JobState::Failed => Err(row
                    .error_code
                    .as_deref()
                    .map_or(ApiError::Internal, |c| JobFailure::parse(c).into())),
                _ => Err(ApiError::JobTimeout),
            },
            Ok(None) => Err(ApiError::Internal),
            Err(error) => {
                tracing::warn!(%error, %job, "cannot read the job's state");
                Err(ApiError::MetadataUnavailable)
            }
        }
    }

    /// No reply: cancel the job if no worker has taken it (then `not_taken` is the answer and
    /// nothing was changed), otherwise answer from the job's recorded state.
    async fn settle(&self, job: JobId, not_taken: ApiError) -> Result<(), ApiError> {
        match self.store.cancel_pending_job(job).await {
            Ok(CancelOutcome::Cancelled) => Err(not_taken),
            Ok(CancelOutcome::TooLate(JobState::Done, _)) => Ok(()),
            Ok(CancelOutcome::TooLate(JobState::Failed, failure)) => {
                Err(failure.map_or(ApiError::Internal, Into::into))
            }
            Ok(CancelOutcome::TooLate(JobState::Running, _)) => Err(ApiError::JobTimeout),
            Ok(CancelOutcome::TooLate(_, _)) => Err(not_taken),
            Ok(CancelOutcome::Missing) => Err(ApiError::Internal),
            Err(error) => {
                tracing::warn!(%error, %job, "cannot settle the job in metadata");
                Err(ApiError::MetadataUnavailable)
            }
        }
    }
}

async fn setup(
    conn: Arc<Connection>,
    topology: Topology,
    waiters: Waiters,
) -> lapin::Result<Session> {
    let publisher = conn.create_channel().await?;
    topology.declare(&publisher).await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;

    let replies = conn.create_channel().await?;
    let queue = replies
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let reply_queue = queue.name().to_string();
    let mut consumer = replies
        .basic_consume(
            queue.name().clone(),
            "hepdb-gateway-replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let Ok(reply) = serde_json::from_slice::<JobReply>(&delivery.data) else {
                tracing::warn!("unreadable reply");
                continue;
            };
            // A reply nobody waits for (the request already timed out) is simply dropped.
            if let Some(tx) = waiters.lock().expect("waiters lock").remove(&reply.job_id) {
                let _ = tx.send(reply);
            }
        }
    });
    Ok(Session {
        publisher,
        reply_queue,
        _replies: replies,
    })
}
