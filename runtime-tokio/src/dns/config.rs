//! `dns_config { … }`, `-domain`, `-alt-domain`, `-recursor` and `-dns-port` turned into what the DNS server
//! runs with. Every key Consul documents is accepted; keys concord does not act on are listed in
//! [`IGNORED`] and produce a warning. A bad value is one line naming the key.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use concord_core::api::parse_go_duration;
use concord_core::dns::{DnsConfig, SoaConfig};
use serde_json::Value;

use crate::config::AgentConfig;

/// Consul's `dns_config` keys concord accepts without acting on them.
const IGNORED: &[&str] = &[
    "disable_compression",
    "recursor_strategy",
    "use_cache",
    "cache_max_age",
    "prefer_namespace",
];

/// Everything the DNS server needs from the agent's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsSettings {
    pub config: DnsConfig,
    /// `client_addr` × `ports.dns`; empty when DNS is disabled (`-dns-port` 0 or -1, as Consul's
    /// `makeAddrs` treats any port ≤ 0).
    pub listen: Vec<SocketAddr>,
    pub recursors: Vec<SocketAddr>,
    /// `dns_config.recursor_timeout` (Consul's default 2 s).
    pub recursor_timeout: Duration,
    /// `dns_config.max_stale` (default 87600h): a view whose server lost contact with the leader for
    /// longer is refreshed from the leader.
    pub max_stale: Duration,
    pub warnings: Vec<String>,
}

fn bad(key: &str, reason: impl std::fmt::Display) -> String {
    format!("invalid dns_config.{key}: {reason}")
}

fn boolean(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool().ok_or_else(|| bad(key, "want true or false"))
}

fn duration(key: &str, v: &Value) -> Result<Duration, String> {
    let s = v
        .as_str()
        .ok_or_else(|| bad(key, "want a duration string such as \"10s\""))?;
    parse_go_duration(s).map_err(|e| bad(key, e))
}

fn seconds(key: &str, v: &Value) -> Result<u32, String> {
    Ok(u32::try_from(duration(key, v)?.as_secs()).unwrap_or(u32::MAX))
}

fn count(key: &str, v: &Value) -> Result<usize, String> {
    let n = v.as_i64().ok_or_else(|| bad(key, "want an integer"))?;
    usize::try_from(n).map_err(|_| bad(key, format!("{n} is negative")))
}

/// `ip` or `ip:port` (default port 53), as Consul's `-recursor` takes it.
fn recursor(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid recursor {s:?}: want an IP address, optionally with :port"))
}

impl DnsSettings {
    /// Read the DNS part of the agent's configuration. The error is one line naming what to fix.
    pub fn from_agent(agent: &AgentConfig) -> Result<DnsSettings, String> {
        let mut config = DnsConfig {
            domain: agent.domain.clone(),
            alt_domain: agent.alt_domain.clone(),
            datacenter: agent.datacenter.clone(),
            recursion: !agent.recursors.is_empty(),
            ..DnsConfig::default()
        };
        let mut settings = DnsSettings {
            config: DnsConfig::default(),
            listen: Vec::new(),
            recursors: agent.recursors.iter().map(|r| recursor(r)).collect::<Result<_, _>>()?,
            recursor_timeout: Duration::from_secs(2),
            max_stale: Duration::from_secs(87_600 * 3600),
            warnings: Vec::new(),
        };
        let empty = serde_json::Map::new();
        let map = match &agent.dns_config {
            Some(Value::Object(map)) => map,
            Some(_) => return Err("dns_config must be an object".into()),
            None => &empty,
        };
        for (key, v) in map {
            let k = key.as_str();
            match k {
                "allow_stale" => config.allow_stale = boolean(k, v)?,
                "max_stale" => settings.max_stale = duration(k, v)?,
                "node_ttl" => config.node_ttl = seconds(k, v)?,
                "service_ttl" => config.service_ttl = service_ttl(v)?,
                "udp_answer_limit" => config.udp_answer_limit = count(k, v)?.max(1),
                "a_record_limit" => config.a_record_limit = count(k, v)?,
                "only_passing" => config.only_passing = boolean(k, v)?,
                "enable_truncate" => config.enable_truncate = boolean(k, v)?,
                "enable_additional_node_meta_txt" => config.node_meta_txt = boolean(k, v)?,
                "recursor_timeout" => settings.recursor_timeout = duration(k, v)?,
                "soa" => config.soa = soa(v)?,
                _ if IGNORED.contains(&k) => settings
                    .warnings
                    .push(format!("dns_config.{k} has no effect in concord")),
                _ => return Err(format!("unknown config key \"dns_config.{k}\"")),
            }
        }
        concord_core::dns::Responder::new(config.clone()).map_err(|e| e.to_string())?;
        settings.config = config;
        if agent.ports.dns > 0 {
            let port = u16::try_from(agent.ports.dns).map_err(|_| format!("invalid DNS port {}", agent.ports.dns))?;
            settings.listen = agent.client_addr.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
        }
        Ok(settings)
    }
}

fn service_ttl(v: &Value) -> Result<BTreeMap<String, u32>, String> {
    let map = v
        .as_object()
        .ok_or_else(|| bad("service_ttl", "want an object of service name → duration"))?;
    map.iter()
        .map(|(name, ttl)| Ok((name.to_ascii_lowercase(), seconds(&format!("service_ttl.{name}"), ttl)?)))
        .collect()
}

fn soa(v: &Value) -> Result<SoaConfig, String> {
    let map = v.as_object().ok_or_else(|| bad("soa", "want an object"))?;
    let mut soa = SoaConfig::default();
    for (key, v) in map {
        let n = v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| bad(&format!("soa.{key}"), "want a non-negative integer (seconds)"))?;
        match key.as_str() {
            "refresh" => soa.refresh = n,
            "retry" => soa.retry = n,
            "expire" => soa.expire = n,
            "min_ttl" => soa.min_ttl = n,
            other => return Err(format!("unknown config key \"dns_config.soa.{other}\"")),
        }
    }
    Ok(soa)
}
