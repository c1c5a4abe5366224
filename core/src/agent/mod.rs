//! The agent's local state: the services and checks registered on this agent, the check state machine
//! (TTL expiry, anti-flap thresholds, deregistration of long-critical services, maintenance), and the
//! anti-entropy diff that makes the catalog match it.
//!
//! Invariants:
//! - The local state is authoritative for this node: [`LocalAgent::sync_plan`] yields the writes that make
//!   the catalog's rows for this node equal to it, deleting what the agent does not know (except rows the
//!   agent does not own: `serfHealth` belongs to the cluster).
//! - Every service check refers to a registered service; removing a service removes its checks.
//! - The local maps are keyed by exact service and check IDs (Consul's `agent/local` state is), but the
//!   catalog folds IDs (its memdb indexes lower-case them): anti-entropy matches catalog rows to local
//!   entries by folded ID, and of local IDs that differ only in case it syncs one — the first in ID order
//!   (the server's `consul` service first of all) — so the catalog converges instead of flipping between
//!   them every round.
//! - Time only enters as `now`; TTL expiry and critical-service reaping are absolute deadlines read
//!   through [`LocalAgent::next_deadline`], so the same inputs give the same state.
//! - HTTP/TCP/script checks run in the runtime, which reports each result with
//!   [`LocalAgent::check_result`]; TTL checks are updated by the API with [`LocalAgent::update_ttl`].

mod alias;
#[cfg(test)]
mod tests;

pub use alias::alias_status;

use crate::state::{
    fold, same_name, CatalogNode, CheckDefinition, CheckStatus, Command, HealthCheck, Registration, ServiceInstance,
};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The check Consul injects for node maintenance.
pub const NODE_MAINTENANCE_CHECK: &str = "_node_maintenance";
/// Prefix of the check injected for a service's maintenance (`_service_maintenance:<service id>`).
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";
/// The cluster-owned node check, never deleted by anti-entropy.
pub const SERF_HEALTH: &str = "serfHealth";
/// The service every server carries.
pub const CONSUL_SERVICE: &str = "consul";

/// How a check decides its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// Set through `/v1/agent/check/{pass,warn,fail,update}`; critical once `ttl` passes without an update.
    Ttl {
        ttl: Duration,
    },
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: String,
        tls_skip_verify: bool,
        tls_server_name: String,
    },
    Tcp {
        address: String,
    },
    /// `args` run directly (no shell); exit 0 passing, 1 warning, else critical.
    Script {
        args: Vec<String>,
    },
    /// The gRPC health protocol (`grpc.health.v1.Health/Check`) against `target` = `host:port[/service]`:
    /// `SERVING` is passing, anything else (or no answer) critical.
    Grpc {
        target: String,
        use_tls: bool,
        tls_skip_verify: bool,
        tls_server_name: String,
    },
    /// Mirrors the aggregate health of node `node` (`""`: this agent's node) and, if `service_id` is
    /// set, that service's checks: critical beats warning beats passing; never run on an interval.
    Alias {
        node: String,
        service_id: String,
    },
    /// `args` run inside the Docker container `container_id` through the Engine API's exec endpoints;
    /// exit codes as for scripts. `shell` is the container's shell for a legacy `script` string.
    Docker {
        container_id: String,
        shell: String,
        args: Vec<String>,
    },
    /// Maintenance: always critical, never run.
    Maintenance,
}

impl CheckKind {
    /// The catalog's `Type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Script { .. } => "script",
            CheckKind::Grpc { .. } => "grpc",
            CheckKind::Alias { .. } => "alias",
            CheckKind::Docker { .. } => "docker",
            CheckKind::Maintenance => "",
        }
    }
}

/// A check definition, as registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    pub id: String,
    pub name: String,
    pub notes: String,
    /// `""` for a node check.
    pub service_id: String,
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub deregister_critical_service_after: Option<Duration>,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    /// The status before the first result (Consul: critical).
    pub initial_status: CheckStatus,
}

/// A check with its current state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCheck {
    pub def: CheckDef,
    pub status: CheckStatus,
    pub output: String,
    successes: u32,
    failures: u32,
    /// TTL checks: when the status turns critical without an update.
    ttl_deadline: Option<Instant>,
    /// Since when the check has been critical (for `deregister_critical_service_after`).
    critical_since: Option<Instant>,
}

/// Why an agent operation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
}

/// This node as the catalog should show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
}

/// What survives a restart: services and checks registered through the API, and the state of every check
/// (TTL status included; maintenance is a check too). Definitions from config files are not kept: the
/// files are the truth for those on the next start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSnapshot {
    pub services: Vec<ServiceInstance>,
    pub checks: Vec<SavedCheck>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCheck {
    pub def: CheckDef,
    pub status: CheckStatus,
    pub output: String,
    /// What was left of a TTL check's TTL, in microseconds.
    pub ttl_left_us: Option<u64>,
    /// Defined by a config file: on restore only its state is reapplied, to the check the files define now.
    pub from_config: bool,
}

#[derive(Clone, Debug)]
pub struct LocalAgent {
    node: NodeIdentity,
    /// `Some(port)` on a server: it also carries the `consul` service on its RPC port.
    server_port: Option<u16>,
    services: BTreeMap<String, ServiceInstance>,
    checks: BTreeMap<String, LocalCheck>,
    /// Check ID → when anti-entropy last wrote it: a change of output alone waits `check_update_interval`
    /// after that (status changes go at once), so chatty outputs do not turn into a write per run.
    written_at: BTreeMap<String, Instant>,
    check_update_interval: Duration,
    /// Service and check IDs defined by config files (not persisted as definitions).
    config_services: BTreeSet<String>,
    config_checks: BTreeSet<String>,
}

/// Consul's `check_update_interval`.
pub const CHECK_UPDATE_INTERVAL: Duration = Duration::from_secs(300);

impl LocalAgent {
    pub fn new(node: NodeIdentity, server_port: Option<u16>) -> Self {
        LocalAgent {
            node,
            server_port,
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            written_at: BTreeMap::new(),
            check_update_interval: CHECK_UPDATE_INTERVAL,
            config_services: BTreeSet::new(),
            config_checks: BTreeSet::new(),
        }
    }

    /// Mark every service and check registered so far as defined by config files.
    pub fn mark_registered_as_config(&mut self) {
        self.config_services = self.services.keys().cloned().collect();
        self.config_checks = self.checks.keys().cloned().collect();
    }

    /// Override `check_update_interval` (0: every output change is written at once).
    pub fn set_check_update_interval(&mut self, interval: Duration) {
        self.check_update_interval = interval;
    }

    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// Register (or replace) a service with its checks. Checks without an ID get `service:<id>`
    /// (`service:<id>:<n>` when there are several).
    pub fn add_service(
        &mut self,
        now: Instant,
        service: ServiceInstance,
        mut checks: Vec<CheckDef>,
        replace_existing_checks: bool,
    ) -> Result<(), AgentError> {
        if service.service.is_empty() {
            return Err(AgentError::BadRequest("Missing service name".into()));
        }
        if service.id == CONSUL_SERVICE && self.server_port.is_some() {
            return Err(AgentError::BadRequest("The 'consul' service is reserved".into()));
        }
        crate::api::validate_meta(&service.meta, "Service")
            .map_err(|e| AgentError::BadRequest(format!("Invalid Service Meta: {e}")))?;
        let many = checks.len() > 1;
        for (i, c) in checks.iter_mut().enumerate() {
            c.service_id = service.id.clone();
            if c.id.is_empty() {
                c.id = if many {
                    format!("service:{}:{}", service.id, i + 1)
                } else {
                    format!("service:{}", service.id)
                };
            }
            if c.name.is_empty() {
                c.name = format!("Service '{}' check", service.service);
            }
        }
        // Validate every check first: a refused registration changes nothing.
        for c in &checks {
            validate_kind(&c.kind)?;
        }
        if replace_existing_checks {
            let keep: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
            let stale: Vec<String> = self
                .checks
                .values()
                .filter(|c| c.def.service_id == service.id && !keep.contains(&c.def.id.as_str()))
                .filter(|c| c.def.kind != CheckKind::Maintenance)
                .map(|c| c.def.id.clone())
                .collect();
            for id in stale {
                self.checks.remove(&id);
            }
        }
        let mut service = service;
        service.create_index = 0;
        service.modify_index = 0;
        self.services.insert(service.id.clone(), service);
        for c in checks {
            self.add_check(now, c)?;
        }
        Ok(())
    }

    /// Remove a service and its checks. Returns whether it was registered.
    pub fn remove_service(&mut self, id: &str) -> bool {
        if self.services.remove(id).is_none() {
            return false;
        }
        self.checks.retain(|_, c| c.def.service_id != id);
        true
    }

    /// Register (or replace) a check. A replaced check keeps its status if its kind is unchanged.
    pub fn add_check(&mut self, now: Instant, def: CheckDef) -> Result<(), AgentError> {
        if def.id.is_empty() {
            return Err(AgentError::BadRequest("Missing check name".into()));
        }
        if !def.service_id.is_empty() && !self.services.contains_key(&def.service_id) {
            return Err(AgentError::NotFound(format!(
                "ServiceID {:?} does not exist",
                def.service_id
            )));
        }
        validate_kind(&def.kind)?;
        let previous = self.checks.get(&def.id).filter(|c| c.def.kind == def.kind);
        let (status, output) = match previous {
            Some(p) => (p.status, p.output.clone()),
            None => (def.initial_status, String::new()),
        };
        let ttl_deadline = match def.kind {
            CheckKind::Ttl { ttl } => Some(previous.and_then(|p| p.ttl_deadline).unwrap_or(now + ttl)),
            _ => None,
        };
        let critical_since = (status == CheckStatus::Critical).then_some(now);
        self.checks.insert(
            def.id.clone(),
            LocalCheck {
                def,
                status,
                output,
                successes: 0,
                failures: 0,
                ttl_deadline,
                critical_since: previous.and_then(|p| p.critical_since).or(critical_since),
            },
        );
        Ok(())
    }

    pub fn remove_check(&mut self, id: &str) -> bool {
        self.checks.remove(id).is_some()
    }

    /// `/v1/agent/check/{pass,warn,fail,update}`: set a TTL check's status and restart its TTL.
    pub fn update_ttl(&mut self, now: Instant, id: &str, status: CheckStatus, output: &str) -> Result<(), AgentError> {
        let Some(check) = self.checks.get_mut(id) else {
            return Err(AgentError::NotFound(format!(
                "CheckID {id:?} does not have associated TTL"
            )));
        };
        let CheckKind::Ttl { ttl } = check.def.kind else {
            return Err(AgentError::BadRequest(format!(
                "CheckID {id:?} does not have associated TTL"
            )));
        };
        check.ttl_deadline = Some(now + ttl);
        set_status(check, now, status, truncate(output));
        Ok(())
    }

    /// A result of an HTTP/TCP/script run, through the anti-flap thresholds. Unknown checks are ignored
    /// (the check was removed while it ran).
    pub fn check_result(&mut self, now: Instant, id: &str, status: CheckStatus, output: &str) {
        let Some(check) = self.checks.get_mut(id) else {
            return;
        };
        let output = truncate(output);
        if status == CheckStatus::Passing {
            check.failures = 0;
            check.successes = check.successes.saturating_add(1);
            if check.successes >= check.def.success_before_passing {
                set_status(check, now, status, output);
            } else {
                check.output = output;
            }
        } else {
            check.successes = 0;
            check.failures = check.failures.saturating_add(1);
            if check.failures >= check.def.failures_before_critical {
                set_status(check, now, status, output);
            } else {
                check.output = output;
            }
        }
    }

    /// Node maintenance on or off (an injected critical check, as Consul does).
    pub fn set_node_maintenance(&mut self, now: Instant, enable: bool, reason: &str) {
        if !enable {
            self.checks.remove(NODE_MAINTENANCE_CHECK);
            return;
        }
        let def = maintenance_check(NODE_MAINTENANCE_CHECK.into(), "Node Maintenance Mode", "", reason);
        let _ = self.add_check(now, def);
    }

    pub fn set_service_maintenance(
        &mut self,
        now: Instant,
        id: &str,
        enable: bool,
        reason: &str,
    ) -> Result<(), AgentError> {
        if !self.services.contains_key(id) {
            return Err(AgentError::NotFound(format!("No service registered with ID {id:?}")));
        }
        let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{id}");
        if !enable {
            self.checks.remove(&check_id);
            return Ok(());
        }
        self.add_check(now, maintenance_check(check_id, "Service Maintenance Mode", id, reason))
    }

    /// Fire what is due: TTL expiries turn critical; services critical for longer than their check's
    /// `deregister_critical_service_after` are removed. Returns whether anything changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for check in self.checks.values_mut() {
            if check.ttl_deadline.is_some_and(|d| d <= now) {
                check.ttl_deadline = None;
                if check.status != CheckStatus::Critical || !check.output.starts_with("TTL expired") {
                    set_status(check, now, CheckStatus::Critical, "TTL expired".into());
                    changed = true;
                }
            }
        }
        let reap: Vec<String> = self
            .checks
            .values()
            .filter(|c| !c.def.service_id.is_empty())
            .filter(|c| match (c.def.deregister_critical_service_after, c.critical_since) {
                (Some(after), Some(since)) => c.status == CheckStatus::Critical && since + after <= now,
                _ => false,
            })
            .map(|c| c.def.service_id.clone())
            .collect();
        for id in reap {
            changed |= self.remove_service(&id);
        }
        changed
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.checks
            .values()
            .flat_map(|c| {
                let reap = match (c.def.deregister_critical_service_after, c.critical_since) {
                    (Some(after), Some(since)) if c.status == CheckStatus::Critical => Some(since + after),
                    _ => None,
                };
                [c.ttl_deadline, reap]
            })
            .flatten()
            .min()
    }

    pub fn services(&self) -> &BTreeMap<String, ServiceInstance> {
        &self.services
    }

    pub fn checks(&self) -> &BTreeMap<String, LocalCheck> {
        &self.checks
    }

    /// The checks as the catalog (and `/v1/agent/checks`) shows them.
    pub fn health_check(&self, c: &LocalCheck) -> HealthCheck {
        let svc = self.services.get(&c.def.service_id);
        let mut definition = CheckDefinition {
            interval_ns: c.def.interval.as_nanos() as u64,
            timeout_ns: c.def.timeout.as_nanos() as u64,
            deregister_critical_service_after_ns: c
                .def
                .deregister_critical_service_after
                .map_or(0, |d| d.as_nanos() as u64),
            ..CheckDefinition::default()
        };
        match &c.def.kind {
            CheckKind::Http {
                url,
                method,
                header,
                body,
                tls_skip_verify,
                tls_server_name,
            } => {
                definition.http = url.clone();
                definition.method = method.clone();
                definition.header = header.clone();
                definition.body = body.clone();
                definition.tls_skip_verify = *tls_skip_verify;
                definition.tls_server_name = tls_server_name.clone();
            }
            CheckKind::Tcp { address } => definition.tcp = address.clone(),
            CheckKind::Grpc {
                target,
                use_tls,
                tls_skip_verify,
                tls_server_name,
            } => {
                definition.grpc = target.clone();
                definition.grpc_use_tls = *use_tls;
                definition.tls_skip_verify = *tls_skip_verify;
                definition.tls_server_name = tls_server_name.clone();
            }
            CheckKind::Alias { node, service_id } => {
                definition.alias_node = node.clone();
                definition.alias_service = service_id.clone();
            }
            CheckKind::Docker {
                container_id, shell, ..
            } => {
                definition.docker_container_id = container_id.clone();
                definition.shell = shell.clone();
            }
            CheckKind::Ttl { .. } | CheckKind::Script { .. } | CheckKind::Maintenance => {}
        }
        HealthCheck {
            node: self.node.name.clone(),
            check_id: c.def.id.clone(),
            name: c.def.name.clone(),
            status: c.status,
            notes: c.def.notes.clone(),
            output: c.output.clone(),
            service_id: c.def.service_id.clone(),
            service_name: svc.map(|s| s.service.clone()).unwrap_or_default(),
            service_tags: svc.map(|s| s.tags.clone()).unwrap_or_default(),
            check_type: c.def.kind.type_name().into(),
            definition,
            create_index: 0,
            modify_index: 0,
        }
    }

    /// The aggregated status of a service's checks (node checks included, as Consul's agent health
    /// endpoints do): critical beats warning beats passing. `None` for an unknown service.
    pub fn service_health(&self, id: &str) -> Option<(CheckStatus, Vec<HealthCheck>)> {
        self.services.get(id)?;
        let checks: Vec<HealthCheck> = self
            .checks
            .values()
            .filter(|c| c.def.service_id == id || c.def.service_id.is_empty())
            .map(|c| self.health_check(c))
            .collect();
        let worst = checks
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| match s {
                CheckStatus::Passing => 0,
                CheckStatus::Warning => 1,
                CheckStatus::Critical => 2,
            })
            .unwrap_or(CheckStatus::Passing);
        Some((worst, checks))
    }

    /// The services anti-entropy syncs, by folded ID: the catalog holds one service per folded ID, so of
    /// local IDs that differ only in case the first in ID order is synced (the server's `consul` service
    /// before any local one) and the others are shadowed, with their checks.
    fn synced_services(&self) -> BTreeMap<String, ServiceInstance> {
        let mut out = BTreeMap::new();
        if let Some(port) = self.server_port {
            let consul = ServiceInstance {
                id: CONSUL_SERVICE.into(),
                service: CONSUL_SERVICE.into(),
                port: u32::from(port),
                ..ServiceInstance::default()
            };
            out.insert(CONSUL_SERVICE.to_string(), consul);
        }
        for svc in self.services.values() {
            out.entry(fold(&svc.id).into_owned()).or_insert_with(|| svc.clone());
        }
        out
    }

    /// The rows the catalog should hold for this node: (node, services, checks), at most one service and
    /// one check per folded ID (see [`LocalAgent::synced_services`]).
    fn desired(&self) -> (Registration, Vec<ServiceInstance>, Vec<HealthCheck>) {
        let node = Registration {
            id: self.node.id.clone(),
            node: self.node.name.clone(),
            address: self.node.address.clone(),
            datacenter: self.node.datacenter.clone(),
            tagged_addresses: self.node.tagged_addresses.clone(),
            node_meta: self.node.meta.clone(),
            ..Registration::default()
        };
        let services = self.synced_services();
        // `serfHealth` is not ours: the Raft leader writes it from gossip (crate::reconcile).
        let mut checks: BTreeMap<String, HealthCheck> = BTreeMap::new();
        for c in self.checks.values() {
            let service = &c.def.service_id;
            let shadowed = !service.is_empty() && services.get(&*fold(service)).is_none_or(|s| s.id != *service);
            if !shadowed {
                checks
                    .entry(fold(&c.def.id).into_owned())
                    .or_insert_with(|| self.health_check(c));
            }
        }
        (node, services.into_values().collect(), checks.into_values().collect())
    }

    /// Anti-entropy: the writes that make the catalog's rows for this node (`node`, `services`, `checks`
    /// as read from the catalog) match the local state. Services with `EnableTagOverride` adopt the
    /// catalog's tags instead of overwriting them (this updates the local service).
    pub fn sync_plan(
        &mut self,
        now: Instant,
        node: Option<&CatalogNode>,
        services: &[ServiceInstance],
        checks: &[HealthCheck],
    ) -> Vec<Command> {
        let synced = self.synced_services();
        for remote in services {
            let Some(id) = synced.get(&*fold(&remote.id)).map(|s| &s.id) else {
                continue;
            };
            if let Some(local) = self.services.get_mut(id) {
                if local.enable_tag_override && local.service == remote.service {
                    local.tags = remote.tags.clone();
                }
            }
        }
        let (reg, want_services, want_checks) = self.desired();
        let mut out = Vec::new();
        let node_ok = node.is_some_and(|n| {
            n.id == reg.id
                && n.address == reg.address
                && n.tagged_addresses == reg.tagged_addresses
                && n.meta == reg.node_meta
                && n.datacenter == reg.datacenter
        });
        let dereg = |service_id: Option<&str>, check_id: Option<&str>| Command::CatalogDeregister {
            node: reg.node.clone(),
            service_id: service_id.map(String::from),
            check_id: check_id.map(String::from),
        };
        // A row whose ID folds to a synced one is that entry's (registering it rewrites the row's case):
        // deleting it would only undo the registration.
        for c in checks {
            let ours = want_checks.iter().any(|w| same_name(&w.check_id, &c.check_id));
            if !ours && !same_name(&c.check_id, SERF_HEALTH) {
                out.push(dereg(None, Some(&c.check_id)));
            }
        }
        for s in services {
            if !want_services.iter().any(|w| same_name(&w.id, &s.id)) {
                out.push(dereg(Some(&s.id), None));
            }
        }
        let written_at = &self.written_at;
        let interval = self.check_update_interval;
        let same_check = |want: &HealthCheck| {
            let output_may_wait = written_at.get(&want.check_id).is_some_and(|at| now < *at + interval);
            checks.iter().any(|have| {
                let mut have = have.clone();
                have.create_index = 0;
                have.modify_index = 0;
                have.service_name.clone_from(&want.service_name);
                have.service_tags.clone_from(&want.service_tags);
                if output_may_wait {
                    have.output.clone_from(&want.output);
                }
                have == *want
            })
        };
        for svc in &want_services {
            let in_sync = services.iter().any(|have| {
                let mut have = have.clone();
                have.create_index = 0;
                have.modify_index = 0;
                have == *svc
            });
            let stale_checks: Vec<HealthCheck> = want_checks
                .iter()
                .filter(|c| c.service_id == svc.id && !same_check(c))
                .cloned()
                .collect();
            if in_sync && stale_checks.is_empty() {
                continue;
            }
            out.push(Command::CatalogRegister(Box::new(Registration {
                skip_node_update: node_ok,
                service: Some(svc.clone()),
                checks: stale_checks,
                ..reg.clone()
            })));
        }
        let node_checks: Vec<HealthCheck> = want_checks
            .iter()
            .filter(|c| c.service_id.is_empty() && !same_check(c))
            .cloned()
            .collect();
        // The node row itself goes with the first registration; alone if nothing else is due.
        let registers = out.iter().any(|c| matches!(c, Command::CatalogRegister(_)));
        if !node_checks.is_empty() || (!node_ok && !registers) {
            out.push(Command::CatalogRegister(Box::new(Registration {
                skip_node_update: node_ok,
                checks: node_checks,
                ..reg.clone()
            })));
        }
        for cmd in &out {
            if let Command::CatalogRegister(r) = cmd {
                for c in &r.checks {
                    self.written_at.insert(c.check_id.clone(), now);
                }
            }
        }
        let checks = &self.checks;
        self.written_at.retain(|id, _| checks.contains_key(id));
        out
    }

    /// What to persist so a restart keeps services, checks, and check states (TTL status until it
    /// expires). `now` turns TTL deadlines into remaining microseconds.
    pub fn snapshot(&self, now: Instant) -> LocalSnapshot {
        LocalSnapshot {
            services: self
                .services
                .values()
                .filter(|s| !self.config_services.contains(&s.id))
                .cloned()
                .collect(),
            checks: self
                .checks
                .values()
                .map(|c| SavedCheck {
                    def: c.def.clone(),
                    status: c.status,
                    output: c.output.clone(),
                    ttl_left_us: c.ttl_deadline.map(|d| d.as_micros().saturating_sub(now.as_micros())),
                    from_config: self.config_checks.contains(&c.def.id),
                })
                .collect(),
        }
    }

    /// Load a [`LocalAgent::snapshot`] taken before a restart, after the config files' definitions were
    /// registered (and marked): those win over saved definitions with the same ID and get the saved state
    /// if their kind is unchanged. Entries that no longer validate are skipped.
    pub fn restore(&mut self, now: Instant, snapshot: LocalSnapshot) {
        for s in snapshot.services {
            if !s.service.is_empty() && !self.config_services.contains(&s.id) {
                self.services.insert(s.id.clone(), s);
            }
        }
        for saved in snapshot.checks {
            let id = saved.def.id.clone();
            let defined_now = self.config_checks.contains(&id);
            if saved.from_config && !defined_now {
                continue; // removed from the files
            }
            if !defined_now && self.add_check(now, saved.def.clone()).is_err() {
                continue;
            }
            let Some(c) = self.checks.get_mut(&id).filter(|c| c.def.kind == saved.def.kind) else {
                continue;
            };
            c.status = saved.status;
            c.output = saved.output;
            c.critical_since = (saved.status == CheckStatus::Critical).then_some(now);
            if let Some(left) = saved.ttl_left_us {
                c.ttl_deadline = Some(now + Duration::from_micros(left));
            }
        }
    }
}

fn validate_kind(kind: &CheckKind) -> Result<(), AgentError> {
    match kind {
        CheckKind::Ttl { ttl } if ttl.is_zero() => Err(AgentError::BadRequest("TTL must be > 0 for TTL checks".into())),
        CheckKind::Script { args } if args.is_empty() => Err(AgentError::BadRequest("Args must not be empty".into())),
        CheckKind::Docker { container_id, args, .. } if container_id.is_empty() || args.is_empty() => Err(
            AgentError::BadRequest("Docker checks need DockerContainerID and Args".into()),
        ),
        CheckKind::Alias { node, service_id } if node.is_empty() && service_id.is_empty() => Err(
            AgentError::BadRequest("Alias checks need AliasNode or AliasService".into()),
        ),
        CheckKind::Grpc { target, .. } if target.is_empty() => {
            Err(AgentError::BadRequest("GRPC must not be empty".into()))
        }
        _ => Ok(()),
    }
}

fn maintenance_check(id: String, name: &str, service_id: &str, reason: &str) -> CheckDef {
    let what = if service_id.is_empty() { "node" } else { "service" };
    let notes = if reason.is_empty() {
        format!("Maintenance mode is enabled for this {what}, but no reason was provided. This is a default message.")
    } else {
        reason.to_string()
    };
    CheckDef {
        id,
        name: name.into(),
        notes,
        service_id: service_id.into(),
        kind: CheckKind::Maintenance,
        interval: Duration::ZERO,
        timeout: Duration::ZERO,
        deregister_critical_service_after: None,
        success_before_passing: 0,
        failures_before_critical: 0,
        initial_status: CheckStatus::Critical,
    }
}

fn set_status(check: &mut LocalCheck, now: Instant, status: CheckStatus, output: String) {
    if status == CheckStatus::Critical {
        check.critical_since.get_or_insert(now);
    } else {
        check.critical_since = None;
    }
    check.status = status;
    check.output = output;
}

/// Check output is capped at 4 KiB, as Consul's default `output_max_size`.
pub const MAX_OUTPUT: usize = 4096;

fn truncate(output: &str) -> String {
    if output.len() <= MAX_OUTPUT {
        return output.to_string();
    }
    let mut end = MAX_OUTPUT;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    output[..end].to_string()
}
