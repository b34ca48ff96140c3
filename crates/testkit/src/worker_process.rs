//! `hepdb-worker` as a real process next to an in-process gateway, for the tests that need
//! what only a separate process shows: being killed, or sending its own telemetry.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::TestApp;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `hepdb-worker` as a separate process with this test's settings, killed by pid.
pub struct WorkerProcess {
    child: Option<Child>,
    env: Vec<(String, String)>,
    admin_port: u16,
    /// Where its log lines go, appended across restarts, when a test reads them.
    log: Option<PathBuf>,
}

fn worker_binary() -> PathBuf {
    // target/debug/deps/chaos-<hash> -> target/debug/hepdb-worker
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("hepdb-worker");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --bin hepdb-worker` (cargo xtask chaos does)",
        bin.display()
    );
    bin
}

/// Leaves out the environment, which carries the test's URLs with their passwords.
impl std::fmt::Debug for WorkerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerProcess")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("admin_port", &self.admin_port)
            .finish_non_exhaustive()
    }
}

impl WorkerProcess {
    pub fn start(app: &TestApp) -> Self {
        Self::start_with(app, &[])
    }

    /// [`WorkerProcess::start`] with extra environment variables (later ones win).
    pub fn start_with(app: &TestApp, extra: &[(&str, &str)]) -> Self {
        Self::start_logged(app, extra, None)
    }

    /// [`WorkerProcess::start_with`], its log lines appended to `log` (read with
    /// [`WorkerProcess::log`]).
    pub fn start_logged(app: &TestApp, extra: &[(&str, &str)], log: Option<PathBuf>) -> Self {
        let s = &app.settings;
        let admin_port = free_port();
        let env = vec![
            ("HEPDB__METADATA__URL", s.metadata.url.expose().to_owned()),
            ("HEPDB__AMQP__URL", s.amqp.url.expose().to_owned()),
            ("HEPDB__AMQP__QUEUE_PREFIX", s.amqp.queue_prefix.clone()),
            (
                "HEPDB__AMQP__QUEUE_EXPIRES_SECS",
                s.amqp.queue_expires_secs.to_string(),
            ),
            (
                "HEPDB__GATEWAY__JOB_TIMEOUT_MS",
                s.gateway.job_timeout_ms.to_string(),
            ),
            (
                "HEPDB__WORKER__STALE_JOB_SECS",
                s.worker.stale_job_secs.to_string(),
            ),
            ("HEPDB__WORKER__RECONCILE_INTERVAL_SECS", "1".into()),
            (
                "HEPDB__WORKER__ADMIN_LISTEN",
                format!("127.0.0.1:{admin_port}"),
            ),
            ("HEPDB__ENGINES__POSTGRES__ENABLED", "true".into()),
            ("HEPDB__TELEMETRY__LOG_FILTER", "warn".into()),
        ]
        .into_iter()
        .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut w = Self {
            child: None,
            env,
            admin_port,
            log,
        };
        w.restart();
        w
    }

    pub fn restart(&mut self) {
        let child = Command::new(worker_binary())
            // Tests run on the development master key.
            .env("HEPDB__DEVELOPMENT", "true")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            // HEPDB_TEST_WORKER_LOGS=1 shows the worker's log lines, for debugging a test.
            .stderr(match &self.log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("the worker's log file")
                    .into(),
                None if std::env::var_os("HEPDB_TEST_WORKER_LOGS").is_some() => Stdio::inherit(),
                None => Stdio::null(),
            })
            .spawn()
            .expect("start hepdb-worker");
        self.child = Some(child);
    }

    /// Where its `/healthz`, `/readyz` and `/metrics` are.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// Waits until the worker's `/readyz` answers 200 (metadata and broker reachable).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// How many of its log lines so far contain `text` (0 without a log file).
    pub fn log_lines_with(&self, text: &str) -> usize {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map_or(0, |log| log.lines().filter(|l| l.contains(text)).count())
    }

    /// SIGKILL: no shutdown, no acks; whatever it was doing stops mid-step.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
