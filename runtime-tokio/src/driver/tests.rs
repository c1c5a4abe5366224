//! The driver with the real `Node` on tokio: a single-server cluster, a storage stand-in that records the
//! batches it is given, and a transport that records what it is asked to send.

use super::*;
use crate::agent::TokioClock;
use crate::storage::{spawn_writer, MemStore};
use concord_core::api::{ApiError, Blocking, KvQuery, KvResult, ReadMode, Request, Response};
use concord_core::node::{Limits, NodeConfig, RaftConfig};
use concord_core::state::{Command, CommandResult};
use concord_core::Node;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct RecordingTransport {
    memberships: Arc<Mutex<Vec<Membership>>>,
}

impl Transport for RecordingTransport {
    fn send(&mut self, to: NodeId, msg: PeerMessage) {
        panic!("a single-server cluster sent {msg:?} to {to:?}");
    }
    fn set_membership(&mut self, membership: &Membership) {
        self.memberships.lock().unwrap().push(membership.clone());
    }
}

fn node(limits: Limits) -> Node {
    let config = NodeConfig {
        id: NodeId(1),
        name: "s1".into(),
        address: "127.0.0.1:8300".into(),
        seed: 7,
        raft: RaftConfig {
            heartbeat_interval: Duration::from_millis(20),
            election_timeout: Duration::from_millis(100),
            lease_timeout: Duration::from_millis(50),
            ..RaftConfig::default()
        },
        limits,
        mutation: Default::default(),
    };
    Node::new(config, Default::default(), TokioClock::new().now())
}

/// A disk stand-in: records how many ops each batch had, acknowledges it, or fails once `fail` is set.
struct FakeDisk {
    batches: Arc<Mutex<Vec<usize>>>,
    fail: Arc<AtomicBool>,
}

type PersistChannels = (
    mpsc::UnboundedSender<(u64, Vec<PersistOp>)>,
    mpsc::UnboundedReceiver<Result<u64, StorageError>>,
);

fn fake_disk() -> (FakeDisk, PersistChannels) {
    let (persist_tx, mut persist_rx) = mpsc::unbounded_channel::<(u64, Vec<PersistOp>)>();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let disk = FakeDisk {
        batches: Default::default(),
        fail: Default::default(),
    };
    let (batches, fail) = (disk.batches.clone(), disk.fail.clone());
    tokio::spawn(async move {
        while let Some((seq, ops)) = persist_rx.recv().await {
            batches.lock().unwrap().push(ops.len());
            if fail.load(Ordering::SeqCst) {
                let _ = done_tx.send(Err(StorageError::Io("disk on fire".into())));
                return;
            }
            let _ = done_tx.send(Ok(seq));
        }
    });
    (disk, (persist_tx, done_rx))
}

struct Started {
    handle: DriverHandle,
    exit: tokio::task::JoinHandle<DriverExit>,
    memberships: Arc<Mutex<Vec<Membership>>>,
    disk: Option<FakeDisk>,
    events: mpsc::UnboundedReceiver<concord_core::Event>,
}

fn start_with(limits: Limits, real_disk: bool) -> Started {
    let transport = RecordingTransport::default();
    let memberships = transport.memberships.clone();
    let (_peer_tx, peer_rx) = mpsc::channel(16);
    let (disk, persist_tx, persisted_rx) = if real_disk {
        let writer = spawn_writer(Box::new(MemStore::new()));
        (None, writer.tx, writer.done)
    } else {
        let (disk, (tx, rx)) = fake_disk();
        (Some(disk), tx, rx)
    };
    let (events_tx, events) = mpsc::unbounded_channel();
    let devices = Devices {
        clock: TokioClock::new(),
        transport,
        peer_rx,
        persist_tx,
        persisted_rx,
        events: Some(events_tx),
    };
    let (handle, driver) = start(node(limits), devices);
    Started {
        handle,
        exit: tokio::spawn(driver),
        memberships,
        disk,
        events,
    }
}

async fn elected(handle: &DriverHandle) {
    assert_eq!(handle.call(bootstrap()).await, Response::Done);
    let mut leader = handle.subscribe_leader();
    tokio::time::timeout(DEADLINE, leader.wait_for(|l| *l == Some(NodeId(1))))
        .await
        .expect("no leader before the deadline")
        .unwrap();
}

fn bootstrap() -> Request {
    Request::Bootstrap {
        servers: vec![(NodeId(1), "s1".into(), "127.0.0.1:8300".into())],
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Write(Command::KvSet {
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        flags: 0,
        cas: None,
    })
}

fn get(key: &str, block: Option<Blocking>) -> Request {
    Request::KvRead {
        query: KvQuery::Get { key: key.into() },
        mode: ReadMode::Stale,
        block,
    }
}

fn parked_read() -> Request {
    get(
        "k",
        Some(Blocking {
            min_index: 1_000_000,
            wait: Duration::from_secs(60),
        }),
    )
}

/// Poll a future once, so a `call` puts its request on the queue.
fn poll_once<F: Future>(f: &mut Pin<Box<F>>) -> Poll<F::Output> {
    f.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn bootstrap_write_and_read_through_call() {
    let mut s = start_with(Limits::default(), true);
    elected(&s.handle).await;
    assert_eq!(s.handle.leader(), Some(NodeId(1)));
    let mut tapped = Vec::new();
    while let Ok(event) = s.events.try_recv() {
        tapped.push(event);
    }
    assert!(
        tapped.iter().any(|e| matches!(
            e,
            concord_core::Event::LeaderChanged {
                leader: Some(NodeId(1)),
                ..
            }
        )),
        "the event tap saw the election: {tapped:?}"
    );
    assert!(s.handle.membership().servers.contains_key(&NodeId(1)));
    assert!(
        s.memberships
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.servers.contains_key(&NodeId(1))),
        "transport told"
    );

    match s.handle.call(put("greeting", "hello")).await {
        Response::Written { result, .. } => assert_eq!(result, CommandResult::Bool(true)),
        other => panic!("write answered {other:?}"),
    }
    match s.handle.call(get("greeting", None)).await {
        Response::Kv { result, meta } => {
            let KvResult::Entries(entries) = &*result else {
                panic!("a get answers entries: {result:?}")
            };
            assert_eq!(entries.len(), 1);
            assert_eq!(&entries[0].value[..], b"hello");
            assert!(meta.index > 0);
        }
        other => panic!("read answered {other:?}"),
    }
    let status = s.handle.status().await.expect("driver running");
    assert_eq!(status.leader, Some(NodeId(1)));
    assert!(status.applied_index >= 2, "{status:?}");
    assert!(s.handle.subscribe_applied().borrow().index >= 2);

    s.handle.shutdown();
    assert_eq!(
        tokio::time::timeout(DEADLINE, s.exit).await.unwrap().unwrap(),
        DriverExit::Shutdown
    );
    assert!(matches!(
        s.handle.call(get("greeting", None)).await,
        Response::Error(ApiError::Overloaded(_))
    ));
    assert_eq!(s.handle.status().await, None);
}

#[tokio::test]
async fn concurrent_writes_share_storage_batches() {
    let s = start_with(Limits::default(), false);
    elected(&s.handle).await;
    let before = s.disk.as_ref().unwrap().batches.lock().unwrap().len();
    let writes = 200;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..writes {
        let handle = s.handle.clone();
        calls.spawn(async move { handle.call(put(&format!("k{i}"), "v")).await });
    }
    while let Some(resp) = calls.join_next().await {
        assert!(matches!(resp.unwrap(), Response::Written { .. }));
    }
    let batches = s.disk.as_ref().unwrap().batches.lock().unwrap()[before..].to_vec();
    let ops: usize = batches.iter().sum();
    assert!(ops >= writes, "every write persisted: {ops} ops");
    assert!(
        batches.len() * 10 <= writes,
        "{writes} writes took {} storage batches: {batches:?}",
        batches.len()
    );
}

#[tokio::test]
async fn a_full_request_queue_answers_overloaded_at_once() {
    // The driver is never run, so nothing leaves the queue.
    let transport = RecordingTransport::default();
    let (_peer_tx, peer_rx) = mpsc::channel(1);
    let (_disk, (persist_tx, persisted_rx)) = fake_disk();
    let devices = Devices {
        clock: TokioClock::new(),
        transport,
        peer_rx,
        persist_tx,
        persisted_rx,
        events: None,
    };
    let (handle, _driver) = start(node(Limits::default()), devices);
    let mut queued = Vec::with_capacity(CLIENT_QUEUE);
    for _ in 0..CLIENT_QUEUE {
        let mut call = Box::pin(handle.call(Request::Leader));
        assert!(poll_once(&mut call).is_pending());
        queued.push(call);
    }
    match handle.call(Request::Leader).await {
        Response::Error(ApiError::Overloaded(msg)) => assert!(msg.contains("65536"), "{msg}"),
        other => panic!("expected Overloaded, got {other:?}"),
    }
}

#[tokio::test]
async fn dropping_a_call_cancels_it_inside_the_node() {
    let s = start_with(
        Limits {
            max_watches: 1,
            ..Limits::default()
        },
        true,
    );
    elected(&s.handle).await;
    let overloaded = |r: Response| matches!(r, Response::Error(ApiError::Overloaded(_)));

    let mut first = Box::pin(s.handle.call(parked_read()));
    assert!(poll_once(&mut first).is_pending());
    s.handle.status().await.unwrap(); // The driver has handled everything queued before.
    assert!(
        overloaded(s.handle.call(parked_read()).await),
        "the one watch slot is taken"
    );

    drop(first);
    s.handle.status().await.unwrap();
    let mut second = Box::pin(s.handle.call(parked_read()));
    assert!(poll_once(&mut second).is_pending());
    s.handle.status().await.unwrap();
    assert!(
        matches!(poll_once(&mut second), Poll::Pending),
        "parked, not refused: the slot was freed"
    );
    assert!(overloaded(s.handle.call(parked_read()).await));
}

#[tokio::test]
async fn a_call_dropped_while_still_queued_never_reaches_the_node() {
    let s = start_with(
        Limits {
            max_watches: 1,
            ..Limits::default()
        },
        true,
    );
    elected(&s.handle).await;
    // Queued, then dropped before the driver looked: its cancel overtakes it on the control channel.
    let mut gone = Box::pin(s.handle.call(parked_read()));
    assert!(poll_once(&mut gone).is_pending());
    drop(gone);
    s.handle.status().await.unwrap();
    let mut parked = Box::pin(s.handle.call(parked_read()));
    assert!(poll_once(&mut parked).is_pending());
    s.handle.status().await.unwrap();
    assert!(poll_once(&mut parked).is_pending(), "the watch slot was free");
    assert!(matches!(
        s.handle.call(parked_read()).await,
        Response::Error(ApiError::Overloaded(_))
    ));
}

#[tokio::test]
async fn a_storage_failure_stops_the_driver_and_fails_pending_requests() {
    let s = start_with(Limits::default(), false);
    elected(&s.handle).await;
    s.disk.as_ref().unwrap().fail.store(true, Ordering::SeqCst);
    let resp = tokio::time::timeout(DEADLINE, s.handle.call(put("k", "v")))
        .await
        .unwrap();
    assert_eq!(resp, Response::Error(ApiError::StorageFailed));
    match tokio::time::timeout(DEADLINE, s.exit).await.unwrap().unwrap() {
        DriverExit::StorageFailed(why) => assert!(why.contains("disk on fire"), "{why}"),
        other => panic!("driver exit {other:?}"),
    }
    assert!(s.handle.is_stopped());
}

#[tokio::test]
async fn the_leader_reaps_kv_tombstones_a_ttl_after_the_delete() {
    use crate::agent::tombstones::{run, TombstoneGc};
    let s = start_with(Limits::default(), true);
    elected(&s.handle).await;
    let gc = TombstoneGc {
        ttl: Duration::from_millis(1_000),
        granularity: Duration::from_millis(50),
    };
    tokio::spawn(run(s.handle.clone(), gc));
    assert!(matches!(s.handle.call(put("k", "v")).await, Response::Written { .. }));
    let delete = Request::Write(Command::KvDelete {
        key: "k".into(),
        cas: None,
    });
    // The tombstone is applied after `sent`, so nothing may reap it before `sent + ttl - granularity`.
    let sent = tokio::time::Instant::now();
    let earliest_reap = gc.ttl - gc.granularity;
    assert!(matches!(s.handle.call(delete).await, Response::Written { .. }));
    let tombstones = |h: DriverHandle| async move { h.status().await.expect("driver running").kv_tombstones };
    let left = tombstones(s.handle.clone()).await;
    // On a machine too loaded to ask within the TTL the count may already be 0 (reaped on time); the
    // earliest-reap check below still holds then.
    if sent.elapsed() < earliest_reap {
        assert_eq!(left, 1, "a delete leaves a tombstone");
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tombstones(s.handle.clone()).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the tombstone was never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sent.elapsed() >= earliest_reap,
        "reaped {:?} after the delete, before its TTL of {:?}",
        sent.elapsed(),
        gc.ttl
    );
    // Once reaped and idle, the collector writes nothing more: the applied index stands still.
    let settled = s.handle.subscribe_applied().borrow().index;
    tokio::time::sleep(gc.ttl * 2).await;
    assert_eq!(
        s.handle.subscribe_applied().borrow().index,
        settled,
        "an idle cluster kept reaping"
    );
}
