//! The whole-cluster fuzz target: input bytes are a schedule of faults and client requests over three
//! in-process [`Node`]s, driven through `Node::handle` with no threads and no clock.
//!
//! Each byte is one [`Op`]: the low nibble picks the operation, the high nibble is its argument. The
//! network is a list of in-flight messages that the schedule delivers, drops and duplicates in any order;
//! each disk holds durable state plus written-but-unsynced persist batches, applied per the `PersistOp`
//! docs when the schedule syncs it and lost when it crashes the node. Time moves only when the schedule
//! says so, and then every node whose deadline passed gets its (late) tick.
//!
//! Checked after every step: at most one node claims leadership of a term, every node reports the same
//! `(term, digest)` for an applied index, a node's applied index only grows while it runs, and the disk
//! never gets a hole in its log. Everything is deterministic: the same bytes replay the same run.

use crate::api::{KvQuery, ReadMode, Request};
use crate::raft::{Entry, HardState, PersistOp, Recovered, Snapshot};
use crate::state::Command;
use crate::{Effect, Event, Input, Instant, Limits, Mutation, Node, NodeConfig, NodeId, PeerMessage, RaftConfig};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

const NODES: usize = 3;
/// Messages in flight; sends beyond it are lost (a network with bounded buffers).
const MAX_IN_FLIGHT: usize = 512;
/// Time one `Settle` round advances.
const SETTLE_STEP: Duration = Duration::from_millis(10);

/// One step of a schedule. `node` arguments are taken modulo 3; `at` indexes the in-flight messages
/// modulo their count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Deliver the in-flight message at `at`.
    Deliver { at: u8 },
    /// Deliver every message in flight now, oldest first (what they cause stays in flight).
    DeliverAll,
    /// Lose the in-flight message at `at`.
    Drop { at: u8 },
    /// Send the in-flight message at `at` a second time.
    Duplicate { at: u8 },
    /// The node's disk makes every written batch durable; the node hears `Persisted`.
    Sync { node: u8 },
    /// The node's disk makes only its oldest written batch durable.
    SyncOldest { node: u8 },
    /// The node stops; unsynced writes are lost.
    Crash { node: u8 },
    /// A crashed node starts again from what its disk holds.
    Restart { node: u8 },
    /// Time passes by `(steps + 1) × 10 ms`; nodes whose deadline passed tick.
    Advance { steps: u8 },
    /// A client write to `node`; `kind` (0..=5) picks set k0/k1/k2, create-only k0, delete k1, delete-tree k.
    Write { node: u8, kind: u8 },
    /// A client read of k0 on `node`; `mode` (0..=2) picks default, consistent, stale.
    Read { node: u8, mode: u8 },
    /// `rounds + 1` rounds of: sync every disk, deliver everything in flight, advance 10 ms.
    Settle { rounds: u8 },
    /// A membership request to `node`; `kind` (0..=5): transfer leadership (anywhere, to the next node),
    /// remove the node after next, add it back, add the next node, remove the next node.
    Membership { node: u8, kind: u8 },
    /// A spurious tick on `node`.
    Tick { node: u8 },
    /// Deliver the oldest message addressed to `node`.
    DeliverTo { node: u8 },
    /// The node's storage fails (`Input::PersistFailed`): its unsynced writes are lost and it stops taking
    /// part until it is crashed and restarted.
    StorageFails { node: u8 },
}

impl Op {
    pub fn decode(byte: u8) -> Op {
        let arg = byte >> 4;
        let (node, sub) = (arg % 3, arg / 3);
        match byte & 0x0f {
            0 => Op::Deliver { at: arg },
            1 => Op::DeliverAll,
            2 => Op::Drop { at: arg },
            3 => Op::Duplicate { at: arg },
            4 => Op::Sync { node },
            5 => Op::SyncOldest { node },
            6 => Op::Crash { node },
            7 => Op::Restart { node },
            8 => Op::Advance { steps: arg },
            9 => Op::Write { node, kind: sub },
            10 => Op::Read { node, mode: sub % 3 },
            11 => Op::Settle { rounds: arg },
            12 => Op::Membership { node, kind: sub },
            13 => Op::Tick { node },
            14 => Op::DeliverTo { node },
            _ => Op::StorageFails { node },
        }
    }

    /// The byte [`Op::decode`] reads back as this op (arguments out of range wrap).
    pub fn encode(self) -> u8 {
        let with = |code: u8, arg: u8| code | ((arg & 0x0f) << 4);
        let node_sub = |node: u8, sub: u8| (node % 3) + 3 * (sub % 6);
        match self {
            Op::Deliver { at } => with(0, at),
            Op::DeliverAll => 1,
            Op::Drop { at } => with(2, at),
            Op::Duplicate { at } => with(3, at),
            Op::Sync { node } => with(4, node % 3),
            Op::SyncOldest { node } => with(5, node % 3),
            Op::Crash { node } => with(6, node % 3),
            Op::Restart { node } => with(7, node % 3),
            Op::Advance { steps } => with(8, steps),
            Op::Write { node, kind } => with(9, node_sub(node, kind)),
            Op::Read { node, mode } => with(10, node_sub(node, mode % 3)),
            Op::Settle { rounds } => with(11, rounds),
            Op::Membership { node, kind } => with(12, node_sub(node, kind)),
            Op::Tick { node } => with(13, node % 3),
            Op::DeliverTo { node } => with(14, node % 3),
            Op::StorageFails { node } => with(15, node % 3),
        }
    }
}

/// Run the schedule `data` over a freshly bootstrapped three-node cluster, checking safety after every step.
pub fn cluster_schedule(data: &[u8]) {
    let mut cluster = Cluster::new();
    for &byte in data {
        cluster.step(Op::decode(byte));
    }
}

/// Durable state of one disk.
#[derive(Default)]
struct Disk {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    log: BTreeMap<u64, Entry>,
}

impl Disk {
    fn last_index(&self) -> u64 {
        let snap = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        self.log.last_key_value().map_or(snap, |(i, _)| (*i).max(snap))
    }

    fn apply(&mut self, op: &PersistOp) {
        match op {
            PersistOp::HardState(hs) => self.hard_state = *hs,
            PersistOp::Append(entries) => {
                let Some(first) = entries.first() else { return };
                assert!(
                    first.index <= self.last_index() + 1,
                    "append at {} leaves a hole after {}",
                    first.index,
                    self.last_index()
                );
                self.log.split_off(&first.index);
                for (i, e) in entries.iter().enumerate() {
                    assert_eq!(e.index, first.index + i as u64, "append of non-contiguous entries");
                    self.log.insert(e.index, e.clone());
                }
            }
            PersistOp::Truncate { from } => {
                self.log.split_off(from);
            }
            PersistOp::Snapshot { snapshot, keep_log } => {
                // Entries at or below the snapshot are never read back (recovery starts after it).
                self.log = if *keep_log {
                    self.log.split_off(&(snapshot.meta.index + 1))
                } else {
                    BTreeMap::new()
                };
                self.snapshot = Some(snapshot.clone());
            }
            PersistOp::Compact { up_to } => {
                self.log = self.log.split_off(&(up_to + 1));
            }
        }
    }

    fn recover(&self) -> Recovered {
        let snap_index = self.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let entries: Vec<Entry> = self.log.range(snap_index + 1..).map(|(_, e)| e.clone()).collect();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snap_index + 1 + i as u64,
                "hole in the durable log after the snapshot"
            );
        }
        Recovered {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries,
        }
    }
}

struct Server {
    node: Option<Node>,
    config: NodeConfig,
    disk: Disk,
    /// Written, not yet durable: (seq, ops), oldest first.
    unsynced: Vec<(u64, Vec<PersistOp>)>,
    /// Highest index this incarnation reported applied.
    applied: u64,
}

struct Cluster {
    now: Instant,
    servers: Vec<Server>,
    /// In flight, oldest first: (from, to, message).
    net: Vec<(usize, usize, PeerMessage)>,
    next_req: u64,
    /// term → the node that claimed leadership of it.
    leaders: BTreeMap<u64, usize>,
    /// index → (term, digest) as first reported applied.
    applied: BTreeMap<u64, (u64, u64)>,
}

fn node_id(i: usize) -> NodeId {
    NodeId(0x1000 + i as u128)
}

fn raft_config() -> RaftConfig {
    // Tiny limits so schedules reach batching, pipelining, snapshots and chunked installs quickly.
    RaftConfig {
        heartbeat_interval: Duration::from_millis(20),
        election_timeout: Duration::from_millis(150),
        lease_timeout: Duration::from_millis(75),
        max_append_entries: 4,
        max_append_bytes: 512,
        max_inflight: 2,
        snapshot_threshold: 8,
        snapshot_interval: Duration::ZERO,
        snapshot_log_bytes: usize::MAX,
        trailing_logs: 2,
        snapshot_chunk_bytes: 32,
    }
}

impl Cluster {
    fn new() -> Self {
        let now = Instant(1_000_000);
        let servers = (0..NODES)
            .map(|i| {
                let config = NodeConfig {
                    id: node_id(i),
                    name: format!("s{i}"),
                    address: format!("10.0.0.{i}:8300"),
                    seed: 0x5eed + i as u64,
                    raft: raft_config(),
                    limits: Limits {
                        max_pending: 64,
                        max_watches: 16,
                        request_timeout: Duration::from_secs(2),
                        ..Limits::default()
                    },
                    mutation: Mutation::None,
                };
                Server {
                    node: Some(Node::new(config.clone(), Recovered::default(), now)),
                    config,
                    disk: Disk::default(),
                    unsynced: Vec::new(),
                    applied: 0,
                }
            })
            .collect();
        let mut c = Cluster {
            now,
            servers,
            net: Vec::new(),
            next_req: 0,
            leaders: BTreeMap::new(),
            applied: BTreeMap::new(),
        };
        let members: Vec<_> = c
            .servers
            .iter()
            .map(|s| (s.config.id, s.config.name.clone(), s.config.address.clone()))
            .collect();
        for i in 0..NODES {
            c.request(
                i,
                Request::Bootstrap {
                    servers: members.clone(),
                },
            );
        }
        c
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Deliver { at } => self.deliver_at(usize::from(at)),
            Op::DeliverAll => self.deliver_all(),
            Op::Drop { at } => {
                if !self.net.is_empty() {
                    let at = usize::from(at) % self.net.len();
                    self.net.remove(at);
                }
            }
            Op::Duplicate { at } => {
                if !self.net.is_empty() && self.net.len() < MAX_IN_FLIGHT {
                    let copy = self.net[usize::from(at) % self.net.len()].clone();
                    self.net.push(copy);
                }
            }
            Op::Sync { node } => self.sync(usize::from(node), usize::MAX),
            Op::SyncOldest { node } => self.sync(usize::from(node), 1),
            Op::Crash { node } => {
                let s = &mut self.servers[usize::from(node)];
                s.node = None;
                s.unsynced.clear();
                s.applied = 0;
            }
            Op::Restart { node } => self.restart(usize::from(node)),
            Op::Advance { steps } => self.advance(SETTLE_STEP * (u32::from(steps) + 1)),
            Op::Write { node, kind } => self.request(usize::from(node), write(kind, self.next_req)),
            Op::Read { node, mode } => self.request(usize::from(node), read(mode)),
            Op::Settle { rounds } => {
                for _ in 0..=rounds {
                    for i in 0..NODES {
                        self.sync(i, usize::MAX);
                    }
                    self.deliver_all();
                    self.advance(SETTLE_STEP);
                }
            }
            Op::Membership { node, kind } => {
                let node = usize::from(node);
                self.request(node, membership(node, kind));
            }
            Op::Tick { node } => self.input(usize::from(node), Input::Tick),
            Op::DeliverTo { node } => {
                if let Some(at) = self.net.iter().position(|(_, to, _)| *to == usize::from(node)) {
                    self.deliver_at(at);
                }
            }
            Op::StorageFails { node } => {
                let node = usize::from(node);
                self.servers[node].unsynced.clear();
                self.input(node, Input::PersistFailed);
            }
        }
    }

    fn deliver_at(&mut self, at: usize) {
        if self.net.is_empty() {
            return;
        }
        let (from, to, msg) = self.net.remove(at % self.net.len());
        self.input(
            to,
            Input::Peer {
                from: node_id(from),
                msg,
            },
        );
    }

    fn deliver_all(&mut self) {
        let now_in_flight: Vec<_> = std::mem::take(&mut self.net);
        for (from, to, msg) in now_in_flight {
            self.input(
                to,
                Input::Peer {
                    from: node_id(from),
                    msg,
                },
            );
        }
    }

    /// Make the node's oldest `batches` written batches durable and tell it.
    fn sync(&mut self, i: usize, batches: usize) {
        let s = &mut self.servers[i];
        if s.node.is_none() || s.unsynced.is_empty() {
            return;
        }
        let n = batches.min(s.unsynced.len());
        let mut up_to = 0;
        for (seq, ops) in s.unsynced.drain(..n) {
            for op in &ops {
                s.disk.apply(op);
            }
            up_to = seq;
        }
        self.input(i, Input::Persisted { up_to });
    }

    fn restart(&mut self, i: usize) {
        let s = &mut self.servers[i];
        if s.node.is_none() {
            s.node = Some(Node::new(s.config.clone(), s.disk.recover(), self.now));
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        for i in 0..NODES {
            // A tick leaves every deadline in the future; the bound only guards against a broken node.
            for _ in 0..4 {
                let due = self.servers[i]
                    .node
                    .as_ref()
                    .and_then(Node::next_deadline)
                    .is_some_and(|at| at <= self.now);
                if !due {
                    break;
                }
                self.input(i, Input::Tick);
            }
        }
    }

    fn request(&mut self, i: usize, req: Request) {
        self.next_req += 1;
        let req_id = self.next_req;
        self.input(i, Input::Client { req_id, req });
    }

    fn input(&mut self, i: usize, input: Input) {
        let Some(node) = self.servers[i].node.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        node.handle(self.now, input, &mut out);
        for effect in out {
            self.effect(i, effect);
        }
    }

    fn effect(&mut self, i: usize, effect: Effect) {
        match effect {
            Effect::Send { to, msg } => {
                let to = (0..NODES).find(|&j| node_id(j) == to);
                if let Some(to) = to.filter(|_| self.net.len() < MAX_IN_FLIGHT) {
                    self.net.push((i, to, msg));
                }
            }
            Effect::Persist { seq, ops } => self.servers[i].unsynced.push((seq, ops)),
            Effect::Reply { .. } => {}
            Effect::Event(Event::LeaderChanged { term, leader: Some(l) }) if l == node_id(i) => {
                let first = *self.leaders.entry(term).or_insert(i);
                assert_eq!(first, i, "two leaders in term {term}: s{first} and s{i}");
            }
            Effect::Event(Event::Applied { index, term, digest }) => {
                let first = *self.applied.entry(index).or_insert((term, digest));
                assert_eq!(
                    first,
                    (term, digest),
                    "s{i} applied a different history at index {index}"
                );
                let s = &mut self.servers[i];
                assert!(index > s.applied, "s{i} applied {index} after {}", s.applied);
                s.applied = index;
            }
            Effect::Event(_) => {}
        }
    }
}

fn write(kind: u8, n: u64) -> Request {
    let set = |key: &str, cas| Command::KvSet {
        key: key.into(),
        value: Bytes::from(format!("v{n}")),
        flags: 0,
        cas,
    };
    Request::Write(match kind % 6 {
        0 => set("k0", None),
        1 => set("k1", None),
        2 => set("k2", None),
        3 => set("k0", Some(0)),
        4 => Command::KvDelete {
            key: "k1".into(),
            cas: None,
        },
        _ => Command::KvDeleteTree { prefix: "k".into() },
    })
}

fn read(mode: u8) -> Request {
    let mode = match mode % 3 {
        0 => ReadMode::Default,
        1 => ReadMode::Consistent,
        _ => ReadMode::Stale,
    };
    Request::KvRead {
        query: KvQuery::Get { key: "k0".into() },
        mode,
        block: None,
    }
}

fn membership(node: usize, kind: u8) -> Request {
    let (next, after) = ((node + 1) % NODES, (node + 2) % NODES);
    let add = |j: usize| Request::AddServer {
        id: node_id(j),
        name: format!("s{j}"),
        address: format!("10.0.0.{j}:8300"),
    };
    let remove = |j: usize| Request::RemovePeer {
        id: Some(node_id(j)),
        address: None,
    };
    match kind % 6 {
        0 => Request::TransferLeader { to: None },
        1 => Request::TransferLeader {
            to: Some(node_id(next)),
        },
        2 => remove(after),
        3 => add(after),
        4 => add(next),
        _ => remove(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_encodes_to_a_byte_that_decodes_to_it() {
        for byte in 0..=u8::MAX {
            let op = Op::decode(byte);
            assert_eq!(Op::decode(op.encode()), op, "byte {byte:#04x}");
        }
    }

    #[test]
    fn a_settled_cluster_elects_a_leader_and_applies_writes() {
        let mut c = Cluster::new();
        c.step(Op::Settle { rounds: 15 });
        c.step(Op::Settle { rounds: 15 });
        assert_eq!(c.leaders.len(), 1, "one election: {:?}", c.leaders);
        let before = c.applied.keys().max().copied().unwrap_or(0);
        for node in 0..3 {
            c.step(Op::Write { node, kind: node });
        }
        c.step(Op::Settle { rounds: 15 });
        let after = c.applied.keys().max().copied().unwrap_or(0);
        assert!(after >= before + 3, "three writes applied: {before} -> {after}");
    }
}
