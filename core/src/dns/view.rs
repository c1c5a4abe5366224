//! The catalog as the DNS server reads it: built once per catalog change from a [`CatalogDump`], then read
//! by every query without touching the state machine.
//!
//! Invariants: keys of `nodes` and `services` are lower-case (DNS names compare case-insensitively);
//! every instance's `node` is a key of `nodes`; an instance's `status` is the worst of its node's checks
//! and its own (Consul's health aggregation: no check at all counts as passing).
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::state::{fold, CatalogDump, CheckStatus, Weights};

/// An address as registered: an IP, or a host name (answered with a CNAME).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Host(String),
}

impl Addr {
    fn parse(s: &str) -> Option<Addr> {
        if s.is_empty() {
            return None;
        }
        Some(match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => Addr::V4(ip),
            Ok(IpAddr::V6(ip)) => Addr::V6(ip),
            Err(_) => Addr::Host(s.to_string()),
        })
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Addr::V4(ip) => Some(IpAddr::V4(*ip)),
            Addr::V6(ip) => Some(IpAddr::V6(*ip)),
            Addr::Host(_) => None,
        }
    }
}

/// A node: its name as registered, its address, and its meta as TXT strings (RFC 1464 `key=value`, or the
/// bare value for `rfc1035-` keys), in key order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeEntry {
    pub name: String,
    pub addr: Option<Addr>,
    pub txt: Vec<String>,
    /// `name` as DNS labels on the wire (length-prefixed, no root), if every dot-separated part is a
    /// plain label (1..=63 ASCII bytes) and the whole stays short enough to be part of an answer name.
    pub(crate) wire: Option<Box<[u8]>>,
}

/// See [`NodeEntry::wire`].
fn wire_labels(name: &str) -> Option<Box<[u8]>> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    (out.len() <= 200).then(|| out.into_boxed_slice())
}

/// One instance of a service, with what DNS needs of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// Lower-case key into the view's nodes.
    pub node: String,
    /// The service's address, or the node's if it has none.
    pub addr: Option<Addr>,
    /// The service has an address of its own that differs from its node's (SRV targets `<hex>.addr.`).
    pub own_addr: bool,
    pub port: u16,
    /// Lower-case.
    pub tags: Vec<String>,
    pub status: CheckStatus,
    pub weights: Weights,
    /// The node's entry itself (the one `node` names), so answers need no lookup.
    pub(crate) entry: Arc<NodeEntry>,
}

/// Something a reverse (PTR) lookup can name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PtrTarget {
    /// `<node>.node.<dc>.<domain>`
    Node(String),
    /// `<service>.service.<dc>.<domain>`
    Service(String),
}

/// The DNS server's read-only view of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsView {
    nodes: BTreeMap<String, Arc<NodeEntry>>,
    services: BTreeMap<String, Vec<Instance>>,
    /// Nodes by address, then (if no node has it) services by their own address.
    by_ip: BTreeMap<IpAddr, Vec<PtrTarget>>,
}

/// Consul's RFC 1464 encoding of a meta pair: `` ` `` escapes `` ` `` and `=` in the key.
fn rfc1464(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 1);
    for c in key.chars() {
        if c == '`' || c == '=' {
            out.push('`');
        }
        out.push(c);
    }
    out.push('=');
    out.push_str(value);
    out
}

fn worse(a: CheckStatus, b: CheckStatus) -> CheckStatus {
    let rank = |s| match s {
        CheckStatus::Passing => 0,
        CheckStatus::Warning => 1,
        CheckStatus::Critical => 2,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

impl DnsView {
    pub fn build(dump: &CatalogDump) -> DnsView {
        let mut view = DnsView::default();
        for node in &dump.nodes {
            let txt = node
                .meta
                .iter()
                .map(|(k, v)| {
                    if k.to_ascii_lowercase().starts_with("rfc1035-") {
                        v.clone()
                    } else {
                        rfc1464(k, v)
                    }
                })
                .collect();
            let addr = Addr::parse(&node.address);
            if let Some(ip) = addr.as_ref().and_then(Addr::ip) {
                view.by_ip
                    .entry(ip)
                    .or_default()
                    .push(PtrTarget::Node(node.node.clone()));
            }
            view.nodes.insert(
                node.node.to_ascii_lowercase(),
                Arc::new(NodeEntry {
                    name: node.node.clone(),
                    addr,
                    txt,
                    wire: wire_labels(&node.node),
                }),
            );
        }
        // (folded node name, folded service ID or "" for node checks) → worst status. A check's row keeps
        // the node name's and service ID's case it was registered with, which may differ from the rows'.
        let mut health: BTreeMap<(Cow<'_, str>, Cow<'_, str>), CheckStatus> = BTreeMap::new();
        for check in &dump.checks {
            let at = health
                .entry((fold(&check.node), fold(&check.service_id)))
                .or_insert(CheckStatus::Passing);
            *at = worse(*at, check.status);
        }
        let mut service_ptrs: BTreeMap<IpAddr, Vec<PtrTarget>> = BTreeMap::new();
        for (node_name, svc) in &dump.services {
            let node_key = node_name.to_ascii_lowercase();
            let Some(node) = view.nodes.get(&node_key) else {
                continue;
            };
            let own = Addr::parse(&svc.address);
            let own_addr = own.is_some() && own != node.addr;
            if let Some(ip) = own.as_ref().and_then(Addr::ip) {
                let target = PtrTarget::Service(svc.service.clone());
                let at = service_ptrs.entry(ip).or_default();
                if !at.contains(&target) {
                    at.push(target);
                }
            }
            let folded = fold(node_name);
            let node_status = health.get(&(folded.clone(), Cow::Borrowed(""))).copied();
            let svc_status = health.get(&(folded, fold(&svc.id))).copied();
            let status = worse(
                node_status.unwrap_or(CheckStatus::Passing),
                svc_status.unwrap_or(CheckStatus::Passing),
            );
            let instance = Instance {
                node: node_key,
                addr: own.or_else(|| node.addr.clone()),
                own_addr,
                port: u16::try_from(svc.port).unwrap_or(0),
                tags: svc.tags.iter().map(|t| t.to_ascii_lowercase()).collect(),
                status,
                weights: svc.weights,
                entry: node.clone(),
            };
            view.services
                .entry(svc.service.to_ascii_lowercase())
                .or_default()
                .push(instance);
        }
        for (ip, targets) in service_ptrs {
            view.by_ip.entry(ip).or_insert(targets);
        }
        view
    }

    /// A node by lower-case name.
    pub fn node(&self, lower: &str) -> Option<&NodeEntry> {
        self.nodes.get(lower).map(|n| &**n)
    }

    /// The instances of a service by lower-case name, in (node, ID) order; empty if unknown.
    pub fn instances(&self, lower: &str) -> &[Instance] {
        self.services.get(lower).map_or(&[], Vec::as_slice)
    }

    /// What a reverse lookup of `ip` names: the nodes with that address, else the services registered
    /// with it.
    pub fn ptr(&self, ip: IpAddr) -> &[PtrTarget] {
        self.by_ip.get(&ip).map_or(&[], Vec::as_slice)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn instance_count(&self) -> usize {
        self.services.values().map(Vec::len).sum()
    }
}
