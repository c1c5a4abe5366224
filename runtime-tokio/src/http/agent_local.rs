//! The agent-local API: `/v1/agent/service*`, `/v1/agent/check*`, `/v1/agent/health/service/*` and
//! maintenance, over the agent's [`crate::local::LocalAgentHandle`] (authoritative for this node;
//! anti-entropy carries it to the catalog).

use super::catalog::Selection;
use super::catalog_json::{tagged_addresses, CheckJson, ServiceAddressJson, WeightsJson};
use super::decode::{parse_body, Obj};
use super::params::Params;
use super::reply::{json, text, HttpError, HttpResult};
use super::{AppState, Backend};
use crate::local::definition::{self, ScriptPolicy};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use concord_core::agent::AgentError;
use concord_core::state::{CheckStatus, ServiceInstance};
use serde::Serialize;
use std::collections::BTreeMap;

fn respond(result: HttpResult) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

fn agent_error(e: AgentError) -> HttpError {
    match e {
        AgentError::BadRequest(m) => HttpError::bad_request(m),
        AgentError::NotFound(m) => HttpError::new(StatusCode::NOT_FOUND, m),
    }
}

async fn body_json(body: Body, limit: usize) -> Result<serde_json::Value, HttpError> {
    let bytes = super::catalog::body_bytes(body, limit).await?;
    parse_body(&bytes).map_err(HttpError::bad_request)
}

/// `api.AgentService`, as `/v1/agent/services` and `/v1/agent/service/:id` show it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    kind: &'a str,
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    meta: &'a BTreeMap<String, String>,
    port: u32,
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tagged_addresses: Option<BTreeMap<&'a str, ServiceAddressJson<'a>>>,
    weights: WeightsJson,
    enable_tag_override: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_hash: Option<String>,
    datacenter: &'a str,
}

fn agent_service<'a>(s: &'a ServiceInstance, dc: &'a str) -> AgentServiceJson<'a> {
    AgentServiceJson {
        kind: &s.kind,
        id: &s.id,
        service: &s.service,
        tags: &s.tags,
        meta: &s.meta,
        port: s.port,
        address: &s.address,
        tagged_addresses: tagged_addresses(&s.tagged_addresses),
        weights: s.weights.into(),
        enable_tag_override: s.enable_tag_override,
        content_hash: None,
        datacenter: dc,
    }
}

/// `GET /v1/agent/services`
pub(crate) async fn services<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond((|| {
        let params = Params::parse(&uri)?;
        let selection = Selection::new(&params, &[])?;
        let services = state.backend.local().services();
        let dc = state.settings.datacenter.as_str();
        let shown = selection.apply(services.iter().map(|s| agent_service(s, dc)).collect());
        let out: BTreeMap<&str, AgentServiceJson> = shown.into_iter().map(|s| (s.id, s)).collect();
        Ok(json(&out, params.pretty()))
    })())
}

/// `GET /v1/agent/service/:id` (with `ContentHash`); `?hash=<ContentHash>` blocks until the definition
/// changes or `?wait` (default 5 min) passes, as Consul's hash-based blocking does.
pub(crate) async fn service<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    respond(
        async {
            let params = Params::parse(&uri)?;
            let local = state.backend.local();
            let wait = match params.value("wait") {
                Some(w) => concord_core::api::parse_go_duration(w)
                    .map_err(|e| HttpError::bad_request(format!("Invalid wait time: {e}")))?,
                None => state.settings.default_query_time,
            }
            .min(state.settings.max_query_time);
            let deadline = tokio::time::Instant::now() + wait;
            let mut changes = local.subscribe();
            let mut shutdown = state.shutdown.clone();
            loop {
                changes.borrow_and_update();
                let Some(s) = local.service(&id) else {
                    return Err(HttpError::new(
                        StatusCode::NOT_FOUND,
                        format!("unknown service ID: {id}"),
                    ));
                };
                let mut out = agent_service(&s, &state.settings.datacenter);
                let hash = format!("{:016x}", crc32fast::hash(&super::reply::encode_json(&out, false)));
                let blocked = params.value("hash") == Some(hash.as_str());
                if blocked && tokio::time::Instant::now() < deadline {
                    tokio::select! {
                        _ = changes.changed() => continue,
                        _ = tokio::time::sleep_until(deadline) => continue,
                        _ = shutdown.wait_for(|s| *s) => return Err(HttpError::shutting_down()),
                    }
                }
                out.content_hash = Some(hash.clone());
                let mut resp = json(&out, params.pretty());
                if let Ok(v) = hash.parse() {
                    resp.headers_mut().insert("X-Consul-ContentHash", v);
                }
                return Ok(resp);
            }
        }
        .await,
    )
}

/// `PUT /v1/agent/service/register[?replace-existing-checks]`
pub(crate) async fn service_register<B: Backend>(State(state): State<AppState<B>>, uri: Uri, body: Body) -> Response {
    respond(
        async {
            let params = Params::parse(&uri)?;
            let value = body_json(body, state.settings.http_max_body_size).await?;
            let obj = Obj::new(&value).map_err(HttpError::bad_request)?;
            let local = state.backend.local();
            let policy = ScriptPolicy {
                allowed: local.enable_script_checks(),
            };
            let (service, checks) = definition::service(obj, policy).map_err(HttpError::bad_request)?;
            let replace = params.has("replace-existing-checks");
            local.add_service(service, checks, replace).map_err(agent_error)?;
            Ok(super::reply::empty(StatusCode::OK))
        }
        .await,
    )
}

/// `PUT /v1/agent/service/deregister/:id`
pub(crate) async fn service_deregister<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
) -> Response {
    if state.backend.local().remove_service(&id) {
        super::reply::empty(StatusCode::OK)
    } else {
        HttpError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."),
        )
        .into_response()
    }
}

/// `GET /v1/agent/checks`
pub(crate) async fn checks<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond((|| {
        let params = Params::parse(&uri)?;
        let selection = Selection::new(&params, &[])?;
        let checks = state.backend.local().checks();
        let out: BTreeMap<&str, CheckJson> = checks
            .iter()
            .map(|c| (c.check_id.as_str(), CheckJson::from(c)))
            .filter(|(_, c)| selection.keep(c))
            .collect();
        Ok(json(&out, params.pretty()))
    })())
}

/// `PUT /v1/agent/check/register`
pub(crate) async fn check_register<B: Backend>(State(state): State<AppState<B>>, body: Body) -> Response {
    respond(
        async {
            let value = body_json(body, state.settings.http_max_body_size).await?;
            let obj = Obj::new(&value).map_err(HttpError::bad_request)?;
            let local = state.backend.local();
            let policy = ScriptPolicy {
                allowed: local.enable_script_checks(),
            };
            let def = definition::check(obj, policy, true).map_err(HttpError::bad_request)?;
            local.add_check(def).map_err(agent_error)?;
            Ok(super::reply::empty(StatusCode::OK))
        }
        .await,
    )
}

/// `PUT /v1/agent/check/deregister/:id`
pub(crate) async fn check_deregister<B: Backend>(State(state): State<AppState<B>>, Path(id): Path<String>) -> Response {
    if state.backend.local().remove_check(&id) {
        super::reply::empty(StatusCode::OK)
    } else {
        HttpError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."),
        )
        .into_response()
    }
}

fn ttl<B: Backend>(state: &AppState<B>, id: &str, status: CheckStatus, output: &str) -> Response {
    match state.backend.local().update_ttl(id, status, output) {
        Ok(()) => super::reply::empty(StatusCode::OK),
        Err(e) => agent_error(e).into_response(),
    }
}

/// `PUT /v1/agent/check/{pass,warn,fail}/:id?note=`: the note becomes the check's output.
fn ttl_with_note<B: Backend>(state: &AppState<B>, id: &str, status: CheckStatus, uri: &Uri) -> Response {
    let note = Params::parse(uri)
        .ok()
        .and_then(|p| p.get("note").map(String::from))
        .unwrap_or_default();
    ttl(state, id, status, &note)
}

pub(crate) async fn check_pass<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    ttl_with_note(&state, &id, CheckStatus::Passing, &uri)
}

pub(crate) async fn check_warn<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    ttl_with_note(&state, &id, CheckStatus::Warning, &uri)
}

pub(crate) async fn check_fail<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    ttl_with_note(&state, &id, CheckStatus::Critical, &uri)
}

/// `PUT /v1/agent/check/update/:id` with `{"Status": …, "Output": …}`
pub(crate) async fn check_update<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let value = body_json(body, state.settings.http_max_body_size).await?;
            let obj = Obj::new(&value).map_err(HttpError::bad_request)?;
            let status = obj.str("Status").map_err(HttpError::bad_request)?;
            let status = CheckStatus::parse(&status)
                .filter(|_| status != "maintenance")
                .ok_or_else(|| HttpError::bad_request(format!("Invalid check status: {status:?}")))?;
            let output = obj.str("Output").map_err(HttpError::bad_request)?;
            Ok(ttl(&state, &id, status, &output))
        }
        .await,
    )
}

/// `api.AgentServiceChecksInfo`
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceChecksInfo<'a> {
    aggregated_status: &'static str,
    service: AgentServiceJson<'a>,
    checks: Vec<CheckJson<'a>>,
}

fn health_code(status: CheckStatus) -> StatusCode {
    match status {
        CheckStatus::Passing => StatusCode::OK,
        CheckStatus::Warning => StatusCode::TOO_MANY_REQUESTS,
        CheckStatus::Critical => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn health_reply<T: Serialize>(status: CheckStatus, body: &T, params: &Params) -> Response {
    let mut resp = if params.get("format") == Some("text") {
        text(StatusCode::OK, status.as_str())
    } else {
        json(body, params.pretty())
    };
    *resp.status_mut() = health_code(status);
    resp
}

/// `GET /v1/agent/health/service/id/:id`: 200 passing, 429 warning, 503 critical, 404 unknown.
pub(crate) async fn health_by_id<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    respond((|| {
        let params = Params::parse(&uri)?;
        let Some((status, service, checks)) = state.backend.local().service_health(&id) else {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                format!("ServiceId {id} not found"),
            ));
        };
        let info = ServiceChecksInfo {
            aggregated_status: status.as_str(),
            service: agent_service(&service, &state.settings.datacenter),
            checks: checks.iter().map(CheckJson::from).collect(),
        };
        Ok(health_reply(status, &info, &params))
    })())
}

/// `GET /v1/agent/health/service/name/:name`: every local instance; the status is the worst.
pub(crate) async fn health_by_name<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    respond((|| {
        let params = Params::parse(&uri)?;
        let local = state.backend.local();
        let found: Vec<_> = local
            .services()
            .into_iter()
            .filter(|s| s.service == name)
            .filter_map(|s| local.service_health(&s.id))
            .collect();
        if found.is_empty() {
            return Err(HttpError::new(
                StatusCode::NOT_FOUND,
                format!("ServiceName {name} Not Found"),
            ));
        }
        let rank = |s: &CheckStatus| match s {
            CheckStatus::Passing => 0,
            CheckStatus::Warning => 1,
            CheckStatus::Critical => 2,
        };
        let worst = found
            .iter()
            .map(|(s, _, _)| *s)
            .max_by_key(rank)
            .unwrap_or(CheckStatus::Passing);
        let dc = state.settings.datacenter.as_str();
        let infos: Vec<ServiceChecksInfo> = found
            .iter()
            .map(|(status, service, checks)| ServiceChecksInfo {
                aggregated_status: status.as_str(),
                service: agent_service(service, dc),
                checks: checks.iter().map(CheckJson::from).collect(),
            })
            .collect();
        Ok(health_reply(worst, &infos, &params))
    })())
}

fn enable(params: &Params) -> Result<(bool, String), HttpError> {
    let enable = match params.get("enable") {
        None | Some("") => return Err(HttpError::bad_request("Missing value for enable")),
        Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
        Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
        Some(v) => return Err(HttpError::bad_request(format!("Invalid value for enable: {v:?}"))),
    };
    Ok((enable, params.get("reason").unwrap_or_default().to_string()))
}

/// `PUT /v1/agent/maintenance?enable=&reason=`
pub(crate) async fn node_maintenance<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond((|| {
        let (on, reason) = enable(&Params::parse(&uri)?)?;
        state.backend.local().set_node_maintenance(on, &reason);
        Ok(super::reply::empty(StatusCode::OK))
    })())
}

/// `PUT /v1/agent/service/maintenance/:id?enable=&reason=`
pub(crate) async fn service_maintenance<B: Backend>(
    State(state): State<AppState<B>>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    respond((|| {
        let (on, reason) = enable(&Params::parse(&uri)?)?;
        state
            .backend
            .local()
            .set_service_maintenance(&id, on, &reason)
            .map_err(agent_error)?;
        Ok(super::reply::empty(StatusCode::OK))
    })())
}
