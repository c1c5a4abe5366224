//! From what Docker says about a container to the services registrator would register for it
//! (gliderlabs/registrator's `bridge.go` and `util.go`), with no I/O: the daemon inspects containers and
//! resolves the host name, then hands the facts to [`services`].
//!
//! The rules, as registrator v7 applies them:
//! - one service per port: published ports (host IP and port) by default, exposed ports with the container's
//!   IP under `-internal`; with `--net=host` every exposed port counts as published on the same port;
//! - ID `<hostname>:<container-name>:<exposed-port>[:udp]`, name from the image (basename, tag and digest
//!   stripped) with `-<exposed-port>` appended when the container has several service ports;
//! - `SERVICE_<KEY>` (env or label, a label overriding the env var) applies to every port,
//!   `SERVICE_<port>_<KEY>` to one port and wins; `NAME`, `ID`, `TAGS`, `IGNORE` and the `CHECK_*` keys are
//!   understood, every other key goes into `Meta` lowercased.
//!
//! Where registrator is known to hurt, concord differs on purpose: tags keep their written order
//! (registrator reverses them), `CHECK_*` keys are not copied into `Meta` (registrator leaks them there), a
//! `Meta` key Consul would reject is dropped instead of failing the whole registration, and `::` is a
//! wildcard host IP like `0.0.0.0`.

use concord_core::template::{self, Value};
use std::collections::BTreeMap;

/// What the daemon learned about one container (`GET /containers/<id>/json`), reduced to what matters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Container {
    pub(crate) id: String,
    /// Without Docker's leading `/`.
    pub(crate) name: String,
    /// `Config.Image`, as the user wrote it (`nginx`, `gliderlabs/foobar:1`).
    pub(crate) image: String,
    /// `Config.Env`, `KEY=value` strings in order.
    pub(crate) env: Vec<String>,
    pub(crate) labels: BTreeMap<String, String>,
    /// `HostConfig.NetworkMode` (`default`, `bridge`, `host`, a network name, `container:<id>`).
    pub(crate) network_mode: String,
    /// Network name → the container's IP on it.
    pub(crate) networks: BTreeMap<String, String>,
    /// `Config.ExposedPorts` keys (`80/tcp`).
    pub(crate) exposed: Vec<String>,
    /// `NetworkSettings.Ports`: `80/tcp` → its host bindings (empty when exposed but not published).
    pub(crate) ports: BTreeMap<String, Vec<Binding>>,
    /// For `--net=container:<id>`: that container's IP, which registrator uses as the service address.
    pub(crate) network_container_ip: Option<String>,
    pub(crate) running: bool,
    pub(crate) exit_code: i64,
    /// The whole inspect answer, as Docker sent it: the data `-tags` templates render against.
    pub(crate) inspect: serde_json::Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) host_ip: String,
    pub(crate) host_port: String,
}

/// The registrator options that shape services, plus the facts about the host it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// This host's name: the first part of every service ID.
    pub(crate) hostname: String,
    /// The hostname resolved to an address, used for ports bound to the wildcard address.
    pub(crate) hostname_ip: Option<String>,
    /// `-ip`: the address of every service.
    pub(crate) ip: Option<String>,
    /// `-internal`.
    pub(crate) internal: bool,
    /// `-explicit`: only containers with a `SERVICE_NAME`.
    pub(crate) explicit: bool,
    /// `-useIpFromLabel`.
    pub(crate) ip_label: Option<String>,
    /// `-tags`, comma-separated; each tag may be a Go template over the container (see [`force_tags`]).
    pub(crate) tags: String,
}

/// One service to register, with where it came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Service {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) tags: Vec<String>,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) check: Option<Check>,
    pub(crate) container_id: String,
    pub(crate) container_name: String,
}

/// A Consul check definition (`AgentServiceCheck`); empty fields are left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Check {
    pub(crate) http: String,
    pub(crate) method: String,
    pub(crate) tls_skip_verify: bool,
    pub(crate) tcp: String,
    pub(crate) grpc: String,
    pub(crate) grpc_use_tls: bool,
    pub(crate) args: Vec<String>,
    pub(crate) ttl: String,
    pub(crate) interval: String,
    pub(crate) timeout: String,
    pub(crate) status: String,
    pub(crate) deregister_after: String,
}

/// Registrator's default check interval.
const DEFAULT_INTERVAL: &str = "10s";

/// How many `Meta` pairs Consul accepts, and how long keys and values may be.
const META_MAX_PAIRS: usize = 64;
const META_MAX_KEY: usize = 128;
const META_MAX_VALUE: usize = 512;

/// The services registrator registers for `c`, in exposed-port order. A container with `SERVICE_IGNORE`, or
/// without `SERVICE_NAME` under `-explicit`, or without usable ports, gives none.
pub(crate) fn services(c: &Container, s: &Settings) -> Vec<Service> {
    let ports = service_ports(c, s.internal);
    let group = ports.len() > 1;
    ports.iter().filter_map(|p| service(c, s, p, group)).collect()
}

/// One port of a container as registrator sees it (`ServicePort`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Port {
    /// `80`
    exposed: String,
    /// `tcp` or `udp`
    proto: String,
    host_ip: String,
    /// Empty when not published.
    host_port: String,
    container_ip: String,
}

/// Exposed ports first (published on the same port, which is what they are under `--net=host`), then the
/// runtime bindings, which win. Unpublished ports only count under `-internal`.
fn service_ports(c: &Container, internal: bool) -> Vec<Port> {
    let mut bindings: BTreeMap<&str, Option<&Binding>> = BTreeMap::new();
    let mut same_port = BTreeMap::new();
    for key in &c.exposed {
        let number = key.split('/').next().unwrap_or_default();
        same_port.insert(
            key.as_str(),
            Binding {
                host_ip: "0.0.0.0".into(),
                host_port: number.into(),
            },
        );
    }
    for key in same_port.keys() {
        bindings.insert(key, None);
    }
    for (key, published) in &c.ports {
        bindings.insert(key, Some(published.first().unwrap_or(&EMPTY)));
    }
    let container_ip = container_ip(c);
    let mut out = Vec::new();
    for (key, binding) in bindings {
        let binding = binding.unwrap_or_else(|| &same_port[key]);
        let (exposed, proto) = match key.split_once('/') {
            Some((p, proto)) => (p, proto),
            None => (key, "tcp"),
        };
        let mut host_ip = match binding.host_ip.as_str() {
            "" => "0.0.0.0".to_string(),
            ip => ip.to_string(),
        };
        // An overlay or user network: its address stands in for the host's (registrator's `servicePort`).
        if !matches!(c.network_mode.as_str(), "bridge" | "default" | "host" | "")
            && !c.network_mode.starts_with("container:")
        {
            if let Some(ip) = c.networks.get(&c.network_mode) {
                host_ip = ip.clone();
            }
        }
        if !internal && binding.host_port.is_empty() {
            continue;
        }
        out.push(Port {
            exposed: exposed.to_string(),
            proto: proto.to_string(),
            host_ip,
            host_port: binding.host_port.clone(),
            container_ip: container_ip.clone(),
        });
    }
    out
}

static EMPTY: Binding = Binding {
    host_ip: String::new(),
    host_port: String::new(),
};

/// The container's own address: on its network mode's network if it has one, else on the first network.
fn container_ip(c: &Container) -> String {
    c.networks
        .get(&c.network_mode)
        .or_else(|| c.networks.get("bridge"))
        .or_else(|| c.networks.values().find(|ip| !ip.is_empty()))
        .cloned()
        .unwrap_or_default()
}

fn service(c: &Container, s: &Settings, port: &Port, group: bool) -> Option<Service> {
    let (meta, from_port) = metadata(c, &port.exposed);
    if meta.get("ignore").is_some_and(|v| !v.is_empty()) {
        return None;
    }
    let name = match meta.get("name").filter(|n| !n.is_empty()) {
        Some(n) => n.clone(),
        None if s.explicit => return None,
        None => image_name(&c.image),
    };
    let name = if group && !from_port.contains("name") {
        format!("{name}-{}", port.exposed)
    } else {
        name
    };
    let mut address = if s.internal {
        port.container_ip.clone()
    } else if matches!(port.host_ip.as_str(), "0.0.0.0" | "::") {
        s.hostname_ip.clone().unwrap_or_else(|| port.host_ip.clone())
    } else {
        port.host_ip.clone()
    };
    if let Some(ip) = s.ip.as_ref().filter(|_| !s.internal) {
        address = ip.clone();
    }
    if let Some(label) = &s.ip_label {
        if let Some(value) = c.labels.get(label).filter(|v| !v.is_empty()) {
            address = value.rsplit_once('/').map_or(value.as_str(), |(ip, _)| ip).to_string();
        }
    }
    if let Some(ip) = &c.network_container_ip {
        address = ip.clone();
    }
    let port_number = if s.internal { &port.exposed } else { &port.host_port };
    let port_number: u16 = port_number.parse().ok()?;
    let mut id = format!("{}:{}:{}", s.hostname, c.name, port.exposed);
    let mut tags = split_tags(meta.get("tags").map_or("", String::as_str));
    tags.extend(force_tags(&s.tags, c));
    if port.proto == "udp" {
        id.push_str(":udp");
        tags.push("udp".into());
    }
    if let Some(custom) = meta.get("id").filter(|v| !v.is_empty()) {
        id = custom.clone();
    }
    let check = check(&meta, &address, port_number, &c.id, &port.exposed);
    let meta = meta
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "id" | "tags" | "name" | "ignore") && !k.starts_with("check_"))
        .filter(|(k, v)| valid_meta(k, v))
        .take(META_MAX_PAIRS)
        .collect();
    Some(Service {
        id,
        name,
        address,
        port: port_number,
        tags,
        meta,
        check,
        container_id: c.id.clone(),
        container_name: c.name.clone(),
    })
}

/// `SERVICE_*` keys from the environment then the labels (a label overrides the env var), lowercased
/// without the prefix; `SERVICE_<port>_<KEY>` for this port overrides `SERVICE_<KEY>`. Returns the keys
/// and which of them came from a port-specific setting.
fn metadata(c: &Container, port: &str) -> (BTreeMap<String, String>, std::collections::BTreeSet<String>) {
    let env = c.env.iter().filter_map(|kv| kv.split_once('='));
    let labels = c.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let mut general = BTreeMap::new();
    let mut specific = BTreeMap::new();
    for (key, value) in env.chain(labels) {
        let Some(key) = key.strip_prefix("SERVICE_").filter(|k| !k.is_empty()) else {
            continue;
        };
        let key = key.to_ascii_lowercase();
        match key.split_once('_') {
            Some((p, rest)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                if p == port && !rest.is_empty() {
                    specific.insert(rest.to_string(), value.to_string());
                }
            }
            _ => {
                general.insert(key, value.to_string());
            }
        }
    }
    let from_port = specific.keys().cloned().collect();
    general.extend(specific);
    (general, from_port)
}

/// The image's basename without tag or digest: `gliderlabs/foobar:1` → `foobar`,
/// `registry:5000/team/app@sha256:…` → `app`.
pub(crate) fn image_name(image: &str) -> String {
    let image = image.split('@').next().unwrap_or_default();
    let base = image.rsplit('/').next().unwrap_or_default();
    base.split(':').next().unwrap_or_default().to_string()
}

/// Comma-separated tags, `\,` escaping a comma, empty ones dropped.
pub(crate) fn split_tags(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out.retain(|t| !t.is_empty());
    out
}

/// `-tags`: split on commas, then each tag rendered as a Go template over the container's inspect data
/// (registrator executes them against its `*docker.Container`, whose fields are the inspect JSON's: `.Name`,
/// `.Config.Hostname`, `.Config.Labels`, `.NetworkSettings.IPAddress`, and `.ID`, which the JSON spells
/// `Id`). A tag without `{{` is taken as written; one that fails to parse or render is kept as written, with
/// a warning. Tags that render empty are dropped.
pub(crate) fn force_tags(tags: &str, c: &Container) -> Vec<String> {
    let raw = split_tags(tags);
    if !raw.iter().any(|t| t.contains("{{")) {
        return raw;
    }
    let data = template_data(c);
    raw.into_iter()
        .filter_map(|tag| {
            if !tag.contains("{{") {
                return Some(tag);
            }
            match render_tag(&tag, &data) {
                Ok(out) => Some(out).filter(|t| !t.is_empty()),
                Err(e) => {
                    tracing::warn!(
                        "registrator: -tags {tag:?} for container {}: {e}; using it as written",
                        c.name
                    );
                    Some(tag)
                }
            }
        })
        .collect()
}

/// The root value of a `-tags` template: the inspect data, with Go's field name `ID` beside JSON's `Id`.
fn template_data(c: &Container) -> Value {
    let mut json = match &c.inspect {
        serde_json::Value::Object(o) => o.clone(),
        _ => serde_json::Map::new(),
    };
    let id = json.get("Id").cloned().unwrap_or_else(|| c.id.clone().into());
    json.entry("ID").or_insert(id);
    json.entry("Name").or_insert_with(|| format!("/{}", c.name).into());
    // Docker API 1.44 dropped the legacy `NetworkSettings.IPAddress` (and bollard's model with it);
    // registrator's templates read it, so it is the default bridge's address as Docker used to report it.
    let legacy_ip = c
        .networks
        .get("bridge")
        .filter(|ip| !ip.is_empty())
        .cloned()
        .unwrap_or_default();
    if let serde_json::Value::Object(ns) = json
        .entry("NetworkSettings")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
    {
        ns.entry("IPAddress").or_insert(legacy_ip.into());
    }
    Value::from_json(&serde_json::Value::Object(json))
}

fn render_tag(tag: &str, data: &Value) -> Result<String, String> {
    let template = template::parse(tag, "", "").map_err(|e| e.to_string())?;
    let deps = BTreeMap::new();
    let no_env = |_: &str| None;
    let ctx = template::RenderContext {
        data: &deps,
        env: &no_env,
        now_unix: 0,
    };
    let rendered = template.render_with(&ctx, data).map_err(|e| e.to_string())?;
    if !rendered.is_complete() {
        return Err("Consul data functions are not available in -tags".into());
    }
    Ok(rendered.output)
}

/// Registrator's check precedence: HTTP, HTTPS, CMD, SCRIPT, TTL, TCP, GRPC; none without a key.
fn check(meta: &BTreeMap<String, String>, ip: &str, port: u16, cid: &str, exposed: &str) -> Option<Check> {
    let get = |k: &str| meta.get(k).filter(|v| !v.is_empty()).cloned();
    let mut check = Check::default();
    if let Some(path) = get("check_http") {
        check.http = format!("http://{}{path}", host_port(ip, port));
        check.method = get("check_http_method").unwrap_or_default();
    } else if let Some(path) = get("check_https") {
        check.http = format!("https://{}{path}", host_port(ip, port));
        check.method = get("check_https_method").unwrap_or_default();
    } else if let Some(cmd) = get("check_cmd") {
        let cid12: String = cid.chars().take(12).collect();
        check.args = vec!["check-cmd".into(), cid12, exposed.into(), cmd];
    } else if let Some(script) = get("check_script") {
        let script = script
            .replace("$SERVICE_IP", ip)
            .replace("$SERVICE_PORT", &port.to_string());
        check.args = vec!["/bin/sh".into(), "-c".into(), script];
    } else if let Some(ttl) = get("check_ttl") {
        check.ttl = ttl;
    } else if get("check_tcp").is_some() {
        check.tcp = host_port(ip, port);
    } else if get("check_grpc").is_some() {
        check.grpc = host_port(ip, port);
        check.grpc_use_tls = get("check_grpc_use_tls").is_some_and(|v| v == "true");
    } else {
        return None;
    }
    check.tls_skip_verify = get("check_tls_skip_verify").is_some_and(|v| v == "true");
    if check.ttl.is_empty() {
        check.interval = get("check_interval").unwrap_or_else(|| DEFAULT_INTERVAL.into());
        check.timeout = get("check_timeout").unwrap_or_default();
    }
    check.status = get("check_initial_status").unwrap_or_default();
    check.deregister_after = get("check_deregister_after").unwrap_or_default();
    Some(check)
}

fn host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Consul's `Meta` rules: keys of letters, digits, `_` and `-`, not starting with `consul-`, bounded sizes.
fn valid_meta(key: &str, value: &str) -> bool {
    let ok = !key.is_empty()
        && key.len() <= META_MAX_KEY
        && value.len() <= META_MAX_VALUE
        && !key.starts_with("consul-")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        tracing::warn!("registrator: dropping Meta {key:?}: Consul would reject it");
    }
    ok
}

/// Whether `id` looks like one registrator made on `hostname` (the `-cleanup` rule:
/// `^(.+?):([a-zA-Z0-9][a-zA-Z0-9_.-]+):[0-9]+(?::udp)?$` with the first group equal to the host name).
pub(crate) fn is_ours(id: &str, hostname: &str) -> bool {
    let rest = id.strip_suffix(":udp").unwrap_or(id);
    let Some((head, port)) = rest.rsplit_once(':') else {
        return false;
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(name) = head.strip_prefix(hostname).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
