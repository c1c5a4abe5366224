//! Hostile and broken input against a real server process: each bad request gets Consul's 4xx (or the
//! packet is dropped), the agent stays up, and data it acknowledged before is still there afterwards.

use concord_tests::{http_get, http_put, poll, Agent, Cluster, Resp, HTTP_TIMEOUT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Consul's default LAN gossip port; the harness leaves it at the default on each server's own address.
const SERF_LAN_PORT: u16 = 8301;

/// One leader with an acknowledged key `keep` = `safe`.
fn server_with_data() -> Cluster {
    let mut c = Cluster::start(1);
    c.wait_leader(Duration::from_secs(30));
    let r = http_put(&c.url(0, "/v1/kv/keep"), b"safe").expect("PUT keep");
    assert_eq!((r.status, r.text()), (200, "true".to_string()));
    c
}

/// The agent still runs, serves, accepts writes and has every acknowledged value.
fn assert_up_and_intact(c: &mut Cluster) {
    assert_eq!(c.running(), vec![0], "the agent died:\n{}", c.logs());
    let r = http_get(&c.url(0, "/v1/kv/keep?raw")).expect("GET keep");
    assert_eq!((r.status, r.text()), (200, "safe".to_string()));
    let r = http_put(&c.url(0, "/v1/kv/after"), b"ok").expect("PUT after");
    assert_eq!((r.status, r.text()), (200, "true".to_string()));
}

/// Send `request` as raw bytes; the answer's status line, lower-cased header block, and body.
fn raw(addr: &str, request: &[u8]) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    // The server may answer (and close) before it has read everything; a failed write is fine then.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.as_bytes().to_vec(),
    )
}

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

#[test]
fn hostile_http_requests_get_4xx_and_the_agent_stays_up() {
    let mut c = server_with_data();
    let addr = c.servers[0].http_addr();

    // Oversized KV value: 413 (limits.kv_max_value_size, 512 KiB), nothing stored.
    let big = vec![b'x'; 512 * 1024 + 1];
    let r = http_put(&c.url(0, "/v1/kv/big"), &big).expect("PUT big");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(http_get(&c.url(0, "/v1/kv/big")).unwrap().status, 404);
    let exact = vec![b'y'; 512 * 1024];
    assert_eq!(http_put(&c.url(0, "/v1/kv/exact"), &exact).unwrap().status, 200);

    // An encoded linefeed in a key is always rejected (Consul's rule); %2F is an ordinary slash.
    let put = b"PUT /v1/kv/a%0ab HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv";
    let (status, _, body) = raw(&addr, put);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    assert!(String::from_utf8_lossy(&body).contains("linefeed"));
    http_put(&c.url(0, "/v1/kv/dir/k"), b"slash").unwrap();
    let (status, _, body) = raw(&addr, &get_req("/v1/kv/dir%2Fk?raw"));
    assert_eq!((status.as_str(), &body[..]), ("HTTP/1.1 200 OK", &b"slash"[..]));

    // Dot segments and doubled slashes are redirected to the clean path (Go's ServeMux, as in Consul),
    // before any handler: a PUT through `..` writes nothing.
    let (status, headers, _) = raw(&addr, &get_req("/v1/kv/../agent/self?pretty"));
    assert!(status.starts_with("HTTP/1.1 301"), "{status}");
    assert!(headers.contains("location: /v1/agent/self?pretty"), "{headers}");
    let sneaky = b"PUT /v1/kv/x/%2e%2e/keep HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil";
    let (status, headers, _) = raw(&addr, sneaky);
    assert!(status.starts_with("HTTP/1.1 301"), "{status}");
    assert!(headers.contains("location: /v1/kv/keep"), "{headers}");
    assert!(raw(&addr, &get_req("/v1/kv//keep")).0.starts_with("HTTP/1.1 301"));

    // ?raw is never sniffed: text/plain with nosniff, whatever the value looks like.
    http_put(&c.url(0, "/v1/kv/html"), b"<html><script>alert(1)</script>").unwrap();
    let (status, headers, _) = raw(&addr, &get_req("/v1/kv/html?raw"));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(headers.contains("content-type: text/plain\r\n") || headers.ends_with("content-type: text/plain"));
    assert!(headers.contains("x-content-type-options: nosniff"), "{headers}");

    // Header tricks: two different Content-Lengths (request smuggling) are refused; header names are
    // case-insensitive; chunked framing wins over a Content-Length.
    let dup = b"PUT /v1/kv/keep HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\
                Connection: close\r\n\r\nevil!";
    let (status, _, _) = raw(&addr, dup);
    assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    let mixed = b"PUT /v1/kv/mixed HTTP/1.1\r\nhOsT: x\r\ncOnTeNt-LeNgTh: 2\r\nConnection: close\r\n\r\nok";
    assert!(raw(&addr, mixed).0.starts_with("HTTP/1.1 200"));
    let chunked = b"PUT /v1/kv/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                    Content-Length: 100\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    assert!(raw(&addr, chunked).0.starts_with("HTTP/1.1 200"));
    assert_eq!(http_get(&c.url(0, "/v1/kv/chunked?raw")).unwrap().text(), "abc");

    // Oversized header block and URL: 431 and 414, not a crash or an unbounded buffer.
    let huge_header = [
        b"GET /v1/kv/keep HTTP/1.1\r\nHost: x\r\nX-Big: ".as_slice(),
        &vec![b'a'; 1 << 20],
        b"\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    assert!(raw(&addr, &huge_header).0.starts_with("HTTP/1.1 431"));
    let long_url = get_req(&format!("/v1/kv/{}", "k".repeat(100_000)));
    assert!(raw(&addr, &long_url).0.starts_with("HTTP/1.1 414"));

    // Not HTTP at all, a truncated request, a bad JSON body.
    assert!(raw(&addr, b"\x00\x01\x02garbage\r\n\r\n").0.starts_with("HTTP/1.1 400"));
    let _ = raw(
        &addr,
        b"PUT /v1/kv/keep HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\ntrunc",
    );
    let r = http_put(&c.url(0, "/v1/catalog/register"), b"{\"Node\":").unwrap();
    assert_eq!(r.status, 400, "{}", r.text());

    assert_up_and_intact(&mut c);
}

#[test]
fn a_connection_flood_from_one_address_gets_429_past_the_per_client_limit() {
    let mut c = server_with_data();
    let addr = c.servers[0].http_addr();
    // limits.http_max_conns_per_client defaults to 200: open that many and keep them open.
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(&addr).expect("connect"));
    }
    // The server counts a connection once it accepts it; poll until the next one is refused.
    let refused: String = poll(Duration::from_secs(10), "the 201st connection to get 429", || {
        let (status, _, body) = raw(&addr, &get_req("/v1/kv/keep?raw"));
        if status.starts_with("HTTP/1.1 429") {
            Ok(String::from_utf8_lossy(&body).into_owned())
        } else {
            Err(format!("got {status:?}"))
        }
    });
    assert!(refused.contains("Too many open connections"), "{refused}");
    drop(held);
    let r: Resp = poll(Duration::from_secs(10), "a connection after the flood", || {
        http_get(&c.url(0, "/v1/kv/keep?raw")).and_then(|r| r.expect_status(200))
    });
    assert_eq!(r.text(), "safe");
    assert_up_and_intact(&mut c);
}

#[test]
fn slow_clients_are_disconnected_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("http.json");
    std::fs::write(
        &config,
        r#"{"http_config": {"read_header_timeout": "1s", "write_timeout": "1s"}}"#,
    )
    .unwrap();
    let mut agent = Agent::dev_with(&["-config-file", config.to_str().unwrap()]);
    let addr = agent.server().http_addr();
    poll(Duration::from_secs(30), "the dev agent to take a write", || {
        http_put(&agent.url("/v1/kv/keep"), b"safe").and_then(|r| r.expect_status(200))
    });
    let keep_url = agent.url("/v1/kv/keep?raw");
    let served = || {
        let r = http_get(&keep_url).expect("GET keep");
        assert_eq!((r.status, r.text()), (200, "safe".to_string()));
    };

    // A client that connects and says nothing, and one that never finishes its request head: both are
    // disconnected without an answer once read_header_timeout has passed; others are served meanwhile.
    let started = Instant::now();
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut partial = TcpStream::connect(&addr).unwrap();
    partial.write_all(b"GET /v1/kv/keep HTTP/1.1\r\nHost:").unwrap();
    served();
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        let mut got = Vec::new();
        let ended = s.read_to_end(&mut got);
        assert!(
            ended.is_ok() && got.is_empty(),
            "{ended:?} {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "cut off after {waited:?}");

    // A client that asks for 64 answers of 512 KiB and never reads: once the socket buffers are full the
    // server's write stalls, and write_timeout ends the connection (it gets far fewer than 64 answers).
    let big = vec![b'b'; 512 * 1024];
    let r = http_put(&agent.url("/v1/kv/big"), &big).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut hog = TcpStream::connect(&addr).unwrap();
    hog.write_all(&b"GET /v1/kv/big?raw HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64))
        .unwrap();
    // The hog does not read for 3 s (3 write timeouts); the agent keeps serving others all along.
    let stall = Instant::now();
    while stall.elapsed() < Duration::from_secs(3) {
        served();
        std::thread::sleep(Duration::from_millis(200));
    }
    hog.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let ended = hog.read_to_end(&mut got);
    let timed_out = ended
        .as_ref()
        .is_err_and(|e| matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(
        !timed_out,
        "the server kept the connection of a client that does not read"
    );
    assert!(got.len() < 64 * big.len(), "got all {} bytes", got.len());
    assert!(agent.server().is_running(), "the agent died");
    served();
}

#[test]
fn garbage_rpc_and_gossip_frames_are_dropped() {
    let mut c = server_with_data();
    let rpc = c.servers[0].rpc_addr();
    let frames: [&[u8]; 6] = [
        &[0xff, 0xff, 0xff, 0xff],                   // length prefix far over the frame cap
        &[0, 0, 0, 0],                               // zero length
        &[0, 0, 0, 50, 1, 2, 3],                     // truncated body, then EOF
        &[0, 0, 0, 4, 0xee, 0xee, 0xee, 0xee],       // unknown wire version
        &[0, 0, 0, 6, 1, 0xff, 0xff, 0xff, 0xff, 9], // valid version, undecodable frame
        b"GET / HTTP/1.1\r\n\r\n",                   // the wrong protocol
    ];
    for frame in frames {
        let mut s = TcpStream::connect(&rpc).expect("connect to the RPC port");
        s.set_read_timeout(Some(HTTP_TIMEOUT)).unwrap();
        let _ = s.write_all(frame);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        // The server closes the connection (EOF or reset); it must not hang on to it forever.
        let _ = s.read_to_end(&mut sink);
    }
    let gossip = SocketAddr::new(c.servers[0].ip.into(), SERF_LAN_PORT);
    let udp = UdpSocket::bind((c.servers[0].ip, 0)).expect("bind UDP");
    let datagrams: [Vec<u8>; 5] = [vec![], vec![1], vec![1, 0xff, 0xff, 0], vec![9; 1400], vec![1; 60_000]];
    for d in &datagrams {
        let _ = udp.send_to(d, gossip);
    }
    // Gossip still works: the member list answers and names this server alive.
    let members = http_get(&c.url(0, "/v1/agent/members")).expect("members");
    assert_eq!(members.status, 200, "{}", members.text());
    assert!(members.text().contains("\"Name\":\"s1\""), "{}", members.text());
    c.wait_leader(Duration::from_secs(10));
    assert_up_and_intact(&mut c);
}
