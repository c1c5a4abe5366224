//! [`MemStore`]: the `LogStore` semantics in memory, for `-dev` agents (nothing survives the process).

use super::check_append;
use crate::driver::{LogStore, StorageError};
use concord_core::raft::{Entry, HardState, Index, PersistOp, Recovered, Snapshot};
use std::collections::BTreeMap;

/// In-memory storage: `stage` applies at once, `sync` does nothing, `recover` returns what was staged so
/// far in this process (nothing for a new store).
#[derive(Debug, Default)]
pub struct MemStore {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    log: BTreeMap<Index, Entry>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }
}

impl LogStore for MemStore {
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        let after_snapshot = self.snapshot_index() + 1;
        Ok(Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self.log.range(after_snapshot..).map(|(_, e)| e.clone()).collect(),
        })
    }

    fn stage(&mut self, op: &PersistOp) -> Result<(), StorageError> {
        match op {
            PersistOp::HardState(hard_state) => self.hard_state = *hard_state,
            PersistOp::Append(entries) => {
                let last_index = self.log.keys().next_back().map_or(0, |i| *i).max(self.snapshot_index());
                check_append(entries, last_index)?;
                if let Some(first) = entries.first() {
                    self.log.split_off(&first.index);
                    self.log.extend(entries.iter().map(|e| (e.index, e.clone())));
                }
            }
            PersistOp::Truncate { from } => {
                self.log.split_off(from);
            }
            PersistOp::Snapshot { snapshot, keep_log } => {
                self.log = if *keep_log {
                    self.log.split_off(&(snapshot.meta.index + 1))
                } else {
                    BTreeMap::new()
                };
                self.snapshot = Some(snapshot.clone());
            }
            PersistOp::Compact { up_to } => self.log = self.log.split_off(&(up_to + 1)),
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
}
