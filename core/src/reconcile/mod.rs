//! The Raft leader's reconciliation of LAN gossip membership into the catalog (Consul's `reconcileMember`
//! and `reconcileReaped` in `agent/consul/leader.go`): every LAN member of this datacenter is a catalog node
//! carrying the cluster-owned `serfHealth` check.
//!
//! - alive member → node registered (`Node`, `ID` from the `id` tag, `Address`, `Datacenter`; an existing
//!   row keeps its tagged addresses and meta, a new one gets `consul-version` from the `build` tag) with
//!   `serfHealth` passing, "Agent alive and reachable"; an existing row is only rewritten when the member's
//!   address or node ID changed (unlike Consul, which rewrites it from a possibly stale read); a new ID
//!   under a failed member's name takes the name over (the catalog refuses it while the old is live);
//! - failed member → `serfHealth` critical, "Agent not live or unreachable", the node row left as it is
//!   (a node the catalog does not know is ignored);
//! - left or reaped member → node deregistered with everything on it, except the leader itself (a new
//!   leader deregisters it later);
//! - a catalog node carrying `serfHealth` that gossip no longer knows at all → deregistered (reaped).
//!
//! Invariant: every function here is pure and idempotent — given the catalog rows it reads, it yields only
//! the writes that change something, so the runtime can run it on every membership change, on every gain of
//! leadership and periodically, and a repeated or missed event is repaired by the next run.

#[cfg(test)]
mod tests;

use crate::agent::SERF_HEALTH;
use crate::gossip::{Member, MemberStatus};
use crate::state::{fold, same_name, CatalogNode, CheckStatus, Command, HealthCheck, Registration};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// `structs.SerfCheckName`.
pub const SERF_CHECK_NAME: &str = "Serf Health Status";
/// `structs.SerfCheckAliveOutput`.
pub const SERF_ALIVE_OUTPUT: &str = "Agent alive and reachable";
/// `structs.SerfCheckFailedOutput`.
pub const SERF_FAILED_OUTPUT: &str = "Agent not live or unreachable";

/// Who is reconciling: the leader's node name and datacenter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reconciler {
    pub node_name: String,
    pub datacenter: String,
}

/// What the catalog holds about one member's node.
#[derive(Clone, Copy, Debug, Default)]
pub struct CatalogRows<'a> {
    pub node: Option<&'a CatalogNode>,
    pub serf_health: Option<&'a HealthCheck>,
}

impl Reconciler {
    /// Consul's `shouldHandleMember`: agents (role `node`) and servers (role `consul`) of our datacenter.
    pub fn handles(&self, member: &Member) -> bool {
        let tag = |k: &str| member.tags.get(k).map(String::as_str);
        matches!(tag("role"), Some("node" | "consul")) && tag("dc") == Some(self.datacenter.as_str())
    }

    /// The write (if any) that makes `rows` reflect `member`'s gossip status.
    pub fn reconcile_member(&self, member: &Member, rows: CatalogRows<'_>) -> Option<Command> {
        if !self.handles(member) {
            return None;
        }
        match member.status {
            MemberStatus::Alive => self.alive(member, rows),
            MemberStatus::Failed => self.failed(member, rows),
            MemberStatus::Left => self.deregister(&member.name, rows),
            // Consul does nothing while a member is leaving; its leave completes as `Left`.
            MemberStatus::Leaving => None,
        }
    }

    /// A member gossip forgot (reaped after `reconnect_timeout`, or force-left with prune).
    pub fn reconcile_reaped(&self, name: &str, rows: CatalogRows<'_>) -> Option<Command> {
        self.deregister(name, rows)
    }

    /// Every write a full reconciliation makes: each member handled, then every catalog node that carries
    /// `serfHealth` but that gossip does not know, reaped. `nodes` and `checks` are the whole catalog's.
    pub fn reconcile_all(&self, members: &[Member], nodes: &[CatalogNode], checks: &[HealthCheck]) -> Vec<Command> {
        // By folded name: the catalog's node names are case-insensitive, and a check row keeps the case of
        // the name it was registered under.
        let nodes: BTreeMap<Cow<'_, str>, &CatalogNode> = nodes.iter().map(|n| (fold(&n.node), n)).collect();
        let serf: BTreeMap<Cow<'_, str>, &HealthCheck> = checks
            .iter()
            .filter(|c| c.check_id == SERF_HEALTH && c.service_id.is_empty())
            .map(|c| (fold(&c.node), c))
            .collect();
        let rows = |name: &str| CatalogRows {
            node: nodes.get(&fold(name)).copied(),
            serf_health: serf.get(&fold(name)).copied(),
        };
        let mut out: Vec<Command> = members
            .iter()
            .filter_map(|m| self.reconcile_member(m, rows(&m.name)))
            .collect();
        let known: BTreeSet<Cow<'_, str>> = members.iter().map(|m| fold(&m.name)).collect();
        for (key, check) in serf.iter().filter(|(n, _)| !known.contains(*n)) {
            out.extend(self.reconcile_reaped(&check.node, rows(key)));
        }
        out
    }

    fn alive(&self, member: &Member, rows: CatalogRows<'_>) -> Option<Command> {
        let addr = member.addr.ip().to_string();
        let id = member.tags.get("id").cloned().unwrap_or_default();
        // A node ID the catalog does not have yet is a new agent taking over the name of a failed one.
        let node_ok = rows
            .node
            .is_some_and(|n| n.address == addr && (id.is_empty() || n.id == id));
        let passing = rows.serf_health.is_some_and(|c| c.status == CheckStatus::Passing);
        if node_ok && passing {
            return None;
        }
        let mut node_meta = BTreeMap::new();
        if let Some(build) = member.tags.get("build") {
            // `1.17.0:concord-0.1.0` → `1.17.0` (Consul's `metadata.Build` keeps the version part).
            let version = build.split(':').next().unwrap_or_default();
            node_meta.insert("consul-version".to_string(), version.to_string());
        }
        let mut reg = Registration {
            id,
            node: member.name.clone(),
            address: addr,
            datacenter: self.datacenter.clone(),
            node_meta,
            checks: vec![serf_health(member, CheckStatus::Passing, SERF_ALIVE_OUTPUT)],
            ..Registration::default()
        };
        if let Some(existing) = rows.node {
            reg.tagged_addresses = existing.tagged_addresses.clone();
            reg.node_meta = existing.meta.clone();
        }
        // Only a node at a new address needs its row rewritten. Otherwise the row is left as it is when
        // this write applies: the agent's anti-entropy may have written it (with its meta and tagged
        // addresses) after our read, and a stale copy must not clobber that. A row still missing is created.
        // (The catalog rewrites the row anyway when the node ID changed.)
        reg.skip_node_update = rows.node.is_none_or(|n| n.address == reg.address);
        Some(Command::CatalogRegister(Box::new(reg)))
    }

    fn failed(&self, member: &Member, rows: CatalogRows<'_>) -> Option<Command> {
        let node = rows.node?;
        let addr = member.addr.ip().to_string();
        let critical = rows.serf_health.is_some_and(|c| c.status == CheckStatus::Critical);
        if node.address == addr && critical {
            return None;
        }
        Some(Command::CatalogRegister(Box::new(Registration {
            id: member.tags.get("id").cloned().unwrap_or_default(),
            node: member.name.clone(),
            address: addr,
            datacenter: self.datacenter.clone(),
            // Whatever the catalog knows about the node stays as it is.
            skip_node_update: true,
            checks: vec![serf_health(member, CheckStatus::Critical, SERF_FAILED_OUTPUT)],
            ..Registration::default()
        })))
    }

    fn deregister(&self, name: &str, rows: CatalogRows<'_>) -> Option<Command> {
        // The leader never deregisters itself: it may be on its way out, and the next leader does it.
        if same_name(name, &self.node_name) || rows.node.is_none() {
            return None;
        }
        Some(Command::CatalogDeregister {
            node: name.to_string(),
            service_id: None,
            check_id: None,
        })
    }
}

fn serf_health(member: &Member, status: CheckStatus, output: &str) -> HealthCheck {
    HealthCheck {
        node: member.name.clone(),
        check_id: SERF_HEALTH.to_string(),
        name: SERF_CHECK_NAME.to_string(),
        status,
        output: output.to_string(),
        ..HealthCheck::default()
    }
}
