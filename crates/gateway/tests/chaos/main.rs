//! Fault injection against the real stack (`cargo xtask chaos`, part of `cargo xtask ci`).
//!
//! Each scenario really breaks something (a worker process killed by pid with SIGKILL, the
//! broker stopped, the worker's network to the broker and the engines cut or frozen through
//! a proxy, engine sessions killed, racing requests, a foreign database in the way), then
//! checks the whole state from the outside: API, metadata and the engines. Each prints one
//! line: `chaos: <scenario>: operations=N faults=M inconsistencies=0`.
//!
//! The tests are `#[ignore]`d so that the ordinary suite does not run them next to other tests:
//! they stop the shared broker. `cargo xtask chaos` runs them one at a time.

mod scenarios;
mod world;
