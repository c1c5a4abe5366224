//! The agent's local services and checks at run time: the core's [`LocalAgent`] behind a short-held
//! mutex (never held across an await), a probe task per HTTP/TCP/script/gRPC/Docker check and per alias
//! check, a timer task for TTL expiry and reaping, persistence of the local state, and anti-entropy to
//! the catalog.
//!
//! Invariants: a probe task runs for exactly the probed checks currently registered (a replaced or
//! removed check's task is aborted); every change notifies the anti-entropy loop; the local state is
//! written to `<data-dir>/local-state.json` after every change so a restart keeps services, checks and
//! TTL statuses.

mod alias;
pub(crate) mod definition;
mod docker;
pub(crate) mod grpc;
mod probe;
mod sync;
#[cfg(test)]
mod tests;
pub(crate) mod tls;

pub use alias::CatalogCall;
pub use sync::{run_anti_entropy, AntiEntropy};

use crate::agent::TokioClock;
use crate::driver::Clock;
use concord_core::agent::{AgentError, CheckDef, CheckKind, LocalAgent, LocalSnapshot, NodeIdentity};
use concord_core::state::{CheckStatus, HealthCheck, ServiceInstance};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Where the local state is saved in the data dir.
fn state_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("local-state.json")
}

/// The local state an earlier run saved in `data_dir`, if any (an unreadable file is logged and ignored:
/// the agent starts from its config files, as after a fresh install).
pub fn load_saved(data_dir: &std::path::Path) -> Option<LocalSnapshot> {
    let path = state_file(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<LocalSnapshot>(&bytes) {
            Ok(snapshot) => Some(snapshot),
            Err(e) => {
                tracing::warn!(target: "agent", "ignoring {}: {e}", path.display());
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(target: "agent", "cannot read {}: {e}", path.display());
            None
        }
    }
}

/// Cheap to clone; every clone is the same agent.
#[derive(Clone)]
pub struct LocalAgentHandle {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<LocalAgent>,
    /// Check ID → (its definition when the task started, the probe task).
    probes: Mutex<BTreeMap<String, (CheckDef, tokio::task::AbortHandle)>>,
    clock: TokioClock,
    /// Bumped on every local change; anti-entropy and the timer task each watch it.
    changed: watch::Sender<u64>,
    persist_path: Option<PathBuf>,
    /// `-enable-script-checks`: scripts may come through the API.
    pub(crate) enable_script_checks: bool,
    /// How alias checks of other nodes read the catalog (set once the agent's RPC path exists).
    catalog: watch::Sender<Option<CatalogCall>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(probes) = self.probes.get_mut() {
            for (_, handle) in probes.values() {
                handle.abort();
            }
        }
    }
}

impl LocalAgentHandle {
    /// A local agent for `node`, with nothing registered and nothing loaded (tests, the fake backend).
    pub fn new(node: NodeIdentity, server_port: Option<u16>, enable_script_checks: bool) -> Self {
        Self::from_state(
            TokioClock::new(),
            LocalAgent::new(node, server_port),
            None,
            enable_script_checks,
        )
    }

    /// Wrap a prepared state (config definitions registered and marked, the saved state restored, all on
    /// `clock`'s time base); with `data_dir` every later change is saved there.
    pub fn from_state(
        clock: TokioClock,
        state: LocalAgent,
        data_dir: Option<&std::path::Path>,
        enable_script_checks: bool,
    ) -> Self {
        let handle = LocalAgentHandle {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                probes: Mutex::new(BTreeMap::new()),
                clock,
                changed: watch::channel(0).0,
                persist_path: data_dir.map(state_file),
                enable_script_checks,
                catalog: watch::channel(None).0,
            }),
        };
        handle.reconcile_probes();
        handle
    }

    /// Give alias checks of other nodes their way to the catalog (blocking health reads).
    pub fn connect_catalog(&self, call: CatalogCall) {
        self.inner.catalog.send_replace(Some(call));
    }

    pub(crate) fn enable_script_checks(&self) -> bool {
        self.inner.enable_script_checks
    }

    fn state(&self) -> MutexGuard<'_, LocalAgent> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply a change, then start/stop probes, persist and notify.
    fn change<T>(&self, f: impl FnOnce(&mut LocalAgent, concord_core::Instant) -> T) -> T {
        let now = self.inner.clock.now();
        let out = {
            let mut state = self.state();
            f(&mut state, now)
        };
        self.changed();
        out
    }

    /// Something changed (a change, a probe result, a tick): reconcile probes, persist, wake anti-entropy.
    fn changed(&self) {
        self.reconcile_probes();
        self.persist();
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn persist(&self) {
        let Some(path) = &self.inner.persist_path else {
            return;
        };
        let snapshot = self.state().snapshot(self.inner.clock.now());
        let bytes = serde_json::to_vec(&snapshot).expect("local state always encodes");
        let tmp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!(target: "agent", "cannot save the local state to {}: {e}", path.display());
        }
    }

    fn reconcile_probes(&self) {
        let wanted: BTreeMap<String, CheckDef> = self
            .state()
            .checks()
            .values()
            .filter(|c| {
                matches!(
                    c.def.kind,
                    CheckKind::Http { .. }
                        | CheckKind::Tcp { .. }
                        | CheckKind::Script { .. }
                        | CheckKind::Grpc { .. }
                        | CheckKind::Docker { .. }
                        | CheckKind::Alias { .. }
                )
            })
            .map(|c| (c.def.id.clone(), c.def.clone()))
            .collect();
        let mut probes = self.inner.probes.lock().unwrap_or_else(|p| p.into_inner());
        probes.retain(|id, (def, handle)| {
            let keep = wanted.get(id) == Some(def);
            if !keep {
                handle.abort();
            }
            keep
        });
        for (id, def) in wanted {
            if probes.contains_key(&id) {
                continue;
            }
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                continue;
            };
            let agent = Arc::downgrade(&self.inner);
            let task = match &def.kind {
                CheckKind::Alias { node, service_id } => {
                    rt.spawn(alias::run(agent, def.id.clone(), node.clone(), service_id.clone()))
                }
                _ => rt.spawn(probe_loop(agent, def.clone())),
            };
            probes.insert(id, (def, task.abort_handle()));
        }
    }

    pub fn add_service(
        &self,
        service: ServiceInstance,
        checks: Vec<CheckDef>,
        replace_existing_checks: bool,
    ) -> Result<(), AgentError> {
        self.change(|s, now| s.add_service(now, service, checks, replace_existing_checks))
    }

    pub fn remove_service(&self, id: &str) -> bool {
        self.change(|s, _| s.remove_service(id))
    }

    pub fn add_check(&self, def: CheckDef) -> Result<(), AgentError> {
        self.change(|s, now| s.add_check(now, def))
    }

    pub fn remove_check(&self, id: &str) -> bool {
        self.change(|s, _| s.remove_check(id))
    }

    pub fn update_ttl(&self, id: &str, status: CheckStatus, output: &str) -> Result<(), AgentError> {
        self.change(|s, now| s.update_ttl(now, id, status, output))
    }

    pub fn set_node_maintenance(&self, enable: bool, reason: &str) {
        self.change(|s, now| s.set_node_maintenance(now, enable, reason))
    }

    pub fn set_service_maintenance(&self, id: &str, enable: bool, reason: &str) -> Result<(), AgentError> {
        self.change(|s, now| s.set_service_maintenance(now, id, enable, reason))
    }

    pub fn services(&self) -> Vec<ServiceInstance> {
        self.state().services().values().cloned().collect()
    }

    pub fn service(&self, id: &str) -> Option<ServiceInstance> {
        self.state().services().get(id).cloned()
    }

    pub fn checks(&self) -> Vec<HealthCheck> {
        let state = self.state();
        state.checks().values().map(|c| state.health_check(c)).collect()
    }

    /// (worst status, the service, its checks) of one service.
    pub fn service_health(&self, id: &str) -> Option<(CheckStatus, ServiceInstance, Vec<HealthCheck>)> {
        let state = self.state();
        let (status, checks) = state.service_health(id)?;
        Some((status, state.services()[id].clone(), checks))
    }

    /// The agent's clock (the time base of its check deadlines).
    pub(crate) fn now(&self) -> concord_core::Instant {
        self.inner.clock.now()
    }

    pub fn node(&self) -> NodeIdentity {
        self.state().node().clone()
    }

    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&mut LocalAgent) -> T) -> T {
        f(&mut self.state())
    }

    /// Fire due TTL expiries and reaps; returns when the next one is due.
    fn tick(&self) -> Option<concord_core::Instant> {
        let now = self.inner.clock.now();
        let (changed, next) = {
            let mut state = self.state();
            let changed = state.tick(now);
            (changed, state.next_deadline())
        };
        if changed {
            self.changed();
        }
        next
    }

    /// The timer loop (TTL expiry, reaping); runs until the task is aborted.
    pub async fn run_timers(self) {
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            let next = self.tick();
            let sleep = async {
                match next {
                    Some(at) => self.inner.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }

    fn report(&self, id: &str, status: CheckStatus, output: &str) {
        let now = self.inner.clock.now();
        let before = {
            let mut state = self.state();
            let before = state.checks().get(id).map(|c| (c.status, c.output.clone()));
            state.check_result(now, id, status, output);
            let after = state.checks().get(id).map(|c| (c.status, c.output.clone()));
            before != after
        };
        if before {
            self.persist();
            self.inner.changed.send_modify(|g| *g += 1);
        }
    }
}

/// Probe one check every interval (the first run after a random stagger within the interval, as Consul
/// does, so many checks do not fire together) until aborted or the agent is gone.
async fn probe_loop(agent: std::sync::Weak<Inner>, def: CheckDef) {
    use rand::Rng;
    let stagger = rand::rngs::OsRng.gen_range(Duration::ZERO..=def.interval.min(Duration::from_secs(1)));
    tokio::time::sleep(stagger).await;
    let mut next = tokio::time::Instant::now();
    loop {
        let (status, output) = probe::run(&def.kind, def.timeout).await;
        let Some(inner) = agent.upgrade() else {
            return;
        };
        LocalAgentHandle { inner }.report(&def.id, status, &output);
        next += def.interval;
        tokio::time::sleep_until(next.max(tokio::time::Instant::now())).await;
    }
}
