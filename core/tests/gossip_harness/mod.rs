//! A pure, deterministic harness for many gossip members: a priority queue of timed events, a seeded
//! lossy network (UDP packets dropped with probability `loss`, uniform latency; push-pull over "TCP" is
//! reliable but fails against a crashed member; TCP fallback pings lose segments at the UDP rate and resend
//! them after TCP's retransmission timeouts), crashed members (silent), and slow members (every packet
//! they send or receive and every timer of theirs is delayed by up to `slow` — an overloaded host).
//! Virtual time jumps to the next event.
#![allow(dead_code)]

use concord_core::gossip::{
    stream_ping_reply, Effect, Gossip, GossipConfig, GossipEvent, GossipTiming, Input, MemberStatus, PushPull,
};
use concord_core::Instant;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

pub fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 8301))
}

pub fn name(i: usize) -> String {
    format!("node-{i:04}")
}

#[derive(Clone, Debug)]
pub struct Net {
    pub loss: f64,
    pub min_latency: Duration,
    pub max_latency: Duration,
}

impl Default for Net {
    fn default() -> Self {
        Net {
            loss: 0.0,
            min_latency: Duration::from_millis(1),
            max_latency: Duration::from_millis(5),
        }
    }
}

enum Ev {
    Packet {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    PushPull {
        to: usize,
        from: usize,
        state: PushPull,
    },
    PushPullReply {
        to: usize,
        state: PushPull,
    },
    Tick {
        node: usize,
        deadline: Instant,
    },
    /// A TCP fallback ping arriving at `to` (the connection and request made it).
    StreamPing {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
        deadline: Instant,
    },
    StreamReply {
        to: usize,
        bytes: Vec<u8>,
        deadline: Instant,
    },
}

pub struct SimMember {
    pub gossip: Gossip,
    pub crashed: bool,
    pub slow: Option<Duration>,
    scheduled: Option<Instant>,
}

/// One observed membership event (only Failed/Left/Join are kept, compactly).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub at: Instant,
    pub observer: usize,
    pub about: String,
    pub status: MemberStatus,
}

pub struct Cluster {
    pub members: Vec<SimMember>,
    pub net: Net,
    pub timing: GossipTiming,
    pub now: Instant,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    rng: SmallRng,
    by_addr: BTreeMap<SocketAddr, usize>,
    /// Every Failed and Left event, and Join events about members in `watch`.
    pub seen: Vec<Seen>,
    pub watch: BTreeSet<String>,
    pub user_events: Vec<(usize, u64, String)>,
    pub packets_sent: u64,
    /// Of `packets_sent`, those of gossip rounds (broadcasts only: no probe, ack or nack).
    pub gossip_packets: u64,
    pub max_packet_seen: usize,
    /// A running hash of every event, for determinism checks.
    pub trace: u64,
    /// When set, the first probe (`Ping`) sent to this address is timed into `first_ping`.
    pub ping_watch: Option<SocketAddr>,
    pub first_ping: Option<Instant>,
    /// TCP fallback pings started.
    pub stream_pings: u64,
}

const TCP_SYN_RTO: Duration = Duration::from_secs(1);
const TCP_RTO: Duration = Duration::from_millis(200);

impl Cluster {
    pub fn new(seed: u64, timing: GossipTiming, net: Net) -> Self {
        Cluster {
            members: Vec::new(),
            net,
            timing,
            now: Instant::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            rng: SmallRng::seed_from_u64(seed),
            by_addr: BTreeMap::new(),
            seen: Vec::new(),
            watch: BTreeSet::new(),
            user_events: Vec::new(),
            packets_sent: 0,
            gossip_packets: 0,
            max_packet_seen: 0,
            trace: seed,
            ping_watch: None,
            first_ping: None,
            stream_pings: 0,
        }
    }

    /// Start a new member (index = its number) without joining anyone.
    pub fn spawn(&mut self) -> usize {
        let i = self.members.len();
        let config = GossipConfig {
            name: name(i),
            addr: addr(i),
            tags: [("role".to_string(), "node".to_string())].into(),
            seed: self.rng.gen(),
            timing: self.timing.clone(),
        };
        self.members.push(SimMember {
            gossip: Gossip::new(config, self.now),
            crashed: false,
            slow: None,
            scheduled: None,
        });
        self.by_addr.insert(addr(i), i);
        self.reschedule(i);
        i
    }

    pub fn input(&mut self, i: usize, input: Input) {
        let mut out = Vec::new();
        let now = self.now;
        self.members[i].gossip.handle(now, input, &mut out);
        self.carry_out(i, out);
    }

    pub fn join(&mut self, i: usize, via: usize) {
        self.input(i, Input::Join { addrs: vec![addr(via)] });
    }

    pub fn crash(&mut self, i: usize) {
        self.members[i].crashed = true;
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn delay(&mut self, a: usize, b: usize) -> Duration {
        let (lo, hi) = (
            self.net.min_latency.as_micros() as u64,
            self.net.max_latency.as_micros() as u64,
        );
        let mut d = Duration::from_micros(self.rng.gen_range(lo..=hi.max(lo)));
        for n in [a, b] {
            if let Some(slow) = self.members[n].slow {
                d += Duration::from_micros(self.rng.gen_range(0..=slow.as_micros() as u64));
            }
        }
        d
    }

    /// Time for `segments` TCP segments between `a` and `b`, each sent one way: each is lost with the
    /// network's loss rate and then resent after `rto`, doubling (Linux: 1 s for SYNs, 200 ms minimum
    /// otherwise). TCP is reliable, not fast: at 10 % loss a fallback ping often misses its deadline.
    fn tcp_delay(&mut self, a: usize, b: usize, segments: usize, rto: Duration) -> Duration {
        let mut d = Duration::ZERO;
        for _ in 0..segments {
            let mut backoff = rto;
            while self.rng.gen_bool(self.net.loss) {
                d += backoff;
                backoff *= 2;
            }
            d += self.delay(a, b);
        }
        d
    }

    fn reschedule(&mut self, i: usize) {
        let Some(d) = self.members[i].gossip.next_deadline() else {
            return;
        };
        if self.members[i].scheduled.is_some_and(|s| s <= d) {
            return;
        }
        self.members[i].scheduled = Some(d);
        let mut at = d.max(self.now);
        if let Some(slow) = self.members[i].slow {
            at = at + Duration::from_micros(self.rng.gen_range(0..=slow.as_micros() as u64));
        }
        self.push(at, Ev::Tick { node: i, deadline: d });
    }

    fn carry_out(&mut self, i: usize, out: Vec<Effect>) {
        for effect in out {
            match effect {
                Effect::Packet { to, bytes } => {
                    self.packets_sent += 1;
                    if is_gossip(&bytes) {
                        self.gossip_packets += 1;
                    }
                    self.max_packet_seen = self.max_packet_seen.max(bytes.len());
                    let Some(&j) = self.by_addr.get(&to) else { continue };
                    if self.first_ping.is_none() && self.ping_watch == Some(to) && is_ping(&bytes) {
                        self.first_ping = Some(self.now);
                    }
                    if self.rng.gen_bool(self.net.loss) {
                        continue;
                    }
                    let at = self.now + self.delay(i, j);
                    self.push(
                        at,
                        Ev::Packet {
                            to: j,
                            from: addr(i),
                            bytes,
                        },
                    );
                }
                Effect::PushPull { to, state } => {
                    let Some(&j) = self.by_addr.get(&to) else { continue };
                    let at = self.now + self.delay(i, j);
                    self.push(at, Ev::PushPull { to: j, from: i, state });
                }
                Effect::StreamPing { to, bytes, deadline } => {
                    let Some(&j) = self.by_addr.get(&to) else { continue };
                    self.stream_pings += 1;
                    // Handshake (SYN, SYN-ACK) then the request; the reply is timed when it is sent.
                    let at = self.now + self.tcp_delay(i, j, 2, TCP_SYN_RTO) + self.tcp_delay(i, j, 1, TCP_RTO);
                    self.push(
                        at,
                        Ev::StreamPing {
                            to: j,
                            from: i,
                            bytes,
                            deadline,
                        },
                    );
                }
                Effect::PushPullReply { conn, state } => {
                    let j = conn as usize;
                    let at = self.now + self.delay(i, j);
                    self.push(at, Ev::PushPullReply { to: j, state });
                }
                Effect::Event(ev) => self.record(i, ev),
            }
        }
        self.reschedule(i);
    }

    fn record(&mut self, observer: usize, ev: GossipEvent) {
        let (about, status) = match &ev {
            GossipEvent::MemberJoin(m) => (m.name.clone(), MemberStatus::Alive),
            GossipEvent::MemberFailed(m) => (m.name.clone(), MemberStatus::Failed),
            GossipEvent::MemberLeft(m) => (m.name.clone(), MemberStatus::Left),
            GossipEvent::User { ltime, name, .. } => {
                self.user_events.push((observer, *ltime, name.clone()));
                return;
            }
            _ => return,
        };
        self.trace = self
            .trace
            .wrapping_mul(0x100_0000_01b3)
            .wrapping_add(self.now.0 ^ (observer as u64) << 20 ^ status as u64 ^ crc(&about));
        if status != MemberStatus::Alive || self.watch.contains(&about) {
            self.seen.push(Seen {
                at: self.now,
                observer,
                about,
                status,
            });
        }
    }

    /// Process the next event; false when none is left at or before `until`.
    pub fn step(&mut self, until: Instant) -> bool {
        let Some((&(at, seq), _)) = self.queue.first_key_value() else {
            return false;
        };
        if at > until {
            return false;
        }
        let ev = self.queue.remove(&(at, seq)).expect("just seen");
        self.now = self.now.max(at);
        let (i, input) = match ev {
            Ev::Packet { to, from, bytes } => (to, Input::Packet { from, bytes }),
            Ev::PushPull { to, from, state } => {
                if self.members[to].crashed {
                    return true;
                }
                (
                    to,
                    Input::PushPull {
                        conn: from as u64,
                        state,
                    },
                )
            }
            Ev::PushPullReply { to, state } => (to, Input::PushPullReply { state }),
            Ev::StreamPing {
                to,
                from,
                bytes,
                deadline,
            } => {
                // The target's runtime answers (a crashed member's connection is refused).
                if self.members[to].crashed || self.now > deadline {
                    return true;
                }
                let Some(reply) = stream_ping_reply(self.members[to].gossip.name(), &bytes) else {
                    return true;
                };
                let at = self.now + self.tcp_delay(to, from, 1, TCP_RTO);
                self.push(
                    at,
                    Ev::StreamReply {
                        to: from,
                        bytes: reply,
                        deadline,
                    },
                );
                return true;
            }
            Ev::StreamReply { to, bytes, deadline } => {
                // The prober stops waiting at the deadline.
                if self.now > deadline {
                    return true;
                }
                (to, Input::StreamReply { bytes })
            }
            Ev::Tick { node, deadline } => {
                if self.members[node].scheduled != Some(deadline) {
                    return true;
                }
                self.members[node].scheduled = None;
                (node, Input::Tick)
            }
        };
        if self.members[i].crashed {
            return true;
        }
        self.input(i, input);
        true
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.step(until) {}
        self.now = until;
    }

    /// Run until `done` holds (checked every `every`) or `limit` passes; the time it held at, if it did.
    pub fn run_until(
        &mut self,
        limit: Duration,
        every: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Option<Instant> {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return Some(self.now);
            }
            self.run_for(every);
        }
        done(self).then_some(self.now)
    }

    pub fn live(&self) -> impl Iterator<Item = (usize, &SimMember)> {
        self.members.iter().enumerate().filter(|(_, m)| !m.crashed)
    }

    /// Does every live member see `about` with `status`?
    pub fn all_see(&self, about: &str, status: MemberStatus) -> bool {
        self.live()
            .filter(|(_, m)| m.gossip.name() != about)
            .all(|(_, m)| m.gossip.member(about).is_some_and(|x| x.status == status))
    }

    /// Does every live member see every other live member alive?
    pub fn converged(&self) -> bool {
        let n = self.live().count();
        self.live().all(|(_, m)| m.gossip.num_alive() == n)
            && self.live().all(|(_, m)| {
                self.live().all(|(_, o)| {
                    m.gossip
                        .member(o.gossip.name())
                        .is_some_and(|x| x.status == MemberStatus::Alive)
                })
            })
    }

    /// Failed events about members that were not crashed (false positives).
    pub fn false_positives(&self) -> usize {
        self.seen
            .iter()
            .filter(|s| s.status == MemberStatus::Failed)
            .filter(|s| {
                let i: usize = s.about[5..].parse().unwrap_or(usize::MAX);
                i < self.members.len() && !self.members[i].crashed
            })
            .count()
    }
}

fn is_ping(bytes: &[u8]) -> bool {
    concord_core::gossip::wire::decode_packet(bytes).is_ok_and(|msgs| {
        msgs.iter()
            .any(|m| matches!(m, concord_core::gossip::Message::Ping { .. }))
    })
}

fn is_gossip(bytes: &[u8]) -> bool {
    use concord_core::gossip::Message;
    concord_core::gossip::wire::decode_packet(bytes).is_ok_and(|msgs| {
        msgs.iter().all(|m| {
            matches!(
                m,
                Message::Alive { .. }
                    | Message::Suspect { .. }
                    | Message::Dead { .. }
                    | Message::Leave { .. }
                    | Message::UserEvent { .. }
            )
        })
    })
}

fn crc(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// `q`-quantile (0..=1) of `xs` (sorted in place).
pub fn quantile(xs: &mut [f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let idx = ((xs.len() - 1) as f64 * q).round() as usize;
    xs[idx]
}
