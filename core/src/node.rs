//! `Node`: one concord server's whole deterministic brain. It routes inputs to Raft and the state machine,
//! serves reads (lease, ReadIndex, stale), parks blocking queries on watches, forwards what a follower
//! cannot serve to the leader, and collects the effects the runtime must carry out.

use crate::api::{Request, Response};
use crate::id::NodeId;
use crate::raft::{self, Membership, PersistOp, Recovered};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A request ID chosen by the runtime; replies carry it back.
pub type ReqId = u64;

/// Everything servers send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    Raft(raft::Message),
    /// A follower forwards a client request it cannot serve to the leader.
    Forward { id: u64, req: Request },
    ForwardReply { id: u64, resp: Response },
    /// A follower asks the leader for a read index (`lease`: a default-mode read, which the leader may
    /// answer from its lease; otherwise a quorum round first).
    ReadIndex { id: u64, lease: bool },
    /// The index the follower must apply up to before serving; None if the leader cannot confirm.
    ReadIndexReply { id: u64, index: Option<u64> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; due timers fire. Spurious ticks are harmless.
    Tick,
    Peer { from: NodeId, msg: PeerMessage },
    Client { req_id: ReqId, req: Request },
    /// Every `Effect::Persist` with `seq <= up_to` is durable.
    Persisted { up_to: u64 },
    /// Storage failed; the node stops taking part (the runtime should exit or restart it).
    PersistFailed,
    /// The transport could not reach `peer`.
    Unreachable { peer: NodeId },
    /// The client behind `req_id` went away (e.g. an HTTP blocking query's connection closed).
    Cancel { req_id: ReqId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send { to: NodeId, msg: PeerMessage },
    /// Make `ops` durable in order, then report `Input::Persisted { up_to: seq }` (batching is allowed:
    /// reporting a larger `up_to` covers every earlier seq).
    Persist { seq: u64, ops: Vec<PersistOp> },
    Reply { req_id: ReqId, resp: Response },
    Event(Event),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// This node's view of the leader changed.
    LeaderChanged { term: u64, leader: Option<NodeId> },
    /// The configuration in force changed (the runtime updates its address book).
    MembershipChanged(Membership),
    /// Entries up to `index` (of term `term`) are applied. `digest` is a rolling hash of every entry applied
    /// so far (carried across snapshots), so checkers can prove all nodes apply the same sequence.
    Applied { index: u64, term: u64, digest: u64 },
    /// This node was removed from the configuration.
    Removed,
}

/// Timing and limits of the Raft layer. Defaults match Consul with `raft_multiplier = 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// How often a leader sends heartbeats (and batches ReadIndex rounds).
    pub heartbeat_interval: Duration,
    /// Followers start a (pre-)election after a random timeout in `[election_timeout, 2×election_timeout)`.
    pub election_timeout: Duration,
    /// A leader serves default-mode reads alone while a quorum answered a round sent within this long.
    /// Must be well below `election_timeout` (followers refuse votes for that long after hearing a leader).
    pub lease_timeout: Duration,
    /// Most entries in one Append.
    pub max_append_entries: usize,
    /// Most payload bytes in one Append (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// Appends in flight to one follower before waiting for acknowledgements (pipelining depth).
    pub max_inflight: usize,
    /// Take a snapshot once this many entries were applied since the last one.
    pub snapshot_threshold: u64,
    /// Entries kept after a snapshot so slightly lagging followers catch up from the log.
    pub trailing_logs: u64,
    /// InstallSnapshot chunk size.
    pub snapshot_chunk_bytes: usize,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            lease_timeout: Duration::from_millis(500),
            max_append_entries: 256,
            max_append_bytes: 2 * 1024 * 1024,
            max_inflight: 16,
            snapshot_threshold: 16384,
            trailing_logs: 10240,
            snapshot_chunk_bytes: 512 * 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Client requests waiting for commit, a read index or a forwarded reply.
    pub max_pending: usize,
    /// Parked blocking queries.
    pub max_watches: usize,
    /// How long a write or forwarded request may wait before it is answered `Timeout`.
    pub request_timeout: Duration,
    /// `?wait` default and cap (Consul: 5 min, 10 min).
    pub default_query_time: Duration,
    pub max_query_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 65_536,
            max_watches: 65_536,
            request_timeout: Duration::from_secs(7),
            default_query_time: Duration::from_secs(300),
            max_query_time: Duration::from_secs(600),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub name: String,
    /// This server's RPC address as others dial it (`-advertise` or `-bind`, with `-server-port`).
    pub address: String,
    /// Seeds the node's RNG (election jitter, wait jitter). The runtime takes it from the OS; the
    /// simulator from the run's seed.
    pub seed: u64,
    pub raft: RaftConfig,
    pub limits: Limits,
    /// A deliberate bug, for the simulator's mutation test only (always `Mutation::None` in production; the
    /// buggy code paths are compiled only with the `mutants` feature).
    pub mutation: Mutation,
}

/// Deliberately wrong variants of the core, used to prove the simulator's checkers catch real bugs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    #[default]
    None,
    /// The leader commits once it alone has an entry (ignores the quorum).
    CommitOnMinority,
    /// A voter grants its vote to every candidate of a term.
    DoubleVote,
    /// Vote grants and append acknowledgements leave before the write they depend on is durable.
    AckBeforePersist,
}

/// A snapshot of Raft's state for `/v1/agent/self`, `concord info` and the simulator's checkers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub last_log_term: u64,
    pub last_snapshot_index: u64,
    pub num_peers: usize,
    /// Milliseconds since the leader was last heard from (0 on the leader, None if never).
    pub last_contact_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    /// Not part of any configuration yet (waiting for bootstrap or to be added).
    Idle,
    /// Storage failed; the node no longer takes part.
    Failed,
}

/// A concord server: Raft, the replicated state machine, reads and watches, with no I/O.
///
/// Driving contract: call [`Node::handle`] with each input and the current time (never going backwards);
/// carry out the effects it appends in order; call `handle(now, Input::Tick, ..)` at or after
/// [`Node::next_deadline`]. Spurious ticks are harmless. `Effect::Persist` must be durable before the
/// runtime reports `Input::Persisted`; messages that depend on it (vote grants, append acknowledgements)
/// are released only then. Restart is `Node::new(config, recovered, now)` with what the disk held.
pub struct Node {
    config: NodeConfig,
}

impl Node {
    pub fn new(config: NodeConfig, _recovered: Recovered, _now: Instant) -> Self {
        Node { config }
    }

    pub fn handle(&mut self, _now: Instant, _input: Input, _out: &mut Vec<Effect>) {
        unimplemented!("Node lands with the Raft module")
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        unimplemented!("Node lands with the Raft module")
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn status(&self, _now: Instant) -> NodeStatus {
        unimplemented!("Node lands with the Raft module")
    }

    /// The configuration in force (addresses of every server).
    pub fn membership(&self) -> &Membership {
        unimplemented!("Node lands with the Raft module")
    }
}
