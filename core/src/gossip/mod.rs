//! Gossip membership: SWIM with Lifeguard, as memberlist and serf run it under Consul, with no I/O.
//!
//! Failure detection: every `probe_interval` a member probes the next member of a shuffled round-robin
//! list; a missed ack within `probe_timeout` makes it ask `indirect_checks` others to probe too; no ack by
//! the end of the interval makes the target *suspect*. A suspicion becomes *dead* after a timeout that
//! starts at `suspicion_max_timeout_mult ×` its floor and shrinks as independent members confirm it
//! (Lifeguard); a suspected member that hears of it refutes by raising its incarnation. Missed nacks from
//! indirect probers raise the local health score, which slows our own probing (Lifeguard awareness).
//!
//! Dissemination: state changes are piggybacked on every packet and on a `gossip_interval` fan-out, each
//! sent a bounded number of times; a periodic full-state push-pull over TCP repairs anything missed. A
//! graceful leave is an explicit intent, so *left* differs from *failed*.
//!
//! Invariants: a member's incarnation never decreases in our table; only the member itself raises it
//! (refutation, tag change); deterministic given the seed and inputs (BTreeMap iteration, seeded RNG,
//! timers as an absolute-deadline table in which stale entries are recognised and ignored).

mod broadcast;
mod config;
mod rtt;
#[cfg(test)]
mod tests;
pub mod wire;

pub use config::GossipTiming;
pub use probe::stream_ping_reply;
pub use rtt::ACK_PAYLOAD_TAG;
pub use wire::{MemberRecord, MemberState, Message, PushPull, Tags};

use crate::time::Instant;
use broadcast::{BroadcastKey, BroadcastQueue};
use core::net::SocketAddr;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipConfig {
    /// This member's unique name (the node name).
    pub name: String,
    /// The address others reach our UDP and TCP gossip port at.
    pub addr: SocketAddr,
    pub tags: Tags,
    pub seed: u64,
    pub timing: GossipTiming,
}

/// Consul's numeric member status (`Status` in `/v1/agent/members`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberStatus {
    Alive = 1,
    Leaving = 2,
    Left = 3,
    Failed = 4,
}

/// A member as users see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    pub addr: SocketAddr,
    pub tags: Tags,
    pub incarnation: u32,
    pub status: MemberStatus,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; due timers fire.
    Tick,
    /// A UDP datagram arrived.
    Packet { from: SocketAddr, bytes: Vec<u8> },
    /// A peer opened a push-pull exchange; answer with `Effect::PushPullReply { conn }`.
    PushPull { conn: u64, state: PushPull },
    /// The answer to our `Effect::PushPull`.
    PushPullReply { state: PushPull },
    /// The answer to our `Effect::StreamPing`, if one came back before its deadline.
    StreamReply { bytes: Vec<u8> },
    /// Join through these addresses (a push-pull with each).
    Join { addrs: Vec<SocketAddr> },
    /// Leave gracefully: announce the intent, then report `GossipEvent::LeaveDone`.
    Leave,
    /// Mark a member as left everywhere (it refutes if alive); `prune` forgets it outright.
    ForceLeave { name: String, prune: bool },
    /// Replace our tags (raises our incarnation so the change wins everywhere).
    SetTags(Tags),
    /// Broadcast a user event.
    UserEvent { name: String, payload: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Send this datagram (at most `max_packet` bytes).
    Packet {
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    /// Open a TCP exchange with `to`: send `state`, feed the answer back as `Input::PushPullReply`.
    PushPull {
        to: SocketAddr,
        state: PushPull,
    },
    /// Answer the incoming exchange `conn`.
    PushPullReply {
        conn: u64,
        state: PushPull,
    },
    /// memberlist's TCP fallback ping: open a TCP connection to `to` (its gossip port), send `bytes` (one
    /// packet) as a stream-packet frame, and feed the reply frame back as `Input::StreamReply` if it
    /// arrives before `deadline`; give up silently otherwise. The receiving side answers with
    /// [`stream_ping_reply`].
    StreamPing {
        to: SocketAddr,
        bytes: Vec<u8>,
        deadline: Instant,
    },
    Event(GossipEvent),
}

/// Membership changes, for the agent (server discovery) and later the catalog's `serfHealth`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipEvent {
    MemberJoin(Member),
    MemberUpdate(Member),
    MemberFailed(Member),
    MemberLeft(Member),
    /// A failed or left member was forgotten (reaped or pruned).
    MemberReaped(String),
    User {
        ltime: u64,
        name: String,
        payload: Vec<u8>,
    },
    /// Our leave intent had time to spread; the runtime may shut down.
    LeaveDone,
    /// A direct probe of `member` was acked after `rtt` (memberlist's `NotifyPingComplete`), with the
    /// payload of the ack if it carried one (see [`Gossip::set_ack_payload`]).
    PingRtt {
        member: String,
        rtt: Duration,
        payload: Option<Vec<u8>>,
    },
    /// Another address claims the live member `name` (memberlist's "Conflicting address"): the claim is
    /// refused. Reported by every member that refuses it, `name` itself included (which does not refute
    /// it: a refutation war would follow).
    NameConflict {
        name: String,
        ours: SocketAddr,
        theirs: SocketAddr,
    },
    /// We lost a conflict: a peer's full state shows `holder`, a live member at another address, holding
    /// our name (or our node ID, the `id` tag, under another name). This machine has gone quiet for good
    /// (serf shuts down after losing its name-conflict vote); the agent should stop.
    Conflicted {
        holder: Member,
    },
    /// `claimant` announced the node ID `id` that the live member `holder` has: refused (Consul refuses
    /// members with conflicting node IDs; cloned VMs and copied data dirs cause it).
    NodeIdConflict {
        id: String,
        holder: String,
        claimant: String,
    },
}

/// The tag that carries a member's node ID (Consul's serf tag `id`). Two live members may not share one.
pub const ID_TAG: &str = "id";

/// Counters of dropped or refused inputs (bad peer input is counted, never fatal).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub malformed_packets: u64,
    pub members_refused: u64,
    pub addr_conflicts: u64,
    pub refutations: u64,
    pub probes_failed: u64,
    /// Probes that failed over UDP (direct and indirect) but were answered over TCP (no suspicion).
    pub probes_rescued_by_tcp: u64,
    /// Alive claims refused because their node ID (`id` tag) is held by another live member.
    pub id_conflicts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    AckTimeout(u32),
    RelayNack(u32),
    RingCheck,
    ProbeEnd(u32),
    Probe,
    Gossip,
    PushPull,
    JoinSync,
    Reap,
    Reconnect,
    LeaveDone,
    Suspicion(String),
}

enum Probe {
    Direct {
        target: String,
        nacks: u32,
        expected_nacks: u32,
    },
    Relay {
        requester: SocketAddr,
        seq: u32,
        nack: bool,
    },
}

struct Suspicion {
    start: Instant,
    min: Duration,
    max: Duration,
    /// Independent confirmations needed to reach `min`.
    k: u32,
    confirmers: BTreeSet<String>,
    deadline: Instant,
}

struct Entry {
    addr: SocketAddr,
    tags: Tags,
    incarnation: u32,
    state: MemberState,
    state_change: Instant,
    suspicion: Option<Suspicion>,
}

/// One member's view of a gossip pool.
///
/// Driving contract: call [`Gossip::handle`] with each input and the current time (never going
/// backwards); carry out the effects it appends in order; call `handle(now, Input::Tick, ..)` at or after
/// [`Gossip::next_deadline`]. Spurious ticks are harmless.
pub struct Gossip {
    name: String,
    timing: GossipTiming,
    rng: SmallRng,
    now: Instant,
    members: BTreeMap<String, Entry>,
    /// Probe order (every member but us); reshuffled at each wrap.
    node_list: Vec<String>,
    probe_index: usize,
    seq: u32,
    probes: BTreeMap<u32, Probe>,
    /// Lifeguard local health: 0 (healthy) ..= awareness_max_multiplier - 1.
    awareness: u32,
    broadcasts: BroadcastQueue,
    timers: BTreeSet<(Instant, Timer)>,
    event_clock: u64,
    seen_events: BTreeSet<(u64, String, u32)>,
    leaving: bool,
    left: bool,
    /// We lost a name or node-ID conflict: every input is ignored from then on.
    conflicted: bool,
    /// Node ID (`id` tag) → the member last accepted with it. Checked against that member's entry when
    /// used, so stale pairs (renamed, reaped, retagged members) are harmless.
    ids: BTreeMap<String, String>,
    /// Members alive or suspect, us included (kept up to date: `num_alive` is on every packet's path).
    live: Live,
    stats: GossipStats,
    /// Direct probes in flight (for RTT samples) and our ack payload.
    rtt: rtt::RttProbes,
    /// The shared probe ring (`coordinated_probes`), rebuilt when the live set changed.
    ring: schedule::ProbeRing,
    /// Added to `now` to get the clock probe rounds are numbered by (see `set_clock_offset`).
    clock_offset: u64,
    /// The shared round the armed probe timer belongs to, and when it fires (`coordinated_probes`).
    probe_round: u64,
    probe_at: Option<Instant>,
    /// `live.changes` when the probe timer was last re-armed for the ring, and whether a re-arm is due.
    ring_seen: u64,
    ring_check: Option<Instant>,
    last_ring_check: Instant,
    /// When the gossip timer fires next (`eager_gossip` brings it forward).
    gossip_at: Instant,
    /// News was queued while nothing else was: gossip it once the input is handled (`eager_gossip`).
    eager_due: bool,
}

/// The number of live members (alive or suspect, us included), and how often the live set changed.
#[derive(Clone, Copy, Debug, Default)]
struct Live {
    n: usize,
    changes: u64,
}

impl Gossip {
    pub fn new(config: GossipConfig, now: Instant) -> Self {
        let mut rng = SmallRng::seed_from_u64(config.seed ^ 0x6a09_e667_f3bc_c908);
        let t = &config.timing;
        let mut timers = BTreeSet::new();
        let probe_jitter = jitter(&mut rng, t.probe_interval);
        if !t.coordinated_probes {
            timers.insert((now + probe_jitter, Timer::Probe));
        }
        let gossip_at = now + jitter(&mut rng, t.gossip_interval);
        timers.insert((gossip_at, Timer::Gossip));
        timers.insert((
            now + t.push_pull_interval + jitter(&mut rng, t.push_pull_interval),
            Timer::PushPull,
        ));
        timers.insert((now + t.reap_interval, Timer::Reap));
        timers.insert((now + t.reconnect_interval, Timer::Reconnect));
        let mut ids = BTreeMap::new();
        if let Some(id) = config.tags.get(ID_TAG).filter(|id| !id.is_empty()) {
            ids.insert(id.clone(), config.name.clone());
        }
        let mut members = BTreeMap::new();
        members.insert(
            config.name.clone(),
            Entry {
                addr: config.addr,
                tags: config.tags,
                incarnation: 0,
                state: MemberState::Alive,
                state_change: now,
                suspicion: None,
            },
        );
        let mut g = Gossip {
            name: config.name,
            timing: config.timing,
            rng,
            now,
            members,
            node_list: Vec::new(),
            probe_index: 0,
            seq: 0,
            probes: BTreeMap::new(),
            awareness: 0,
            broadcasts: BroadcastQueue::default(),
            timers,
            event_clock: 0,
            seen_events: BTreeSet::new(),
            leaving: false,
            left: false,
            conflicted: false,
            ids,
            live: Live { n: 1, changes: 0 },
            stats: GossipStats::default(),
            rtt: rtt::RttProbes::default(),
            ring: schedule::ProbeRing::default(),
            clock_offset: 0,
            probe_round: 0,
            probe_at: None,
            ring_seen: 0,
            ring_check: None,
            last_ring_check: now,
            gossip_at,
            eager_due: false,
        };
        if g.timing.coordinated_probes {
            g.arm_probe(now, 0);
        }
        g
    }

    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        let now = now.max(self.now);
        self.now = now;
        if self.conflicted {
            return;
        }
        match input {
            Input::Tick => self.fire_timers(now, out),
            Input::Packet { from, bytes } => match wire::decode_packet(&bytes) {
                Ok(msgs) => {
                    for msg in msgs {
                        self.on_message(now, from, msg, out);
                    }
                }
                Err(_) => self.stats.malformed_packets += 1,
            },
            Input::PushPull { conn, state } => {
                out.push(Effect::PushPullReply {
                    conn,
                    state: self.local_state(false),
                });
                self.merge(now, state, out);
            }
            Input::PushPullReply { state } => self.merge(now, state, out),
            Input::StreamReply { bytes } => match wire::decode_packet(&bytes) {
                Ok(msgs) => self.on_stream_reply(msgs),
                Err(_) => self.stats.malformed_packets += 1,
            },
            Input::Join { addrs } => {
                self.schedule(now + self.timing.join_sync_delay, Timer::JoinSync);
                for to in addrs {
                    out.push(Effect::PushPull {
                        to,
                        state: self.local_state(true),
                    });
                }
            }
            Input::Leave => self.leave(now, out),
            Input::ForceLeave { name, prune } => self.force_leave(now, name, prune, out),
            Input::SetTags(tags) => self.set_tags(now, tags, out),
            Input::UserEvent { name, payload } => {
                let ltime = self.event_clock;
                self.event_clock += 1;
                self.on_user_event(ltime, name, payload, out);
            }
        }
        self.gossip_eagerly(now, out);
        self.note_ring_change(now);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every known member, including us, sorted by name.
    pub fn members(&self) -> Vec<Member> {
        self.members.iter().map(|(n, e)| self.view(n, e)).collect()
    }

    pub fn member(&self, name: &str) -> Option<Member> {
        self.members.get(name).map(|e| self.view(name, e))
    }

    /// Members alive or suspect, us included (memberlist's estimate of the cluster size).
    pub fn num_alive(&self) -> usize {
        debug_assert_eq!(
            self.live.n,
            self.members
                .values()
                .filter(|e| matches!(e.state, MemberState::Alive | MemberState::Suspect))
                .count()
        );
        self.live.n
    }

    /// Lifeguard's local health score (0 is healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness
    }

    pub fn stats(&self) -> &GossipStats {
        &self.stats
    }

    pub fn event_clock(&self) -> u64 {
        self.event_clock
    }

    /// Broadcasts waiting to be (re)transmitted.
    pub fn queued_broadcasts(&self) -> usize {
        self.broadcasts.len()
    }

    /// Our full state, as sent in a push-pull (the runtime's `join` path uses it too).
    pub fn local_state(&self, join: bool) -> PushPull {
        PushPull {
            join,
            members: self
                .members
                .iter()
                .map(|(name, e)| MemberRecord {
                    name: name.clone(),
                    addr: e.addr,
                    tags: e.tags.clone(),
                    incarnation: e.incarnation,
                    state: if name == &self.name && self.leaving {
                        MemberState::Left
                    } else {
                        e.state
                    },
                })
                .collect(),
            event_ltime: self.event_clock,
        }
    }

    fn view(&self, name: &str, e: &Entry) -> Member {
        let status = match e.state {
            _ if name == self.name && self.left => MemberStatus::Left,
            _ if name == self.name && self.leaving => MemberStatus::Leaving,
            MemberState::Alive | MemberState::Suspect => MemberStatus::Alive,
            MemberState::Dead => MemberStatus::Failed,
            MemberState::Left => MemberStatus::Left,
        };
        Member {
            name: name.to_string(),
            addr: e.addr,
            tags: e.tags.clone(),
            incarnation: e.incarnation,
            status,
        }
    }

    fn event(&self, out: &mut Vec<Effect>, name: &str, make: fn(Member) -> GossipEvent) {
        if let Some(e) = self.members.get(name) {
            out.push(Effect::Event(make(self.view(name, e))));
        }
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.insert((at, timer));
    }

    /// `d` stretched by the local health score (Lifeguard).
    fn scaled(&self, d: Duration) -> Duration {
        if self.timing.lifeguard {
            d * (self.awareness + 1)
        } else {
            d
        }
    }

    fn apply_awareness(&mut self, delta: i64) {
        if !self.timing.lifeguard {
            return;
        }
        let max = self.timing.awareness_max_multiplier.saturating_sub(1) as i64;
        self.awareness = (self.awareness as i64 + delta).clamp(0, max) as u32;
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn retransmit_limit(&self) -> u32 {
        let n = self.num_alive() as f64;
        self.timing.retransmit_mult * ((n + 1.0).log10().ceil() as u32).max(1)
    }

    /// Send `msg` to `to`, filling the rest of the datagram with queued broadcasts.
    fn send(&mut self, to: SocketAddr, msg: Message, out: &mut Vec<Effect>) {
        self.send_all(to, &[msg], out);
    }

    /// Send `msgs` in one datagram to `to`, filling the rest with queued broadcasts.
    fn send_all(&mut self, to: SocketAddr, msgs: &[Message], out: &mut Vec<Effect>) {
        let first: Vec<Vec<u8>> = msgs.iter().map(wire::encode_message).collect();
        let used: usize = first.iter().map(Vec::len).sum();
        let budget = self.timing.max_packet.saturating_sub(1 + used);
        let limit = self.retransmit_limit();
        let extra = self.broadcasts.take(budget, limit);
        let bytes = wire::assemble_packet(first.iter().chain(extra.iter()).map(|v| v.as_slice()));
        out.push(Effect::Packet { to, bytes });
    }

    fn broadcast(&mut self, key: BroadcastKey, msg: &Message) {
        let encoded = wire::encode_message(msg);
        // Good news (a join, a refutation, new tags, a leave, a user event) goes out at once; a suspicion
        // or a death keeps the gossip pace, so that a refutation outruns the suspicion it answers.
        let good_news = !matches!(msg, Message::Suspect { .. } | Message::Dead { .. });
        if self.timing.eager_gossip && good_news && self.broadcasts.len() == 0 {
            self.eager_due = true;
        }
        self.broadcasts.push(key, encoded, self.timing.max_broadcasts);
    }

    fn broadcast_alive(&mut self, name: &str) {
        if let Some(e) = self.members.get(name) {
            let msg = Message::Alive {
                incarnation: e.incarnation,
                name: name.to_string(),
                addr: e.addr,
                tags: e.tags.clone(),
            };
            self.broadcast(BroadcastKey::Member(name.to_string()), &msg);
        }
    }

    /// Up to `k` distinct random members (not us) passing `keep`.
    fn random_members(&mut self, k: usize, keep: impl Fn(&str, &Entry) -> bool) -> Vec<String> {
        let mut picked: Vec<String> = Vec::with_capacity(k);
        let n = self.node_list.len();
        for _ in 0..3 * n {
            if picked.len() >= k {
                break;
            }
            let name = &self.node_list[self.rng.gen_range(0..n)];
            if picked.contains(name) {
                continue;
            }
            if let Some(e) = self.members.get(name) {
                if keep(name, e) {
                    picked.push(name.clone());
                }
            }
        }
        picked
    }

    fn fire_timers(&mut self, now: Instant, out: &mut Vec<Effect>) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now {
                break;
            }
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Probe => self.probe(now, out),
                Timer::AckTimeout(seq) => self.ack_timeout(now, seq, out),
                Timer::RelayNack(seq) => self.relay_nack(seq, out),
                Timer::RingCheck => self.ring_check(now),
                Timer::ProbeEnd(seq) => self.probe_end(now, seq, out),
                Timer::Gossip => {
                    self.gossip_at = now + self.timing.gossip_interval;
                    self.schedule(self.gossip_at, Timer::Gossip);
                    if !self.left {
                        self.gossip(now, out);
                    }
                }
                Timer::PushPull => self.periodic_push_pull(now, out),
                Timer::JoinSync => self.push_pull_random(out),
                Timer::Reap => self.reap(now, out),
                Timer::Reconnect => self.reconnect(now, out),
                Timer::LeaveDone => {
                    self.left = true;
                    out.push(Effect::Event(GossipEvent::LeaveDone));
                }
                Timer::Suspicion(name) => self.suspicion_expired(now, name, out),
            }
        }
    }
}

mod membership;
mod probe;
mod schedule;
#[cfg(test)]
mod schedule_tests;

fn jitter(rng: &mut SmallRng, d: Duration) -> Duration {
    let us = d.as_micros().max(1) as u64;
    Duration::from_micros(rng.gen_range(0..us))
}

fn shuffle(rng: &mut SmallRng, v: &mut [String]) {
    v.shuffle(rng);
}
