//! Messages between gateway and worker. Both carry a version so that a gateway and a worker of
//! different releases can run side by side during a rolling deploy: a worker refuses (and
//! dead-letters) a version it does not know instead of guessing.
//!
//! A job message carries only ids: the intent itself (names, the sealed password) is in
//! metadata, written before the message is published, so a message can never disagree with it.

use serde::{Deserialize, Serialize};

use crate::{ApiError, DatabaseId, JobId, state::JobKind};

/// The message format this build writes and understands.
pub const MESSAGE_VERSION: u32 = 1;

/// A create or rotate job on the jobs queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    pub v: u32,
    pub job_id: JobId,
    pub database_id: DatabaseId,
    pub kind: JobKindWire,
}

/// [`JobKind`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKindWire {
    Create,
    Rotate,
    Access,
    Delete,
}

impl From<JobKind> for JobKindWire {
    fn from(k: JobKind) -> Self {
        match k {
            JobKind::Create => JobKindWire::Create,
            JobKind::Rotate => JobKindWire::Rotate,
            JobKind::Access => JobKindWire::Access,
            JobKind::Delete => JobKindWire::Delete,
        }
    }
}

impl From<JobKindWire> for JobKind {
    fn from(k: JobKindWire) -> Self {
        match k {
            JobKindWire::Create => JobKind::Create,
            JobKindWire::Rotate => JobKind::Rotate,
            JobKindWire::Access => JobKind::Access,
            JobKindWire::Delete => JobKind::Delete,
        }
    }
}

/// The worker's answer, sent to the gateway's reply queue with the job id as correlation id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReply {
    pub v: u32,
    pub job_id: JobId,
    pub outcome: JobOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "error")]
pub enum JobOutcome {
    Done,
    Failed(JobFailure),
}

/// Why a job failed, in terms the gateway can turn into a catalog error. Stored in metadata
/// (`jobs.error_code`) too, so a late caller gets the same answer as the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobFailure {
    /// The engine could not be reached or refused the admin connection.
    EngineUnavailable,
    /// An engine object with the generated name exists and is not hepdb's.
    EngineConflict,
    /// The job kept failing and was dead-lettered.
    Poisoned,
    /// Anything else; details are in the worker's log, never in the reply.
    Internal,
    /// The database is being deleted (or is gone): nothing was changed.
    Gone,
}

impl JobFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            JobFailure::EngineUnavailable => "ENGINE_UNAVAILABLE",
            JobFailure::EngineConflict => "ENGINE_CONFLICT",
            JobFailure::Poisoned => "POISONED",
            JobFailure::Internal => "INTERNAL",
            JobFailure::Gone => "GONE",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "ENGINE_UNAVAILABLE" => JobFailure::EngineUnavailable,
            "ENGINE_CONFLICT" => JobFailure::EngineConflict,
            "POISONED" => JobFailure::Poisoned,
            "GONE" => JobFailure::Gone,
            _ => JobFailure::Internal,
        }
    }
}

impl From<JobFailure> for ApiError {
    fn from(f: JobFailure) -> Self {
        match f {
            JobFailure::EngineUnavailable => ApiError::EngineUnavailable,
            JobFailure::EngineConflict => ApiError::EngineConflict,
            JobFailure::Poisoned | JobFailure::Internal => ApiError::Internal,
            JobFailure::Gone => ApiError::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let reply = JobReply {
            v: MESSAGE_VERSION,
            job_id: "01HV000000000000000000000A".parse().unwrap(),
            outcome: JobOutcome::Failed(JobFailure::EngineUnavailable),
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v": 1, "job_id": "01HV000000000000000000000A",
                "outcome": {"status": "failed", "error": "ENGINE_UNAVAILABLE"}})
        );
        assert_eq!(serde_json::from_value::<JobReply>(json).unwrap(), reply);
        let done = serde_json::to_value(JobOutcome::Done).unwrap();
        assert_eq!(done, serde_json::json!({"status": "done"}));
        for f in [
            JobFailure::EngineUnavailable,
            JobFailure::EngineConflict,
            JobFailure::Poisoned,
            JobFailure::Internal,
        ] {
            assert_eq!(JobFailure::parse(f.as_str()), f);
        }
    }
}
