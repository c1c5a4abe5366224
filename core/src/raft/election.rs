//! Elections: pre-vote, vote, leader stickiness, check-quorum and leadership transfer.

use super::{Message, Payload, Progress, Raft};
use crate::id::NodeId;
use crate::node::{Mutation, Role};
use crate::time::Instant;

impl Raft {
    /// Heard from a leader within the minimum election timeout: refuse to help depose it.
    pub(crate) fn leader_is_fresh(&self, now: Instant) -> bool {
        if self.role == Role::Leader || now < self.vote_blackout_until {
            return true;
        }
        self.leader.is_some()
            && self
                .last_leader_contact
                .is_some_and(|t| now.saturating_since(t) < self.cfg.election_timeout)
    }

    pub(crate) fn start_pre_vote(&mut self, now: Instant) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.reset_election_timer(now);
        let msg = Message::PreVote {
            term: self.term + 1,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
        };
        let peers: Vec<NodeId> = self.membership.voters().filter(|id| *id != self.id).collect();
        for peer in peers {
            self.send(peer, msg.clone());
        }
        self.tally_votes(now);
    }

    pub(crate) fn start_election(&mut self, now: Instant, transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id);
        self.persist_hard_state();
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        // Counted once the hard state is durable; `flush` fills in the seq.
        self.self_vote_seq = Some(0);
        self.reset_election_timer(now);
        let msg = Message::Vote {
            term: self.term,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            transfer,
        };
        let peers: Vec<NodeId> = self.membership.voters().filter(|id| *id != self.id).collect();
        for peer in peers {
            self.send(peer, msg.clone());
        }
    }

    pub(crate) fn tally_votes(&mut self, now: Instant) {
        let self_counts = match self.role {
            Role::PreCandidate => true,
            Role::Candidate => match self.self_vote_seq {
                Some(seq) if seq > 0 => seq <= self.durable_seq,
                _ => self.mutation == Mutation::AckBeforePersist && cfg!(feature = "mutants"),
            },
            _ => return,
        };
        let granted = self
            .membership
            .voters()
            .filter(|id| {
                if *id == self.id {
                    self_counts
                } else {
                    self.votes.get(id) == Some(&true)
                }
            })
            .count();
        let rejected = self
            .membership
            .voters()
            .filter(|id| self.votes.get(id) == Some(&false))
            .count();
        let quorum = self.membership.quorum();
        if granted >= quorum {
            match self.role {
                Role::PreCandidate => self.start_election(now, false),
                Role::Candidate => self.become_leader(now),
                _ => {}
            }
        } else if rejected >= quorum {
            self.become_follower(now, self.term, None);
        }
    }

    fn become_leader(&mut self, now: Instant) {
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.self_vote_seq = None;
        self.transfer = None;
        let last = self.log.last_index();
        self.progress = self
            .membership
            .servers
            .keys()
            .filter(|id| **id != self.id)
            .map(|id| (*id, Progress::new(last)))
            .collect();
        self.round_sent.clear();
        self.leader_first_round = self.round + 1;
        self.check_quorum_deadline = now + self.cfg.election_timeout;
        self.term_start = self.append_local(Payload::Noop);
        self.broadcast_heartbeat(now);
        self.maybe_commit(now);
    }

    pub(crate) fn handle_pre_vote(&mut self, now: Instant, from: NodeId, term: u64, last_index: u64, last_term: u64) {
        let granted = term > self.term && !self.leader_is_fresh(now) && self.log.is_up_to_date(last_index, last_term);
        // The response carries the term the candidate asked about when granted, else ours, so a stale
        // pre-candidate learns the real term.
        let reply_term = if granted { term } else { self.term };
        self.send(
            from,
            Message::PreVoteResponse {
                term: reply_term,
                granted,
            },
        );
    }

    pub(crate) fn handle_pre_vote_response(&mut self, now: Instant, from: NodeId, term: u64, granted: bool) {
        if self.role != Role::PreCandidate {
            return;
        }
        if !granted && term > self.term {
            self.become_follower(now, term, None);
            return;
        }
        if term == self.term + 1 || !granted {
            self.votes.insert(from, granted);
            self.tally_votes(now);
        }
    }

    /// A Vote request with `term >= self.term` (higher terms were already adopted by the caller unless
    /// stickiness refused them).
    pub(crate) fn handle_vote(&mut self, now: Instant, from: NodeId, last_index: u64, last_term: u64) {
        let double_vote = self.mutation == Mutation::DoubleVote && cfg!(feature = "mutants");
        let can_vote = self.vote.is_none() || self.vote == Some(from) || double_vote;
        let granted = self.role != Role::Leader && can_vote && self.log.is_up_to_date(last_index, last_term);
        if granted {
            if self.vote != Some(from) {
                self.vote = Some(from);
                self.persist_hard_state();
            }
            self.reset_election_timer(now);
            self.send_durable(
                from,
                Message::VoteResponse {
                    term: self.term,
                    granted: true,
                },
            );
        } else {
            self.send(
                from,
                Message::VoteResponse {
                    term: self.term,
                    granted: false,
                },
            );
        }
    }

    pub(crate) fn handle_vote_response(&mut self, now: Instant, from: NodeId, term: u64, granted: bool) {
        if self.role != Role::Candidate || term != self.term {
            return;
        }
        self.votes.insert(from, granted);
        self.tally_votes(now);
    }

    /// Check-quorum: a leader that has not heard from a quorum for an election timeout steps down, so a
    /// partitioned leader stops accepting writes and reads and a stale lease cannot outlive it.
    pub(crate) fn check_quorum(&mut self, now: Instant) {
        let window = self.cfg.election_timeout;
        let recent = self
            .membership
            .voters()
            .filter(|id| {
                *id == self.id
                    || self
                        .progress
                        .get(id)
                        .and_then(|p| p.last_ack)
                        .is_some_and(|t| now.saturating_since(t) < window)
            })
            .count();
        if recent < self.membership.quorum() {
            self.become_follower(now, self.term, None);
        } else {
            self.check_quorum_deadline = now + window;
        }
    }

    /// `operator raft transfer-leader`: hand leadership to `to` (or the most caught-up voter).
    pub(crate) fn transfer_leadership(&mut self, now: Instant, to: Option<NodeId>) -> Result<(), String> {
        if self.role != Role::Leader {
            return Err("not the leader".into());
        }
        let target = match to {
            Some(id) if id == self.id => return Err("this server is already the leader".into()),
            Some(id) if self.membership.is_voter(id) => id,
            Some(id) => return Err(format!("{id} is not a voter in the configuration")),
            None => self
                .progress
                .iter()
                .filter(|(id, _)| self.membership.is_voter(**id))
                .max_by_key(|(_, p)| p.matched)
                .map(|(id, _)| *id)
                .ok_or_else(|| "no other voter to transfer leadership to".to_string())?,
        };
        self.transfer = Some((target, now + self.cfg.election_timeout));
        self.maybe_send_timeout_now(target);
        Ok(())
    }

    /// Once the transfer target has our whole log, tell it to campaign at once.
    pub(crate) fn maybe_send_timeout_now(&mut self, peer: NodeId) {
        if self.transfer.map(|(t, _)| t) != Some(peer) {
            return;
        }
        if self
            .progress
            .get(&peer)
            .is_some_and(|p| p.matched == self.log.last_index())
        {
            self.send(peer, Message::TimeoutNow { term: self.term });
        }
    }
}
