//! The UDP serving thread (`udp.rs`) over real loopback sockets: every query answered whatever else shares
//! its batch, batches larger than one `recvmmsg`, recursion through the runtime, and the stop signal.
//! What the answers say is the core's business (core/src/dns/tests.rs); here only the transport is checked.
//! Also: which `-dns-port` values listen at all.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use concord_core::dns::{DnsConfig, Responder};
use tokio::sync::watch;

use super::udp::{self, UdpServer, BATCH};
use super::{recursor, Snapshot};

const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const NOERROR: u8 = 0;
const FORMERR: u8 = 1;
const NXDOMAIN: u8 = 3;

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, one question
    for label in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(label.len()).unwrap());
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// (ID, RCODE) of a reply; panics on a datagram that is not a reply.
fn id_rcode(reply: &[u8]) -> (u16, u8) {
    assert!(reply.len() >= 12 && reply[2] & 0x80 != 0, "not a DNS reply: {reply:?}");
    (u16::from_be_bytes([reply[0], reply[1]]), reply[3] & 0x0f)
}

struct Server {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
}

/// A bound server socket; nothing reads it until [`Server::start`], so datagrams sent before queue up and
/// the first `recvmmsg` takes them together.
fn bind() -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

impl Server {
    fn start(socket: UdpSocket, config: DnsConfig, recursors: Vec<SocketAddr>) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (_views_tx, views) = watch::channel(Arc::new(Snapshot::default()));
        let (stop, stop_rx) = watch::channel(false);
        let server = UdpServer {
            socket: Arc::new(socket),
            responder: Arc::new(Responder::new(config).unwrap()),
            views,
            forward: Arc::new(recursor::Forwarder::new(recursors, Duration::from_secs(2))),
            runtime: runtime.handle().clone(),
            stop: stop_rx,
        };
        let thread = std::thread::spawn(move || udp::serve(server));
        Server {
            stop,
            thread: Some(thread),
            runtime,
        }
    }

    /// Signal stop and wait (with a deadline) for the thread to end.
    fn stop(mut self) {
        self.stop.send_replace(true);
        wait_finished(self.thread.take().unwrap());
        drop(self.runtime);
    }
}

fn wait_finished(thread: JoinHandle<()>) {
    let deadline = Instant::now() + udp::STOP_POLL * 20;
    while !thread.is_finished() {
        assert!(Instant::now() < deadline, "the UDP thread did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    thread.join().unwrap();
}

fn client() -> UdpSocket {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c
}

/// Replies until `want` arrived or nothing came for the socket's read timeout.
fn replies(c: &UdpSocket, want: usize) -> Vec<(u16, u8)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want {
        match c.recv(&mut buf) {
            Ok(n) => got.push(id_rcode(&buf[..n])),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn a_window_of_queries_in_flight_is_answered_in_full() {
    let (socket, addr) = bind();
    let server = Server::start(socket, DnsConfig::default(), vec![]);
    let c = client();
    const TOTAL: u16 = 3000;
    const WINDOW: u16 = 64;
    let mut answered = BTreeSet::new();
    let mut buf = [0u8; 4096];
    for id in 0..WINDOW {
        c.send_to(&query(id, "consul.", TYPE_SOA), addr).unwrap();
    }
    let mut next = WINDOW;
    while answered.len() < usize::from(TOTAL) {
        let n = c.recv(&mut buf).expect("a reply within the read timeout");
        let (id, rcode) = id_rcode(&buf[..n]);
        assert_eq!(rcode, NOERROR);
        assert!(answered.insert(id), "reply {id} twice");
        if next < TOTAL {
            c.send_to(&query(next, "consul.", TYPE_SOA), addr).unwrap();
            next += 1;
        }
    }
    assert_eq!(answered, (0..TOTAL).collect());
    server.stop();
}

#[test]
fn bad_datagrams_in_a_batch_do_not_stop_the_others() {
    let (socket, addr) = bind();
    let c = client();
    // Queued before the server reads anything: several batches' worth, bad ones spread through them.
    let total = u16::try_from(BATCH * 3 + 5).unwrap();
    let mut expect = Vec::new();
    for id in 0..total {
        let packet = match id % 6 {
            0 => query(id, "consul.", TYPE_SOA),
            1 => vec![0xab, 0xcd, 0x01], // shorter than a header: dropped
            2 => query(id, "nope.service.consul.", TYPE_A),
            3 => {
                let mut q = query(id, "consul.", TYPE_SOA);
                q[2] |= 0x80; // a response, not a query: dropped
                q
            }
            4 => query(id, "consul.", TYPE_SOA)[..14].to_vec(), // the question cut short: FORMERR
            _ => Vec::new(),                                    // empty: dropped
        };
        match id % 6 {
            0 => expect.push((id, NOERROR)),
            2 => expect.push((id, NXDOMAIN)),
            4 => expect.push((id, FORMERR)),
            _ => {}
        }
        c.send_to(&packet, addr).unwrap();
    }
    let server = Server::start(socket, DnsConfig::default(), vec![]);
    let mut got = replies(&c, expect.len());
    got.sort_unstable();
    assert_eq!(got, expect);
    // Still serving afterwards.
    c.send_to(&query(9999, "consul.", TYPE_SOA), addr).unwrap();
    assert_eq!(replies(&c, 1), vec![(9999, NOERROR)]);
    server.stop();
}

#[test]
fn queries_from_several_clients_in_one_batch_go_back_to_each() {
    let (socket, addr) = bind();
    let clients: Vec<UdpSocket> = (0..5).map(|_| client()).collect();
    for (k, c) in clients.iter().enumerate() {
        for j in 0..10u16 {
            let id = u16::try_from(k).unwrap() * 100 + j;
            c.send_to(&query(id, "consul.", TYPE_SOA), addr).unwrap();
        }
    }
    let server = Server::start(socket, DnsConfig::default(), vec![]);
    for (k, c) in clients.iter().enumerate() {
        let mut got: Vec<u16> = replies(c, 10).into_iter().map(|(id, _)| id).collect();
        got.sort_unstable();
        let base = u16::try_from(k).unwrap() * 100;
        assert_eq!(got, (base..base + 10).collect::<Vec<_>>(), "client {k}");
    }
    server.stop();
}

#[test]
fn names_outside_the_zone_are_forwarded_and_relayed_through_the_socket() {
    // A recursor that answers every query with its own bytes, QR set.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    upstream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = upstream.recv_from(&mut buf) {
            buf[2] |= 0x80;
            upstream.send_to(&buf[..n], from).unwrap();
        }
    });
    let (socket, addr) = bind();
    let config = DnsConfig {
        recursion: true,
        ..DnsConfig::default()
    };
    let server = Server::start(socket, config, vec![upstream_addr]);
    let c = client();
    // An in-zone query in the same burst is answered at once, not held up by the forward.
    c.send_to(&query(7, "example.org.", TYPE_A), addr).unwrap();
    c.send_to(&query(8, "consul.", TYPE_SOA), addr).unwrap();
    let mut got = replies(&c, 2);
    got.sort_unstable();
    assert_eq!(got, vec![(7, NOERROR), (8, NOERROR)]);
    echo.join().unwrap();
    server.stop();
}

#[test]
fn the_thread_ends_when_the_stop_sender_is_gone() {
    let (socket, _) = bind();
    let mut server = Server::start(socket, DnsConfig::default(), vec![]);
    let thread = server.thread.take().unwrap();
    drop(server);
    wait_finished(thread);
}

#[test]
fn dns_port_zero_or_negative_disables_dns_as_in_consul() {
    for (port, listening) in [("0", false), ("-1", false), ("8600", true)] {
        let args: Vec<String> = ["-dev", "-client", "127.0.0.1", "-dns-port", port]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let config = crate::config::parse_agent_args(&args).unwrap();
        let settings = super::DnsSettings::from_agent(&config).unwrap();
        let want: Vec<SocketAddr> = if listening {
            vec!["127.0.0.1:8600".parse().unwrap()]
        } else {
            vec![]
        };
        assert_eq!(settings.listen, want, "-dns-port {port}");
    }
}
