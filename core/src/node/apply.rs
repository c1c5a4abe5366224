//! Applying committed entries to the state machine, in log order, on every server; snapshots.

use super::{Effect, Event, Node};
use crate::api::{ApiError, Response};
use crate::raft::{Payload, Snapshot, SnapshotMeta};
use crate::state::Command;
use crate::time::Instant;
use rand::Rng;

/// FNV-1a, 64-bit: a fixed, portable hash so digests agree across nodes, runs and builds.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    if h == 0 {
        h = 0xcbf2_9ce4_8422_2325;
    }
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Node {
    pub(super) fn apply_committed(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let mut changed = crate::state::Changes::default();
        while self.applied < self.raft.commit {
            let index = self.applied + 1;
            let entry = self
                .raft
                .log
                .get(index)
                .unwrap_or_else(|| {
                    panic!(
                        "committed entry {index} missing from the log (applied {})",
                        self.applied
                    )
                })
                .clone();
            let mut h = fnv1a(self.digest, &entry.index.to_le_bytes());
            h = fnv1a(h, &entry.term.to_le_bytes());
            let outcome = match &entry.payload {
                Payload::Noop => {
                    h = fnv1a(h, &[0]);
                    None
                }
                Payload::Command(bytes) => {
                    h = fnv1a(fnv1a(h, &[1]), bytes);
                    match Command::decode(bytes) {
                        Ok(cmd) => {
                            let result = self.sm.apply(index, &cmd, &mut changed);
                            Some(Response::Written { index, result })
                        }
                        // Only a leader bug could put an undecodable command in the log; every node
                        // skips it identically, so replicas stay in agreement.
                        Err(e) => Some(Response::Error(ApiError::BadRequest(e.to_string()))),
                    }
                }
                Payload::Config(m) => {
                    h = fnv1a(fnv1a(h, &[2]), &postcard::to_allocvec(m).expect("configs encode"));
                    let was_member = self.applied_membership.servers.contains_key(&self.config.id);
                    self.applied_membership = m.clone();
                    if was_member && !m.servers.contains_key(&self.config.id) && !self.removed {
                        self.removed = true;
                        out.push(Effect::Event(Event::Removed));
                    }
                    Some(Response::Done)
                }
            };
            self.digest = h;
            self.applied = index;
            self.applied_term = entry.term;
            if let Some(resp) = outcome {
                self.write_applied(index, entry.term, resp, out);
            }
            if !changed.is_empty() {
                self.wake_watches(now, &changed, out);
                changed.clear();
            }
        }
    }

    /// The leader sent a snapshot that replaces our state wholesale.
    pub(super) fn restore_snapshot(&mut self, now: Instant, snapshot: Snapshot, out: &mut Vec<Effect>) {
        let SnapshotMeta {
            index,
            term,
            membership,
            digest,
        } = snapshot.meta;
        if index <= self.applied {
            return;
        }
        self.sm = crate::state::StateMachine::restore(&snapshot.data)
            .unwrap_or_else(|e| panic!("snapshot {index} from the leader does not decode: {e}"));
        self.applied = index;
        self.applied_term = term;
        self.digest = digest;
        self.applied_membership = membership;
        // Anything may have changed: answer every parked blocking query with the new state.
        self.wake_all_watches(now, out);
    }

    /// Snapshot when the periodic check finds at least `snapshot_threshold` entries applied since the last
    /// snapshot (hashicorp/raft's `shouldSnapshot`, run every `snapshot_interval`), or at once when the
    /// in-memory log grew past `snapshot_log_bytes`. Snapshotting right at the threshold would serialize
    /// the whole state every few seconds under write load; Consul does not, and neither do we.
    pub(super) fn maybe_snapshot(&mut self) {
        let cfg = &self.config.raft;
        let behind = self.applied.saturating_sub(self.raft.log.snapshot_index());
        let check = std::mem::take(&mut self.snapshot_check_due) || cfg.snapshot_interval.is_zero();
        let due = check && behind >= cfg.snapshot_threshold.max(1);
        let too_big = behind > 0 && self.raft.log.unsnapshotted_bytes() >= cfg.snapshot_log_bytes;
        if !due && !too_big {
            return;
        }
        let meta = SnapshotMeta {
            index: self.applied,
            term: self.applied_term,
            membership: self.applied_membership.clone(),
            digest: self.digest,
        };
        self.raft.snapshot_taken(Snapshot {
            meta,
            data: self.sm.snapshot(),
        });
    }

    /// Arm the next periodic snapshot check: `snapshot_interval` plus up to as much again at random.
    pub(super) fn schedule_snapshot_check(&mut self, now: Instant) {
        let interval = self.config.raft.snapshot_interval;
        if interval.is_zero() {
            return;
        }
        let base = interval.as_micros() as u64;
        let at = Instant(now.0 + base + self.rng.gen_range(0..base));
        self.deadlines.insert((at, super::client::Timer::SnapshotCheck));
    }

    pub(super) fn write_applied(&mut self, index: u64, term: u64, resp: Response, out: &mut Vec<Effect>) {
        let Some((origin, proposed_term)) = self.pending.writes.remove(&index) else {
            return;
        };
        let resp = if proposed_term == term {
            resp
        } else {
            // Another leader's entry took this index: ours can never be applied.
            Response::Error(ApiError::NoLeader)
        };
        self.reply(origin, resp, out);
    }
}
