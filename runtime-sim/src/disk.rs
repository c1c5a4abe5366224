//! The simulated disk: a [`LogStore`] that keeps what was staged apart from what was synced.
//!
//! Invariants: `sync` makes every staged operation durable, in order, or fails and makes none of them
//! durable; a crash loses every unsynced operation except a prefix that happened to reach the platter, and
//! the last operation of that prefix may be torn (a torn `Append` keeps a prefix of its entries; any other
//! torn record fails its checksum and is dropped whole). `recover` returns only what is durable: the hard
//! state, the snapshot and the contiguous entries after it. Operations that would leave the stored log
//! with a gap are recorded as anomalies (the core asked for something impossible) and the log is cut there.
//! All randomness (crash outcomes, fsync latency and failures) comes from a seeded RNG.

use concord::driver::{LogStore, StorageError};
use concord_core::raft::{Entry, HardState, Index, PersistOp, Recovered, Snapshot};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::time::Duration;

/// How the disk misbehaves. The simulator picks one per node from the run's seed.
#[derive(Clone, Debug, PartialEq)]
pub struct DiskFaults {
    /// Normal fsync latency range, in microseconds.
    pub sync_latency_us: (u64, u64),
    /// Probability that one fsync is slow, and how slow (microseconds).
    pub slow_sync: f64,
    pub slow_sync_us: (u64, u64),
    /// Probability that one fsync fails (the node must then stop and restart).
    pub fail_sync: f64,
    /// On a crash: probability that some unsynced operations reached the disk anyway, and that the last of
    /// them is torn.
    pub partial_survival: f64,
    pub tear: f64,
}

impl Default for DiskFaults {
    fn default() -> Self {
        DiskFaults {
            sync_latency_us: (100, 2_000),
            slow_sync: 0.0,
            slow_sync_us: (50_000, 500_000),
            fail_sync: 0.0,
            partial_survival: 0.5,
            tear: 0.5,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Stored {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    entries: BTreeMap<Index, Entry>,
}

impl Stored {
    fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn apply(&mut self, op: &PersistOp, anomalies: &mut Vec<String>) {
        match op {
            PersistOp::HardState(hs) => self.hard_state = *hs,
            PersistOp::Append(entries) => {
                let Some(first) = entries.first() else { return };
                self.entries.split_off(&first.index);
                let last = self
                    .entries
                    .keys()
                    .next_back()
                    .copied()
                    .unwrap_or(self.snapshot_index());
                if first.index > last + 1 && first.index > self.snapshot_index() + 1 {
                    anomalies.push(format!(
                        "Append at index {} leaves a gap after index {last}",
                        first.index
                    ));
                }
                for (i, e) in entries.iter().enumerate() {
                    if e.index != first.index + i as u64 {
                        anomalies.push(format!("Append with non-contiguous entries at index {}", e.index));
                        return;
                    }
                    self.entries.insert(e.index, e.clone());
                }
            }
            PersistOp::Truncate { from } => {
                self.entries.split_off(from);
            }
            PersistOp::Snapshot { snapshot, keep_log } => {
                // Entries the snapshot covers may stay until `Compact`; a conflicting entry at the snapshot's
                // index means the whole stored log belongs to another history.
                let matches = self
                    .entries
                    .get(&snapshot.meta.index)
                    .is_some_and(|e| e.term == snapshot.meta.term);
                if !keep_log || !matches {
                    self.entries.clear();
                }
                self.snapshot = Some(snapshot.clone());
            }
            PersistOp::Compact { up_to } => {
                if self.snapshot_index() < *up_to {
                    anomalies.push(format!(
                        "Compact up to {up_to} before a snapshot covers it (snapshot at {})",
                        self.snapshot_index()
                    ));
                }
                self.entries = self.entries.split_off(&(up_to + 1));
            }
        }
    }
}

/// A disk that survives its node's crashes (the simulator keeps it outside the node).
#[derive(Debug)]
pub struct SimDisk {
    durable: Stored,
    /// Staged, not yet synced.
    pending: Vec<PersistOp>,
    faults: DiskFaults,
    rng: SmallRng,
    anomalies: Vec<String>,
    pub syncs: u64,
    pub failed_syncs: u64,
    pub crashes: u64,
    pub torn_writes: u64,
}

impl SimDisk {
    pub fn new(seed: u64, faults: DiskFaults) -> Self {
        SimDisk {
            durable: Stored::default(),
            pending: Vec::new(),
            faults,
            rng: SmallRng::seed_from_u64(seed),
            anomalies: Vec::new(),
            syncs: 0,
            failed_syncs: 0,
            crashes: 0,
            torn_writes: 0,
        }
    }

    pub fn set_faults(&mut self, faults: DiskFaults) {
        self.faults = faults;
    }

    /// How long the next fsync takes.
    pub fn sync_latency(&mut self) -> Duration {
        let (lo, hi) = if self.rng.gen_bool(self.faults.slow_sync) {
            self.faults.slow_sync_us
        } else {
            self.faults.sync_latency_us
        };
        Duration::from_micros(self.rng.gen_range(lo..=hi.max(lo)))
    }

    /// Operations staged but not synced.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Impossible operations the core asked for (empty when all is well).
    pub fn anomalies(&self) -> &[String] {
        &self.anomalies
    }

    /// The node died: unsynced operations are lost, except a random prefix that reached the disk, whose last
    /// operation may be torn.
    pub fn crash(&mut self) {
        self.crashes += 1;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() || !self.rng.gen_bool(self.faults.partial_survival) {
            return;
        }
        let survive = self.rng.gen_range(0..=pending.len());
        let torn = survive < pending.len() && self.rng.gen_bool(self.faults.tear);
        self.crash_keeping(pending, survive, torn);
    }

    /// Deterministic core of [`SimDisk::crash`]: the first `survive` operations become durable; if `torn`,
    /// the next one is torn.
    fn crash_keeping(&mut self, pending: Vec<PersistOp>, survive: usize, torn: bool) {
        for op in &pending[..survive] {
            self.durable.apply(op, &mut self.anomalies);
        }
        if !torn {
            return;
        }
        self.torn_writes += 1;
        if let Some(PersistOp::Append(entries)) = pending.get(survive) {
            if entries.len() > 1 {
                let keep = self.rng.gen_range(1..entries.len());
                self.durable
                    .apply(&PersistOp::Append(entries[..keep].to_vec()), &mut self.anomalies);
            }
        }
    }

    #[cfg(test)]
    fn crash_exactly(&mut self, survive: usize, torn: bool) {
        let pending = std::mem::take(&mut self.pending);
        self.crash_keeping(pending, survive, torn);
    }
}

impl LogStore for SimDisk {
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        let snapshot = self.durable.snapshot.clone();
        let mut next = self.durable.snapshot_index() + 1;
        let mut entries = Vec::new();
        for (&index, e) in self.durable.entries.range(next..) {
            // Without a snapshot the log may start anywhere (a fresh log starts at 1); after that it must be
            // contiguous.
            if index != next && !(entries.is_empty() && snapshot.is_none()) {
                self.anomalies
                    .push(format!("stored log has a gap before index {index}; cut there"));
                break;
            }
            entries.push(e.clone());
            next = index + 1;
        }
        Ok(Recovered {
            hard_state: self.durable.hard_state,
            snapshot,
            entries,
        })
    }

    fn stage(&mut self, op: &PersistOp) -> Result<(), StorageError> {
        self.pending.push(op.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        if self.rng.gen_bool(self.faults.fail_sync) {
            self.failed_syncs += 1;
            return Err(StorageError::Io("injected fsync failure".into()));
        }
        self.syncs += 1;
        for op in std::mem::take(&mut self.pending) {
            self.durable.apply(&op, &mut self.anomalies);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_core::raft::{Payload, SnapshotMeta};
    use concord_core::NodeId;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
        range
            .map(|index| Entry {
                term,
                index,
                payload: Payload::Noop,
            })
            .collect()
    }

    fn indexes(r: &Recovered) -> Vec<(u64, u64)> {
        r.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    fn disk() -> SimDisk {
        SimDisk::new(7, DiskFaults::default())
    }

    #[test]
    fn synced_writes_survive_a_crash_and_unsynced_ones_do_not() {
        let mut d = disk();
        d.stage(&PersistOp::HardState(HardState {
            term: 2,
            vote: Some(NodeId(1)),
        }))
        .unwrap();
        d.stage(&PersistOp::Append(entries(1..=3, 2))).unwrap();
        d.sync().unwrap();
        d.stage(&PersistOp::HardState(HardState { term: 3, vote: None }))
            .unwrap();
        d.stage(&PersistOp::Append(entries(4..=5, 3))).unwrap();
        assert_eq!(d.pending_len(), 2);
        d.crash_exactly(0, false);
        let r = d.recover().unwrap();
        assert_eq!(
            r.hard_state,
            HardState {
                term: 2,
                vote: Some(NodeId(1))
            }
        );
        assert_eq!(indexes(&r), vec![(1, 2), (2, 2), (3, 2)]);
        assert_eq!(d.pending_len(), 0);
    }

    #[test]
    fn a_torn_append_keeps_a_prefix_of_its_entries() {
        let mut d = disk();
        d.stage(&PersistOp::Append(entries(1..=2, 1))).unwrap();
        d.sync().unwrap();
        d.stage(&PersistOp::HardState(HardState { term: 2, vote: None }))
            .unwrap();
        d.stage(&PersistOp::Append(entries(3..=9, 2))).unwrap();
        // The hard state reached the disk; the append was torn part-way.
        d.crash_exactly(1, true);
        let r = d.recover().unwrap();
        assert_eq!(r.hard_state.term, 2);
        let got = indexes(&r);
        assert!(got.len() > 2 && got.len() < 9, "{got:?}");
        assert!(
            got.iter().enumerate().all(|(i, &(idx, _))| idx == i as u64 + 1),
            "contiguous: {got:?}"
        );
        assert_eq!(d.torn_writes, 1);
    }

    #[test]
    fn a_torn_hard_state_is_dropped_whole() {
        let mut d = disk();
        d.stage(&PersistOp::HardState(HardState {
            term: 4,
            vote: Some(NodeId(2)),
        }))
        .unwrap();
        d.crash_exactly(0, true);
        assert_eq!(d.recover().unwrap().hard_state, HardState::default());
    }

    #[test]
    fn append_replaces_a_conflicting_suffix_and_truncate_cuts() {
        let mut d = disk();
        d.stage(&PersistOp::Append(entries(1..=5, 1))).unwrap();
        d.stage(&PersistOp::Append(entries(3..=4, 2))).unwrap();
        d.sync().unwrap();
        assert_eq!(indexes(&d.recover().unwrap()), vec![(1, 1), (2, 1), (3, 2), (4, 2)]);
        d.stage(&PersistOp::Truncate { from: 2 }).unwrap();
        d.sync().unwrap();
        assert_eq!(indexes(&d.recover().unwrap()), vec![(1, 1)]);
    }

    fn snapshot(index: u64, term: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                membership: Default::default(),
                digest: 42,
            },
            data: Bytes::from_static(b"state"),
        }
    }

    #[test]
    fn snapshots_and_compaction() {
        let mut d = disk();
        d.stage(&PersistOp::Append(entries(1..=10, 1))).unwrap();
        d.stage(&PersistOp::Snapshot {
            snapshot: snapshot(6, 1),
            keep_log: true,
        })
        .unwrap();
        d.stage(&PersistOp::Compact { up_to: 4 }).unwrap();
        d.sync().unwrap();
        let r = d.recover().unwrap();
        assert_eq!(r.snapshot.as_ref().unwrap().meta.index, 6);
        assert_eq!(indexes(&r), (7..=10).map(|i| (i, 1)).collect::<Vec<_>>());
        // A follower installing the leader's snapshot drops its whole log.
        d.stage(&PersistOp::Snapshot {
            snapshot: snapshot(20, 3),
            keep_log: false,
        })
        .unwrap();
        d.sync().unwrap();
        let r = d.recover().unwrap();
        assert_eq!(r.snapshot.unwrap().meta.index, 20);
        assert!(r.entries.is_empty());
        d.stage(&PersistOp::Append(entries(21..=22, 3))).unwrap();
        d.sync().unwrap();
        assert_eq!(indexes(&d.recover().unwrap()), vec![(21, 3), (22, 3)]);
        assert!(d.anomalies().is_empty(), "{:?}", d.anomalies());
    }

    #[test]
    fn a_gap_is_an_anomaly_and_is_never_served() {
        let mut d = disk();
        d.stage(&PersistOp::Append(entries(1..=2, 1))).unwrap();
        d.stage(&PersistOp::Append(entries(5..=6, 1))).unwrap();
        d.sync().unwrap();
        assert_eq!(indexes(&d.recover().unwrap()), vec![(1, 1), (2, 1)]);
        assert!(!d.anomalies().is_empty());
    }

    #[test]
    fn a_failed_sync_makes_nothing_durable() {
        let mut d = SimDisk::new(
            1,
            DiskFaults {
                fail_sync: 1.0,
                partial_survival: 0.0,
                ..Default::default()
            },
        );
        d.stage(&PersistOp::Append(entries(1..=2, 1))).unwrap();
        assert!(d.sync().is_err());
        d.crash();
        assert!(d.recover().unwrap().entries.is_empty());
        assert_eq!(d.failed_syncs, 1);
    }

    #[test]
    fn latency_and_crash_outcomes_follow_the_seed() {
        let faults = DiskFaults {
            slow_sync: 0.3,
            ..Default::default()
        };
        let run = |seed| {
            let mut d = SimDisk::new(seed, faults.clone());
            let lat: Vec<Duration> = (0..20).map(|_| d.sync_latency()).collect();
            for i in 0..5 {
                d.stage(&PersistOp::Append(entries(i * 4 + 1..=i * 4 + 4, 1))).unwrap();
            }
            d.crash();
            (lat, indexes(&d.recover().unwrap()))
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).0, run(4).0);
    }
}
