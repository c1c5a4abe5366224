//! A client agent (`concord agent` without `-server`): no Raft and no storage, only the LAN gossip pool
//! and the HTTP API. It finds servers through their gossip tags and forwards every request to one of
//! them over the server RPC port (`Call` frames), trying the next server when one is unreachable.
//!
//! A client's hello carries an empty RPC address, so servers never mistake it for a server (it is not
//! learned into their address book and cannot take part in `-bootstrap-expect`).

use super::serf::{self, ServerInfo};
use super::{agent_self, banner, bind, bind_dns, identity, stopped, AgentError};
use crate::config::AgentConfig;
use crate::gossip::PoolHandle;
use crate::http::{AgentSelf, Backend, HttpSettings, KeyringOp, KeyringPool};
use crate::rpc::{self, AddressBook, CallError, LocalServer};
use concord_core::api::{ApiError, Request, Response};
use concord_core::gossip::Member;
use concord_core::wire::DEFAULT_MAX_FRAME;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Slack on top of a blocking query's wait before a forwarded call is given up.
const CALL_SLACK: Duration = Duration::from_secs(30);

/// A started client agent.
pub struct ClientAgent {
    pub lan: PoolHandle,
    pub http_addrs: Vec<SocketAddr>,
    backend: ClientBackend,
    stop: Arc<watch::Sender<bool>>,
    tasks: tokio::task::JoinSet<()>,
}

impl ClientAgent {
    pub async fn start(mut config: AgentConfig) -> Result<ClientAgent, AgentError> {
        let advertise = identity::advertise_ip(config.bind_addr, config.advertise_addr)?;
        let Some(dir) = config.data_dir.clone() else {
            return Err(AgentError::Config("Must specify data directory using -data-dir".into()));
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::DataDir(format!("cannot create data dir {}: {e}", dir.display())))?;
        let id = identity::node_id(config.node_id.as_deref(), Some(&dir))?;
        let (stop, _) = watch::channel(false);
        let stop = Arc::new(stop);
        let lan = serf::start_pool(
            &config,
            advertise,
            serf::tags(&config, id, 0, None),
            false,
            stopped(&stop),
        )
        .await?;
        let book = Arc::new(AddressBook::new(LocalServer {
            id,
            name: config.node_name.clone(),
            address: String::new(),
            datacenter: config.datacenter.clone(),
        }));

        let mut http_listeners = Vec::new();
        for ip in &config.client_addr {
            http_listeners.push(bind(SocketAddr::new(*ip, config.ports.http), "HTTP").await?);
        }
        let http_addrs: Vec<SocketAddr> = http_listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
        let (dns, dns_listeners) = bind_dns(&mut config).await?;
        // Services and checks registered on a client are kept and checked locally, and anti-entropy
        // syncs them into the catalog through whichever server answers (forwarded RPC).
        let local = super::local_agent(&config, id, advertise, 0, Some(dir.clone()))?;
        let forwarder = Forwarder {
            lan: lan.clone(),
            book,
            datacenter: config.datacenter.clone(),
            next: Arc::new(AtomicUsize::new(0)),
        };
        let alias_forwarder = forwarder.clone();
        local.connect_catalog(Arc::new(move |req| {
            let f = alias_forwarder.clone();
            Box::pin(async move { f.forward(req).await })
        }));
        let backend = ClientBackend {
            events: super::events::UserEvents::new(Some(lan.clone()), config.node_name.clone(), Some(local.clone())),
            local: local.clone(),
            lan: lan.clone(),
            forwarder,
            info: Arc::new(agent_self(&config, id, advertise, &http_addrs, config.ports.server)),
            stop: stop.clone(),
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
        let mut tasks = tokio::task::JoinSet::new();
        crate::dns::spawn(&mut tasks, dns_listeners, dns, backend.clone(), stopped(&stop));
        let (http_backend, http_stop) = (backend.clone(), stopped(&stop));
        tasks.spawn(async move {
            if let Err(e) = crate::http::serve(http_listeners, http_backend, settings, http_stop).await {
                tracing::error!(target: "agent.http", "HTTP server failed: {e}");
            }
        });
        tasks.spawn(serf::apply_keyring_events(lan.clone()));
        let coordinates = super::coordinate::run(
            backend.clone(),
            lan.clone(),
            config.node_name.clone(),
            super::coordinate::SyncCoordinate {
                rate_target: config.sync_coordinate_rate_target,
                interval_min: config.sync_coordinate_interval_min,
            },
        );
        let coordinates_stop = stopped(&stop);
        tasks.spawn(async move {
            tokio::select! { _ = coordinates => {} _ = coordinates_stop => {} }
        });
        tasks.spawn(backend.events.clone().collect());
        let ae = crate::local::run_anti_entropy(crate::local::AntiEntropy {
            backend: backend.clone(),
            interval: super::ANTI_ENTROPY_INTERVAL,
        });
        let ae_stop = stopped(&stop);
        tasks.spawn(async move {
            tokio::select! { _ = ae => {} _ = ae_stop => {} }
        });
        let (timers, timers_stop) = (local.run_timers(), stopped(&stop));
        tasks.spawn(async move {
            tokio::select! { _ = timers => {} _ = timers_stop => {} }
        });
        serf::snapshot_tasks(&mut tasks, &config, &lan, false, stopped(&stop));
        let (join_lan, join_stop) = (lan.clone(), stopped(&stop));
        let (addrs, port, every) = (config.retry_join.clone(), config.ports.serf_lan, config.retry_interval);
        tasks.spawn(async move {
            tokio::select! {
                _ = serf::retry_join(join_lan, addrs, port, every, "LAN") => {}
                _ = join_stop => {}
            }
        });
        print!("{}", banner(&config, id, advertise, &http_addrs, config.ports.server));
        for warning in &config.warnings {
            tracing::warn!(target: "agent", "{warning}");
        }
        for addr in &http_addrs {
            tracing::info!(target: "agent", "Started HTTP server: address={addr} network=tcp");
        }
        tracing::info!(target: "agent", "Consul agent running!");
        Ok(ClientAgent {
            lan,
            http_addrs,
            backend,
            stop,
            tasks,
        })
    }

    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Serve until `shutdown` resolves or a leave stops the agent. With `leave_on_terminate` (a client's
    /// default) a shutdown leaves the pool first, so others see this agent as left rather than failed.
    pub async fn run_until(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
        leave_on_shutdown: bool,
    ) -> Result<(), AgentError> {
        let mut stop = self.stop.subscribe();
        let mut conflict = None;
        let signalled = tokio::select! {
            _ = shutdown => true,
            _ = stop.wait_for(|s| *s) => false,
            why = serf::conflict(&self.lan) => {
                conflict = Some(why);
                false
            }
        };
        if signalled && leave_on_shutdown {
            tracing::info!(target: "agent", "Gracefully leaving the cluster before shutdown");
            self.backend.lan.leave().await;
        }
        tracing::info!(target: "agent", "Gracefully shutting down agent...");
        self.stop.send_replace(true);
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => { self.tasks.abort_all(); break }
            }
        }
        tracing::info!(target: "agent", "shutdown complete");
        match conflict {
            Some(why) => Err(AgentError::Conflict(why)),
            None => Ok(()),
        }
    }
}

#[derive(Clone)]
pub struct ClientBackend {
    local: crate::local::LocalAgentHandle,
    lan: PoolHandle,
    forwarder: Forwarder,
    info: Arc<AgentSelf>,
    stop: Arc<watch::Sender<bool>>,
    events: super::events::UserEvents,
}

impl ClientBackend {
    fn servers(&self) -> Vec<ServerInfo> {
        self.forwarder.servers()
    }
}

/// The client's RPC path to the servers (kept apart from the backend so the local agent's alias checks
/// can hold it without holding the local agent itself).
#[derive(Clone)]
struct Forwarder {
    lan: PoolHandle,
    book: Arc<AddressBook>,
    datacenter: String,
    /// Round-robin start among the known servers.
    next: Arc<AtomicUsize>,
}

impl Forwarder {
    fn servers(&self) -> Vec<ServerInfo> {
        serf::alive_servers(&self.lan.members(), &self.datacenter)
    }

    /// Forward `req` to a server, trying each known one once. A call that reached a server but broke
    /// mid-way is not retried elsewhere (a write may have been applied): it answers `Timeout`.
    async fn forward(&self, req: Request) -> Response {
        let servers = self.servers();
        if servers.is_empty() {
            return Response::Error(ApiError::NoLeader);
        }
        let timeout = match &req {
            Request::KvRead { block: Some(b), .. } | Request::Read { block: Some(b), .. } => b.wait + CALL_SLACK,
            _ => CALL_SLACK,
        };
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for k in 0..servers.len() {
            let server = &servers[(start + k) % servers.len()];
            match rpc::call_after_dial(&server.rpc_addr, &self.book, req.clone(), DEFAULT_MAX_FRAME, timeout).await {
                Ok(resp) => return resp,
                Err(CallError::Dial(e)) => {
                    tracing::debug!(target: "agent.client", "server {} unreachable: {e}", server.name);
                }
                Err(CallError::Call(e)) => {
                    tracing::warn!(target: "agent.client", "RPC to server {} failed: {e}", server.name);
                    return Response::Error(ApiError::Timeout);
                }
            }
        }
        Response::Error(ApiError::NoLeader)
    }
}

impl Backend for ClientBackend {
    fn call(&self, req: Request) -> impl std::future::Future<Output = Response> + Send {
        let forwarder = self.forwarder.clone();
        async move { forwarder.forward(req).await }
    }

    fn local(&self) -> &crate::local::LocalAgentHandle {
        &self.local
    }

    fn user_events(&self) -> Option<&super::events::UserEvents> {
        Some(&self.events)
    }

    async fn agent_self(&self) -> AgentSelf {
        let mut me = (*self.info).clone();
        me.known_servers = self.servers().len();
        me.services = self.local.services().len();
        me.checks = self.local.checks().len();
        me
    }

    async fn leave(&self) -> Result<(), String> {
        self.lan.leave().await;
        self.stop.send_replace(true);
        Ok(())
    }

    async fn members(&self, wan: bool) -> Result<Vec<Member>, String> {
        if wan {
            return Err("WAN gossip runs on servers only".into());
        }
        Ok(self.lan.members().as_ref().clone())
    }

    async fn join(&self, addr: String, wan: bool) -> Result<(), String> {
        if wan {
            return Err("WAN gossip runs on servers only".into());
        }
        self.lan.join(&[addr], self.info.ports.serf_lan).await.map(|_| ())
    }

    async fn force_leave(&self, node: String, prune: bool, _wan: bool) -> Result<(), String> {
        self.lan.force_leave(&node, prune).await
    }

    async fn keyring(&self, op: KeyringOp) -> Result<Vec<KeyringPool>, String> {
        serf::keyring_op(&[(false, &self.lan)], &self.info.datacenter, op).await
    }
}
