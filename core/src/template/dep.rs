//! Dependencies: the Consul data a template needs, how to ask Consul for it, and how Consul's JSON
//! answer becomes the values consul-template's functions return (`CT:dependency/*.go`).
//!
//! The runtime fetches each [`Dependency`] with [`Dependency::request`] and stores
//! [`Dependency::decode`]'s result; rendering only reads those stored values.

use super::value::Value;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;

/// One piece of data a template depends on. Equal dependencies from different templates share one
/// watch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependency {
    /// `key`, `keyOrDefault`, `keyExists`: `GET /v1/kv/:key`.
    Kv { key: String, dc: Option<String> },
    /// `ls`, `tree`: `GET /v1/kv/:prefix?recurse`.
    KvList { prefix: String, dc: Option<String> },
    /// `service`: `GET /v1/health/service/:name`.
    HealthService {
        name: String,
        tag: Option<String>,
        dc: Option<String>,
        near: Option<String>,
        /// Accepted statuses (`passing`, `warning`, `critical`, `maintenance`, or `any`).
        filter: Vec<String>,
    },
    /// `services`: `GET /v1/catalog/services`.
    CatalogServices { dc: Option<String> },
    /// `node`: `GET /v1/catalog/node/:name`; no name means the local agent's node.
    CatalogNode { name: Option<String>, dc: Option<String> },
    /// `nodes`: `GET /v1/catalog/nodes`.
    CatalogNodes { dc: Option<String>, near: Option<String> },
    /// `datacenters`: `GET /v1/catalog/datacenters` (not a blocking endpoint; polled).
    CatalogDatacenters,
    /// `file`: a local file's contents (the runtime polls it).
    File { path: String },
}

/// An HTTP GET that fetches a dependency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// Unescaped path, e.g. `/v1/kv/app/config`.
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Whether the endpoint supports blocking queries (`?index=&wait=`).
    pub blocking: bool,
}

impl Dependency {
    /// The request that fetches this dependency, or `None` for local ones (`file`). `local_node` names
    /// the agent's own node, for `node` without a name.
    pub fn request(&self, local_node: &str) -> Option<HttpRequest> {
        let mut query = Vec::new();
        let with_dc = |q: &mut Vec<(String, String)>, dc: &Option<String>| {
            if let Some(dc) = dc {
                q.push(("dc".to_string(), dc.clone()));
            }
        };
        let path = match self {
            Dependency::Kv { key, dc } => {
                with_dc(&mut query, dc);
                format!("/v1/kv/{key}")
            }
            Dependency::KvList { prefix, dc } => {
                with_dc(&mut query, dc);
                query.push(("recurse".into(), String::new()));
                format!("/v1/kv/{prefix}")
            }
            Dependency::HealthService {
                name,
                tag,
                dc,
                near,
                filter,
            } => {
                with_dc(&mut query, dc);
                if let Some(tag) = tag {
                    query.push(("tag".into(), tag.clone()));
                }
                if let Some(near) = near {
                    query.push(("near".into(), near.clone()));
                }
                if passing_only(filter) {
                    query.push(("passing".into(), "1".into()));
                }
                format!("/v1/health/service/{name}")
            }
            Dependency::CatalogServices { dc } => {
                with_dc(&mut query, dc);
                "/v1/catalog/services".into()
            }
            Dependency::CatalogNode { name, dc } => {
                with_dc(&mut query, dc);
                format!("/v1/catalog/node/{}", name.as_deref().unwrap_or(local_node))
            }
            Dependency::CatalogNodes { dc, near } => {
                with_dc(&mut query, dc);
                if let Some(near) = near {
                    query.push(("near".into(), near.clone()));
                }
                "/v1/catalog/nodes".into()
            }
            Dependency::CatalogDatacenters => {
                return Some(HttpRequest {
                    path: "/v1/catalog/datacenters".into(),
                    query,
                    blocking: false,
                })
            }
            Dependency::File { .. } => return None,
        };
        Some(HttpRequest {
            path,
            query,
            blocking: true,
        })
    }

    /// The template value for Consul's answer: `body` is the response body, `None` for a 404.
    pub fn decode(&self, body: Option<&[u8]>) -> Result<Value, String> {
        if let Dependency::File { .. } = self {
            return Ok(Value::Str(
                body.map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            ));
        }
        let json: serde_json::Value = match body {
            None => serde_json::Value::Null,
            Some(b) if b.iter().all(u8::is_ascii_whitespace) => serde_json::Value::Null,
            Some(b) => serde_json::from_slice(b).map_err(|e| format!("{self}: decoding the response: {e}"))?,
        };
        Ok(match self {
            Dependency::Kv { .. } => match json.as_array().and_then(|a| a.first()) {
                Some(pair) => Value::Str(kv_value(pair)),
                None => Value::Null,
            },
            Dependency::KvList { prefix, .. } => decode_kv_list(prefix, &json),
            Dependency::HealthService { filter, .. } => decode_health_service(filter, &json),
            Dependency::CatalogServices { .. } => {
                let mut list: Vec<Value> = Vec::new();
                for (name, tags) in json.as_object().into_iter().flatten() {
                    list.push(Value::map([("Name", Value::str(name)), ("Tags", sorted_tags(tags))]));
                }
                Value::list(list)
            }
            Dependency::CatalogNode { .. } => match json.as_object() {
                None => Value::Null,
                Some(o) => {
                    let node = o.get("Node").map(node_value).unwrap_or(Value::Null);
                    let mut services: Vec<Value> = o
                        .get("Services")
                        .and_then(|s| s.as_object())
                        .into_iter()
                        .flatten()
                        .map(|(_, s)| catalog_node_service(s))
                        .collect();
                    services.sort_by(|a, b| {
                        let key = |v: &Value| (field_str(v, "Service"), field_str(v, "ID"));
                        key(a).cmp(&key(b))
                    });
                    Value::map([("Node", node), ("Services", Value::list(services))])
                }
            },
            Dependency::CatalogNodes { near, .. } => {
                let mut nodes: Vec<Value> = json.as_array().into_iter().flatten().map(node_value).collect();
                if near.is_none() {
                    nodes.sort_by_key(|n| field_str(n, "Node"));
                }
                Value::list(nodes)
            }
            Dependency::CatalogDatacenters => {
                let mut dcs: Vec<String> = json
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect();
                dcs.sort();
                Value::list(dcs.into_iter().map(Value::Str).collect())
            }
            Dependency::File { .. } => Value::Null,
        })
    }
}

fn passing_only(filter: &[String]) -> bool {
    filter.len() == 1 && filter[0] == "passing"
}

fn s(json: &serde_json::Value, field: &str) -> String {
    json.get(field).and_then(|v| v.as_str()).unwrap_or_default().to_string()
}

fn i(json: &serde_json::Value, field: &str) -> Value {
    Value::Int(json.get(field).and_then(|v| v.as_i64()).unwrap_or(0))
}

fn string_map(json: Option<&serde_json::Value>) -> Value {
    Value::map(
        json.and_then(|m| m.as_object())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::str(v.as_str().unwrap_or_default()))),
    )
}

fn obj(json: Option<&serde_json::Value>) -> Value {
    match json {
        Some(j @ serde_json::Value::Object(_)) => Value::from_json(j),
        _ => Value::map(Vec::<(String, Value)>::new()),
    }
}

fn field_str(v: &Value, name: &str) -> String {
    v.field(name)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// consul-template sorts service tags (`deepCopyAndSortTags`).
fn sorted_tags(json: &serde_json::Value) -> Value {
    let mut tags: Vec<String> = json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    tags.sort();
    Value::list(tags.into_iter().map(Value::Str).collect())
}

fn kv_value(pair: &serde_json::Value) -> String {
    let encoded = pair.get("Value").and_then(|v| v.as_str()).unwrap_or_default();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every pair under the prefix as consul-template's `KeyPair`, `Key` relative to the prefix.
fn decode_kv_list(prefix: &str, json: &serde_json::Value) -> Value {
    let pairs = json.as_array().into_iter().flatten().map(|pair| {
        let path = s(pair, "Key");
        let key = path
            .strip_prefix(prefix)
            .unwrap_or(&path)
            .trim_start_matches('/')
            .to_string();
        Value::map([
            ("Path", Value::Str(path.clone())),
            ("Key", Value::Str(key)),
            ("Value", Value::Str(kv_value(pair))),
            ("Exists", Value::Bool(true)),
            ("CreateIndex", i(pair, "CreateIndex")),
            ("ModifyIndex", i(pair, "ModifyIndex")),
            ("LockIndex", i(pair, "LockIndex")),
            ("Flags", i(pair, "Flags")),
            ("Session", Value::Str(s(pair, "Session"))),
        ])
    });
    Value::list(pairs.collect())
}

/// `api.HealthChecks.AggregatedStatus`.
fn aggregated_status(checks: &[serde_json::Value]) -> &'static str {
    let (mut passing, mut warning, mut critical, mut maintenance) = (false, false, false, false);
    for check in checks {
        let id = s(check, "CheckID");
        if id == "_node_maintenance" || id.starts_with("_service_maintenance:") {
            maintenance = true;
            continue;
        }
        match s(check, "Status").as_str() {
            "passing" => passing = true,
            "warning" => warning = true,
            "critical" => critical = true,
            _ => return "",
        }
    }
    let _ = passing;
    if maintenance {
        "maintenance"
    } else if critical {
        "critical"
    } else if warning {
        "warning"
    } else {
        "passing"
    }
}

/// `HealthServiceQuery.Fetch`: filter by aggregated status, build `HealthService`, sort by Node then ID.
fn decode_health_service(filter: &[String], json: &serde_json::Value) -> Value {
    let any = filter.iter().any(|f| f == "any");
    let mut out = Vec::new();
    for entry in json.as_array().into_iter().flatten() {
        let checks: Vec<serde_json::Value> = entry
            .get("Checks")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        let status = aggregated_status(&checks);
        if !any && !filter.iter().any(|f| f == status) {
            continue;
        }
        let null = serde_json::Value::Null;
        let node = entry.get("Node").unwrap_or(&null);
        let svc = entry.get("Service").unwrap_or(&null);
        let mut address = s(svc, "Address");
        if address.is_empty() {
            address = s(node, "Address");
        }
        let weights = match svc.get("Weights") {
            Some(w @ serde_json::Value::Object(_)) => Value::from_json(w),
            _ => Value::map([("Passing", Value::Int(1)), ("Warning", Value::Int(1))]),
        };
        out.push(Value::map([
            ("Node", Value::Str(s(node, "Node"))),
            ("NodeID", Value::Str(s(node, "ID"))),
            ("Kind", Value::Str(s(svc, "Kind"))),
            ("NodeAddress", Value::Str(s(node, "Address"))),
            ("NodeDatacenter", Value::Str(s(node, "Datacenter"))),
            ("NodeTaggedAddresses", string_map(node.get("TaggedAddresses"))),
            ("NodeMeta", string_map(node.get("Meta"))),
            ("ServiceMeta", string_map(svc.get("Meta"))),
            ("Address", Value::Str(address)),
            ("ServiceTaggedAddresses", obj(svc.get("TaggedAddresses"))),
            ("ID", Value::Str(s(svc, "ID"))),
            ("Name", Value::Str(s(svc, "Service"))),
            ("Tags", sorted_tags(svc.get("Tags").unwrap_or(&null))),
            ("Checks", Value::list(checks.iter().map(Value::from_json).collect())),
            ("Status", Value::str(status)),
            ("Port", i(svc, "Port")),
            ("Weights", weights),
            ("Namespace", Value::Str(s(svc, "Namespace"))),
            ("Partition", Value::Str(s(svc, "Partition"))),
            ("Peer", Value::Str(s(svc, "PeerName"))),
        ]));
    }
    out.sort_by(|a, b| {
        let key = |v: &Value| (field_str(v, "Node"), field_str(v, "ID"));
        key(a).cmp(&key(b))
    });
    Value::list(out)
}

/// consul-template's `dependency.Node`.
fn node_value(json: &serde_json::Value) -> Value {
    Value::map([
        ("ID", Value::Str(s(json, "ID"))),
        ("Node", Value::Str(s(json, "Node"))),
        ("Address", Value::Str(s(json, "Address"))),
        ("Datacenter", Value::Str(s(json, "Datacenter"))),
        ("TaggedAddresses", string_map(json.get("TaggedAddresses"))),
        ("Meta", string_map(json.get("Meta"))),
    ])
}

fn catalog_node_service(json: &serde_json::Value) -> Value {
    Value::map([
        ("ID", Value::Str(s(json, "ID"))),
        ("Service", Value::Str(s(json, "Service"))),
        (
            "Tags",
            sorted_tags(json.get("Tags").unwrap_or(&serde_json::Value::Null)),
        ),
        ("Meta", string_map(json.get("Meta"))),
        ("Port", i(json, "Port")),
        ("Address", Value::Str(s(json, "Address"))),
        (
            "EnableTagOverride",
            Value::Bool(json.get("EnableTagOverride").and_then(|b| b.as_bool()).unwrap_or(false)),
        ),
    ])
}

/// Split `"…@dc"` into the part before and the datacenter.
fn split_dc(s: &str) -> (&str, Option<String>) {
    match s.rsplit_once('@') {
        Some((rest, dc)) if !dc.is_empty() => (rest, Some(dc.to_string())),
        _ => (s, None),
    }
}

fn valid_word(s: &str, extra: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_' || extra.contains(c))
}

/// `key`/`keyOrDefault`/`keyExists`: `"path[@dc]"`.
pub(crate) fn parse_kv(arg: &str) -> Result<Dependency, String> {
    let (key, dc) = split_dc(arg);
    let key = key.trim_start_matches('/');
    if key.is_empty() {
        return Err(format!("kv.get: invalid format: {arg:?}"));
    }
    Ok(Dependency::Kv {
        key: key.to_string(),
        dc,
    })
}

/// `ls`/`tree`: `"prefix[@dc]"`.
pub(crate) fn parse_kv_list(arg: &str) -> Dependency {
    let (prefix, dc) = split_dc(arg);
    Dependency::KvList {
        prefix: prefix.trim_start_matches('/').to_string(),
        dc,
    }
}

/// `service`: `"[tag.]name[?query][@dc][~near][|filter]"` plus an optional second argument with the
/// filter (the older form).
pub(crate) fn parse_service(arg: &str, filter_arg: Option<&str>) -> Result<Dependency, String> {
    let bad = || format!("health.service: invalid format: {arg:?}");
    let (query, filter) = match arg.split_once('|') {
        Some((q, f)) => (q, Some(f)),
        None => (arg, filter_arg),
    };
    let (rest, near) = match query.split_once('~') {
        Some((r, n)) if valid_word(n, ".-") => (r, Some(n.to_string())),
        Some(_) => return Err(bad()),
        None => (query, None),
    };
    let (rest, dc) = split_dc(rest);
    // Query parameters (`?ns=…&peer=…`) name Enterprise features concord does not have.
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (tag, name) = match rest.rsplit_once('.') {
        Some((tag, name)) => (Some(tag.to_string()), name),
        None => (None, rest),
    };
    if !valid_word(name, "-") || tag.as_deref().is_some_and(|t| !valid_word(t, "=:.-")) {
        return Err(bad());
    }
    if dc.as_deref().is_some_and(|d| !valid_word(d, ".-")) {
        return Err(bad());
    }
    let mut statuses: Vec<String> = Vec::new();
    for f in filter.unwrap_or("passing").split(',') {
        let f = f.trim().to_ascii_lowercase();
        match f.as_str() {
            "any" | "passing" | "warning" | "critical" | "maintenance" => statuses.push(f),
            _ => return Err(format!("health.service: invalid filter: {f:?} in {arg:?}")),
        }
    }
    if statuses.iter().any(|f| f == "any") {
        statuses = vec!["any".into()];
    }
    statuses.sort();
    statuses.dedup();
    Ok(Dependency::HealthService {
        name: name.to_string(),
        tag,
        dc,
        near,
        filter: statuses,
    })
}

/// `services`, `nodes`, `node`: `"[name][@dc][~near]"`.
pub(crate) fn parse_catalog(arg: &str) -> (String, Option<String>, Option<String>) {
    let (rest, near) = match arg.split_once('~') {
        Some((r, n)) => (r, Some(n.to_string())),
        None => (arg, None),
    };
    let (name, dc) = split_dc(rest);
    (name.to_string(), dc, near)
}

impl fmt::Display for Dependency {
    /// consul-template's dependency strings, used in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |dc: &Option<String>| dc.as_ref().map(|d| format!("@{d}")).unwrap_or_default();
        match self {
            Dependency::Kv { key, dc } => write!(f, "kv.block({key}{})", at(dc)),
            Dependency::KvList { prefix, dc } => write!(f, "kv.list({prefix}{})", at(dc)),
            Dependency::HealthService {
                name,
                tag,
                dc,
                near,
                filter,
            } => {
                let tag = tag.as_ref().map(|t| format!("{t}.")).unwrap_or_default();
                let near = near.as_ref().map(|n| format!("~{n}")).unwrap_or_default();
                write!(f, "health.service({tag}{name}{}{near}|{})", at(dc), filter.join(","))
            }
            Dependency::CatalogServices { dc } => write!(f, "catalog.services{}", at(dc)),
            Dependency::CatalogNode { name, dc } => {
                write!(f, "catalog.node({}{})", name.as_deref().unwrap_or(""), at(dc))
            }
            Dependency::CatalogNodes { dc, near } => {
                let near = near.as_ref().map(|n| format!("~{n}")).unwrap_or_default();
                write!(f, "catalog.nodes({}{near})", at(dc))
            }
            Dependency::CatalogDatacenters => f.write_str("catalog.datacenters"),
            Dependency::File { path } => write!(f, "file({path})"),
        }
    }
}

/// `byTag`: services grouped by each of their tags.
pub(crate) fn by_tag(list: &Value) -> Result<Value, String> {
    let Value::List(items) = list else {
        return Err(format!("byTag: wrong argument type {}", list.kind()));
    };
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for item in items.iter() {
        if let Ok(Value::List(tags)) = item.field("Tags") {
            for tag in tags.iter() {
                if let Value::Str(t) = tag {
                    let group = groups.entry(t.clone()).or_default();
                    if !group.contains(item) {
                        group.push(item.clone());
                    }
                }
            }
        }
    }
    Ok(Value::map(groups.into_iter().map(|(k, v)| (k, Value::list(v)))))
}

/// `byKey`: tree pairs grouped by their top-level folder, keyed by the rest of the key.
pub(crate) fn by_key(list: &Value) -> Result<Value, String> {
    let Value::List(items) = list else {
        return Err(format!("byKey: wrong argument type {}", list.kind()));
    };
    let mut groups: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for item in items.iter() {
        let key = field_str(item, "Key");
        if let Some((top, rest)) = key.split_once('/') {
            let mut pair = match item {
                Value::Map(m) => (**m).clone(),
                _ => continue,
            };
            pair.insert("Key".into(), Value::str(rest));
            groups
                .entry(top.to_string())
                .or_default()
                .insert(rest.to_string(), Value::map(pair));
        }
    }
    Ok(Value::map(groups.into_iter().map(|(k, v)| (k, Value::map(v)))))
}
