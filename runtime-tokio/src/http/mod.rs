//! Consul's HTTP API (`/v1/...`): axum routes behind concord's own HTTP/1.1 connection loop
//! ([`server`]), in front of a [`Backend`] (the node driver in
//! production, an in-memory fake in tests).
//!
//! Invariants:
//! - Every response carries `X-Consul-Default-ACL-Policy: allow`; reads carry the `X-Consul-*` meta headers
//!   and `X-Consul-Index` is never 0.
//! - A request body is read with a limit and never buffered beyond it (plus at most one transport frame):
//!   `kv_max_value_size` for KV values, `max(txn_max_req_len, kv_max_value_size)` for `/v1/txn`,
//!   `http_max_body_size` for catalog and agent JSON, 512 bytes for a user event's payload.
//! - Dropping a request (client gone, shutdown) drops the [`Backend::call`] future; that is how a parked
//!   blocking query is released in the core.
//! - Concurrent connections per client IP are capped at `http_max_conns_per_client`; the connection beyond
//!   the cap gets a 429 and is closed.
//! - A path with `.`/`..` segments or repeated slashes is answered 301 with the cleaned path (Go's
//!   `ServeMux`, as in Consul); no handler ever sees one.

mod agent;
mod agent_local;
pub(crate) mod catalog;
mod catalog_json;
#[cfg(test)]
mod catalog_tests;
mod clean_path;
mod conn_limit;
mod coordinate;
pub(crate) mod decode;
pub(crate) mod deferred;
mod event;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fake;
mod fan_out;
mod filter;
mod kv;
mod members;
mod params;
pub(crate) mod reply;
pub(crate) mod server;
mod shared_body;
#[cfg(test)]
pub(crate) mod tests;
mod txn;
#[cfg(test)]
mod txn_tests;

use axum::http::HeaderValue;
use axum::routing::{any, get, post, put};
use axum::Router;
use concord_core::api::{Request, Response};
use concord_core::gossip::Member;
use concord_core::node::NodeStatus;
pub use members::{KeyringOp, KeyringPool};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The Consul version whose HTTP API concord matches. Client libraries gate features on
/// `Config.Version` of `/v1/agent/self`, so this is what we report there.
pub const CONSUL_COMPAT_VERSION: &str = "1.21.0";

/// What the HTTP front end needs from the agent. Cloned per request; must be cheap to clone.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Serve one typed request. Dropping the future cancels the request (a closed blocking-query
    /// connection, or shutdown), so the implementation must release whatever it parked on drop.
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send;
    /// A snapshot of the agent's identity, configuration and Raft status for `/v1/agent/self`.
    fn agent_self(&self) -> impl Future<Output = AgentSelf> + Send;
    /// Start a graceful leave (`PUT /v1/agent/leave`): a server removes itself from the Raft
    /// configuration, then the agent shuts down. Returns once the leave is complete (or failed).
    fn leave(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// The gossip pool's members (`GET /v1/agent/members`, `wan` for the WAN pool), sorted by name.
    fn members(&self, _wan: bool) -> impl Future<Output = Result<Vec<Member>, String>> + Send {
        async { Err("gossip is not running on this agent".to_string()) }
    }
    /// Join the pool through `addr` (`PUT /v1/agent/join/:addr`).
    fn join(&self, _addr: String, _wan: bool) -> impl Future<Output = Result<(), String>> + Send {
        async { Err("gossip is not running on this agent".to_string()) }
    }
    /// `PUT /v1/agent/force-leave/:node`.
    fn force_leave(&self, _node: String, _prune: bool, _wan: bool) -> impl Future<Output = Result<(), String>> + Send {
        async { Err("gossip is not running on this agent".to_string()) }
    }
    /// `/v1/operator/keyring`.
    fn keyring(&self, _op: KeyringOp) -> impl Future<Output = Result<Vec<KeyringPool>, String>> + Send {
        async { Err("gossip encryption is not configured".to_string()) }
    }
    /// The servers' WAN coordinates as this server knows them (`/v1/coordinate/datacenters`):
    /// (datacenter, `<node>.<dc>`, coordinate). Empty on client agents.
    fn wan_coordinates(
        &self,
    ) -> impl Future<Output = Vec<(String, String, concord_core::coordinate::Coordinate)>> + Send {
        async { Vec::new() }
    }

    /// This agent's user events (`/v1/event/*`); `None` where gossip does not run.
    fn user_events(&self) -> Option<&crate::agent::events::UserEvents> {
        None
    }
    /// The agent's local services and checks (`/v1/agent/service*`, `/v1/agent/check*`).
    fn local(&self) -> &crate::local::LocalAgentHandle;
}

/// The ports of an agent, as `/v1/agent/self` reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentPorts {
    /// HTTP API port (`-http-port`, 8500).
    pub http: u16,
    /// DNS port (`-dns-port`, 8600); -1 when DNS is disabled.
    pub dns: i32,
    /// Server RPC (Raft) port (`-server-port`, 8300).
    pub server: u16,
    /// LAN gossip port (`-serf-lan-port`, 8301).
    pub serf_lan: u16,
    /// WAN gossip port (`-serf-wan-port`, 8302).
    pub serf_wan: u16,
}

impl Default for AgentPorts {
    fn default() -> Self {
        AgentPorts {
            http: 8500,
            dns: 8600,
            server: 8300,
            serf_lan: 8301,
            serf_wan: 8302,
        }
    }
}

/// Everything `/v1/agent/self` (and through it `concord info`) shows about the local agent.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSelf {
    /// The agent's datacenter (`Config.Datacenter`, `Member.Tags.dc`).
    pub datacenter: String,
    /// The node name (`-node`; `Config.NodeName`, `Member.Name`).
    pub node_name: String,
    /// The node's 36-character UUID (`Config.NodeID`).
    pub node_id: String,
    /// Server mode (`-server`); client agents have no Raft section.
    pub server: bool,
    /// `-bootstrap` was given (`Stats.consul.bootstrap`).
    pub bootstrap: bool,
    /// `-bootstrap-expect`, 0 when unset (`Member.Tags.expect`).
    pub bootstrap_expect: usize,
    /// The cluster bind address (`-bind`, after resolving `0.0.0.0`).
    pub bind_addr: IpAddr,
    /// The address advertised to other agents (`-advertise`, or the bind address); `Member.Addr`.
    pub advertise_addr: IpAddr,
    /// HTTP/DNS bind addresses (`-client`).
    pub client_addrs: Vec<IpAddr>,
    /// Listening ports.
    pub ports: AgentPorts,
    /// The DNS domain (`-domain`, `consul.`).
    pub domain: String,
    /// The Consul API version reported as `Config.Version` (normally [`CONSUL_COMPAT_VERSION`]).
    pub version: String,
    /// concord's own version (e.g. `0.1.0`), reported in `Meta` and `Stats.build`.
    pub concord_version: String,
    /// The build's source revision (`Config.Revision`), empty when unknown.
    pub revision: String,
    /// Raft status on servers; `None` on client agents (or before the node started).
    pub raft: Option<NodeStatus>,
    /// RPC address (`ip:port`) of the current leader, if known (`Stats.consul.leader_addr`).
    pub leader_addr: Option<String>,
    /// Number of datacenters this agent knows (`Stats.consul.known_datacenters`).
    pub known_datacenters: usize,
    /// Servers a client agent knows (`Stats.consul.known_servers`); ignored on servers.
    pub known_servers: usize,
    /// Services registered on this agent (`Stats.agent.services`).
    pub services: usize,
    /// Checks registered on this agent (`Stats.agent.checks`).
    pub checks: usize,
    /// More `Stats` sections from other subsystems (e.g. `serf_lan`), merged over the generated ones.
    pub extra_stats: BTreeMap<String, BTreeMap<String, String>>,
}

/// Settings of the HTTP front end, taken from the agent configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// The local datacenter; a request with another `?dc=` gets 500 "No path to datacenter".
    pub datacenter: String,
    /// Largest KV value a PUT may carry (`limits.kv_max_value_size`); larger bodies get 413.
    pub kv_max_value_size: usize,
    /// Largest `/v1/txn` body (`limits.txn_max_req_len`); the cap is the larger of this and
    /// `kv_max_value_size`, as in Consul.
    pub txn_max_req_len: usize,
    /// Largest JSON body of the catalog and agent endpoints (`limits.http_max_body_size`, concord's own
    /// option: Consul reads these bodies without a cap). Larger bodies get 413.
    pub http_max_body_size: usize,
    /// `?wait` when a blocking query gives `index` without `wait` (`default_query_time`, 300 s).
    pub default_query_time: Duration,
    /// Cap on `?wait` (`max_query_time`, 600 s). The core adds the jitter.
    pub max_query_time: Duration,
    /// Most concurrent connections from one client IP (`limits.http_max_conns_per_client`); 0 = no limit.
    pub http_max_conns_per_client: usize,
    /// How long a client may take to send a request head (`http_config.read_header_timeout`): from the
    /// connection's accept for its first request, from the first byte for later ones. A request body may
    /// not stall longer than this either. The connection is closed without an answer.
    pub read_header_timeout: Duration,
    /// How long writing one answer may take (`http_config.write_timeout`): a client that does not read its
    /// answer is disconnected. Unlike Go's `WriteTimeout` it does not count the handler's time, so a
    /// blocking query may wait its full `wait`.
    pub write_timeout: Duration,
    /// Largest request head, request line and headers together (`http_config.max_header_bytes`; Go's and
    /// so Consul's default 1 MiB): 431 above it, or 414 when the request line alone does not fit.
    pub max_header_bytes: usize,
}

impl Default for HttpSettings {
    /// Consul's defaults.
    fn default() -> Self {
        HttpSettings {
            datacenter: "dc1".to_string(),
            kv_max_value_size: 512 * 1024,
            txn_max_req_len: 512 * 1024,
            http_max_body_size: 1024 * 1024,
            default_query_time: Duration::from_secs(300),
            max_query_time: Duration::from_secs(600),
            http_max_conns_per_client: 200,
            read_header_timeout: DEFAULT_READ_HEADER_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Default `http_config.max_header_bytes` (Go's `DefaultMaxHeaderBytes`, which Consul keeps).
pub const DEFAULT_MAX_HEADER_BYTES: usize = server::MAX_HEAD;

/// Default `http_config.read_header_timeout`.
pub const DEFAULT_READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `http_config.write_timeout`.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares. Axum clones the state for every request, so it is one `Arc` (one atomic
/// increment) rather than the backend's many channel handles, each with its own reference count.
pub(crate) struct AppState<B>(Arc<Shared<B>>);

impl<B> AppState<B> {
    pub(crate) fn new(backend: B, settings: HttpSettings, shutdown: watch::Receiver<bool>) -> Self {
        Self(Arc::new(Shared {
            backend,
            settings: Arc::new(settings),
            shutdown,
            bodies: Default::default(),
        }))
    }
}

impl<B> Clone for AppState<B> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<B> std::ops::Deref for AppState<B> {
    type Target = Shared<B>;
    fn deref(&self) -> &Shared<B> {
        &self.0
    }
}

/// The fields behind [`AppState`].
pub(crate) struct Shared<B> {
    pub(crate) backend: B,
    pub(crate) settings: Arc<HttpSettings>,
    /// Becomes `true` when shutdown starts; in-flight backend calls stop waiting then.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Encoded bodies of read results shared by many woken blocking queries.
    pub(crate) bodies: shared_body::SharedBodies,
}

impl<B: Backend> AppState<B> {
    /// Call the backend unless shutdown starts first (then `None`; the call future is dropped).
    ///
    /// Not an `async fn`: that would keep `req` in its future for as long as the call is parked (async fn
    /// arguments live for the whole future). The backend's future is made here, and holds what it needs.
    pub(crate) fn call(&self, req: Request) -> impl Future<Output = Option<Response>> + Send + '_ {
        let call = self.backend.call(req);
        let mut shutdown = self.shutdown.clone();
        async move {
            tokio::select! {
                resp = call => Some(resp),
                _ = shutdown.wait_for(|stopping| *stopping) => None,
            }
        }
    }
}

/// Serve the HTTP API on every listener until `shutdown` completes, then stop accepting, end in-flight
/// blocking queries (they answer 503 "Agent is shutting down") and wait for open connections to finish
/// their current response (at most [`SHUTDOWN_GRACE`]). Returns after shutdown, also with no listeners.
pub async fn serve<B: Backend>(
    listeners: Vec<tokio::net::TcpListener>,
    backend: B,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if listeners.is_empty() {
        shutdown.await;
        return Ok(());
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_client = conn_limit::PerClientLimit::new(settings.http_max_conns_per_client);
    let limits = server::ConnLimits {
        read_header_timeout: settings.read_header_timeout,
        write_timeout: settings.write_timeout,
        max_header_bytes: settings.max_header_bytes,
    };
    let state = AppState::new(backend, settings, stop_rx.clone());
    let app = router(state);
    let fan_out = fan_out::FanOut::start().map(Arc::new);
    // Every connection task holds a sender; all have ended when the receiver sees the channel closed.
    let (live_tx, mut live_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        servers.spawn(server::accept_loop(
            listener,
            per_client.clone(),
            app.clone(),
            fan_out.clone(),
            limits,
            stop_rx.clone(),
            live_tx.clone(),
        ));
    }
    drop(live_tx);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // A client stalled half-way through a request would hold graceful shutdown open forever; after a
    // grace period the servers are dropped and their remaining connections die with the runtime.
    let mut stopping = stop_rx;
    let grace = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::pin!(grace);
    let mut result = Ok(());
    loop {
        tokio::select! {
            joined = servers.join_next() => match joined {
                None => break,
                Some(Ok(())) => {}
                Some(Err(e)) => result = Err(std::io::Error::other(e)),
            },
            _ = &mut grace => break,
        }
    }
    // The listeners are closed; wait for open connections to finish their current answer.
    tokio::select! {
        _ = live_rx.recv() => {}
        _ = &mut grace => {
            tracing::warn!("HTTP connections still open {SHUTDOWN_GRACE:?} after shutdown; dropping them");
        }
    }
    signal.abort();
    result
}

/// How long shutdown waits for open connections to finish their current response.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub(crate) fn router<B: Backend>(state: AppState<B>) -> Router {
    Router::new()
        .route("/v1/kv/", any(kv::kv_root::<B>))
        .route("/v1/kv/{*key}", any(kv::kv_key::<B>))
        // issue 8 (limits helper): transactions and user events.
        .route("/v1/txn", put(txn::txn::<B>))
        .route("/v1/event/fire/", put(event::fire_root))
        .route("/v1/event/fire/{*name}", put(event::fire::<B>))
        .route("/v1/event/list", get(event::list::<B>))
        .route("/v1/status/leader", get(agent::status_leader::<B>))
        .route("/v1/status/peers", get(agent::status_peers::<B>))
        .route("/v1/operator/raft/configuration", get(agent::raft_configuration::<B>))
        .route(
            "/v1/operator/raft/peer",
            axum::routing::delete(agent::raft_remove_peer::<B>),
        )
        .route(
            "/v1/operator/raft/transfer-leader",
            post(agent::raft_transfer_leader::<B>).put(agent::raft_transfer_leader::<B>),
        )
        .route("/v1/catalog/register", any(catalog::register::<B>))
        .route("/v1/catalog/deregister", any(catalog::deregister::<B>))
        .route("/v1/catalog/datacenters", get(catalog::datacenters::<B>))
        .route("/v1/catalog/nodes", get(catalog::nodes::<B>))
        .route("/v1/catalog/services", get(catalog::services::<B>))
        .route("/v1/catalog/service/{name}", get(catalog::service::<B>))
        .route("/v1/catalog/node/{node}", get(catalog::node::<B>))
        .route("/v1/catalog/node-services/{node}", get(catalog::node_services::<B>))
        .route("/v1/coordinate/datacenters", get(coordinate::datacenters::<B>))
        .route("/v1/coordinate/nodes", get(coordinate::nodes::<B>))
        .route("/v1/coordinate/node/{node}", get(coordinate::node::<B>))
        .route("/v1/coordinate/update", any(coordinate::update::<B>))
        .route("/v1/health/node/{node}", get(catalog::health_node::<B>))
        .route("/v1/health/checks/{service}", get(catalog::health_checks::<B>))
        .route("/v1/health/service/{service}", get(catalog::health_service::<B>))
        .route("/v1/health/state/{state}", get(catalog::health_state::<B>))
        .route("/v1/agent/services", get(agent_local::services::<B>))
        .route("/v1/agent/service/register", put(agent_local::service_register::<B>))
        .route(
            "/v1/agent/service/deregister/{id}",
            put(agent_local::service_deregister::<B>),
        )
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(agent_local::service_maintenance::<B>),
        )
        .route("/v1/agent/service/{id}", get(agent_local::service::<B>))
        .route("/v1/agent/checks", get(agent_local::checks::<B>))
        .route("/v1/agent/check/register", put(agent_local::check_register::<B>))
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent_local::check_deregister::<B>),
        )
        .route("/v1/agent/check/pass/{id}", put(agent_local::check_pass::<B>))
        .route("/v1/agent/check/warn/{id}", put(agent_local::check_warn::<B>))
        .route("/v1/agent/check/fail/{id}", put(agent_local::check_fail::<B>))
        .route("/v1/agent/check/update/{id}", put(agent_local::check_update::<B>))
        .route("/v1/agent/health/service/id/{id}", get(agent_local::health_by_id::<B>))
        .route(
            "/v1/agent/health/service/name/{name}",
            get(agent_local::health_by_name::<B>),
        )
        .route("/v1/agent/maintenance", put(agent_local::node_maintenance::<B>))
        .route("/v1/agent/self", get(agent::agent_self::<B>))
        .route("/v1/agent/leave", axum::routing::put(agent::agent_leave::<B>))
        .route("/v1/agent/members", get(members::agent_members::<B>))
        .route("/v1/agent/join/{addr}", axum::routing::put(members::agent_join::<B>))
        .route(
            "/v1/agent/force-leave/{node}",
            axum::routing::put(members::agent_force_leave::<B>),
        )
        .route("/v1/operator/keyring", any(members::operator_keyring::<B>))
        // Consul registers every endpoint wrapped in gziphandler, which adds `Vary: Accept-Encoding`
        // to each of its responses, compressed or not; the mux's own answers (unknown paths, redirects)
        // go out without it. concord does not compress, but caches see the same header.
        .route_layer(axum::middleware::map_response(add_vary))
        .fallback(reply::not_found)
        .layer(axum::middleware::from_fn(clean_path::redirect_unclean))
        .layer(axum::middleware::map_response(add_common_headers))
        .with_state(state)
}

async fn add_vary(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut()
        .append(axum::http::header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

async fn add_common_headers(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut()
        .insert("X-Consul-Default-ACL-Policy", HeaderValue::from_static("allow"));
    resp
}
