//! A hepdb binary started with none of the environment's HEPDB settings but the ones a test
//! gives, pointed at nothing it could reach: for what it must refuse before it connects.

use std::process::{Command, Output};

/// Runs the binary at `path` with only `env` among the HEPDB settings (plus unreachable
/// metadata and broker URLs), and returns how it ended.
pub fn run_isolated(path: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(path);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("HEPDB")) {
        cmd.env_remove(key);
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("HEPDB__METADATA__URL", "postgres://nobody@127.0.0.1:1/none")
        .env("HEPDB__AMQP__URL", "amqp://nobody:x@127.0.0.1:1/%2f")
        .output()
        .unwrap_or_else(|e| panic!("run {path}: {e}"))
}

/// The message of a run that must have refused to start.
pub fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}
