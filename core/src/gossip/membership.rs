//! The member table: alive, suspect, dead and leave messages with incarnation ordering, refutation,
//! Lifeguard's shrinking suspicion timeout, push-pull merge, leave intents, reaping and user events.

use super::broadcast::BroadcastKey;
use super::wire::{MemberRecord, MemberState, Message, PushPull, Tags};
use super::{Effect, Entry, Gossip, GossipEvent, Live, Member, MemberStatus, Suspicion, Timer, ID_TAG};
use crate::time::Instant;
use core::net::SocketAddr;
use rand::Rng;
use std::collections::BTreeSet;
use std::time::Duration;

impl Gossip {
    pub(super) fn on_alive(
        &mut self,
        now: Instant,
        incarnation: u32,
        name: String,
        addr: SocketAddr,
        tags: Tags,
        out: &mut Vec<Effect>,
    ) {
        if name == self.name {
            let me = &self.members[&self.name];
            if me.addr != addr && !same_agent(&me.tags, &tags) {
                // Someone else claims our name. Never refute that: the other side would refute back, for
                // ever. Whoever a peer's full state names wins (see `merge`); we keep ours meanwhile.
                self.stats.addr_conflicts += 1;
                let ours = me.addr;
                out.push(Effect::Event(GossipEvent::NameConflict {
                    name,
                    ours,
                    theirs: addr,
                }));
                return;
            }
            // (Our own node ID at another address is this agent's previous run: out-bid it like any
            // stale news about us.)
            let differs = me.tags != tags || me.addr != addr;
            if !self.leaving && (incarnation > me.incarnation || (incarnation == me.incarnation && differs)) {
                self.refute(incarnation);
            }
            return;
        }
        if let Some(holder) = self.id_holder(&name, &tags) {
            self.stats.id_conflicts += 1;
            out.push(Effect::Event(GossipEvent::NodeIdConflict {
                id: tags.get(ID_TAG).cloned().unwrap_or_default(),
                holder,
                claimant: name,
            }));
            return;
        }
        let reclaim = self.timing.dead_node_reclaim;
        let Some(e) = self.members.get_mut(&name) else {
            if self.members.len() >= self.timing.max_members {
                self.stats.members_refused += 1;
                return;
            }
            self.note_id(&name, &tags);
            self.live.n += 1;
            self.live.changes += 1;
            self.members.insert(
                name.clone(),
                Entry {
                    addr,
                    tags,
                    incarnation,
                    state: MemberState::Alive,
                    state_change: now,
                    suspicion: None,
                },
            );
            // A random position, so a join burst does not make everyone probe the newcomers at once.
            let n = self.node_list.len();
            self.node_list.push(name.clone());
            let at = self.rng.gen_range(0..=n);
            self.node_list.swap(at, n);
            self.event(out, &name, GossipEvent::MemberJoin);
            self.broadcast_alive(&name);
            return;
        };
        let down = matches!(e.state, MemberState::Dead | MemberState::Left);
        if e.addr != addr {
            // Another address claims the name (memberlist): a left member's name is free at once, a
            // failed member's once it has been down for `dead_node_reclaim`; a live member's never.
            // An agent restarted at a new address (same node ID) takes its name back by out-bidding the
            // incarnation its previous run had, as any refutation does.
            let free = e.state == MemberState::Left
                || (e.state == MemberState::Dead && now.saturating_since(e.state_change) >= reclaim)
                || (same_agent(&e.tags, &tags) && incarnation > e.incarnation);
            if !free {
                self.stats.addr_conflicts += 1;
                let ours = e.addr;
                out.push(Effect::Event(GossipEvent::NameConflict {
                    name,
                    ours,
                    theirs: addr,
                }));
                return;
            }
        } else if incarnation <= e.incarnation {
            return;
        }
        let updated = e.tags != tags || e.addr != addr;
        if e.tags.get(ID_TAG) != tags.get(ID_TAG) {
            self.note_id(&name, &tags);
        }
        let Some(e) = self.members.get_mut(&name) else { return };
        e.addr = addr;
        e.tags = tags;
        e.incarnation = incarnation;
        e.suspicion = None;
        if e.state != MemberState::Alive {
            e.state_change = now;
        }
        set_state(&mut self.live, e, MemberState::Alive);
        if down {
            self.event(out, &name, GossipEvent::MemberJoin);
        } else if updated {
            self.event(out, &name, GossipEvent::MemberUpdate);
        }
        self.broadcast_alive(&name);
    }

    pub(super) fn on_suspect(
        &mut self,
        now: Instant,
        incarnation: u32,
        name: String,
        from: String,
        _out: &mut Vec<Effect>,
    ) {
        let n = self.num_alive();
        let lifeguard = self.timing.lifeguard;
        let Some(e) = self.members.get_mut(&name) else { return };
        if incarnation < e.incarnation {
            return;
        }
        match e.state {
            MemberState::Dead | MemberState::Left => return,
            MemberState::Suspect => {
                // A confirmation from an independent member shortens the timeout (Lifeguard).
                let Some(s) = e.suspicion.as_mut() else { return };
                if s.confirmers.len() as u32 > s.k || !s.confirmers.insert(from.clone()) {
                    return;
                }
                s.deadline = s.start + s.timeout(s.confirmers.len() as u32 - 1, lifeguard);
                let deadline = s.deadline;
                self.schedule(deadline, Timer::Suspicion(name.clone()));
                let msg = Message::Suspect {
                    incarnation,
                    name: name.clone(),
                    from,
                };
                self.broadcast(BroadcastKey::Member(name), &msg);
                return;
            }
            MemberState::Alive => {}
        }
        if name == self.name {
            if !self.leaving {
                self.apply_awareness(1);
                self.refute(incarnation);
            }
            return;
        }
        let t = &self.timing;
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min = Duration::from_secs_f64(t.suspicion_mult as f64 * scale * t.probe_interval.as_secs_f64());
        let max = min * t.suspicion_max_timeout_mult;
        let k = if (n as i64 - 2) < (t.suspicion_mult as i64 - 2) {
            0
        } else {
            t.suspicion_mult.saturating_sub(2)
        };
        let mut s = Suspicion {
            start: now,
            min,
            max,
            k,
            confirmers: BTreeSet::from([from.clone()]),
            deadline: now,
        };
        s.deadline = now + s.timeout(0, lifeguard);
        let deadline = s.deadline;
        e.incarnation = incarnation;
        set_state(&mut self.live, e, MemberState::Suspect);
        e.state_change = now;
        e.suspicion = Some(s);
        self.schedule(deadline, Timer::Suspicion(name.clone()));
        let msg = Message::Suspect {
            incarnation,
            name: name.clone(),
            from,
        };
        self.broadcast(BroadcastKey::Member(name), &msg);
    }

    pub(super) fn suspicion_expired(&mut self, now: Instant, name: String, out: &mut Vec<Effect>) {
        let Some(e) = self.members.get(&name) else { return };
        let due = matches!(&e.suspicion, Some(s) if s.deadline <= now);
        if e.state == MemberState::Suspect && due {
            let incarnation = e.incarnation;
            let me = self.name.clone();
            self.on_dead(now, incarnation, name, me, out);
        }
    }

    pub(super) fn on_dead(
        &mut self,
        now: Instant,
        incarnation: u32,
        name: String,
        from: String,
        out: &mut Vec<Effect>,
    ) {
        let Some(e) = self.members.get_mut(&name) else { return };
        if incarnation < e.incarnation || matches!(e.state, MemberState::Dead | MemberState::Left) {
            return;
        }
        if name == self.name {
            if !self.leaving {
                self.refute(incarnation);
            }
            return;
        }
        e.incarnation = incarnation;
        set_state(&mut self.live, e, MemberState::Dead);
        e.state_change = now;
        e.suspicion = None;
        self.event(out, &name, GossipEvent::MemberFailed);
        let msg = Message::Dead {
            incarnation,
            name: name.clone(),
            from,
        };
        self.broadcast(BroadcastKey::Member(name), &msg);
    }

    pub(super) fn on_leave(
        &mut self,
        now: Instant,
        incarnation: u32,
        name: String,
        prune: bool,
        out: &mut Vec<Effect>,
    ) {
        if name == self.name {
            // Someone forced us out while we are alive: refute and stay.
            if !self.leaving {
                self.refute(incarnation);
            }
            return;
        }
        let Some(e) = self.members.get_mut(&name) else { return };
        if incarnation < e.incarnation || (e.state == MemberState::Left && !prune) {
            return;
        }
        let was_left = e.state == MemberState::Left;
        e.incarnation = incarnation;
        set_state(&mut self.live, e, MemberState::Left);
        e.state_change = now;
        e.suspicion = None;
        if !was_left {
            self.event(out, &name, GossipEvent::MemberLeft);
        }
        let msg = Message::Leave {
            incarnation,
            name: name.clone(),
            prune,
        };
        self.broadcast(BroadcastKey::Member(name.clone()), &msg);
        if prune {
            self.forget(&name, out);
        }
    }

    /// Someone believes we are suspect, dead or gone: out-bid that with a higher incarnation.
    fn refute(&mut self, accused: u32) {
        self.stats.refutations += 1;
        let me = self.name.clone();
        if let Some(e) = self.members.get_mut(&me) {
            e.incarnation = e.incarnation.max(accused) + 1;
        }
        self.broadcast_alive(&me);
    }

    /// Merge a peer's full state. A remote *dead* only makes the member suspect here: we let our own
    /// failure detector confirm it rather than spread a possibly stale death.
    pub(super) fn merge(&mut self, now: Instant, state: PushPull, out: &mut Vec<Effect>) {
        // A joiner's state is its own view, not the cluster's: it never beats us (its claim is refused).
        if let Some(holder) = self.beaten_by(&state).filter(|_| !state.join) {
            self.lose(holder, out);
            return;
        }
        self.event_clock = self.event_clock.max(state.event_ltime);
        let me = &self.members[&self.name];
        if state
            .members
            .iter()
            .any(|r| r.name == self.name && r.addr != me.addr && r.state == MemberState::Dead)
        {
            // Our name belonged to a member that failed: peers refuse us until `dead_node_reclaim` has passed
            // since; sync again then rather than wait for the periodic push-pull.
            self.schedule(now + self.timing.dead_node_reclaim, Timer::JoinSync);
        }
        for r in state.members {
            match r.state {
                MemberState::Alive => self.on_alive(now, r.incarnation, r.name, r.addr, r.tags, out),
                MemberState::Left => {
                    if !self.members.contains_key(&r.name) && r.name != self.name {
                        // Learn tombstones too, so `members` shows who left.
                        self.on_alive(now, r.incarnation, r.name.clone(), r.addr, r.tags, out);
                    }
                    self.on_leave(now, r.incarnation, r.name, false, out)
                }
                MemberState::Dead | MemberState::Suspect => {
                    let me = self.name.clone();
                    self.on_suspect(now, r.incarnation, r.name, me, out)
                }
            }
        }
    }

    pub(super) fn leave(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        let incarnation = self.members[&self.name].incarnation;
        let msg = Message::Leave {
            incarnation,
            name: self.name.clone(),
            prune: false,
        };
        self.broadcast(BroadcastKey::Member(self.name.clone()), &msg);
        self.gossip(now, out);
        self.schedule(now + self.timing.leave_propagate_delay, Timer::LeaveDone);
    }

    pub(super) fn force_leave(&mut self, now: Instant, name: String, prune: bool, out: &mut Vec<Effect>) {
        if name == self.name {
            return;
        }
        let Some(incarnation) = self.members.get(&name).map(|e| e.incarnation) else {
            return;
        };
        if prune {
            // Pruning a member already marked left must still spread.
            if let Some(e) = self.members.get_mut(&name) {
                set_state(&mut self.live, e, MemberState::Dead);
            }
        }
        self.on_leave(now, incarnation, name, prune, out);
    }

    pub(super) fn set_tags(&mut self, _now: Instant, tags: Tags, out: &mut Vec<Effect>) {
        let me = self.name.clone();
        if let Some(e) = self.members.get_mut(&me) {
            e.tags = tags;
            e.incarnation += 1;
        }
        self.event(out, &me, GossipEvent::MemberUpdate);
        self.broadcast_alive(&me);
    }

    pub(super) fn on_user_event(&mut self, ltime: u64, name: String, payload: Vec<u8>, out: &mut Vec<Effect>) {
        self.event_clock = self.event_clock.max(ltime.saturating_add(1));
        let id = (ltime, name.clone(), crc32fast::hash(&payload));
        let full = self.seen_events.len() >= self.timing.max_seen_events;
        if self.seen_events.contains(&id) || (full && self.seen_events.first().is_some_and(|f| id < *f)) {
            return;
        }
        self.seen_events.insert(id.clone());
        while self.seen_events.len() > self.timing.max_seen_events {
            self.seen_events.pop_first();
        }
        out.push(Effect::Event(GossipEvent::User {
            ltime,
            name: name.clone(),
            payload: payload.clone(),
        }));
        let msg = Message::UserEvent { ltime, name, payload };
        self.broadcast(BroadcastKey::Event(id.0, id.1, id.2 as u64), &msg);
    }

    pub(super) fn reap(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.schedule(now + self.timing.reap_interval, Timer::Reap);
        let (dead_for, left_for) = (self.timing.reconnect_timeout, self.timing.tombstone_timeout);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, e)| match e.state {
                MemberState::Dead => now.saturating_since(e.state_change) >= dead_for,
                MemberState::Left => now.saturating_since(e.state_change) >= left_for,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            self.forget(&name, out);
        }
    }

    fn forget(&mut self, name: &str, out: &mut Vec<Effect>) {
        if let Some(e) = self.members.remove(name) {
            if is_live(e.state) {
                self.live.n -= 1;
                self.live.changes += 1;
            }
            if let Some(pos) = self.node_list.iter().position(|n| n == name) {
                self.node_list.swap_remove(pos);
                self.probe_index = self.probe_index.min(self.node_list.len());
            }
            out.push(Effect::Event(GossipEvent::MemberReaped(name.to_string())));
        }
    }
}

impl Gossip {
    /// The live member (other than `name`) that already holds the node ID `tags` carry, if any.
    fn id_holder(&self, name: &str, tags: &Tags) -> Option<String> {
        let id = tags.get(ID_TAG).filter(|id| !id.is_empty())?;
        let holder = self.ids.get(id)?;
        let e = self.members.get(holder)?;
        let live = matches!(e.state, MemberState::Alive | MemberState::Suspect);
        (holder != name && live && e.tags.get(ID_TAG) == Some(id)).then(|| holder.clone())
    }

    fn note_id(&mut self, name: &str, tags: &Tags) {
        if let Some(id) = tags.get(ID_TAG).filter(|id| !id.is_empty()) {
            self.ids.insert(id.clone(), name.to_string());
        }
    }

    /// A peer's full state is the cluster's view: if it shows a live member at another address under our
    /// name, or a live member under another name with our node ID, that member keeps it and we lose.
    fn beaten_by(&self, state: &PushPull) -> Option<MemberRecord> {
        let me = &self.members[&self.name];
        let our_id = me.tags.get(ID_TAG).filter(|id| !id.is_empty());
        state
            .members
            .iter()
            .filter(|r| matches!(r.state, MemberState::Alive | MemberState::Suspect))
            .find(|r| {
                if r.name == self.name {
                    r.addr != me.addr && !same_agent(&me.tags, &r.tags)
                } else {
                    our_id.is_some() && r.tags.get(ID_TAG) == our_id
                }
            })
            .cloned()
    }

    /// Go quiet for good after losing a conflict (no probes, gossip, syncs or answers).
    fn lose(&mut self, holder: MemberRecord, out: &mut Vec<Effect>) {
        self.conflicted = true;
        self.timers.clear();
        self.probes.clear();
        out.push(Effect::Event(GossipEvent::Conflicted {
            holder: Member {
                name: holder.name,
                addr: holder.addr,
                tags: holder.tags,
                incarnation: holder.incarnation,
                status: MemberStatus::Alive,
            },
        }));
    }
}

fn is_live(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

/// Change a member's state, keeping the count of live members (`Gossip::live`) right.
fn set_state(live: &mut Live, e: &mut Entry, state: MemberState) {
    match (is_live(e.state), is_live(state)) {
        (false, true) => live.n += 1,
        (true, false) => live.n -= 1,
        _ => {}
    }
    if is_live(e.state) != is_live(state) {
        live.changes += 1;
    }
    e.state = state;
}

/// Two records of one agent: the same non-empty node ID (its data dir's), whatever the address.
fn same_agent(a: &Tags, b: &Tags) -> bool {
    a.get(ID_TAG)
        .is_some_and(|id| !id.is_empty() && b.get(ID_TAG) == Some(id))
}

impl Suspicion {
    /// Lifeguard: from `max` with no confirmation down to `min` with `k` of them, on a log scale.
    pub(super) fn timeout(&self, confirmations: u32, lifeguard: bool) -> Duration {
        if !lifeguard || self.k == 0 {
            return self.min;
        }
        let frac = ((confirmations + 1) as f64).ln() / ((self.k + 1) as f64).ln();
        let raw = self.max.as_secs_f64() - frac * (self.max - self.min).as_secs_f64();
        Duration::from_secs_f64(raw.max(self.min.as_secs_f64()))
    }
}
