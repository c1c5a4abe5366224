//! Agent configuration: Go-style command-line flags merged over `-config-file`/`-config-dir` files (JSON
//! and HCL, Consul's key names). Placeholder until the config module lands.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The agent's resolved configuration. Field names follow Consul's config keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub dev: bool,
    pub server: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: Option<usize>,
    /// Required unless `dev` (in-memory).
    pub data_dir: Option<PathBuf>,
    /// Cluster address (`-bind`); `0.0.0.0` resolves to the single private IPv4.
    pub bind_addr: IpAddr,
    /// HTTP/DNS bind addresses (`-client`, space-separated).
    pub client_addr: Vec<IpAddr>,
    pub advertise_addr: Option<IpAddr>,
    pub node_name: String,
    pub node_id: Option<String>,
    pub datacenter: String,
    pub retry_join: Vec<String>,
    pub retry_interval: Duration,
    pub ports: Ports,
    pub log_level: String,
    pub ui: bool,
    pub enable_script_checks: bool,
    pub domain: String,
    /// `performance.raft_multiplier`: scales Raft timing (1 = fastest, Consul's production recommendation).
    pub raft_multiplier: u32,
    pub default_query_time: Duration,
    pub max_query_time: Duration,
    /// `limits.kv_max_value_size` (bytes).
    pub kv_max_value_size: usize,
    pub txn_max_req_len: usize,
    pub http_max_conns_per_client: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub http: u16,
    /// -1 disables, as in Consul.
    pub dns: i32,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
}

// --- TEMPORARY STUB (added by the http/cli helper so `concord agent` compiles) ---------------------------
// The config module's real `parse_agent_args` and `ConfigError` replace everything below this line.
/// Why the agent's flags or config files were rejected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Parse `concord agent` arguments (Go-style flags) into an [`AgentConfig`]. Stub: always fails.
pub fn parse_agent_args(_args: &[String]) -> Result<AgentConfig, ConfigError> {
    Err(ConfigError(
        "agent configuration is not implemented yet".to_string(),
    ))
}
