//! `/v1/catalog/*` and `/v1/health/*`: reads in every consistency mode with blocking, `?tag`, `?passing`,
//! `?filter`, `?node-meta`, and the two catalog writes, shaped as Consul's `catalog_endpoint.go` and
//! `health_endpoint.go` (lists are `[]`, never `null`).

use super::catalog_json::{
    CheckJson, CheckServiceNodeJson, NodeJson, NodeServiceJson, NodeServiceListJson, NodeServicesJson, ServiceNodeJson,
};
use super::coordinate::{sort_near, Near};
use super::decode::{parse_body, Obj};
use super::deferred::{self, Reply};
use super::filter::Filter;
use super::params::Params;
use super::reply::{encode_json, json, json_answer, HttpError, HttpResult};
use super::shared_body::SharedResult;
use super::{AppState, Backend};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use concord_core::api::{
    validate_meta, CatalogQuery, CatalogResult, Query, QueryMeta, Request, Response as NodeResponse,
};
use concord_core::state::{
    CatalogError, CatalogNode, CheckDefinition, CheckServiceNode, CheckStatus, Command, CommandResult, HealthCheck,
    Registration, ServiceAddress, ServiceInstance, Weights,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

fn respond(result: HttpResult) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A deferred read's answer, or its error's.
pub(crate) fn reply(result: Result<Reply, HttpError>) -> Reply {
    result.unwrap_or_else(|e| e.into_response().into())
}

pub(super) fn params<B>(state: &AppState<B>, uri: &Uri) -> Result<Params, HttpError> {
    let params = Params::parse(uri)?;
    params.check_dc(&state.settings)?;
    Ok(params)
}

/// Read `query` in the request's mode, blocking if asked.
pub(crate) async fn read_parts<B: Backend>(
    state: &AppState<B>,
    params: &Params,
    query: CatalogQuery,
) -> Result<(QueryMeta, Arc<CatalogResult>), HttpError> {
    let req = Request::Read {
        query: Query::Catalog(query),
        mode: params.read_mode()?,
        block: params.blocking(&state.settings)?,
    };
    match state.call(req).await.ok_or_else(HttpError::shutting_down)? {
        NodeResponse::Catalog { meta, result } => Ok((meta, result)),
        NodeResponse::Error(e) => Err(e.into()),
        _ => Err(HttpError::unexpected()),
    }
}

/// `?filter=` and `?node-meta=k:v` (repeatable, all must match) as one predicate on an item's JSON.
pub(crate) struct Selection {
    filter: Option<Filter>,
    node_meta: Vec<(String, String)>,
    /// Where the node's Meta is in an item: `["NodeMeta"]`, `["Node", "Meta"]`, `["Meta"]`; empty = none.
    meta_path: &'static [&'static str],
}

impl Selection {
    pub(crate) fn new(params: &Params, meta_path: &'static [&'static str]) -> Result<Self, HttpError> {
        let filter =
            match params.value("filter") {
                None => None,
                Some(f) => Some(Filter::parse(f).map_err(|e| {
                    HttpError::bad_request(format!("Failed to create boolean expression evaluator: {e}"))
                })?),
            };
        let node_meta = params
            .all("node-meta")
            .into_iter()
            .map(|kv| match kv.split_once(':') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv.to_string(), String::new()),
            })
            .collect();
        Ok(Selection {
            filter,
            node_meta,
            meta_path,
        })
    }

    pub(crate) fn apply<T: Serialize>(&self, items: Vec<T>) -> Vec<T> {
        items.into_iter().filter(|item| self.keep(item)).collect()
    }

    /// Whether one item passes the filter and the node-meta selectors.
    pub(crate) fn keep<T: Serialize>(&self, item: &T) -> bool {
        if self.filter.is_none() && (self.node_meta.is_empty() || self.meta_path.is_empty()) {
            return true;
        }
        let v = serde_json::to_value(item).expect("JSON shapes always encode");
        let meta_ok = self.meta_path.is_empty()
            || self.node_meta.iter().all(|(k, want)| {
                let meta = self.meta_path.iter().try_fold(&v, |v, seg| v.get(seg));
                meta.and_then(|m| m.get(k)).and_then(|x| x.as_str()) == Some(want.as_str())
            });
        meta_ok && self.filter.as_ref().is_none_or(|f| f.matches(&v))
    }
}

/// Read `query` and answer with the JSON `shape` makes of its result (given `?pretty`), with this request's
/// metadata headers. Blocking queries woken together with the same result share one encoding (and, with
/// the same metadata, one whole answer: `shared_body.rs`).
async fn read_json<B: Backend>(
    state: &AppState<B>,
    uri: &Uri,
    params: &Params,
    query: CatalogQuery,
    shape: impl FnOnce(&CatalogResult, bool) -> Result<Vec<u8>, HttpError>,
) -> Result<Reply, HttpError> {
    let (meta, result) = read_parts(state, params, query).await?;
    let pretty = params.pretty();
    let answer = state
        .bodies
        .get_or_encode(SharedResult::Catalog(result), uri.path(), uri.query(), |r| match r {
            SharedResult::Catalog(r) => Ok(json_answer(shape(r, pretty)?)),
            SharedResult::Kv(_) => Err(HttpError::unexpected()),
        })?;
    Ok(Reply::Shared(answer, meta))
}

fn tags(params: &Params) -> Vec<String> {
    params.all("tag").into_iter().map(str::to_string).collect()
}

/// `GET /v1/catalog/datacenters`: only the local one is known.
pub(crate) async fn datacenters<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    respond((|| {
        let params = Params::parse(&uri)?;
        Ok(json(&[state.settings.datacenter.as_str()], params.pretty()))
    })())
}

/// `GET /v1/catalog/nodes`
pub(crate) async fn nodes<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    let ready = async {
        let params = params(&state, &uri)?;
        let selection = Selection::new(&params, &["Meta"])?;
        let near = Near::read(&state, &params).await?;
        Ok::<_, HttpError>((params, selection, near))
    }
    .await;
    let (params, selection, near) = match ready {
        Ok(ready) => ready,
        Err(e) => return e.into_response(),
    };
    // The read (which may park) runs after the router's futures are gone (`deferred.rs`).
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, CatalogQuery::Nodes, |result, pretty| {
                let CatalogResult::Nodes(nodes) = result else {
                    return Err(HttpError::unexpected());
                };
                let mut nodes: Vec<&CatalogNode> = nodes.iter().collect();
                sort_near(&near, &mut nodes, |n| &n.node);
                let out = selection.apply(nodes.into_iter().map(NodeJson::from).collect());
                Ok(encode_json(&out, pretty))
            })
            .await,
        )
    })
}

/// `GET /v1/catalog/services`: name → tags.
pub(crate) async fn services<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    let params = match params(&state, &uri) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    // The read (which may park) runs after the router's futures are gone (`deferred.rs`).
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, CatalogQuery::Services, |result, pretty| {
                let CatalogResult::Services(services) = result else {
                    return Err(HttpError::unexpected());
                };
                Ok(encode_json(services, pretty))
            })
            .await,
        )
    })
}

/// `GET /v1/catalog/service/:name`
pub(crate) async fn service<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    let ready = async {
        let params = params(&state, &uri)?;
        let selection = Selection::new(&params, &["NodeMeta"])?;
        let near = Near::read(&state, &params).await?;
        let query = CatalogQuery::Service {
            name,
            tags: tags(&params),
        };
        Ok::<_, HttpError>((params, selection, near, query))
    }
    .await;
    let (params, selection, near, query) = match ready {
        Ok(ready) => ready,
        Err(e) => return e.into_response(),
    };
    // The read (which may park) runs after the router's futures are gone (`deferred.rs`).
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, query, |result, pretty| {
                let CatalogResult::ServiceNodes(rows) = result else {
                    return Err(HttpError::unexpected());
                };
                let mut rows: Vec<&(CatalogNode, ServiceInstance)> = rows.iter().collect();
                sort_near(&near, &mut rows, |(n, _)| &n.node);
                let out = selection.apply(rows.into_iter().map(|(n, s)| ServiceNodeJson::new(n, s)).collect());
                Ok(encode_json(&out, pretty))
            })
            .await,
        )
    })
}

/// `GET /v1/catalog/node/:node`: `null` for an unknown node.
pub(crate) async fn node<B: Backend>(State(state): State<AppState<B>>, Path(node): Path<String>, uri: Uri) -> Response {
    let ready = params(&state, &uri).and_then(|params| Ok((Selection::new(&params, &[])?, params)));
    let (selection, params) = match ready {
        Ok(ready) => ready,
        Err(e) => return e.into_response(),
    };
    // The read (which may park) runs after the router's futures are gone (`deferred.rs`).
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, CatalogQuery::Node { node }, |result, pretty| {
                let CatalogResult::Node(found) = result else {
                    return Err(HttpError::unexpected());
                };
                let out = found.as_deref().map(|(n, services)| NodeServicesJson {
                    node: n.into(),
                    services: services
                        .iter()
                        .map(|s| (s.id.as_str(), NodeServiceJson::from(s)))
                        .filter(|(_, json)| selection.keep(json))
                        .collect(),
                });
                Ok(encode_json(&out, pretty))
            })
            .await,
        )
    })
}

/// `GET /v1/catalog/node-services/:node`
pub(crate) async fn node_services<B: Backend>(
    State(state): State<AppState<B>>,
    Path(node): Path<String>,
    uri: Uri,
) -> Response {
    let ready = params(&state, &uri).and_then(|params| Ok((Selection::new(&params, &[])?, params)));
    let (selection, params) = match ready {
        Ok(ready) => ready,
        Err(e) => return e.into_response(),
    };
    // The read (which may park) runs after the router's futures are gone (`deferred.rs`).
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, CatalogQuery::Node { node }, |result, pretty| {
                let CatalogResult::Node(found) = result else {
                    return Err(HttpError::unexpected());
                };
                let out = match found.as_deref() {
                    Some((n, services)) => NodeServiceListJson {
                        node: Some(n.into()),
                        services: selection.apply(services.iter().map(NodeServiceJson::from).collect()),
                    },
                    None => NodeServiceListJson {
                        node: None,
                        services: Vec::new(),
                    },
                };
                Ok(encode_json(&out, pretty))
            })
            .await,
        )
    })
}

/// A checks read; the read itself (which may park) is deferred (`deferred.rs`). With `near`, `?near=` sorts
/// the checks by their node's estimated RTT (Consul's `sortNodesByDistanceFrom` on `ServiceChecks` and
/// `ChecksInState`).
async fn checks_read<B: Backend>(state: AppState<B>, uri: Uri, query: CatalogQuery, near: bool) -> Response {
    let ready = async {
        let params = params(&state, &uri)?;
        let selection = Selection::new(&params, &[])?;
        let near = if near { Near::read(&state, &params).await? } else { None };
        Ok::<_, HttpError>((params, selection, near))
    }
    .await;
    let (params, selection, near) = match ready {
        Ok(ready) => ready,
        Err(e) => return e.into_response(),
    };
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, query, |result, pretty| {
                let CatalogResult::Checks(checks) = result else {
                    return Err(HttpError::unexpected());
                };
                let mut checks: Vec<&HealthCheck> = checks.iter().collect();
                sort_near(&near, &mut checks, |c| &c.node);
                let out = selection.apply(checks.into_iter().map(CheckJson::from).collect());
                Ok(encode_json(&out, pretty))
            })
            .await,
        )
    })
}

/// `GET /v1/health/node/:node`
pub(crate) async fn health_node<B: Backend>(
    State(state): State<AppState<B>>,
    Path(node): Path<String>,
    uri: Uri,
) -> Response {
    checks_read(state, uri, CatalogQuery::HealthNode { node }, false).await
}

/// `GET /v1/health/checks/:service`
pub(crate) async fn health_checks<B: Backend>(
    State(state): State<AppState<B>>,
    Path(service): Path<String>,
    uri: Uri,
) -> Response {
    checks_read(state, uri, CatalogQuery::HealthChecks { service }, true).await
}

/// `GET /v1/health/state/:state` (`any|passing|warning|critical`)
pub(crate) async fn health_state<B: Backend>(
    State(state): State<AppState<B>>,
    Path(status): Path<String>,
    uri: Uri,
) -> Response {
    let status = match status.as_str() {
        "any" => None,
        s => match CheckStatus::parse(s).filter(|_| s != "maintenance") {
            Some(s) => Some(s),
            None => return HttpError::bad_request("Bad check state").into_response(),
        },
    };
    checks_read(state, uri, CatalogQuery::HealthState { status }, true).await
}

/// `?passing` as Go's `strconv.ParseBool`, present-and-empty meaning true.
fn passing(params: &Params) -> Result<bool, HttpError> {
    match params.get("passing") {
        None => Ok(false),
        Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(HttpError::bad_request(format!("Invalid value for ?passing: {v:?}"))),
    }
}

/// `GET /v1/health/service/:service`
pub(crate) async fn health_service<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
    uri: Uri,
) -> Response {
    let ready = async {
        let params = params(&state, &uri)?;
        let selection = Selection::new(&params, &["Node", "Meta"])?;
        let near = Near::read(&state, &params).await?;
        let query = CatalogQuery::HealthService {
            name,
            tags: tags(&params),
            passing: passing(&params)?,
        };
        Ok::<_, HttpError>((params, selection, near, query))
    }
    .await;
    let (params, selection, near, query) = match ready {
        Ok(ready) => ready,
        Err(e) => return e.into_response(),
    };
    // The read (which may park) runs after the router's futures are gone (`deferred.rs`).
    deferred::defer(async move {
        reply(
            read_json(&state, &uri, &params, query, |result, pretty| {
                let CatalogResult::CheckServiceNodes(entries) = result else {
                    return Err(HttpError::unexpected());
                };
                let mut entries: Vec<&CheckServiceNode> = entries.iter().collect();
                sort_near(&near, &mut entries, |e| &e.node.node);
                let out = selection.apply(entries.into_iter().map(CheckServiceNodeJson::from).collect());
                Ok(encode_json(&out, pretty))
            })
            .await,
        )
    })
}

// ---- writes -----------------------------------------------------------------------------------------

/// Read a JSON request body of at most `limit` bytes (`limits.http_max_body_size`); nothing beyond the
/// limit is buffered.
pub(crate) async fn body_bytes(body: Body, limit: usize) -> Result<Bytes, HttpError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body too large, max size: {limit} bytes (limits.http_max_body_size)"),
        )
    })
}

/// Send a catalog write; answer `true` as Consul does.
pub(crate) async fn write<B: Backend>(state: &AppState<B>, cmd: Command, pretty: bool) -> HttpResult {
    match state
        .call(Request::Write(cmd))
        .await
        .ok_or_else(HttpError::shutting_down)?
    {
        NodeResponse::Written {
            result: CommandResult::Bool(_),
            ..
        } => Ok(json(&true, pretty)),
        NodeResponse::Written {
            result: CommandResult::Refused(e),
            ..
        } => Err(refused(e)),
        NodeResponse::Error(e) => Err(e.into()),
        _ => Err(HttpError::unexpected()),
    }
}

pub(crate) fn refused(e: CatalogError) -> HttpError {
    match e {
        CatalogError::MissingNode
        | CatalogError::MissingAddress
        | CatalogError::MissingServiceName
        | CatalogError::MissingCheckId => HttpError::bad_request(e.to_string()),
        _ => HttpError::internal(e.to_string()),
    }
}

pub(super) fn put_only(method: &Method) -> Result<(), HttpError> {
    if method == Method::PUT {
        Ok(())
    } else {
        Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed"),
        ))
    }
}

/// `PUT /v1/catalog/register`
pub(crate) async fn register<B: Backend>(
    State(state): State<AppState<B>>,
    method: Method,
    uri: Uri,
    body: Body,
) -> Response {
    respond(
        async {
            put_only(&method)?;
            let params = params(&state, &uri)?;
            let body = body_bytes(body, state.settings.http_max_body_size).await?;
            let value = parse_body(&body).map_err(HttpError::bad_request)?;
            let mut reg =
                registration(Obj::new(&value).map_err(HttpError::bad_request)?).map_err(HttpError::bad_request)?;
            // Refused here rather than as a Raft entry that changes nothing.
            if reg.node.is_empty() {
                return Err(refused(CatalogError::MissingNode));
            }
            if reg.address.is_empty() && !reg.skip_node_update {
                return Err(refused(CatalogError::MissingAddress));
            }
            if reg.datacenter.is_empty() {
                reg.datacenter = state.settings.datacenter.clone();
            }
            validate_meta(&reg.node_meta, "Node")
                .map_err(|e| HttpError::bad_request(format!("Invalid node metadata: {e}")))?;
            if let Some(service) = &reg.service {
                validate_meta(&service.meta, "Service")
                    .map_err(|e| HttpError::bad_request(format!("Invalid Service Meta: {e}")))?;
            }
            write(&state, Command::CatalogRegister(Box::new(reg)), params.pretty()).await
        }
        .await,
    )
}

/// `PUT /v1/catalog/deregister`
pub(crate) async fn deregister<B: Backend>(
    State(state): State<AppState<B>>,
    method: Method,
    uri: Uri,
    body: Body,
) -> Response {
    respond(
        async {
            put_only(&method)?;
            let params = params(&state, &uri)?;
            let body = body_bytes(body, state.settings.http_max_body_size).await?;
            let value = parse_body(&body).map_err(HttpError::bad_request)?;
            let o = Obj::new(&value).map_err(HttpError::bad_request)?;
            let opt = |s: String| (!s.is_empty()).then_some(s);
            let cmd = Command::CatalogDeregister {
                node: o.str("Node").map_err(HttpError::bad_request)?,
                service_id: opt(o.str("ServiceID").map_err(HttpError::bad_request)?),
                check_id: opt(o.str("CheckID").map_err(HttpError::bad_request)?),
            };
            write(&state, cmd, params.pretty()).await
        }
        .await,
    )
}

/// A `RegisterRequest` body.
fn registration(o: Obj) -> Result<Registration, String> {
    let mut checks = Vec::new();
    if let Some(c) = o.obj("Check")? {
        checks.push(check(c)?);
    }
    for c in o.objs("Checks")? {
        checks.push(check(c)?);
    }
    Ok(Registration {
        id: o.str("ID")?,
        node: o.str("Node")?,
        address: o.str("Address")?,
        datacenter: o.str("Datacenter")?,
        tagged_addresses: o.string_map("TaggedAddresses")?,
        node_meta: o.string_map("NodeMeta")?,
        skip_node_update: o.bool("SkipNodeUpdate")?,
        service: o.obj("Service")?.map(service_body).transpose()?,
        checks,
    })
}

/// A `NodeService` body (`ID` defaults to the name). Also takes `Name` for the name, as the agent API does.
pub(crate) fn service_body(o: Obj) -> Result<ServiceInstance, String> {
    let name = o.str_any(&["Service", "Name"])?;
    let id = o.str("ID")?;
    let mut tagged = BTreeMap::new();
    if let Some(t) = o.obj("TaggedAddresses")? {
        for (k, v) in t.entries() {
            let a = Obj::new(v)?;
            tagged.insert(
                k.clone(),
                ServiceAddress {
                    address: a.str("Address")?,
                    port: a.u32("Port")?,
                },
            );
        }
    }
    let weights = match o.obj("Weights")? {
        Some(w) => Weights {
            passing: w.u32("Passing")?,
            warning: w.u32("Warning")?,
        },
        None => Weights::default(),
    };
    Ok(ServiceInstance {
        id: if id.is_empty() { name.clone() } else { id },
        service: name,
        kind: o.str("Kind")?,
        tags: o.strings("Tags")?,
        address: o.str("Address")?,
        tagged_addresses: tagged,
        meta: o.string_map("Meta")?,
        port: o.u32("Port")?,
        weights,
        enable_tag_override: o.bool("EnableTagOverride")?,
        create_index: 0,
        modify_index: 0,
    })
}

/// A catalog `HealthCheck` body (`CheckID` defaults to `Name`, `Status` to critical).
fn check(o: Obj) -> Result<HealthCheck, String> {
    let name = o.str("Name")?;
    let id = o.str_any(&["CheckID", "ID"])?;
    let status = match o.str("Status")?.as_str() {
        "" => CheckStatus::Critical,
        s => CheckStatus::parse(s).ok_or_else(|| format!("Invalid check status: {s:?}"))?,
    };
    let definition = match o.obj("Definition")? {
        Some(d) => CheckDefinition {
            http: d.str("HTTP")?,
            method: d.str("Method")?,
            header: BTreeMap::new(),
            body: d.str("Body")?,
            tls_server_name: d.str("TLSServerName")?,
            tls_skip_verify: d.bool("TLSSkipVerify")?,
            tcp: d.str("TCP")?,
            interval_ns: d.duration("Interval")?.as_nanos() as u64,
            timeout_ns: d.duration("Timeout")?.as_nanos() as u64,
            deregister_critical_service_after_ns: d.duration("DeregisterCriticalServiceAfter")?.as_nanos() as u64,
            grpc: d.str("GRPC")?,
            grpc_use_tls: d.bool("GRPCUseTLS")?,
            alias_node: d.str("AliasNode")?,
            alias_service: d.str("AliasService")?,
            docker_container_id: d.str("DockerContainerID")?,
            shell: d.str("Shell")?,
        },
        None => CheckDefinition::default(),
    };
    Ok(HealthCheck {
        node: o.str("Node")?,
        check_id: if id.is_empty() { name.clone() } else { id },
        name,
        status,
        notes: o.str("Notes")?,
        output: o.str("Output")?,
        service_id: o.str("ServiceID")?,
        check_type: o.str("Type")?,
        definition,
        ..HealthCheck::default()
    })
}
