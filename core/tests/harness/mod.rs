//! A pure, deterministic multi-node harness over `Node::handle`: a priority queue of timed events, a seeded
//! network that drops, delays, reorders, duplicates and partitions, and disks that keep writes pending
//! until their sync completes and lose them on a crash. No madsim, no threads: the fast path for property
//! tests. Virtual time jumps straight to the next event; a step budget catches livelock.
#![allow(dead_code)]

use concord_core::api::{Request, Response};
use concord_core::raft::{Entry, HardState, PersistOp, Recovered, Snapshot};
use concord_core::{
    Effect, Event, Input, Instant, Limits, Mutation, Node, NodeConfig, NodeId, PeerMessage, RaftConfig,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// What a disk holds durably, and what is written but not yet synced.
#[derive(Default, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    pub log: BTreeMap<u64, Entry>,
}

impl Disk {
    pub fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::HardState(hs) => self.hard_state = *hs,
            PersistOp::Append(entries) => {
                if let Some(first) = entries.first() {
                    self.log.split_off(&first.index);
                }
                for e in entries {
                    self.log.insert(e.index, e.clone());
                }
            }
            PersistOp::Truncate { from } => {
                self.log.split_off(from);
            }
            PersistOp::Snapshot { snapshot, keep_log } => {
                if *keep_log {
                    self.log = self.log.split_off(&(snapshot.meta.index + 1));
                } else {
                    self.log.clear();
                }
                self.snapshot = Some(snapshot.clone());
            }
            PersistOp::Compact { up_to } => {
                self.log = self.log.split_off(&(up_to + 1));
            }
        }
    }

    pub fn recover(&self) -> Recovered {
        let snap_index = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let mut entries = Vec::new();
        for (i, e) in self.log.range(snap_index + 1..) {
            if *i != snap_index + 1 + entries.len() as u64 {
                break;
            }
            entries.push(e.clone());
        }
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries,
        }
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        to: NodeId,
        from: NodeId,
        msg: PeerMessage,
    },
    Synced {
        node: NodeId,
        epoch: u64,
        seq: u64,
    },
    Tick {
        node: NodeId,
        epoch: u64,
    },
    /// `msg` from `to` to `from` could not be delivered (told back to its sender `to`).
    Undelivered {
        to: NodeId,
        from: NodeId,
        msg: PeerMessage,
    },
}

pub struct SimNode {
    pub node: Option<Node>,
    pub config: NodeConfig,
    pub disk: Disk,
    /// Written, not yet synced: (seq, ops).
    pub pending: Vec<(u64, Vec<PersistOp>)>,
    pub epoch: u64,
    /// Every entry this process has appended (written, synced or not), by index: where the history
    /// recorder finds the entries the node applies.
    pub shadow: BTreeMap<u64, Entry>,
    /// The highest index this process has reported applied.
    pub applied: u64,
    /// The earliest tick scheduled for this process: a later deadline needs no second tick chain (each
    /// input would otherwise start one, and a long run would drown in ticks).
    pub tick_at: Option<Instant>,
}

/// Network faults, all from the seed.
#[derive(Clone, Debug)]
pub struct Faults {
    pub loss: f64,
    pub duplicate: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub disk_latency: Duration,
    /// Probability that a message takes `slow_delay` more (a TCP stream stuck behind retransmissions):
    /// such messages arrive long after their sender gave up on them.
    pub slow: f64,
    pub slow_delay: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis(2),
            disk_latency: Duration::from_micros(500),
            slow: 0.0,
            slow_delay: Duration::ZERO,
        }
    }
}

pub struct Cluster {
    pub now: Instant,
    pub rng: SmallRng,
    pub nodes: BTreeMap<NodeId, SimNode>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    events: BTreeMap<usize, Ev>,
    next_ev: usize,
    pub faults: Faults,
    /// Directed links that drop everything: (from, to).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub replies: BTreeMap<u64, Response>,
    next_req: u64,
    /// term -> leader claimed by a node about itself.
    pub leaders: BTreeMap<u64, NodeId>,
    /// index -> (term, digest) as first applied anywhere.
    pub applied: BTreeMap<u64, (u64, u64)>,
    /// The committed history: index -> (entry, when it was first applied anywhere). Complete up to the
    /// highest applied index: some process applies every entry from its log (snapshots come from there).
    pub history: BTreeMap<u64, (Entry, Instant)>,
    pub steps: u64,
}

/// The shadow log follows appends and truncations only: compaction does not forget what was applied.
fn shadow_apply(shadow: &mut BTreeMap<u64, Entry>, op: &PersistOp) {
    match op {
        PersistOp::Append(entries) => {
            if let Some(first) = entries.first() {
                shadow.split_off(&first.index);
            }
            for e in entries {
                shadow.insert(e.index, e.clone());
            }
        }
        PersistOp::Truncate { from } => {
            shadow.split_off(from);
        }
        // A snapshot that replaces the log: what this process held up to it is not the history.
        PersistOp::Snapshot {
            snapshot,
            keep_log: false,
        } => {
            *shadow = shadow.split_off(&(snapshot.meta.index + 1));
        }
        PersistOp::HardState(_) | PersistOp::Snapshot { .. } | PersistOp::Compact { .. } => {}
    }
}

pub fn node_id(i: u32) -> NodeId {
    NodeId(0x1000 + u128::from(i))
}

pub fn test_raft_config() -> RaftConfig {
    RaftConfig {
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: Duration::from_millis(150),
        lease_timeout: Duration::from_millis(75),
        max_append_entries: 8,
        max_append_bytes: 4096,
        max_inflight: 4,
        snapshot_threshold: 40,
        snapshot_interval: Duration::ZERO,
        snapshot_log_bytes: usize::MAX,
        trailing_logs: 5,
        snapshot_chunk_bytes: 64,
    }
}

impl Cluster {
    pub fn new(seed: u64, n: u32, faults: Faults, mutation: Mutation) -> Self {
        Self::with_raft(seed, n, faults, mutation, test_raft_config())
    }

    pub fn with_raft(seed: u64, n: u32, faults: Faults, mutation: Mutation, raft: RaftConfig) -> Self {
        let mut c = Cluster {
            now: Instant(1_000_000),
            rng: SmallRng::seed_from_u64(seed),
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_ev: 0,
            faults,
            cut: BTreeSet::new(),
            replies: BTreeMap::new(),
            next_req: 0,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
            history: BTreeMap::new(),
            steps: 0,
        };
        for i in 1..=n {
            let id = node_id(i);
            let config = NodeConfig {
                id,
                name: format!("s{i}"),
                address: format!("10.0.0.{i}:8300"),
                seed: seed.wrapping_mul(31).wrapping_add(u64::from(i)),
                raft: raft.clone(),
                limits: Limits {
                    request_timeout: Duration::from_secs(2),
                    ..Limits::default()
                },
                mutation,
            };
            let node = Node::new(config.clone(), Recovered::default(), c.now);
            c.nodes.insert(
                id,
                SimNode {
                    node: Some(node),
                    config,
                    disk: Disk::default(),
                    pending: Vec::new(),
                    epoch: 0,
                    shadow: BTreeMap::new(),
                    applied: 0,
                    tick_at: Some(c.now),
                },
            );
            c.schedule(c.now, Ev::Tick { node: id, epoch: 0 });
        }
        c
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        let k = self.next_ev;
        self.next_ev += 1;
        self.events.insert(k, ev);
        self.queue.push(Reverse((at, k as u64, k)));
    }

    /// Bootstrap every node with the full membership.
    pub fn bootstrap(&mut self) {
        let servers: Vec<(NodeId, String, String)> = self
            .nodes
            .values()
            .map(|n| (n.config.id, n.config.name.clone(), n.config.address.clone()))
            .collect();
        for id in self.ids() {
            self.request(
                id,
                Request::Bootstrap {
                    servers: servers.clone(),
                },
            );
        }
    }

    /// Submit a client request to `to`; returns its request id (the reply lands in `replies`).
    pub fn request(&mut self, to: NodeId, req: Request) -> u64 {
        self.next_req += 1;
        let req_id = self.next_req;
        self.input(to, Input::Client { req_id, req });
        req_id
    }

    pub fn input(&mut self, id: NodeId, input: Input) {
        let now = self.now;
        let mut out = Vec::new();
        let Some(n) = self.nodes.get_mut(&id) else { return };
        let Some(node) = n.node.as_mut() else { return };
        node.handle(now, input, &mut out);
        let next = node.next_deadline();
        let epoch = n.epoch;
        if let Some(at) = next.map(|at| at.max(now)) {
            if n.tick_at.is_none_or(|t| at < t) {
                n.tick_at = Some(at);
                self.schedule(at, Ev::Tick { node: id, epoch });
            }
        }
        self.effects(id, out);
    }

    fn effects(&mut self, id: NodeId, out: Vec<Effect>) {
        for effect in out {
            match effect {
                Effect::Send { to, msg } => self.send(id, to, msg),
                Effect::Persist { seq, ops } => {
                    let n = self.nodes.get_mut(&id).expect("exists");
                    let epoch = n.epoch;
                    for op in &ops {
                        shadow_apply(&mut n.shadow, op);
                    }
                    n.pending.push((seq, ops));
                    let at = self.now + self.faults.disk_latency;
                    self.schedule(at, Ev::Synced { node: id, epoch, seq });
                }
                Effect::Reply { req_id, resp } => {
                    self.replies.insert(req_id, resp);
                }
                Effect::Event(Event::LeaderChanged { term, leader: Some(l) }) if l == id => {
                    if let Some(prev) = self.leaders.insert(term, id) {
                        assert_eq!(prev, id, "two leaders in term {term}: {prev:?} and {id:?}");
                    }
                }
                Effect::Event(Event::Applied { index, term, digest }) => {
                    let now = self.now;
                    let n = self.nodes.get_mut(&id).expect("exists");
                    for i in n.applied + 1..=index {
                        if let Some(e) = n.shadow.get(&i) {
                            self.history.entry(i).or_insert_with(|| (e.clone(), now));
                        }
                    }
                    n.applied = index;
                    let seen = *self.applied.entry(index).or_insert((term, digest));
                    assert_eq!(
                        seen,
                        (term, digest),
                        "node {id:?} applied a different history at index {index}"
                    );
                }
                Effect::Event(_) => {}
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: PeerMessage) {
        if self.nodes.get(&to).is_some_and(|n| n.node.is_none()) {
            // A crashed process refuses connections: the sender learns the message was never delivered.
            let at = self.now + self.faults.min_delay;
            self.schedule(
                at,
                Ev::Undelivered {
                    to: from,
                    from: to,
                    msg,
                },
            );
            return;
        }
        if self.cut.contains(&(from, to)) || self.rng.gen_bool(self.faults.loss) {
            return;
        }
        let copies = if self.rng.gen_bool(self.faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let span = (self.faults.max_delay.as_micros() - self.faults.min_delay.as_micros()).max(1) as u64;
            let mut delay = self.faults.min_delay + Duration::from_micros(self.rng.gen_range(0..span));
            if self.faults.slow > 0.0 && self.rng.gen_bool(self.faults.slow) {
                delay += self.faults.slow_delay;
            }
            self.schedule(
                self.now + delay,
                Ev::Deliver {
                    to,
                    from,
                    msg: msg.clone(),
                },
            );
        }
    }

    /// Process events until `until`.
    pub fn run_until(&mut self, until: Instant) {
        while let Some(Reverse((at, _, k))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.steps += 1;
            assert!(self.steps < 50_000_000, "step budget exhausted: livelock?");
            self.now = self.now.max(at);
            match self.events.remove(&k).expect("scheduled") {
                Ev::Deliver { to, from, msg } => {
                    if !self.cut.contains(&(from, to)) {
                        self.input(to, Input::Peer { from, msg });
                    }
                }
                Ev::Synced { node, epoch, seq } => {
                    let n = self.nodes.get_mut(&node).expect("exists");
                    if n.epoch != epoch || n.node.is_none() {
                        continue;
                    }
                    let (done, rest): (Vec<_>, Vec<_>) = n.pending.drain(..).partition(|(s, _)| *s <= seq);
                    n.pending = rest;
                    for (_, ops) in &done {
                        for op in ops {
                            n.disk.apply(op);
                        }
                    }
                    self.input(node, Input::Persisted { up_to: seq });
                }
                Ev::Undelivered { to, from, msg } => self.input(to, Input::Undelivered { to: from, msg }),
                Ev::Tick { node, epoch } => {
                    let n = self.nodes.get_mut(&node).expect("exists");
                    if n.tick_at == Some(at) {
                        n.tick_at = None;
                    }
                    if n.epoch == epoch {
                        self.input(node, Input::Tick);
                    }
                }
            }
        }
        self.now = self.now.max(until);
    }

    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Run until `req_id` has a reply or `limit` passes.
    pub fn wait_reply(&mut self, req_id: u64, limit: Duration) -> Option<Response> {
        let deadline = self.now + limit;
        while self.now < deadline {
            if let Some(r) = self.replies.remove(&req_id) {
                return Some(r);
            }
            self.run_for(Duration::from_millis(5));
        }
        self.replies.remove(&req_id)
    }

    pub fn crash(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("exists");
        n.node = None;
        n.pending.clear();
        n.epoch += 1;
        n.tick_at = None;
    }

    pub fn restart(&mut self, id: NodeId) {
        let now = self.now;
        let n = self.nodes.get_mut(&id).expect("exists");
        assert!(n.node.is_none(), "restart of a running node");
        // A new process draws a new seed (the runtime's is random per start): request-id nonces come
        // from it, and a leader must not take the new incarnation's forwards for duplicates.
        n.config.seed = n.config.seed.wrapping_mul(6364136223846793005).wrapping_add(n.epoch);
        n.node = Some(Node::new(n.config.clone(), n.disk.recover(), now));
        n.shadow = n.disk.log.clone();
        n.applied = n.disk.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let epoch = n.epoch;
        n.tick_at = Some(now);
        self.schedule(now, Ev::Tick { node: id, epoch });
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn leader(&self) -> Option<NodeId> {
        let live: Vec<_> = self.nodes.values().filter_map(|n| n.node.as_ref()).collect();
        let mut best: Option<(u64, NodeId)> = None;
        for node in live {
            let s = node.status(self.now);
            if s.role == concord_core::node::Role::Leader && best.is_none_or(|(t, _)| s.term > t) {
                best = Some((s.term, s.id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Poll until a leader exists.
    pub fn wait_leader(&mut self, limit: Duration) -> Option<NodeId> {
        let deadline = self.now + limit;
        while self.now < deadline {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            self.run_for(Duration::from_millis(10));
        }
        self.leader()
    }
}
