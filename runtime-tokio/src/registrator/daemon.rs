//! The registrator loop: connect to the engine, reconcile the backend with the running containers, then
//! follow `start`/`die` events; when the event stream drops (engine restart, socket trouble) reconnect with
//! backoff and reconcile again, where registrator would exit.
//!
//! Reconciling compares what should be registered with what the backend holds and writes only the
//! differences, so a `-resync` or a reconnect wakes no blocking query when nothing changed (registrator
//! re-PUTs everything and floods consul-template). Failed backend writes are retried by another
//! reconciliation after `-retry-interval`.

use super::backend::{self, Backend, Registered};
use super::bridge::{self, Service, Settings};
use super::docker;
use bollard::Docker;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Everything `concord registrator` was told.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) backend: backend::BackendUri,
    pub(crate) token: Option<String>,
    /// The TLS client of a `consul-tls://` backend (from `CONSUL_CACERT` and friends).
    pub(crate) tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub(crate) settings: Settings,
    pub(crate) resync: Option<Duration>,
    pub(crate) cleanup: bool,
    /// `-deregister on-success`.
    pub(crate) deregister_on_success: bool,
    /// `-retry-attempts`: -1 forever.
    pub(crate) retry_attempts: i64,
    pub(crate) retry_interval: Duration,
    pub(crate) docker_socket: PathBuf,
}

/// The first and the largest wait between attempts to reach the Docker engine.
const ENGINE_BACKOFF_MIN: Duration = Duration::from_millis(500);
const ENGINE_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What one reconciliation should write.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) register: Vec<Service>,
    /// `(id, name)`
    pub(crate) deregister: Vec<(String, String)>,
}

/// Compares `desired` with what the backend holds (`None`: unknown, so write everything). `gone` are
/// services this registrator registered whose container or port went away. With `cleanup`, services that
/// look like this host's registrator made them and are not desired go too.
pub(crate) fn plan(
    desired: &[Service],
    gone: &[Service],
    registered: Option<&[Registered]>,
    cleanup: bool,
    hostname: &str,
    kv: bool,
) -> Plan {
    let held: BTreeMap<&str, &Registered> = registered
        .unwrap_or_default()
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let register = desired
        .iter()
        .filter(|s| registered.is_none() || !held.get(s.id.as_str()).is_some_and(|r| backend::same(s, r, kv)))
        .cloned()
        .collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|s| s.id.as_str()).collect();
    let mut deregister = Vec::new();
    let mut seen = BTreeSet::new();
    for s in gone {
        if !wanted.contains(s.id.as_str())
            && (registered.is_none() || held.contains_key(s.id.as_str()))
            && seen.insert(s.id.clone())
        {
            deregister.push((s.id.clone(), s.name.clone()));
        }
    }
    if cleanup {
        for r in registered.unwrap_or_default() {
            if bridge::is_ours(&r.id, hostname) && !wanted.contains(r.id.as_str()) && seen.insert(r.id.clone()) {
                deregister.push((r.id.clone(), r.name.clone()));
            }
        }
    }
    Plan { register, deregister }
}

struct Registrator {
    opts: Options,
    backend: Backend,
    /// Container ID → the services registered for it.
    tracked: BTreeMap<String, Vec<Service>>,
}

/// Runs until `shutdown` completes. Errors only when the backend cannot be reached at start-up within
/// `-retry-attempts`.
pub(crate) async fn run(opts: Options, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    tokio::pin!(shutdown);
    // A missing socket at start-up is a configuration mistake, not an engine restart: say so and stop.
    if !opts.docker_socket.exists() {
        return Err(format!(
            "no Docker engine socket at {} (set DOCKER_HOST=unix:///path/to/docker.sock, or mount the socket there)",
            opts.docker_socket.display()
        ));
    }
    let backend = Backend::new(&opts.backend, opts.token.clone(), opts.tls.clone());
    tokio::select! {
        r = ping(&backend, &opts) => r?,
        () = &mut shutdown => return Ok(()),
    }
    let mut reg = Registrator {
        opts,
        backend,
        tracked: BTreeMap::new(),
    };
    let mut backoff = ENGINE_BACKOFF_MIN;
    loop {
        tokio::select! {
            outcome = reg.session() => match outcome {
                Session::Connected(e) => {
                    tracing::warn!("registrator: {e}; reconnecting to the Docker engine");
                    backoff = ENGINE_BACKOFF_MIN;
                }
                Session::Unreachable(e) => {
                    tracing::warn!("registrator: {e}; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = &mut shutdown => return Ok(()),
                    }
                    backoff = (backoff * 2).min(ENGINE_BACKOFF_MAX);
                }
            },
            () = &mut shutdown => return Ok(()),
        }
    }
}

/// Registrator's start-up ping (`GET /v1/status/leader`), tried `-retry-attempts` more times.
async fn ping(backend: &Backend, opts: &Options) -> Result<(), String> {
    let mut attempt: i64 = 0;
    loop {
        match backend.ping().await {
            Ok(leader) => {
                tracing::info!("registrator: using {}; current leader {leader}", backend.describe());
                return Ok(());
            }
            Err(e) if opts.retry_attempts >= 0 && attempt >= opts.retry_attempts => {
                return Err(format!("cannot reach the agent at {}: {e}", backend.describe()));
            }
            Err(e) => tracing::warn!("registrator: ping failed (attempt {}): {e}", attempt + 1),
        }
        attempt += 1;
        tokio::time::sleep(opts.retry_interval).await;
    }
}

/// How a session with the engine ended.
enum Session {
    /// The event stream was up and then broke.
    Connected(String),
    /// The engine could not be reached, or the first reconciliation failed on its side.
    Unreachable(String),
}

impl Registrator {
    /// Connect, reconcile, follow events until the stream breaks.
    async fn session(&mut self) -> Session {
        let docker = match docker::connect(&self.opts.docker_socket).await {
            Ok(d) => d,
            Err(e) => return Session::Unreachable(e),
        };
        // Events from one second before the listing on, so nothing between the two is missed; replays are
        // harmless (a known container's `start` is ignored, an unknown one's `die` does nothing).
        let since = unix_now() - 1;
        let mut retry_at = match self.reconcile(&docker).await {
            Ok(true) => None,
            Ok(false) => Some(Instant::now() + self.opts.retry_interval),
            Err(e) => return Session::Unreachable(e),
        };
        tracing::info!("registrator: watching Docker events");
        let mut events = docker::events(&docker, since);
        let mut resync = self.opts.resync.map(|every| Instant::now() + every);
        loop {
            let wake = [retry_at, resync].into_iter().flatten().min();
            let due = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let (ok, reconciled) = tokio::select! {
                event = events.next() => match event {
                    Some(Ok(e)) => (self.handle_event(&docker, e).await, false),
                    Some(Err(e)) => return Session::Connected(format!("Docker event stream failed: {e}")),
                    None => return Session::Connected("Docker event stream closed".into()),
                },
                () = due => {
                    let now = Instant::now();
                    if resync.is_some_and(|at| at <= now) {
                        resync = self.opts.resync.map(|every| now + every);
                    }
                    match self.reconcile(&docker).await {
                        Ok(ok) => (ok, true),
                        Err(e) => return Session::Connected(e),
                    }
                }
            };
            if reconciled {
                retry_at = None;
            }
            if !ok && retry_at.is_none() {
                retry_at = Some(Instant::now() + self.opts.retry_interval);
            }
        }
    }

    /// Bring the backend in line with the running containers. `Err` for engine trouble; `Ok(false)` when
    /// some backend write failed (retry later).
    async fn reconcile(&mut self, docker: &Docker) -> Result<bool, String> {
        let ids = docker::running(docker).await?;
        let settings = self.settings().await;
        let mut desired_by_container = BTreeMap::new();
        for id in ids {
            let Some(c) = docker::inspect(docker, &id).await? else {
                continue;
            };
            if c.running {
                desired_by_container.insert(id, bridge::services(&c, &settings));
            }
        }
        let mut gone = Vec::new();
        for (id, services) in std::mem::take(&mut self.tracked) {
            if desired_by_container.contains_key(&id) {
                gone.extend(services);
            } else if self.should_remove(docker, &id).await {
                tracing::info!(
                    "registrator: container {} went away while unobserved",
                    docker::short(&id)
                );
                gone.extend(services);
            }
        }
        let desired: Vec<Service> = desired_by_container.values().flatten().cloned().collect();
        let registered = match self.backend.registered().await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("registrator: cannot list the backend's services ({e}); registering everything");
                None
            }
        };
        let kv = self.opts.backend.kv_prefix.is_some();
        let plan = plan(
            &desired,
            &gone,
            registered.as_deref(),
            self.opts.cleanup,
            &settings.hostname,
            kv,
        );
        tracing::info!(
            "registrator: synced {} containers: {} services to register, {} to deregister",
            desired_by_container.len(),
            plan.register.len(),
            plan.deregister.len()
        );
        let mut ok = registered.is_some();
        for s in &plan.register {
            ok &= self.register(s).await;
        }
        for (id, name) in &plan.deregister {
            ok &= self.deregister(id, name, "dangling").await;
        }
        self.tracked = desired_by_container;
        Ok(ok)
    }

    /// `start` registers a container not yet known; `die` removes it under the `-deregister` policy.
    /// Returns false if a backend write failed.
    async fn handle_event(&mut self, docker: &Docker, e: bollard::models::EventMessage) -> bool {
        let Some(id) = e.actor.and_then(|a| a.id) else {
            return true;
        };
        match e.action.as_deref() {
            Some("start") if !self.tracked.contains_key(&id) => {
                let c = match docker::inspect(docker, &id).await {
                    Ok(Some(c)) if c.running => c,
                    Ok(_) => return true,
                    Err(e) => {
                        tracing::warn!("registrator: {e}");
                        return false;
                    }
                };
                let services = bridge::services(&c, &self.settings().await);
                if services.is_empty() {
                    tracing::info!("registrator: ignored {}: no service ports", docker::short(&id));
                }
                let mut ok = true;
                for s in &services {
                    ok &= self.register(s).await;
                }
                self.tracked.insert(id, services);
                ok
            }
            Some("die") => {
                let Some(services) = self.tracked.remove(&id) else {
                    return true;
                };
                if !self.should_remove(docker, &id).await {
                    return true;
                }
                let mut ok = true;
                for s in &services {
                    ok &= self.deregister(&s.id, &s.name, docker::short(&id)).await;
                }
                ok
            }
            _ => true,
        }
    }

    /// The `-deregister` policy for a container that stopped: `always`, or `on-success` (exit code 0, a
    /// signal, or the container is gone).
    async fn should_remove(&self, docker: &Docker, id: &str) -> bool {
        if !self.opts.deregister_on_success {
            return true;
        }
        match docker::inspect(docker, id).await {
            Ok(None) => true,
            Ok(Some(c)) if c.running => false,
            Ok(Some(c)) => c.exit_code == 0 || c.exit_code & 128 == 128,
            Err(e) => {
                tracing::warn!("registrator: {e}; keeping its services");
                false
            }
        }
    }

    async fn register(&self, s: &Service) -> bool {
        match self.backend.register(s).await {
            Ok(()) => {
                tracing::info!("registrator: added: {} {}", docker::short(&s.container_id), s.id);
                true
            }
            Err(e) => {
                tracing::warn!("registrator: register failed: {}: {e}", s.id);
                false
            }
        }
    }

    async fn deregister(&self, id: &str, name: &str, why: &str) -> bool {
        match self.backend.deregister(id, name).await {
            Ok(()) => {
                tracing::info!("registrator: removed: {why} {id}");
                true
            }
            Err(e) => {
                tracing::warn!("registrator: deregister failed: {id}: {e}");
                false
            }
        }
    }

    /// The settings with the host name resolved now (it may change while the registrator runs).
    async fn settings(&self) -> Settings {
        let mut s = self.opts.settings.clone();
        if s.hostname_ip.is_none() && s.ip.is_none() {
            s.hostname_ip = resolve(&s.hostname).await;
        }
        s
    }
}

/// The host name's first address, IPv4 preferred (Go's `net.ResolveIPAddr("ip", host)`).
async fn resolve(hostname: &str) -> Option<String> {
    let addrs: Vec<_> = tokio::net::lookup_host((hostname, 0)).await.ok()?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(|a| a.ip().to_string())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
