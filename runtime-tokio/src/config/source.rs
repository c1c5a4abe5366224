//! Config sources: reading JSON/HCL files and directories into JSON objects, Consul's merge rule, and
//! turning a merged object into [`AgentConfig`] fields with errors that name the key and the source.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::{AgentConfig, ConfigError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Json,
    Hcl,
}

impl Format {
    pub(crate) fn from_name(name: &str) -> Option<Format> {
        match name {
            "json" => Some(Format::Json),
            "hcl" => Some(Format::Hcl),
            _ => None,
        }
    }

    fn of_path(path: &Path) -> Option<Format> {
        Format::from_name(path.extension()?.to_str()?)
    }

    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Hcl => "HCL",
        }
    }
}

/// Keys Consul accepts that concord does not act on: accepted with a warning so a Consul config starts.
const IGNORED_KEYS: &[&str] = &[
    "addresses",
    "advertise_addr_wan",
    "auto_encrypt",
    "autopilot",
    "ca_file",
    "cert_file",
    "check_update_interval",
    "connect",
    "disable_remote_exec",
    "enable_debug",
    "enable_syslog",
    "encrypt_verify_incoming",
    "encrypt_verify_outgoing",
    "key_file",
    "log_file",
    "log_json",
    "primary_datacenter",
    "reconnect_timeout",
    "retry_max",
    "server_name",
    "telemetry",
    "tls",
    "translate_wan_addrs",
    "verify_incoming",
    "verify_outgoing",
    "verify_server_hostname",
];

/// Block keys whose value is an object; HCL turns repeated blocks into a list of objects, merged here.
const BLOCK_KEYS: &[&str] = &[
    "ports",
    "limits",
    "performance",
    "ui_config",
    "dns_config",
    "acl",
    "node_meta",
    "consul",
];

/// Reads `-config-file` (one file) or `-config-dir` (its `.json`/`.hcl` files, alphabetically, not
/// recursively; every regular file when `-config-format` is given). Each value is normalized.
pub(super) fn load_path(path: &Path, format: Option<Format>) -> Result<Vec<(PathBuf, Value)>, ConfigError> {
    let read_err = |path: &Path, e: std::io::Error| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
    if !meta.is_dir() {
        let format = format.or_else(|| Format::of_path(path));
        let format = format.ok_or_else(|| ConfigError::UnknownFormat {
            path: path.to_path_buf(),
        })?;
        return Ok(vec![(path.to_path_buf(), load_file(path, format)?)]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| read_err(path, e))? {
        let file = entry.map_err(|e| read_err(path, e))?.path();
        let Some(format) = format.or_else(|| Format::of_path(&file)) else {
            continue;
        };
        if file.is_file() {
            files.push((file, format));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
        .into_iter()
        .map(|(file, format)| Ok((file.clone(), load_file(&file, format)?)))
        .collect()
}

fn load_file(path: &Path, format: Format) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_text(&text, format, path)
}

/// One config file's text (`path` only names it in errors), parsed and normalized.
pub(super) fn parse_text(text: &str, format: Format, path: &Path) -> Result<Value, ConfigError> {
    let parse_err = |reason: String| ConfigError::Parse {
        path: path.to_path_buf(),
        format: format.name(),
        reason,
    };
    let value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        match format {
            Format::Json => serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?,
            Format::Hcl => hcl::from_str(text).map_err(|e| parse_err(one_line(&e.to_string())))?,
        }
    };
    if !value.is_object() {
        return Err(parse_err("the top level must be an object of config keys".into()));
    }
    Ok(normalize(value))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Gives every source the same shape before merging: a single `service`/`check` object becomes a
/// one-element list (so definitions append rather than merge), and a list of block objects (HCL's repeated
/// blocks) becomes one object.
pub(super) fn normalize(mut value: Value) -> Value {
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    for key in ["service", "services", "check", "checks"] {
        if let Some(v) = map.get_mut(key) {
            if v.is_object() {
                *v = Value::Array(vec![v.take()]);
            }
        }
    }
    for key in BLOCK_KEYS {
        if let Some(v) = map.get_mut(*key) {
            if let Some(list) = v.as_array().filter(|l| l.iter().all(Value::is_object)) {
                let mut one = Map::new();
                for item in list.clone() {
                    merge(&mut one, item);
                }
                *v = Value::Object(one);
            }
        }
    }
    value
}

/// Consul's merge rule: scalars are replaced, lists are appended, maps merge key by key.
pub(super) fn merge(into: &mut Map<String, Value>, from: Value) {
    let Value::Object(from) = from else { return };
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => merge(old, Value::Object(new)),
            (Some(Value::Array(old)), Value::Array(new)) => old.extend(new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Checks one source on its own so that errors name the file (or the command line).
pub(super) fn check(value: &Value, origin: &str) -> Result<(), ConfigError> {
    let map = value.as_object().expect("sources are normalized objects");
    apply(&mut AgentConfig::default(), map, origin)
}

/// Typed reads of JSON values, with errors that name the key and the source.
struct Reader<'a> {
    origin: &'a str,
}

impl Reader<'_> {
    fn bad_type(&self, key: &str, want: &'static str) -> ConfigError {
        ConfigError::BadType {
            origin: self.origin.to_string(),
            key: key.to_string(),
            want,
        }
    }

    fn bad_value(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::BadValue {
            origin: self.origin.to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn bool(&self, key: &str, v: &Value) -> Result<bool, ConfigError> {
        v.as_bool().ok_or_else(|| self.bad_type(key, "true or false"))
    }

    fn string(&self, key: &str, v: &Value) -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.bad_type(key, "a string"))
    }

    fn int(&self, key: &str, v: &Value, min: i64, max: i64) -> Result<i64, ConfigError> {
        let n = v.as_i64().ok_or_else(|| self.bad_type(key, "an integer"))?;
        if n < min || n > max {
            return Err(self.bad_value(key, format!("{n} is out of range {min}..={max}")));
        }
        Ok(n)
    }

    fn size(&self, key: &str, v: &Value) -> Result<usize, ConfigError> {
        Ok(self.int(key, v, 1, i64::from(u32::MAX))? as usize)
    }

    fn duration(&self, key: &str, v: &Value) -> Result<Duration, ConfigError> {
        let s = v
            .as_str()
            .ok_or_else(|| self.bad_type(key, "a duration string such as \"30s\""))?;
        concord_core::api::parse_go_duration(s).map_err(|e| self.bad_value(key, e.to_string()))
    }

    fn ip(&self, key: &str, s: &str) -> Result<IpAddr, ConfigError> {
        s.parse().map_err(|_| {
            self.bad_value(
                key,
                format!("{s:?} is not an IP address (go-sockaddr templates are not supported)"),
            )
        })
    }

    /// A list of strings; a single string is accepted as a one-element list.
    fn strings(&self, key: &str, v: &Value) -> Result<Vec<String>, ConfigError> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items.iter().map(|i| self.string(key, i)).collect(),
            _ => Err(self.bad_type(key, "a list of strings")),
        }
    }

    fn object<'v>(&self, key: &str, v: &'v Value) -> Result<&'v Map<String, Value>, ConfigError> {
        v.as_object().ok_or_else(|| self.bad_type(key, "an object"))
    }

    /// A nested block: an object, or (HCL's repeated blocks) a list of objects merged into one.
    fn block(&self, key: &str, v: &Value) -> Result<Map<String, Value>, ConfigError> {
        match v {
            Value::Object(map) => Ok(map.clone()),
            Value::Array(items) if items.iter().all(Value::is_object) => {
                let mut one = Map::new();
                for item in items {
                    merge(&mut one, item.clone());
                }
                Ok(one)
            }
            _ => Err(self.bad_type(key, "an object")),
        }
    }

    fn objects(&self, key: &str, v: &Value) -> Result<Vec<Value>, ConfigError> {
        match v {
            Value::Array(items) if items.iter().all(Value::is_object) => Ok(items.clone()),
            _ => Err(self.bad_type(key, "an object or a list of objects")),
        }
    }

    fn unknown(&self, key: &str) -> ConfigError {
        ConfigError::UnknownKey {
            origin: self.origin.to_string(),
            key: key.to_string(),
        }
    }
}

/// Lower-case and fully qualified, as the DNS server compares names.
fn fqdn(domain: &str) -> String {
    let lower = domain.to_ascii_lowercase();
    if lower.ends_with('.') {
        lower
    } else {
        format!("{lower}.")
    }
}

/// Sets the fields of `config` from one (normalized) config object.
pub(super) fn apply(config: &mut AgentConfig, map: &Map<String, Value>, origin: &str) -> Result<(), ConfigError> {
    let r = Reader { origin };
    for (key, v) in map {
        let k = key.as_str();
        match k {
            "server" => config.server = r.bool(k, v)?,
            "bootstrap" => config.bootstrap = r.bool(k, v)?,
            "bootstrap_expect" => config.bootstrap_expect = Some(r.int(k, v, 0, 1 << 16)? as usize),
            "data_dir" => config.data_dir = Some(PathBuf::from(r.string(k, v)?)),
            "bind_addr" => config.bind_addr = r.ip(k, &r.string(k, v)?)?,
            "client_addr" => {
                let s = r.string(k, v)?;
                config.client_addr = s.split_whitespace().map(|a| r.ip(k, a)).collect::<Result<_, _>>()?;
                if config.client_addr.is_empty() {
                    return Err(r.bad_value(k, "give at least one IP address"));
                }
            }
            "advertise_addr" => config.advertise_addr = Some(r.ip(k, &r.string(k, v)?)?),
            "node_name" => config.node_name = r.string(k, v)?,
            "node_id" => config.node_id = Some(r.string(k, v)?),
            "datacenter" => config.datacenter = datacenter(&r, k, v)?,
            "retry_join" | "start_join" => config.retry_join.extend(r.strings(k, v)?),
            "retry_join_wan" | "start_join_wan" => config.retry_join_wan.extend(r.strings(k, v)?),
            "retry_interval" => config.retry_interval = r.duration(k, v)?,
            "ports" => apply_ports(config, r.object(k, v)?, &r)?,
            "log_level" => config.log_level = log_level(&r, k, v)?,
            "ui" => config.ui = r.bool(k, v)?,
            "ui_config" => apply_ui_config(config, r.object(k, v)?, &r)?,
            "enable_script_checks" => config.enable_script_checks = r.bool(k, v)?,
            "enable_local_script_checks" => config.enable_local_script_checks = r.bool(k, v)?,
            "domain" => config.domain = fqdn(&r.string(k, v)?),
            "alt_domain" => config.alt_domain = Some(fqdn(&r.string(k, v)?)),
            "recursors" => config.recursors.extend(r.strings(k, v)?),
            "encrypt" => config.encrypt = Some(r.string(k, v)?),
            "performance" => apply_performance(config, r.object(k, v)?, &r)?,
            "consul" => apply_consul(config, r.object(k, v)?, &r)?,
            "limits" => apply_limits(config, r.object(k, v)?, &r)?,
            "http_config" => apply_http_config(config, r.object(k, v)?, &r)?,
            "default_query_time" => config.default_query_time = r.duration(k, v)?,
            "sync_coordinate_rate_target" => {
                // Consul takes any number: a rate of 0 or less means every `sync_coordinate_interval_min`.
                config.sync_coordinate_rate_target = v.as_f64().ok_or_else(|| r.bad_type(k, "a number"))?;
            }
            "sync_coordinate_interval_min" => {
                let d = r.duration(k, v)?;
                if d.is_zero() {
                    return Err(r.bad_value(k, "must be more than 0s"));
                }
                config.sync_coordinate_interval_min = d;
            }
            "max_query_time" => config.max_query_time = r.duration(k, v)?,
            "node_meta" => apply_node_meta(config, r.object(k, v)?, &r)?,
            "dns_config" => config.dns_config = Some(Value::Object(r.object(k, v)?.clone())),
            "acl" => config.acl = Some(Value::Object(r.object(k, v)?.clone())),
            "service" | "services" => config.services.extend(r.objects(k, v)?),
            "check" | "checks" => config.checks.extend(r.objects(k, v)?),
            "leave_on_terminate" => config.leave_on_terminate = r.bool(k, v)?,
            "skip_leave_on_interrupt" => config.skip_leave_on_interrupt = r.bool(k, v)?,
            "rejoin_after_leave" => config.rejoin_after_leave = r.bool(k, v)?,
            "disable_update_check" => config.disable_update_check = r.bool(k, v)?,
            "disable_host_node_id" => config.disable_host_node_id = r.bool(k, v)?,
            "pid_file" => config.pid_file = Some(PathBuf::from(r.string(k, v)?)),
            "raft_snapshot_threshold" => config.raft_snapshot_threshold = r.int(k, v, 1, i64::MAX)? as u64,
            "raft_snapshot_interval" => config.raft_snapshot_interval = r.duration(k, v)?,
            "raft_trailing_logs" => config.raft_trailing_logs = r.int(k, v, 0, i64::MAX)? as u64,
            "raft_protocol" => {
                let n = r.int(k, v, i64::MIN, i64::MAX)?;
                if n != 3 {
                    return Err(r.bad_value(k, format!("raft protocol version {n} is not supported; use 3")));
                }
                config.raft_protocol = 3;
            }
            _ if IGNORED_KEYS.contains(&k) => config.warnings.push(format!(
                "config key {k:?} is accepted for Consul compatibility but has no effect in concord"
            )),
            _ => return Err(r.unknown(k)),
        }
    }
    Ok(())
}

/// Consul lower-cases the datacenter and allows only `[a-z0-9_-]`.
fn datacenter(r: &Reader<'_>, k: &str, v: &Value) -> Result<String, ConfigError> {
    let dc = r.string(k, v)?.to_ascii_lowercase();
    if dc.is_empty() || !dc.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(r.bad_value(k, format!("{dc:?}: use only letters, digits, '-' and '_'")));
    }
    Ok(dc)
}

fn log_level(r: &Reader<'_>, k: &str, v: &Value) -> Result<String, ConfigError> {
    let level = r.string(k, v)?.to_ascii_lowercase();
    match level.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" => Ok(level),
        "warning" => Ok("warn".to_string()),
        "err" => Ok("error".to_string()),
        _ => Err(r.bad_value(k, format!("{level:?}: use trace, debug, info, warn or error"))),
    }
}

fn apply_ports(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("ports.{key}");
        let listen = |v| r.int(&path, v, 0, 65535).map(|n| n as u16);
        let optional = |v| r.int(&path, v, -1, 65535).map(|n| n as i32);
        match key.as_str() {
            "http" => config.ports.http = listen(v)?,
            "dns" => config.ports.dns = optional(v)?,
            "server" => config.ports.server = listen(v)?,
            "serf_lan" => config.ports.serf_lan = listen(v)?,
            "serf_wan" => config.ports.serf_wan = listen(v)?,
            "grpc" => config.ports.grpc = optional(v)?,
            "https" => config.ports.https = optional(v)?,
            "grpc_tls" | "sidecar_min_port" | "sidecar_max_port" | "expose_min_port" | "expose_max_port" => config
                .warnings
                .push(format!("config key {path:?} has no effect in concord")),
            _ => return Err(r.unknown(&path)),
        }
    }
    Ok(())
}

fn apply_ui_config(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("ui_config.{key}");
        match key.as_str() {
            "enabled" => config.ui = r.bool(&path, v)?,
            "dir" | "content_path" | "metrics_provider" | "metrics_proxy" | "dashboard_url_templates" => config
                .warnings
                .push(format!("config key {path:?} has no effect in concord")),
            _ => return Err(r.unknown(&path)),
        }
    }
    Ok(())
}

fn apply_performance(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("performance.{key}");
        match key.as_str() {
            // Consul's bounds: 1 (fastest) to 10.
            "raft_multiplier" => config.raft_multiplier = r.int(&path, v, 1, 10)? as u32,
            "leave_drain_time" | "rpc_hold_timeout" => config
                .warnings
                .push(format!("config key {path:?} has no effect in concord")),
            _ => return Err(r.unknown(&path)),
        }
    }
    Ok(())
}

/// Consul's internal `consul` block: `coordinate` sets the leader's coordinate batching; the `raft` and
/// `server` timings are accepted and ignored (`performance.raft_multiplier` scales concord's Raft).
fn apply_consul(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("consul.{key}");
        match key.as_str() {
            "coordinate" => {
                let block = r.block(&path, v)?;
                for (key, v) in &block {
                    let path = format!("consul.coordinate.{key}");
                    match key.as_str() {
                        "update_period" => {
                            let d = r.duration(&path, v)?;
                            if d.is_zero() {
                                return Err(r.bad_value(&path, "must be more than 0s"));
                            }
                            config.coordinate_update_period = d;
                        }
                        "update_batch_size" => config.coordinate_update_batch_size = r.size(&path, v)?,
                        "update_max_batches" => config.coordinate_update_max_batches = r.size(&path, v)?,
                        _ => return Err(r.unknown(&path)),
                    }
                }
            }
            "raft" | "server" => config
                .warnings
                .push(format!("config key {path:?} has no effect in concord")),
            _ => return Err(r.unknown(&path)),
        }
    }
    Ok(())
}

fn apply_limits(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("limits.{key}");
        match key.as_str() {
            "http_max_conns_per_client" => config.http_max_conns_per_client = r.size(&path, v)?,
            "kv_max_value_size" => config.kv_max_value_size = r.size(&path, v)?,
            "txn_max_req_len" => config.txn_max_req_len = r.size(&path, v)?,
            "http_max_body_size" => config.http_max_body_size = r.size(&path, v)?,
            "rpc_max_conns_per_client"
            | "rpc_rate"
            | "rpc_max_burst"
            | "https_handshake_timeout"
            | "rpc_handshake_timeout"
            | "rpc_client_timeout" => config
                .warnings
                .push(format!("config key {path:?} has no effect in concord")),
            _ => return Err(r.unknown(&path)),
        }
    }
    Ok(())
}

/// `http_config`: the slow-client timeouts; Consul's other HTTP options are accepted and ignored.
fn apply_http_config(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("http_config.{key}");
        let positive = |d: Duration| {
            if d.is_zero() {
                Err(r.bad_value(&path, "must be more than 0s"))
            } else {
                Ok(d)
            }
        };
        match key.as_str() {
            "read_header_timeout" => config.http_read_header_timeout = positive(r.duration(&path, v)?)?,
            "write_timeout" => config.http_write_timeout = positive(r.duration(&path, v)?)?,
            // Go's http.Server: 0 (Consul's default) means DefaultMaxHeaderBytes, 1 MiB.
            "max_header_bytes" => {
                config.http_max_header_bytes = match r.int(&path, v, 0, i64::from(u32::MAX))? {
                    0 => crate::http::DEFAULT_MAX_HEADER_BYTES,
                    n => n as usize,
                }
            }
            "read_timeout"
            | "idle_timeout"
            | "response_headers"
            | "use_cache"
            | "allow_write_http_from"
            | "block_endpoints" => config
                .warnings
                .push(format!("config key {path:?} has no effect in concord")),
            _ => return Err(r.unknown(&path)),
        }
    }
    Ok(())
}

/// Consul's node meta rules: at most 64 pairs, keys of `[A-Za-z0-9_-]` up to 128 characters without the
/// reserved `consul-` prefix, values up to 512 characters.
fn apply_node_meta(config: &mut AgentConfig, map: &Map<String, Value>, r: &Reader<'_>) -> Result<(), ConfigError> {
    for (key, v) in map {
        let path = format!("node_meta.{key}");
        let valid_chars = key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if key.is_empty() || key.len() > 128 || !valid_chars {
            return Err(r.bad_value(&path, "keys are 1 to 128 characters of letters, digits, '_' and '-'"));
        }
        if key.starts_with("consul-") {
            return Err(r.bad_value(&path, "the \"consul-\" key prefix is reserved"));
        }
        let value = r.string(&path, v)?;
        if value.len() > 512 {
            return Err(r.bad_value(&path, "values are at most 512 characters"));
        }
        config.node_meta.insert(key.clone(), value);
    }
    if config.node_meta.len() > 64 {
        return Err(r.bad_value("node_meta", "at most 64 key/value pairs are allowed"));
    }
    Ok(())
}
