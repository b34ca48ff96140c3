//! A metadata database of the test's own, on the configured server, so that tests never see
//! each other's rows. `cargo xtask clean` drops the ones earlier runs left.

use hepdb_core::settings::{Secret, Settings};

/// Points `settings` at a database of its own, `hepdb_test_<tag>` (or
/// `hepdb_test_<purpose>_<tag>`), which `hepdb_store::migrate::migrate` creates. Returns the
/// tag, unique per call, for naming the test's other resources (its queues).
pub fn own_metadata(settings: &mut Settings, purpose: &str) -> String {
    let tag = ulid::Ulid::new().to_string().to_lowercase();
    let url = settings.metadata.url.expose();
    let base = url
        .rsplit_once('/')
        .map_or(url, |(base, _)| base)
        .to_owned();
    let name = match purpose {
        "" => format!("hepdb_test_{tag}"),
        purpose => format!("hepdb_test_{purpose}_{tag}"),
    };
    settings.metadata.url = Secret::new(format!("{base}/{name}"));
    tag
}
