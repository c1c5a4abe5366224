//! The replicated state machine: what every server applies, in log order, from committed Raft entries.
//! Every write carries its Raft index, so `CreateIndex`/`ModifyIndex` are Raft indexes and agree on every
//! server. Reads report a per-range index (the highest change inside the range, tombstones included), so a
//! blocking query wakes only when the range it reads changes and its index never goes backwards.

mod kv;
#[cfg(test)]
mod tests;
mod watch;

pub use kv::KvStore;
pub use watch::{KeyRange, WatchId, Watches};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A write, proposed through Raft and applied on every server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `PUT /v1/kv/<key>`. `cas: Some(0)` creates only if absent; `Some(n)` writes only if ModifyIndex == n.
    KvSet {
        key: String,
        value: Bytes,
        flags: u64,
        cas: Option<u64>,
    },
    /// `DELETE /v1/kv/<key>`. `cas: Some(n)` deletes only if ModifyIndex == n (`Some(0)` deletes nothing).
    KvDelete { key: String, cas: Option<u64> },
    /// `DELETE /v1/kv/<prefix>?recurse`.
    KvDeleteTree { prefix: String },
    /// Forget tombstones with index <= `up_to`; ranges then report at least `up_to` so indexes never go back.
    KvReapTombstones { up_to: u64 },
}

/// The outcome of applying a command, returned to the client that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// KV PUT and DELETE answer a literal `true` / `false`.
    Bool(bool),
}

/// One KV entry as Consul shapes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub key: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub flags: u64,
    pub value: Bytes,
    pub session: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt state machine snapshot: {0}")]
    Snapshot(String),
    #[error("corrupt command: {0}")]
    Command(String),
}

impl Command {
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("commands always encode"))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match postcard::take_from_bytes(bytes) {
            Ok((cmd, [])) => Ok(cmd),
            Ok(_) => Err(DecodeError::Command("trailing bytes".into())),
            Err(e) => Err(DecodeError::Command(e.to_string())),
        }
    }
}

/// Everything the servers replicate. Lives in memory (like Consul's memdb) and is rebuilt from the latest
/// snapshot plus the log on start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    pub kv: KvStore,
}

impl StateMachine {
    /// Apply one committed command at Raft index `index`, pushing every key whose entry or tombstone it
    /// changed onto `changed` (the watch layer wakes exactly the ranges that contain one of them).
    pub fn apply(&mut self, index: u64, cmd: &Command, changed: &mut Vec<String>) -> CommandResult {
        self.kv.apply(index, cmd, changed)
    }

    /// Encode the whole state for a Raft snapshot.
    pub fn snapshot(&self) -> Bytes {
        Bytes::from(self.kv.encode())
    }

    /// Decode a snapshot produced by [`StateMachine::snapshot`]. Never panics on corrupt input.
    pub fn restore(data: &[u8]) -> Result<Self, DecodeError> {
        Ok(StateMachine {
            kv: KvStore::decode(data)?,
        })
    }
}
