//! Consul's JSON shapes for catalog and health data, field for field and in Go's struct order
//! (`structs.Node`, `ServiceNode`, `NodeService`, `HealthCheck`, `CheckServiceNode`). Where Consul's
//! handlers turn nil into `[]` (tags, lists) so do we; Go nil maps (a node's `Meta`/`TaggedAddresses`
//! never set) are `null`.

use concord_core::api::format_go_duration;
use concord_core::state::{
    CatalogNode, CheckDefinition, CheckServiceNode, HealthCheck, ServiceAddress, ServiceInstance, Weights,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

fn none_if_empty<K, V>(m: &BTreeMap<K, V>) -> Option<&BTreeMap<K, V>> {
    (!m.is_empty()).then_some(m)
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: Option<&'a BTreeMap<String, String>>,
    meta: Option<&'a BTreeMap<String, String>>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a CatalogNode> for NodeJson<'a> {
    fn from(n: &'a CatalogNode) -> Self {
        NodeJson {
            id: &n.id,
            node: &n.node,
            address: &n.address,
            datacenter: &n.datacenter,
            tagged_addresses: none_if_empty(&n.tagged_addresses),
            meta: none_if_empty(&n.meta),
            create_index: n.create_index,
            modify_index: n.modify_index,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceAddressJson<'a> {
    address: &'a str,
    port: u32,
}

pub(crate) fn tagged_addresses(m: &BTreeMap<String, ServiceAddress>) -> Option<BTreeMap<&str, ServiceAddressJson<'_>>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, a)| {
                (
                    k.as_str(),
                    ServiceAddressJson {
                        address: &a.address,
                        port: a.port,
                    },
                )
            })
            .collect()
    })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WeightsJson {
    passing: u32,
    warning: u32,
}

impl From<Weights> for WeightsJson {
    fn from(w: Weights) -> Self {
        WeightsJson {
            passing: w.passing,
            warning: w.warning,
        }
    }
}

/// `structs.ConnectProxyConfig` of a service that is not a proxy.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ProxyJson {
    mode: &'static str,
    mesh_gateway: Empty,
    expose: Empty,
}

#[derive(Serialize)]
pub(crate) struct Empty {}

const NO_PROXY: ProxyJson = ProxyJson {
    mode: "",
    mesh_gateway: Empty {},
    expose: Empty {},
};

/// `structs.NodeService` (`/catalog/node/:node` services, `/health/service/:s` `Service`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeServiceJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tagged_addresses: Option<BTreeMap<&'a str, ServiceAddressJson<'a>>>,
    meta: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_zero")]
    port: u32,
    weights: WeightsJson,
    enable_tag_override: bool,
    proxy: ProxyJson,
    connect: Empty,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a ServiceInstance> for NodeServiceJson<'a> {
    fn from(s: &'a ServiceInstance) -> Self {
        NodeServiceJson {
            kind: &s.kind,
            id: &s.id,
            service: &s.service,
            tags: &s.tags,
            address: &s.address,
            tagged_addresses: tagged_addresses(&s.tagged_addresses),
            meta: &s.meta,
            port: s.port,
            weights: s.weights.into(),
            enable_tag_override: s.enable_tag_override,
            proxy: NO_PROXY,
            connect: Empty {},
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// `structs.ServiceNode`: one row of `/catalog/service/:name`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceNodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: Option<&'a BTreeMap<String, String>>,
    node_meta: Option<&'a BTreeMap<String, String>>,
    service_kind: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    service_address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_tagged_addresses: Option<BTreeMap<&'a str, ServiceAddressJson<'a>>>,
    service_weights: WeightsJson,
    service_meta: &'a BTreeMap<String, String>,
    service_port: u32,
    service_enable_tag_override: bool,
    service_proxy: ProxyJson,
    service_connect: Empty,
    create_index: u64,
    modify_index: u64,
}

impl<'a> ServiceNodeJson<'a> {
    pub(crate) fn new(n: &'a CatalogNode, s: &'a ServiceInstance) -> Self {
        ServiceNodeJson {
            id: &n.id,
            node: &n.node,
            address: &n.address,
            datacenter: &n.datacenter,
            tagged_addresses: none_if_empty(&n.tagged_addresses),
            node_meta: none_if_empty(&n.meta),
            service_kind: &s.kind,
            service_id: &s.id,
            service_name: &s.service,
            service_tags: &s.tags,
            service_address: &s.address,
            service_tagged_addresses: tagged_addresses(&s.tagged_addresses),
            service_weights: s.weights.into(),
            service_meta: &s.meta,
            service_port: s.port,
            service_enable_tag_override: s.enable_tag_override,
            service_proxy: NO_PROXY,
            service_connect: Empty {},
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

fn go_duration_ns(ns: u64) -> String {
    format_go_duration(Duration::from_nanos(ns))
}

fn duration_or_empty(ns: u64) -> String {
    if ns == 0 {
        String::new()
    } else {
        go_duration_ns(ns)
    }
}

/// `structs.HealthCheckDefinition`: every field `omitempty`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DefinitionJson<'a> {
    #[serde(rename = "HTTP", skip_serializing_if = "str::is_empty")]
    http: &'a str,
    #[serde(rename = "TLSServerName", skip_serializing_if = "str::is_empty")]
    tls_server_name: &'a str,
    #[serde(rename = "TLSSkipVerify", skip_serializing_if = "std::ops::Not::not")]
    tls_skip_verify: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    header: &'a BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "str::is_empty")]
    method: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    body: &'a str,
    #[serde(rename = "TCP", skip_serializing_if = "str::is_empty")]
    tcp: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    interval: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    timeout: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    deregister_critical_service_after: String,
    #[serde(rename = "DockerContainerID", skip_serializing_if = "str::is_empty")]
    docker_container_id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    shell: &'a str,
    #[serde(rename = "GRPC", skip_serializing_if = "str::is_empty")]
    grpc: &'a str,
    #[serde(rename = "GRPCUseTLS", skip_serializing_if = "std::ops::Not::not")]
    grpc_use_tls: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    alias_node: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    alias_service: &'a str,
}

impl<'a> From<&'a CheckDefinition> for DefinitionJson<'a> {
    fn from(d: &'a CheckDefinition) -> Self {
        DefinitionJson {
            http: &d.http,
            tls_server_name: &d.tls_server_name,
            tls_skip_verify: d.tls_skip_verify,
            header: &d.header,
            method: &d.method,
            body: &d.body,
            tcp: &d.tcp,
            interval: duration_or_empty(d.interval_ns),
            timeout: duration_or_empty(d.timeout_ns),
            deregister_critical_service_after: duration_or_empty(d.deregister_critical_service_after_ns),
            docker_container_id: &d.docker_container_id,
            shell: &d.shell,
            grpc: &d.grpc,
            grpc_use_tls: d.grpc_use_tls,
            alias_node: &d.alias_node,
            alias_service: &d.alias_service,
        }
    }
}

/// `structs.HealthCheck`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckJson<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: &'a str,
    status: &'static str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    #[serde(rename = "Type")]
    check_type: &'a str,
    interval: String,
    timeout: String,
    exposed_port: u32,
    definition: DefinitionJson<'a>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a HealthCheck> for CheckJson<'a> {
    fn from(c: &'a HealthCheck) -> Self {
        CheckJson {
            node: &c.node,
            check_id: &c.check_id,
            name: &c.name,
            status: c.status.as_str(),
            notes: &c.notes,
            output: &c.output,
            service_id: &c.service_id,
            service_name: &c.service_name,
            service_tags: &c.service_tags,
            check_type: &c.check_type,
            interval: duration_or_empty(c.definition.interval_ns),
            timeout: duration_or_empty(c.definition.timeout_ns),
            exposed_port: 0,
            definition: (&c.definition).into(),
            create_index: c.create_index,
            modify_index: c.modify_index,
        }
    }
}

/// `structs.CheckServiceNode`: one entry of `/health/service/:name`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckServiceNodeJson<'a> {
    node: NodeJson<'a>,
    service: NodeServiceJson<'a>,
    checks: Vec<CheckJson<'a>>,
}

impl<'a> From<&'a CheckServiceNode> for CheckServiceNodeJson<'a> {
    fn from(e: &'a CheckServiceNode) -> Self {
        CheckServiceNodeJson {
            node: (&e.node).into(),
            service: (&e.service).into(),
            checks: e.checks.iter().map(CheckJson::from).collect(),
        }
    }
}

/// `/catalog/node/:node`: services keyed by ID.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeServicesJson<'a> {
    pub(crate) node: NodeJson<'a>,
    pub(crate) services: BTreeMap<&'a str, NodeServiceJson<'a>>,
}

/// `/catalog/node-services/:node`: services as a list; `Node` null for an unknown node.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct NodeServiceListJson<'a> {
    pub(crate) node: Option<NodeJson<'a>>,
    pub(crate) services: Vec<NodeServiceJson<'a>>,
}
