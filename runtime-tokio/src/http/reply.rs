//! Building responses the way Consul writes them: minified JSON (`?pretty`: 4-space indent plus a
//! newline), errors as a plain-text line, read metadata as `X-Consul-*` headers.

use super::shared_body::SharedAnswer;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use concord_core::api::{ApiError, QueryMeta};
use serde::Serialize;
use serde_json::ser::{Formatter, PrettyFormatter};
use std::io;

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
            ApiError::NoLeader | ApiError::Timeout | ApiError::StorageFailed => StatusCode::INTERNAL_SERVER_ERROR,
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

/// Encode as Go's `json.Marshal` (or `json.MarshalIndent(v, "", "    ")` plus a newline for `?pretty`).
pub(crate) fn encode_json<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Vec<u8> {
    let mut buf = go_json(value, pretty.then_some(b"    "));
    if pretty {
        buf.push(b'\n');
    }
    buf
}

/// Go's `json.Marshal`, or `json.MarshalIndent(v, "", indent)`, byte for byte (string escaping included).
pub(crate) fn go_json<T: Serialize + ?Sized>(value: &T, indent: Option<&[u8]>) -> Vec<u8> {
    let mut buf = Vec::new();
    let fmt = GoJson(indent.map(PrettyFormatter::with_indent));
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    value.serialize(&mut ser).expect("HTTP responses always encode");
    buf
}

pub(crate) fn json<T: Serialize + ?Sized>(value: &T, pretty: bool) -> Response {
    let body = encode_json(value, pretty);
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A shareable 200 answer with an encoded JSON body (headers as [`json`]'s).
pub(crate) fn json_answer(body: Vec<u8>) -> SharedAnswer {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    SharedAnswer::new(StatusCode::OK, headers, body.into())
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
    h.insert("X-Consul-LastContact", HeaderValue::from(meta.last_contact_ms));
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

/// serde_json's output with Go's string escaping: `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029
/// as `\u003c`… so keys holding them come out byte-for-byte as Consul writes them. `None` is compact.
struct GoJson<'a>(Option<PrettyFormatter<'a>>);

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $name<W: ?Sized + io::Write>(&mut self, writer: &mut W $(, $arg: $ty)*) -> io::Result<()> {
            match &mut self.0 {
                Some(pretty) => pretty.$name(writer $(, $arg)*),
                None => serde_json::ser::CompactFormatter.$name(writer $(, $arg)*),
            }
        }
    )*};
}

impl Formatter for GoJson<'_> {
    delegate! {
        begin_array();
        end_array();
        begin_array_value(first: bool);
        end_array_value();
        begin_object();
        end_object();
        begin_object_key(first: bool);
        begin_object_value();
        end_object_value();
    }

    /// Go's `floatEncoder`: the shortest representation, in plain decimal for 1e-6 <= |f| < 1e21 (and 0),
    /// else exponent form with at least one exponent digit and a sign (`1e-7`, `1e+21`). Integral values
    /// have no `.0` (`0`, not `0.0`). Coordinates are the floats in our responses.
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(go_float(value).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escaped = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escaped.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// A finite float as Go's `encoding/json` writes it (see `GoJson::write_f64`).
pub(crate) fn go_float(value: f64) -> String {
    let abs = value.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        return format!("{value}");
    }
    let e = format!("{value:e}");
    match e.split_once('e') {
        Some((mantissa, exp)) if !exp.starts_with('-') => format!("{mantissa}e+{exp}"),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::encode_json;

    #[test]
    fn floats_are_written_like_go() {
        let cases = [
            (0.0, "0"),
            (1.5, "1.5"),
            (10.0, "10"),
            (0.00001, "0.00001"),
            (1e-6, "0.000001"),
            (1.5e-7, "1.5e-7"),
            (-2e-9, "-2e-9"),
            (1e21, "1e+21"),
            (123456789.125, "123456789.125"),
        ];
        for (f, want) in cases {
            assert_eq!(super::go_float(f), want, "{f}");
        }
        assert_eq!(encode_json(&[0.5, 0.0], false), b"[0.5,0]");
    }

    #[test]
    fn strings_are_escaped_like_go() {
        let out = encode_json(&["a<b>&c\u{2028}é\"\n"], false);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"["a\u003cb\u003e\u0026c\u2028é\"\n"]"#
        );
        let out = encode_json(&serde_json::json!({"K": [1, 2], "E": []}), true);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\n    \"E\": [],\n    \"K\": [\n        1,\n        2\n    ]\n}\n"
        );
    }
}
