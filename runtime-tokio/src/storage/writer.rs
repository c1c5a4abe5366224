//! The storage writer: a dedicated OS thread that owns the `LogStore` and commits in groups.
//!
//! It blocks for the next batch, then takes every batch already queued behind it, stages them all in
//! order and syncs once: under load, many `Effect::Persist`s share one fsync. It then reports the highest
//! sequence number staged, which is durable together with every lower one. After an error it reports it
//! and stops, because nothing after a failed write may be reported durable.

use crate::driver::{LogStore, StorageError};
use concord_core::raft::PersistOp;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// The handles of a running writer thread.
pub struct Writer {
    /// Batches to make durable: `(seq, ops)`, seqs increasing (the `seq` of `Effect::Persist`).
    pub tx: UnboundedSender<(u64, Vec<PersistOp>)>,
    /// `Ok(seq)`: every batch with a seq up to this one is durable (feed `Input::Persisted { up_to }`).
    /// `Err(e)`: a write failed; the thread has stopped.
    pub done: UnboundedReceiver<Result<u64, StorageError>>,
    /// The thread. It ends once every `tx` is dropped and the queue is drained (or after an error), and
    /// then drops the store (for `FjallStore`, closing fjall and releasing the data-dir lock): join it on
    /// shutdown.
    pub thread: std::thread::JoinHandle<()>,
}

/// Start the writer thread ("concord-storage") owning `store`. Call `store.recover()` before.
pub fn spawn_writer(store: Box<dyn LogStore>) -> Writer {
    let (tx, rx) = unbounded_channel();
    let (done_tx, done) = unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("concord-storage".into())
        .spawn(move || run(store, rx, done_tx))
        .expect("cannot spawn the storage writer thread");
    Writer { tx, done, thread }
}

fn run(
    mut store: Box<dyn LogStore>,
    mut rx: UnboundedReceiver<(u64, Vec<PersistOp>)>,
    done: UnboundedSender<Result<u64, StorageError>>,
) {
    while let Some((seq, ops)) = rx.blocking_recv() {
        let mut up_to = seq;
        let mut result = stage_all(&mut *store, &ops);
        while result.is_ok() {
            let Ok((seq, ops)) = rx.try_recv() else { break };
            up_to = up_to.max(seq);
            result = stage_all(&mut *store, &ops);
        }
        match result.and_then(|()| store.sync()) {
            Ok(()) => {
                if done.send(Ok(up_to)).is_err() {
                    return; // The driver is gone.
                }
            }
            Err(e) => {
                tracing::error!("storage write failed, no further writes will be made: {e}");
                let _ = done.send(Err(e));
                return;
            }
        }
    }
}

fn stage_all(store: &mut dyn LogStore, ops: &[PersistOp]) -> Result<(), StorageError> {
    ops.iter().try_for_each(|op| store.stage(op))
}
