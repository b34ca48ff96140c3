//! What hepdb's tests share, and nothing else depends on: a stack per test ([`TestApp`]), a
//! metadata database per test, the engines seen from outside (root accounts, provisioners set
//! up once per process, a tenant's own login), a `hepdb-worker` process to kill, a TCP proxy that cuts or
//! freezes a worker's connections, engine servers of a test's own (plain or TLS-only), and the
//! envelope's assertions.

mod app;
pub mod boot;
mod engines;
mod envelope;
pub mod metadata;
pub mod proxy;
pub mod servers;
mod worker_process;

pub use app::*;
pub use engines::*;
pub use envelope::*;
pub use worker_process::WorkerProcess;
