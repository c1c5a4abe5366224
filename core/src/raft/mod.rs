//! Raft consensus, sans-IO.
//!
//! Features: pre-vote and leader stickiness (a node that heard from a leader within the minimum election
//! timeout neither pre-votes nor votes for anyone else, so a partitioned node that returns cannot depose a
//! healthy leader), check-quorum (a leader that has not heard from a quorum for an election timeout steps
//! down), pipelined and batched replication, commit, snapshots with chunked InstallSnapshot, single-server
//! membership changes with non-voters promoted once caught up, leadership transfer (TimeoutNow), and reads:
//! ReadIndex rounds batched per heartbeat and a leader lease for default-mode reads.
//!
//! The persistence barrier (STYLE.md, raft-rs): every change to the term, vote or log becomes a
//! `PersistOp`; the ops of one step are issued as one `Persist { seq }`. Messages that promise durability
//! (vote grants, append and snapshot acknowledgements) are held until the runtime reports that seq
//! durable, a candidate counts its own vote only once it is durable, and a leader counts its own log for
//! commit only up to what is durable.
//!
//! Safety invariants asserted in release builds: committed entries are never truncated; appends are
//! contiguous; the term never goes backwards.

mod election;
mod log;
mod read;
mod replication;
#[cfg(test)]
mod tests;
mod types;

pub use types::*;

pub(crate) use read::ReadOutcome;

use crate::id::NodeId;
use crate::node::{Mutation, RaftConfig, Role};
use crate::time::Instant;
use log::Log;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};

/// What the leader knows of one follower.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    pub(crate) next: Index,
    pub(crate) matched: Index,
    /// Last index of each append in flight (pipelining window).
    pub(crate) inflight: VecDeque<Index>,
    /// After a rejection or loss: one append at a time until one succeeds.
    pub(crate) probing: bool,
    /// `matched` at the previous heartbeat, to spot a stalled pipeline (lost appends).
    pub(crate) matched_at_last_heartbeat: Index,
    pub(crate) acked_round: u64,
    pub(crate) last_ack: Option<Instant>,
    /// The commit index last sent to this follower.
    pub(crate) sent_commit: Index,
    /// An InstallSnapshot transfer in progress: bytes the follower holds, and whether a chunk is in flight.
    pub(crate) snapshot: Option<SnapshotSend>,
}

#[derive(Debug, Clone)]
pub(crate) struct SnapshotSend {
    pub(crate) index: Index,
    pub(crate) offset: u64,
    pub(crate) in_flight: bool,
    pub(crate) sent_at: Instant,
}

impl Progress {
    fn new(last_index: Index) -> Self {
        Progress {
            next: last_index + 1,
            matched: 0,
            inflight: VecDeque::new(),
            probing: true,
            matched_at_last_heartbeat: 0,
            acked_round: 0,
            last_ack: None,
            sent_commit: 0,
            snapshot: None,
        }
    }
}

/// What one step produced, drained by the `Node`.
#[derive(Debug, Default)]
pub(crate) struct RaftOutput {
    pub(crate) msgs: Vec<(NodeId, Message)>,
    /// The persist batch of the step, taken by `Raft::flush`.
    ops: Vec<PersistOp>,
    /// A snapshot received from the leader and installed: the state machine must be restored from it.
    pub(crate) installed_snapshot: Option<Snapshot>,
    /// ReadIndex requests confirmed (id, index to apply up to) or failed (None: not leader any more).
    pub(crate) reads: Vec<(u64, Option<Index>)>,
}

pub(crate) struct Raft {
    pub(crate) id: NodeId,
    pub(crate) cfg: RaftConfig,
    pub(crate) mutation: Mutation,
    rng: SmallRng,

    // Persistent state (mirrored to storage through `ops`).
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) log: Log,
    /// The latest snapshot (sent to followers that fell behind the log).
    pub(crate) snapshot: Option<Snapshot>,

    // Configuration in force: the latest config entry in the log, else the snapshot's.
    pub(crate) membership: Membership,
    pub(crate) membership_index: Index,

    // Volatile state.
    pub(crate) role: Role,
    pub(crate) leader: Option<NodeId>,
    pub(crate) commit: Index,
    pub(crate) last_leader_contact: Option<Instant>,
    pub(crate) election_deadline: Instant,
    /// After a restart we do not know whether we recently promised a leader our support (its lease
    /// may still be running), so we refuse to vote for anyone else until an election timeout has passed.
    pub(crate) vote_blackout_until: Instant,

    // Candidate / pre-candidate.
    pub(crate) votes: BTreeMap<NodeId, bool>,
    /// The self-vote is counted once the hard state naming it is durable.
    pub(crate) self_vote_seq: Option<u64>,

    // Leader.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    /// First index of this leader's term (its no-op): reads and config changes wait until it commits.
    pub(crate) term_start: Index,
    pub(crate) heartbeat_deadline: Instant,
    pub(crate) check_quorum_deadline: Instant,
    pub(crate) round: u64,
    /// The first round of the current leadership: acknowledgements of earlier rounds are ignored.
    pub(crate) leader_first_round: u64,
    pub(crate) round_sent: VecDeque<(u64, Instant)>,
    pub(crate) reads: read::ReadQueue,
    pub(crate) transfer: Option<(NodeId, Instant)>,
    /// Followers to replicate to at the end of the step (see `replicate_dirty`).
    pub(crate) dirty: std::collections::BTreeSet<NodeId>,

    // Follower: a snapshot being received in chunks.
    pub(crate) incoming: Option<(SnapshotMeta, Vec<u8>)>,

    // Persistence barrier.
    issued_seq: u64,
    durable_seq: u64,
    /// (seq, last log index when it was issued): what becomes durable with each seq.
    unstable: VecDeque<(u64, Index)>,
    pub(crate) durable_index: Index,
    /// Messages created this step that must wait for everything issued so far to be durable.
    step_held: Vec<(NodeId, Message)>,
    held: VecDeque<(u64, NodeId, Message)>,

    pub(crate) out: RaftOutput,
}

impl Raft {
    pub(crate) fn new(
        id: NodeId,
        cfg: RaftConfig,
        mutation: Mutation,
        recovered: Recovered,
        now: Instant,
        seed: u64,
    ) -> Self {
        let (snap_index, snap_term, snap_membership) = match &recovered.snapshot {
            Some(s) => (s.meta.index, s.meta.term, s.meta.membership.clone()),
            None => (0, 0, Membership::default()),
        };
        let log = Log::new(snap_index, snap_term, recovered.entries);
        let last = log.last_index();
        let mut raft = Raft {
            id,
            cfg: cfg.clone(),
            mutation,
            rng: SmallRng::seed_from_u64(seed),
            term: recovered.hard_state.term,
            vote: recovered.hard_state.vote,
            log,
            snapshot: recovered.snapshot,
            membership: snap_membership,
            membership_index: snap_index,
            role: Role::Follower,
            leader: None,
            commit: snap_index,
            last_leader_contact: None,
            election_deadline: now,
            vote_blackout_until: now + cfg.election_timeout,
            votes: BTreeMap::new(),
            self_vote_seq: None,
            progress: BTreeMap::new(),
            term_start: 0,
            heartbeat_deadline: now,
            check_quorum_deadline: now,
            round: 0,
            leader_first_round: 1,
            round_sent: VecDeque::new(),
            reads: read::ReadQueue::default(),
            transfer: None,
            dirty: Default::default(),
            incoming: None,
            issued_seq: 0,
            durable_seq: 0,
            unstable: VecDeque::new(),
            durable_index: last,
            step_held: Vec::new(),
            held: VecDeque::new(),
            out: RaftOutput::default(),
        };
        raft.recompute_membership();
        raft.role = raft.idle_or_follower();
        raft.reset_election_timer(now);
        if raft.membership.voters().count() == 1 && raft.membership.is_voter(id) {
            // The only voter: restart straight into an election rather than waiting out a timeout.
            raft.election_deadline = now;
        }
        raft
    }

    // ---- persistence barrier -------------------------------------------------------------------------

    pub(crate) fn persist(&mut self, op: PersistOp) {
        self.out.ops.push(op);
    }

    pub(crate) fn persist_hard_state(&mut self) {
        self.persist(PersistOp::HardState(HardState {
            term: self.term,
            vote: self.vote,
        }));
    }

    /// Send now (requests, heartbeats: nothing promised about our own disk).
    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        self.out.msgs.push((to, msg));
    }

    /// Send once everything issued so far is durable (vote grants, acknowledgements).
    pub(crate) fn send_durable(&mut self, to: NodeId, msg: Message) {
        if self.mutation == Mutation::AckBeforePersist && cfg!(feature = "mutants") {
            self.out.msgs.push((to, msg));
        } else {
            self.step_held.push((to, msg));
        }
    }

    /// End of a step: issue the step's ops as one persist batch and tag held messages with the newest seq.
    /// Returns the batch for `Effect::Persist`.
    pub(crate) fn flush(&mut self, now: Instant) -> Option<(u64, Vec<PersistOp>)> {
        self.replicate_dirty(now);
        let mut batch = None;
        if !self.out.ops.is_empty() {
            self.issued_seq += 1;
            let seq = self.issued_seq;
            self.unstable.push_back((seq, self.log.last_index()));
            if self.role == Role::Candidate && self.self_vote_seq == Some(0) {
                self.self_vote_seq = Some(seq);
            }
            batch = Some((seq, std::mem::take(&mut self.out.ops)));
        }
        let need = self.issued_seq;
        for (to, msg) in std::mem::take(&mut self.step_held) {
            if need <= self.durable_seq {
                self.out.msgs.push((to, msg));
            } else {
                self.held.push_back((need, to, msg));
            }
        }
        if self.mutation == Mutation::AckBeforePersist && cfg!(feature = "mutants") {
            self.durable_index = self.log.last_index();
        }
        batch
    }

    /// Storage reports every seq <= `up_to` durable.
    pub(crate) fn persisted(&mut self, now: Instant, up_to: u64) {
        if up_to <= self.durable_seq {
            return;
        }
        self.durable_seq = up_to.min(self.issued_seq);
        while let Some(&(seq, last)) = self.unstable.front() {
            if seq > self.durable_seq {
                break;
            }
            self.durable_index = last;
            self.unstable.pop_front();
        }
        while self.held.front().is_some_and(|(seq, _, _)| *seq <= self.durable_seq) {
            let (_, to, msg) = self.held.pop_front().expect("checked non-empty");
            self.out.msgs.push((to, msg));
        }
        match self.role {
            Role::Candidate => self.tally_votes(now),
            Role::Leader => {
                self.maybe_commit(now);
            }
            _ => {}
        }
    }

    /// The durable index can never exceed what the log still holds after a truncation.
    fn clamp_durable(&mut self, from: Index) {
        let cap = from.saturating_sub(1);
        self.durable_index = self.durable_index.min(cap);
        for (_, last) in self.unstable.iter_mut() {
            *last = (*last).min(cap);
        }
    }

    // ---- timers ---------------------------------------------------------------------------------------

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self.role {
            Role::Leader => {
                let mut d = self.heartbeat_deadline.min(self.check_quorum_deadline);
                if let Some((_, t)) = self.transfer {
                    d = d.min(t);
                }
                Some(d)
            }
            Role::Follower | Role::PreCandidate | Role::Candidate if self.can_campaign() => {
                Some(self.election_deadline)
            }
            _ => None,
        }
    }

    pub(crate) fn tick(&mut self, now: Instant) {
        match self.role {
            Role::Leader => {
                if let Some((_, deadline)) = self.transfer {
                    if now >= deadline {
                        self.transfer = None;
                    }
                }
                if now >= self.check_quorum_deadline {
                    self.check_quorum(now);
                }
                if self.role == Role::Leader && now >= self.heartbeat_deadline {
                    self.broadcast_heartbeat(now);
                }
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if now >= self.election_deadline && self.can_campaign() {
                    self.start_pre_vote(now);
                }
            }
            Role::Idle | Role::Failed => {}
        }
    }

    pub(crate) fn reset_election_timer(&mut self, now: Instant) {
        let base = self.cfg.election_timeout.as_micros() as u64;
        let jitter = if base == 0 { 0 } else { self.rng.gen_range(0..base) };
        self.election_deadline = Instant(now.0 + base + jitter);
    }

    // ---- roles ----------------------------------------------------------------------------------------

    pub(crate) fn can_campaign(&self) -> bool {
        self.membership.is_voter(self.id) && self.role != Role::Failed
    }

    fn idle_or_follower(&self) -> Role {
        if self.membership.servers.is_empty() {
            Role::Idle
        } else {
            Role::Follower
        }
    }

    /// Move to `term` (if newer) as a follower of `leader`.
    pub(crate) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "term went backwards: {} -> {}", self.term, term);
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.persist_hard_state();
        }
        if self.role == Role::Leader {
            self.reads.fail_all(&mut self.out.reads);
            self.progress.clear();
            self.transfer = None;
        }
        self.role = self.idle_or_follower();
        self.leader = leader;
        self.votes.clear();
        self.self_vote_seq = None;
        self.reset_election_timer(now);
    }

    pub(crate) fn fail(&mut self) {
        if self.role == Role::Leader {
            self.reads.fail_all(&mut self.out.reads);
        }
        self.role = Role::Failed;
        self.leader = None;
        self.progress.clear();
        self.held.clear();
    }

    // ---- membership -----------------------------------------------------------------------------------

    /// The configuration in force is the newest config entry in the log, else the snapshot's.
    pub(crate) fn recompute_membership(&mut self) {
        let first = self.log.first_index();
        let mut i = self.log.last_index();
        while i >= first && i > 0 {
            if let Some(Entry {
                payload: Payload::Config(m),
                ..
            }) = self.log.get(i)
            {
                self.membership = m.clone();
                self.membership_index = i;
                return;
            }
            i -= 1;
        }
        if let Some(s) = &self.snapshot {
            self.membership = s.meta.membership.clone();
            self.membership_index = s.meta.index;
        }
    }

    /// Append an entry to our own log (leader, or bootstrap) and persist it.
    pub(crate) fn append_local(&mut self, payload: Payload) -> Index {
        let index = self.log.last_index() + 1;
        let entry = Entry {
            term: self.term,
            index,
            payload,
        };
        if let Payload::Config(m) = &entry.payload {
            self.membership = m.clone();
            self.membership_index = index;
        }
        self.persist(PersistOp::Append(vec![entry.clone()]));
        self.log.append(entry);
        index
    }

    /// Start a brand-new cluster. Only on a node with no log and no snapshot. The configuration entry is
    /// written before the hard state: a crash that keeps only the first write leaves a node that still
    /// knows its cluster (and restarts in term 0, campaigning into term 1 or later), never one stuck with
    /// a term and no configuration.
    pub(crate) fn bootstrap(&mut self, now: Instant, membership: Membership) -> bool {
        if self.log.last_index() > 0 || self.snapshot.is_some() {
            return false;
        }
        let term = self.term.max(1);
        if term != self.term {
            self.term = term;
            self.vote = None;
        }
        self.append_local(Payload::Config(membership));
        self.persist_hard_state();
        self.role = self.idle_or_follower();
        if self.membership.voters().count() == 1 && self.membership.is_voter(self.id) {
            // Alone: no one to wait for.
            self.election_deadline = now;
        } else {
            self.reset_election_timer(now);
        }
        true
    }

    /// Install a snapshot taken locally by the state machine at `snapshot.meta.index`.
    pub(crate) fn snapshot_taken(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if index <= self.log.snapshot_index() {
            return;
        }
        let keep_from = index.saturating_sub(self.cfg.trailing_logs) + 1;
        self.log.compact(index, snapshot.meta.term, keep_from);
        self.persist(PersistOp::Snapshot {
            snapshot: snapshot.clone(),
            keep_log: true,
        });
        self.snapshot = Some(snapshot);
    }

    pub(crate) fn quorum_value(&self, values: &mut [Index]) -> Index {
        let q = self.membership.quorum();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(q - 1).copied().unwrap_or(0)
    }
}
