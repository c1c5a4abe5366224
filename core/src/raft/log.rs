//! The in-memory Raft log: the latest snapshot's position plus the entries after it (and a few before it,
//! kept so slightly lagging followers catch up without a snapshot). Durability is separate: every change
//! here is mirrored by a `PersistOp` the caller emits.
//!
//! Invariants: entries are contiguous; `first_index() <= snapshot_index + 1`; every index in
//! `(snapshot_index, last_index]` is present; `unsnapshotted_bytes` is the `entry_size` sum of the entries
//! after `snapshot_index` (what a snapshot would free, give or take the trailing entries it keeps).

use super::types::{Entry, Index, Term};
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct Log {
    entries: VecDeque<Entry>,
    snapshot_index: Index,
    snapshot_term: Term,
    unsnapshotted_bytes: usize,
}

impl Log {
    pub(crate) fn new(snapshot_index: Index, snapshot_term: Term, entries: Vec<Entry>) -> Self {
        let mut log = Log {
            entries: VecDeque::new(),
            snapshot_index,
            snapshot_term,
            unsnapshotted_bytes: 0,
        };
        for e in entries {
            if e.index <= snapshot_index {
                continue;
            }
            log.append(e);
        }
        log
    }

    /// Rough in-memory size of the entries after the snapshot (see [`entry_size`]).
    pub(crate) fn unsnapshotted_bytes(&self) -> usize {
        self.unsnapshotted_bytes
    }

    pub(crate) fn snapshot_index(&self) -> Index {
        self.snapshot_index
    }

    pub(crate) fn snapshot_term(&self) -> Term {
        self.snapshot_term
    }

    /// Index of the oldest entry held in memory (snapshot_index + 1 when none before it are kept).
    pub(crate) fn first_index(&self) -> Index {
        self.entries.front().map_or(self.snapshot_index + 1, |e| e.index)
    }

    pub(crate) fn last_index(&self) -> Index {
        self.entries.back().map_or(self.snapshot_index, |e| e.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`, if known (0 for index 0).
    pub(crate) fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.get(index).map(|e| e.term)
    }

    pub(crate) fn get(&self, index: Index) -> Option<&Entry> {
        let first = self.first_index();
        if index < first || index > self.last_index() {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// Entries in `[from, to]`, at most `max_entries` and about `max_bytes` (at least one if any).
    pub(crate) fn slice(&self, from: Index, to: Index, max_entries: usize, max_bytes: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut i = from;
        while i <= to && out.len() < max_entries {
            let Some(e) = self.get(i) else { break };
            let size = entry_size(e);
            if !out.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            out.push(e.clone());
            i += 1;
        }
        out
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "appends must be contiguous");
        self.unsnapshotted_bytes += entry_size(&entry);
        self.entries.push_back(entry);
    }

    /// Drop every entry with index >= `from`. Never drops entries covered by the snapshot.
    pub(crate) fn truncate_from(&mut self, from: Index) {
        assert!(from > self.snapshot_index, "cannot truncate into the snapshot");
        while self.entries.back().is_some_and(|e| e.index >= from) {
            let e = self.entries.pop_back().expect("checked non-empty");
            self.unsnapshotted_bytes -= entry_size(&e);
        }
    }

    /// A snapshot now covers `index` (whose term is `term`). Entries up to `keep_from - 1` are dropped;
    /// if the log does not contain `index` with `term`, the whole log is dropped.
    pub(crate) fn compact(&mut self, index: Index, term: Term, keep_from: Index) {
        let matches = self.term_at(index) == Some(term);
        self.snapshot_index = index;
        self.snapshot_term = term;
        if !matches {
            self.entries.clear();
            self.unsnapshotted_bytes = 0;
            return;
        }
        let keep_from = keep_from.min(index + 1);
        while self.entries.front().is_some_and(|e| e.index < keep_from) {
            self.entries.pop_front();
        }
        self.unsnapshotted_bytes = self
            .entries
            .iter()
            .rev()
            .take_while(|e| e.index > index)
            .map(entry_size)
            .sum();
    }

    /// Is a log ending at (`last_index`, `last_term`) at least as up to date as ours (Raft §5.4.1)?
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}

/// Rough encoded size of an entry, for batching limits.
pub(crate) fn entry_size(e: &Entry) -> usize {
    use super::types::Payload;
    24 + match &e.payload {
        Payload::Noop => 0,
        Payload::Command(b) => b.len(),
        Payload::Config(m) => m.servers.values().map(|s| 32 + s.name.len() + s.address.len()).sum(),
    }
}
