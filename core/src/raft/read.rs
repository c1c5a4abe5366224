//! Linearizable reads without a log write.
//!
//! ReadIndex (Raft dissertation §6.4): the leader notes its commit index, then proves it is still leader by
//! a quorum answering a heartbeat round sent *after* the request arrived; the read is served once the
//! state machine has applied up to the noted index. Requests are batched: at most one round is in flight
//! for reads, and every request that arrives meanwhile rides the next one.
//!
//! Lease (default-mode reads): a quorum that answered round r promises not to elect anyone else for an
//! election timeout after receiving it (leader stickiness), so the leader may serve alone until
//! `sent_at(r) + lease_timeout`, with `lease_timeout < election_timeout` covering clock-rate drift.
//! Both require that the leader has committed an entry of its own term.

use super::{Index, Raft};
use crate::node::Role;
use crate::time::Instant;
use std::collections::VecDeque;

#[derive(Debug, Default)]
pub(crate) struct ReadQueue {
    /// Reads waiting for a quorum to ack `round` or later: (id, index, round).
    waiting: VecDeque<(u64, Index, u64)>,
    /// Reads that arrived while a round was in flight; they get the next round.
    queued: Vec<(u64, Index)>,
    /// The round reads are waiting for, if one is in flight.
    in_flight: Option<u64>,
}

impl ReadQueue {
    pub(crate) fn fail_all(&mut self, out: &mut Vec<(u64, Option<Index>)>) {
        out.extend(self.waiting.drain(..).map(|(id, _, _)| (id, None)));
        out.extend(self.queued.drain(..).map(|(id, _)| (id, None)));
        self.in_flight = None;
    }
}

/// The answer to a read-index request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Serve once applied up to this index.
    Ready(Index),
    /// Confirmation is under way; the result arrives in `RaftOutput::reads` under the request's id.
    Pending,
    /// Not the leader (or not yet able to serve reads): ask the leader / retry.
    NotLeader,
}

impl Raft {
    /// Ask for a read index. `lease`: a default-mode read that the lease may answer at once.
    pub(crate) fn read_index(&mut self, now: Instant, id: u64, lease: bool) -> ReadOutcome {
        if self.role != Role::Leader {
            return ReadOutcome::NotLeader;
        }
        if self.commit < self.term_start {
            // Our commit index may lag the previous leader's until our no-op commits: wait for it.
            self.reads.queued.push((id, 0));
            self.start_read_round(now);
            return ReadOutcome::Pending;
        }
        if self.membership.quorum() == 1 && self.membership.is_voter(self.id) {
            return ReadOutcome::Ready(self.commit);
        }
        if lease && self.lease_valid(now) {
            return ReadOutcome::Ready(self.commit);
        }
        self.reads.queued.push((id, self.commit));
        self.start_read_round(now);
        ReadOutcome::Pending
    }

    /// Send a round for the queued reads unless one is already in flight.
    fn start_read_round(&mut self, now: Instant) {
        if self.reads.in_flight.is_some() || self.reads.queued.is_empty() {
            return;
        }
        // Mark the round in flight before sending it: the broadcast itself re-checks acknowledgements.
        let round = self.round + 1;
        self.reads.in_flight = Some(round);
        let commit = self.commit;
        for (id, index) in self.reads.queued.drain(..) {
            self.reads.waiting.push_back((id, index.max(commit), round));
        }
        self.broadcast_heartbeat(now);
        debug_assert_eq!(self.round, round);
    }

    /// The highest round a quorum of voters (counting ourselves) has acknowledged.
    fn quorum_round(&self) -> u64 {
        let mut rounds: Vec<u64> = self
            .membership
            .voters()
            .map(|id| {
                if id == self.id {
                    self.round
                } else {
                    self.progress.get(&id).map_or(0, |p| p.acked_round)
                }
            })
            .collect();
        self.quorum_value(&mut rounds)
    }

    pub(crate) fn lease_valid(&self, now: Instant) -> bool {
        // During a transfer the target may win at once (it skips stickiness): no lease.
        if self.role != Role::Leader || self.commit < self.term_start || self.transfer.is_some() {
            return false;
        }
        let r = self.quorum_round();
        if r == 0 {
            return false;
        }
        self.round_sent
            .iter()
            .find(|(round, _)| *round == r)
            .is_some_and(|(_, sent)| now < *sent + self.cfg.lease_timeout)
    }

    /// Called whenever acknowledgements arrive: release the reads a quorum has confirmed.
    pub(crate) fn read_acked(&mut self, now: Instant) {
        if self.role != Role::Leader {
            return;
        }
        let confirmed = self.quorum_round();
        let ready = self.commit >= self.term_start;
        while let Some(&(id, _, round)) = self.reads.waiting.front() {
            if round > confirmed || !ready {
                break;
            }
            self.reads.waiting.pop_front();
            // Reading at the current commit (>= the index noted at arrival) is as linearizable: anything
            // committed since is concurrent with the read.
            self.out.reads.push((id, Some(self.commit)));
        }
        if self.reads.in_flight.is_some_and(|r| r <= confirmed) && ready {
            self.reads.in_flight = None;
        }
        if self.reads.in_flight.is_none() {
            self.start_read_round(now);
        }
    }
}
