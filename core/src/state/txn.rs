//! `PUT /v1/txn` (Consul's `agent/consul/state/txn.go`): a list of KV operations applied as one Raft entry,
//! all or nothing.
//!
//! Invariants:
//! - Every op runs in order against the state left by the ops before it, at the one Raft index of the entry.
//! - If any op fails, every op runs anyway (so every error is reported, each with its op index, as Consul
//!   does) and then every change is undone: the KV store is exactly as before and no key is reported
//!   changed. Undo restores each touched key's entry and tombstone as they were before the first op that
//!   touched it.
//! - Errors read as Consul's (`failed to set key "k", index is stale`).
//! - concord has no sessions yet, so `lock` fails with Consul's "invalid session" error, `unlock` and
//!   `check-session` with a session fail as on a key no session holds.
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{KvEntry, KvStore};

/// Most ops in one transaction (`maxTxnOps` in Consul's `agent/txn_endpoint.go`, 128 since 1.14).
pub const TXN_MAX_OPS: usize = 128;

/// Consul's KV verbs (`api.KVOp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvVerb {
    Set,
    Cas,
    Lock,
    Unlock,
    Get,
    GetOrEmpty,
    GetTree,
    CheckIndex,
    CheckSession,
    CheckNotExists,
    Delete,
    DeleteTree,
    DeleteCas,
}

impl KvVerb {
    /// Parse the wire name (`"delete-cas"`); `None` for a verb Consul does not know.
    pub fn parse(verb: &str) -> Option<Self> {
        Some(match verb {
            "set" => KvVerb::Set,
            "cas" => KvVerb::Cas,
            "lock" => KvVerb::Lock,
            "unlock" => KvVerb::Unlock,
            "get" => KvVerb::Get,
            "get-or-empty" => KvVerb::GetOrEmpty,
            "get-tree" => KvVerb::GetTree,
            "check-index" => KvVerb::CheckIndex,
            "check-session" => KvVerb::CheckSession,
            "check-not-exists" => KvVerb::CheckNotExists,
            "delete" => KvVerb::Delete,
            "delete-tree" => KvVerb::DeleteTree,
            "delete-cas" => KvVerb::DeleteCas,
            _ => return None,
        })
    }

    /// Whether the verb can change the store (a transaction of none of these is read-only).
    pub fn is_write(self) -> bool {
        !matches!(
            self,
            KvVerb::Get
                | KvVerb::GetOrEmpty
                | KvVerb::GetTree
                | KvVerb::CheckIndex
                | KvVerb::CheckSession
                | KvVerb::CheckNotExists
        )
    }
}

/// One KV op (`api.KVTxnOp`): `index` is the CAS / check index (`Index`), `session` the `Session` field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvTxnOp {
    pub verb: KvVerb,
    pub key: String,
    pub value: Bytes,
    pub flags: u64,
    pub index: u64,
    pub session: String,
}

/// One op of a transaction. Only KV for now; Consul's Node/Service/Check ops would be further variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Kv(KvTxnOp),
}

/// One entry of `Results`: a KV entry (`Value` left empty except for the get verbs, as in Consul).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnResult {
    Kv(KvEntry),
}

/// One entry of `Errors`: which op failed (`OpIndex`, from 0) and why (`What`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    pub op_index: usize,
    pub what: String,
}

/// The outcome of a transaction: every result, or (nothing applied) every error.
pub type TxnOutcome = Result<Vec<TxnResult>, Vec<TxnError>>;

/// Each touched key's state before the transaction: (live entry, tombstone index).
type Undo = BTreeMap<String, (Option<KvEntry>, Option<u64>)>;

impl KvStore {
    /// Run `ops` at Raft index `index`, atomically. Keys changed by a committed transaction are pushed onto
    /// `changed` (each once); a failed one pushes nothing and leaves the store as it was.
    pub fn txn(&mut self, index: u64, ops: &[TxnOp], changed: &mut Vec<String>) -> TxnOutcome {
        let mut undo = Undo::new();
        let mut results = Vec::new();
        let mut errors = Vec::new();
        let mut touched = Vec::new();
        for (op_index, op) in ops.iter().enumerate() {
            let TxnOp::Kv(op) = op;
            if let Err(what) = self.txn_kv(index, op, &mut undo, &mut touched, &mut results) {
                errors.push(TxnError { op_index, what });
            }
        }
        if !errors.is_empty() {
            for (key, (entry, tombstone)) in undo {
                self.restore_key(key, entry, tombstone);
            }
            return Err(errors);
        }
        touched.sort();
        touched.dedup();
        changed.extend(touched);
        Ok(results)
    }

    fn txn_kv(
        &mut self,
        index: u64,
        op: &KvTxnOp,
        undo: &mut Undo,
        touched: &mut Vec<String>,
        results: &mut Vec<TxnResult>,
    ) -> Result<(), String> {
        let key = op.key.as_str();
        let entry = match op.verb {
            KvVerb::Set | KvVerb::Cas => {
                let cas = (op.verb == KvVerb::Cas).then_some(op.index);
                self.remember(key, undo);
                if !self.set(index, key, &op.value, op.flags, cas, touched) {
                    return Err(format!("failed to set key {key:?}, index is stale"));
                }
                self.entries.get(key).cloned()
            }
            KvVerb::Lock => {
                // No session exists yet, so none can hold a lock (`kvsLockTxn`).
                return Err(if op.session.is_empty() {
                    "missing session".to_string()
                } else {
                    format!("invalid session {:?}", op.session)
                });
            }
            KvVerb::Unlock => {
                if op.session.is_empty() {
                    return Err("missing session".to_string());
                }
                return Err(format!(
                    "failed to unlock key {key:?}, lock isn't held, or is held by another session"
                ));
            }
            KvVerb::Get => match self.entries.get(key) {
                Some(e) => {
                    results.push(TxnResult::Kv(e.clone()));
                    return Ok(());
                }
                None => return Err(format!("key {key:?} doesn't exist")),
            },
            KvVerb::GetOrEmpty => {
                let entry = self.entries.get(key).cloned().unwrap_or_else(|| KvEntry {
                    key: key.to_owned(),
                    create_index: 0,
                    modify_index: op.index,
                    lock_index: 0,
                    flags: op.flags,
                    value: Bytes::new(),
                    session: (!op.session.is_empty()).then(|| op.session.clone()),
                });
                results.push(TxnResult::Kv(entry));
                return Ok(());
            }
            KvVerb::GetTree => {
                let (_, entries) = self.list(key);
                results.extend(entries.into_iter().map(TxnResult::Kv));
                return Ok(());
            }
            KvVerb::CheckIndex => match self.entries.get(key) {
                None => return Err(format!("failed to check index, key {key:?} doesn't exist")),
                Some(e) if e.modify_index != op.index => {
                    return Err(format!(
                        "failed index check for key {key:?}, current modify index {} != {}",
                        e.modify_index, op.index
                    ))
                }
                Some(e) => Some(e.clone()),
            },
            KvVerb::CheckSession => match self.entries.get(key) {
                None => return Err(format!("failed to check session, key {key:?} doesn't exist")),
                Some(e) if e.session.as_deref().unwrap_or("") != op.session => {
                    return Err(format!(
                        "failed session check for key {key:?}, current session {:?} != {:?}",
                        e.session.as_deref().unwrap_or(""),
                        op.session
                    ))
                }
                Some(e) => Some(e.clone()),
            },
            KvVerb::CheckNotExists => {
                if self.entries.contains_key(key) {
                    return Err(format!("key {key:?} exists"));
                }
                None
            }
            KvVerb::Delete | KvVerb::DeleteCas => {
                let cas = (op.verb == KvVerb::DeleteCas).then_some(op.index);
                self.remember(key, undo);
                if !self.delete(index, key, cas, touched) {
                    return Err(format!("failed to delete key {key:?}, index is stale"));
                }
                None
            }
            KvVerb::DeleteTree => {
                let doomed: Vec<String> = super::kv::prefixed(&self.entries, key)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &doomed {
                    self.remember(k, undo);
                }
                self.delete_tree(index, key, touched);
                None
            }
        };
        if let Some(mut entry) = entry {
            entry.value = Bytes::new();
            results.push(TxnResult::Kv(entry));
        }
        Ok(())
    }

    /// Record `key`'s state before the transaction's first change to it.
    fn remember(&self, key: &str, undo: &mut Undo) {
        if !undo.contains_key(key) {
            let state = (self.entries.get(key).cloned(), self.tombstones.get(key).copied());
            undo.insert(key.to_owned(), state);
        }
    }

    fn restore_key(&mut self, key: String, entry: Option<KvEntry>, tombstone: Option<u64>) {
        match tombstone {
            Some(at) => self.tombstones.insert(key.clone(), at),
            None => self.tombstones.remove(&key),
        };
        match entry {
            Some(e) => self.entries.insert(key, e),
            None => self.entries.remove(&key),
        };
    }
}
