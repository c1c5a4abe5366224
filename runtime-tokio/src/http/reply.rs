//! Building responses the way Consul writes them: minified JSON (`?pretty`: 4-space indent plus a
//! newline), errors as a plain-text line, read metadata as `X-Consul-*` headers.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use concord_core::api::{ApiError, QueryMeta};
use serde::Serialize;

/// A request that gets an error status and a one-line text body.
#[derive(Debug)]
pub(crate) struct HttpError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl HttpError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The agent started shutting down while the request waited.
    pub(crate) fn shutting_down() -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, "Agent is shutting down")
    }

    /// The backend answered with a response kind this endpoint does not expect (a bug, not a client error).
    pub(crate) fn unexpected() -> Self {
        HttpError::internal("unexpected response from the node")
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        let status = match e {
            ApiError::NoLeader | ApiError::Timeout | ApiError::StorageFailed => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        HttpError::new(status, e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        text(self.status, self.message)
    }
}

pub(crate) type HttpResult = Result<Response, HttpError>;

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    let mut resp = Response::new(Body::from(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(crate) fn json<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Response {
    let body = if pretty {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        value
            .serialize(&mut ser)
            .expect("HTTP responses always encode");
        buf.push(b'\n');
        buf
    } else {
        serde_json::to_vec(value).expect("HTTP responses always encode")
    };
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An empty response with a status (Consul's 404 for a missing key has no body).
pub(crate) fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    resp
}

/// Add the read metadata headers. `X-Consul-Index` is raised to 1 so clients never see 0.
pub(crate) fn with_meta(mut resp: Response, meta: &QueryMeta) -> Response {
    let h = resp.headers_mut();
    h.insert("X-Consul-Index", HeaderValue::from(meta.index.max(1)));
    h.insert(
        "X-Consul-KnownLeader",
        HeaderValue::from_static(if meta.known_leader { "true" } else { "false" }),
    );
    h.insert(
        "X-Consul-LastContact",
        HeaderValue::from(meta.last_contact_ms),
    );
    h.insert(
        "X-Consul-Effective-Consistency",
        HeaderValue::from_static(meta.consistency.header_value()),
    );
    resp
}

/// Unknown routes: Go's `http.NotFound` body, as Consul answers.
pub(crate) async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}
