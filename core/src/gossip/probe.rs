//! Failure detection (direct and indirect probes, Lifeguard awareness) and dissemination (gossip fan-out,
//! periodic push-pull).

use super::schedule::DueProbe;
use super::{shuffle, wire, Effect, Gossip, Message, Probe, Timer};
use crate::gossip::wire::MemberState;
use crate::time::Instant;
use core::net::SocketAddr;
use rand::Rng;
use std::time::Duration;

impl Gossip {
    pub(super) fn on_message(&mut self, now: Instant, from: SocketAddr, msg: Message, out: &mut Vec<Effect>) {
        let msg = self.rtt_on_message(now, from, msg, out);
        match msg {
            Message::Ping { seq, target } => {
                // A ping meant for a previous owner of our address must not vouch for it.
                if target == self.name {
                    let ack = self.ack_for(from, seq);
                    self.send(from, ack, out);
                }
            }
            Message::IndirectPing {
                seq,
                target,
                target_addr,
                nack,
            } => {
                let own = self.next_seq();
                self.probes.insert(
                    own,
                    Probe::Relay {
                        requester: from,
                        seq,
                        nack,
                    },
                );
                self.send(target_addr, Message::Ping { seq: own, target }, out);
                self.schedule(now + self.timing.probe_timeout, Timer::AckTimeout(own));
                if nack {
                    self.schedule(now + relay_nack_after(self.timing.probe_timeout), Timer::RelayNack(own));
                }
            }
            Message::Ack { seq } => match self.probes.remove(&seq) {
                Some(Probe::Direct { .. }) => self.apply_awareness(-1),
                Some(Probe::Relay { requester, seq, .. }) => self.send(requester, Message::Ack { seq }, out),
                None => {}
            },
            Message::Nack { seq } => {
                if let Some(Probe::Direct { nacks, .. }) = self.probes.get_mut(&seq) {
                    *nacks += 1;
                }
            }
            Message::Alive {
                incarnation,
                name,
                addr,
                tags,
            } => self.on_alive(now, incarnation, name, addr, tags, out),
            Message::Suspect {
                incarnation,
                name,
                from,
            } => self.on_suspect(now, incarnation, name, from, out),
            Message::Dead {
                incarnation,
                name,
                from,
            } => self.on_dead(now, incarnation, name, from, out),
            Message::Leave {
                incarnation,
                name,
                prune,
            } => self.on_leave(now, incarnation, name, prune, out),
            Message::UserEvent { ltime, name, payload } => self.on_user_event(ltime, name, payload, out),
            // Turned into a plain `Ack` by `rtt_on_message`.
            Message::AckPayload { .. } => {}
        }
    }

    pub(super) fn probe(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let interval = self.scaled(self.timing.probe_interval);
        let round = match self.due_probe(now) {
            DueProbe::Later => return,
            DueProbe::Round(round) => Some(round),
            DueProbe::Shuffled => None,
        };
        self.schedule_next_probe(now, interval, round);
        if self.leaving {
            return;
        }
        let scheduled = round.and_then(|r| self.scheduled_target(r));
        let Some(target) = scheduled.or_else(|| self.next_probe_target()) else {
            return;
        };
        let e = &self.members[&target];
        let addr = e.addr;
        // Lifeguard's buddy system (memberlist does it): a ping to a suspect carries the suspicion, so a
        // member that is only slow learns it at once and refutes.
        let buddy = (e.state == MemberState::Suspect).then(|| Message::Suspect {
            incarnation: e.incarnation,
            name: target.clone(),
            from: self.name.clone(),
        });
        let seq = self.next_seq();
        self.probes.insert(
            seq,
            Probe::Direct {
                target: target.clone(),
                nacks: 0,
                expected_nacks: 0,
            },
        );
        self.rtt_probe_sent(now, seq, &target, addr);
        let mut msgs = vec![Message::Ping { seq, target }];
        msgs.extend(buddy);
        self.send_all(addr, &msgs, out);
        self.schedule(now + self.scaled(self.timing.probe_timeout), Timer::AckTimeout(seq));
        self.schedule(now + interval, Timer::ProbeEnd(seq));
    }

    fn next_probe_target(&mut self) -> Option<String> {
        for _ in 0..=self.node_list.len() {
            if self.probe_index >= self.node_list.len() {
                if self.node_list.is_empty() {
                    return None;
                }
                shuffle(&mut self.rng, &mut self.node_list);
                self.probe_index = 0;
            }
            let name = &self.node_list[self.probe_index];
            self.probe_index += 1;
            if let Some(e) = self.members.get(name) {
                if matches!(e.state, MemberState::Alive | MemberState::Suspect) {
                    return Some(name.clone());
                }
            }
        }
        None
    }

    /// No direct ack in time: a direct probe goes indirect; a relay gives up (and nacks if asked).
    pub(super) fn ack_timeout(&mut self, now: Instant, seq: u32, out: &mut Vec<Effect>) {
        match self.probes.get(&seq) {
            Some(Probe::Direct { target, .. }) => {
                let target = target.clone();
                let Some(target_addr) = self.members.get(&target).map(|e| e.addr) else {
                    return;
                };
                let k = self.timing.indirect_checks;
                let relays = self.random_members(k, |n, e| n != target && e.state == MemberState::Alive);
                for relay in &relays {
                    let addr = self.members[relay].addr;
                    let msg = Message::IndirectPing {
                        seq,
                        target: target.clone(),
                        target_addr,
                        nack: true,
                    };
                    self.send(addr, msg, out);
                }
                if let Some(Probe::Direct { expected_nacks, .. }) = self.probes.get_mut(&seq) {
                    *expected_nacks = relays.len() as u32;
                }
                self.stream_ping(now, seq, target, target_addr, out);
            }
            Some(Probe::Relay { .. }) => {
                if let Some(Probe::Relay { requester, seq, nack }) = self.probes.remove(&seq) {
                    if nack {
                        self.send(requester, Message::Nack { seq }, out);
                    }
                }
            }
            None => {}
        }
    }

    /// A relay's nack is due: the target has not answered yet. Sent before the relay gives up, so it
    /// reaches the requester while its probe is still open (see `relay_nack_after`); a later ack is
    /// still relayed.
    pub(super) fn relay_nack(&mut self, seq: u32, out: &mut Vec<Effect>) {
        if let Some(Probe::Relay { requester, seq, nack }) = self.probes.get_mut(&seq) {
            if std::mem::take(nack) {
                let (to, seq) = (*requester, *seq);
                self.send(to, Message::Nack { seq }, out);
            }
        }
    }

    /// memberlist's TCP fallback: alongside the indirect probes, ping the target over TCP until the probe
    /// interval ends (UDP loss alone must not make a reachable member suspect).
    fn stream_ping(&mut self, now: Instant, seq: u32, target: String, to: SocketAddr, out: &mut Vec<Effect>) {
        if !self.timing.tcp_fallback {
            return;
        }
        let left = self
            .scaled(self.timing.probe_interval)
            .saturating_sub(self.scaled(self.timing.probe_timeout));
        let ping = wire::encode_message(&Message::Ping { seq, target });
        out.push(Effect::StreamPing {
            to,
            bytes: wire::assemble_packet([ping.as_slice()]),
            deadline: now + left,
        });
    }

    /// A reply to a TCP fallback ping: an ack for a probe still running ends it without suspicion. As in
    /// memberlist, it does not count as a healthy probe for our own health score (UDP failed after all).
    pub(super) fn on_stream_reply(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            if let Message::Ack { seq } = msg {
                if matches!(self.probes.get(&seq), Some(Probe::Direct { .. })) {
                    self.probes.remove(&seq);
                    self.stats.probes_rescued_by_tcp += 1;
                }
            }
        }
    }

    /// The probe interval ended without any ack: suspect the target, and judge our own health by the
    /// nacks (relays that could not reach it either prove our network works).
    pub(super) fn probe_end(&mut self, now: Instant, seq: u32, out: &mut Vec<Effect>) {
        let Some(Probe::Direct {
            target,
            nacks,
            expected_nacks,
        }) = self.probes.remove(&seq)
        else {
            return;
        };
        self.stats.probes_failed += 1;
        let delta = if expected_nacks > 0 {
            expected_nacks.saturating_sub(nacks)
        } else {
            1
        };
        self.apply_awareness(delta as i64);
        if let Some(e) = self.members.get(&target) {
            let incarnation = e.incarnation;
            let me = self.name.clone();
            self.on_suspect(now, incarnation, target, me, out);
        }
    }

    pub(super) fn gossip(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.eager_due = false;
        if self.broadcasts.len() == 0 {
            return;
        }
        let to_the_dead = self.timing.gossip_to_the_dead;
        let targets = self.random_members(self.timing.gossip_nodes, |_, e| match e.state {
            MemberState::Alive | MemberState::Suspect => true,
            MemberState::Dead => now.saturating_since(e.state_change) < to_the_dead,
            MemberState::Left => false,
        });
        let limit = self.retransmit_limit();
        for target in targets {
            let parts = self.broadcasts.take(self.timing.max_packet.saturating_sub(1), limit);
            if parts.is_empty() {
                break;
            }
            let bytes = super::wire::assemble_packet(parts.iter().map(|v| v.as_slice()));
            out.push(Effect::Packet {
                to: self.members[&target].addr,
                bytes,
            });
        }
    }

    /// `eager_gossip`: good news reached a member that had nothing queued; gossip it now rather than at
    /// the next tick, and let the ticks resume a full interval from now. Each hop of a rumour then costs
    /// a network delay instead of half a gossip interval on average: a join reaches most of a
    /// 1,000-member pool within milliseconds, and the rest at the next ticks.
    ///
    /// Suspicions and deaths are not pushed early: a suspicion that outran the refutation answering it
    /// would reach more members before the refutation does, each a chance to miss the refutation and
    /// declare a live member failed (measured: pushing them too raised the false positives at 10 %
    /// loss, see BENCHMARKS.md).
    ///
    /// Cost: a broadcast is still sent `retransmit_limit` times in all, only sooner. As only a member
    /// with an empty queue does it, a tick is moved rather than added while the member is quiet (its
    /// ticks were sending nothing); at worst, when the queue emptied at the last tick, a round is
    /// added, and that can happen once per `retransmit_limit` transmissions of a fresh broadcast.
    pub(super) fn gossip_eagerly(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if !std::mem::take(&mut self.eager_due) || self.left || self.conflicted || self.broadcasts.len() == 0 {
            return;
        }
        self.timers.remove(&(self.gossip_at, Timer::Gossip));
        self.gossip_at = now + self.timing.gossip_interval;
        self.schedule(self.gossip_at, Timer::Gossip);
        self.gossip(now, out);
    }

    pub(super) fn periodic_push_pull(&mut self, now: Instant, out: &mut Vec<Effect>) {
        // memberlist's pushPullScale: above 32 members, sync less often so the cluster-wide TCP load stays flat.
        let n = self.num_alive();
        let mult = if n <= 32 {
            1
        } else {
            ((n as f64).log2() - 32f64.log2()).ceil() as u32 + 1
        };
        self.schedule(now + self.timing.push_pull_interval * mult, Timer::PushPull);
        self.push_pull_random(out);
    }

    pub(super) fn push_pull_random(&mut self, out: &mut Vec<Effect>) {
        if self.leaving {
            return;
        }
        let picked = self.random_members(1, |_, e| e.state == MemberState::Alive);
        if let Some(name) = picked.first() {
            out.push(Effect::PushPull {
                to: self.members[name].addr,
                state: self.local_state(false),
            });
        }
    }

    /// serf's reconnect: a failed member may be alive behind a healed partition; nobody gossips to it any
    /// more, so ask it directly for a push-pull. Chance failed/alive per round, as serf does.
    pub(super) fn reconnect(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.schedule(now + self.timing.reconnect_interval, Timer::Reconnect);
        if self.leaving {
            return;
        }
        let failed: Vec<SocketAddr> = self
            .members
            .iter()
            .filter(|(n, e)| **n != self.name && e.state == MemberState::Dead)
            .map(|(_, e)| e.addr)
            .collect();
        if failed.is_empty() {
            return;
        }
        let alive = self.num_alive().max(1) as f64;
        if self.rng.gen::<f64>() > failed.len() as f64 / alive {
            return;
        }
        let to = failed[self.rng.gen_range(0..failed.len())];
        out.push(Effect::PushPull {
            to,
            state: self.local_state(false),
        });
    }
}

/// The answer to a TCP fallback ping received by the member `name` (the runtime calls it for every
/// stream-packet frame): an ack packet for a `Ping` meant for `name`, `None` for anything else (a ping
/// meant for a previous owner of our address must not vouch for it, as over UDP).
pub fn stream_ping_reply(name: &str, request: &[u8]) -> Option<Vec<u8>> {
    let msgs = wire::decode_packet(request).ok()?;
    let seq = msgs.iter().find_map(|m| match m {
        Message::Ping { seq, target } if target == name => Some(*seq),
        _ => None,
    })?;
    let ack = wire::encode_message(&Message::Ack { seq });
    Some(wire::assemble_packet([ack.as_slice()]))
}

/// When a relay nacks: at 80 % of the probe timeout. The requester asked for help `probe_timeout` into its
/// probe and counts the nacks when its interval ends (`probe_interval`, 2 × `probe_timeout` by default).
/// memberlist's relays nack when they give up, after the full `probe_timeout`, so the nack arrives a
/// network delay after the requester stopped counting and never counts: every failed probe of a crashed
/// member then raises the prober's health score as if the prober were the unhealthy one, and it skips
/// probe rounds (with the coordinated schedule, rounds in which it alone was to probe its target).
pub(super) fn relay_nack_after(probe_timeout: Duration) -> Duration {
    probe_timeout * 4 / 5
}
