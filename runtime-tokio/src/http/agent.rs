//! `/v1/status/*`, `/v1/operator/raft/*` and `/v1/agent/{self,leave}`.

use super::params::Params;
use super::reply::{empty, json, with_meta, HttpError, HttpResult};
use super::{AgentSelf, AppState, Backend};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use concord_core::api::{Request, Response as NodeResponse};
use concord_core::node::{NodeStatus, Role};
use concord_core::NodeId;
use serde::Serialize;
use serde_json::{json as js, Value};
use std::collections::BTreeMap;

fn respond(result: HttpResult) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Parse the query string and check `?dc=`.
fn params<B>(state: &AppState<B>, uri: &Uri) -> Result<Params, HttpError> {
    let params = Params::parse(uri)?;
    params.check_dc(&state.settings)?;
    Ok(params)
}

async fn call<B: Backend>(state: &AppState<B>, req: Request) -> Result<NodeResponse, HttpError> {
    match state.call(req).await.ok_or_else(HttpError::shutting_down)? {
        NodeResponse::Error(e) => Err(e.into()),
        resp => Ok(resp),
    }
}

/// `GET /v1/status/leader`: `"ip:port"` of the leader's RPC address, or `""`.
pub(crate) async fn status_leader<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            match call(&state, Request::Leader).await? {
                NodeResponse::Leader(leader) => Ok(json(&leader.unwrap_or_default(), params.pretty())),
                _ => Err(HttpError::unexpected()),
            }
        }
        .await,
    )
}

/// `GET /v1/status/peers`: the voters' RPC addresses.
pub(crate) async fn status_peers<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            match call(&state, Request::Peers).await? {
                NodeResponse::Peers(peers) => Ok(json(&peers, params.pretty())),
                _ => Err(HttpError::unexpected()),
            }
        }
        .await,
    )
}

/// Consul's `structs.RaftServer`, in its field order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServerJson<'a> {
    #[serde(rename = "ID")]
    id: String,
    node: &'a str,
    address: &'a str,
    leader: bool,
    protocol_version: &'static str,
    voter: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfigurationJson<'a> {
    servers: Vec<RaftServerJson<'a>>,
    index: u64,
}

/// `GET /v1/operator/raft/configuration`.
pub(crate) async fn raft_configuration<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let mode = params.read_mode()?;
            match call(&state, Request::RaftConfiguration { mode }).await? {
                NodeResponse::RaftConfiguration { meta, servers, index } => {
                    let body = RaftConfigurationJson {
                        servers: servers
                            .iter()
                            .map(|s| RaftServerJson {
                                id: s.id.to_string(),
                                node: &s.node,
                                address: &s.address,
                                leader: s.leader,
                                protocol_version: "3",
                                voter: s.voter,
                            })
                            .collect(),
                        index,
                    };
                    Ok(with_meta(json(&body, params.pretty()), &meta))
                }
                _ => Err(HttpError::unexpected()),
            }
        }
        .await,
    )
}

fn node_id(v: &str) -> Result<NodeId, HttpError> {
    v.parse().map_err(|e| HttpError::bad_request(format!("{e}")))
}

/// `DELETE /v1/operator/raft/peer?id=|address=`.
pub(crate) async fn raft_remove_peer<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let id = params.value("id").map(node_id).transpose()?;
            let address = params.value("address").map(str::to_string);
            if id.is_none() == address.is_none() {
                return Err(HttpError::bad_request(
                    "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
                ));
            }
            match call(&state, Request::RemovePeer { id, address }).await? {
                NodeResponse::Done => Ok(empty(StatusCode::OK)),
                _ => Err(HttpError::unexpected()),
            }
        }
        .await,
    )
}

/// `POST /v1/operator/raft/transfer-leader[?id=]` (PUT accepted too): `{"Success":true}`.
pub(crate) async fn raft_transfer_leader<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let to = params.value("id").map(node_id).transpose()?;
            match call(&state, Request::TransferLeader { to }).await? {
                NodeResponse::Done => Ok(json(&js!({ "Success": true }), params.pretty())),
                _ => Err(HttpError::unexpected()),
            }
        }
        .await,
    )
}

/// `PUT /v1/agent/leave`.
pub(crate) async fn agent_leave<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            params(&state, &uri)?;
            state.backend.leave().await.map_err(HttpError::internal)?;
            Ok(empty(StatusCode::OK))
        }
        .await,
    )
}

/// `GET /v1/agent/self`.
pub(crate) async fn agent_self<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let me = state.backend.agent_self().await;
            Ok(json(&agent_self_json(&me), params.pretty()))
        }
        .await,
    )
}

/// Consul's `/v1/agent/self` document. `Config` is the stable part clients read; `Stats` is what
/// `consul info` prints (every value a string, as in Consul).
pub(crate) fn agent_self_json(me: &AgentSelf) -> Value {
    let client_addrs: Vec<String> = me.client_addrs.iter().map(ToString::to_string).collect();
    let role = if me.server { "consul" } else { "node" };
    let mut tags = BTreeMap::from([
        (
            "build".to_string(),
            format!("{}:concord-{}", me.version, me.concord_version),
        ),
        ("dc".to_string(), me.datacenter.clone()),
        ("id".to_string(), me.node_id.clone()),
        ("role".to_string(), role.to_string()),
        ("segment".to_string(), String::new()),
        ("vsn".to_string(), "2".to_string()),
        ("vsn_max".to_string(), "3".to_string()),
        ("vsn_min".to_string(), "2".to_string()),
    ]);
    if me.server {
        tags.insert("port".to_string(), me.ports.server.to_string());
        tags.insert("raft_vsn".to_string(), "3".to_string());
        if me.bootstrap {
            tags.insert("bootstrap".to_string(), "1".to_string());
        }
        if me.bootstrap_expect > 0 {
            tags.insert("expect".to_string(), me.bootstrap_expect.to_string());
        }
    }
    js!({
        "Config": {
            "Datacenter": me.datacenter,
            "PrimaryDatacenter": me.datacenter,
            "NodeName": me.node_name,
            "NodeID": me.node_id,
            "Partition": "",
            "Revision": me.revision,
            "Server": me.server,
            "Version": me.version,
            "BuildDate": "1970-01-01T00:00:01Z",
        },
        "DebugConfig": {
            "AdvertiseAddrLAN": me.advertise_addr.to_string(),
            "AdvertiseAddrWAN": me.advertise_addr.to_string(),
            "BindAddr": me.bind_addr.to_string(),
            "Bootstrap": me.bootstrap,
            "BootstrapExpect": me.bootstrap_expect,
            "ClientAddrs": client_addrs,
            "DNSDomain": me.domain,
            "DNSPort": me.ports.dns,
            "Datacenter": me.datacenter,
            "HTTPPort": me.ports.http,
            "NodeID": me.node_id,
            "NodeName": me.node_name,
            "SerfPortLAN": me.ports.serf_lan,
            "SerfPortWAN": me.ports.serf_wan,
            "ServerMode": me.server,
            "ServerPort": me.ports.server,
            "Version": me.version,
        },
        "Coord": {
            "Vec": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            "Error": 1.5,
            "Adjustment": 0.0,
            "Height": 1e-05,
        },
        "Member": {
            "Name": me.node_name,
            "Addr": me.advertise_addr.to_string(),
            "Port": me.ports.serf_lan,
            "Tags": tags,
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        },
        "Stats": stats(me),
        "Meta": { "consul-network-segment": "", "consul-version": me.version },
        "xDS": {
            "SupportedProxies": { "envoy": [] },
            "Port": -1,
            "Ports": { "Plaintext": -1, "TLS": -1 },
        },
    })
}

/// The `Stats` sections, with Consul's section and stat names.
pub(crate) fn stats(me: &AgentSelf) -> BTreeMap<String, BTreeMap<String, String>> {
    fn section(pairs: &[(&str, String)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
    let is_leader = me.raft.as_ref().is_some_and(|r| r.role == Role::Leader);
    let mut out = BTreeMap::new();
    out.insert(
        "agent".to_string(),
        section(&[
            ("check_monitors", "0".into()),
            ("check_ttls", "0".into()),
            ("checks", me.checks.to_string()),
            ("services", me.services.to_string()),
        ]),
    );
    out.insert(
        "build".to_string(),
        section(&[
            ("prerelease", String::new()),
            ("revision", me.revision.clone()),
            ("version", me.version.clone()),
            ("version_metadata", format!("concord-{}", me.concord_version)),
        ]),
    );
    let mut consul = section(&[("acl", "disabled".into()), ("server", me.server.to_string())]);
    if me.server {
        consul.insert("bootstrap".into(), me.bootstrap.to_string());
        consul.insert("known_datacenters".into(), me.known_datacenters.to_string());
        consul.insert("leader".into(), is_leader.to_string());
        consul.insert("leader_addr".into(), me.leader_addr.clone().unwrap_or_default());
    } else {
        consul.insert("known_servers".into(), me.known_servers.to_string());
    }
    out.insert("consul".to_string(), consul);
    if let Some(raft) = &me.raft {
        out.insert("raft".to_string(), raft_stats(raft));
    }
    out.insert(
        "runtime".to_string(),
        section(&[
            ("arch", go_arch().into()),
            (
                "cpu_count",
                std::thread::available_parallelism().map_or(1, |n| n.get()).to_string(),
            ),
            ("os", std::env::consts::OS.into()),
            ("version", format!("concord {}", me.concord_version)),
        ]),
    );
    for (name, extra) in &me.extra_stats {
        out.entry(name.clone())
            .or_default()
            .extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// hashicorp/raft's `Stats()` names.
fn raft_stats(r: &NodeStatus) -> BTreeMap<String, String> {
    let state = match r.role {
        Role::Leader => "Leader",
        Role::Candidate | Role::PreCandidate => "Candidate",
        Role::Follower | Role::Idle => "Follower",
        Role::Failed => "Shutdown",
    };
    let last_contact = match (r.role, r.last_contact_ms) {
        (Role::Leader, _) => "0".to_string(),
        (_, None) => "never".to_string(),
        (_, Some(ms)) => go_duration_ms(ms),
    };
    [
        ("applied_index", r.applied_index.to_string()),
        ("commit_index", r.commit_index.to_string()),
        ("fsm_pending", "0".to_string()),
        ("last_contact", last_contact),
        ("last_log_index", r.last_log_index.to_string()),
        ("last_log_term", r.last_log_term.to_string()),
        ("last_snapshot_index", r.last_snapshot_index.to_string()),
        ("num_peers", r.num_peers.to_string()),
        ("protocol_version", "3".to_string()),
        ("protocol_version_max", "3".to_string()),
        ("protocol_version_min", "0".to_string()),
        ("snapshot_version_max", "1".to_string()),
        ("snapshot_version_min", "0".to_string()),
        ("state", state.to_string()),
        ("term", r.term.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Go's `GOARCH` names, which tools compare against.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A millisecond count as Go's `time.Duration.String()` prints it (`0s`, `23ms`, `1.5s`, `2m3s`).
pub(crate) fn go_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, frac) = (rem / 1000, rem % 1000);
    let mut secs = s.to_string();
    if frac != 0 {
        secs.push_str(format!(".{frac:03}").trim_end_matches('0'));
    }
    match (h, m) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}
