//! The KV tree (Consul's `kvs` table, `agent/consul/state/kvs.go`) with tombstones.
//!
//! Invariants:
//! - Every write carries its Raft index; `CreateIndex`/`ModifyIndex` and tombstone indexes are Raft indexes,
//!   so every server holds the same tree after the same log.
//! - A key is either live (in `entries`) or tombstoned (in `tombstones`), never both.
//! - The index of a range is the highest of: the ModifyIndex of its live entries, the delete index of its
//!   tombstones, and the reap floor, and at least 1. Since every change at index `i` leaves `i` behind (as a
//!   ModifyIndex or a tombstone) and reaping only drops tombstones at or below the floor it raises, a range's
//!   index never goes backwards and strictly increases whenever a key in it changes (for writes at index
//!   2 or later: an untouched range reports 1, so a write at index 1 would not move it; in Raft index 1 is
//!   the first leader's no-op entry, never a KV write).
//! - Applying a command never panics, whatever its content.
use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{Command, CommandResult, DecodeError, KeyRange, KvEntry};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    pub(super) entries: BTreeMap<String, KvEntry>,
    /// Deleted key → Raft index of the delete, kept so the range's index does not go backwards.
    pub(super) tombstones: BTreeMap<String, u64>,
    /// Highest `up_to` of any reap: reaped tombstones were at or below it, so ranges report at least this.
    reap_floor: u64,
}

/// The snapshot form of [`KvStore`]: entries and tombstones in key order.
#[derive(Serialize, Deserialize)]
struct KvSnapshot {
    entries: Vec<KvEntry>,
    tombstones: Vec<(String, u64)>,
    reap_floor: u64,
}

/// [`KvSnapshot`] as borrows of the live store, for encoding (field for field the same wire form).
#[derive(Serialize)]
struct KvSnapshotRef<'a> {
    entries: Vec<&'a KvEntry>,
    tombstones: Vec<(&'a str, u64)>,
    reap_floor: u64,
}

/// Entries of `map` whose key starts with `prefix`, in key order.
pub(super) fn prefixed<'a, V>(
    map: &'a BTreeMap<String, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> + 'a {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

impl KvStore {
    /// Apply one committed command at Raft index `index`, pushing every key whose entry or tombstone it
    /// created, modified or deleted onto `changed` (nothing when the command changed nothing, e.g. a failed
    /// CAS). Reaping tombstones pushes nothing: it changes no entry and lowers no range index.
    pub fn apply(&mut self, index: u64, cmd: &Command, changed: &mut Vec<String>) -> CommandResult {
        match cmd {
            Command::KvSet { key, value, flags, cas } => {
                CommandResult::Bool(self.set(index, key, value, *flags, *cas, changed))
            }
            Command::KvDelete { key, cas } => CommandResult::Bool(self.delete(index, key, *cas, changed)),
            Command::KvDeleteTree { prefix } => {
                self.delete_tree(index, prefix, changed);
                CommandResult::Bool(true)
            }
            Command::KvReapTombstones { up_to } => {
                self.reap(*up_to);
                CommandResult::Bool(true)
            }
            Command::Txn(ops) => CommandResult::Txn(self.txn(index, ops, changed)),
            // Not a KV command: the state machine routes those elsewhere.
            Command::CatalogRegister(_)
            | Command::CatalogDeregister { .. }
            | Command::CatalogCheckUpdate { .. }
            | Command::CatalogSync(_)
            | Command::CoordinateBatchUpdate(_) => CommandResult::Bool(false),
        }
    }

    pub(super) fn set(
        &mut self,
        index: u64,
        key: &str,
        value: &bytes::Bytes,
        flags: u64,
        cas: Option<u64>,
        changed: &mut Vec<String>,
    ) -> bool {
        let existing = self.entries.get_mut(key);
        match (cas, existing.as_deref()) {
            (Some(0), Some(_)) => return false,
            (Some(n), Some(e)) if e.modify_index != n => return false,
            (Some(n), None) if n != 0 => return false,
            _ => {}
        }
        match existing {
            Some(e) => {
                // A plain PUT ignores locks: CreateIndex, LockIndex and Session stay.
                e.modify_index = index;
                e.flags = flags;
                e.value = value.clone();
            }
            None => {
                self.tombstones.remove(key);
                let entry = KvEntry {
                    key: key.to_owned(),
                    create_index: index,
                    modify_index: index,
                    lock_index: 0,
                    flags,
                    value: value.clone(),
                    session: None,
                };
                self.entries.insert(key.to_owned(), entry);
            }
        }
        changed.push(key.to_owned());
        true
    }

    pub(super) fn delete(&mut self, index: u64, key: &str, cas: Option<u64>, changed: &mut Vec<String>) -> bool {
        let Some(entry) = self.entries.get(key) else {
            // Consul answers true for a delete of an absent key, with or without cas.
            return true;
        };
        if cas.is_some_and(|n| entry.modify_index != n) {
            return false;
        }
        self.entries.remove(key);
        self.tombstones.insert(key.to_owned(), index);
        changed.push(key.to_owned());
        true
    }

    pub(super) fn delete_tree(&mut self, index: u64, prefix: &str, changed: &mut Vec<String>) {
        let doomed: Vec<String> = prefixed(&self.entries, prefix).map(|(k, _)| k.clone()).collect();
        for key in doomed {
            self.entries.remove(&key);
            self.tombstones.insert(key.clone(), index);
            changed.push(key);
        }
    }

    fn reap(&mut self, up_to: u64) {
        self.tombstones.retain(|_, deleted_at| *deleted_at > up_to);
        self.reap_floor = self.reap_floor.max(up_to);
    }

    /// (index of the range `Key(key)`, entry)
    pub fn get(&self, key: &str) -> (u64, Option<KvEntry>) {
        let index = self.range_index(&KeyRange::Key(key.to_owned()));
        (index, self.entries.get(key).cloned())
    }

    /// (index of the range `Prefix(prefix)`, its entries in key order)
    pub fn list(&self, prefix: &str) -> (u64, Vec<KvEntry>) {
        let entries = prefixed(&self.entries, prefix).map(|(_, e)| e.clone()).collect();
        (self.prefix_index(prefix), entries)
    }

    /// (index of the range `Prefix(prefix)`, key names in order). With a separator, each key is cut just
    /// after the first separator that follows the prefix and repeats are dropped, so "directories" show
    /// once with a trailing separator (`?keys&separator=/`). An empty separator means none, as in Consul.
    pub fn keys(&self, prefix: &str, separator: Option<&str>) -> (u64, Vec<String>) {
        let separator = separator.filter(|s| !s.is_empty());
        let mut keys: Vec<String> = Vec::new();
        for (key, _) in prefixed(&self.entries, prefix) {
            let cut = match separator {
                Some(sep) => match key[prefix.len()..].find(sep) {
                    Some(at) => &key[..prefix.len() + at + sep.len()],
                    None => key.as_str(),
                },
                None => key.as_str(),
            };
            // Keys sharing a cut are adjacent in key order (they all start with it), so this dedups fully.
            if keys.last().map(String::as_str) != Some(cut) {
                keys.push(cut.to_owned());
            }
        }
        (self.prefix_index(prefix), keys)
    }

    /// The index a read of `range` reports (X-Consul-Index): never 0, never backwards.
    pub fn range_index(&self, range: &KeyRange) -> u64 {
        match range {
            KeyRange::Key(key) => {
                let live = self.entries.get(key.as_str()).map_or(0, |e| e.modify_index);
                let deleted = self.tombstones.get(key.as_str()).copied().unwrap_or(0);
                live.max(deleted).max(self.reap_floor).max(1)
            }
            KeyRange::Prefix(prefix) => self.prefix_index(prefix),
            KeyRange::Catalog(_) => self.reap_floor.max(1),
        }
    }

    fn prefix_index(&self, prefix: &str) -> u64 {
        let live = prefixed(&self.entries, prefix)
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        let deleted = prefixed(&self.tombstones, prefix).map(|(_, i)| *i).max().unwrap_or(0);
        live.max(deleted).max(self.reap_floor).max(1)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of tombstones not yet reaped (the lead reaps them with `KvReapTombstones`).
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// The highest `up_to` reaped so far: every range reports at least this index.
    pub fn reap_floor(&self) -> u64 {
        self.reap_floor
    }

    pub fn encode(&self) -> Vec<u8> {
        // Encoded from borrows: the same bytes as a `KvSnapshot` (postcard writes `&T` as `T`, `&str` as
        // `String`) without first cloning every key and value of the store.
        let snapshot = KvSnapshotRef {
            entries: self.entries.values().collect(),
            tombstones: self.tombstones.iter().map(|(k, i)| (k.as_str(), *i)).collect(),
            reap_floor: self.reap_floor,
        };
        postcard::to_allocvec(&snapshot).expect("a KV snapshot always encodes")
    }

    /// Decode what [`KvStore::encode`] produced. Never panics; rejects trailing bytes, duplicate keys and
    /// keys that are both live and tombstoned.
    pub fn decode(data: &[u8]) -> Result<Self, DecodeError> {
        let snapshot: KvSnapshot = match postcard::take_from_bytes(data) {
            Ok((snapshot, [])) => snapshot,
            Ok(_) => return Err(DecodeError::Snapshot("trailing bytes".into())),
            Err(e) => return Err(DecodeError::Snapshot(e.to_string())),
        };
        let mut store = KvStore {
            reap_floor: snapshot.reap_floor,
            ..KvStore::default()
        };
        for entry in snapshot.entries {
            let key = entry.key.clone();
            if store.entries.insert(key, entry).is_some() {
                return Err(DecodeError::Snapshot("duplicate KV key".into()));
            }
        }
        for (key, index) in snapshot.tombstones {
            if store.entries.contains_key(&key) || store.tombstones.insert(key, index).is_some() {
                return Err(DecodeError::Snapshot("duplicate KV tombstone".into()));
            }
        }
        Ok(store)
    }
}
