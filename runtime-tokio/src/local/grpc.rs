//! gRPC health checks: one unary call of `grpc.health.v1.Health/Check` over HTTP/2 (hyper's client), the
//! two tiny protobuf messages encoded by hand.
//!
//! `target` is `host:port` or `host:port/service` (Consul's `GRPC`); the service name goes in the request
//! (empty asks for the server's overall health). `SERVING` is passing; `NOT_SERVING`, `UNKNOWN`,
//! `SERVICE_UNKNOWN`, a non-zero `grpc-status`, a transport error or the timeout are critical.

use bytes::{BufMut, Bytes, BytesMut};
use concord_core::state::CheckStatus;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// Run one check. `tls`: `None` for plain HTTP/2 (h2c), else the client configuration (or why it could
/// not be built).
pub(crate) async fn check(
    target: &str,
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
    timeout: Duration,
) -> (CheckStatus, String) {
    let (addr, service) = split_target(target);
    let result = tokio::time::timeout(timeout, call(addr, service, tls)).await;
    match result {
        Ok(Ok(1)) => (CheckStatus::Passing, format!("gRPC check {target}: success")),
        Ok(Ok(status)) => (
            CheckStatus::Critical,
            format!("gRPC check {target}: failed: serving status {}", status_name(status)),
        ),
        Ok(Err(e)) => (CheckStatus::Critical, format!("gRPC check {target}: failed: {e}")),
        Err(_) => (
            CheckStatus::Critical,
            format!("gRPC check {target}: failed: timed out after {timeout:?}"),
        ),
    }
}

/// `host:port/service` → (`host:port`, `service`).
fn split_target(target: &str) -> (&str, &str) {
    target.split_once('/').unwrap_or((target, ""))
}

fn status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        n => n.to_string(),
    }
}

/// The serving status the server answered.
async fn call(
    addr: &str,
    service: &str,
    tls: Option<Result<Arc<rustls::ClientConfig>, String>>,
) -> Result<u64, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => over(tcp, "http", addr, service).await,
        Some(config) => {
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| format!("bad host {host:?}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(config?)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            over(stream, "https", addr, service).await
        }
    }
}

async fn over<S>(io: S, scheme: &str, authority: &str, service: &str) -> Result<u64, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let _abort = AbortOnDrop(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("{scheme}://{authority}{HEALTH_CHECK_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "Consul Health Check")
        .body(Full::new(frame(&encode_request(service))))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let (parts, body) = resp.into_parts();
    if parts.status != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", parts.status));
    }
    // A trailers-only answer carries grpc-status in the headers.
    if let Some(code) = grpc_error(&parts.headers) {
        return Err(code);
    }
    let collected = body.collect().await.map_err(|e| format!("reading the answer: {e}"))?;
    if let Some(code) = collected.trailers().and_then(grpc_error) {
        return Err(code);
    }
    let data = collected.to_bytes();
    let message = unframe(&data).ok_or("malformed gRPC message")?;
    decode_status(message).ok_or_else(|| "malformed HealthCheckResponse".to_string())
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `Some(description)` when the headers carry a non-zero `grpc-status`.
fn grpc_error(headers: &hyper::HeaderMap) -> Option<String> {
    let code = headers.get("grpc-status")?.to_str().ok()?;
    if code == "0" {
        return None;
    }
    let message = headers.get("grpc-message").and_then(|m| m.to_str().ok()).unwrap_or("");
    Some(format!("rpc error: code = {code} desc = {message}"))
}

/// `HealthCheckRequest { string service = 1; }`
pub(crate) fn encode_request(service: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        out.push(0x0a);
        put_varint(&mut out, service.len() as u64);
        out.extend_from_slice(service.as_bytes());
    }
    out
}

/// `HealthCheckResponse { ServingStatus status = 1; }` → the status (absent = 0, `UNKNOWN`).
pub(crate) fn decode_status(mut msg: &[u8]) -> Option<u64> {
    let mut status = 0;
    while !msg.is_empty() {
        let key = take_varint(&mut msg)?;
        match (key >> 3, key & 7) {
            (1, 0) => status = take_varint(&mut msg)?,
            (_, 0) => {
                take_varint(&mut msg)?;
            }
            (_, 1) => msg = msg.get(8..)?,
            (_, 2) => {
                let len = usize::try_from(take_varint(&mut msg)?).ok()?;
                msg = msg.get(len..)?;
            }
            (_, 5) => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    Some(status)
}

/// The gRPC length-prefixed message framing (uncompressed).
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The first message of a gRPC body, if it is complete and uncompressed.
pub(crate) fn unframe(data: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = data.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}
