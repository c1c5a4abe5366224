//! Placeholder: lands with its module.

// --- TEMPORARY STUB (added by the http/cli helper so `concord agent` compiles) ---------------------------
// The agent module's real `run` and `AgentError` replace everything below this line.
/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AgentError(pub String);

/// Run the agent until it leaves or is stopped. Stub: always fails.
pub fn run(_config: crate::config::AgentConfig) -> Result<(), AgentError> {
    Err(AgentError("the agent is not implemented yet".to_string()))
}
