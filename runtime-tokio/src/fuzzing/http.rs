//! One HTTP request to the API router (in-process, over the in-memory fake backend, on a paused clock so
//! blocking queries end at once). The input is `[method byte] path-and-query \n (header line \n)* \n body`;
//! a path without a leading `/` gets `/v1/` put in front, so most inputs reach a handler.
//!
//! Checked: no handler panics; every response carries
//! `X-Consul-Default-ACL-Policy`, never `X-Consul-Index: 0`, and a 2xx JSON body is valid JSON; a 5xx
//! is only Consul's own "No path to datacenter" or an error the backend reported.

use crate::http::fake::FakeBackend;
use crate::http::{router, AppState, HttpSettings};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use std::time::Duration;
use tower_service::Service;

const METHODS: [&str; 6] = ["GET", "PUT", "DELETE", "POST", "HEAD", "PATCH"];

/// The request the input describes, or `None` if hyper could never have produced it (bad URI or header).
fn build(data: &[u8]) -> Option<Request<Body>> {
    let (&m, rest) = data.split_first()?;
    let method = Method::from_bytes(METHODS[m as usize % METHODS.len()].as_bytes()).ok()?;
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let target = std::str::from_utf8(&rest[..line_end]).ok()?;
    let uri = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/v1/{target}")
    };
    let mut req = Request::builder().method(method).uri(uri.as_str());
    let mut rest = rest.get(line_end + 1..).unwrap_or(&[]);
    while !rest.is_empty() {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':')?;
        let name = HeaderName::from_bytes(&line[..colon]).ok()?;
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
        req = req.header(name, value);
    }
    req.body(Body::from(rest.to_vec())).ok()
}

pub fn http_request(data: &[u8]) {
    let Some(req) = build(data) else { return };
    // A join that reaches no agent answers 500 with the reason, as Consul's `/v1/agent/join` does.
    let join = req.uri().path().starts_with("/v1/agent/join/");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async move {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let settings = HttpSettings {
            kv_max_value_size: 4096,
            ..HttpSettings::default()
        };
        let state = AppState::new(FakeBackend::new(), settings, shutdown);
        let mut app = router(state);
        // The wait of a blocking query is the backend's (the core's) job; the fake parks until a write, so
        // a parked read is cut off here (the clock is paused: this costs no real time).
        let limit = Duration::from_secs(3600);
        let Ok(resp) = tokio::time::timeout(limit, app.call(req)).await else {
            return;
        };
        let resp = resp.expect("the router is infallible");
        // A HEAD answer has its headers but never a body (axum strips it), so body checks skip it.
        let head = data
            .first()
            .is_some_and(|&m| METHODS[m as usize % METHODS.len()] == "HEAD");
        let Ok(resp) = tokio::time::timeout(limit, crate::http::deferred::resolve(resp, head)).await else {
            return;
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        assert!(
            headers.contains_key("X-Consul-Default-ACL-Policy"),
            "{status}: no ACL policy header"
        );
        if let Some(index) = headers.get("X-Consul-Index") {
            assert_ne!(index.as_bytes(), b"0", "X-Consul-Index: 0");
        }
        let body = tokio::time::timeout(limit, axum::body::to_bytes(resp.into_body(), 64 << 20))
            .await
            .expect("the body completes")
            .expect("the body is readable");
        let json = headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        if status.is_success() && json && !body.is_empty() {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                panic!("{status} with invalid JSON ({e}): {:?}", String::from_utf8_lossy(&body));
            }
        }
        if head {
            assert!(body.is_empty(), "HEAD answered with a body");
        } else if status == StatusCode::INTERNAL_SERVER_ERROR {
            let text = String::from_utf8_lossy(&body);
            // Consul answers a user event its agent refuses (bad filter, too large) with 500 too.
            let event = text.starts_with("Invalid ")
                || text.starts_with("user event exceeds")
                || text == "Cannot provide tag filter without service filter";
            let consuls_own =
                text.contains("No path to datacenter") || (join && text.contains("no member answered")) || event;
            assert!(consuls_own, "500: {text:?}");
        } else {
            assert!(
                !status.is_server_error(),
                "{status}: {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    });
}

/// Raw bytes as an HTTP/1.1 request stream to the server's own parser (`http/server.rs`): the head parser
/// and the body decoders (`Content-Length`, chunked) never panic and agree with themselves whatever the
/// split of the input.
pub fn http_wire(data: &[u8]) {
    crate::http::server::check_wire(data);
}
