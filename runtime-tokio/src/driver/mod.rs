//! The node driver: one task owns the `Node`, with no lock around it. It selects over the next deadline,
//! incoming peer messages, client requests and storage completions, and carries out effects. It is written
//! against the device traits below so the same code runs in production (tokio, fjall, TCP) and in the
//! simulator (madsim, simulated disk and network).

use concord_core::raft::{Membership, PersistOp, Recovered};
use concord_core::{Instant, NodeId, PeerMessage};
use std::future::Future;

/// The clock and timers. `now` never goes backwards.
pub trait Clock: Clone + Send + Sync + 'static {
    fn now(&self) -> Instant;
    fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send;
}

/// Outgoing peer messages. Incoming ones reach the driver on a channel of `(from, message)`.
pub trait Transport: Send + 'static {
    /// Queue `msg` for `to`; never blocks the driver (a full or unreachable peer drops it — Raft retries).
    fn send(&mut self, to: NodeId, msg: PeerMessage);
    /// The servers and their addresses changed.
    fn set_membership(&mut self, membership: &Membership);
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("corrupt storage: {0}")]
    Corrupt(String),
    #[error("data dir {0} is in use by another concord process")]
    Locked(String),
}

/// Durable storage of the Raft log, hard state and snapshots. Called from a dedicated writer (a thread in
/// production), never from the driver task: `stage` buffers, `sync` makes everything staged durable.
pub trait LogStore: Send + 'static {
    /// Read back what is durable. A torn or corrupt tail is truncated (and logged), never returned.
    fn recover(&mut self) -> Result<Recovered, StorageError>;
    fn stage(&mut self, op: &PersistOp) -> Result<(), StorageError>;
    fn sync(&mut self) -> Result<(), StorageError>;
}
