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
    Forward {
        id: u64,
        req: Request,
    },
    ForwardReply {
        id: u64,
        resp: Response,
    },
    /// A follower asks the leader for a read index (`lease`: a default-mode read, which the leader may
    /// answer from its lease; otherwise a quorum round first).
    ReadIndex {
        id: u64,
        lease: bool,
    },
    /// The index the follower must apply up to before serving; None if the leader cannot confirm.
    ReadIndexReply {
        id: u64,
        index: Option<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; due timers fire. Spurious ticks are harmless.
    Tick,
    Peer {
        from: NodeId,
        msg: PeerMessage,
    },
    Client {
        req_id: ReqId,
        req: Request,
    },
    /// Every `Effect::Persist` with `seq <= up_to` is durable.
    Persisted {
        up_to: u64,
    },
    /// Storage failed; the node stops taking part (the runtime should exit or restart it).
    PersistFailed,
    /// The transport could not reach `peer`.
    /// The transport could not deliver `msg` to `to` and knows it was never handed to the peer (no
    /// connection). Forwarded requests and read-index requests are re-routed; anything else is ignored
    /// (Raft retries on its own).
    Undelivered {
        to: NodeId,
        msg: PeerMessage,
    },
    /// The client behind `req_id` went away (e.g. an HTTP blocking query's connection closed).
    Cancel {
        req_id: ReqId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: NodeId,
        msg: PeerMessage,
    },
    /// Make `ops` durable in order, then report `Input::Persisted { up_to: seq }` (batching is allowed:
    /// reporting a larger `up_to` covers every earlier seq).
    Persist {
        seq: u64,
        ops: Vec<PersistOp>,
    },
    Reply {
        req_id: ReqId,
        resp: Response,
    },
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
    /// A coordinate flush found more updates than `batch_size × max_batches` and discarded `count` of them
    /// (Consul logs "Discarded N coordinate updates").
    CoordinateUpdatesDiscarded { count: usize },
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
    /// Take a snapshot when, at a periodic check, at least this many entries were applied since the last
    /// one (Consul's `raft_snapshot_threshold`).
    pub snapshot_threshold: u64,
    /// How often that check runs: every `snapshot_interval` plus a random part of up to as much again, so
    /// servers do not all snapshot at once (Consul's `raft_snapshot_interval`, hashicorp/raft's
    /// `SnapshotInterval`). Zero checks after every step.
    pub snapshot_interval: Duration,
    /// The log is held in memory (Consul keeps it on disk): once the entries after the last snapshot
    /// reach about this many bytes, a snapshot is taken without waiting for the next check.
    pub snapshot_log_bytes: usize,
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
            snapshot_interval: Duration::from_secs(30),
            snapshot_log_bytes: 64 * 1024 * 1024,
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
    /// Consul's `consul.coordinate.update_period`: how long the leader collects coordinate updates (the latest
    /// per node) before writing them to the log.
    pub coordinate_update_period: Duration,
    /// `consul.coordinate.update_batch_size`: most coordinate updates in one log entry.
    pub coordinate_update_batch_size: usize,
    /// `consul.coordinate.update_max_batches`: most entries one flush writes; updates beyond
    /// `batch_size × max_batches` in one period are discarded (the agents send again next interval).
    pub coordinate_update_max_batches: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pending: 65_536,
            max_watches: 65_536,
            request_timeout: Duration::from_secs(7),
            default_query_time: Duration::from_secs(300),
            max_query_time: Duration::from_secs(600),
            coordinate_update_period: Duration::from_secs(5),
            coordinate_update_batch_size: 128,
            coordinate_update_max_batches: 5,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    pub id: NodeId,
    pub name: String,
    /// This server's RPC address as others dial it (`-advertise` or `-bind`, with `-server-port`).
    pub address: String,
    /// Seeds the node's RNG (election jitter, wait jitter, request-id nonce). Must differ on every start
    /// of the node: the runtime takes it from the OS; the simulator derives it from the run's seed and the
    /// incarnation.
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
    /// KV tombstones not yet reaped (the leader reaps them a TTL after the delete).
    pub kv_tombstones: usize,
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

mod apply;
mod client;
mod coordinate;
#[cfg(test)]
mod tests;

use crate::raft::Raft;
use crate::state::{StateMachine, Watches};
use client::{Origin, Pending, Timer};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;

/// A concord server: Raft, the replicated state machine, reads and watches, with no I/O.
///
/// Driving contract: call [`Node::handle`] with each input and the current time (never going backwards);
/// carry out the effects it appends in order; call `handle(now, Input::Tick, ..)` at or after
/// [`Node::next_deadline`]. Spurious ticks are harmless. `Effect::Persist` must be durable before the
/// runtime reports `Input::Persisted`; messages that depend on it (vote grants, append acknowledgements)
/// are released only then. Restart is `Node::new(config, recovered, now)` with what the disk held.
pub struct Node {
    config: NodeConfig,
    raft: Raft,
    sm: StateMachine,
    applied: u64,
    applied_term: u64,
    digest: u64,
    applied_membership: Membership,
    rng: SmallRng,
    watches: Watches,
    pending: Pending,
    coordinates: coordinate::CoordinateBatch,
    deadlines: BTreeSet<(Instant, Timer)>,
    now: Instant,
    seen_leader: (u64, Option<NodeId>),
    seen_membership: Membership,
    removed: bool,
    /// The periodic snapshot check is due (see `RaftConfig::snapshot_interval`).
    snapshot_check_due: bool,
}

impl Node {
    pub fn new(config: NodeConfig, recovered: Recovered, now: Instant) -> Self {
        let (sm, applied, applied_term, digest, applied_membership) = match &recovered.snapshot {
            Some(s) => {
                let sm = StateMachine::restore(&s.data)
                    .unwrap_or_else(|e| panic!("snapshot at index {} passed its checksum but {e}", s.meta.index));
                (sm, s.meta.index, s.meta.term, s.meta.digest, s.meta.membership.clone())
            }
            None => (StateMachine::default(), 0, 0, 0, Membership::default()),
        };
        let raft = Raft::new(
            config.id,
            config.raft.clone(),
            config.mutation,
            recovered,
            now,
            config.seed,
        );
        let seen_membership = raft.membership.clone();
        let mut rng = SmallRng::seed_from_u64(config.seed ^ 0x9e37_79b9_7f4a_7c15);
        let mut pending = Pending::default();
        // Request ids start at a random per-incarnation nonce: a peer must never mistake this incarnation's
        // requests for duplicates of the previous one's, nor match its late replies to ours.
        pending.start_ids(u64::from(rng.gen::<u32>()) << 32);
        let mut node = Node {
            rng,
            config,
            raft,
            sm,
            applied,
            applied_term,
            digest,
            applied_membership,
            watches: Watches::default(),
            pending,
            coordinates: Default::default(),
            deadlines: BTreeSet::new(),
            now,
            seen_leader: (0, None),
            seen_membership,
            removed: false,
            snapshot_check_due: false,
        };
        node.schedule_snapshot_check(now);
        node
    }

    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        self.handle_batch(now, std::iter::once(input), out);
    }

    /// Handle several inputs that arrived together, as one step: the effects are those of handling them
    /// one by one, except that replication and persistence are batched — one append per follower and one
    /// persist for the whole batch. Runtimes that drain their queues should prefer this.
    pub fn handle_batch(&mut self, now: Instant, inputs: impl IntoIterator<Item = Input>, out: &mut Vec<Effect>) {
        let now = now.max(self.now);
        self.now = now;
        for input in inputs {
            self.handle_one(now, input, out);
        }
        self.after_step(now, out);
    }

    fn handle_one(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Tick => {
                self.raft.tick(now);
                self.fire_timers(now, out);
            }
            Input::Peer { from, msg } => self.handle_peer(now, from, msg, out),
            Input::Client { req_id, req } => self.request(now, Origin::Local(req_id), req, out),
            Input::Persisted { up_to } => self.raft.persisted(now, up_to),
            Input::PersistFailed => self.storage_failed(out),
            Input::Undelivered { msg, .. } => self.undelivered(now, msg),
            Input::Cancel { req_id } => self.cancel(req_id),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        crate::time::earliest(self.raft.next_deadline(), self.deadlines.first().map(|(t, _)| *t))
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn status(&self, now: Instant) -> NodeStatus {
        let r = &self.raft;
        NodeStatus {
            id: self.config.id,
            role: r.role,
            term: r.term,
            leader: r.leader,
            commit_index: r.commit,
            applied_index: self.applied,
            last_log_index: r.log.last_index(),
            last_log_term: r.log.last_term(),
            last_snapshot_index: r.log.snapshot_index(),
            num_peers: r.membership.servers.len().saturating_sub(1),
            last_contact_ms: self.last_contact_ms(now),
            kv_tombstones: self.sm.kv.tombstone_count(),
        }
    }

    /// The configuration in force (addresses of every server).
    pub fn membership(&self) -> &Membership {
        &self.raft.membership
    }

    /// The replicated state as applied on this node (for tests, checkers and stale diagnostics).
    pub fn state(&self) -> &StateMachine {
        &self.sm
    }

    fn last_contact_ms(&self, now: Instant) -> Option<u64> {
        if self.raft.role == Role::Leader {
            return Some(0);
        }
        self.raft
            .last_leader_contact
            .map(|t| now.saturating_since(t).as_millis() as u64)
    }

    fn handle_peer(&mut self, now: Instant, from: NodeId, msg: PeerMessage, out: &mut Vec<Effect>) {
        match msg {
            PeerMessage::Raft(m) => self.raft.step(now, from, m),
            PeerMessage::Forward { id, req } => self.remote_request(now, from, id, req, out),
            PeerMessage::ForwardReply { id, resp } => self.forward_reply(from, id, resp, out),
            PeerMessage::ReadIndex { id, lease } => self.remote_read_index(now, from, id, lease, out),
            PeerMessage::ReadIndexReply { id, index } => self.read_index_reply(now, from, id, index, out),
        }
    }

    /// Everything that follows any input: apply what committed, release reads, take snapshots, report
    /// leader and membership changes, and emit the step's persist batch and messages.
    fn after_step(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let applied_before = self.applied;
        if let Some(snapshot) = self.raft.out.installed_snapshot.take() {
            self.restore_snapshot(now, snapshot, out);
        }
        self.apply_committed(now, out);
        for (id, index) in std::mem::take(&mut self.raft.out.reads) {
            self.read_confirmed(now, id, index, out);
        }
        self.release_apply_waiters(now, out);
        self.maybe_snapshot();
        self.report_changes(now, out);
        if let Some((seq, ops)) = self.raft.flush(now) {
            out.push(Effect::Persist { seq, ops });
        }
        for (to, msg) in self.raft.out.msgs.drain(..) {
            out.push(Effect::Send {
                to,
                msg: PeerMessage::Raft(msg),
            });
        }
        if self.applied > applied_before {
            out.push(Effect::Event(Event::Applied {
                index: self.applied,
                term: self.applied_term,
                digest: self.digest,
            }));
        }
    }

    fn report_changes(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let leader = (self.raft.term, self.raft.leader);
        if leader != self.seen_leader {
            let had_leader = self.seen_leader.1;
            self.seen_leader = leader;
            out.push(Effect::Event(Event::LeaderChanged {
                term: leader.0,
                leader: leader.1,
            }));
            if leader.1.is_some() && had_leader != leader.1 {
                self.leader_known(now, out);
            }
        }
        if self.raft.membership != self.seen_membership {
            self.seen_membership = self.raft.membership.clone();
            out.push(Effect::Event(Event::MembershipChanged(self.seen_membership.clone())));
        }
    }

    fn storage_failed(&mut self, out: &mut Vec<Effect>) {
        self.raft.fail();
        self.fail_all_pending(crate::api::ApiError::StorageFailed, out);
    }
}
