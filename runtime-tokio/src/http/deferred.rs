//! Deferred answers: a handler that may park (a blocking read) finishes its parsing and routing at once and
//! answers with a placeholder that carries the rest of its work as one small boxed future. The router's
//! futures (axum's boxed route and middleware futures, the handler's own state machine) then complete and
//! are freed, and the connection loop (`server.rs`) awaits the small future while the query is parked.
//!
//! Invariants:
//! - The answer on the wire is the one the handler would have given without deferring: the deferred
//!   future's response, with every header the middleware set on the placeholder inserted on top, in the
//!   same order (`HeaderMap::insert` keeps an existing name's place and appends a new one, exactly as the
//!   middleware's own `insert` on the real answer would).
//! - Whoever calls the router must resolve a deferred answer ([`resolve`], or `server.rs`'s own loop, which
//!   also watches the socket while waiting).
//! - A [`Reply::Shared`] answer is the shared answer's `response(meta)`; the connection loop may write an
//!   earlier encoding of the same answer, metadata and headers on top instead (`shared_body.rs`).

use super::shared_body::SharedAnswer;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use concord_core::api::QueryMeta;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// What the rest of a handler answers: a response of its own, or a read's shared answer with this
/// request's metadata (many woken blocking queries write the same bytes).
pub(crate) enum Reply {
    Response(Response),
    Shared(Arc<SharedAnswer>, QueryMeta),
}

impl From<Response> for Reply {
    fn from(resp: Response) -> Self {
        Reply::Response(resp)
    }
}

impl Reply {
    pub(crate) fn into_response(self) -> Response {
        match self {
            Reply::Response(resp) => resp,
            Reply::Shared(answer, meta) => answer.response(&meta),
        }
    }
}

/// The rest of a handler's work.
pub(crate) type Rest = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// The placeholder's extension. Response extensions must be `Clone + Sync`, hence the `Arc<Mutex<_>>`.
#[derive(Clone)]
struct Deferred(Arc<Mutex<Option<Rest>>>);

/// A placeholder answer whose real answer is `rest`'s.
pub(crate) fn defer(rest: impl Future<Output = Reply> + Send + 'static) -> Response {
    let mut resp = Response::default();
    resp.extensions_mut()
        .insert(Deferred(Arc::new(Mutex::new(Some(Box::pin(rest))))));
    resp
}

/// Headers the middleware set on a placeholder, kept compact while the query is parked: a name comes once,
/// before all its values (as `HeaderMap::into_iter` yields them).
pub(crate) type OnTop = Vec<(Option<HeaderName>, HeaderValue)>;

/// What the router answered.
pub(crate) enum Answer {
    /// A real answer.
    Ready(Response),
    /// A placeholder's rest and the headers to put on top of its answer.
    Deferred(Rest, OnTop),
}

/// Take the rest out of a placeholder.
pub(crate) fn take(mut resp: Response) -> Answer {
    let Some(deferred) = resp.extensions_mut().remove::<Deferred>() else {
        return Answer::Ready(resp);
    };
    let rest = deferred.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    match rest {
        Some(rest) => Answer::Deferred(rest, resp.into_parts().0.headers.into_iter().collect()),
        // Taken already: cannot happen (the extension is removed with its rest).
        None => Answer::Ready(resp),
    }
}

/// The real answer: `answer` with the placeholder's headers inserted on top.
pub(crate) fn finish(on_top: OnTop, mut answer: Response) -> Response {
    let mut name = None;
    for (n, value) in on_top {
        // The first value of a name replaces (in place), the others are appended.
        match n {
            Some(n) => {
                answer.headers_mut().insert(n.clone(), value);
                name = Some(n);
            }
            None => {
                if let Some(n) = &name {
                    answer.headers_mut().append(n.clone(), value);
                }
            }
        }
    }
    answer
}

/// The real answer to `resp`: `resp` itself, or its deferred answer once it is ready. For a HEAD request
/// (`head`) a deferred answer's body is dropped, as axum's router does for the answers it completes (the
/// connection loop never writes a HEAD body anyway).
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub(crate) async fn resolve(resp: Response, head: bool) -> Response {
    match take(resp) {
        Answer::Deferred(rest, on_top) => {
            let mut answer = finish(on_top, rest.await.into_response());
            if head {
                *answer.body_mut() = axum::body::Body::empty();
            }
            answer
        }
        Answer::Ready(resp) => resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn a_deferred_answer_keeps_its_headers_in_order_with_the_placeholders_on_top() {
        let mut placeholder = defer(async {
            let mut r = Response::new(axum::body::Body::from("x"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut().insert("content-type", HeaderValue::from_static("a"));
            r.headers_mut().insert("x-consul-index", HeaderValue::from_static("7"));
            r.into()
        });
        placeholder
            .headers_mut()
            .insert("x-consul-index", HeaderValue::from_static("8"));
        placeholder
            .headers_mut()
            .insert("x-consul-default-acl-policy", HeaderValue::from_static("allow"));
        let resp = resolve(placeholder, false).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let headers: Vec<(String, &str)> = resp
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-type".to_string(), "a"),
                ("x-consul-index".to_string(), "8"),
                ("x-consul-default-acl-policy".to_string(), "allow"),
            ]
        );
        let plain = resolve(Response::new(axum::body::Body::empty()), false).await;
        assert_eq!(plain.status(), StatusCode::OK);
    }
}
