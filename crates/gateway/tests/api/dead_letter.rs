//! Poison messages through the real broker: they end up in `<prefix>.jobs.dead` with the
//! reason in a header, the job is failed in metadata, and a create's slot is free again.

use std::time::{Duration, Instant};

use hepdb_core::job::{JobKindWire, JobMessage, MESSAGE_VERSION};
use hepdb_queue::Topology;
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{BasicGetOptions, BasicPublishOptions},
    types::AMQPValue,
};
use serde_json::json;

use hepdb_testkit::*;

async fn channel(app: &TestApp) -> (Connection, lapin::Channel, Topology) {
    let conn = Connection::connect(
        app.settings.amqp.url.expose(),
        ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let topology = Topology::from_settings(&app.settings.amqp);
    topology.declare(&channel).await.unwrap();
    (conn, channel, topology)
}

async fn publish(channel: &lapin::Channel, queue: &str, payload: &[u8]) {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The next dead-lettered message's body and `x-hepdb-reason`, waiting up to 10 s.
async fn next_dead(channel: &lapin::Channel, topology: &Topology) -> (Vec<u8>, String) {
    let started = Instant::now();
    loop {
        let got = channel
            .basic_get(
                topology.dead_letter_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if let Some(m) = got {
            let reason = m
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-hepdb-reason").cloned());
            let Some(AMQPValue::LongString(reason)) = reason else {
                panic!("dead-lettered without a reason")
            };
            return (m.delivery.data.clone(), reason.to_string());
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nothing dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_and_exhausted_jobs_are_dead_lettered_with_a_reason() {
    let app = spawn_app_with(
        Options {
            slots: Some(1),
            ..Default::default()
        },
        |s| s.worker.max_attempts = 3,
    )
    .await;
    let (_conn, channel, topology) = channel(&app).await;

    publish(&channel, &topology.jobs_queue(), b"{not a job").await;
    let (body, reason) = next_dead(&channel, &topology).await;
    assert_eq!(
        (body.as_slice(), reason.as_str()),
        (&b"{not a job"[..], "unreadable message")
    );

    // A create whose job has already been delivered as often as allowed.
    let (reserved, _) = app.reserve_intent("poison").await;
    let id = reserved.database.database_id();
    let n = app
        .metadata_sql(&format!(
            "UPDATE jobs SET attempts = 3 WHERE id = '{}'",
            reserved.job
        ))
        .await;
    assert_eq!(n, 1);
    let message = JobMessage {
        v: MESSAGE_VERSION,
        job_id: reserved.job,
        database_id: id,
        kind: JobKindWire::Create,
    };
    publish(
        &channel,
        &topology.jobs_queue(),
        &serde_json::to_vec(&message).unwrap(),
    )
    .await;
    let (body, reason) = next_dead(&channel, &topology).await;
    assert_eq!(reason, "too many attempts");
    assert_eq!(
        serde_json::from_slice::<JobMessage>(&body).unwrap(),
        message
    );
    let job = app.store.job(reserved.job).await.unwrap().unwrap();
    assert_eq!(
        (job.state.as_str(), job.error_code.as_deref()),
        ("failed", Some("POISONED"))
    );
    // Nothing on the engine, and the one slot is free again.
    assert!(engine_databases(&app.tag().await).await.is_empty());
    assert_eq!(app.create(json!({"name": "poison"})).await.0, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_rotate_puts_the_metadata_password_back_on_the_engine() {
    let app = spawn_app_with(Options::default(), |s| s.worker.max_attempts = 3).await;
    let (_conn, channel, topology) = channel(&app).await;
    let (s, created) = app.create(json!({"name": "half-rotated"})).await;
    assert_eq!(s, 201);
    let d = data(&created).clone();
    let (cs, old) = (
        d["connectionString"].as_str().unwrap(),
        d["password"].as_str().unwrap(),
    );
    let id: hepdb_core::DatabaseId = d["id"].as_str().unwrap().parse().unwrap();

    // A rotate whose earlier delivery changed the engine and died before its commit, and which
    // has since been delivered as often as allowed.
    let (message, new) = app.rotate_intent(id).await;
    let job = message.job_id;
    let mut root = mysql_async::Conn::new(mysql_async::Opts::from_url(&root_url()).unwrap())
        .await
        .unwrap();
    mysql_async::prelude::Queryable::query_drop(
        &mut root,
        format!(
            "ALTER USER '{}'@'%' IDENTIFIED BY '{}'",
            d["dbUser"].as_str().unwrap(),
            new.expose()
        ),
    )
    .await
    .unwrap();
    assert!(can_login(&cs.replace(old, new.expose())).await);
    let n = app
        .metadata_sql(&format!(
            "UPDATE jobs SET attempts = 3, state = 'running' WHERE id = '{job}'"
        ))
        .await;
    assert_eq!(n, 1);
    publish(
        &channel,
        &topology.jobs_queue(),
        &serde_json::to_vec(&message).unwrap(),
    )
    .await;
    let (_, reason) = next_dead(&channel, &topology).await;
    assert_eq!(reason, "too many attempts");
    let job = app.store.job(job).await.unwrap().unwrap();
    assert_eq!(
        (job.state.as_str(), job.error_code.as_deref()),
        ("failed", Some("POISONED"))
    );
    // Engine and metadata agree again: the password reveal shows is the one that logs in.
    assert!(can_login(cs).await, "the metadata password logs in again");
    assert!(!can_login(&cs.replace(old, new.expose())).await);
    let (_, revealed) = app.reveal(&id.to_text()).await;
    assert_eq!(data(&revealed)["password"], old);
}

/// A publish that no queue takes (the queue was deleted, or expired) is an error, not a
/// confirmed silent drop: a parked job is acked only once its copy is really stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_publish_no_queue_takes_is_an_error() {
    let app = spawn_app().await;
    let (conn, channel, topology) = channel(&app).await;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let sent = hepdb_queue::publish_confirmed(
        &channel,
        &format!("{}.missing", topology.jobs_queue()),
        b"{}",
        BasicProperties::default(),
        true,
    )
    .await;
    assert!(
        matches!(sent, Err(hepdb_queue::PublishError::Unroutable)),
        "{sent:?}"
    );
    let sent = hepdb_queue::publish_confirmed(
        &channel,
        &topology.wait_queue(),
        b"{}",
        BasicProperties::default().with_expiration("60000".into()),
        true,
    )
    .await;
    assert!(sent.is_ok(), "{sent:?}");
    let _ = conn.close(200, "done".into()).await;
}
