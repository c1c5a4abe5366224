//! The simulated network: every `Effect::Send` becomes a packet that a router task delivers after a seeded
//! delay, unless the nemesis cut the link or the packet was lost; packets may be duplicated, and random
//! delays reorder them. A node's inbox is a bounded channel: a full inbox drops (like a full socket buffer).
//!
//! Invariants: a packet is delivered only if its link is up both when it is sent and when it arrives, and
//! only to the incarnation of the node that is up at arrival; all randomness comes from the run's seed.

use concord::driver::Transport;
use concord_core::raft::Membership;
use concord_core::{NodeId, PeerMessage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Index of a server in the simulation (0-based) ↔ its `NodeId`.
pub fn node_id(index: usize) -> NodeId {
    NodeId(index as u128 + 1)
}

pub fn index_of(id: NodeId) -> Option<usize> {
    usize::try_from(id.0).ok()?.checked_sub(1)
}

/// Background network conditions (the nemesis adds cuts and spikes on top).
#[derive(Clone, Debug, PartialEq)]
pub struct LinkFaults {
    pub loss: f64,
    pub duplicate: f64,
    /// One-way delay range in microseconds; a wide range reorders.
    pub delay_us: (u64, u64),
    /// Probability that one packet is held back much longer (200 ms – 3 s), so it arrives after newer
    /// traffic, possibly from an older term.
    pub straggle: f64,
}

impl Default for LinkFaults {
    fn default() -> Self {
        LinkFaults {
            loss: 0.0,
            duplicate: 0.0,
            delay_us: (100, 1_000),
            straggle: 0.0,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub inbox_full: u64,
    /// Packets reported back to their sender as never delivered.
    pub bounced: u64,
}

struct Packet {
    at: Instant,
    seq: u64,
    from: usize,
    to: usize,
    msg: PeerMessage,
}

struct State {
    rng: SmallRng,
    faults: LinkFaults,
    /// Directed cuts, keyed by the nemesis action that made them (several may overlap).
    cuts: BTreeMap<u64, BTreeSet<(usize, usize)>>,
    /// Extra delay on every packet to or from a node, until a time.
    spikes: BTreeMap<usize, (Instant, Duration)>,
    inboxes: Vec<Option<mpsc::Sender<(NodeId, PeerMessage)>>>,
    /// Per sender: where to report packets that provably never left (the destination was down, or the link
    /// cut, when it was sent — a refused or timed-out connection in real life).
    bounced: Vec<Option<mpsc::UnboundedSender<(NodeId, PeerMessage)>>>,
    seq: u64,
    stats: NetStats,
}

impl State {
    fn cut(&self, from: usize, to: usize) -> bool {
        self.cuts.values().any(|c| c.contains(&(from, to)))
    }

    fn spike(&self, node: usize, now: Instant) -> Duration {
        match self.spikes.get(&node) {
            Some(&(until, extra)) if now < until => extra,
            _ => Duration::ZERO,
        }
    }
}

/// Shared handle to the network (cheap to clone).
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<State>>,
    router: mpsc::UnboundedSender<Packet>,
}

impl Net {
    /// Creates the network for `nodes` servers; the returned future is the router (spawn it on a node that
    /// never crashes).
    pub fn new(seed: u64, nodes: usize, faults: LinkFaults) -> (Net, impl std::future::Future<Output = ()> + Send) {
        let state = Arc::new(Mutex::new(State {
            rng: SmallRng::seed_from_u64(seed),
            faults,
            cuts: BTreeMap::new(),
            spikes: BTreeMap::new(),
            inboxes: vec![None; nodes],
            bounced: vec![None; nodes],
            seq: 0,
            stats: NetStats::default(),
        }));
        let (router, rx) = mpsc::unbounded_channel();
        let net = Net {
            state: state.clone(),
            router,
        };
        (net, route(state, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("single-threaded simulation")
    }

    /// Where packets for server `index` go from now on (`None`: the node is down and they are lost).
    pub fn set_inbox(&self, index: usize, inbox: Option<mpsc::Sender<(NodeId, PeerMessage)>>) {
        self.lock().inboxes[index] = inbox;
    }

    /// Where server `index` learns of its packets that were never delivered (`None` while it is down).
    pub fn set_bounced(&self, index: usize, bounced: Option<mpsc::UnboundedSender<(NodeId, PeerMessage)>>) {
        self.lock().bounced[index] = bounced;
    }

    pub fn set_faults(&self, faults: LinkFaults) {
        self.lock().faults = faults;
    }

    /// Cut every directed link in `links` until `heal(token)`.
    pub fn cut(&self, token: u64, links: BTreeSet<(usize, usize)>) {
        self.lock().cuts.insert(token, links);
    }

    pub fn heal(&self, token: u64) {
        self.lock().cuts.remove(&token);
    }

    pub fn spike(&self, node: usize, until: Instant, extra: Duration) {
        self.lock().spikes.insert(node, (until, extra));
    }

    /// Every cut and spike gone, background faults off.
    pub fn heal_all(&self) {
        let mut s = self.lock();
        s.cuts.clear();
        s.spikes.clear();
        s.faults = LinkFaults::default();
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats.clone()
    }

    fn send(&self, from: usize, to: usize, msg: PeerMessage) {
        let now = Instant::now();
        let mut s = self.lock();
        s.stats.sent += 1;
        if from == to {
            s.stats.dropped += 1;
            return;
        }
        if s.cut(from, to) || s.inboxes[to].is_none() {
            s.stats.dropped += 1;
            s.stats.bounced += 1;
            if let Some(bounced) = &s.bounced[from] {
                let _ = bounced.send((node_id(to), msg));
            }
            return;
        }
        let loss = s.faults.loss;
        if loss > 0.0 && s.rng.gen_bool(loss) {
            s.stats.dropped += 1;
            return;
        }
        let dup = s.faults.duplicate;
        let copies = if dup > 0.0 && s.rng.gen_bool(dup) { 2 } else { 1 };
        let extra = s.spike(from, now).max(s.spike(to, now));
        for _ in 0..copies {
            let (lo, hi) = s.faults.delay_us;
            let mut delay = Duration::from_micros(s.rng.gen_range(lo..=hi.max(lo))) + extra;
            let straggle = s.faults.straggle;
            if straggle > 0.0 && s.rng.gen_bool(straggle) {
                delay += Duration::from_millis(s.rng.gen_range(200..3_000));
            }
            s.seq += 1;
            let packet = Packet {
                at: now + delay,
                seq: s.seq,
                from,
                to,
                msg: msg.clone(),
            };
            let _ = self.router.send(packet);
        }
    }
}

struct Queued(Packet);

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.0.at, self.0.seq) == (other.0.at, other.0.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.0.at, self.0.seq).cmp(&(other.0.at, other.0.seq))
    }
}

async fn route(state: Arc<Mutex<State>>, mut rx: mpsc::UnboundedReceiver<Packet>) {
    let mut queue: BinaryHeap<Reverse<Queued>> = BinaryHeap::new();
    loop {
        let next = queue.peek().map(|Reverse(q)| q.0.at);
        tokio::select! {
            biased;
            p = rx.recv() => match p {
                Some(p) => queue.push(Reverse(Queued(p))),
                None => return,
            },
            _ = sleep_until(next) => {
                let now = Instant::now();
                let mut s = state.lock().expect("single-threaded simulation");
                while queue.peek().is_some_and(|Reverse(q)| q.0.at <= now) {
                    let Reverse(Queued(p)) = queue.pop().expect("peeked");
                    deliver(&mut s, p);
                }
            }
        }
    }
}

fn deliver(s: &mut State, p: Packet) {
    if s.cut(p.from, p.to) {
        s.stats.dropped += 1;
        return;
    }
    let Some(inbox) = &s.inboxes[p.to] else {
        s.stats.dropped += 1;
        return;
    };
    match inbox.try_send((node_id(p.from), p.msg)) {
        Ok(()) => s.stats.delivered += 1,
        Err(_) => s.stats.inbox_full += 1,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => madsim::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The driver's transport for one server.
pub struct SimTransport {
    pub me: usize,
    pub net: Net,
    pub bounced: mpsc::UnboundedReceiver<(NodeId, PeerMessage)>,
}

impl Transport for SimTransport {
    fn send(&mut self, to: NodeId, msg: PeerMessage) {
        if let Some(to) = index_of(to) {
            self.net.send(self.me, to, msg);
        }
    }

    fn set_membership(&mut self, _membership: &Membership) {}

    async fn undelivered(&mut self) -> (NodeId, PeerMessage) {
        match self.bounced.recv().await {
            Some(bounced) => bounced,
            None => std::future::pending().await,
        }
    }
}
