//! Engine servers of a test's own: a `mariadbd` and a MongoDB stand-in (smongo), each on a free
//! port with its own data directory, stopped and deleted when dropped. Optionally TLS-only
//! with the certificate `.ci/services.sh` makes ([`tls_file`]).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One of the test certificates `.ci/services.sh` makes: `ca.crt`, `server.crt`,
/// `server.key`, and `other-ca.crt` (a CA that signed nothing the servers present).
pub fn tls_file(name: &str) -> String {
    let dir =
        std::env::var("HEPDB_ENGINES_DIR").unwrap_or_else(|_| "/var/tmp/hepdb-engines".into());
    let path = PathBuf::from(dir).join("tls").join(name);
    assert!(
        path.exists(),
        "{} (made by .ci/services.sh)",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

/// The Python of the virtualenv `.ci/services.sh` installs smongo into.
pub fn smongo_python() -> PathBuf {
    let venv =
        std::env::var("HEPDB_SMONGO_VENV").unwrap_or_else(|_| "/var/tmp/hepdb-smongo".into());
    PathBuf::from(venv).join("bin/python")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `mariadbd` of the test's own (root without a password), which it may stop and start.
#[derive(Debug)]
pub struct PrivateMariadb {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    tls: bool,
}

impl PrivateMariadb {
    /// Installs a data directory and starts the server; with `tls`, it serves the tests'
    /// certificate.
    pub fn start(tls: bool) -> Self {
        let port = free_port();
        let dir = PathBuf::from(format!("/var/tmp/hepdb-engines/mariadb-test-{port}"));
        // Seen failing once in CI with several tests installing at once: tried up to three
        // times, and its own words are kept for the panic.
        let mut failures = Vec::new();
        while failures.len() < 3 {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let out = Command::new("mariadb-install-db")
                .arg(format!("--datadir={}", dir.join("data").display()))
                .args([
                    "--user=mysql",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ])
                .output()
                .expect("mariadb-install-db");
            if out.status.success() {
                break;
            }
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        assert!(
            failures.len() < 3,
            "mariadb-install-db failed: {failures:#?}"
        );
        if tls {
            // The server reads its key as the mysql user.
            for file in ["server.crt", "server.key", "ca.crt"] {
                std::fs::copy(tls_file(file), dir.join(file)).unwrap();
            }
        }
        let owned = Command::new("chown")
            .args(["-R", "mysql:"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(owned.success());
        let mut me = Self {
            child: None,
            port,
            dir,
            tls,
        };
        me.run();
        me
    }

    /// Starts `mariadbd` on the existing data directory and waits until it listens.
    pub fn run(&mut self) {
        let d = self.dir.display();
        let mut args = vec![
            "--no-defaults".to_owned(),
            format!("--datadir={d}/data"),
            format!("--port={}", self.port),
            format!("--socket={d}/mysqld.sock"),
            format!("--pid-file={d}/mysqld.pid"),
            format!("--log-error={d}/error.log"),
            "--bind-address=127.0.0.1".into(),
            "--user=mysql".into(),
            "--innodb-buffer-pool-size=16M".into(),
        ];
        if self.tls {
            args.extend([
                format!("--ssl-cert={d}/server.crt"),
                format!("--ssl-key={d}/server.key"),
                format!("--ssl-ca={d}/ca.crt"),
            ]);
        }
        let child = Command::new("/usr/sbin/mariadbd")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        wait_listening(self.port, "mariadbd");
    }

    /// Stops the server (SIGKILL: an outage, not a maintenance window).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn root_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A smongo of the test's own, with a seeded root: its `dropDatabase` empties the whole server,
/// so tests that drop get one each.
#[derive(Debug)]
pub struct PrivateMongo {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    root_password: String,
}

impl PrivateMongo {
    /// Starts it; with `tls`, it speaks only TLS, with the tests' certificate.
    pub fn start(root_password: &str, tls: bool) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hepdb-smongo-{port}"));
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../xtask/scripts/smongo_engine.py"
        );
        let mut cmd = Command::new(smongo_python());
        cmd.arg(script)
            .args([
                "--port",
                &port.to_string(),
                "--root-password",
                root_password,
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null());
        if tls {
            cmd.args([
                "--tls-cert",
                &tls_file("server.crt"),
                "--tls-key",
                &tls_file("server.key"),
            ]);
        }
        let child = cmd
            .spawn()
            .expect("smongo's virtualenv (made by .ci/services.sh)");
        wait_listening(port, "smongo");
        Self {
            child,
            port,
            dir,
            root_password: root_password.to_owned(),
        }
    }

    pub fn root_url(&self) -> String {
        format!(
            "mongodb://root:{}@127.0.0.1:{}/admin",
            self.root_password, self.port
        )
    }

    /// The provisioner `Mongo::bootstrap` makes, by the name and password the defaults use.
    pub fn provisioner_url(&self) -> String {
        format!(
            "mongodb://hepdb_provisioner:hepdb-dev-provisioner@127.0.0.1:{}/admin",
            self.port
        )
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
