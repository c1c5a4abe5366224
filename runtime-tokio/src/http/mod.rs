//! TEMPORARY stand-in for the http branch (same public shapes), so the agent builds before it lands.
//! Replaced wholesale by the http branch's module at merge.

use concord_core::api::{Request, Response};
use concord_core::node::NodeStatus;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

pub const CONSUL_COMPAT_VERSION: &str = "1.21.0";

pub trait Backend: Clone + Send + Sync + 'static {
    fn call(&self, req: Request) -> impl Future<Output = Response> + Send;
    fn agent_self(&self) -> impl Future<Output = AgentSelf> + Send;
    fn leave(&self) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentPorts {
    pub http: u16,
    pub dns: i32,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AgentSelf {
    pub datacenter: String,
    pub node_name: String,
    pub node_id: String,
    pub server: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: usize,
    pub bind_addr: IpAddr,
    pub advertise_addr: IpAddr,
    pub client_addrs: Vec<IpAddr>,
    pub ports: AgentPorts,
    pub domain: String,
    pub version: String,
    pub concord_version: String,
    pub revision: String,
    pub raft: Option<NodeStatus>,
    pub leader_addr: Option<String>,
    pub known_datacenters: usize,
    pub known_servers: usize,
    pub services: usize,
    pub checks: usize,
    pub extra_stats: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    pub datacenter: String,
    pub kv_max_value_size: usize,
    pub default_query_time: Duration,
    pub max_query_time: Duration,
    pub http_max_conns_per_client: usize,
}

pub async fn serve<B: Backend>(
    listeners: Vec<tokio::net::TcpListener>,
    _backend: B,
    _settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    shutdown.await;
    drop(listeners);
    Ok(())
}
