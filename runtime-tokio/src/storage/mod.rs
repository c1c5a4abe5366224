//! Durable storage of the Raft log, hard state and snapshots, and the writer thread that makes it durable
//! with group commit.
//!
//! - [`FjallStore`]: production storage under `<data_dir>/raft/`. The log and hard state live in fjall
//!   (`raft/log/`); snapshots are whole files in `raft/snapshots/`. `<data_dir>/LOCK` is held for the
//!   store's lifetime so two agents never share a data dir.
//! - [`MemStore`]: the same semantics in memory, for `-dev` (nothing survives the process).
//! - [`spawn_writer`]: a dedicated OS thread that stages every queued batch, syncs once and reports the
//!   highest sequence number now durable.
//!
//! Invariants:
//! - Every stored value (log entry, hard state, snapshot file) carries a crc32 of its postcard bytes, so a
//!   torn or bit-flipped write is detected, never served.
//! - The stored log is contiguous. Recovery enforces it: the first entry that fails its checksum, does not
//!   decode or leaves a gap ends the log; it and everything after it are deleted (a torn tail). Staging
//!   refuses an append that would leave a gap.
//! - A snapshot file is durable before the log entries it covers are deleted, so a crash in between leaves
//!   redundant entries (ignored and deleted at recovery), never missing ones.
//! - A corrupt hard state stops the node (`StorageError::Corrupt`): forgetting a vote could elect two
//!   leaders in one term, which is worse than refusing to start.

pub(crate) mod codec;
mod fjall_store;
mod mem;
pub(crate) mod snapshot_file;
mod writer;

#[cfg(test)]
mod tests;

pub use fjall_store::{FjallStore, RecoveryReport};
pub use mem::MemStore;
pub use writer::{spawn_writer, Writer};

use crate::driver::StorageError;
use concord_core::raft::{Entry, Index};

/// Check that `entries` are contiguous and extend a log whose last index (or the snapshot's, when the log
/// is empty) is `last_index` without a gap. Such an append is a bug upstream; storing it would lose every
/// entry after the gap at the next recovery, so it is refused.
fn check_append(entries: &[Entry], last_index: Index) -> Result<(), StorageError> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if first.index == 0 || first.index > last_index + 1 {
        return Err(StorageError::Corrupt(format!(
            "refusing to append entries from index {} after last index {last_index}: the log would have a gap",
            first.index
        )));
    }
    for (offset, entry) in entries.iter().enumerate() {
        if entry.index != first.index + offset as u64 {
            return Err(StorageError::Corrupt(format!(
                "refusing to append non-contiguous entries: index {} at position {offset} after {}",
                entry.index, first.index
            )));
        }
    }
    Ok(())
}
