//! The data Raft persists and sends: log entries, hard state, membership, snapshots, peer messages and the
//! storage operations the runtime must make durable. Every type here is postcard-encoded on the wire or on
//! disk, so none of them is recursive (postcard recursion is a stack-overflow vector on untrusted input).

use crate::id::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type Term = u64;
pub type Index = u64;

/// One server in the Raft configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Node name (`-node`), shown by `operator raft list-peers`.
    pub name: String,
    /// RPC address other servers dial, `ip:port` (Consul's `-server-port`, 8300).
    pub address: String,
    /// Voters count for elections and commit; non-voters (learners) only replicate.
    pub voter: bool,
}

/// The cluster configuration. Changes go through the log one server at a time and take effect as soon as
/// they are appended (Raft dissertation §4.1), so two configurations never need a joint quorum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub servers: BTreeMap<NodeId, ServerInfo>,
}

impl Membership {
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.servers.iter().filter(|(_, s)| s.voter).map(|(id, _)| *id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.servers.get(&id).is_some_and(|s| s.voter)
    }

    pub fn quorum(&self) -> usize {
        self.voters().count() / 2 + 1
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// Appended by every new leader so it can commit entries of earlier terms (Raft §5.4.2).
    Noop,
    /// A postcard-encoded `state::Command`, encoded once at proposal and shared by every copy.
    Command(Bytes),
    /// A new configuration, in force from the moment it is appended.
    Config(Membership),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: Payload,
}

/// What must survive a crash besides the log: the current term and the vote cast in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last log index the snapshot covers.
    pub index: Index,
    pub term: Term,
    /// The configuration in force at `index`.
    pub membership: Membership,
    /// Rolling digest of every entry applied up to `index` (see `Event::Applied`).
    pub digest: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    /// The state machine, encoded by `state::StateMachine::snapshot`.
    pub data: Bytes,
}

/// A storage operation. The runtime applies them in order; `Input::Persisted { up_to }` reports that every
/// `Effect::Persist` with `seq <= up_to` is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PersistOp {
    HardState(HardState),
    /// Delete every stored entry with index >= `entries[0].index`, then store `entries` (contiguous).
    Append(Vec<Entry>),
    /// Delete every stored entry with index >= `from` (a conflicting suffix).
    Truncate {
        from: Index,
    },
    /// Store this snapshot (replacing any older one) and delete every entry with index <= `meta.index`
    /// that does not match it. When `keep_log` is false every stored entry is deleted (a follower that
    /// installed a snapshot from the leader); otherwise entries after `meta.index` stay.
    Snapshot {
        snapshot: Snapshot,
        keep_log: bool,
    },
    /// Delete entries with index <= `up_to`; a snapshot at or past `up_to` is already durable.
    Compact {
        up_to: Index,
    },
}

/// What the runtime read back from disk at start, handed to `Node::new`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous, in index order.
    pub entries: Vec<Entry>,
}

/// Raft's peer-to-peer messages. `round` numbers the leader's heartbeat rounds: a response echoes it, and
/// a quorum of responses to round r proves leadership as of the moment round r was sent (ReadIndex, lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PreVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        term: Term,
        granted: bool,
    },
    /// `transfer` is set when the leader asked for this election (TimeoutNow): voters then ignore their
    /// leader stickiness.
    Vote {
        term: Term,
        last_index: Index,
        last_term: Term,
        transfer: bool,
    },
    VoteResponse {
        term: Term,
        granted: bool,
    },
    Append {
        term: Term,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        round: u64,
    },
    /// On success `index` is the follower's last matching (and durable) index; on failure it is a hint:
    /// the follower's last index, so the leader can jump back rather than probe one entry at a time.
    AppendResponse {
        term: Term,
        success: bool,
        index: Index,
        round: u64,
    },
    InstallSnapshot {
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        round: u64,
    },
    /// `offset` is how many bytes of the snapshot the follower holds; `done` once installed and durable.
    InstallSnapshotResponse {
        term: Term,
        offset: u64,
        done: bool,
        index: Index,
        round: u64,
    },
    /// Leadership transfer: the target starts an election at once.
    TimeoutNow {
        term: Term,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::Vote { term, .. }
            | Message::VoteResponse { term, .. }
            | Message::Append { term, .. }
            | Message::AppendResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term } => *term,
        }
    }
}
