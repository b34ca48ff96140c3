//! What hepdb-gateway refuses before it connects to anything: the published development
//! master key outside development mode, and a setting it does not know.

use std::process::{Command, Output};

/// Runs hepdb-gateway with only `env` among the HEPDB settings.
fn gateway(env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hepdb-gateway"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("HEPDB")) {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied())
        // Nothing to reach: it must stop before it tries.
        .env("HEPDB__METADATA__URL", "postgres://nobody@127.0.0.1:1/none")
        .env("HEPDB__AMQP__URL", "amqp://nobody:x@127.0.0.1:1/%2f")
        .output()
        .expect("run hepdb-gateway")
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_gateway_refuses_the_development_key_and_unknown_settings() {
    let why = refused(&gateway(&[]));
    assert!(why.contains("development key"), "{why}");
    assert!(why.contains("HEPDB__DEVELOPMENT"), "{why}");
    let why = refused(&gateway(&[
        ("HEPDB__DEVELOPMENT", "true"),
        ("HEPDB__RATE_LIMIT__KEY_READS_PER_MINUT", "1"),
    ]));
    assert!(why.contains("key_reads_per_minut"), "{why}");
}
