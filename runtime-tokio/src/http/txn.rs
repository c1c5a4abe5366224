//! `PUT /v1/txn` (Consul's `agent/txn_endpoint.go`): a JSON array of ops, applied through Raft as one log
//! entry, all or nothing.
//!
//! Invariants:
//! - The body is read with a cap of `max(txn_max_req_len, kv_max_value_size)` (Consul's rule) and never
//!   buffered beyond it; a larger declared or streamed body is 413 before any JSON is parsed.
//! - More than [`TXN_MAX_OPS`] ops, or a KV value over `kv_max_value_size`, is 413 with Consul's text; a body
//!   that is not a JSON array of ops is 400 `Failed to parse body: …`. Nothing is proposed in these cases.
//! - Ops Consul's servers would refuse before applying (no key, unknown verb, no operation) are answered 409
//!   with their `OpIndex`, as Consul's `preCheck` does, and nothing is proposed either.
//! - Node/Service/Check ops are not implemented yet: 400 with a line saying so (never silently ignored).
//! - Reply: 200 `{"Results":[…],"Errors":null}`, or 409 `{"Results":null,"Errors":[{"OpIndex":n,"What":…}]}`.

use super::decode::Obj;
use super::kv::{read_value, DirEntry};
use super::params::Params;
use super::reply::{json, HttpError, HttpResult};
use super::{AppState, Backend};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use concord_core::api::{Request, Response as NodeResponse};
use concord_core::state::{Command, CommandResult, KvTxnOp, KvVerb, TxnError, TxnOp, TxnResult, TXN_MAX_OPS};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResultJson<'a> {
    #[serde(rename = "KV")]
    kv: DirEntry<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnErrorJson<'a> {
    op_index: usize,
    what: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResponseJson<'a> {
    results: Option<Vec<TxnResultJson<'a>>>,
    errors: Option<Vec<TxnErrorJson<'a>>>,
}

/// Why a body was turned away before anything was proposed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// A status and one line of text (400, 413).
    Status(StatusCode, String),
    /// Consul's pre-apply checks: 409 with these errors.
    Conflict(Vec<TxnError>),
}

/// The larger of the two limits, as Consul allows for backward compatibility.
pub(crate) fn max_txn_len(txn_max_req_len: usize, kv_max_value_size: usize) -> usize {
    txn_max_req_len.max(kv_max_value_size)
}

pub(crate) async fn txn<B: Backend>(
    State(state): State<AppState<B>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(&state, &uri, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn handle<B: Backend>(state: &AppState<B>, uri: &Uri, headers: &HeaderMap, body: Body) -> HttpResult {
    let params = Params::parse(uri)?;
    params.check_dc(&state.settings)?;
    let limit = max_txn_len(state.settings.txn_max_req_len, state.settings.kv_max_value_size);
    let body = read_value(headers, body, limit, "txn_max_req_len").await?;
    let ops = match parse_ops(&body, state.settings.kv_max_value_size) {
        Ok(ops) => ops,
        Err(Rejected::Status(status, text)) => return Err(HttpError::new(status, text)),
        Err(Rejected::Conflict(errors)) => return Ok(reply(&Err(errors), params.pretty())),
    };
    let outcome = match state
        .call(Request::Write(Command::Txn(ops)))
        .await
        .ok_or_else(HttpError::shutting_down)?
    {
        NodeResponse::Written {
            result: CommandResult::Txn(outcome),
            ..
        } => outcome,
        NodeResponse::Error(e) => return Err(e.into()),
        _ => return Err(HttpError::unexpected()),
    };
    Ok(reply(&outcome, params.pretty()))
}

fn reply(outcome: &Result<Vec<TxnResult>, Vec<TxnError>>, pretty: bool) -> Response {
    let body = match outcome {
        Ok(results) => TxnResponseJson {
            results: Some(
                results
                    .iter()
                    .map(|TxnResult::Kv(e)| TxnResultJson { kv: DirEntry::from(e) })
                    .collect(),
            ),
            errors: None,
        },
        Err(errors) => TxnResponseJson {
            results: None,
            errors: Some(
                errors
                    .iter()
                    .map(|e| TxnErrorJson {
                        op_index: e.op_index,
                        what: &e.what,
                    })
                    .collect(),
            ),
        },
    };
    let mut resp = json(&body, pretty);
    if outcome.is_err() {
        *resp.status_mut() = StatusCode::CONFLICT;
    }
    resp
}

fn parse_error(what: impl std::fmt::Display) -> Rejected {
    Rejected::Status(StatusCode::BAD_REQUEST, format!("Failed to parse body: {what}"))
}

/// Parse a txn body (Go's `encoding/json` into `api.TxnOps`: field names case-insensitive, `Value` base64,
/// `null` for the whole body or a field means absent) and run Consul's checks that need no state.
pub(crate) fn parse_ops(body: &[u8], kv_max_value_size: usize) -> Result<Vec<TxnOp>, Rejected> {
    let value: Value = serde_json::from_slice(body).map_err(parse_error)?;
    let items = match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        _ => return Err(parse_error("expected a JSON array of operations")),
    };
    if items.len() > TXN_MAX_OPS {
        return Err(Rejected::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {TXN_MAX_OPS})",
                items.len()
            ),
        ));
    }
    let mut ops = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (op_index, item) in items.iter().enumerate() {
        let op = match item {
            Value::Null => None,
            item => Some(Obj::new(item).map_err(|_| parse_error("each operation must be a JSON object"))?),
        };
        if let Some(other) = op.and_then(|op| {
            ["Node", "Service", "Check", "Session"]
                .into_iter()
                .find(|n| op.get(&[n]).is_some())
        }) {
            return Err(Rejected::Status(
                StatusCode::BAD_REQUEST,
                format!("{other} operations in transactions are not supported by concord yet (only KV)"),
            ));
        }
        let kv = match op.map(|op| op.obj("KV")).transpose().map_err(parse_error)?.flatten() {
            Some(kv) => kv,
            None => {
                errors.push(TxnError {
                    op_index,
                    what: "no operation specified".into(),
                });
                continue;
            }
        };
        let op = parse_kv(kv, kv_max_value_size)?;
        let verb = match KvVerb::parse(&op.verb) {
            Some(verb) => verb,
            None => {
                errors.push(TxnError {
                    op_index,
                    what: format!("unknown KV verb {:?}", op.verb),
                });
                continue;
            }
        };
        if op.key.is_empty() && verb != KvVerb::DeleteTree {
            errors.push(TxnError {
                op_index,
                what: "Must provide key".into(),
            });
            continue;
        }
        ops.push(TxnOp::Kv(KvTxnOp {
            verb,
            key: op.key,
            value: op.value.into(),
            flags: op.flags,
            index: op.index,
            session: op.session,
        }));
    }
    if errors.is_empty() {
        Ok(ops)
    } else {
        Err(Rejected::Conflict(errors))
    }
}

struct RawKvOp {
    verb: String,
    key: String,
    value: Vec<u8>,
    flags: u64,
    index: u64,
    session: String,
}

fn parse_kv(kv: Obj<'_>, kv_max_value_size: usize) -> Result<RawKvOp, Rejected> {
    let u64_field = |name: &str| match kv.get(&[name]) {
        None => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| parse_error(format!("KV.{name}: expected a non-negative integer"))),
        Some(_) => Err(parse_error(format!("KV.{name}: expected a number"))),
    };
    let key = kv.str("Key").map_err(parse_error)?;
    let value = match kv.get(&["Value"]) {
        None => Vec::new(),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| parse_error(format!("KV.Value: illegal base64 data: {e}")))?,
        Some(_) => return Err(parse_error("KV.Value: expected a base64 string")),
    };
    if value.len() > kv_max_value_size {
        return Err(Rejected::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Value for key {key:?} is too large ({} > {kv_max_value_size} bytes)",
                value.len()
            ),
        ));
    }
    Ok(RawKvOp {
        verb: kv.str("Verb").map_err(parse_error)?,
        key,
        value,
        flags: u64_field("Flags")?,
        index: u64_field("Index")?,
        session: kv.str("Session").map_err(parse_error)?,
    })
}
