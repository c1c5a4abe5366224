//! Go's `http.ServeMux` path canonicalization, which fronts every Consul endpoint: a request whose
//! (percent-decoded) path has `.` or `..` segments or repeated slashes is answered `301 Moved Permanently`
//! with the cleaned path, before any handler sees it. So `/v1/kv/../agent/self` never reads or writes a KV
//! key named `..`, exactly as with Consul.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decoding as Go's `url.PathUnescape` does it; `None` for a malformed escape (the handlers
/// report those themselves).
fn decode(raw: &str) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Go's `cleanPath`: `path.Clean` of a rooted path, keeping a trailing slash.
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in path.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for p in &parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    let trailing = path.ends_with(b"/") && !parts.is_empty();
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out
}

/// Escape what a path may not hold literally (Go's `url.URL.EscapedPath` for an ordinary path).
fn encode(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) async fn redirect_unclean(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let Some(decoded) = decode(uri.path()) else {
        return next.run(req).await;
    };
    let cleaned = clean(&decoded);
    if cleaned == decoded {
        return next.run(req).await;
    }
    let mut location = encode(&cleaned);
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    let mut resp = (StatusCode::MOVED_PERMANENTLY, "").into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        let c = |p: &str| String::from_utf8(clean(p.as_bytes())).unwrap();
        assert_eq!(c("/v1/kv/a/b"), "/v1/kv/a/b");
        assert_eq!(c("/v1/kv/"), "/v1/kv/");
        assert_eq!(c("/v1/kv/../agent/self"), "/v1/agent/self");
        assert_eq!(c("/v1/kv/a/./b"), "/v1/kv/a/b");
        assert_eq!(c("/v1/kv//a"), "/v1/kv/a");
        assert_eq!(c("/../../x/"), "/x/");
        assert_eq!(c("/"), "/");
        assert_eq!(c(""), "/");
        assert_eq!(decode("/a%2e%2E/%2Fb").unwrap(), b"/a../\x2fb".to_vec());
        assert_eq!(decode("/a%2"), None);
        assert_eq!(encode(b"/v1/kv/a b\n"), "/v1/kv/a%20b%0A");
    }
}
