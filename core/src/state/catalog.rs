//! The service catalog (Consul's `nodes`, `services` and `checks` tables, `agent/consul/state/catalog.go`).
//!
//! Invariants:
//! - Every row carries `CreateIndex`/`ModifyIndex` = the Raft index of the write that created/last changed
//!   it; a re-registration identical to the stored row changes nothing (no index bump, no wake-up).
//! - Every service and every check belongs to a node in `nodes`; a service check's service exists on its
//!   node, and its `ServiceName`/`ServiceTags` mirror that service.
//! - `by_name` indexes exactly the rows of `services` by service name.
//! - Each [`CatalogRange`] has an index: the Raft index of the last write that changed what a read of that
//!   range returns (kept after the rows are gone, like KV tombstones), raised to the reap floor, at least 1.
//!   So a range's index never goes backwards and moves whenever its reads change.
//! - A command is validated completely before anything is written: it applies whole or not at all.
//! - Applying never panics, whatever the command holds.
//! - Node names, service names, service IDs and check IDs are case-insensitive, as Consul's memdb indexes
//!   them (`Lowercase: true` on the nodes' and services' name indexes and on the `ServiceID`/`CheckID` parts
//!   of the services' and checks' ID indexes and the checks' `node_service` index): every map key,
//!   [`CatalogRange`] and fence holds the [`fold`]ed name or ID, while rows keep the case they were last
//!   written with. A service check belongs to the service whose ID folds to its `ServiceID`.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{CoordinateUpdate, DecodeError, SyncSeq};
use crate::agent::SERF_HEALTH;
use crate::coordinate::{Coordinate, MAX_DIMENSIONS};

/// What a catalog read covers, for blocking queries: a watch on a range wakes when a write changes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CatalogRange {
    /// `/catalog/services`: the set of service names and their tags.
    Services,
    /// `/catalog/nodes`: every node.
    Nodes,
    /// `/catalog/service/:name`, `/health/service/:name`, `/health/checks/:name`: the instances of one
    /// service, their nodes, and their checks (node checks included). Names are [`fold`]ed (build with
    /// [`CatalogRange::service`]).
    Service(String),
    /// `/catalog/node/:node`, `/health/node/:node`: one node, its services and checks. Names are [`fold`]ed
    /// (build with [`CatalogRange::node`]).
    Node(String),
    /// `/health/state/:state`: every check.
    Checks,
    /// Every row (the DNS server's catalog view): changes with any catalog write (coordinates aside).
    All,
    /// `/coordinate/nodes`, `/coordinate/node/:node`: the nodes' network coordinates.
    Coordinates,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CheckStatus {
    Passing,
    Warning,
    /// Consul's default for a new check.
    #[default]
    Critical,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
        }
    }

    /// Parse Consul's lowercase status names (`maintenance` is how the API names an injected critical).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(CheckStatus::Passing),
            "warning" => Some(CheckStatus::Warning),
            "critical" | "maintenance" => Some(CheckStatus::Critical),
            _ => None,
        }
    }
}

/// A node row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogNode {
    /// The node's UUID (may be empty for catalog-only "external" nodes).
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub address: String,
    pub port: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    /// Consul's default weights.
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// A service instance on a node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInstance {
    pub id: String,
    pub service: String,
    /// `""` for a typical service; `connect-proxy`, … otherwise.
    pub kind: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: u32,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

/// How a check runs, as recorded in the catalog (`Definition`). Durations in nanoseconds, as Go keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDefinition {
    pub http: String,
    pub method: String,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: String,
    pub tls_server_name: String,
    pub tls_skip_verify: bool,
    pub tcp: String,
    pub interval_ns: u64,
    pub timeout_ns: u64,
    pub deregister_critical_service_after_ns: u64,
    /// `host:port[/service]` of a gRPC health check.
    pub grpc: String,
    pub grpc_use_tls: bool,
    pub alias_node: String,
    pub alias_service: String,
    pub docker_container_id: String,
    pub shell: String,
}

/// A check row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub node: String,
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    /// `""` for a node-level check.
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    /// `ttl`, `http`, `tcp`, `script`, … (`""` for catalog-only checks).
    pub check_type: String,
    pub definition: CheckDefinition,
    pub create_index: u64,
    pub modify_index: u64,
}

/// `PUT /v1/catalog/register` (also what anti-entropy sends): a node, optionally one service, and checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    /// Leave an existing node row as it is (a node missing from the catalog is still created).
    pub skip_node_update: bool,
    /// Indexes in it are ignored.
    pub service: Option<ServiceInstance>,
    /// Indexes, `node`, `service_name` and `service_tags` in them are filled in by the store.
    pub checks: Vec<HealthCheck>,
}

/// One entry of `/health/service/:name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckServiceNode {
    pub node: CatalogNode,
    pub service: ServiceInstance,
    /// The node's checks, then the service's, each in check-ID order.
    pub checks: Vec<HealthCheck>,
}

/// A read of the catalog or of health, as the HTTP endpoints ask it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogQuery {
    /// `/catalog/services`
    Services,
    /// `/catalog/nodes`
    Nodes,
    /// `/catalog/service/:name?tag=` (every tag must be present, case-insensitively as in Consul)
    Service { name: String, tags: Vec<String> },
    /// `/catalog/node/:node`, `/catalog/node-services/:node`
    Node { node: String },
    /// `/health/service/:name?tag=&passing`
    HealthService {
        name: String,
        tags: Vec<String>,
        passing: bool,
    },
    /// `/health/checks/:service`
    HealthChecks { service: String },
    /// `/health/node/:node`
    HealthNode { node: String },
    /// `/health/state/:state`; `None` = `any`.
    HealthState { status: Option<CheckStatus> },
    /// Every node, service instance and check: the view the DNS server answers from.
    All,
    /// `/coordinate/nodes`: every node's coordinate, in node order.
    Coordinates,
}

/// The catalog's key for a node or service name: lower-cased (Go's `strings.ToLower`, as memdb's
/// `Lowercase` indexes), borrowed when it already is (no allocation on the common path).
pub fn fold(name: &str) -> Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return Cow::Borrowed(name);
    }
    let lower = name.to_lowercase();
    if lower == name {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(lower)
    }
}

/// Whether two node or service names (or two service or check IDs) are the same to the catalog.
pub fn same_name(a: &str, b: &str) -> bool {
    a == b || fold(a) == fold(b)
}

/// The catalog's key of service or check `id` on node `node`: both [`fold`]ed.
fn row_key(node: &str, id: &str) -> RowKey {
    (fold(node).into_owned(), fold(id).into_owned())
}

impl CatalogRange {
    /// The range of node `name` (any case).
    pub fn node(name: &str) -> CatalogRange {
        CatalogRange::Node(fold(name).into_owned())
    }

    /// The range of service `name` (any case).
    pub fn service(name: &str) -> CatalogRange {
        CatalogRange::Service(fold(name).into_owned())
    }
}

impl CatalogQuery {
    /// The range whose changes can change this read's answer.
    pub fn range(&self) -> CatalogRange {
        match self {
            CatalogQuery::Services => CatalogRange::Services,
            CatalogQuery::Nodes => CatalogRange::Nodes,
            CatalogQuery::Service { name, .. }
            | CatalogQuery::HealthService { name, .. }
            | CatalogQuery::HealthChecks { service: name } => CatalogRange::service(name),
            CatalogQuery::Node { node } | CatalogQuery::HealthNode { node } => CatalogRange::node(node),
            CatalogQuery::HealthState { .. } => CatalogRange::Checks,
            CatalogQuery::All => CatalogRange::All,
            CatalogQuery::Coordinates => CatalogRange::Coordinates,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogResult {
    /// Service name → union of its instances' tags (sorted, deduplicated).
    Services(BTreeMap<String, Vec<String>>),
    Nodes(Vec<CatalogNode>),
    /// (node, instance) pairs, in node then service-ID order.
    ServiceNodes(Vec<(CatalogNode, ServiceInstance)>),
    /// The node and its services in ID order; `None` when the node is unknown.
    Node(Option<Box<(CatalogNode, Vec<ServiceInstance>)>>),
    Checks(Vec<HealthCheck>),
    CheckServiceNodes(Vec<CheckServiceNode>),
    All(Box<CatalogDump>),
    /// (node, coordinate) in node order.
    Coordinates(Vec<(String, Coordinate)>),
}

/// The whole catalog (`CatalogQuery::All`): nodes in name order, (node, instance) pairs and checks in
/// (node, ID) order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDump {
    pub nodes: Vec<CatalogNode>,
    pub services: Vec<(String, ServiceInstance)>,
    pub checks: Vec<HealthCheck>,
}

/// Why a catalog write was refused (nothing was written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CatalogError {
    #[error("Must provide node")]
    MissingNode,
    #[error("Must provide address")]
    MissingAddress,
    #[error("Must provide service name")]
    MissingServiceName,
    #[error("Must provide check ID or name")]
    MissingCheckId,
    /// Consul's `ensureNoNodeWithSimilarNameTxn`: the name belongs to a live node (its `serfHealth` is not
    /// critical) with another node ID. `renaming` is `" (<address>)"` when the ID moves from another name.
    #[error("failed inserting node: Error while renaming Node ID: \"{id}\"{renaming}: Node name {node} is reserved by node {holder_id} with name {node} ({holder_address})")]
    NodeIdConflict {
        id: String,
        renaming: String,
        node: String,
        holder_id: String,
        holder_address: String,
    },
    #[error("Missing service registration")]
    MissingService,
    #[error("Missing node registration")]
    MissingNodeRegistration,
    #[error("check {0:?} belongs to another node")]
    CheckNodeMismatch(String),
    /// A fenced anti-entropy write of round `seq` for `node`, which already had round `applied` applied: a
    /// late write of an abandoned round, ignored.
    #[error(
        "stale anti-entropy write for node {node:?}: sync round {seq} is older than round {applied}, already applied"
    )]
    StaleSync {
        node: String,
        seq: SyncSeq,
        applied: SyncSeq,
    },
}

type RowKey = (String, String);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogStore {
    /// Folded node name → node.
    nodes: BTreeMap<String, CatalogNode>,
    /// (folded node name, folded service ID) → instance.
    services: BTreeMap<RowKey, ServiceInstance>,
    /// (folded node name, folded check ID) → check.
    checks: BTreeMap<RowKey, HealthCheck>,
    /// Folded service name → (folded node name, folded service ID) of its instances.
    by_name: BTreeMap<String, BTreeSet<RowKey>>,
    /// Range → Raft index of the last change to it.
    indexes: BTreeMap<CatalogRange, u64>,
    /// Highest reap: range indexes at or below it were forgotten, so every range reports at least this.
    reap_floor: u64,
    /// Folded node name → (last anti-entropy round applied for it, the Raft index that applied it). Kept
    /// after the node is gone (a late write must not bring it back either) until a reap passes the node's
    /// last change.
    fences: BTreeMap<String, (SyncSeq, u64)>,
    /// Folded node name → its network coordinate (only for nodes in `nodes`; removed with the node).
    coordinates: BTreeMap<String, Coordinate>,
}

/// Snapshot format 1 of the catalog (no fences).
#[derive(Serialize, Deserialize)]
struct CatalogSnapshotV1 {
    nodes: Vec<CatalogNode>,
    services: Vec<(String, ServiceInstance)>,
    checks: Vec<HealthCheck>,
    indexes: Vec<(CatalogRange, u64)>,
    reap_floor: u64,
}

#[derive(Serialize, Deserialize)]
struct CatalogSnapshot {
    nodes: Vec<CatalogNode>,
    services: Vec<(String, ServiceInstance)>,
    checks: Vec<HealthCheck>,
    indexes: Vec<(CatalogRange, u64)>,
    reap_floor: u64,
    fences: Vec<(String, SyncSeq, u64)>,
    coordinates: Vec<(String, Coordinate)>,
}

/// The changes one write makes, collected then stamped with its index.
struct Touched<'a> {
    ranges: &'a mut Vec<CatalogRange>,
}

impl Touched<'_> {
    fn add(&mut self, range: CatalogRange) {
        if !self.ranges.contains(&range) {
            self.ranges.push(range);
        }
    }
}

impl CatalogStore {
    /// `catalog/register`: validate, then upsert node, service and checks. Pushes every range it changed.
    pub fn register(
        &mut self,
        index: u64,
        reg: &Registration,
        changed: &mut Vec<CatalogRange>,
    ) -> Result<(), CatalogError> {
        self.validate(reg)?;
        let mut touched = Touched { ranges: changed };
        let start = touched.ranges.len();
        if let Some(old) = self.renamed_from(reg).map(str::to_string) {
            // The node ID moved to a new name: the old name goes, with everything on it (Consul).
            self.remove_node(&old, &mut touched);
        }
        let key = fold(&reg.node);
        let node_exists = self.nodes.contains_key(&*key);
        let new_id = !reg.address.is_empty()
            && self
                .nodes
                .get(&*key)
                .is_some_and(|n| !reg.id.is_empty() && n.id != reg.id);
        if !reg.skip_node_update || !node_exists || new_id {
            self.upsert_node(index, reg, &mut touched);
        }
        if let Some(svc) = &reg.service {
            self.upsert_service(index, &reg.node, svc, &mut touched);
        }
        for check in &reg.checks {
            self.upsert_check(index, &reg.node, check, &mut touched);
        }
        self.stamp(index, &mut touched, start);
        Ok(())
    }

    fn validate(&self, reg: &Registration) -> Result<(), CatalogError> {
        if reg.node.is_empty() {
            return Err(CatalogError::MissingNode);
        }
        let key = fold(&reg.node);
        if reg.address.is_empty() && !(reg.skip_node_update && self.nodes.contains_key(&*key)) {
            return Err(CatalogError::MissingAddress);
        }
        if let Some((holder, renaming)) = self.name_reserved(reg) {
            return Err(CatalogError::NodeIdConflict {
                id: reg.id.clone(),
                renaming: if renaming {
                    format!(" ({})", reg.address)
                } else {
                    String::new()
                },
                node: reg.node.clone(),
                holder_id: holder.id.clone(),
                holder_address: holder.address.clone(),
            });
        }
        if let Some(svc) = &reg.service {
            if svc.service.is_empty() {
                return Err(CatalogError::MissingServiceName);
            }
        }
        for check in &reg.checks {
            if check.check_id.is_empty() {
                return Err(CatalogError::MissingCheckId);
            }
            if !check.node.is_empty() && !same_name(&check.node, &reg.node) {
                return Err(CatalogError::CheckNodeMismatch(check.check_id.clone()));
            }
            if !check.service_id.is_empty() {
                let in_reg = reg
                    .service
                    .as_ref()
                    .is_some_and(|s| same_name(&s.id, &check.service_id));
                let stored = self.services.contains_key(&row_key(&key, &check.service_id));
                if !in_reg && !stored {
                    return Err(CatalogError::MissingService);
                }
            }
        }
        Ok(())
    }

    /// Consul's `ensureNodeTxn` rules for node IDs: the node already holding `reg.node` under another ID, if
    /// it is live (its `serfHealth` exists and is not critical), reserves the name — a failed node's name,
    /// or that of a node without `serfHealth` (registered externally), may be taken over by a new ID. When
    /// the ID already belongs to a node under another name (a rename, flagged `true`), even an ID-less
    /// live holder reserves the name.
    fn name_reserved(&self, reg: &Registration) -> Option<(&CatalogNode, bool)> {
        if reg.id.is_empty() {
            return None;
        }
        let holder = self.nodes.get(&*fold(&reg.node)).filter(|n| n.id != reg.id)?;
        let renaming = self.renamed_from(reg).is_some();
        let live = self
            .checks
            .get(&row_key(&reg.node, SERF_HEALTH))
            .is_some_and(|c| c.status != CheckStatus::Critical);
        (live && (renaming || !holder.id.is_empty())).then_some((holder, renaming))
    }

    /// The other name `reg.id` is registered under, if any (the node is being renamed).
    fn renamed_from(&self, reg: &Registration) -> Option<&str> {
        if reg.id.is_empty() {
            return None;
        }
        self.nodes
            .values()
            .find(|n| n.id == reg.id && !same_name(&n.node, &reg.node))
            .map(|n| n.node.as_str())
    }

    fn upsert_node(&mut self, index: u64, reg: &Registration, touched: &mut Touched) {
        let mut row = CatalogNode {
            id: reg.id.clone(),
            node: reg.node.clone(),
            address: reg.address.clone(),
            datacenter: reg.datacenter.clone(),
            tagged_addresses: reg.tagged_addresses.clone(),
            meta: reg.node_meta.clone(),
            create_index: index,
            modify_index: index,
        };
        let key = fold(&reg.node).into_owned();
        if let Some(old) = self.nodes.get(&key) {
            row.create_index = old.create_index;
            row.modify_index = old.modify_index;
            if *old == row {
                return;
            }
            row.modify_index = index;
            // Coordinates are listed under the node's name as the node row has it.
            if old.node != row.node && self.coordinates.contains_key(&key) {
                touched.add(CatalogRange::Coordinates);
            }
        }
        self.nodes.insert(key, row);
        self.node_touched(&reg.node, touched);
    }

    /// Ranges that show a node's row: the node lists, the node, and every service on it.
    fn node_touched(&self, node: &str, touched: &mut Touched) {
        touched.add(CatalogRange::Nodes);
        touched.add(CatalogRange::node(node));
        for (_, svc) in self.node_services_iter(node) {
            touched.add(CatalogRange::service(&svc.service));
        }
    }

    fn upsert_service(&mut self, index: u64, node: &str, svc: &ServiceInstance, touched: &mut Touched) {
        let key = row_key(node, &svc.id);
        let node = key.0.clone();
        let mut row = svc.clone();
        row.create_index = index;
        row.modify_index = index;
        let old = self.services.get(&key).cloned();
        if let Some(old) = &old {
            row.create_index = old.create_index;
            row.modify_index = old.modify_index;
            if *old == row {
                return;
            }
            row.modify_index = index;
            if old.service != row.service || old.tags != row.tags {
                touched.add(CatalogRange::Services);
            }
            touched.add(CatalogRange::service(&old.service));
            self.unindex_service(&key, &old.service);
        } else {
            touched.add(CatalogRange::Services);
        }
        touched.add(CatalogRange::service(&row.service));
        touched.add(CatalogRange::Node(node.clone()));
        self.by_name
            .entry(fold(&row.service).into_owned())
            .or_default()
            .insert(key.clone());
        let (name, tags) = (row.service.clone(), row.tags.clone());
        self.services.insert(key, row);
        // Service checks mirror the service's name and tags.
        let mut checks_changed = false;
        let on_node = self
            .checks
            .range_mut((node.clone(), String::new())..)
            .take_while(|((n, _), _)| *n == node);
        for (_, check) in on_node {
            let of_svc = same_name(&check.service_id, &svc.id);
            if of_svc && (check.service_name != name || check.service_tags != tags) {
                check.service_name = name.clone();
                check.service_tags = tags.clone();
                check.modify_index = index;
                checks_changed = true;
            }
        }
        if checks_changed {
            touched.add(CatalogRange::Checks);
        }
    }

    fn unindex_service(&mut self, key: &RowKey, name: &str) {
        let name = fold(name);
        if let Some(keys) = self.by_name.get_mut(&*name) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_name.remove(&*name);
            }
        }
    }

    fn upsert_check(&mut self, index: u64, node: &str, check: &HealthCheck, touched: &mut Touched) {
        let key = row_key(node, &check.check_id);
        let mut row = check.clone();
        row.node = node.to_owned();
        row.service_name.clear();
        row.service_tags.clear();
        if !row.service_id.is_empty() {
            if let Some(svc) = self.services.get(&row_key(node, &row.service_id)) {
                row.service_name = svc.service.clone();
                row.service_tags = svc.tags.clone();
            }
        }
        row.create_index = index;
        row.modify_index = index;
        let old = self.checks.get(&key).cloned();
        if let Some(old) = &old {
            row.create_index = old.create_index;
            row.modify_index = old.modify_index;
            if *old == row {
                return;
            }
            row.modify_index = index;
            self.check_touched(old, touched);
        }
        self.check_touched(&row, touched);
        self.checks.insert(key, row);
    }

    /// Ranges that show a check: all checks, its node, its service — or, for a node check, every service
    /// on the node (their health includes it).
    fn check_touched(&self, check: &HealthCheck, touched: &mut Touched) {
        touched.add(CatalogRange::Checks);
        touched.add(CatalogRange::node(&check.node));
        if check.service_id.is_empty() {
            for (_, svc) in self.node_services_iter(&check.node) {
                touched.add(CatalogRange::service(&svc.service));
            }
        } else if !check.service_name.is_empty() {
            touched.add(CatalogRange::service(&check.service_name));
        }
    }

    /// `catalog/deregister`: the whole node (with its services and checks), one service (with its checks)
    /// or one check. Removing something absent is a no-op, as in Consul.
    pub fn deregister(
        &mut self,
        index: u64,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
        changed: &mut Vec<CatalogRange>,
    ) -> Result<(), CatalogError> {
        if node.is_empty() {
            return Err(CatalogError::MissingNode);
        }
        let mut touched = Touched { ranges: changed };
        let start = touched.ranges.len();
        match (service_id, check_id) {
            (None, None) => self.remove_node(node, &mut touched),
            (service_id, check_id) => {
                if let Some(id) = service_id {
                    self.remove_service(node, id, &mut touched);
                }
                if let Some(id) = check_id {
                    self.remove_check(node, id, &mut touched);
                }
            }
        }
        self.stamp(index, &mut touched, start);
        Ok(())
    }

    fn remove_node(&mut self, node: &str, touched: &mut Touched) {
        let node = fold(node).into_owned();
        if !self.nodes.contains_key(&node) {
            return;
        }
        self.node_touched(&node, touched);
        let ids: Vec<String> = self.node_services_iter(&node).map(|(k, _)| k.1.clone()).collect();
        for id in ids {
            self.remove_service(&node, &id, touched);
        }
        let checks: Vec<String> = self.node_checks_iter(&node).map(|c| c.check_id.clone()).collect();
        for id in checks {
            self.remove_check(&node, &id, touched);
        }
        self.nodes.remove(&node);
        if self.coordinates.remove(&node).is_some() {
            touched.add(CatalogRange::Coordinates);
        }
    }

    /// Store each node's new coordinate; skip nodes not in the catalog and invalid coordinates (Consul skips
    /// unknown nodes too). Only the coordinates range changes (not `All`: no row changed).
    pub fn update_coordinates(&mut self, index: u64, updates: &[CoordinateUpdate], changed: &mut Vec<CatalogRange>) {
        let mut any = false;
        for u in updates {
            let valid = u.coord.is_valid() && !u.coord.vec.is_empty() && u.coord.vec.len() <= MAX_DIMENSIONS;
            let node = fold(&u.node);
            if !valid || !self.nodes.contains_key(&*node) || self.coordinates.get(&*node) == Some(&u.coord) {
                continue;
            }
            self.coordinates.insert(node.into_owned(), u.coord.clone());
            any = true;
        }
        if any {
            if !changed.contains(&CatalogRange::Coordinates) {
                changed.push(CatalogRange::Coordinates);
            }
            let at = self.indexes.entry(CatalogRange::Coordinates).or_insert(0);
            *at = (*at).max(index);
        }
    }

    /// A node's coordinate.
    pub fn coordinate(&self, node: &str) -> Option<&Coordinate> {
        self.coordinates.get(&*fold(node))
    }

    fn remove_service(&mut self, node: &str, id: &str, touched: &mut Touched) {
        let key = row_key(node, id);
        let node = key.0.clone();
        let Some(svc) = self.services.remove(&key) else {
            return;
        };
        self.unindex_service(&key, &svc.service);
        touched.add(CatalogRange::Services);
        touched.add(CatalogRange::service(&svc.service));
        touched.add(CatalogRange::Node(node.clone()));
        let checks: Vec<String> = self
            .node_checks_iter(&node)
            .filter(|c| same_name(&c.service_id, id))
            .map(|c| fold(&c.check_id).into_owned())
            .collect();
        for check in checks {
            if let Some(c) = self.checks.remove(&(node.clone(), check)) {
                touched.add(CatalogRange::Checks);
                touched.add(CatalogRange::service(&c.service_name));
            }
        }
    }

    fn remove_check(&mut self, node: &str, id: &str, touched: &mut Touched) {
        let key = row_key(node, id);
        if let Some(check) = self.checks.get(&key).cloned() {
            self.check_touched(&check, touched);
            self.checks.remove(&key);
        }
    }

    /// A check's status and output changed (anti-entropy of a check result). Absent check: no-op.
    pub fn update_check(
        &mut self,
        index: u64,
        node: &str,
        check_id: &str,
        status: CheckStatus,
        output: &str,
        changed: &mut Vec<CatalogRange>,
    ) {
        let key = row_key(node, check_id);
        let Some(old) = self.checks.get(&key) else {
            return;
        };
        if old.status == status && old.output == output {
            return;
        }
        let mut row = old.clone();
        row.status = status;
        row.output = output.to_owned();
        row.modify_index = index;
        let mut touched = Touched { ranges: changed };
        let start = touched.ranges.len();
        self.check_touched(&row, &mut touched);
        self.checks.insert(key, row);
        self.stamp(index, &mut touched, start);
    }

    /// Stamp every range this write touched (from `start` on) with `index`; any change also changes `All`.
    fn stamp(&mut self, index: u64, touched: &mut Touched, start: usize) {
        if touched.ranges.len() == start {
            return;
        }
        touched.add(CatalogRange::All);
        let all = std::iter::once(&CatalogRange::All);
        for range in touched.ranges[start..].iter().chain(all) {
            let at = self.indexes.entry(range.clone()).or_insert(0);
            *at = (*at).max(index);
        }
    }

    /// Refuse a fenced anti-entropy write of round `seq` for `node` if a later round was applied for it.
    pub fn check_fence(&self, node: &str, seq: SyncSeq) -> Result<(), CatalogError> {
        match self.fences.get(&*fold(node)) {
            Some(&(applied, _)) if applied > seq => Err(CatalogError::StaleSync {
                node: node.to_owned(),
                seq,
                applied,
            }),
            _ => Ok(()),
        }
    }

    /// Round `seq` of `node` applied at `index` (after [`CatalogStore::check_fence`] passed).
    pub fn advance_fence(&mut self, index: u64, node: &str, seq: SyncSeq) {
        let fence = self.fences.entry(fold(node).into_owned()).or_insert((seq, index));
        *fence = (fence.0.max(seq), index);
    }

    /// The last anti-entropy round applied for `node`.
    pub fn fence(&self, node: &str) -> Option<SyncSeq> {
        self.fences.get(&*fold(node)).map(|f| f.0)
    }

    /// Forget the indexes of ranges that are empty now and last changed at or below `up_to` (the floor
    /// keeps their reads at or above what they reported), and the fences of nodes that are gone and whose
    /// last change is at or below `up_to`.
    pub fn reap(&mut self, up_to: u64) {
        let gone: Vec<String> = self
            .fences
            .iter()
            .filter(|(node, (_, at))| {
                let last_change = self
                    .indexes
                    .get(&CatalogRange::Node((*node).clone()))
                    .copied()
                    .unwrap_or(0);
                !self.nodes.contains_key(*node) && *at <= up_to && last_change <= up_to
            })
            .map(|(node, _)| node.clone())
            .collect();
        for node in gone {
            self.fences.remove(&node);
        }
        let keep: Vec<CatalogRange> = self
            .indexes
            .iter()
            .filter(|(range, at)| **at > up_to || !self.range_is_empty(range))
            .map(|(r, _)| r.clone())
            .collect();
        let mut kept = BTreeMap::new();
        for range in keep {
            let at = self.indexes[&range];
            kept.insert(range, at);
        }
        self.indexes = kept;
        self.reap_floor = self.reap_floor.max(up_to);
    }

    fn range_is_empty(&self, range: &CatalogRange) -> bool {
        match range {
            CatalogRange::Services
            | CatalogRange::Nodes
            | CatalogRange::Checks
            | CatalogRange::All
            | CatalogRange::Coordinates => false,
            CatalogRange::Service(name) => !self.by_name.contains_key(name),
            CatalogRange::Node(node) => !self.nodes.contains_key(node),
        }
    }

    /// The index a read of `range` reports (X-Consul-Index): never 0, never backwards.
    pub fn range_index(&self, range: &CatalogRange) -> u64 {
        self.indexes
            .get(range)
            .copied()
            .unwrap_or(0)
            .max(self.reap_floor)
            .max(1)
    }

    /// The services of node `node` (any case).
    fn node_services_iter<'a>(&'a self, node: &str) -> impl Iterator<Item = (&'a RowKey, &'a ServiceInstance)> + 'a {
        let node = fold(node).into_owned();
        self.services
            .range((node.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == node)
    }

    /// The checks of node `node` (any case).
    fn node_checks_iter<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a HealthCheck> + 'a {
        let node = fold(node).into_owned();
        self.checks
            .range((node.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == node)
            .map(|(_, c)| c)
    }

    /// Instances of service `name` carrying every tag of `tags` (case-insensitive), in (node, ID) order.
    fn instances<'a>(
        &'a self,
        name: &str,
        tags: &'a [String],
    ) -> impl Iterator<Item = (&'a CatalogNode, &'a ServiceInstance)> + 'a {
        self.by_name
            .get(&*fold(name))
            .into_iter()
            .flatten()
            .filter_map(|key| Some((self.nodes.get(&key.0)?, self.services.get(key)?)))
            .filter(move |(_, svc)| {
                tags.iter()
                    .all(|want| svc.tags.iter().any(|t| t.eq_ignore_ascii_case(want)))
            })
    }

    /// Node `node` (any case).
    pub fn node(&self, node: &str) -> Option<&CatalogNode> {
        self.nodes.get(&*fold(node))
    }

    /// Service `id` (any case) of node `node` (any case).
    pub fn service(&self, node: &str, id: &str) -> Option<&ServiceInstance> {
        self.services.get(&row_key(node, id))
    }

    /// Check `id` (any case) of node `node` (any case).
    pub fn check(&self, node: &str, id: &str) -> Option<&HealthCheck> {
        self.checks.get(&row_key(node, id))
    }

    /// The stored name of the node whose folded name is `key`.
    fn node_name<'a>(&'a self, key: &'a str) -> &'a str {
        self.nodes.get(key).map_or(key, |n| n.node.as_str())
    }

    /// The services and checks registered on `node`, in ID order.
    pub fn node_rows(&self, node: &str) -> (Vec<ServiceInstance>, Vec<HealthCheck>) {
        (
            self.node_services_iter(node).map(|(_, s)| s.clone()).collect(),
            self.node_checks_iter(node).cloned().collect(),
        )
    }

    /// Answer a read: (the index of its range, the result).
    pub fn read(&self, query: &CatalogQuery) -> (u64, CatalogResult) {
        let index = self.range_index(&query.range());
        let result = match query {
            CatalogQuery::Services => {
                // Keyed by the names as registered: Consul's `Services` groups by `ServiceName` exactly, so
                // `web` and `Web` are listed apart although either name finds both.
                let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for keys in self.by_name.values() {
                    for svc in keys.iter().filter_map(|key| self.services.get(key)) {
                        let tags = out.entry(svc.service.clone()).or_default();
                        tags.extend(svc.tags.iter().cloned());
                    }
                }
                CatalogResult::Services(out.into_iter().map(|(n, t)| (n, t.into_iter().collect())).collect())
            }
            CatalogQuery::Nodes => CatalogResult::Nodes(self.nodes.values().cloned().collect()),
            CatalogQuery::Service { name, tags } => CatalogResult::ServiceNodes(
                self.instances(name, tags)
                    .map(|(n, s)| (n.clone(), s.clone()))
                    .collect(),
            ),
            CatalogQuery::Node { node } => CatalogResult::Node(self.node(node).map(|n| {
                let services = self.node_services_iter(node).map(|(_, s)| s.clone()).collect();
                Box::new((n.clone(), services))
            })),
            CatalogQuery::HealthService { name, tags, passing } => {
                let mut out = Vec::new();
                for (node, svc) in self.instances(name, tags) {
                    let checks: Vec<HealthCheck> = self
                        .node_checks_iter(&node.node)
                        .filter(|c| c.service_id.is_empty())
                        .chain(
                            self.node_checks_iter(&node.node)
                                .filter(|c| !c.service_id.is_empty() && same_name(&c.service_id, &svc.id)),
                        )
                        .cloned()
                        .collect();
                    if *passing && checks.iter().any(|c| c.status != CheckStatus::Passing) {
                        continue;
                    }
                    out.push(CheckServiceNode {
                        node: node.clone(),
                        service: svc.clone(),
                        checks,
                    });
                }
                CatalogResult::CheckServiceNodes(out)
            }
            CatalogQuery::HealthChecks { service } => {
                let service = fold(service);
                CatalogResult::Checks(
                    self.checks
                        .values()
                        .filter(|c| !c.service_id.is_empty() && fold(&c.service_name) == service)
                        .cloned()
                        .collect(),
                )
            }
            CatalogQuery::HealthNode { node } => CatalogResult::Checks(self.node_checks_iter(node).cloned().collect()),
            CatalogQuery::HealthState { status } => CatalogResult::Checks(
                self.checks
                    .values()
                    .filter(|c| status.is_none_or(|s| c.status == s))
                    .cloned()
                    .collect(),
            ),
            CatalogQuery::All => CatalogResult::All(Box::new(CatalogDump {
                nodes: self.nodes.values().cloned().collect(),
                services: self
                    .services
                    .iter()
                    .map(|((n, _), s)| (self.node_name(n).to_owned(), s.clone()))
                    .collect(),
                checks: self.checks.values().cloned().collect(),
            })),
            CatalogQuery::Coordinates => CatalogResult::Coordinates(
                self.coordinates
                    .iter()
                    .map(|(n, c)| (self.node_name(n).to_owned(), c.clone()))
                    .collect(),
            ),
        };
        (index, result)
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.indexes.is_empty() && self.reap_floor == 0 && self.fences.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let snapshot = CatalogSnapshot {
            nodes: self.nodes.values().cloned().collect(),
            services: self
                .services
                .iter()
                .map(|((n, _), s)| (self.node_name(n).to_owned(), s.clone()))
                .collect(),
            checks: self.checks.values().cloned().collect(),
            indexes: self.indexes.iter().map(|(r, i)| (r.clone(), *i)).collect(),
            reap_floor: self.reap_floor,
            fences: self.fences.iter().map(|(n, (s, i))| (n.clone(), *s, *i)).collect(),
            coordinates: self
                .coordinates
                .iter()
                .map(|(n, c)| (self.node_name(n).to_owned(), c.clone()))
                .collect(),
        };
        postcard::to_allocvec(&snapshot).expect("a catalog snapshot always encodes")
    }

    /// Decode what [`CatalogStore::encode`] produced (or, for `format` 1, what format 1 wrote), checking the
    /// invariants. Never panics.
    pub fn decode(data: &[u8], format: u8) -> Result<Self, DecodeError> {
        let bad = |m: &str| DecodeError::Snapshot(format!("catalog: {m}"));
        let decoded = if format == 1 {
            postcard::take_from_bytes(data).map(|(v1, rest): (CatalogSnapshotV1, _)| {
                let snapshot = CatalogSnapshot {
                    nodes: v1.nodes,
                    services: v1.services,
                    checks: v1.checks,
                    indexes: v1.indexes,
                    reap_floor: v1.reap_floor,
                    fences: Vec::new(),
                    coordinates: Vec::new(),
                };
                (snapshot, rest)
            })
        } else {
            postcard::take_from_bytes(data)
        };
        let snapshot: CatalogSnapshot = match decoded {
            Ok((snapshot, [])) => snapshot,
            Ok(_) => return Err(bad("trailing bytes")),
            Err(e) => return Err(bad(&e.to_string())),
        };
        let mut store = CatalogStore {
            reap_floor: snapshot.reap_floor,
            ..CatalogStore::default()
        };
        // Snapshots written before names and IDs were case-insensitive may hold names or IDs that differ
        // only in case: they become one row (the most recently modified), the same on every server.
        for node in snapshot.nodes {
            keep_newest(&mut store.nodes, fold(&node.node).into_owned(), node, |n| {
                n.modify_index
            });
        }
        for (node, svc) in snapshot.services {
            let node = fold(&node).into_owned();
            if !store.nodes.contains_key(&node) {
                return Err(bad("service on an unknown node"));
            }
            keep_newest(&mut store.services, row_key(&node, &svc.id), svc, |s| s.modify_index);
        }
        for (key, svc) in &store.services {
            let name = fold(&svc.service).into_owned();
            store.by_name.entry(name).or_default().insert(key.clone());
        }
        for check in snapshot.checks {
            let node = fold(&check.node).into_owned();
            if !store.nodes.contains_key(&node) {
                return Err(bad("check on an unknown node"));
            }
            keep_newest(&mut store.checks, row_key(&node, &check.check_id), check, |c| {
                c.modify_index
            });
        }
        // A service check mirrors the service its ID folds to (after a merge, the surviving one).
        for ((node, _), check) in store.checks.iter_mut() {
            if check.service_id.is_empty() {
                continue;
            }
            if let Some(svc) = store
                .services
                .get(&(node.clone(), fold(&check.service_id).into_owned()))
            {
                check.service_name.clone_from(&svc.service);
                check.service_tags.clone_from(&svc.tags);
            }
        }
        for (range, index) in snapshot.indexes {
            let range = match range {
                CatalogRange::Node(name) => CatalogRange::node(&name),
                CatalogRange::Service(name) => CatalogRange::service(&name),
                other => other,
            };
            let at = store.indexes.entry(range).or_insert(0);
            *at = (*at).max(index);
        }
        for (node, seq, index) in snapshot.fences {
            let fence = store.fences.entry(fold(&node).into_owned()).or_insert((seq, index));
            *fence = (*fence).max((seq, index));
        }
        for (node, coord) in snapshot.coordinates {
            let node = fold(&node).into_owned();
            if !store.nodes.contains_key(&node) {
                return Err(bad("coordinate of an unknown node"));
            }
            store.coordinates.insert(node, coord);
        }
        Ok(store)
    }
}

/// Insert `row` under `key` unless a row already there was modified later.
fn keep_newest<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, row: V, modified: impl Fn(&V) -> u64) {
    match map.get(&key) {
        Some(old) if modified(old) > modified(&row) => {}
        _ => {
            map.insert(key, row);
        }
    }
}
