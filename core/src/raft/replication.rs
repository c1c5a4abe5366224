//! Log replication: the message dispatcher, pipelined appends, commit, and InstallSnapshot.

use super::{Entry, Index, Message, Payload, PersistOp, Raft, Snapshot, SnapshotMeta, SnapshotSend};
use crate::id::NodeId;
use crate::node::{Mutation, Role};
use crate::time::Instant;
use bytes::Bytes;

impl Raft {
    /// Handle one peer message.
    pub(crate) fn step(&mut self, now: Instant, from: NodeId, msg: Message) {
        if self.role == Role::Failed {
            return;
        }
        let term = msg.term();
        match &msg {
            // Pre-vote never changes terms; TimeoutNow only from our own term's leader.
            Message::PreVote { .. } | Message::PreVoteResponse { .. } => {}
            Message::Vote { transfer, .. } if term > self.term => {
                if !*transfer && self.leader_is_fresh(now) {
                    // Leader stickiness: ignore a vote from a node that may be partitioned away.
                    self.send(
                        from,
                        Message::VoteResponse {
                            term: self.term,
                            granted: false,
                        },
                    );
                    return;
                }
                self.become_follower(now, term, None);
            }
            _ if term > self.term => {
                let leader = matches!(msg, Message::Append { .. } | Message::InstallSnapshot { .. }).then_some(from);
                self.become_follower(now, term, leader);
            }
            _ => {}
        }
        match msg {
            Message::PreVote {
                term,
                last_index,
                last_term,
            } => self.handle_pre_vote(now, from, term, last_index, last_term),
            Message::PreVoteResponse { term, granted } => self.handle_pre_vote_response(now, from, term, granted),
            Message::Vote {
                term,
                last_index,
                last_term,
                ..
            } => {
                if term < self.term {
                    self.send(
                        from,
                        Message::VoteResponse {
                            term: self.term,
                            granted: false,
                        },
                    );
                } else {
                    self.handle_vote(now, from, last_index, last_term);
                }
            }
            Message::VoteResponse { term, granted } => self.handle_vote_response(now, from, term, granted),
            Message::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                round,
            } => {
                if term < self.term {
                    let index = self.log.last_index();
                    self.send(
                        from,
                        Message::AppendResponse {
                            term: self.term,
                            success: false,
                            index,
                            // Round 0: this answers a deposed leader and must never count as an
                            // acknowledgement of a round sent by a later leader of our term (which may
                            // be the same node).
                            round: 0,
                        },
                    );
                } else {
                    self.follow(now, from);
                    self.handle_append(from, prev_index, prev_term, entries, commit, round);
                }
            }
            Message::AppendResponse {
                term,
                success,
                index,
                round,
            } => {
                if term == self.term && self.role == Role::Leader {
                    self.handle_append_response(now, from, success, index, round);
                }
            }
            Message::InstallSnapshot {
                term,
                meta,
                offset,
                data,
                done,
                round,
            } => {
                if term < self.term {
                    let index = self.log.last_index();
                    let msg = Message::InstallSnapshotResponse {
                        term: self.term,
                        offset: 0,
                        done: false,
                        index,
                        round: 0, // see the stale Append above
                    };
                    self.send(from, msg);
                } else {
                    self.follow(now, from);
                    self.handle_install_snapshot(from, meta, offset, data, done, round);
                }
            }
            Message::InstallSnapshotResponse {
                term,
                offset,
                done,
                index,
                round,
            } => {
                if term == self.term && self.role == Role::Leader {
                    self.handle_snapshot_response(now, from, offset, done, index, round);
                }
            }
            Message::TimeoutNow { term } => {
                if term == self.term && self.leader == Some(from) && self.can_campaign() {
                    self.start_election(now, true);
                }
            }
        }
    }

    /// A valid Append or InstallSnapshot from the leader of our term.
    fn follow(&mut self, now: Instant, leader: NodeId) {
        assert!(
            !(self.role == Role::Leader && leader != self.id),
            "two leaders in term {}: {:?} and {:?}",
            self.term,
            self.id,
            leader
        );
        if self.role != Role::Follower && self.role != Role::Idle {
            self.become_follower(now, self.term, Some(leader));
        }
        // A server added by the leader learns the configuration from its appends.
        self.role = Role::Follower;
        self.leader = Some(leader);
        self.last_leader_contact = Some(now);
        self.reset_election_timer(now);
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        mut prev_index: Index,
        mut prev_term: u64,
        mut entries: Vec<Entry>,
        leader_commit: Index,
        round: u64,
    ) {
        let term = self.term;
        let reply = move |success, index| Message::AppendResponse {
            term,
            success,
            index,
            round,
        };
        // Everything up to our snapshot is committed and matches the leader: skip that part.
        let snap = self.log.snapshot_index();
        if prev_index < snap {
            let skip = (snap - prev_index) as usize;
            if skip >= entries.len() {
                let msg = reply(true, snap);
                self.send_durable(from, msg);
                return;
            }
            entries.drain(..skip);
            prev_index = snap;
            prev_term = self.log.snapshot_term();
        }
        match self.log.term_at(prev_index) {
            Some(t) if t == prev_term => {}
            found => {
                // Hint: skip the whole conflicting term, never below the commit index.
                let hint = match found {
                    None => self.log.last_index(),
                    Some(t) => {
                        let mut i = prev_index - 1;
                        while i > self.commit && self.log.term_at(i) == Some(t) {
                            i -= 1;
                        }
                        i
                    }
                };
                let msg = reply(false, hint.min(prev_index.saturating_sub(1)));
                self.send(from, msg);
                return;
            }
        }
        let last_new = prev_index + entries.len() as u64;
        let mut to_store: Vec<Entry> = Vec::new();
        let mut config_changed = false;
        for e in entries {
            if to_store.is_empty() {
                match self.log.term_at(e.index) {
                    Some(t) if t == e.term => continue,
                    Some(_) => {
                        assert!(
                            e.index > self.commit,
                            "conflict at committed index {} (commit {})",
                            e.index,
                            self.commit
                        );
                        config_changed |= self.membership_index >= e.index;
                        self.log.truncate_from(e.index);
                        self.clamp_durable(e.index);
                    }
                    None => {}
                }
            }
            config_changed |= matches!(e.payload, Payload::Config(_));
            self.log.append(e.clone());
            to_store.push(e);
        }
        if !to_store.is_empty() {
            self.persist(PersistOp::Append(to_store));
        }
        if config_changed {
            self.recompute_membership();
        }
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.commit {
            self.commit = new_commit;
        }
        let msg = reply(true, last_new);
        self.send_durable(from, msg);
    }

    fn handle_append_response(&mut self, now: Instant, from: NodeId, success: bool, index: Index, round: u64) {
        let last = self.log.last_index();
        let (first_round, last_round) = (self.leader_first_round, self.round);
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_ack = Some(now);
        // Only rounds this leadership sent prove anything about it.
        if (first_round..=last_round).contains(&round) {
            p.acked_round = p.acked_round.max(round);
        }
        if success {
            if index > p.matched {
                p.matched = index.min(last);
            }
            p.next = p.next.max(p.matched + 1);
            while p.inflight.front().is_some_and(|i| *i <= index) {
                p.inflight.pop_front();
            }
            p.probing = false;
        } else if index >= p.matched {
            // Rejected: back up to just after the hint (never below what is known to match).
            p.next = (index + 1).max(p.matched + 1).min(p.next.max(p.matched + 1));
            p.inflight.clear();
            p.probing = true;
        } else {
            // A stale rejection (the follower since matched more): ignore.
        }
        self.maybe_commit(now);
        self.read_acked(now);
        if self.role == Role::Leader {
            self.dirty.insert(from);
            self.maybe_send_timeout_now(from);
        }
    }

    /// Commit the highest index a quorum of voters holds durably, if it is from our term (Raft §5.4.2).
    pub(crate) fn maybe_commit(&mut self, _now: Instant) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<Index> = self
            .membership
            .voters()
            .map(|id| {
                if id == self.id {
                    self.durable_index
                } else {
                    self.progress.get(&id).map_or(0, |p| p.matched)
                }
            })
            .collect();
        let mut candidate = self.quorum_value(&mut matched);
        if self.mutation == Mutation::CommitOnMinority && cfg!(feature = "mutants") {
            candidate = self.log.last_index();
        }
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
            if self.commit >= self.membership_index && !self.membership.servers.contains_key(&self.id) {
                // Our own removal committed: hand over to the most caught-up voter and step down.
                let successor = self
                    .progress
                    .iter()
                    .filter(|(id, _)| self.membership.is_voter(**id))
                    .max_by_key(|(_, p)| p.matched)
                    .map(|(id, p)| (*id, p.matched));
                let (term, last) = (self.term, self.log.last_index());
                let peers: Vec<NodeId> = self.progress.keys().copied().collect();
                for peer in peers {
                    self.send_append(_now, peer, false);
                }
                if let Some((id, matched)) = successor {
                    if matched == last {
                        self.send(id, Message::TimeoutNow { term });
                    }
                }
                self.become_follower(_now, term, None);
                return;
            }
            // Tell followers at the end of this step (they apply once they learn the commit index).
            self.mark_all_dirty();
        }
    }

    /// Send the next append(s) to `peer`, respecting the pipelining window. `heartbeat` forces a message
    /// even with nothing new, carrying the current round.
    pub(crate) fn send_append(&mut self, now: Instant, peer: NodeId, heartbeat: bool) {
        let last = self.log.last_index();
        let first = self.log.first_index();
        let (term, commit, round) = (self.term, self.commit, self.round);
        let (max_entries, max_bytes, window) = (
            self.cfg.max_append_entries,
            self.cfg.max_append_bytes,
            self.cfg.max_inflight.max(1),
        );
        let Some(p) = self.progress.get(&peer) else { return };
        if p.snapshot.is_some() || p.next < first || self.log.term_at(p.next - 1).is_none() {
            self.send_snapshot_chunk(now, peer, heartbeat);
            return;
        }
        let mut sent = false;
        loop {
            let p = self.progress.get(&peer).expect("checked above");
            let limit = if p.probing { 1 } else { window };
            if p.next > last || p.inflight.len() >= limit {
                break;
            }
            let prev_index = p.next - 1;
            let prev_term = self.log.term_at(prev_index).expect("prev is in the log");
            let entries = self.log.slice(p.next, last, max_entries, max_bytes);
            let end = prev_index + entries.len() as u64;
            let msg = Message::Append {
                term,
                prev_index,
                prev_term,
                entries,
                commit,
                round,
            };
            let p = self.progress.get_mut(&peer).expect("checked above");
            p.inflight.push_back(end);
            p.next = end + 1;
            p.sent_commit = commit;
            self.send(peer, msg);
            sent = true;
        }
        let p = self.progress.get(&peer).expect("checked above");
        if heartbeat && !sent {
            // Nothing new fits: an empty append anchored at what we know matches (or at our snapshot, which
            // makes a follower that lacks it reject and so be sent the snapshot).
            let prev_index = if self.log.term_at(p.matched).is_some() {
                p.matched
            } else {
                self.log.snapshot_index()
            };
            let Some(prev_term) = self.log.term_at(prev_index) else {
                return;
            };
            let commit = commit.min(prev_index);
            if let Some(p) = self.progress.get_mut(&peer) {
                p.sent_commit = p.sent_commit.max(commit);
            }
            self.send(
                peer,
                Message::Append {
                    term,
                    prev_index,
                    prev_term,
                    entries: Vec::new(),
                    commit,
                    round,
                },
            );
        }
    }

    /// One heartbeat round to every follower: new round number, stalled pipelines reset to probing.
    pub(crate) fn broadcast_heartbeat(&mut self, now: Instant) {
        self.round += 1;
        self.round_sent.push_back((self.round, now));
        while self.round_sent.len() > 4096 {
            self.round_sent.pop_front();
        }
        self.heartbeat_deadline = now + self.cfg.heartbeat_interval;
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let p = self.progress.get_mut(&peer).expect("listed above");
            if !p.inflight.is_empty() && p.matched == p.matched_at_last_heartbeat {
                // No progress for a whole heartbeat with appends in flight: assume they were lost.
                p.inflight.clear();
                p.next = p.matched + 1;
                p.probing = true;
            }
            if let Some(s) = &mut p.snapshot {
                if s.in_flight && now.saturating_since(s.sent_at) >= self.cfg.election_timeout {
                    s.in_flight = false;
                }
            }
            p.matched_at_last_heartbeat = p.matched;
            self.send_append(now, peer, true);
        }
        self.maybe_promote(now);
        self.read_acked(now);
    }

    // ---- snapshots ------------------------------------------------------------------------------------

    fn send_snapshot_chunk(&mut self, now: Instant, peer: NodeId, heartbeat: bool) {
        let Some(snapshot) = self.snapshot.clone() else {
            // Cannot happen: entries are only compacted after a snapshot. Keep the node up regardless.
            return;
        };
        let (term, round, chunk) = (self.term, self.round, self.cfg.snapshot_chunk_bytes.max(1));
        let p = self.progress.get_mut(&peer).expect("caller checked");
        let state = p.snapshot.get_or_insert(SnapshotSend {
            index: snapshot.meta.index,
            offset: 0,
            in_flight: false,
            sent_at: now,
        });
        if state.index != snapshot.meta.index {
            *state = SnapshotSend {
                index: snapshot.meta.index,
                offset: 0,
                in_flight: false,
                sent_at: now,
            };
        }
        if state.in_flight {
            if heartbeat {
                // Keep the follower's election timer quiet while a chunk is in flight.
                let prev_index = p.matched;
                if let Some(prev_term) = self.log.term_at(prev_index) {
                    let msg = Message::Append {
                        term,
                        prev_index,
                        prev_term,
                        entries: Vec::new(),
                        commit: self.commit.min(prev_index),
                        round,
                    };
                    self.send(peer, msg);
                }
            }
            return;
        }
        let total = snapshot.data.len() as u64;
        let start = state.offset.min(total);
        let end = (start + chunk as u64).min(total);
        state.in_flight = true;
        state.sent_at = now;
        let msg = Message::InstallSnapshot {
            term,
            meta: snapshot.meta.clone(),
            offset: start,
            data: snapshot.data.slice(start as usize..end as usize),
            done: end == total,
            round,
        };
        self.send(peer, msg);
    }

    fn handle_snapshot_response(
        &mut self,
        now: Instant,
        from: NodeId,
        offset: u64,
        done: bool,
        index: Index,
        round: u64,
    ) {
        let (first_round, last_round) = (self.leader_first_round, self.round);
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_ack = Some(now);
        // Only rounds this leadership sent prove anything about it.
        if (first_round..=last_round).contains(&round) {
            p.acked_round = p.acked_round.max(round);
        }
        if done {
            p.matched = p.matched.max(index);
            p.next = p.matched + 1;
            p.snapshot = None;
            p.inflight.clear();
            p.probing = false;
        } else if let Some(s) = &mut p.snapshot {
            s.offset = offset;
            s.in_flight = false;
        }
        self.maybe_commit(now);
        self.read_acked(now);
        if self.role == Role::Leader {
            self.dirty.insert(from);
        }
    }

    fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        round: u64,
    ) {
        let term = self.term;
        let reply = |offset, done, index| Message::InstallSnapshotResponse {
            term,
            offset,
            done,
            index,
            round,
        };
        if meta.index <= self.commit {
            // We already have everything it covers.
            let msg = reply(0, true, self.commit);
            self.send_durable(from, msg);
            return;
        }
        if offset == 0 {
            self.incoming = Some((meta.clone(), Vec::new()));
        }
        let Some((m, buf)) = &mut self.incoming else {
            self.send(from, reply(0, false, 0));
            return;
        };
        if m.index != meta.index || m.term != meta.term || buf.len() as u64 != offset {
            let have = if m.index == meta.index { buf.len() as u64 } else { 0 };
            self.send(from, reply(have, false, 0));
            return;
        }
        buf.extend_from_slice(&data);
        if !done {
            let have = buf.len() as u64;
            self.send(from, reply(have, false, 0));
            return;
        }
        let (meta, buf) = self.incoming.take().expect("checked above");
        let snapshot = Snapshot {
            meta: meta.clone(),
            data: Bytes::from(buf),
        };
        let keeps_log = self.log.term_at(meta.index) == Some(meta.term);
        self.log.compact(meta.index, meta.term, meta.index + 1);
        if !keeps_log {
            self.clamp_durable(meta.index + 1);
        }
        self.persist(PersistOp::Snapshot {
            snapshot: snapshot.clone(),
            keep_log: keeps_log,
        });
        self.snapshot = Some(snapshot.clone());
        self.commit = self.commit.max(meta.index);
        self.recompute_membership();
        self.out.installed_snapshot = Some(snapshot);
        self.send_durable(from, reply(0, true, meta.index));
    }

    // ---- membership changes ---------------------------------------------------------------------------

    /// Whether a configuration change may be proposed now: leader, own term committed, none pending.
    pub(crate) fn config_change_ready(&self) -> Result<(), String> {
        if self.role != Role::Leader {
            return Err("not the leader".into());
        }
        if self.commit < self.term_start || self.membership_index > self.commit {
            return Err("a configuration change is already in progress; retry".into());
        }
        Ok(())
    }

    /// Promote one caught-up non-voter to voter (Consul's autopilot does this after stabilisation).
    fn maybe_promote(&mut self, now: Instant) {
        if self.config_change_ready().is_err() {
            return;
        }
        let ready = self.membership.servers.iter().find(|(id, s)| {
            !s.voter
                && self.progress.get(id).is_some_and(|p| {
                    p.matched >= self.commit
                        && p.last_ack
                            .is_some_and(|t| now.saturating_since(t) < self.cfg.election_timeout)
                })
        });
        if let Some((id, _)) = ready {
            let id = *id;
            let mut m = self.membership.clone();
            m.servers.get_mut(&id).expect("found above").voter = true;
            self.propose_config(now, m);
        }
    }

    /// Append a configuration entry (in force at once) and start replicating to any new server.
    pub(crate) fn propose_config(&mut self, now: Instant, membership: super::Membership) -> Index {
        let last = self.log.last_index();
        for id in membership.servers.keys() {
            if *id != self.id && !self.progress.contains_key(id) {
                self.progress.insert(*id, super::Progress::new(last));
            }
        }
        self.progress.retain(|id, _| membership.servers.contains_key(id));
        let index = self.append_local(Payload::Config(membership));
        self.mark_all_dirty();
        self.maybe_commit(now);
        index
    }

    /// Propose a client payload. Only on the leader.
    pub(crate) fn propose(&mut self, now: Instant, payload: Payload) -> Option<Index> {
        if self.role != Role::Leader || self.transfer.is_some() {
            return None;
        }
        let index = self.append_local(payload);
        self.mark_all_dirty();
        self.maybe_commit(now);
        Some(index)
    }

    pub(crate) fn mark_all_dirty(&mut self) {
        self.dirty.extend(self.progress.keys().copied());
    }

    /// Replicate to every peer marked during this step: one append per peer carries every entry proposed
    /// and the commit index reached in the step (batching many proposals into one message per peer).
    pub(crate) fn replicate_dirty(&mut self, now: Instant) {
        if self.role != Role::Leader {
            self.dirty.clear();
            return;
        }
        for peer in std::mem::take(&mut self.dirty) {
            let stale_commit = self.progress.get(&peer).is_some_and(|p| p.sent_commit < self.commit);
            self.send_append(now, peer, stale_commit);
        }
    }
}
