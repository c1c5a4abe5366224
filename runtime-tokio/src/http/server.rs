//! The HTTP/1.1 connection loop in front of the axum [`Router`]: accept, per-client connection limit,
//! request heads parsed with `httparse`, request bodies streamed to the handler, one write per response.
//!
//! Why not hyper's server: a parked blocking query must cost the server little (BENCHMARKS.md, "Blocking
//! queries"), and hyper keeps an HTTP/1 read buffer of at least 8 KiB (`max_buf_size` cannot go lower) for
//! every connection that carried a request, for as long as the request is in flight. Here the read buffer is
//! released while a request is parked, so a parked connection is its task, the router's futures and the
//! core's watch entry. Owning the loop also gives the slow-client limits (`http_config.read_header_timeout`,
//! `http_config.write_timeout`).
//!
//! Invariants:
//! - A request head is at most `http_config.max_header_bytes` ([`MAX_HEAD`] by default) bytes (431; 414 when the request line alone is longer) with at
//!   most [`MAX_HEADERS`] headers (431) and a request target of at most [`MAX_URI`] bytes (414). Anything
//!   `httparse` rejects is a 400. The connection closes after every error answer.
//! - The head must be complete within `read_header_timeout` of the connection's accept (first request) or of
//!   its first byte (later requests on a keep-alive connection), else the connection is closed silently, as
//!   Go's `ReadHeaderTimeout` does. A request body must keep arriving: no read may wait longer than that.
//! - A response is written with one `write` call when the socket accepts it; a response the client does not
//!   read within `write_timeout` closes the connection. An answer shared by many woken blocking queries
//!   (`shared_body.rs`) is the same bytes for all of them, written by a fan-out writer thread
//!   (`fan_out.rs`) when there is one; the connection task writes whatever that did not.
//! - Bodies: `Transfer-Encoding: chunked` (the last coding; any other coding is a 400) wins over
//!   `Content-Length` (and the connection closes after the answer); different `Content-Length` values are a
//!   400. The body reaches the handler as a stream of at most one buffered chunk, so the handler's own limits
//!   bound memory. `Expect: 100-continue` is answered when the handler first reads the body.
//! - While a request is in flight the socket is watched: EOF (client gone) drops the handler's future, which
//!   releases a parked blocking query in the core. Pipelined bytes are kept for the next request.
//! - Shutdown: listeners close, idle connections close, a connection closes after its current answer.

use super::conn_limit::{self, PerClientLimit, SlotGuard};
use super::deferred::{self, OnTop, Reply};
use super::fan_out::FanOut;
use super::shared_body::SharedAnswer;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use axum::Router;
use concord_core::api::QueryMeta;
use http_body::Frame;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tower_service::Service;

/// Default largest request head (request line and headers), as Go's default `MaxHeaderBytes` (1 MiB) that
/// Consul keeps; `http_config.max_header_bytes` sets it ([`ConnLimits::max_header_bytes`]).
pub(crate) const MAX_HEAD: usize = 1 << 20;
/// Most header lines in one request (hyper's limit, which concord had before).
pub(crate) const MAX_HEADERS: usize = 100;
/// Longest request target (hyper's limit, which concord had before).
pub(crate) const MAX_URI: usize = 65534;
/// First read of a request head; grows (doubling) up to [`MAX_HEAD`].
const HEAD_READ: usize = 1024;
/// Largest body chunk handed to a handler at once.
const BODY_CHUNK: usize = 64 * 1024;
/// Longest chunk-size line or trailer block of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// After an answer that closes the connection while the client may still be sending, how long and how much
/// to read (and discard) before closing, so the client sees the answer rather than a reset.
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 256 * 1024;

/// The connection limits of the HTTP server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnLimits {
    pub(crate) read_header_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Largest request head ([`MAX_HEAD`] unless configured).
    pub(crate) max_header_bytes: usize,
}

/// Accept connections on `listener` until `stop` turns true; each connection is served on its own task,
/// which holds a clone of `live` until it ends.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    per_client: PerClientLimit,
    app: Router,
    fan_out: Option<Arc<FanOut>>,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
    live: mpsc::Sender<()>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    conn_limit::handle_accept_error(e).await;
                    continue;
                }
            },
            _ = stopping(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        match per_client.acquire(addr.ip()) {
            Some(slot) => {
                let conn = Conn {
                    io: stream,
                    _slot: slot,
                    app: app.clone(),
                    fan_out: fan_out.clone(),
                    limits,
                    stop: stop.clone(),
                    _live: live.clone(),
                    buf: Vec::new(),
                };
                tokio::spawn(conn.run());
            }
            None => {
                tracing::debug!(client = %addr.ip(), "too many HTTP connections from this client");
                tokio::spawn(conn_limit::refuse(stream));
            }
        }
    }
}

/// Resolves once shutdown has started.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

/// One client connection.
struct Conn {
    io: TcpStream,
    _slot: SlotGuard,
    app: Router,
    /// Writer threads for answers shared by many woken queries (`fan_out.rs`).
    fan_out: Option<Arc<FanOut>>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    _live: mpsc::Sender<()>,
    /// Received bytes not consumed yet; empty (and unallocated) while a request is parked.
    buf: Vec<u8>,
}

/// How a request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed request head.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: Option<Framing>,
    keep_alive: bool,
    expect_continue: bool,
}

/// Why reading a request head ended without one.
enum HeadError {
    /// Close without an answer: EOF, I/O error, timeout, shutdown.
    Close,
    /// Answer with this status, then close.
    Reply(StatusCode),
}

impl Conn {
    async fn run(mut self) {
        let mut deadline = Some(Instant::now() + self.limits.read_header_timeout);
        loop {
            if self.buf.is_empty() && deadline.is_none() {
                // Keep-alive: wait for the next request (no limit, as Consul's default) or shutdown.
                tokio::select! {
                    ready = self.io.readable() => if ready.is_err() { return },
                    _ = stopping(&mut self.stop) => return,
                }
            }
            // Each phase that is not the parked one runs in its own boxed future, freed when it ends, so the
            // connection task itself stays small while a request is parked.
            let head = match Box::pin(self.read_head(deadline.take())).await {
                Ok(head) => head,
                Err(HeadError::Close) => return,
                Err(HeadError::Reply(status)) => {
                    Box::pin(self.refuse(status)).await;
                    return;
                }
            };
            if self.buf.is_empty() {
                // The head was all there was: give the buffer back before the request (perhaps) parks.
                self.buf = Vec::new();
            }
            let (answer, feed, is_head, keep_alive) = self.start(head);
            match self.exchange(answer, feed, is_head, keep_alive).await {
                Some(true) => {}
                Some(false) => {
                    Box::pin(self.linger()).await;
                    return;
                }
                None => return,
            }
            if self.buf.is_empty() {
                // Nothing pipelined: give the buffer back while the connection idles or parks.
                self.buf = Vec::new();
            }
        }
    }

    /// Read until `buf` holds a complete head; parse and consume it. `deadline` (None: from the first byte)
    /// bounds the whole head.
    async fn read_head(&mut self, deadline: Option<Instant>) -> Result<Head, HeadError> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.limits.read_header_timeout);
        loop {
            if !self.buf.is_empty() {
                if let Some((head, used)) = parse_head(&self.buf).map_err(HeadError::Reply)? {
                    self.buf.drain(..used);
                    return Ok(head);
                }
                if self.buf.len() >= self.limits.max_header_bytes {
                    let line_done = self.buf.contains(&b'\n');
                    return Err(HeadError::Reply(if line_done {
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                    } else {
                        StatusCode::URI_TOO_LONG
                    }));
                }
            }
            let want = HEAD_READ
                .max(self.buf.len())
                .min(self.limits.max_header_bytes - self.buf.len());
            self.buf.reserve(want);
            let read = tokio::select! {
                read = tokio::time::timeout_at(deadline.into(), self.io.read_buf(&mut self.buf)) => read,
                _ = stopping(&mut self.stop) => return Err(HeadError::Close),
            };
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(HeadError::Close),
            }
        }
    }

    /// Hand a request whose head has been read to the router: its (boxed) answer future, the body feed,
    /// whether it is a HEAD request, whether the connection may be kept.
    fn start(&self, head: Head) -> (deferred::Rest, Option<Feed>, bool, bool) {
        let mut feed = None;
        let body = match head.framing {
            None | Some(Framing::Length(0)) => Body::empty(),
            Some(framing) => {
                let (tx, rx) = mpsc::channel(1);
                let (want_tx, want_rx) = oneshot::channel();
                feed = Some(Feed {
                    state: match framing {
                        Framing::Length(n) => BodyState::Length(n),
                        Framing::Chunked => BodyState::ChunkSize,
                    },
                    tx: Some(tx),
                    want: head.expect_continue.then_some(want_rx),
                });
                Body::new(ChannelBody {
                    rx,
                    want: Some(want_tx),
                    hint: match framing {
                        Framing::Length(n) => Some(n),
                        Framing::Chunked => None,
                    },
                })
            }
        };
        let is_head = head.method == Method::HEAD;
        // Chunked framing with a Content-Length as well: answer, then close (RFC 9112 §6.3).
        let both = head.framing == Some(Framing::Chunked) && head.headers.contains_key(header::CONTENT_LENGTH);
        let keep_alive = head.keep_alive && !both;
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        let mut app = self.app.clone();
        // Boxed so the parked connection task stays small whatever the router's future weighs.
        let answer = app.call(req);
        let answer = async move {
            match answer.await {
                Ok(resp) => Reply::Response(resp),
                Err(never) => match never {},
            }
        };
        (Box::pin(answer), feed, is_head, keep_alive)
    }

    /// Serve one request handed to the router by [`Conn::start`]: stream its body, watch the socket while
    /// the handler runs, write the answer. `Some(keep_alive)` once answered, `None` if the connection is
    /// gone. (No `Head` or `Request` argument: async fn arguments live as long as the future.)
    async fn exchange(
        &mut self,
        mut answer: deferred::Rest,
        mut feed: Option<Feed>,
        is_head: bool,
        mut keep_alive: bool,
    ) -> Option<bool> {
        // `answer` is the router's future, then, for a deferred answer (a blocking read), the small rest of
        // the handler: the router's futures are freed before the query parks.
        let mut on_top = None;
        let reply = loop {
            let reply = loop {
                tokio::select! {
                    biased;
                    reply = &mut answer => break reply,
                    step = self.step(&mut feed) => if !step { return None },
                }
            };
            match reply {
                Reply::Response(resp) => match deferred::take(resp) {
                    deferred::Answer::Deferred(rest, headers) => {
                        answer = rest;
                        on_top = Some(headers);
                    }
                    deferred::Answer::Ready(resp) => break Reply::Response(resp),
                },
                shared @ Reply::Shared(..) => break shared,
            }
        };
        drop(answer);
        if feed.as_ref().is_some_and(|f| f.state != BodyState::Done) {
            // The handler answered without reading the whole body: its rest is not a next request.
            keep_alive = false;
        }
        if *self.stop.borrow() {
            keep_alive = false;
        }
        let resp = match (reply, on_top) {
            (Reply::Shared(answer, meta), on_top) => {
                let on_top = on_top.unwrap_or_default();
                return Box::pin(self.respond_shared(answer, meta, on_top, is_head, keep_alive)).await;
            }
            (Reply::Response(resp), Some(headers)) => {
                let mut resp = deferred::finish(headers, resp);
                if is_head {
                    // As axum's router does for the answers it completes (so `content-length: 0`).
                    *resp.body_mut() = Body::empty();
                }
                resp
            }
            (Reply::Response(resp), None) => resp,
        };
        Box::pin(self.respond(resp, is_head, keep_alive)).await
    }

    /// Write a shared answer: the bytes every request with the same metadata and headers on top gets
    /// (encoded by the first of them); `Some(keep_alive)` once written.
    async fn respond_shared(
        &mut self,
        answer: Arc<SharedAnswer>,
        meta: QueryMeta,
        on_top: OnTop,
        is_head: bool,
        keep_alive: bool,
    ) -> Option<bool> {
        let (wire, keep_alive) = answer.wire(&meta, &on_top, is_head, keep_alive, date_secs(), encode_parts);
        let shared = answer.is_shared();
        drop((answer, on_top));
        let mut written = 0;
        if let Some(fan_out) = self.fan_out.as_ref().filter(|_| shared) {
            // One of many answers to one change: a writer thread sends it, so the sends of a large wake-up
            // are spread over the cores; whatever the socket did not take at once is written below.
            if let Ok(done) = fan_out.write(&self.io, wire.clone()) {
                written = done.await.unwrap_or(0);
            }
        }
        if written == wire.len() {
            return Some(keep_alive);
        }
        match tokio::time::timeout(self.limits.write_timeout, self.io.write_all(&wire[written..])).await {
            Ok(Ok(())) => Some(keep_alive),
            _ => None,
        }
    }

    /// Write the answer; `Some(keep_alive)` once written.
    async fn respond(&mut self, resp: Response<Body>, is_head: bool, mut keep_alive: bool) -> Option<bool> {
        let out = encode_response(resp, is_head, &mut keep_alive).await?;
        match tokio::time::timeout(self.limits.write_timeout, self.io.write_all(&out)).await {
            Ok(Ok(())) => Some(keep_alive),
            _ => None,
        }
    }

    /// Answer a bad request head with a bare `status`, then close.
    async fn refuse(&mut self, status: StatusCode) {
        let answer = error_answer(status);
        let _ = tokio::time::timeout(self.limits.write_timeout, self.io.write_all(&answer)).await;
        self.linger().await;
    }

    /// One step while the handler runs: feed the body, or (body done) wait for the client to send more or
    /// go away. `false`: the connection is gone.
    async fn step(&mut self, feed: &mut Option<Feed>) -> bool {
        match feed {
            Some(f) if f.state != BodyState::Done && f.tx.is_some() => Box::pin(self.feed_body(f)).await,
            // The handler dropped the body unread (or it was malformed): the bytes on the socket are not a
            // next request, and the connection closes after the answer.
            Some(f) if f.state != BodyState::Done => std::future::pending().await,
            _ => self.watch().await,
        }
    }

    /// Wait for the socket: EOF means the client is gone; bytes are kept (a pipelined request).
    async fn watch(&mut self) -> bool {
        if self.buf.len() >= self.limits.max_header_bytes {
            return std::future::pending().await;
        }
        if self.io.readable().await.is_err() {
            return false;
        }
        let mut chunk = [0u8; 512];
        match self.io.try_read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    }

    /// Hand the handler the next piece of the body. `false`: the connection is gone or stalled.
    async fn feed_body(&mut self, f: &mut Feed) -> bool {
        if let Some(want) = f.want.take() {
            if want.await.is_err() {
                // The handler answered (or dropped the body) without asking for it.
                f.tx = None;
                return true;
            }
            let continue_ = b"HTTP/1.1 100 Continue\r\n\r\n";
            match tokio::time::timeout(self.limits.write_timeout, self.io.write_all(continue_)).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
        let piece = loop {
            match f.state.next(&mut self.buf) {
                Ok(Some(piece)) => break Ok(piece),
                Ok(None) if f.state == BodyState::Done => {
                    f.tx = None; // end of stream
                    if self.buf.is_empty() {
                        self.buf = Vec::new();
                    }
                    return true;
                }
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            // Need more bytes.
            let want = match f.state {
                BodyState::Length(n) => (n as usize).clamp(1, BODY_CHUNK),
                _ => BODY_CHUNK.min(4096),
            };
            self.buf.reserve(want);
            let read = tokio::time::timeout(self.limits.read_header_timeout, self.io.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) => break Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated request body")),
                Ok(Err(e)) => break Err(e),
                Err(_) => return false,
            }
        };
        let tx = f.tx.as_ref().expect("checked by step");
        match piece {
            Ok(bytes) => {
                if tx.send(Ok(bytes)).await.is_err() || f.state == BodyState::Done {
                    f.tx = None; // handler gone, or end of stream
                }
                if f.state == BodyState::Done && self.buf.is_empty() {
                    self.buf = Vec::new();
                }
                true
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                f.tx = None;
                f.state = BodyState::Broken;
                true
            }
        }
    }

    /// Before closing after an answer: stop sending, then read and discard what the client may still be
    /// sending for a little while, so that it sees the answer rather than a connection reset.
    async fn linger(&mut self) {
        let _ = self.io.shutdown().await;
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut seen = 0;
            let mut sink = [0u8; 4096];
            while seen < LINGER_BYTES {
                match self.io.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen += n,
                }
            }
        })
        .await;
    }
}

/// The body feeding state of one request.
struct Feed {
    state: BodyState,
    /// `None` once the body ended or the handler dropped it.
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    /// Fires when the handler first polls the body (`Expect: 100-continue` only).
    want: Option<oneshot::Receiver<()>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// A chunked body, before a chunk-size line.
    ChunkSize,
    /// Bytes left of the current chunk.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk.
    Trailers,
    Done,
    /// Malformed or truncated; the connection closes after the answer.
    Broken,
}

impl BodyState {
    /// Take the next body piece out of `buf`: `Ok(None)` when more bytes are needed (or the body is done).
    fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<Bytes>> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        loop {
            match *self {
                BodyState::Done | BodyState::Broken => return Ok(None),
                BodyState::Length(0) => {
                    *self = BodyState::Done;
                    return Ok(None);
                }
                BodyState::Length(n) | BodyState::ChunkData(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = (n.min(BODY_CHUNK as u64) as usize).min(buf.len());
                    let piece = Bytes::copy_from_slice(&buf[..take]);
                    buf.drain(..take);
                    let left = n - take as u64;
                    *self = match *self {
                        BodyState::Length(_) => BodyState::Length(left),
                        _ if left == 0 => BodyState::ChunkEnd,
                        _ => BodyState::ChunkData(left),
                    };
                    if let BodyState::Length(0) = *self {
                        *self = BodyState::Done;
                    }
                    return Ok(Some(piece));
                }
                BodyState::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, _))) if used > MAX_CHUNK_LINE => {
                        return Err(bad("chunk size line too long"))
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.drain(..used);
                        *self = if size == 0 {
                            BodyState::Trailers
                        } else {
                            BodyState::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Err(bad("chunk size line too long"))
                    }
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(bad("invalid chunk size line")),
                },
                BodyState::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(bad("missing CRLF after chunk data"));
                    }
                    buf.drain(..2);
                    *self = BodyState::ChunkSize;
                }
                BodyState::Trailers => match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.drain(..2);
                        *self = BodyState::Done;
                        return Ok(None);
                    }
                    Some(end) if end > MAX_CHUNK_LINE => return Err(bad("trailer line too long")),
                    Some(end) => {
                        buf.drain(..end + 2);
                    }
                    None if buf.len() > MAX_CHUNK_LINE => return Err(bad("trailer line too long")),
                    None => return Ok(None),
                },
            }
        }
    }
}

/// The request body as the handler sees it: chunks from the connection task, at most one buffered.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// Told when the body is first polled (sends `100 Continue` if the client waits for it).
    want: Option<oneshot::Sender<()>>,
    hint: Option<u64>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(want) = self.want.take() {
            let _ = want.send(());
        }
        self.rx.poll_recv(cx).map(|piece| piece.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.hint {
            Some(n) => http_body::SizeHint::with_exact(n),
            None => http_body::SizeHint::default(),
        }
    }
}

/// Parse a complete head at the start of `buf`: `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, StatusCode> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(used)) => used,
        Ok(httparse::Status::Partial) => {
            // A request line that is already too long need not be read to its end.
            if !buf.contains(&b'\n') && buf.len() > MAX_URI + 64 {
                return Err(StatusCode::URI_TOO_LONG);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(_) => return Err(StatusCode::BAD_REQUEST),
    };
    let target = req.path.unwrap_or("/");
    if target.len() > MAX_URI {
        return Err(StatusCode::URI_TOO_LONG);
    }
    let method = Method::from_bytes(req.method.unwrap_or("GET").as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
    let uri: Uri = target.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| StatusCode::BAD_REQUEST)?;
        headers.append(name, value);
    }
    let framing = framing(&headers, version)?;
    let connection_has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    let keep_alive = match version {
        Version::HTTP_10 => connection_has("keep-alive"),
        _ => !connection_has("close"),
    };
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let head = Head {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, used)))
}

/// The body framing of a request (RFC 9112 §6): chunked if `Transfer-Encoding` ends in chunked (any other
/// transfer coding is refused), else `Content-Length` (all values equal), else none.
fn framing(headers: &HeaderMap, version: Version) -> Result<Option<Framing>, StatusCode> {
    let codings: Vec<String> = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .map(|v| v.to_str().map(str::to_string).map_err(|_| StatusCode::BAD_REQUEST))
        .collect::<Result<_, _>>()?;
    if !codings.is_empty() {
        let last = codings.join(",");
        let last = last.rsplit(',').next().unwrap_or("").trim();
        if version == Version::HTTP_10 || !last.eq_ignore_ascii_case("chunked") {
            return Err(StatusCode::BAD_REQUEST);
        }
        return Ok(Some(Framing::Chunked));
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| StatusCode::BAD_REQUEST)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(StatusCode::BAD_REQUEST);
            }
            let n: u64 = part.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
            if length.is_some_and(|l| l != n) {
                return Err(StatusCode::BAD_REQUEST);
            }
            length = Some(n);
        }
    }
    Ok(length.map(Framing::Length))
}

/// A bare error answer that closes the connection.
fn error_answer(status: StatusCode) -> Vec<u8> {
    format!(
        "HTTP/1.1 {} {}\r\nContent-Length: 0\r\nConnection: close\r\nDate: {}\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        http_date()
    )
    .into_bytes()
}

/// The whole answer as bytes (see [`encode_parts`]), once its body is complete.
async fn encode_response(resp: Response<Body>, is_head: bool, keep_alive: &mut bool) -> Option<Vec<u8>> {
    let (parts, body) = resp.into_parts();
    let body = http_body_util::BodyExt::collect(body).await.ok()?.to_bytes();
    Some(encode_parts(parts, &body, is_head, keep_alive))
}

/// The whole answer as bytes: status line, the handler's headers, `Content-Length`, `Connection: close` when
/// the connection is not kept (which a handler's own `Connection: close` also asks for), `Date`, body.
/// Header names go out in Go's canonical MIME case (`X-Consul-Index`), as Consul's net/http writes them.
pub(crate) fn encode_parts(
    parts: axum::http::response::Parts,
    body: &[u8],
    is_head: bool,
    keep_alive: &mut bool,
) -> Vec<u8> {
    let closes = parts.headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .unwrap_or("")
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("close"))
    });
    if closes {
        *keep_alive = false;
    }
    let status = parts.status;
    let no_body = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let mut out = Vec::with_capacity(128 + parts.headers.len() * 48 + if is_head { 0 } else { body.len() });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        put_canonical_name(&mut out, name.as_str());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !no_body {
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !*keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(http_date().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    if !is_head && !no_body {
        out.extend_from_slice(body);
    }
    out
}

/// The current second, as the `Date` header shows it.
fn date_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Append `name` in Go's canonical MIME header case (`textproto.CanonicalMIMEHeaderKey`): the first letter
/// and every letter after a `-` upper-case, the rest lower-case. Go leaves a name with a byte that is not a
/// token character as it is; the `http` crate's names are always tokens. Cased in place in `out`: no
/// allocation beyond `out`'s own growth.
fn put_canonical_name(out: &mut Vec<u8>, name: &str) {
    let start = out.len();
    out.extend_from_slice(name.as_bytes());
    let written = &mut out[start..];
    if !written.iter().all(|&b| is_token_byte(b)) {
        return;
    }
    let mut upper = true;
    for b in written {
        *b = if upper {
            b.to_ascii_uppercase()
        } else {
            b.to_ascii_lowercase()
        };
        upper = *b == b'-';
    }
}

/// RFC 7230 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The `Date` header value, formatted once per second per thread.
fn http_date() -> String {
    use std::cell::RefCell;
    use std::time::SystemTime;
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != secs {
            *cache = (secs, httpdate::fmt_http_date(now));
        }
        cache.1.clone()
    })
}

/// Fuzz body (`concord::fuzzing::http_wire`): arbitrary bytes as a request stream. Parsing never panics,
/// consumes no more than it was given and is the same on a prefix-extended buffer; a body decodes the same
/// whether the bytes arrive at once or one by one, and never yields more than it was given.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn check_wire(data: &[u8]) {
    let Ok(Some((head, used))) = parse_head(data) else {
        return;
    };
    assert!(used <= data.len());
    let again = parse_head(&data[..used])
        .expect("a complete head parses alone")
        .expect("complete");
    assert_eq!(again.1, used);
    let start = match head.framing {
        None => return,
        Some(Framing::Length(n)) => BodyState::Length(n),
        Some(Framing::Chunked) => BodyState::ChunkSize,
    };
    let rest = &data[used..];
    let decode = |step: usize| {
        let (mut state, mut buf, mut out) = (start, Vec::new(), Vec::new());
        for piece in rest.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match state.next(&mut buf) {
                    Ok(Some(data)) => out.extend_from_slice(&data),
                    Ok(None) => break,
                    Err(_) => return (None, state),
                }
            }
            if state == BodyState::Done {
                break;
            }
        }
        (Some(out), state)
    };
    let (whole, whole_state) = decode(rest.len());
    let (bytewise, bytewise_state) = decode(1);
    assert_eq!(whole, bytewise);
    if whole.is_some() {
        assert_eq!(whole_state, bytewise_state);
    }
    if let Some(out) = whole {
        assert!(out.len() <= rest.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(Head, usize)>, StatusCode> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn header_names_take_go_canonical_case() {
        let canonical = |name: &str| {
            let mut out = b"before".to_vec();
            put_canonical_name(&mut out, name);
            String::from_utf8(out[6..].to_vec()).unwrap()
        };
        for (name, want) in [
            ("x-consul-index", "X-Consul-Index"),
            ("x-consul-knownleader", "X-Consul-Knownleader"),
            ("x-consul-effective-consistency", "X-Consul-Effective-Consistency"),
            ("content-type", "Content-Type"),
            ("date", "Date"),
            ("vary", "Vary"),
            ("www-authenticate", "Www-Authenticate"),
            ("X-CONSUL-INDEX", "X-Consul-Index"),
            ("x--a-", "X--A-"),
            ("-x", "-X"),
            ("x-1a", "X-1a"),
            ("x_y-z", "X_y-Z"),
            // Not a token: left as it is, as Go does.
            ("bad name", "bad name"),
            ("", ""),
        ] {
            assert_eq!(canonical(name), want, "{name:?}");
        }
    }

    #[test]
    fn heads_parse_with_framing_and_keep_alive() {
        let text = "PUT /v1/kv/a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
        let (h, used) = head(text).unwrap().unwrap();
        assert_eq!(used, text.len() - 3, "the head ends before the body");
        assert_eq!(
            (h.method, h.uri.path(), h.uri.query()),
            (Method::PUT, "/v1/kv/a", Some("x=1"))
        );
        assert_eq!(h.framing, Some(Framing::Length(3)));
        assert!(h.keep_alive && !h.expect_continue);
        let (h, _) = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive && h.framing.is_none());
        let (h, _) = head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) =
            head("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.framing, Some(Framing::Chunked));
        assert!(h.expect_continue);
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none(), "partial");
    }

    #[test]
    fn bad_heads_get_the_right_status() {
        let status = |text: &str| head(text).err();
        assert_eq!(
            status("PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status("PUT / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n"),
            None,
            "equal repeated values are one length"
        );
        assert_eq!(
            status("PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            status("PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Some(StatusCode::BAD_REQUEST)
        );
        assert_eq!(status("\x00\x01garbage\r\n\r\n"), Some(StatusCode::BAD_REQUEST));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        );
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "k".repeat(MAX_URI));
        assert_eq!(status(&long), Some(StatusCode::URI_TOO_LONG));
        let unfinished = format!("GET /{}", "k".repeat(MAX_URI + 100));
        assert_eq!(status(&unfinished), Some(StatusCode::URI_TOO_LONG));
    }

    /// Feed `wire` to a chunked decoder in pieces of `step` bytes; the decoded body, or the error.
    fn dechunk(wire: &[u8], step: usize) -> Result<Vec<u8>, io::Error> {
        let mut state = BodyState::ChunkSize;
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = state.next(&mut buf)? {
                out.extend_from_slice(&data);
            }
            if state == BodyState::Done {
                return Ok(out);
            }
        }
        Err(io::Error::new(io::ErrorKind::UnexpectedEof, "incomplete"))
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"3\r\nabc\r\n10;ext=1\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n";
        for step in 1..wire.len() {
            assert_eq!(dechunk(wire, step).unwrap(), b"abc0123456789abcdef", "step {step}");
        }
        assert!(dechunk(b"3\r\nabcX\r\n0\r\n\r\n", 64).is_err(), "missing CRLF");
        assert!(dechunk(b"zz\r\n", 64).is_err(), "bad size");
        assert!(dechunk(b"3\r\nab", 64).is_err(), "truncated");
    }

    #[test]
    fn length_bodies_end_at_their_length_and_keep_the_rest() {
        let mut state = BodyState::Length(3);
        let mut buf = b"abcGET".to_vec();
        assert_eq!(state.next(&mut buf).unwrap().unwrap(), Bytes::from_static(b"abc"));
        assert_eq!(state, BodyState::Done);
        assert_eq!(buf, b"GET");
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::http::fake::FakeBackend;
    use crate::http::{router, AppState, HttpSettings};

    /// What a parked blocking query holds in the HTTP layer: the connection task's future and the router's
    /// boxed handler future. Printed for BENCHMARKS.md; bounded so that growth is noticed.
    #[tokio::test]
    async fn parked_futures_stay_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_stop_tx, stop) = watch::channel(false);
        let (live, _live_rx) = mpsc::channel(1);
        let state = AppState::new(FakeBackend::new(), HttpSettings::default(), stop.clone());
        let conn = Conn {
            io: server,
            _slot: PerClientLimit::new(0).acquire("127.0.0.1".parse().unwrap()).unwrap(),
            app: router(state.clone()),
            fan_out: None,
            limits: ConnLimits {
                read_header_timeout: Duration::from_secs(1),
                write_timeout: Duration::from_secs(1),
                max_header_bytes: MAX_HEAD,
            },
            stop,
            _live: live,
            buf: Vec::new(),
        };
        let run = conn.run();
        let uri: Uri = "/v1/health/service/x?index=5".parse().unwrap();
        let handler = crate::http::catalog::health_service(
            axum::extract::State(state.clone()),
            axum::extract::Path("x".to_string()),
            uri,
        );
        let handler_size = std::mem::size_of_val(&handler);
        // The handler answers at once with a placeholder; what waits is its deferred rest.
        let placeholder = handler.await;
        let deferred::Answer::Deferred(rest, on_top) = deferred::take(placeholder) else {
            panic!("a health read is deferred");
        };
        let read = state.call(concord_core::api::Request::Leader);
        let sizes = (
            std::mem::size_of_val(&run),
            handler_size,
            std::mem::size_of_val(&*rest),
            std::mem::size_of_val(&read),
            std::mem::size_of::<concord_core::api::Request>(),
        );
        println!(
            "conn task future, health_service future, its deferred rest, AppState::call future, Request: {sizes:?}"
        );
        assert!(sizes.0 <= 1024, "the connection task grew to {} bytes", sizes.0);
        assert!(on_top.is_empty(), "no middleware ran here");
        drop(client);
    }
}
