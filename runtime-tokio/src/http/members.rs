//! Gossip endpoints: `/v1/agent/members`, `/v1/agent/join/:addr`, `/v1/agent/force-leave/:node` and
//! `/v1/operator/keyring`.

use super::params::Params;
use super::reply::{empty, json, HttpError, HttpResult};
use super::{AppState, Backend};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use concord_core::gossip::Member;
use serde::Serialize;
use std::collections::BTreeMap;

/// A keyring operation (`/v1/operator/keyring`, `concord keyring`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyringOp {
    List,
    Install(String),
    Use(String),
    Remove(String),
}

/// One pool's keyring as `GET /v1/operator/keyring` reports it (Consul's `KeyringResponse`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyringPool {
    #[serde(rename = "WAN")]
    pub wan: bool,
    pub datacenter: String,
    pub segment: String,
    /// Each key and how many members hold it.
    pub keys: BTreeMap<String, usize>,
    pub primary_keys: BTreeMap<String, usize>,
    pub num_nodes: usize,
}

fn respond(result: HttpResult) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn params<B>(state: &AppState<B>, uri: &Uri) -> Result<Params, HttpError> {
    let params = Params::parse(uri)?;
    params.check_dc(&state.settings)?;
    Ok(params)
}

/// Consul's member JSON (serf `Member` through `api.AgentMember`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MemberJson<'a> {
    name: &'a str,
    addr: String,
    port: u16,
    tags: &'a BTreeMap<String, String>,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

pub(crate) fn member_json(m: &Member) -> MemberJson<'_> {
    MemberJson {
        name: &m.name,
        addr: m.addr.ip().to_string(),
        port: m.addr.port(),
        tags: &m.tags,
        status: m.status as u8,
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

/// `GET /v1/agent/members[?wan]`.
pub(crate) async fn agent_members<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let members = state
                .backend
                .members(params.has("wan"))
                .await
                .map_err(HttpError::internal)?;
            let body: Vec<MemberJson> = members.iter().map(member_json).collect();
            Ok(json(&body, params.pretty()))
        }
        .await,
    )
}

/// `PUT /v1/agent/join/:address[?wan]`.
pub(crate) async fn agent_join<B: Backend>(
    State(state): State<AppState<B>>,
    Path(addr): Path<String>,
    uri: Uri,
) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            state
                .backend
                .join(addr, params.has("wan"))
                .await
                .map_err(HttpError::internal)?;
            Ok(empty(StatusCode::OK))
        }
        .await,
    )
}

/// `PUT /v1/agent/force-leave/:node[?prune][&wan]`.
pub(crate) async fn agent_force_leave<B: Backend>(
    State(state): State<AppState<B>>,
    Path(node): Path<String>,
    uri: Uri,
) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            state
                .backend
                .force_leave(node, params.has("prune"), params.has("wan"))
                .await
                .map_err(HttpError::internal)?;
            Ok(empty(StatusCode::OK))
        }
        .await,
    )
}

#[derive(serde::Deserialize)]
struct KeyBody {
    #[serde(rename = "Key", alias = "key")]
    key: String,
}

/// `/v1/operator/keyring`: GET lists, POST installs, PUT makes primary, DELETE removes (body `{"Key":…}`).
pub(crate) async fn operator_keyring<B: Backend>(
    State(state): State<AppState<B>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    respond(
        async {
            let params = params(&state, &uri)?;
            let key = || -> Result<String, HttpError> {
                serde_json::from_slice::<KeyBody>(&body)
                    .map(|b| b.key)
                    .map_err(|e| HttpError::bad_request(format!("Request decode failed: {e}")))
            };
            let op = match method {
                Method::GET => KeyringOp::List,
                Method::POST => KeyringOp::Install(key()?),
                Method::PUT => KeyringOp::Use(key()?),
                Method::DELETE => KeyringOp::Remove(key()?),
                _ => {
                    return Err(HttpError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        format!("method {method} not allowed"),
                    ))
                }
            };
            let listing = op == KeyringOp::List;
            let pools = state.backend.keyring(op).await.map_err(HttpError::internal)?;
            if listing {
                Ok(json(&pools, params.pretty()))
            } else {
                Ok(empty(StatusCode::OK))
            }
        }
        .await,
    )
}
