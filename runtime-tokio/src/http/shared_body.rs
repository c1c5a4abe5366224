//! One encoded JSON body per shared read result: blocking queries of the same range woken by the same change
//! get the same `Arc<CatalogResult>` from the node (one read), and this cache makes them also share one
//! encoding. Keyed by that allocation (pointer identity, never by content, so a hit is the very result the
//! request was answered with) plus the request's path and query string without `index` and `wait` (which
//! select what the body holds: `?tag`, `?passing`, `?filter`, `?pretty`…). Headers stay per request.
//!
//! Entries hold a `Weak` to their result, so the allocation (and its address) cannot be reused while the entry
//! exists; an entry whose result every request has dropped is purged on the next insert. At most
//! [`MAX_ENTRIES`] entries live at once, the oldest going first.

use axum::body::Bytes;
use concord_core::api::CatalogResult;
use std::sync::{Arc, Mutex, Weak};

/// Distinct (result, query) pairs remembered at once.
const MAX_ENTRIES: usize = 64;

struct Entry {
    result: Weak<CatalogResult>,
    key: String,
    body: Bytes,
}

#[derive(Default)]
pub(crate) struct SharedBodies {
    entries: Mutex<Vec<Entry>>,
}

impl SharedBodies {
    /// The body for `result` as the request at `path?query` asks it: a copy of an earlier encoding of the
    /// same allocation for the same request, or `encode`'s. A result nobody else holds is not remembered.
    pub(crate) fn get_or_encode<E>(
        &self,
        result: &Arc<CatalogResult>,
        path: &str,
        query: Option<&str>,
        encode: impl FnOnce(&CatalogResult) -> Result<Vec<u8>, E>,
    ) -> Result<Bytes, E> {
        if Arc::strong_count(result) == 1 {
            return encode(result).map(Bytes::from);
        }
        let key = cache_key(path, query);
        let ptr = Arc::as_ptr(result);
        {
            let entries = self.entries.lock().expect("body cache lock");
            if let Some(e) = entries.iter().find(|e| e.result.as_ptr() == ptr && e.key == key) {
                return Ok(e.body.clone());
            }
        }
        let body = Bytes::from(encode(result)?);
        let mut entries = self.entries.lock().expect("body cache lock");
        entries.retain(|e| e.result.strong_count() > 0);
        if !entries.iter().any(|e| e.result.as_ptr() == ptr && e.key == key) {
            if entries.len() >= MAX_ENTRIES {
                entries.remove(0);
            }
            entries.push(Entry {
                result: Arc::downgrade(result),
                key,
                body: body.clone(),
            });
        }
        Ok(body)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

/// `path?query` without the `index` and `wait` parameters (they decide when a body is sent, not what it holds).
fn cache_key(path: &str, query: Option<&str>) -> String {
    let mut key = String::from(path);
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
    use std::cell::Cell;

    fn result(names: &[&str]) -> Arc<CatalogResult> {
        Arc::new(CatalogResult::Services(
            names.iter().map(|n| (n.to_string(), vec![])).collect(),
        ))
    }

    fn encode(r: &CatalogResult) -> Result<Vec<u8>, ()> {
        Ok(serde_json::to_vec(r).unwrap())
    }

    #[test]
    fn one_shared_result_is_encoded_once_per_request_shape() {
        let cache = SharedBodies::default();
        let r = result(&["x"]);
        let others = (r.clone(), r.clone());
        let calls = Cell::new(0);
        let counted = |r: &CatalogResult| {
            calls.set(calls.get() + 1);
            encode(r)
        };
        let a = cache
            .get_or_encode(&r, "/v1/health/service/x", Some("index=5&wait=5m"), counted)
            .unwrap();
        let b = cache
            .get_or_encode(&r, "/v1/health/service/x", Some("wait=1s&index=7"), counted)
            .unwrap();
        assert_eq!(calls.get(), 1, "the second watcher reuses the first encoding");
        assert_eq!(a, b);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the very same bytes");
        cache
            .get_or_encode(&r, "/v1/health/service/x", Some("index=5&pretty"), counted)
            .unwrap();
        assert_eq!(calls.get(), 2, "?pretty is another body");
        drop(others);
    }

    #[test]
    fn equal_content_in_another_allocation_is_encoded_again() {
        let cache = SharedBodies::default();
        let (r1, r2) = (result(&["x"]), result(&["y"]));
        let _keep = (r1.clone(), r2.clone());
        let a = cache.get_or_encode(&r1, "/v1/catalog/services", None, encode).unwrap();
        let b = cache.get_or_encode(&r2, "/v1/catalog/services", None, encode).unwrap();
        assert_ne!(a, b, "a different read never gets another read's body");
    }

    #[test]
    fn unshared_results_are_not_kept_and_dropped_ones_are_purged() {
        let cache = SharedBodies::default();
        let alone = result(&["x"]);
        cache.get_or_encode(&alone, "/p", None, encode).unwrap();
        assert_eq!(cache.len(), 0, "nobody else holds it: nothing to share");
        let shared = result(&["y"]);
        let other = shared.clone();
        cache.get_or_encode(&shared, "/p", None, encode).unwrap();
        assert_eq!(cache.len(), 1);
        drop((shared, other));
        let next = result(&["z"]);
        let _keep = next.clone();
        cache.get_or_encode(&next, "/p", None, encode).unwrap();
        assert_eq!(cache.len(), 1, "the dropped result's entry is gone");
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
