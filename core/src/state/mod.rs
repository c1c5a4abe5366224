//! The replicated state machine: what every server applies, in log order, from committed Raft entries.
//! Every write carries its Raft index, so `CreateIndex`/`ModifyIndex` are Raft indexes and agree on every
//! server. Reads report a per-range index (the highest change inside the range, tombstones included), so a
//! blocking query wakes only when the range it reads changes and its index never goes backwards.

mod catalog;
#[cfg(test)]
mod catalog_tests;
mod kv;
#[cfg(test)]
mod tests;
mod txn;
#[cfg(test)]
mod txn_tests;
mod watch;

pub use catalog::{
    fold, same_name, CatalogDump, CatalogError, CatalogNode, CatalogQuery, CatalogRange, CatalogResult, CatalogStore,
    CheckDefinition, CheckServiceNode, CheckStatus, HealthCheck, Registration, ServiceAddress, ServiceInstance,
    Weights,
};
pub use kv::KvStore;
pub use txn::{KvTxnOp, KvVerb, TxnError, TxnOp, TxnOutcome, TxnResult, TXN_MAX_OPS};
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
    /// `PUT /v1/catalog/register` (and anti-entropy): node, optional service and checks, atomically.
    CatalogRegister(Box<Registration>),
    /// `PUT /v1/catalog/deregister`: the node alone removes it with everything on it.
    CatalogDeregister {
        node: String,
        service_id: Option<String>,
        check_id: Option<String>,
    },
    /// A check's new status and output (anti-entropy of a check result).
    CatalogCheckUpdate {
        node: String,
        check_id: String,
        status: CheckStatus,
        output: String,
    },
    /// `PUT /v1/txn`: ops applied in order, all or nothing, in one log entry. Added at the end so older
    /// entries keep their postcard variant numbers; the snapshot format does not change (a transaction
    /// leaves only ordinary KV entries and tombstones behind).
    Txn(Vec<TxnOp>),
    /// Anti-entropy's catalog write, fenced by the agent's sync round: refused (as a no-op, with
    /// [`CatalogError::StaleSync`]) when a write of a later round of the same node was already applied, so a
    /// write of a failed round that reaches the leader late never undoes what a later round did.
    CatalogSync(Box<SyncWrite>),
    /// Network coordinates of nodes (Consul's `Coordinate.Update`, batched by the servers): one per node,
    /// replacing the previous; updates for nodes not in the catalog and invalid coordinates are skipped.
    CoordinateBatchUpdate(Vec<CoordinateUpdate>),
}

/// One node's new coordinate (Consul's `structs.Coordinate`; only the default segment exists here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinateUpdate {
    pub node: String,
    pub coord: crate::coordinate::Coordinate,
}

/// Where an anti-entropy round stands in its agent's history: ordered by the agent's start epoch, then by the
/// round counter within that run, so every round is later than every round of the agent's earlier runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SyncSeq {
    pub epoch: u64,
    pub round: u64,
}

impl std::fmt::Display for SyncSeq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.round)
    }
}

/// One fenced anti-entropy write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncWrite {
    pub seq: SyncSeq,
    pub write: CatalogWrite,
}

/// The catalog writes anti-entropy makes (the catalog variants of [`Command`], without nesting so the wire
/// form stays non-recursive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogWrite {
    Register(Box<Registration>),
    Deregister {
        node: String,
        service_id: Option<String>,
        check_id: Option<String>,
    },
    CheckUpdate {
        node: String,
        check_id: String,
        status: CheckStatus,
        output: String,
    },
}

impl CatalogWrite {
    /// The node whose sync round fences this write.
    pub fn node(&self) -> &str {
        match self {
            CatalogWrite::Register(reg) => &reg.node,
            CatalogWrite::Deregister { node, .. } | CatalogWrite::CheckUpdate { node, .. } => node,
        }
    }
}

/// The outcome of applying a command, returned to the client that proposed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// KV PUT and DELETE answer a literal `true` / `false`.
    Bool(bool),
    /// A catalog write that was refused as a whole (nothing changed).
    Refused(CatalogError),
    /// A transaction's results, or every error of one that was rolled back.
    Txn(TxnOutcome),
}

/// What one applied command changed, for the watch layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// KV keys whose entry or tombstone changed.
    pub keys: Vec<String>,
    /// Catalog ranges whose reads changed, each once.
    pub catalog: Vec<CatalogRange>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.catalog.is_empty()
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.catalog.clear();
    }
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
    /// This catalog write as part of anti-entropy round `seq` ([`Command::CatalogSync`]); other commands
    /// (and already fenced ones) are returned unchanged.
    pub fn fenced(self, seq: SyncSeq) -> Command {
        let write = match self {
            Command::CatalogRegister(reg) => CatalogWrite::Register(reg),
            Command::CatalogDeregister {
                node,
                service_id,
                check_id,
            } => CatalogWrite::Deregister {
                node,
                service_id,
                check_id,
            },
            Command::CatalogCheckUpdate {
                node,
                check_id,
                status,
                output,
            } => CatalogWrite::CheckUpdate {
                node,
                check_id,
                status,
                output,
            },
            other => return other,
        };
        Command::CatalogSync(Box::new(SyncWrite { seq, write }))
    }

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
    pub catalog: CatalogStore,
}

/// The snapshot format this build writes: the first byte of every snapshot. A build refuses a snapshot
/// whose format it does not know rather than misreading it; bump it whenever `Snapshot` or a store's
/// encoding changes, and keep reading the formats users may still have on disk.
///
/// - 1: KV and catalog (nodes, services, checks, range indexes).
/// - 2: the catalog also keeps the anti-entropy fences (last sync round applied per node) and the nodes'
///   network coordinates.
pub const SNAPSHOT_FORMAT: u8 = 2;

/// The oldest snapshot format this build still reads.
pub const OLDEST_SNAPSHOT_FORMAT: u8 = 1;

/// The snapshot form after the format byte: each store encodes itself.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    kv: Vec<u8>,
    catalog: Vec<u8>,
}

/// [`Snapshot`] as borrows, for encoding (serde writes a `&[u8]` as the same sequence as a `Vec<u8>`).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    kv: &'a [u8],
    catalog: &'a [u8],
}

impl StateMachine {
    /// Apply one committed command at Raft index `index`, recording in `changed` every KV key and catalog
    /// range it changed (the watch layer wakes exactly the ranges that contain one of them).
    pub fn apply(&mut self, index: u64, cmd: &Command, changed: &mut Changes) -> CommandResult {
        let done = |r: Result<(), CatalogError>| match r {
            Ok(()) => CommandResult::Bool(true),
            Err(e) => CommandResult::Refused(e),
        };
        match cmd {
            Command::KvSet { .. } | Command::KvDelete { .. } | Command::KvDeleteTree { .. } | Command::Txn(_) => {
                self.kv.apply(index, cmd, &mut changed.keys)
            }
            Command::KvReapTombstones { up_to } => {
                self.catalog.reap(*up_to);
                self.kv.apply(index, cmd, &mut changed.keys)
            }
            Command::CatalogRegister(reg) => done(self.catalog.register(index, reg, &mut changed.catalog)),
            Command::CatalogDeregister {
                node,
                service_id,
                check_id,
            } => done(self.catalog.deregister(
                index,
                node,
                service_id.as_deref(),
                check_id.as_deref(),
                &mut changed.catalog,
            )),
            Command::CatalogCheckUpdate {
                node,
                check_id,
                status,
                output,
            } => {
                self.catalog
                    .update_check(index, node, check_id, *status, output, &mut changed.catalog);
                CommandResult::Bool(true)
            }
            Command::CatalogSync(sync) => done(self.apply_sync(index, sync, changed)),
            Command::CoordinateBatchUpdate(updates) => {
                self.catalog.update_coordinates(index, updates, &mut changed.catalog);
                CommandResult::Bool(true)
            }
        }
    }

    /// A fenced anti-entropy write: refused if its node already had a later round applied; otherwise applied
    /// like the unfenced command, and (only if it applied) its round becomes the node's fence.
    fn apply_sync(&mut self, index: u64, sync: &SyncWrite, changed: &mut Changes) -> Result<(), CatalogError> {
        let node = sync.write.node();
        self.catalog.check_fence(node, sync.seq)?;
        match &sync.write {
            CatalogWrite::Register(reg) => self.catalog.register(index, reg, &mut changed.catalog)?,
            CatalogWrite::Deregister {
                node,
                service_id,
                check_id,
            } => self.catalog.deregister(
                index,
                node,
                service_id.as_deref(),
                check_id.as_deref(),
                &mut changed.catalog,
            )?,
            CatalogWrite::CheckUpdate {
                node,
                check_id,
                status,
                output,
            } => self
                .catalog
                .update_check(index, node, check_id, *status, output, &mut changed.catalog),
        }
        self.catalog.advance_fence(index, node, sync.seq);
        Ok(())
    }

    /// Encode the whole state for a Raft snapshot.
    pub fn snapshot(&self) -> Bytes {
        let (kv, catalog) = (self.kv.encode(), self.catalog.encode());
        // The format byte, then a `Snapshot` (two length-prefixed byte strings) written straight after it
        // into a buffer of the final size: no second copy of a store's bytes.
        let mut out = Vec::with_capacity(1 + kv.len() + catalog.len() + 2 * 10);
        out.push(SNAPSHOT_FORMAT);
        let snapshot = SnapshotRef {
            kv: &kv,
            catalog: &catalog,
        };
        Bytes::from(postcard::to_extend(&snapshot, out).expect("snapshots always encode"))
    }

    /// Decode a snapshot produced by [`StateMachine::snapshot`]. Never panics on corrupt input.
    pub fn restore(data: &[u8]) -> Result<Self, DecodeError> {
        let (format, data) = match data.split_first() {
            Some((&format, rest)) if (OLDEST_SNAPSHOT_FORMAT..=SNAPSHOT_FORMAT).contains(&format) => (format, rest),
            Some((format, _)) => {
                return Err(DecodeError::Snapshot(format!(
                    "snapshot format {format} is not one this version reads (it reads {OLDEST_SNAPSHOT_FORMAT} to {SNAPSHOT_FORMAT})"
                )))
            }
            None => return Err(DecodeError::Snapshot("empty snapshot".into())),
        };
        let snapshot: Snapshot = match postcard::take_from_bytes(data) {
            Ok((snapshot, [])) => snapshot,
            Ok(_) => return Err(DecodeError::Snapshot("trailing bytes".into())),
            Err(e) => return Err(DecodeError::Snapshot(e.to_string())),
        };
        Ok(StateMachine {
            kv: KvStore::decode(&snapshot.kv)?,
            catalog: CatalogStore::decode(&snapshot.catalog, format)?,
        })
    }
}
