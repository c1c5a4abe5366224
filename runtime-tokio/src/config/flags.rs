//! Go's `flag` package semantics for `concord agent`, hand-written rather than through clap because the
//! two disagree on the points users hit: a Go bool flag never consumes the next argument but accepts
//! `-flag=false`; `-flag` and `--flag` are the same long flag; parsing stops at the first non-flag
//! argument. Each flag is translated to the Consul config key it sets, so flags become one more config
//! source merged last (exactly how Consul treats them).

use std::net::IpAddr;
use std::path::PathBuf;

use serde_json::{json, Map, Value};

use super::source::Format;
use super::ConfigError;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Every flag `concord agent` knows, with its kind.
const FLAGS: &[(&str, Kind)] = &[
    ("advertise", Kind::Value),
    ("alt-domain", Kind::Value),
    ("bind", Kind::Value),
    ("bootstrap", Kind::Bool),
    ("bootstrap-expect", Kind::Value),
    ("client", Kind::Value),
    ("config-dir", Kind::Value),
    ("config-file", Kind::Value),
    ("config-format", Kind::Value),
    ("data-dir", Kind::Value),
    ("datacenter", Kind::Value),
    ("default-query-time", Kind::Value),
    ("dev", Kind::Bool),
    ("disable-host-node-id", Kind::Bool),
    ("dns-port", Kind::Value),
    ("domain", Kind::Value),
    ("enable-local-script-checks", Kind::Bool),
    ("enable-script-checks", Kind::Bool),
    ("encrypt", Kind::Value),
    ("grpc-port", Kind::Value),
    ("http-port", Kind::Value),
    ("https-port", Kind::Value),
    ("join", Kind::Value),
    ("log-level", Kind::Value),
    ("max-query-time", Kind::Value),
    ("node", Kind::Value),
    ("node-id", Kind::Value),
    ("node-meta", Kind::Value),
    ("pid-file", Kind::Value),
    ("raft-protocol", Kind::Value),
    ("recursor", Kind::Value),
    ("rejoin", Kind::Bool),
    ("retry-interval", Kind::Value),
    ("retry-join", Kind::Value),
    ("retry-join-wan", Kind::Value),
    ("serf-lan-port", Kind::Value),
    ("serf-wan-port", Kind::Value),
    ("server", Kind::Bool),
    ("server-port", Kind::Value),
    ("ui", Kind::Bool),
];

/// One line listing the agent's flags, shown for `-help`.
pub fn agent_usage() -> String {
    let names: Vec<String> = FLAGS
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Bool => format!("-{name}"),
            Kind::Value => format!("-{name} <value>"),
        })
        .collect();
    format!("usage: concord agent [flags]; flags: {}", names.join(", "))
}

/// The command line, split into what selects sources and the config values the flags set.
pub(super) struct ParsedFlags {
    pub dev: bool,
    /// `-config-file` and `-config-dir`, in command-line order.
    pub config_paths: Vec<PathBuf>,
    pub config_format: Option<Format>,
    /// Consul config keys set by flags, as a config object.
    pub values: Value,
}

pub(super) fn parse(args: &[String]) -> Result<ParsedFlags, ConfigError> {
    let mut parsed = ParsedFlags {
        dev: false,
        config_paths: Vec::new(),
        config_format: None,
        values: Value::Object(Map::new()),
    };
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            // Go stops at "--"; anything after it is a positional argument, which `agent` does not take.
            return match args.get(i) {
                Some(extra) => Err(ConfigError::UnexpectedArgument(extra.clone())),
                None => Ok(parsed),
            };
        }
        if arg.len() < 2 || !arg.starts_with('-') {
            return Err(ConfigError::UnexpectedArgument(arg.clone()));
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ConfigError::BadFlagSyntax(arg.clone()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value.to_string())),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            return Err(ConfigError::Help(agent_usage()));
        }
        let kind = FLAGS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| ConfigError::UnknownFlag(name.to_string()))?;
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (_, Some(value)) => value,
            (Kind::Value, None) => {
                let value = args.get(i).ok_or_else(|| ConfigError::MissingValue(name.to_string()))?;
                i += 1;
                value.clone()
            }
        };
        if kind == Kind::Bool {
            let flag = go_bool(&value).ok_or_else(|| bad(name, &value, "use true or false"))?;
            set_bool(&mut parsed, name, flag);
        } else {
            set_value(&mut parsed, name, value)?;
        }
    }
    Ok(parsed)
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn bad(flag: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::BadFlagValue {
        flag: flag.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn object(parsed: &mut ParsedFlags) -> &mut Map<String, Value> {
    parsed.values.as_object_mut().expect("flag values are an object")
}

fn set_bool(parsed: &mut ParsedFlags, flag: &str, value: bool) {
    let key = match flag {
        "dev" => {
            parsed.dev = value;
            return;
        }
        "rejoin" => "rejoin_after_leave",
        "disable-host-node-id" => "disable_host_node_id",
        "enable-local-script-checks" => "enable_local_script_checks",
        "enable-script-checks" => "enable_script_checks",
        "bootstrap" => "bootstrap",
        "server" => "server",
        "ui" => "ui",
        other => unreachable!("bool flag -{other} has no config key"),
    };
    object(parsed).insert(key.to_string(), Value::Bool(value));
}

fn set_value(parsed: &mut ParsedFlags, flag: &str, value: String) -> Result<(), ConfigError> {
    let (key, json) = match flag {
        "config-dir" | "config-file" => {
            parsed.config_paths.push(PathBuf::from(value));
            return Ok(());
        }
        "config-format" => {
            let format = Format::from_name(&value).ok_or(ConfigError::BadConfigFormat(value))?;
            parsed.config_format = Some(format);
            return Ok(());
        }
        "join" | "retry-join" | "recursor" | "retry-join-wan" => {
            let key = match flag {
                "recursor" => "recursors",
                "retry-join-wan" => "retry_join_wan",
                _ => "retry_join",
            };
            append(object(parsed), key, Value::String(value));
            return Ok(());
        }
        "node-meta" => {
            // Consul splits on the first ':'; a pair without one has an empty value.
            let (k, v) = value.split_once(':').unwrap_or((&value, ""));
            let meta = object(parsed).entry("node_meta").or_insert_with(|| json!({}));
            meta.as_object_mut()
                .expect("node_meta is an object")
                .insert(k.to_string(), json!(v));
            return Ok(());
        }
        "advertise" | "bind" => {
            ip(flag, &value)?;
            (
                if flag == "bind" { "bind_addr" } else { "advertise_addr" },
                Value::String(value),
            )
        }
        "client" => {
            for addr in value.split_whitespace() {
                ip(flag, addr)?;
            }
            ("client_addr", Value::String(value))
        }
        "bootstrap-expect" | "raft-protocol" => (
            if flag == "raft-protocol" {
                "raft_protocol"
            } else {
                "bootstrap_expect"
            },
            int(flag, &value)?,
        ),
        "http-port" | "dns-port" | "server-port" | "serf-lan-port" | "serf-wan-port" | "grpc-port" | "https-port" => {
            let port = int(flag, &value)?;
            let key = flag.trim_end_matches("-port").replace('-', "_");
            let ports = object(parsed).entry("ports").or_insert_with(|| json!({}));
            ports.as_object_mut().expect("ports is an object").insert(key, port);
            return Ok(());
        }
        "retry-interval" | "default-query-time" | "max-query-time" => {
            concord_core::api::parse_go_duration(&value).map_err(|e| bad(flag, &value, e.to_string()))?;
            (flag, Value::String(value))
        }
        "data-dir" | "datacenter" | "domain" | "alt-domain" | "encrypt" | "log-level" | "node" | "node-id"
        | "pid-file" => (flag, Value::String(value)),
        other => unreachable!("value flag -{other} has no config key"),
    };
    let key = match key {
        "node" => "node_name".to_string(),
        other => other.replace('-', "_"),
    };
    object(parsed).insert(key, json);
    Ok(())
}

fn append(map: &mut Map<String, Value>, key: &str, value: Value) {
    let list = map.entry(key).or_insert_with(|| json!([]));
    list.as_array_mut().expect("list flags hold arrays").push(value);
}

fn ip(flag: &str, value: &str) -> Result<(), ConfigError> {
    value.parse::<IpAddr>().map(|_| ()).map_err(|_| {
        bad(
            flag,
            value,
            "want an IP address such as 10.0.0.1 (go-sockaddr templates are not supported)",
        )
    })
}

fn int(flag: &str, value: &str) -> Result<Value, ConfigError> {
    value
        .parse::<i64>()
        .map(Value::from)
        .map_err(|_| bad(flag, value, "want an integer"))
}
