//! What hepdb-gateway refuses before it connects to anything: the published development
//! master key outside development mode, and a setting it does not know.

use hepdb_testkit::boot::{refused, run_isolated};

fn gateway(env: &[(&str, &str)]) -> std::process::Output {
    run_isolated(env!("CARGO_BIN_EXE_hepdb-gateway"), &[], env)
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
