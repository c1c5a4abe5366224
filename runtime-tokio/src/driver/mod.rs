//! The node driver: one task owns the `Node`, with no lock around it. It selects over the next deadline,
//! incoming peer messages, client requests and storage completions, and carries out effects. It is written
//! against the device traits below so the same code runs in production (tokio, fjall, TCP) and in the
//! simulator (madsim, simulated disk and network).
//!
//! Invariants of the loop (see `event_loop.rs`):
//! - the clock is read once per iteration and every input of that iteration is handled at that instant;
//! - every `Effect::Persist` produced in one iteration reaches storage as one batch (group commit), tagged
//!   with the highest seq of the batch, after the iteration's inputs are all handled;
//! - only `tokio::sync` channels and a `biased` `tokio::select!` are used (no tokio timer, socket or spawn,
//!   no ambient randomness), so madsim can run the very same code deterministically.

mod event_loop;
mod handle;
#[cfg(all(test, feature = "server"))]
mod tests;

pub use event_loop::{start, DriverExit, MAX_INPUTS_PER_ITERATION};
pub use handle::{Applied, DriverHandle, CLIENT_QUEUE};

use concord_core::raft::{Membership, PersistOp, Recovered};
use concord_core::{Instant, NodeId, PeerMessage};
use std::future::Future;
use tokio::sync::mpsc;

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
    /// The next message the transport knows it never handed to its peer (no connection could be made).
    /// The driver feeds it back as `Input::Undelivered` so forwarded requests are re-routed instead of
    /// timing out. Must be cancel-safe. The default never yields.
    fn undelivered(&mut self) -> impl Future<Output = (NodeId, PeerMessage)> + Send {
        std::future::pending()
    }
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

/// The leaf devices one driver runs on. Production: a tokio clock, the TCP transport and the fjall writer
/// thread; simulation: madsim's clock, a simulated network and a simulated disk.
pub struct Devices<C: Clock, T: Transport> {
    pub clock: C,
    pub transport: T,
    /// Messages from other servers, already attributed to their sender.
    pub peer_rx: mpsc::Receiver<(NodeId, PeerMessage)>,
    /// Batches to make durable: `(highest seq in the batch, ops in order)`.
    pub persist_tx: mpsc::UnboundedSender<(u64, Vec<PersistOp>)>,
    /// Storage completions: `Ok(up_to)` once every batch with seq `<= up_to` is durable.
    pub persisted_rx: mpsc::UnboundedReceiver<Result<u64, StorageError>>,
    /// Every `Event` the node emits, in order (the simulator's checkers); `None` in production.
    pub events: Option<mpsc::UnboundedSender<concord_core::Event>>,
}
