use super::*;
use crate::driver::Transport;
use concord_core::api::{Request, Response};
use concord_core::raft::{Membership, ServerInfo};
use concord_core::wire::{encode_frame, DEFAULT_MAX_FRAME, WIRE_VERSION};
use concord_core::PeerMessage;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Answering;

impl CallHandler for Answering {
    async fn call(&self, req: Request) -> Response {
        match req {
            Request::Leader => Response::Leader(Some("10.0.0.1:8300".into())),
            _ => Response::Done,
        }
    }
}

struct Server {
    book: Arc<AddressBook>,
    address: String,
    peer_rx: mpsc::Receiver<(NodeId, PeerMessage)>,
    _stop: oneshot::Sender<()>,
}

async fn server(id: u128, max_frame: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let book = Arc::new(AddressBook::new(LocalServer {
        id: NodeId(id),
        name: format!("s{id}"),
        address: address.clone(),
        datacenter: "dc1".into(),
    }));
    let (peer_tx, peer_rx) = mpsc::channel(1024);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, book.clone(), peer_tx, Answering, max_frame, async {
        let _ = stopped.await;
    }));
    Server {
        book,
        address,
        peer_rx,
        _stop: stop,
    }
}

fn membership(servers: &[&Server]) -> Membership {
    let mut m = Membership::default();
    for s in servers {
        let me = s.book.me();
        m.servers.insert(
            me.id,
            ServerInfo {
                name: me.name.clone(),
                address: me.address.clone(),
                voter: true,
            },
        );
    }
    m
}

fn msg(i: u64) -> PeerMessage {
    PeerMessage::ReadIndex { id: i, lease: false }
}

async fn recv(rx: &mut mpsc::Receiver<(NodeId, PeerMessage)>) -> (NodeId, PeerMessage) {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("no message before the deadline")
        .unwrap()
}

/// Bytes until the server closes the connection; panics if it stays open past the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(DEADLINE, stream.read(&mut chunk))
            .await
            .expect("connection left open")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn two_transports_exchange_messages_in_order() {
    let mut a = server(1, DEFAULT_MAX_FRAME).await;
    let mut b = server(2, DEFAULT_MAX_FRAME).await;
    let mut ta = TcpTransport::new(a.book.clone(), DEFAULT_MAX_FRAME);
    let mut tb = TcpTransport::new(b.book.clone(), DEFAULT_MAX_FRAME);
    ta.set_membership(&membership(&[&a, &b]));
    tb.set_membership(&membership(&[&a, &b]));

    // The first message triggers the connection; queued ones follow in one batch.
    for i in 0..1000 {
        ta.send(NodeId(2), msg(i));
    }
    for i in 0..1000 {
        assert_eq!(recv(&mut b.peer_rx).await, (NodeId(1), msg(i)));
    }
    tb.send(NodeId(1), msg(7));
    assert_eq!(recv(&mut a.peer_rx).await, (NodeId(2), msg(7)));
    assert_eq!(a.book.bad_frames() + b.book.bad_frames(), 0);
}

#[tokio::test]
async fn addresses_learned_from_hellos_are_dialable() {
    let a = server(1, DEFAULT_MAX_FRAME).await;
    let mut b = server(2, DEFAULT_MAX_FRAME).await;
    // a learns b only through a hello exchange, not from a configuration.
    let who = exchange_hello(&b.address, &a.book, DEFAULT_MAX_FRAME).await.unwrap();
    assert_eq!(who.0, NodeId(2));
    assert_eq!(b.book.address(NodeId(1)).as_deref(), Some(a.address.as_str()));
    let mut ta = TcpTransport::new(a.book.clone(), DEFAULT_MAX_FRAME);
    ta.send(NodeId(2), msg(3));
    assert_eq!(recv(&mut b.peer_rx).await, (NodeId(1), msg(3)));
}

#[tokio::test]
async fn calls_are_answered_on_the_same_connection() {
    let a = server(1, DEFAULT_MAX_FRAME).await;
    let b = server(2, DEFAULT_MAX_FRAME).await;
    let resp = call(&b.address, &a.book, Request::Leader, DEFAULT_MAX_FRAME, DEADLINE)
        .await
        .unwrap();
    assert_eq!(resp, Response::Leader(Some("10.0.0.1:8300".into())));
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_their_connection() {
    let a = server(1, DEFAULT_MAX_FRAME).await;
    let mut b = server(2, 1024).await;

    // A hello, then a frame with a valid length but bytes that are no frame.
    let mut garbage = TcpStream::connect(&b.address).await.unwrap();
    garbage.write_all(&encode_frame(&a.book.hello())).await.unwrap();
    garbage
        .write_all(&[0, 0, 0, 4, WIRE_VERSION, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    read_until_closed(&mut garbage).await;

    // A length prefix far over the cap, before any hello.
    let mut oversized = TcpStream::connect(&b.address).await.unwrap();
    oversized.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(
        read_until_closed(&mut oversized).await.is_empty(),
        "no hello for a bad dialer"
    );

    // A peer frame before the hello.
    let mut early = TcpStream::connect(&b.address).await.unwrap();
    early
        .write_all(&encode_frame(&concord_core::wire::Frame::Peer(msg(1))))
        .await
        .unwrap();
    read_until_closed(&mut early).await;

    // Counted once each connection's task has wound down, just after the close the client saw.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while b.book.bad_frames() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bad frames counted: {}",
            b.book.bad_frames()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.book.bad_frames(), 3);
    // The listener still serves well-behaved servers.
    let mut ta = TcpTransport::new(a.book.clone(), DEFAULT_MAX_FRAME);
    ta.set_membership(&membership(&[&a, &b]));
    ta.send(NodeId(2), msg(9));
    assert_eq!(recv(&mut b.peer_rx).await, (NodeId(1), msg(9)));
}

#[tokio::test]
async fn unreachable_peer_drops_messages_and_recovers_when_it_appears() {
    // Reserve an address, then free it so nothing listens there yet.
    let placeholder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = placeholder.local_addr().unwrap().to_string();
    drop(placeholder);
    let a = server(1, DEFAULT_MAX_FRAME).await;
    a.book.learn(NodeId(2), "s2", &address);
    let mut ta = TcpTransport::new(a.book.clone(), DEFAULT_MAX_FRAME);
    ta.send(NodeId(2), msg(1)); // Returns at once although nobody listens.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while a.book.dropped_messages() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message was neither sent nor dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Server 2 comes up at that address; Raft's retries (here: the test's) get through once the backoff
    // has passed.
    let listener = TcpListener::bind(&address).await.unwrap();
    let book2 = Arc::new(AddressBook::new(LocalServer {
        id: NodeId(2),
        name: "s2".into(),
        address: address.clone(),
        datacenter: "dc1".into(),
    }));
    let (peer_tx, mut peer_rx) = mpsc::channel(16);
    tokio::spawn(serve(
        listener,
        book2,
        peer_tx,
        Answering,
        DEFAULT_MAX_FRAME,
        std::future::pending(),
    ));
    let got = async {
        let mut i = 100;
        loop {
            ta.send(NodeId(2), msg(i));
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), peer_rx.recv()).await {
                return m;
            }
            i += 1;
        }
    };
    let (from, _) = tokio::time::timeout(DEADLINE, got).await.expect("never reconnected");
    assert_eq!(from, NodeId(1));
}

#[tokio::test]
async fn hellos_from_another_datacenter_are_refused() {
    let b = server(2, DEFAULT_MAX_FRAME).await;
    let other = AddressBook::new(LocalServer {
        id: NodeId(9),
        name: "s9".into(),
        address: "127.0.0.9:8300".into(),
        datacenter: "dc2".into(),
    });
    assert!(exchange_hello(&b.address, &other, DEFAULT_MAX_FRAME).await.is_err());
    assert_eq!(b.book.address(NodeId(9)), None);
}

fn book(id: u128) -> AddressBook {
    AddressBook::new(LocalServer {
        id: NodeId(id),
        name: format!("s{id}"),
        address: format!("10.0.0.{id}:8300"),
        datacenter: "dc1".into(),
    })
}

fn entry(id: u128) -> ServerEntry {
    (NodeId(id), format!("s{id}"), format!("10.0.0.{id}:8300"))
}

#[test]
fn bootstrap_set_waits_until_the_peers_agree() {
    let b = book(2);
    assert_eq!(b.bootstrap_set(1), Some(vec![entry(2)]));
    assert_eq!(b.bootstrap_set(3), None);
    // Server 1 knows 1 and 2: still only two servers known.
    b.learn_hello(NodeId(1), "s1", "10.0.0.1:8300", &[entry(1), entry(2)]);
    assert_eq!(b.bootstrap_set(3), None);
    // Server 3 introduces itself knowing everyone, but server 1 has not reported 3 yet.
    b.learn_hello(NodeId(3), "s3", "10.0.0.3:8300", &[entry(1), entry(2), entry(3)]);
    assert_eq!(b.bootstrap_set(3), None);
    b.learn_hello(NodeId(1), "s1", "10.0.0.1:8300", &[entry(3), entry(2), entry(1)]);
    assert_eq!(b.bootstrap_set(3), Some(vec![entry(1), entry(2), entry(3)]));
}

#[test]
fn bootstrap_set_needs_to_have_heard_from_someone() {
    let b = book(2);
    b.learn(NodeId(1), "s1", "10.0.0.1:8300");
    b.learn(NodeId(3), "s3", "10.0.0.3:8300");
    assert_eq!(b.bootstrap_set(3), None);
    b.learn_hello(NodeId(3), "s3", "10.0.0.3:8300", &[entry(1), entry(2), entry(3)]);
    assert_eq!(b.bootstrap_set(3), Some(vec![entry(1), entry(2), entry(3)]));
}
