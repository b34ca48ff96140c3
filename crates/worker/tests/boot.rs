//! What the binary refuses before it connects to anything: the published development master
//! key outside development mode, and a setting it does not know.

use std::process::{Command, Output};

/// Runs hepdb-worker with only `env` among the HEPDB settings, and returns how it ended.
fn worker(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hepdb-worker"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("HEPDB")) {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied())
        // Nothing to reach: it must stop before it tries.
        .env("HEPDB__METADATA__URL", "postgres://nobody@127.0.0.1:1/none")
        .env("HEPDB__AMQP__URL", "amqp://nobody:x@127.0.0.1:1/%2f")
        .output()
        .expect("run hepdb-worker")
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_development_key_is_refused_outside_development_mode() {
    let why = refused(&worker(&[]));
    assert!(why.contains("HEPDB__CRYPTO__MASTER_KEY"), "{why}");
    assert!(why.contains("HEPDB__DEVELOPMENT"), "{why}");
    let why = refused(&worker(&[("HEPDB__DEVELOPMENT", "false")]));
    assert!(why.contains("development key"), "{why}");
}

#[test]
fn an_unknown_setting_is_refused_by_name() {
    for (key, named) in [
        ("HEPDB__WORKER__PREFECH", "prefech"),
        ("HEPDB__GATEWAY_LISTEN", "gateway_listen"),
        ("HEPDB__ENGINES__MARIADB__HOSTS__M1__CAPACTY", "capacty"),
    ] {
        let why = refused(&worker(&[("HEPDB__DEVELOPMENT", "true"), (key, "1")]));
        assert!(why.contains(named), "{key}: {why}");
    }
}
