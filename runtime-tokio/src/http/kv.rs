//! `/v1/kv/<key>`: GET (single, `?recurse`, `?keys[&separator]`, `?raw`, blocking, consistency modes),
//! PUT (`?flags`, `?cas`) and DELETE (`?recurse`, `?cas`), shaped exactly as Consul's `kvs_endpoint.go`.
//!
//! A GET is a deferred answer (`deferred.rs`): its parameters are checked at once, the read (which may park)
//! runs after the router's futures are gone, and blocking queries woken together with the same read share
//! one encoded answer (`shared_body.rs`).

use super::catalog::reply;
use super::deferred::{self, Reply};
use super::params::Params;
use super::reply::{encode_json, json, json_answer, HttpError, HttpResult};
use super::shared_body::{SharedAnswer, SharedResult};
use super::{AppState, Backend};
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use concord_core::api::{KvQuery, KvResult, Request, Response as NodeResponse};
use concord_core::state::{Command, CommandResult, KvEntry};
use serde::Serialize;
use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

/// Consul's `structs.DirEntry` on the wire: this field order, `Value` base64 or `null` when empty,
/// `Session` omitted when no lock is held.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DirEntry<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a KvEntry> for DirEntry<'a> {
    fn from(e: &'a KvEntry) -> Self {
        DirEntry {
            lock_index: e.lock_index,
            key: &e.key,
            flags: e.flags,
            value: (!e.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            session: e.session.as_deref().filter(|s| !s.is_empty()),
            create_index: e.create_index,
            modify_index: e.modify_index,
        }
    }
}

/// `/v1/kv/` (the root: only meaningful with `?recurse` or `?keys`).
pub(crate) async fn kv_root<B: Backend>(
    State(state): State<AppState<B>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    kv(&state, method, &uri, &headers, String::new(), body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn kv_key<B: Backend>(
    State(state): State<AppState<B>>,
    key: Result<Path<String>, PathRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match key {
        Ok(Path(key)) => key,
        Err(e) => return HttpError::bad_request(format!("Invalid key: {}", e.body_text())).into_response(),
    };
    kv(&state, method, &uri, &headers, key, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn kv<B: Backend>(
    state: &AppState<B>,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    key: String,
    body: Body,
) -> HttpResult {
    let params = Params::parse(uri)?;
    params.check_dc(&state.settings)?;
    if key.contains('\n') {
        return Err(HttpError::bad_request("Invalid key: must not contain a linefeed (%0A)"));
    }
    match method {
        Method::GET => get(state, &params, uri, key),
        Method::PUT => put(state, &params, uri, headers, key, body).await,
        Method::DELETE => delete(state, &params, uri, key).await,
        other => {
            let mut resp =
                HttpError::new(StatusCode::METHOD_NOT_ALLOWED, format!("method {other} not allowed")).into_response();
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET,PUT,DELETE"));
            Ok(resp)
        }
    }
}

fn missing_key() -> HttpError {
    HttpError::bad_request("Missing key name")
}

/// A GET: the parameters are checked here, the read is deferred.
fn get<B: Backend>(state: &AppState<B>, params: &Params, uri: &Uri, key: String) -> HttpResult {
    let mode = params.read_mode()?;
    let block = params.blocking(&state.settings)?;
    let pretty = params.pretty();
    let root = key.is_empty();
    let query = if params.has("keys") {
        // Consul still honours its historic misspelling.
        let separator = params.get("separator").or_else(|| params.get("seperator"));
        KvQuery::Keys {
            prefix: key,
            separator: separator.filter(|s| !s.is_empty()).map(str::to_string),
        }
    } else if params.has("recurse") {
        KvQuery::Recurse { prefix: key }
    } else if root {
        return Err(missing_key());
    } else {
        KvQuery::Get { key }
    };
    let raw = matches!(query, KvQuery::Get { .. }) && params.has("raw");
    let req = Request::KvRead { query, mode, block };
    let (state, uri) = (state.clone(), uri.clone());
    Ok(deferred::defer(async move {
        reply(read(&state, &uri, req, Shape { pretty, raw, root }).await)
    }))
}

/// What a KV read's answer looks like besides its result.
#[derive(Clone, Copy)]
struct Shape {
    pretty: bool,
    /// `?raw` on a single key.
    raw: bool,
    /// A read of `/v1/kv/` itself.
    root: bool,
}

async fn read<B: Backend>(state: &AppState<B>, uri: &Uri, req: Request, shape: Shape) -> Result<Reply, HttpError> {
    match state.call(req).await.ok_or_else(HttpError::shutting_down)? {
        NodeResponse::Kv { meta, result } => {
            let answer =
                state
                    .bodies
                    .get_or_encode(SharedResult::Kv(result), uri.path(), uri.query(), |r| match r {
                        SharedResult::Kv(r) => Ok(answer(r, shape)),
                        SharedResult::Catalog(_) => Err(HttpError::unexpected()),
                    })?;
            Ok(Reply::Shared(answer, meta))
        }
        NodeResponse::Error(e) => Err(e.into()),
        _ => Err(HttpError::unexpected()),
    }
}

/// A KV read's answer without its metadata: 404 (no body) for a missing key or an empty prefix (but `[]`
/// for the root's keys), the bare value for `?raw`, else JSON.
fn answer(result: &KvResult, shape: Shape) -> SharedAnswer {
    let not_found = || SharedAnswer::new(StatusCode::NOT_FOUND, HeaderMap::new(), Bytes::new());
    match result {
        KvResult::Entries(entries) => match entries.first() {
            None => not_found(),
            Some(entry) if shape.raw => raw(entry.value.clone()),
            Some(_) => json_answer(encode_json(
                &entries.iter().map(DirEntry::from).collect::<Vec<_>>(),
                shape.pretty,
            )),
        },
        KvResult::Keys(keys) if keys.is_empty() && !shape.root => not_found(),
        KvResult::Keys(keys) => json_answer(encode_json(keys, shape.pretty)),
    }
}

/// `?raw`: the bare value, never sniffed (CVE-2020-25864), with Consul's headers.
fn raw(value: Bytes) -> SharedAnswer {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
    h.insert("Content-Security-Policy", HeaderValue::from_static("sandbox"));
    SharedAnswer::new(StatusCode::OK, h, value)
}

/// Consul's `conflictingFlags`: at most one of `flags` may be present.
fn conflicting(params: &Params, uri: &Uri, flags: &[&str]) -> Result<(), HttpError> {
    if flags.iter().filter(|f| params.has(f)).count() > 1 {
        return Err(HttpError::bad_request(format!(
            "Conflicting flags: {}",
            uri.query().unwrap_or_default()
        )));
    }
    Ok(())
}

async fn put<B: Backend>(
    state: &AppState<B>,
    params: &Params,
    uri: &Uri,
    headers: &HeaderMap,
    key: String,
    body: Body,
) -> HttpResult {
    if key.is_empty() {
        return Err(missing_key());
    }
    conflicting(params, uri, &["cas", "acquire", "release"])?;
    if params.has("acquire") || params.has("release") {
        return Err(HttpError::bad_request("sessions are not supported yet"));
    }
    let flags = params.u64("flags")?.unwrap_or(0);
    let cas = params.u64("cas")?;
    let value = read_value(headers, body, state.settings.kv_max_value_size, "kv_max_value_size").await?;
    let cmd = Command::KvSet { key, value, flags, cas };
    let applied = write(state, cmd).await?;
    // As Consul: only a CAS reports the outcome; a plain set always answers `true`.
    Ok(json(&(applied || cas.is_none()), params.pretty()))
}

async fn delete<B: Backend>(state: &AppState<B>, params: &Params, uri: &Uri, key: String) -> HttpResult {
    conflicting(params, uri, &["recurse", "cas"])?;
    let cas = params.u64("cas")?;
    let cmd = if params.has("recurse") {
        Command::KvDeleteTree { prefix: key }
    } else if key.is_empty() {
        return Err(missing_key());
    } else {
        Command::KvDelete { key, cas }
    };
    let applied = write(state, cmd).await?;
    Ok(json(&(applied || cas.is_none()), params.pretty()))
}

async fn write<B: Backend>(state: &AppState<B>, cmd: Command) -> Result<bool, HttpError> {
    match state
        .call(Request::Write(cmd))
        .await
        .ok_or_else(HttpError::shutting_down)?
    {
        NodeResponse::Written {
            result: CommandResult::Bool(ok),
            ..
        } => Ok(ok),
        NodeResponse::Error(e) => Err(e.into()),
        _ => Err(HttpError::unexpected()),
    }
}

/// After refusing an oversized body, read (and discard) this much more of it so a client that writes the
/// whole body before reading the answer still sees the 413 instead of a reset connection.
const DRAIN_MAX: usize = 4 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Read a PUT body of at most `limit` bytes (the configuration option `option`, named in the 413). Nothing
/// beyond `limit` is ever kept in memory.
pub(crate) async fn read_value(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
    option: &str,
) -> Result<Bytes, HttpError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(len) = declared.filter(|&len| len > limit as u64) {
        // A client waiting for `100 Continue` has not sent the body: polling it would ask for it.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            drain(body).await;
        }
        return Err(too_large(Some(len), limit, option));
    }
    let mut buf = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| HttpError::bad_request(format!("Failed to read request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body).await;
                return Err(too_large(None, limit, option));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0;
        while seen < DRAIN_MAX {
            match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => seen += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}

fn too_large(declared: Option<u64>, limit: usize, option: &str) -> HttpError {
    let size = match declared {
        Some(len) => format!("{len} bytes"),
        None => format!("more than {limit} bytes"),
    };
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "Request body({size}) too large, max size: {limit} bytes. See \
             https://developer.hashicorp.com/docs/agent/config/config-files#{option}."
        ),
    )
}
