//! One encoded answer per shared read result, and one wire encoding per answer and metadata: blocking
//! queries of the same range woken by the same change get the same `Arc` result from the node (one read),
//! and this cache makes them share one encoding of the body ([`SharedAnswer`]) and, when their metadata is
//! the same too (it is for one wake-up: same index, same leader contact, same consistency mode), one copy of
//! the whole HTTP answer, status line to body ([`SharedAnswer::wire`]). 10,000 watchers of one service woken
//! by one change cost one read, one JSON encoding and one response head; each connection only writes the
//! shared bytes.
//!
//! Keyed by the result's allocation (pointer identity, never by content, so a hit is the very result the
//! request was answered with) plus the request's path and query string without `index` and `wait` (which
//! select what the body holds: `?tag`, `?passing`, `?filter`, `?pretty`, `?raw`…). A wire encoding is
//! keyed by everything that goes into it besides the answer: the metadata, the headers the middleware put
//! on top, keep-alive, HEAD, and the second of the `Date` header.
//!
//! Entries hold a `Weak` to their result, so the allocation (and its address) cannot be reused while the entry
//! exists; an entry whose result every request has dropped is purged on the next insert. At most
//! [`MAX_ENTRIES`] entries live at once, the oldest going first, and at most [`MAX_WIRES`] wire encodings
//! per answer.

use super::deferred::OnTop;
use super::reply::with_meta;
use axum::body::{Body, Bytes};
use axum::http::response::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use concord_core::api::{CatalogResult, KvResult, QueryMeta};
use std::sync::{Arc, Mutex, Weak};

/// Distinct (result, query) pairs remembered at once.
const MAX_ENTRIES: usize = 64;
/// Distinct wire encodings remembered per answer (metadata × keep-alive × HEAD × second).
const MAX_WIRES: usize = 8;

/// A read result the node may hand to many woken queries at once.
#[derive(Clone)]
pub(crate) enum SharedResult {
    Catalog(Arc<CatalogResult>),
    Kv(Arc<KvResult>),
}

enum WeakResult {
    Catalog(Weak<CatalogResult>),
    Kv(Weak<KvResult>),
}

impl SharedResult {
    fn ptr(&self) -> *const () {
        match self {
            SharedResult::Catalog(r) => Arc::as_ptr(r).cast(),
            SharedResult::Kv(r) => Arc::as_ptr(r).cast(),
        }
    }

    fn strong_count(&self) -> usize {
        match self {
            SharedResult::Catalog(r) => Arc::strong_count(r),
            SharedResult::Kv(r) => Arc::strong_count(r),
        }
    }

    fn downgrade(&self) -> WeakResult {
        match self {
            SharedResult::Catalog(r) => WeakResult::Catalog(Arc::downgrade(r)),
            SharedResult::Kv(r) => WeakResult::Kv(Arc::downgrade(r)),
        }
    }
}

impl WeakResult {
    fn ptr(&self) -> *const () {
        match self {
            WeakResult::Catalog(r) => r.as_ptr().cast(),
            WeakResult::Kv(r) => r.as_ptr().cast(),
        }
    }

    fn alive(&self) -> bool {
        match self {
            WeakResult::Catalog(r) => r.strong_count() > 0,
            WeakResult::Kv(r) => r.strong_count() > 0,
        }
    }
}

/// An answer without its read metadata: status, headers (content type and the like) and encoded body.
pub(crate) struct SharedAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Whether more than one request got the read this answer was made from (it is in the cache).
    shared: bool,
    /// Whole HTTP answers already encoded from this one, with the keep-alive each ended with.
    wires: Mutex<Vec<(WireKey, Bytes, bool)>>,
}

/// Everything a wire encoding depends on besides the answer itself.
#[derive(PartialEq)]
struct WireKey {
    meta: QueryMeta,
    on_top: OnTop,
    keep_alive: bool,
    head: bool,
    date_secs: u64,
}

impl SharedAnswer {
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        SharedAnswer {
            status,
            headers,
            body,
            shared: false,
            wires: Mutex::new(Vec::new()),
        }
    }

    /// Whether more than one request got the read this answer was made from: a wake-up's fan-out.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// The answer as a `Response` with `meta`'s headers (`with_meta`).
    pub(crate) fn response(&self, meta: &QueryMeta) -> Response {
        let mut resp = Response::new(Body::from(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        with_meta(resp, meta)
    }

    /// The whole HTTP answer for a request with this metadata and these headers on top, encoded by `encode`
    /// (given the answer's status and headers, its body, whether it is a HEAD request, and keep-alive,
    /// which it may turn off), or an earlier encoding of the same. Returns the bytes and the final
    /// keep-alive.
    pub(crate) fn wire(
        &self,
        meta: &QueryMeta,
        on_top: &OnTop,
        head: bool,
        keep_alive: bool,
        date_secs: u64,
        encode: impl FnOnce(Parts, &[u8], bool, &mut bool) -> Vec<u8>,
    ) -> (Bytes, bool) {
        let key = WireKey {
            meta: *meta,
            on_top: on_top.clone(),
            keep_alive,
            head,
            date_secs,
        };
        // The keep-alive an encoding ends with is a function of the key (the answer's headers decide), so
        // a cached encoding is stored under the keep-alive it was asked with, beside the one it ended with.
        {
            let wires = self.wires.lock().expect("wire cache lock");
            if let Some((_, bytes, keep)) = wires.iter().find(|(k, _, _)| *k == key) {
                return (bytes.clone(), *keep);
            }
        }
        let mut resp = Response::new(Body::empty());
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        let (parts, _) = super::deferred::finish(on_top.clone(), with_meta(resp, meta)).into_parts();
        // A HEAD answer has no body, and says so, as axum's router does for the answers it completes.
        let body: &[u8] = if head { &[] } else { &self.body };
        let mut keep = keep_alive;
        let bytes = Bytes::from(encode(parts, body, head, &mut keep));
        let mut wires = self.wires.lock().expect("wire cache lock");
        if wires.len() >= MAX_WIRES {
            wires.remove(0);
        }
        wires.push((key, bytes.clone(), keep));
        (bytes, keep)
    }
}

struct Entry {
    result: WeakResult,
    key: String,
    answer: Arc<SharedAnswer>,
}

#[derive(Default)]
pub(crate) struct SharedBodies {
    entries: Mutex<Vec<Entry>>,
}

impl SharedBodies {
    /// The answer for `result` as the request at `path?query` asks it: an earlier encoding of the same
    /// allocation for the same request, or `encode`'s. A result nobody else holds is not remembered.
    pub(crate) fn get_or_encode<E>(
        &self,
        result: SharedResult,
        path: &str,
        query: Option<&str>,
        encode: impl FnOnce(&SharedResult) -> Result<SharedAnswer, E>,
    ) -> Result<Arc<SharedAnswer>, E> {
        if result.strong_count() == 1 {
            return encode(&result).map(Arc::new);
        }
        let key = cache_key(path, query);
        let ptr = result.ptr();
        {
            let entries = self.entries.lock().expect("body cache lock");
            if let Some(e) = entries.iter().find(|e| e.result.ptr() == ptr && e.key == key) {
                return Ok(e.answer.clone());
            }
        }
        let mut answer = encode(&result)?;
        answer.shared = true;
        let answer = Arc::new(answer);
        let mut entries = self.entries.lock().expect("body cache lock");
        entries.retain(|e| e.result.alive());
        if let Some(e) = entries.iter().find(|e| e.result.ptr() == ptr && e.key == key) {
            // Encoded meanwhile by another worker: share that one.
            return Ok(e.answer.clone());
        }
        if entries.len() >= MAX_ENTRIES {
            entries.remove(0);
        }
        entries.push(Entry {
            result: result.downgrade(),
            key,
            answer: answer.clone(),
        });
        Ok(answer)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// `path?query` without the `index` and `wait` parameters (they decide when a body is sent, not what it holds).
fn cache_key(path: &str, query: Option<&str>) -> String {
    let mut key = String::with_capacity(path.len() + query.map_or(0, str::len) + 1);
    key.push_str(path);
    let mut sep = '?';
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        if name == "index" || name == "wait" {
            continue;
        }
        key.push(sep);
        key.push_str(pair);
        sep = '&';
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderName, HeaderValue};
    use concord_core::api::ReadMode;
    use std::cell::Cell;

    fn result(names: &[&str]) -> SharedResult {
        SharedResult::Catalog(Arc::new(CatalogResult::Services(
            names.iter().map(|n| (n.to_string(), vec![])).collect(),
        )))
    }

    fn encode(r: &SharedResult) -> Result<SharedAnswer, ()> {
        let SharedResult::Catalog(r) = r else { panic!() };
        let body = serde_json::to_vec(&**r).unwrap();
        Ok(SharedAnswer::new(StatusCode::OK, HeaderMap::new(), body.into()))
    }

    fn meta(index: u64) -> QueryMeta {
        QueryMeta {
            index,
            known_leader: true,
            last_contact_ms: 0,
            consistency: ReadMode::Default,
        }
    }

    #[test]
    fn one_shared_result_is_encoded_once_per_request_shape() {
        let cache = SharedBodies::default();
        let r = result(&["x"]);
        let others = (r.clone(), r.clone());
        let calls = Cell::new(0);
        let counted = |r: &SharedResult| {
            calls.set(calls.get() + 1);
            encode(r)
        };
        let a = cache
            .get_or_encode(r.clone(), "/v1/health/service/x", Some("index=5&wait=5m"), counted)
            .unwrap();
        let b = cache
            .get_or_encode(r.clone(), "/v1/health/service/x", Some("wait=1s&index=7"), counted)
            .unwrap();
        assert_eq!(calls.get(), 1, "the second watcher reuses the first encoding");
        assert!(Arc::ptr_eq(&a, &b), "the very same answer");
        cache
            .get_or_encode(r.clone(), "/v1/health/service/x", Some("index=5&pretty"), counted)
            .unwrap();
        assert_eq!(calls.get(), 2, "?pretty is another body");
        drop(others);
    }

    #[test]
    fn equal_content_in_another_allocation_is_encoded_again() {
        let cache = SharedBodies::default();
        let (r1, r2) = (result(&["x"]), result(&["y"]));
        let _keep = (r1.clone(), r2.clone());
        let a = cache.get_or_encode(r1, "/v1/catalog/services", None, encode).unwrap();
        let b = cache.get_or_encode(r2, "/v1/catalog/services", None, encode).unwrap();
        assert_ne!(a.body, b.body, "a different read never gets another read's body");
    }

    #[test]
    fn kv_and_catalog_results_are_told_apart() {
        let cache = SharedBodies::default();
        let kv = SharedResult::Kv(Arc::new(KvResult::Keys(vec!["a".into()])));
        let _keep = kv.clone();
        let answer = cache
            .get_or_encode(kv, "/v1/kv/a", Some("keys"), |r| {
                let SharedResult::Kv(r) = r else { panic!("a KV result") };
                let KvResult::Keys(keys) = &**r else { panic!() };
                Ok::<_, ()>(SharedAnswer::new(
                    StatusCode::OK,
                    HeaderMap::new(),
                    serde_json::to_vec(keys).unwrap().into(),
                ))
            })
            .unwrap();
        assert_eq!(&answer.body[..], br#"["a"]"#);
    }

    #[test]
    fn unshared_results_are_not_kept_and_dropped_ones_are_purged() {
        let cache = SharedBodies::default();
        let alone = result(&["x"]);
        cache.get_or_encode(alone, "/p", None, encode).unwrap();
        assert_eq!(cache.len(), 0, "nobody else holds it: nothing to share");
        let shared = result(&["y"]);
        let other = shared.clone();
        cache.get_or_encode(shared.clone(), "/p", None, encode).unwrap();
        assert_eq!(cache.len(), 1);
        drop((shared, other));
        let next = result(&["z"]);
        let _keep = next.clone();
        cache.get_or_encode(next, "/p", None, encode).unwrap();
        assert_eq!(cache.len(), 1, "the dropped result's entry is gone");
    }

    #[test]
    fn one_wire_encoding_per_metadata_and_connection_shape() {
        let answer = SharedAnswer::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"[]"));
        let on_top: OnTop = vec![(
            Some(HeaderName::from_static("x-consul-default-acl-policy")),
            HeaderValue::from_static("allow"),
        )];
        let calls = Cell::new(0);
        let encode = |parts: Parts, _body: &[u8], _head: bool, keep: &mut bool| {
            calls.set(calls.get() + 1);
            let index = parts.headers["x-consul-index"].to_str().unwrap().to_string();
            let close = if *keep { "" } else { "\r\nconnection: close" };
            format!("HTTP/1.1 200 OK\r\nx-consul-index: {index}{close}\r\n\r\n").into_bytes()
        };
        let (a, keep_a) = answer.wire(&meta(7), &on_top, false, true, 1, encode);
        let (b, keep_b) = answer.wire(&meta(7), &on_top, false, true, 1, encode);
        assert_eq!(calls.get(), 1, "the same metadata shares one encoding");
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert!(keep_a && keep_b);
        let (c, _) = answer.wire(&meta(8), &on_top, false, true, 1, encode);
        assert_eq!(calls.get(), 2, "another index is another head");
        assert!(String::from_utf8_lossy(&c).contains("x-consul-index: 8"));
        let (d, keep_d) = answer.wire(&meta(7), &on_top, false, false, 1, encode);
        assert_eq!(calls.get(), 3, "a closing connection gets its own head");
        assert!(!keep_d && String::from_utf8_lossy(&d).contains("connection: close"));
        let (_, keep_again) = answer.wire(&meta(7), &on_top, false, false, 1, encode);
        assert!(!keep_again, "a cached closing answer still closes");
        answer.wire(&meta(7), &on_top, false, true, 2, encode);
        assert_eq!(calls.get(), 4, "a new second, a new Date");
    }

    #[test]
    fn the_key_drops_only_index_and_wait() {
        assert_eq!(cache_key("/a", None), "/a");
        assert_eq!(
            cache_key("/a", Some("index=3&tag=t&wait=1s&indexx=1")),
            "/a?tag=t&indexx=1"
        );
        assert_eq!(cache_key("/a", Some("index&passing")), "/a?passing");
    }
}
