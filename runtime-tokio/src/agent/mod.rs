//! `concord agent`: wires the node, its storage, the RPC transport and listener, the driver and the HTTP
//! API together, forms or joins the cluster, and shuts everything down in order on a signal or a leave.
//!
//! Shutdown order: HTTP and RPC stop accepting, the driver stops (flushing what it sent to storage), the
//! storage writer drains and closes the store (releasing the data-dir lock), then `run` returns.

mod backend;
#[cfg(test)]
mod catalog_tests;
mod client;
mod clock;
mod cluster;
pub(crate) mod coordinate;
pub mod events;
mod identity;
mod logging;
mod reconcile;
pub mod serf;
#[cfg(test)]
mod tests;
pub(crate) mod tombstones;

pub use backend::AgentBackend;
pub use client::{ClientAgent, ClientBackend};
pub use clock::TokioClock;
pub use identity::single_private_ipv4;
pub use logging::utc_timestamp;

use crate::config::AgentConfig;
use crate::driver::{self, Clock, Devices, DriverExit, DriverHandle, LogStore, StorageError};
use crate::gossip::PoolHandle;
use crate::http::decode::Obj;
use crate::http::{AgentPorts, AgentSelf, HttpSettings, CONSUL_COMPAT_VERSION};
use crate::local::definition::{self, ScriptPolicy};
use crate::local::LocalAgentHandle;
use crate::rpc::{self, AddressBook, LocalServer, TcpTransport};
use crate::storage::{spawn_writer, FjallStore, MemStore};
use concord_core::agent::{LocalAgent, NodeIdentity};
use concord_core::node::{Limits, NodeConfig, RaftConfig};
use concord_core::wire::DEFAULT_MAX_FRAME;
use concord_core::{Node, NodeId};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// Why the agent could not start or had to stop. Its `Display` is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Address(String),
    #[error("{0}")]
    DataDir(String),
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr} for {what}: {err}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the server stopped: {0}")]
    Stopped(String),
    /// Another live agent has this agent's node name or node ID (Consul refuses to join then).
    #[error("Failed to join the cluster: {0}")]
    Conflict(String),
}

pub(crate) type DriverExitWatch = watch::Receiver<Option<DriverExit>>;

/// Peer messages buffered between the RPC listener and the driver.
const PEER_CHANNEL: usize = 8192;

/// Run the agent until a signal, a leave or a fatal error. Builds its own multi-thread runtime.
pub fn run(config: AgentConfig) -> Result<(), AgentError> {
    logging::init(&config.log_level)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = server_worker_threads(&config) {
        builder.worker_threads(workers);
    }
    let runtime = builder
        .enable_all()
        .thread_name("concord")
        .build()
        .map_err(AgentError::Runtime)?;
    runtime.block_on(async {
        if !config.server && !config.dev {
            let leave = config.leave_on_terminate || !config.skip_leave_on_interrupt;
            let agent = ClientAgent::start(config).await?;
            return agent.run_until(shutdown_signal(), leave).await;
        }
        let agent = Agent::start(config).await?;
        agent.run_until(shutdown_signal()).await
    })
}

/// A server's tokio worker count: one per core but one, because the storage writer thread is busy with
/// `fsync` beside them and every wake-up that crosses to another core costs an inter-processor interrupt
/// (a VM exit on a virtual machine). On a 2-core VM under 64 clients of durable PUTs, one worker instead of
/// two cut futex calls per write from 0.58 to 0.16 and context switches from 1.5 to 1.3 (BENCHMARKS.md,
/// "Session 3"). `TOKIO_WORKER_THREADS` still decides when set; client agents keep tokio's default.
fn server_worker_threads(config: &AgentConfig) -> Option<usize> {
    worker_threads(
        config.server || config.dev,
        std::env::var_os("TOKIO_WORKER_THREADS").is_some(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    )
}

/// `None`: leave it to tokio (its default, or `TOKIO_WORKER_THREADS`).
fn worker_threads(server: bool, env_override: bool, cores: usize) -> Option<usize> {
    if !server || env_override {
        return None;
    }
    Some(cores.saturating_sub(1).max(1))
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let name = tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupt",
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => "terminated",
    };
    println!("==> Caught signal: {name}");
}

/// The Raft timings for this agent: Consul's `-dev` speeds, or the defaults scaled by `raft_multiplier`.
pub fn raft_config(config: &AgentConfig) -> RaftConfig {
    let base = RaftConfig {
        snapshot_threshold: config.raft_snapshot_threshold,
        snapshot_interval: config.raft_snapshot_interval,
        trailing_logs: config.raft_trailing_logs,
        ..RaftConfig::default()
    };
    if config.dev {
        return RaftConfig {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            lease_timeout: Duration::from_millis(150),
            ..base
        };
    }
    let m = config.raft_multiplier.max(1);
    RaftConfig {
        heartbeat_interval: base.heartbeat_interval * m,
        election_timeout: base.election_timeout * m,
        lease_timeout: base.lease_timeout * m,
        ..base
    }
}

/// A started agent.
pub struct Agent {
    pub handle: DriverHandle,
    pub book: Arc<AddressBook>,
    /// The RPC listener's actual address (differs from the configured one with port 0).
    pub rpc_addr: SocketAddr,
    /// The HTTP listeners' actual addresses.
    pub http_addrs: Vec<SocketAddr>,
    /// The LAN gossip pool (every agent) and the WAN pool (servers).
    pub lan: PoolHandle,
    pub wan: Option<PoolHandle>,
    stop: Arc<watch::Sender<bool>>,
    exit: DriverExitWatch,
    tasks: tokio::task::JoinSet<()>,
    writer_thread: std::thread::JoinHandle<()>,
}

impl Agent {
    /// Start every part of the agent; the cluster forms in the background.
    pub async fn start(mut config: AgentConfig) -> Result<Agent, AgentError> {
        if !config.server && !config.dev {
            return Err(AgentError::Config(
                "Agent::start runs servers; start a client agent with ClientAgent::start".into(),
            ));
        }
        let advertise = identity::advertise_ip(config.bind_addr, config.advertise_addr)?;
        let data_dir = if config.dev { None } else { config.data_dir.clone() };
        if !config.dev && data_dir.is_none() {
            return Err(AgentError::Config("Must specify data directory using -data-dir".into()));
        }
        if let Some(dir) = &data_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| AgentError::DataDir(format!("cannot create data dir {}: {e}", dir.display())))?;
        }
        let id = identity::node_id(config.node_id.as_deref(), data_dir.as_deref())?;

        let mut store: Box<dyn LogStore> = match &data_dir {
            Some(dir) => Box::new(FjallStore::open(dir)?),
            None => Box::new(MemStore::new()),
        };
        let recovered = store.recover()?;
        let writer = spawn_writer(store);

        let rpc_bind = SocketAddr::new(config.bind_addr, config.ports.server);
        let rpc_listener = bind(rpc_bind, "server RPC").await?;
        let rpc_addr = rpc_listener.local_addr().map_err(|err| AgentError::Listen {
            what: "server RPC",
            addr: rpc_bind,
            err,
        })?;
        let address = identity::socket_string(advertise, rpc_addr.port());
        let book = Arc::new(AddressBook::new(LocalServer {
            id,
            name: config.node_name.clone(),
            address: address.clone(),
            datacenter: config.datacenter.clone(),
        }));

        let (stop, _) = watch::channel(false);
        let stop = Arc::new(stop);
        let rpc_port = rpc_addr.port();
        let wan_tags = serf::tags(&config, id, rpc_port, None);
        let wan = serf::start_pool(&config, advertise, wan_tags, true, stopped(&stop)).await?;
        let lan_tags = serf::tags(&config, id, rpc_port, Some(wan.addr.port()));
        let lan = serf::start_pool(&config, advertise, lan_tags, false, stopped(&stop)).await?;

        let clock = TokioClock::new();
        let node_config = NodeConfig {
            id,
            name: config.node_name.clone(),
            address: address.clone(),
            seed: identity::random_seed(),
            raft: raft_config(&config),
            limits: Limits {
                default_query_time: config.default_query_time,
                max_query_time: config.max_query_time,
                coordinate_update_period: config.coordinate_update_period,
                coordinate_update_batch_size: config.coordinate_update_batch_size,
                coordinate_update_max_batches: config.coordinate_update_max_batches,
                ..Limits::default()
            },
            mutation: Default::default(),
        };
        let node = Node::new(node_config, recovered, clock.now());
        let (peer_tx, peer_rx) = mpsc::channel(PEER_CHANNEL);
        let devices = Devices {
            clock,
            transport: TcpTransport::new(book.clone(), DEFAULT_MAX_FRAME),
            peer_rx,
            persist_tx: writer.tx,
            persisted_rx: writer.done,
            events: None,
        };
        let (handle, driver) = driver::start(node, devices);

        let (exit_tx, exit) = watch::channel(None);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let why = driver.await;
            exit_tx.send_replace(Some(why));
        });
        tasks.spawn(rpc::serve(
            rpc_listener,
            book.clone(),
            peer_tx,
            handle.clone(),
            DEFAULT_MAX_FRAME,
            stopped(&stop),
        ));

        let mut http_listeners = Vec::new();
        for ip in &config.client_addr {
            let addr = SocketAddr::new(*ip, config.ports.http);
            http_listeners.push(bind(addr, "HTTP").await?);
        }
        let http_addrs: Vec<SocketAddr> = http_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let (dns, dns_listeners) = bind_dns(&mut config).await?;
        let local = local_agent(&config, id, advertise, rpc_addr.port(), data_dir.clone())?;
        let alias_handle = handle.clone();
        local.connect_catalog(Arc::new(move |req| {
            let handle = alias_handle.clone();
            Box::pin(async move { handle.call(req).await })
        }));
        let backend = AgentBackend {
            local: local.clone(),
            handle: handle.clone(),
            info: Arc::new(agent_self(&config, id, advertise, &http_addrs, rpc_addr.port())),
            stop: stop.clone(),
            exit: exit.clone(),
            lan: lan.clone(),
            wan: Some(wan.clone()),
            events: events::UserEvents::new(Some(lan.clone()), config.node_name.clone(), Some(local.clone())),
        };
        let settings = HttpSettings {
            datacenter: config.datacenter.clone(),
            kv_max_value_size: config.kv_max_value_size,
            txn_max_req_len: config.txn_max_req_len,
            http_max_body_size: config.http_max_body_size,
            default_query_time: config.default_query_time,
            max_query_time: config.max_query_time,
            http_max_conns_per_client: config.http_max_conns_per_client,
            read_header_timeout: config.http_read_header_timeout,
            write_timeout: config.http_write_timeout,
            max_header_bytes: config.http_max_header_bytes,
        };
        crate::dns::spawn(&mut tasks, dns_listeners, dns, backend.clone(), stopped(&stop));
        tasks.spawn(backend.events.clone().collect());
        let (http_stop, ae_backend) = (stopped(&stop), backend.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(http_listeners, backend, settings, http_stop).await {
                tracing::error!(target: "agent.http", "HTTP server failed: {e}");
            }
        });

        print!("{}", banner(&config, id, advertise, &http_addrs, rpc_addr.port()));
        for warning in &config.warnings {
            tracing::warn!(target: "agent", "{warning}");
        }
        tracing::info!(target: "agent.server.rpc", "RPC listening on {rpc_addr} (advertised as {address})");
        for addr in &http_addrs {
            tracing::info!(target: "agent", "Started HTTP server: address={addr} network=tcp");
        }

        tracing::info!(target: "agent", "Consul agent running!");
        tasks.spawn(serf::feed_address_book(
            lan.clone(),
            book.clone(),
            config.datacenter.clone(),
        ));
        tasks.spawn(serf::apply_keyring_events(lan.clone()));
        tasks.spawn(serf::apply_keyring_events(wan.clone()));
        let (join_lan, join_stop) = (lan.clone(), stopped(&stop));
        let (join_addrs, join_port, join_every) =
            (config.retry_join.clone(), config.ports.serf_lan, config.retry_interval);
        tasks.spawn(async move {
            tokio::select! {
                _ = serf::retry_join(join_lan, join_addrs, join_port, join_every, "LAN") => {}
                _ = join_stop => {}
            }
        });
        serf::snapshot_tasks(&mut tasks, &config, &lan, false, stopped(&stop));
        serf::snapshot_tasks(&mut tasks, &config, &wan, true, stopped(&stop));
        let (wan_join, wan_stop) = (wan.clone(), stopped(&stop));
        let (wan_addrs, wan_port) = (config.retry_join_wan.clone(), config.ports.serf_wan);
        tasks.spawn(async move {
            tokio::select! {
                _ = serf::retry_join(wan_join, wan_addrs, wan_port, join_every, "WAN") => {}
                _ = wan_stop => {}
            }
        });
        let (flood_stop, flood) = (
            stopped(&stop),
            serf::flood_join_wan(lan.clone(), wan.clone(), config.datacenter.clone()),
        );
        tasks.spawn(async move {
            tokio::select! {
                _ = flood => {}
                _ = flood_stop => {}
            }
        });
        let (seen, dc, me) = (lan.clone(), config.datacenter.clone(), config.node_name.clone());
        let plan = cluster::Plan {
            bootstrap: config.bootstrap || config.dev,
            bootstrap_expect: config.bootstrap_expect,
            has_join: !config.retry_join.is_empty(),
            discovered: Arc::new(move || {
                serf::alive_servers(&seen.members(), &dc)
                    .into_iter()
                    .filter(|s| s.name != me)
                    .map(|s| s.rpc_addr)
                    .collect()
            }),
            retry_interval: config.retry_interval,
            max_frame: DEFAULT_MAX_FRAME,
        };
        let (form_book, form_handle, mut form_stop) = (book.clone(), handle.clone(), stop.subscribe());
        tasks.spawn(async move {
            tokio::select! {
                _ = cluster::form(plan, form_book, form_handle) => {}
                _ = form_stop.wait_for(|s| *s) => {}
            }
        });
        tasks.spawn(log_leader_changes(handle.clone(), book.clone()));
        let reconciler = concord_core::reconcile::Reconciler {
            node_name: config.node_name.clone(),
            datacenter: config.datacenter.clone(),
        };
        let (reconcile_stop, reconcile) = (stopped(&stop), reconcile::run(handle.clone(), lan.clone(), reconciler));
        tasks.spawn(async move {
            tokio::select! { _ = reconcile => {} _ = reconcile_stop => {} }
        });
        let (gc_stop, gc) = (
            stopped(&stop),
            tombstones::run(handle.clone(), tombstones::TombstoneGc::default()),
        );
        tasks.spawn(async move {
            tokio::select! { _ = gc => {} _ = gc_stop => {} }
        });
        let (timers_stop, ae_stop) = (stopped(&stop), stopped(&stop));
        let timers = local.clone().run_timers();
        tasks.spawn(async move {
            tokio::select! { _ = timers => {} _ = timers_stop => {} }
        });
        let coordinates = coordinate::run(
            ae_backend.clone(),
            lan.clone(),
            config.node_name.clone(),
            coordinate::SyncCoordinate {
                rate_target: config.sync_coordinate_rate_target,
                interval_min: config.sync_coordinate_interval_min,
            },
        );
        let coordinates_stop = stopped(&stop);
        tasks.spawn(async move {
            tokio::select! { _ = coordinates => {} _ = coordinates_stop => {} }
        });
        let ae = crate::local::run_anti_entropy(crate::local::AntiEntropy {
            backend: ae_backend,
            interval: ANTI_ENTROPY_INTERVAL,
        });
        tasks.spawn(async move {
            tokio::select! { _ = ae => {} _ = ae_stop => {} }
        });
        Ok(Agent {
            handle,
            book,
            rpc_addr,
            http_addrs,
            lan,
            wan: Some(wan),
            stop,
            exit,
            tasks,
            writer_thread: writer.thread,
        })
    }

    /// Ask the agent to stop (what a leave does once the server is removed).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Serve until `shutdown` resolves, the agent is asked to stop, or the driver ends; then shut down in
    /// order. An error if the server stopped on its own for a reason other than being removed.
    pub async fn run_until(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), AgentError> {
        let mut stop = self.stop.subscribe();
        let mut exit = self.exit.clone();
        let wan = self.wan.clone();
        let wan_conflict = async move {
            match &wan {
                Some(w) => serf::conflict(w).await,
                None => std::future::pending().await,
            }
        };
        let conflict = tokio::select! {
            _ = shutdown => None,
            _ = stop.wait_for(|s| *s) => None,
            _ = exit.wait_for(|e| e.is_some()) => None,
            why = serf::conflict(&self.lan) => Some(why),
            why = wan_conflict => Some(why),
        };
        tracing::info!(target: "agent", "Gracefully shutting down agent...");
        self.stop.send_replace(true);
        self.handle.shutdown();
        let why = match self.exit.wait_for(|e| e.is_some()).await {
            Ok(e) => e.clone(),
            Err(_) => None,
        };
        // The driver held the storage queue; with it gone the writer drains, closes the store and ends.
        let writer = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
        tracing::info!(target: "agent", "shutdown complete");
        if let Some(why) = conflict {
            return Err(AgentError::Conflict(why));
        }
        match why {
            Some(DriverExit::StorageFailed(e)) => Err(AgentError::Stopped(format!("storage failed: {e}"))),
            Some(DriverExit::Removed) => {
                tracing::info!(target: "agent", "this server was removed from the cluster");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Consul's `ae_interval` for clusters of up to 128 nodes.
pub(crate) const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(60);

/// The agent's local state: this node as the catalog shows it, services and checks saved by an earlier
/// run, then those of the config files (`service`/`check` blocks in `-config-dir`).
fn local_agent(
    config: &AgentConfig,
    id: NodeId,
    advertise: IpAddr,
    rpc_port: u16,
    data_dir: Option<std::path::PathBuf>,
) -> Result<LocalAgentHandle, AgentError> {
    let addr = advertise.to_string();
    let family = if advertise.is_ipv4() { "ipv4" } else { "ipv6" };
    let tagged = [
        ("lan".to_string(), addr.clone()),
        (format!("lan_{family}"), addr.clone()),
        ("wan".to_string(), addr.clone()),
        (format!("wan_{family}"), addr.clone()),
    ];
    let mut meta = config.node_meta.clone();
    meta.insert("consul-network-segment".into(), String::new());
    meta.insert("consul-version".into(), CONSUL_COMPAT_VERSION.into());
    let node = NodeIdentity {
        name: config.node_name.clone(),
        id: id.to_string(),
        address: addr,
        datacenter: config.datacenter.clone(),
        tagged_addresses: tagged.into_iter().collect(),
        meta,
    };
    let server_port = (config.server || config.dev).then_some(rpc_port);
    let clock = TokioClock::new();
    let mut state = LocalAgent::new(node, server_port);
    let policy = ScriptPolicy {
        allowed: config.enable_script_checks || config.enable_local_script_checks,
    };
    let bad =
        |what: &str, e: String| AgentError::Config(format!("invalid {what} definition in the configuration: {e}"));
    for value in &config.services {
        let obj = Obj::new(value).map_err(|e| bad("service", e))?;
        let (service, checks) = definition::service(obj, policy).map_err(|e| bad("service", e))?;
        state
            .add_service(clock.now(), service, checks, true)
            .map_err(|e| bad("service", e.to_string()))?;
    }
    for value in &config.checks {
        let obj = Obj::new(value).map_err(|e| bad("check", e))?;
        let def = definition::check(obj, policy, true).map_err(|e| bad("check", e))?;
        state
            .add_check(clock.now(), def)
            .map_err(|e| bad("check", e.to_string()))?;
    }
    state.mark_registered_as_config();
    if let Some(saved) = data_dir.as_deref().and_then(crate::local::load_saved) {
        state.restore(clock.now(), saved);
    }
    Ok(LocalAgentHandle::from_state(
        clock,
        state,
        data_dir.as_deref(),
        config.enable_script_checks,
    ))
}

/// Consul's leadership log lines. Ends when the driver does.
async fn log_leader_changes(handle: DriverHandle, book: Arc<AddressBook>) {
    let mut leader = handle.subscribe_leader();
    while leader.changed().await.is_ok() {
        let current = *leader.borrow_and_update();
        match current {
            Some(id) => {
                if id == handle.id() {
                    let address = &book.me().address;
                    tracing::info!(target: "agent.server.raft", "entering leader state: leader=\"Node at {address} [Leader]\"");
                }
                let name = book.name(id).unwrap_or_else(|| id.to_string());
                tracing::info!(target: "agent.server", "New leader elected: payload={name}");
            }
            None => tracing::warn!(target: "agent.server", "No cluster leader"),
        }
    }
}

fn stopped(stop: &watch::Sender<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The DNS settings and sockets (none with `-dns-port -1`); `config.ports.dns` becomes the port bound.
async fn bind_dns(config: &mut AgentConfig) -> Result<(crate::dns::DnsSettings, crate::dns::DnsListeners), AgentError> {
    let settings = crate::dns::DnsSettings::from_agent(config).map_err(AgentError::Config)?;
    let listeners = crate::dns::bind(&settings.listen)
        .await
        .map_err(|(addr, err)| AgentError::Listen { what: "DNS", addr, err })?;
    if let Some(addr) = listeners.addrs().first() {
        config.ports.dns = i32::from(addr.port());
    }
    Ok((settings, listeners))
}

async fn bind(addr: SocketAddr, what: &'static str) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| AgentError::Listen { what, addr, err })
}

fn agent_self(config: &AgentConfig, id: NodeId, advertise: IpAddr, http: &[SocketAddr], rpc_port: u16) -> AgentSelf {
    AgentSelf {
        datacenter: config.datacenter.clone(),
        node_name: config.node_name.clone(),
        node_id: id.to_string(),
        server: config.server || config.dev,
        bootstrap: config.bootstrap || config.dev,
        bootstrap_expect: config.bootstrap_expect.unwrap_or(0),
        bind_addr: if config.bind_addr.is_unspecified() {
            advertise
        } else {
            config.bind_addr
        },
        advertise_addr: advertise,
        client_addrs: config.client_addr.clone(),
        ports: AgentPorts {
            http: http.first().map_or(config.ports.http, |a| a.port()),
            dns: config.ports.dns,
            server: rpc_port,
            serf_lan: config.ports.serf_lan,
            serf_wan: config.ports.serf_wan,
        },
        domain: config.domain.clone(),
        version: CONSUL_COMPAT_VERSION.to_string(),
        concord_version: env!("CARGO_PKG_VERSION").to_string(),
        revision: option_env!("CONCORD_REVISION").unwrap_or("").to_string(),
        raft: None,
        leader_addr: None,
        known_datacenters: 1,
        known_servers: 0,
        services: 0,
        checks: 0,
        extra_stats: BTreeMap::new(),
    }
}

fn banner(config: &AgentConfig, id: NodeId, advertise: IpAddr, http: &[SocketAddr], rpc_port: u16) -> String {
    let client_addrs: Vec<String> = config.client_addr.iter().map(|ip| ip.to_string()).collect();
    logging::Banner {
        version: &format!("{} (Consul API {CONSUL_COMPAT_VERSION})", env!("CARGO_PKG_VERSION")),
        node_id: id.to_string(),
        node_name: &config.node_name,
        datacenter: &config.datacenter,
        server: config.server || config.dev,
        bootstrap: config.bootstrap || config.dev,
        client_addrs: client_addrs.join(" "),
        http_port: http.first().map_or(config.ports.http, |a| a.port()),
        dns_port: config.ports.dns,
        cluster_addr: advertise.to_string(),
        server_port: rpc_port,
        serf_lan_port: config.ports.serf_lan,
        serf_wan_port: config.ports.serf_wan,
        encrypt: config.encrypt.is_some(),
    }
    .to_string()
}
