//! Raft consensus. Placeholder until the Raft module lands.
mod types;
pub use types::*;
