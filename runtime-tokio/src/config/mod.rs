//! Agent configuration, written exactly as a Consul user writes it: Go-style command-line flags
//! (`concord agent -server -bootstrap-expect=3 -data-dir /var/lib/concord …`) merged over `-config-file` /
//! `-config-dir` files in JSON or HCL with Consul's key names.
//!
//! Invariants of this module:
//! - Sources are applied in Consul's order: built-in defaults, then the `-dev` overlay, then config files in
//!   the order given on the command line (a directory contributes its `.json`/`.hcl` files alphabetically,
//!   not recursively), then the flags last.
//! - Merge rule (Consul's): scalars are replaced by later sources, lists are appended, maps merge key by key.
//! - Every source is checked on its own before merging, so an unknown key or a value of the wrong type is
//!   reported with the file (or "command line") it came from.
//! - Every error is one line that says what to fix ([`ConfigError`]).
//! - Keys that Consul accepts but concord does not implement are accepted with a warning
//!   ([`AgentConfig::warnings`]) rather than rejected, so an existing Consul config still starts; keys that
//!   Consul itself does not know are errors, as in Consul.

mod flags;
mod source;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;

pub use flags::agent_usage;

/// The agent's resolved configuration. Field names follow Consul's config keys.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub dev: bool,
    pub server: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: Option<usize>,
    /// Required unless `dev` (in-memory).
    pub data_dir: Option<PathBuf>,
    /// Cluster address (`-bind`). Kept exactly as written: `0.0.0.0` is resolved later by the agent to the
    /// single private IPv4 address of the host (an error if there are several), as Consul does.
    pub bind_addr: IpAddr,
    /// HTTP/DNS bind addresses (`-client`, space-separated).
    pub client_addr: Vec<IpAddr>,
    pub advertise_addr: Option<IpAddr>,
    pub node_name: String,
    /// Validated as a 36-character UUID (`concord_core::NodeId`); `None` means "generate and persist".
    pub node_id: Option<String>,
    pub datacenter: String,
    /// `-retry-join`, `-join`, `retry_join` and `start_join`, in that merge order.
    pub retry_join: Vec<String>,
    /// `-retry-join-wan`, `retry_join_wan` and `start_join_wan` (servers' WAN pool).
    pub retry_join_wan: Vec<String>,
    pub retry_interval: Duration,
    pub ports: Ports,
    pub log_level: String,
    pub ui: bool,
    pub enable_script_checks: bool,
    /// Lower-case, fully qualified (`consul.`).
    pub domain: String,
    /// `performance.raft_multiplier`: scales Raft timing (1 = fastest, Consul's production recommendation).
    ///
    /// Modern Consul defaults to 5 (tuned for tiny cloud instances). concord's base timings are already
    /// conservative, so concord keeps 1 as its default; set `performance { raft_multiplier = 5 }` to slow
    /// elections further.
    pub raft_multiplier: u32,
    /// `raft_snapshot_threshold`: a periodic check snapshots if this many entries were applied since the
    /// last snapshot (16384).
    pub raft_snapshot_threshold: u64,
    /// `raft_snapshot_interval`: how often that check runs, plus up to as much again at random (30s).
    pub raft_snapshot_interval: Duration,
    /// `raft_trailing_logs`: entries kept after a snapshot for lagging followers (10240).
    pub raft_trailing_logs: u64,
    pub default_query_time: Duration,
    pub max_query_time: Duration,
    /// `consul { coordinate { update_period, update_batch_size, update_max_batches } }` (Consul's internal
    /// block; defaults 5s, 128, 5): how the leader batches coordinate updates into the log.
    pub coordinate_update_period: Duration,
    pub coordinate_update_batch_size: usize,
    pub coordinate_update_max_batches: usize,
    /// `sync_coordinate_rate_target` (64) and `sync_coordinate_interval_min` (15s): every agent sends its
    /// coordinate every `lib.RateScaledInterval(rate, min, LAN members)` plus a random stagger.
    pub sync_coordinate_rate_target: f64,
    pub sync_coordinate_interval_min: Duration,
    /// `limits.kv_max_value_size` (bytes).
    pub kv_max_value_size: usize,
    pub txn_max_req_len: usize,
    /// `limits.http_max_body_size` (bytes): cap on the JSON bodies of the catalog and agent endpoints.
    /// concord's own option (Consul has none); 1 MiB by default.
    pub http_max_body_size: usize,
    pub http_max_conns_per_client: usize,
    /// `http_config.read_header_timeout`: a client must send a request head within this.
    pub http_read_header_timeout: Duration,
    /// `http_config.write_timeout`: a client must take an answer within this.
    pub http_write_timeout: Duration,
    /// `http_config.max_header_bytes`: the largest request head (0 in a file means Go's default, 1 MiB).
    pub http_max_header_bytes: usize,

    pub enable_local_script_checks: bool,
    /// Lower-case, fully qualified, if set.
    pub alt_domain: Option<String>,
    /// DNS recursors (`-recursor`, `recursors`), as written (`ip` or `ip:port`).
    pub recursors: Vec<String>,
    /// Base64 gossip key (16, 24 or 32 bytes once decoded).
    pub encrypt: Option<String>,
    /// `-rejoin` / `rejoin_after_leave`.
    pub rejoin_after_leave: bool,
    pub node_meta: BTreeMap<String, String>,
    pub pid_file: Option<PathBuf>,
    /// Only 3 is supported, as in current Consul.
    pub raft_protocol: u8,
    pub disable_host_node_id: bool,
    /// Consul's default: true for clients, false for servers.
    pub leave_on_terminate: bool,
    /// Consul's default: true for servers, false for clients.
    pub skip_leave_on_interrupt: bool,
    pub disable_update_check: bool,
    /// `dns_config { … }`, kept raw for the DNS server to interpret.
    pub dns_config: Option<serde_json::Value>,
    /// `service`/`services` definitions from config files, raw, in merge order.
    pub services: Vec<serde_json::Value>,
    /// `check`/`checks` definitions from config files, raw, in merge order.
    pub checks: Vec<serde_json::Value>,
    /// `acl { … }`, kept raw.
    pub acl: Option<serde_json::Value>,
    /// The config files that were read, in the order they were merged.
    pub config_files: Vec<PathBuf>,
    /// Things the user should know but that do not stop the agent (Consul logs these as warnings).
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    /// 0 picks a free port (useful in tests).
    pub http: u16,
    /// -1 disables, as in Consul.
    pub dns: i32,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
    /// -1 disables (Consul's default); accepted for compatibility.
    pub grpc: i32,
    /// -1 disables (Consul's default); accepted for compatibility.
    pub https: i32,
}

impl Default for Ports {
    /// Consul's defaults: 8500, 8600, 8300, 8301, 8302, gRPC and HTTPS off.
    fn default() -> Self {
        Ports {
            http: 8500,
            dns: 8600,
            server: 8300,
            serf_lan: 8301,
            serf_wan: 8302,
            grpc: -1,
            https: -1,
        }
    }
}

impl Default for AgentConfig {
    /// Consul's built-in defaults (client mode, no data dir, node name = host name).
    fn default() -> Self {
        AgentConfig {
            dev: false,
            server: false,
            bootstrap: false,
            bootstrap_expect: None,
            data_dir: None,
            bind_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            client_addr: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            advertise_addr: None,
            node_name: host_name(),
            node_id: None,
            datacenter: "dc1".to_string(),
            retry_join: Vec::new(),
            retry_join_wan: Vec::new(),
            retry_interval: Duration::from_secs(30),
            ports: Ports::default(),
            log_level: "info".to_string(),
            ui: false,
            enable_script_checks: false,
            domain: "consul.".to_string(),
            raft_multiplier: 1,
            raft_snapshot_threshold: 16384,
            raft_snapshot_interval: Duration::from_secs(30),
            raft_trailing_logs: 10240,
            default_query_time: Duration::from_secs(300),
            max_query_time: Duration::from_secs(600),
            coordinate_update_period: Duration::from_secs(5),
            coordinate_update_batch_size: 128,
            coordinate_update_max_batches: 5,
            sync_coordinate_rate_target: crate::agent::coordinate::SYNC_COORDINATE_RATE_TARGET,
            sync_coordinate_interval_min: crate::agent::coordinate::SYNC_COORDINATE_INTERVAL_MIN,
            kv_max_value_size: 524_288,
            txn_max_req_len: 524_288,
            http_max_body_size: 1_048_576,
            http_max_conns_per_client: 200,
            http_read_header_timeout: crate::http::DEFAULT_READ_HEADER_TIMEOUT,
            http_write_timeout: crate::http::DEFAULT_WRITE_TIMEOUT,
            http_max_header_bytes: crate::http::DEFAULT_MAX_HEADER_BYTES,
            enable_local_script_checks: false,
            alt_domain: None,
            recursors: Vec::new(),
            encrypt: None,
            rejoin_after_leave: false,
            node_meta: BTreeMap::new(),
            pid_file: None,
            raft_protocol: 3,
            disable_host_node_id: true,
            leave_on_terminate: true,
            skip_leave_on_interrupt: false,
            disable_update_check: false,
            dns_config: None,
            services: Vec::new(),
            checks: Vec::new(),
            acl: None,
            config_files: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

impl AgentConfig {
    /// Consul's `-dev` overlay on top of the defaults: an in-memory server that bootstraps itself, bound
    /// to loopback, UI on, debug logging. Config files and flags still override it.
    fn dev_defaults() -> Self {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        AgentConfig {
            dev: true,
            server: true,
            bootstrap: true,
            bind_addr: loopback,
            client_addr: vec![loopback],
            ui: true,
            log_level: "debug".to_string(),
            leave_on_terminate: false,
            skip_leave_on_interrupt: true,
            ..AgentConfig::default()
        }
    }
}

/// The host name from `/proc/sys/kernel/hostname`, or `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A configuration the agent cannot start with. `Display` is one line telling the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Help(String),
    #[error("flag provided but not defined: -{0} (run `concord agent -help` for the list of flags)")]
    UnknownFlag(String),
    #[error("bad flag syntax: {0:?} (flags look like -name, -name=value or -name value)")]
    BadFlagSyntax(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    BadFlagValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("unexpected argument {0:?}: `concord agent` takes only flags (options go before any argument)")]
    UnexpectedArgument(String),
    #[error("cannot read config {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path} has no .json or .hcl extension: rename it or pass -config-format=json|hcl")]
    UnknownFormat { path: PathBuf },
    #[error("invalid -config-format {0:?}: use json or hcl")]
    BadConfigFormat(String),
    #[error("cannot parse {format} config {path}: {reason}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{origin}: unknown config key {key:?} (check the spelling against Consul's agent configuration)")]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: config key {key:?} must be {want}")]
    BadType {
        origin: String,
        key: String,
        want: &'static str,
    },
    #[error("{origin}: invalid value for {key:?}: {reason}")]
    BadValue {
        origin: String,
        key: String,
        reason: String,
    },
    #[error("data_dir is required: pass -data-dir <path> (or -dev for an in-memory agent)")]
    DataDirRequired,
    #[error("data_dir {0} exists and is not a directory: point -data-dir at a directory")]
    DataDirNotDirectory(PathBuf),
    #[error("-bootstrap and -bootstrap-expect cannot be used together: keep only one of them")]
    BootstrapWithExpect,
    #[error("-bootstrap requires -server: only a server can bootstrap the cluster")]
    BootstrapWithoutServer,
    #[error("-bootstrap-expect requires -server: only servers take part in bootstrapping")]
    BootstrapExpectWithoutServer,
    #[error("-bootstrap-expect must be at least 1 (the number of servers to wait for)")]
    BootstrapExpectZero,
    #[error("-bootstrap-expect cannot be used with -dev: a dev agent always bootstraps alone")]
    DevWithBootstrapExpect,
    #[error("node_name cannot be empty: pass -node <name>")]
    EmptyNodeName,
    #[error("invalid node_id {0:?}: use a 36-character UUID such as 0b6c5b1e-0d4a-4a6e-9b8c-2f1d3c4e5a6b")]
    BadNodeId(String),
    #[error("invalid encrypt key: {0} (generate one with `openssl rand -base64 32`)")]
    BadEncryptKey(String),
}

/// Where a configuration came from; used in error messages.
pub(crate) const COMMAND_LINE: &str = "command line";

/// Parses what follows `concord agent`: flags, then the config files and directories they name, merged in
/// Consul's order and validated.
pub fn parse_agent_args(args: &[String]) -> Result<AgentConfig, ConfigError> {
    let parsed = flags::parse(args)?;
    let mut merged = serde_json::Map::new();
    let mut files = Vec::new();
    for path in &parsed.config_paths {
        for (file, value) in source::load_path(path, parsed.config_format)? {
            source::check(&value, &file.display().to_string())?;
            source::merge(&mut merged, value);
            files.push(file);
        }
    }
    let flag_values = source::normalize(parsed.values);
    source::check(&flag_values, COMMAND_LINE)?;
    source::merge(&mut merged, flag_values);
    let mut config = from_merged(&merged, parsed.dev)?;
    config.config_files = files;
    Ok(config)
}

/// The configuration one file's text gives on its own (`format`: `json` or `hcl`), as
/// `concord agent -config-file <file>` would read it. The entry point for fuzzing the config parsers.
pub fn parse_config_text(text: &str, format: &str) -> Result<AgentConfig, ConfigError> {
    let path = std::path::Path::new("<text>");
    let format = source::Format::from_name(format).ok_or_else(|| ConfigError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let value = source::parse_text(text, format, path)?;
    source::check(&value, "<text>")?;
    let mut merged = serde_json::Map::new();
    source::merge(&mut merged, value);
    from_merged(&merged, false)
}

/// Defaults, then the merged sources, then Consul's cross-key rules.
fn from_merged(merged: &serde_json::Map<String, serde_json::Value>, dev: bool) -> Result<AgentConfig, ConfigError> {
    let mut config = if dev {
        AgentConfig::dev_defaults()
    } else {
        AgentConfig::default()
    };
    // Consul's leave defaults follow the final server mode unless a source sets them explicitly.
    let explicit_leave = merged.contains_key("leave_on_terminate");
    let explicit_skip = merged.contains_key("skip_leave_on_interrupt");
    source::apply(&mut config, merged, "merged config")?;
    if !explicit_leave {
        config.leave_on_terminate = !config.server;
    }
    if !explicit_skip {
        config.skip_leave_on_interrupt = config.server;
    }
    validate(&mut config)?;
    Ok(config)
}

/// Cross-key rules, in the order Consul checks them.
fn validate(config: &mut AgentConfig) -> Result<(), ConfigError> {
    match &config.data_dir {
        None if !config.dev => return Err(ConfigError::DataDirRequired),
        Some(dir) if dir.exists() && !dir.is_dir() => return Err(ConfigError::DataDirNotDirectory(dir.clone())),
        _ => {}
    }
    if let Some(expect) = config.bootstrap_expect {
        if expect == 0 {
            return Err(ConfigError::BootstrapExpectZero);
        }
        if config.dev {
            return Err(ConfigError::DevWithBootstrapExpect);
        }
        if config.bootstrap {
            return Err(ConfigError::BootstrapWithExpect);
        }
        if !config.server {
            return Err(ConfigError::BootstrapExpectWithoutServer);
        }
        if expect == 1 {
            config
                .warnings
                .push("bootstrap_expect = 1 is the same as -bootstrap: bootstrapping alone".into());
            config.bootstrap = true;
            config.bootstrap_expect = None;
        }
    }
    if config.bootstrap && !config.server {
        return Err(ConfigError::BootstrapWithoutServer);
    }
    validate_node_name(config)?;
    if let Some(id) = &config.node_id {
        concord_core::NodeId::from_str(id).map_err(|_| ConfigError::BadNodeId(id.clone()))?;
    }
    if let Some(key) = &config.encrypt {
        validate_encrypt(key)?;
    }
    let dns = crate::dns::DnsSettings::from_agent(config).map_err(|reason| ConfigError::BadValue {
        origin: "merged config".into(),
        key: "dns_config".into(),
        reason,
    })?;
    config.warnings.extend(dns.warnings);
    Ok(())
}

/// Consul refuses an empty name and warns about names DNS cannot serve.
fn validate_node_name(config: &mut AgentConfig) -> Result<(), ConfigError> {
    let name = &config.node_name;
    if name.is_empty() {
        return Err(ConfigError::EmptyNodeName);
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        config.warnings.push(format!(
            "node name {name:?} will not be discoverable via DNS due to invalid characters; \
             valid characters are alphanumerics and dashes"
        ));
    } else if name.len() > 63 {
        config.warnings.push(format!(
            "node name {name:?} will not be discoverable via DNS because it is longer than 63 characters"
        ));
    }
    Ok(())
}

fn validate_encrypt(key: &str) -> Result<(), ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| ConfigError::BadEncryptKey("not valid base64".into()))?;
    match bytes.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(ConfigError::BadEncryptKey(format!(
            "decodes to {n} bytes, want 16, 24 or 32"
        ))),
    }
}
