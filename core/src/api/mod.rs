//! Typed client requests and responses: what the HTTP API, the CLI (through HTTP), the RPC forwarding path
//! and the simulator's clients ask a node, and what it answers. HTTP-level encoding (JSON casing, headers)
//! lives in the runtime; parsing of Consul's query-parameter formats that must be identical everywhere
//! (Go durations) lives here so it is fuzzed once.

mod duration;
mod limits;

pub use duration::{format_go_duration, parse_go_duration, BadDuration};
pub use limits::{validate_meta, META_KEY_MAX_LEN, META_MAX_PAIRS, META_RESERVED_PREFIX, META_VALUE_MAX_LEN};

use crate::id::NodeId;
use crate::raft::Index;
pub use crate::state::{CatalogQuery, CatalogResult};
use crate::state::{Command, CommandResult, CoordinateUpdate, KvEntry};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Consul's three consistency modes (`?consistent`, `?stale`, neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadMode {
    /// The leader answers under its lease (`X-Consul-Effective-Consistency: leader`).
    #[default]
    Default,
    /// The leader confirms with a quorum first (ReadIndex). Linearizable.
    Consistent,
    /// Any server answers from its own state.
    Stale,
}

impl ReadMode {
    /// The value of `X-Consul-Effective-Consistency`.
    pub fn header_value(self) -> &'static str {
        match self {
            ReadMode::Default => "leader",
            ReadMode::Consistent => "consistent",
            ReadMode::Stale => "stale",
        }
    }
}

/// `?index=&wait=`: answer once the read's index passes `min_index`, or after `wait` (plus jitter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocking {
    pub min_index: u64,
    pub wait: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvQuery {
    /// `GET /v1/kv/<key>`
    Get { key: String },
    /// `GET /v1/kv/<prefix>?recurse`
    Recurse { prefix: String },
    /// `GET /v1/kv/<prefix>?keys[&separator=]`
    Keys { prefix: String, separator: Option<String> },
}

/// Any read of the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    Kv(KvQuery),
    Catalog(CatalogQuery),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    KvRead {
        query: KvQuery,
        mode: ReadMode,
        block: Option<Blocking>,
    },
    /// A catalog or health read (answered `Response::Catalog`); KV reads may come this way too.
    Read {
        query: Query,
        mode: ReadMode,
        block: Option<Blocking>,
    },
    /// A write through Raft; answered after commit and apply.
    Write(Command),
    /// `GET /v1/status/leader`
    Leader,
    /// `GET /v1/status/peers`
    Peers,
    /// `GET /v1/operator/raft/configuration`
    RaftConfiguration { mode: ReadMode },
    /// `DELETE /v1/operator/raft/peer?id=|address=`
    RemovePeer {
        id: Option<NodeId>,
        address: Option<String>,
    },
    /// A server asks to join the cluster (`-join`/`-retry-join`); it is added as a non-voter, then
    /// promoted once caught up.
    AddServer { id: NodeId, name: String, address: String },
    /// `operator raft transfer-leader [-id]`
    TransferLeader { to: Option<NodeId> },
    /// Start a brand-new cluster with exactly these servers (`-bootstrap`, or `-bootstrap-expect` once that
    /// many servers know each other). Ignored if this node already has any Raft state.
    Bootstrap { servers: Vec<(NodeId, String, String)> },
    /// Consul's `Coordinate.Update` (`PUT /v1/coordinate/update`, and every agent's periodic update): the
    /// leader keeps the latest update per node and writes them in batches every
    /// `coordinate_update_period`. Answered `Done` once queued (not yet written), as in Consul.
    CoordinateUpdate(CoordinateUpdate),
}

/// Read metadata for the `X-Consul-*` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMeta {
    /// `X-Consul-Index`; never 0.
    pub index: u64,
    pub known_leader: bool,
    /// Milliseconds since this server last heard from the leader (0 on the leader).
    pub last_contact_ms: u64,
    pub consistency: ReadMode,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResult {
    Entries(Vec<KvEntry>),
    Keys(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftServer {
    pub id: NodeId,
    pub node: String,
    pub address: String,
    pub leader: bool,
    pub voter: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// `result` is shared as a catalog read's is (below).
    Kv {
        meta: QueryMeta,
        #[serde(with = "shared")]
        result: Arc<KvResult>,
    },
    /// `result` is shared: blocking queries of the same range woken by the same change get one read (the
    /// same allocation), so the HTTP layer can encode it once for all of them.
    Catalog {
        meta: QueryMeta,
        #[serde(with = "shared")]
        result: Arc<CatalogResult>,
    },
    Written {
        index: Index,
        result: CommandResult,
    },
    /// `ip:port` of the leader's RPC address, or None.
    Leader(Option<String>),
    Peers(Vec<String>),
    RaftConfiguration {
        meta: QueryMeta,
        servers: Vec<RaftServer>,
        index: Index,
    },
    Done,
    Error(ApiError),
}

impl Response {
    /// A KV read's metadata and entries (`None` for any other answer, a keys listing included).
    pub fn kv_entries(&self) -> Option<(&QueryMeta, &[KvEntry])> {
        match self {
            Response::Kv { meta, result } => match &**result {
                KvResult::Entries(entries) => Some((meta, entries)),
                KvResult::Keys(_) => None,
            },
            _ => None,
        }
    }
}

/// A request that could not be served. The HTTP layer maps each to a status code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// 500 "No cluster leader", as Consul answers.
    #[error("No cluster leader")]
    NoLeader,
    /// The leader changed or the request timed out before the outcome was known: the write may or may not
    /// have been applied.
    #[error("request timed out; the outcome is unknown")]
    Timeout,
    /// A bad argument: 400.
    #[error("{0}")]
    BadRequest(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// Too many requests in flight on this node: 429.
    #[error("rate limit exceeded: {0}")]
    Overloaded(String),
    /// The node's storage failed; it is shutting down.
    #[error("storage failure; this server is stopping")]
    StorageFailed,
}

/// Serde for an `Arc<T>` field as the plain `T` (the wire format does not change; a decoded value gets its own
/// allocation), without serde's `rc` feature.
mod shared {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub(super) fn serialize<T: Serialize, S: Serializer>(value: &Arc<T>, ser: S) -> Result<S::Ok, S::Error> {
        T::serialize(value, ser)
    }

    pub(super) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(de: D) -> Result<Arc<T>, D::Error> {
        T::deserialize(de).map(Arc::new)
    }
}
