//! What the binary refuses before it connects to anything: the published development master
//! key outside development mode, and a setting it does not know.

use hepdb_testkit::boot::{refused, run_isolated};

fn worker(env: &[(&str, &str)]) -> std::process::Output {
    run_isolated(env!("CARGO_BIN_EXE_hepdb-worker"), &[], env)
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
