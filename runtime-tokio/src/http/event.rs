//! `PUT /v1/event/fire/:name` and `GET /v1/event/list` (Consul's `agent/event_endpoint.go`).
//!
//! Invariants:
//! - A fire body is read with a cap of [`USER_EVENT_SIZE_LIMIT`] (a larger one can never fit); errors
//!   answer as Consul's: 400 `Missing name`, 500 with the validation or size error text.
//! - `X-Consul-Index` of a list is Consul's event index (a hash of the last event's ID, 1 when none): not
//!   monotonic, so a blocking list waits while the index equals `?index` and returns on any other value.

use super::params::Params;
use super::reply::{json, HttpError};
use super::{AppState, Backend};
use crate::agent::events::{event_index, UserEvent, USER_EVENT_SIZE_LIMIT};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UserEventJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    payload: Option<String>,
    node_filter: &'a str,
    service_filter: &'a str,
    tag_filter: &'a str,
    version: u32,
    #[serde(rename = "LTime")]
    ltime: u64,
}

impl<'a> From<&'a UserEvent> for UserEventJson<'a> {
    fn from(e: &'a UserEvent) -> Self {
        UserEventJson {
            id: &e.id,
            name: &e.name,
            payload: (!e.payload.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&e.payload)),
            node_filter: &e.node_filter,
            service_filter: &e.service_filter,
            tag_filter: &e.tag_filter,
            version: e.version,
            ltime: e.ltime,
        }
    }
}

fn no_gossip() -> HttpError {
    HttpError::internal("user events need the gossip pool, which is not running on this agent")
}

pub(crate) async fn fire_root() -> Response {
    HttpError::bad_request("Missing name").into_response()
}

pub(crate) async fn fire<B: Backend>(
    State(state): State<AppState<B>>,
    Path(name): Path<String>,
    uri: Uri,
    body: Body,
) -> Response {
    async {
        let params = Params::parse(&uri)?;
        params.check_dc(&state.settings)?;
        let events = state.backend.user_events().ok_or_else(no_gossip)?;
        let too_large = || {
            HttpError::internal(format!(
                "user event exceeds configured limit of {USER_EVENT_SIZE_LIMIT} bytes before encoding"
            ))
        };
        let payload = axum::body::to_bytes(body, USER_EVENT_SIZE_LIMIT)
            .await
            .map_err(|_| too_large())?;
        let filter = |name: &str| params.get(name).unwrap_or_default().to_string();
        let event = UserEvent {
            name,
            payload: payload.to_vec(),
            node_filter: filter("node"),
            service_filter: filter("service"),
            tag_filter: filter("tag"),
            ..UserEvent::default()
        };
        let fired = events.fire(event).await.map_err(HttpError::internal)?;
        Ok::<_, HttpError>(json(&UserEventJson::from(&fired), params.pretty()))
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

pub(crate) async fn list<B: Backend>(State(state): State<AppState<B>>, uri: Uri) -> Response {
    async {
        let params = Params::parse(&uri)?;
        params.check_dc(&state.settings)?;
        let block = params.blocking(&state.settings)?;
        let events = state.backend.user_events().ok_or_else(no_gossip)?;
        let name = params.get("name").filter(|n| !n.is_empty()).map(str::to_string);
        let mut changed = events.subscribe();
        let read = || {
            let mut list = events.list();
            if let Some(name) = &name {
                list.retain(|e| &e.name == name);
            }
            let index = event_index(&list);
            (list, index)
        };
        let (mut list, mut index) = read();
        if let Some(block) = block.filter(|b| b.min_index == index) {
            let mut shutdown = state.shutdown.clone();
            let deadline = tokio::time::Instant::now() + block.wait;
            while index == block.min_index {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = shutdown.wait_for(|s| *s) => return Err(HttpError::shutting_down()),
                }
                (list, index) = read();
            }
        }
        let out: Vec<UserEventJson> = list.iter().map(UserEventJson::from).collect();
        let mut resp = json(&out, params.pretty());
        resp.headers_mut().insert("X-Consul-Index", HeaderValue::from(index));
        Ok::<_, HttpError>(resp)
    }
    .await
    .unwrap_or_else(IntoResponse::into_response)
}
