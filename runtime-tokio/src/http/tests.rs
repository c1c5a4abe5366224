//! The HTTP API as a client sees it: `serve` on 127.0.0.1:0 in front of the in-memory fake backend,
//! exercised with a real HTTP client (ureq) and raw TCP where the client's behaviour matters.

use super::fake::{node_id, FakeBackend, HANG_KEY};
use super::{serve, HttpSettings};
use concord_core::api::{ApiError, Blocking, KvQuery, ReadMode, Request};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) fake: FakeBackend,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<std::sync::mpsc::Receiver<std::io::Result<()>>>,
    _rt: tokio::runtime::Runtime,
}

impl TestServer {
    pub(crate) fn start(settings: HttpSettings) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fake = FakeBackend::new();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let backend = fake.clone();
        rt.spawn(async move {
            let result = serve(vec![listener], backend, settings, async move {
                let _ = stop_rx.await;
            })
            .await;
            let _ = done_tx.send(result);
        });
        TestServer {
            addr,
            fake,
            stop: Some(stop_tx),
            done: Some(done_rx),
            _rt: rt,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Fire shutdown and wait (bounded) for `serve` to return.
    fn shutdown(&mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.done
            .take()
            .unwrap()
            .recv_timeout(Duration::from_secs(10))
            .expect("serve did not return after shutdown")
    }
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(20))
        .build()
}

fn into_reply(result: Result<ureq::Response, ureq::Error>) -> Reply {
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| (n.clone(), resp.header(&n).unwrap().to_string()))
        .collect();
    let status = resp.status();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).unwrap();
    Reply { status, headers, body }
}

pub(crate) fn call(method: &str, url: &str, body: Option<&[u8]>) -> Reply {
    let req = agent().request(method, url);
    into_reply(match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    })
}

pub(crate) fn get(s: &TestServer, path: &str) -> Reply {
    call("GET", &s.url(path), None)
}

pub(crate) fn put(s: &TestServer, path: &str, body: &[u8]) -> Reply {
    call("PUT", &s.url(path), Some(body))
}

fn poll_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn small_limits() -> HttpSettings {
    HttpSettings {
        kv_max_value_size: 1024,
        ..HttpSettings::default()
    }
}

#[test]
fn kv_put_then_get_is_byte_exact() {
    let s = TestServer::start(HttpSettings::default());
    let r = put(&s, "/v1/kv/foo?flags=42", b"bar");
    assert_eq!((r.status, r.text()), (200, "true"));
    assert_eq!(r.header("X-Consul-Default-ACL-Policy"), Some("allow"));

    let r = get(&s, "/v1/kv/foo");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        r#"[{"LockIndex":0,"Key":"foo","Flags":42,"Value":"YmFy","CreateIndex":2,"ModifyIndex":2}]"#
    );
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Consul-Index"), Some("2"));
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(r.header("X-Consul-LastContact"), Some("0"));
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(r.header("X-Consul-Default-ACL-Policy"), Some("allow"));

    // An empty value is null; ?stale and ?consistent show in the effective consistency.
    put(&s, "/v1/kv/empty", b"");
    let r = get(&s, "/v1/kv/empty?stale=");
    assert_eq!(
        r.text(),
        r#"[{"LockIndex":0,"Key":"empty","Flags":0,"Value":null,"CreateIndex":3,"ModifyIndex":3}]"#
    );
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("stale"));
    assert_eq!(
        get(&s, "/v1/kv/empty?consistent").header("X-Consul-Effective-Consistency"),
        Some("consistent")
    );
}

#[test]
fn missing_key_is_404_with_empty_body_and_index() {
    let s = TestServer::start(HttpSettings::default());
    let r = get(&s, "/v1/kv/nope");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert_eq!(r.header("X-Consul-Index"), Some("1"));
    assert_eq!(get(&s, "/v1/kv/nope?recurse").status, 404);
    assert_eq!(get(&s, "/v1/kv/nope?keys").status, 404);
    // The root lists as an empty array, never 404.
    let r = get(&s, "/v1/kv/?keys");
    assert_eq!((r.status, r.text()), (200, "[]"));
    // A bare GET of the root needs a key.
    let r = get(&s, "/v1/kv/");
    assert_eq!((r.status, r.text()), (400, "Missing key name"));
}

#[test]
fn raw_returns_the_bare_value_unsniffed() {
    let s = TestServer::start(HttpSettings::default());
    put(&s, "/v1/kv/page", b"<html><script>alert(1)</script>");
    let r = get(&s, "/v1/kv/page?raw");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"<html><script>alert(1)</script>");
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(r.header("Content-Security-Policy"), Some("sandbox"));
    assert_eq!(r.header("X-Consul-Index"), Some("2"));
    // ?raw with ?recurse is ignored, as in Consul.
    assert!(get(&s, "/v1/kv/page?raw&recurse").text().starts_with("[{"));
}

#[test]
fn recurse_keys_and_separator() {
    let s = TestServer::start(HttpSettings::default());
    for k in ["web/bar", "web/foo", "web/subdir/x", "web/subdir/y", "zzz"] {
        put(&s, &format!("/v1/kv/{k}"), k.as_bytes());
    }
    let r = get(&s, "/v1/kv/web/?keys&separator=/");
    assert_eq!(r.text(), r#"["web/bar","web/foo","web/subdir/"]"#);
    let r = get(&s, "/v1/kv/web?keys");
    assert_eq!(r.text(), r#"["web/bar","web/foo","web/subdir/x","web/subdir/y"]"#);
    let r = get(&s, "/v1/kv/web/subdir?recurse");
    assert_eq!(
        r.text(),
        concat!(
            r#"[{"LockIndex":0,"Key":"web/subdir/x","Flags":0,"Value":"d2ViL3N1YmRpci94","CreateIndex":4,"ModifyIndex":4},"#,
            r#"{"LockIndex":0,"Key":"web/subdir/y","Flags":0,"Value":"d2ViL3N1YmRpci95","CreateIndex":5,"ModifyIndex":5}]"#
        )
    );
    assert_eq!(get(&s, "/v1/kv/?recurse").text().matches("\"Key\"").count(), 5);
    // Keys with encoded characters arrive decoded.
    put(&s, "/v1/kv/a%20b%2Fc", b"v");
    assert!(s.fake.get("a b/c").is_some());
}

#[test]
fn pretty_indents_like_go() {
    let s = TestServer::start(HttpSettings::default());
    put(&s, "/v1/kv/k", b"v");
    let r = get(&s, "/v1/kv/k?keys&pretty");
    assert_eq!(r.text(), "[\n    \"k\"\n]\n");
}

#[test]
fn cas_and_delete() {
    let s = TestServer::start(HttpSettings::default());
    assert_eq!(put(&s, "/v1/kv/c?cas=0", b"1").text(), "true");
    assert_eq!(put(&s, "/v1/kv/c?cas=0", b"2").text(), "false", "cas=0 only creates");
    assert_eq!(put(&s, "/v1/kv/c?cas=99", b"2").text(), "false");
    assert_eq!(put(&s, "/v1/kv/c?cas=2", b"2").text(), "true");
    assert_eq!(s.fake.get("c").unwrap().value.as_ref(), b"2");
    assert_eq!(call("DELETE", &s.url("/v1/kv/c?cas=2"), None).text(), "false");
    assert_eq!(call("DELETE", &s.url("/v1/kv/c?cas=3"), None).text(), "true");
    assert!(s.fake.get("c").is_none());
    // A plain delete of a missing key is still `true`.
    assert_eq!(call("DELETE", &s.url("/v1/kv/c"), None).text(), "true");
    put(&s, "/v1/kv/t/a", b"");
    put(&s, "/v1/kv/t/b", b"");
    put(&s, "/v1/kv/u", b"");
    assert_eq!(call("DELETE", &s.url("/v1/kv/t/?recurse"), None).text(), "true");
    assert!(s.fake.get("t/a").is_none() && s.fake.get("t/b").is_none() && s.fake.get("u").is_some());
    let r = call("DELETE", &s.url("/v1/kv/t?recurse&cas=1"), None);
    assert_eq!((r.status, r.text()), (400, "Conflicting flags: recurse&cas=1"));
    assert_eq!(call("DELETE", &s.url("/v1/kv/"), None).status, 400);
}

#[test]
fn oversized_values_get_413_without_buffering() {
    let s = TestServer::start(small_limits());
    let ok = vec![b'x'; 1024];
    assert_eq!(put(&s, "/v1/kv/big", &ok).status, 200, "exactly the limit is fine");
    let r = put(&s, "/v1/kv/big", &[b'y'; 1025]);
    assert_eq!(r.status, 413);
    assert_eq!(
        r.text(),
        "Request body(1025 bytes) too large, max size: 1024 bytes. See \
         https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size."
    );
    // Chunked (no Content-Length): cut off while streaming.
    let big = vec![b'z'; 200_000];
    let r = into_reply(agent().put(&s.url("/v1/kv/big")).send(&big[..]));
    assert_eq!(r.status, 413);
    assert!(r
        .text()
        .starts_with("Request body(more than 1024 bytes) too large, max size: 1024 bytes."));
    assert_eq!(
        s.fake.get("big").unwrap().value.as_ref(),
        &ok[..],
        "nothing oversized was written"
    );
    // A huge declared length is refused from the headers alone.
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.write_all(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    // With `Expect: 100-continue` the refusal comes before any body is asked for.
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.write_all(b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
}

#[test]
fn bad_requests_get_400_with_one_line() {
    let s = TestServer::start(HttpSettings::default());
    let cases = [
        (
            "PUT",
            "/v1/kv/k?cas=abc",
            "Invalid cas value \"abc\": want an unsigned integer",
        ),
        (
            "PUT",
            "/v1/kv/k?flags=-1",
            "Invalid flags value \"-1\": want an unsigned integer",
        ),
        (
            "GET",
            "/v1/kv/k?index=-1",
            "Invalid index \"-1\": want an unsigned integer (X-Consul-Index)",
        ),
        (
            "GET",
            "/v1/kv/k?index=1&wait=5x",
            "Invalid wait time: invalid duration \"5x\": use a Go duration such as 10s, 1500ms or 5m",
        ),
        (
            "GET",
            "/v1/kv/k?stale&consistent",
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ),
        ("PUT", "/v1/kv/k?acquire=abc", "sessions are not supported yet"),
        ("PUT", "/v1/kv/k?release=abc", "sessions are not supported yet"),
        (
            "PUT",
            "/v1/kv/k?cas=1&acquire=abc",
            "Conflicting flags: cas=1&acquire=abc",
        ),
        ("GET", "/v1/kv/a%0Ab", "Invalid key: must not contain a linefeed (%0A)"),
        ("PUT", "/v1/kv/", "Missing key name"),
    ];
    for (method, path, message) in cases {
        let r = call(method, &s.url(path), if method == "PUT" { Some(b"v") } else { None });
        assert_eq!((r.status, r.text()), (400, message), "{method} {path}");
        assert!(!r.text().contains('\n'));
        assert_eq!(r.header("X-Consul-Default-ACL-Policy"), Some("allow"));
    }
    assert!(s.fake.requests().is_empty(), "no bad request reached the backend");
    let r = get(&s, "/v1/kv/k?dc=dc2");
    assert_eq!((r.status, r.text()), (500, "No path to datacenter"));
    assert_eq!(get(&s, "/v1/kv/k?dc=dc1").status, 404);
    let r = call("POST", &s.url("/v1/kv/k"), Some(b""));
    assert_eq!(r.status, 405);
    let r = get(&s, "/v1/nothing/here");
    assert_eq!(
        (r.status, r.header("X-Consul-Default-ACL-Policy")),
        (404, Some("allow"))
    );
}

#[test]
fn api_errors_map_to_consul_statuses() {
    let s = TestServer::start(HttpSettings::default());
    let cases = [
        (ApiError::NoLeader, 500, "No cluster leader"),
        (ApiError::Timeout, 500, "request timed out; the outcome is unknown"),
        (ApiError::BadRequest("nope".into()), 400, "nope"),
        (ApiError::NotFound("gone".into()), 404, "gone"),
        (ApiError::Overloaded("busy".into()), 429, "rate limit exceeded: busy"),
        (ApiError::StorageFailed, 500, "storage failure; this server is stopping"),
    ];
    for (e, status, text) in cases {
        s.fake.fail_next(e);
        let r = get(&s, "/v1/kv/x");
        assert_eq!((r.status, r.text()), (status, text));
    }
    s.fake.fail_next(ApiError::NoLeader);
    let r = put(&s, "/v1/kv/x", b"1");
    assert_eq!((r.status, r.text()), (500, "No cluster leader"));
}

#[test]
fn blocking_parameters_reach_the_backend_parsed() {
    let s = TestServer::start(HttpSettings {
        default_query_time: Duration::from_millis(300),
        max_query_time: Duration::from_millis(400),
        ..HttpSettings::default()
    });
    put(&s, "/v1/kv/w", b"1");
    let r = get(&s, "/v1/kv/w?index=2&wait=100ms&stale=");
    assert_eq!(
        (r.status, r.header("X-Consul-Index")),
        (200, Some("2")),
        "timed out, same index"
    );
    let r = get(&s, "/v1/kv/w?index=2"); // default wait
    assert_eq!(r.status, 200);
    get(&s, "/v1/kv/w?index=2&wait=1h"); // capped
    get(&s, "/v1/kv/w?wait=5s"); // no index: no blocking
    let reads: Vec<_> = s
        .fake
        .requests()
        .into_iter()
        .filter(|r| matches!(r, Request::KvRead { .. }))
        .collect();
    let q = KvQuery::Get { key: "w".into() };
    let expect = |mode, block| Request::KvRead {
        query: q.clone(),
        mode,
        block,
    };
    assert_eq!(
        reads,
        vec![
            expect(
                ReadMode::Stale,
                Some(Blocking {
                    min_index: 2,
                    wait: Duration::from_millis(100)
                })
            ),
            expect(
                ReadMode::Default,
                Some(Blocking {
                    min_index: 2,
                    wait: Duration::from_millis(300)
                })
            ),
            expect(
                ReadMode::Default,
                Some(Blocking {
                    min_index: 2,
                    wait: Duration::from_millis(400)
                })
            ),
            expect(ReadMode::Default, None),
        ]
    );
}

#[test]
fn blocking_query_returns_when_the_key_changes() {
    let s = TestServer::start(HttpSettings::default());
    put(&s, "/v1/kv/w", b"1");
    let url = s.url("/v1/kv/w?index=2&wait=30s");
    let waiter = std::thread::spawn(move || call("GET", &url, None));
    poll_until("the blocking read to reach the backend", || {
        s.fake.requests().len() == 2
    });
    s.fake.put("w", b"2", 0);
    let r = waiter.join().unwrap();
    assert_eq!(r.header("X-Consul-Index"), Some("3"));
    assert!(r.text().contains(r#""Value":"Mg==""#));
}

#[test]
fn closing_the_connection_cancels_the_backend_call() {
    let s = TestServer::start(HttpSettings::default());
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    write!(
        tcp,
        "GET /v1/kv/{HANG_KEY}?index=1&wait=10m HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    poll_until("the call to park", || s.fake.hanging.load(Ordering::SeqCst) == 1);
    assert!(!s.fake.hang_dropped.load(Ordering::SeqCst));
    drop(tcp);
    poll_until("the call future to be dropped", || {
        s.fake.hang_dropped.load(Ordering::SeqCst)
    });
}

#[test]
fn shutdown_ends_in_flight_blocking_queries() {
    let mut s = TestServer::start(HttpSettings::default());
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    write!(tcp, "GET /v1/kv/{HANG_KEY}?index=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    poll_until("the call to park", || s.fake.hanging.load(Ordering::SeqCst) == 1);
    s.shutdown().unwrap();
    assert!(s.fake.hang_dropped.load(Ordering::SeqCst));
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("Agent is shutting down"), "{answer}");
    assert!(TcpStream::connect(s.addr).is_err(), "listener closed");
}

#[test]
fn status_and_operator_endpoints() {
    let s = TestServer::start(HttpSettings::default());
    assert_eq!(get(&s, "/v1/status/leader").text(), r#""127.0.0.1:8300""#);
    assert_eq!(
        get(&s, "/v1/status/peers").text(),
        r#"["127.0.0.1:8300","127.0.0.2:8300"]"#
    );
    let r = get(&s, "/v1/operator/raft/configuration?stale");
    assert_eq!(
        r.text(),
        concat!(
            r#"{"Servers":[{"ID":"00000000-0000-0000-0000-000000000001","Node":"server-1","Address":"127.0.0.1:8300","#,
            r#""Leader":true,"ProtocolVersion":"3","Voter":true},"#,
            r#"{"ID":"00000000-0000-0000-0000-000000000002","Node":"server-2","Address":"127.0.0.2:8300","#,
            r#""Leader":false,"ProtocolVersion":"3","Voter":false}],"Index":7}"#
        )
    );
    assert_eq!(r.header("X-Consul-Index"), Some("7"));
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("stale"));

    let r = call("DELETE", &s.url("/v1/operator/raft/peer?address=127.0.0.2:8300"), None);
    assert_eq!((r.status, r.text()), (200, ""));
    let r = call(
        "DELETE",
        &s.url("/v1/operator/raft/peer?id=00000000-0000-0000-0000-000000000002"),
        None,
    );
    assert_eq!(r.status, 200);
    let r = call("DELETE", &s.url("/v1/operator/raft/peer"), None);
    assert_eq!(r.status, 400);
    let r = call("DELETE", &s.url("/v1/operator/raft/peer?id=nope"), None);
    assert_eq!(r.status, 400);
    let r = call(
        "POST",
        &s.url("/v1/operator/raft/transfer-leader?id=00000000-0000-0000-0000-000000000002"),
        None,
    );
    assert_eq!((r.status, r.text()), (200, r#"{"Success":true}"#));
    assert_eq!(
        call("PUT", &s.url("/v1/operator/raft/transfer-leader"), Some(b"")).status,
        200
    );
    let reqs = s.fake.requests();
    assert_eq!(
        &reqs[3..],
        &[
            Request::RemovePeer {
                id: None,
                address: Some("127.0.0.2:8300".into())
            },
            Request::RemovePeer {
                id: Some(node_id(2)),
                address: None
            },
            Request::TransferLeader { to: Some(node_id(2)) },
            Request::TransferLeader { to: None },
        ]
    );
}

#[test]
fn agent_self_and_leave() {
    let s = TestServer::start(HttpSettings::default());
    let r = get(&s, "/v1/agent/self");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    for key in ["Config", "DebugConfig", "Coord", "Member", "Stats", "Meta", "xDS"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["Config"]["Datacenter"], "dc1");
    assert_eq!(v["Config"]["NodeName"], "server-1");
    assert_eq!(v["Config"]["Version"], super::CONSUL_COMPAT_VERSION);
    assert_eq!(v["Config"]["Server"], true);
    assert_eq!(v["Member"]["Tags"]["role"], "consul");
    assert_eq!(v["Stats"]["raft"]["state"], "Leader");
    assert_eq!(v["Stats"]["raft"]["commit_index"], "42");
    assert_eq!(v["Stats"]["raft"]["applied_index"], "41");
    assert_eq!(v["Stats"]["raft"]["last_contact"], "0");
    assert_eq!(v["Stats"]["consul"]["leader"], "true");
    assert_eq!(v["Stats"]["consul"]["leader_addr"], "127.0.0.1:8300");
    assert_eq!(v["Stats"]["consul"]["known_datacenters"], "1");
    assert!(!s.fake.left.load(Ordering::SeqCst));
    let r = call("PUT", &s.url("/v1/agent/leave"), Some(b""));
    assert_eq!(r.status, 200);
    assert!(s.fake.left.load(Ordering::SeqCst));
}

#[test]
fn go_durations_print_like_go() {
    use super::agent::go_duration_ms;
    assert_eq!(go_duration_ms(0), "0s");
    assert_eq!(go_duration_ms(23), "23ms");
    assert_eq!(go_duration_ms(1500), "1.5s");
    assert_eq!(go_duration_ms(123_456), "2m3.456s");
    assert_eq!(go_duration_ms(3_600_000), "1h0m0s");
}

#[test]
fn connections_per_client_are_limited() {
    let s = TestServer::start(HttpSettings {
        http_max_conns_per_client: 2,
        ..HttpSettings::default()
    });
    let first = TcpStream::connect(s.addr).unwrap();
    let _second = TcpStream::connect(s.addr).unwrap();
    let mut third = TcpStream::connect(s.addr).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{answer}");
    drop(first);
    // The slot comes back once the server notices the close.
    poll_until("a slot to free up", || {
        let mut tcp = TcpStream::connect(s.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    });
}

#[test]
fn a_stalled_client_does_not_hold_shutdown_forever() {
    let mut s = TestServer::start(HttpSettings::default());
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.write_all(b"GET /v1/kv/x HTTP/1.1\r\nHost:").unwrap();
    // Make sure the connection was accepted and is being read before shutting down.
    let mut other = TcpStream::connect(s.addr).unwrap();
    other
        .write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    let started = Instant::now();
    s.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(9));
    drop(tcp);
}

/// Read from `tcp` until EOF or error; what arrived.
fn read_all(tcp: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn keep_alive_pipelining_and_http10() {
    let s = TestServer::start(HttpSettings::default());
    put(&s, "/v1/kv/a", b"1");
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Three requests in one write; the last closes. Each answer in order, then EOF.
    tcp.write_all(
        b"GET /v1/kv/a?raw HTTP/1.1\r\nHost: x\r\n\r\n\
          PUT /v1/kv/b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi\
          GET /v1/kv/b?raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let answer = read_all(&mut tcp);
    let statuses: Vec<&str> = answer.matches("HTTP/1.1 200 OK").collect();
    assert_eq!(statuses.len(), 3, "{answer}");
    assert!(answer.ends_with("\r\n\r\nhi"), "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    // HTTP/1.0 without keep-alive: one answer, then the server closes.
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /v1/kv/a?raw HTTP/1.0\r\n\r\n").unwrap();
    let answer = read_all(&mut tcp);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\n1"),
        "{answer}"
    );
}

#[test]
fn expect_continue_is_answered_when_the_body_is_wanted() {
    let s = TestServer::start(HttpSettings::default());
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"PUT /v1/kv/e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    tcp.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(b"abc").unwrap();
    let mut head = [0u8; 15];
    tcp.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200 OK");
    assert_eq!(s.fake.get("e").unwrap().value.as_ref(), b"abc");
}

#[test]
fn chunked_bodies_reach_the_handler_whole() {
    let s = TestServer::start(HttpSettings::default());
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Split across writes, with an extension and a trailer.
    tcp.write_all(b"PUT /v1/kv/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\nab")
        .unwrap();
    tcp.write_all(b"cd\r\n2\r\nef\r\n0\r\nX-T: 1\r\n\r\nGET /v1/kv/c?raw HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut tcp);
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
    assert!(answer.ends_with("abcdef"), "{answer}");
    // A malformed chunk: the handler sees a body error (400) and the connection closes.
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"PUT /v1/kv/d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .unwrap();
    let answer = read_all(&mut tcp);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(s.fake.get("d").is_none());
}

#[test]
fn slow_clients_are_cut_off_by_the_header_timeout() {
    let s = TestServer::start(HttpSettings {
        read_header_timeout: Duration::from_millis(300),
        ..HttpSettings::default()
    });
    // Silent after connecting, and trickling a head: both closed without an answer, after the timeout.
    let started = Instant::now();
    let mut silent = TcpStream::connect(s.addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut trickle = TcpStream::connect(s.addr).unwrap();
    trickle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = {
        let mut t = trickle.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"GET /v1/kv/x HTTP/1.1\r\nHost: x\r\n".iter() {
                if t.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    assert_eq!(read_all(&mut silent), "");
    assert_eq!(read_all(&mut trickle), "");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    writer.join().unwrap();
    // A keep-alive connection may idle between requests; the clock starts at the next request's first byte.
    let mut idle = TcpStream::connect(s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = Vec::new();
    while !first.ends_with(br#""127.0.0.1:8300""#) {
        let mut chunk = [0u8; 512];
        let n = idle.read(&mut chunk).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&chunk[..n]);
    }
    let idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_millis(600) {
        std::thread::sleep(Duration::from_millis(100));
    }
    idle.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(read_all(&mut idle).starts_with("HTTP/1.1 200 OK"));
    // Others are served throughout.
    assert_eq!(get(&s, "/v1/status/leader").status, 200);
}

/// A deferred read (`deferred.rs`) answers HEAD as the router's own answers do: its headers, an empty body
/// and `content-length: 0`, and the connection stays usable.
#[test]
fn head_of_a_deferred_read_has_headers_and_no_body() {
    let s = TestServer::start(HttpSettings::default());
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"HEAD /v1/health/service/web HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/catalog/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let (first, second) = text.split_at(text[1..].find("http/1.1 ").expect("two answers") + 1);
    assert!(first.starts_with("http/1.1 200 ok\r\n"), "{first}");
    assert!(first.contains("\r\ncontent-length: 0\r\n"), "{first}");
    assert!(first.contains("\r\nx-consul-index: "), "{first}");
    assert!(first.contains("\r\nx-consul-default-acl-policy: allow\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\n"), "no body after the head: {first}");
    assert!(second.starts_with("http/1.1 200 ok\r\n"), "{second}");
}

#[test]
fn max_header_bytes_bounds_the_request_head() {
    let s = TestServer::start(HttpSettings {
        max_header_bytes: 2048,
        ..HttpSettings::default()
    });
    let ask = |head: String| {
        let mut tcp = TcpStream::connect(s.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(head.as_bytes()).unwrap();
        let answer = read_all(&mut tcp);
        answer.lines().next().unwrap_or_default().to_string()
    };
    let small = format!(
        "GET /v1/kv/a HTTP/1.1\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(1000)
    );
    assert_eq!(ask(small), "HTTP/1.1 404 Not Found", "a head under the limit is served");
    let big = format!(
        "GET /v1/kv/a HTTP/1.1\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "p".repeat(3000)
    );
    assert_eq!(ask(big), "HTTP/1.1 431 Request Header Fields Too Large");
    let long_line = format!("GET /v1/kv/{} HTTP/1.1\r\n\r\n", "k".repeat(3000));
    assert_eq!(ask(long_line), "HTTP/1.1 414 URI Too Long");
    // The server is still up for others.
    put(&s, "/v1/kv/a", b"1");
}

/// Header names go out in Go's canonical MIME case, byte for byte as Consul's net/http writes them, so
/// `curl -si … | grep X-Consul-Index` finds them; an error answer of the connection loop too.
#[test]
fn header_names_are_in_go_canonical_case_on_the_wire() {
    let s = TestServer::start(HttpSettings::default());
    put(&s, "/v1/kv/a", b"1");
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = read_all(&mut tcp);
    let head = &answer[..answer.find("\r\n\r\n").expect("a whole head")];
    let names: Vec<&str> = head.lines().skip(1).map(|l| l.split(':').next().unwrap()).collect();
    for want in [
        "X-Consul-Index",
        "X-Consul-Knownleader",
        "X-Consul-Lastcontact",
        "X-Consul-Effective-Consistency",
        "X-Consul-Default-Acl-Policy",
        "Content-Type",
        "Content-Length",
        "Connection",
        "Date",
    ] {
        assert!(names.contains(&want), "no {want:?} in {head}");
    }
    for name in &names {
        let canonical = name
            .split('-')
            .map(|w| {
                let mut w = w.to_ascii_lowercase();
                w[..1].make_ascii_uppercase();
                w
            })
            .collect::<Vec<_>>()
            .join("-");
        assert_eq!(*name, canonical, "{head}");
    }
    assert!(head.contains("\r\nContent-Type: application/json\r\n"), "{head}");
    // An answer of the connection loop itself (not the router's).
    let mut tcp = TcpStream::connect(s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").unwrap();
    let answer = read_all(&mut tcp);
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nContent-Length: 0\r\nConnection: close\r\nDate: "),
        "{answer}"
    );
}

/// Consul wraps every endpoint in gziphandler, which adds `Vary: Accept-Encoding` to all its responses,
/// compressed or not (errors too); answers of the mux itself (an unknown path, a redirect of an unclean
/// one) have none.
#[test]
fn endpoint_responses_vary_on_accept_encoding() {
    let s = TestServer::start(HttpSettings::default());
    let vary = |r: &Reply| {
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("Vary"))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let r = put(&s, "/v1/kv/foo", b"bar");
    assert_eq!((r.status, vary(&r)), (200, vec!["Accept-Encoding".to_string()]));
    for (method, path, status) in [
        ("GET", "/v1/kv/foo", 200),
        ("GET", "/v1/kv/missing", 404),
        ("GET", "/v1/kv/foo?index=x", 400),
        ("POST", "/v1/kv/foo", 405),
        ("GET", "/v1/catalog/nodes", 200),
        ("GET", "/v1/agent/self", 200),
    ] {
        let r = call(method, &s.url(path), None);
        assert_eq!(
            (r.status, vary(&r)),
            (status, vec!["Accept-Encoding".to_string()]),
            "{method} {path}"
        );
    }
    let r = get(&s, "/v1/nothing/here");
    assert_eq!((r.status, vary(&r)), (404, Vec::<String>::new()));
    let r = get(&s, "/v1/kv//foo");
    assert_eq!((r.status, vary(&r)), (301, Vec::<String>::new()));
}
