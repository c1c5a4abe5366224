use super::*;
use concord_core::gossip::MemberStatus;
use std::net::{IpAddr, Ipv4Addr};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

async fn pool(name: &str, keyring: Option<Keyring>) -> (PoolHandle, tokio::sync::oneshot::Sender<()>) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let settings = PoolSettings {
        pool: "lan",
        name: name.into(),
        bind: SocketAddr::new(LOCAL, 0),
        advertise: LOCAL,
        tags: [("role".to_string(), "node".to_string())].into(),
        timing: GossipTiming::dev(),
        keyring: keyring.map(Arc::new),
        seed: 7,
    };
    let (handle, _task) = start(settings, async move {
        let _ = stop_rx.await;
    })
    .await
    .unwrap();
    (handle, stop_tx)
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(p: &PoolHandle, name: &str) -> Option<MemberStatus> {
    p.members().iter().find(|m| m.name == name).map(|m| m.status)
}

#[test]
fn keyring_seals_opens_rotates_and_persists() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serf").join("local.keyring");
    let (ring, ignored) = Keyring::load_or_init(Some(path.clone()), Some(&key(1))).unwrap();
    let ring = ring.unwrap();
    assert!(!ignored);
    let sealed = ring.encrypt(b"hello");
    assert_eq!(sealed.len(), b"hello".len() + keyring::OVERHEAD);
    assert_eq!(ring.decrypt(&sealed).unwrap(), b"hello");
    let other = Keyring::new(parse_key(&key(2)).unwrap(), None);
    assert_eq!(other.decrypt(&sealed), Err(KeyringError::Undecryptable));
    assert_eq!(other.decrypt(&[1, 2, 3]), Err(KeyringError::Undecryptable));

    ring.install(&key(2)).unwrap();
    assert_eq!(ring.use_key(&key(3)), Err(KeyringError::NotInstalled));
    ring.use_key(&key(2)).unwrap();
    assert_eq!(
        other.decrypt(&ring.encrypt(b"x")).unwrap(),
        b"x",
        "the new primary seals"
    );
    assert_eq!(ring.decrypt(&sealed).unwrap(), b"hello", "old keys still open");
    assert_eq!(ring.remove(&key(2)), Err(KeyringError::RemovePrimary));
    ring.remove(&key(1)).unwrap();
    assert_eq!(ring.list(), vec![key(2)]);

    // The file wins over -encrypt on the next start.
    let (again, ignored) = Keyring::load_or_init(Some(path), Some(&key(9))).unwrap();
    assert!(ignored);
    assert_eq!(again.unwrap().list(), vec![key(2)]);
    assert!(parse_key("c2hvcnQ=").is_err(), "5 bytes is not an AES key");
    assert_eq!(parse_key(&generate_key()).unwrap().len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_join_leave_and_see_a_failure() {
    let (a, _stop_a) = pool("a", None).await;
    let (b, stop_b) = pool("b", None).await;
    let (c, stop_c) = pool("c", None).await;
    assert_eq!(b.join(&[a.addr.to_string()], 8301).await, Ok(1));
    assert_eq!(c.join(&[a.addr.to_string()], 8301).await, Ok(1));
    until("three alive everywhere", || {
        [&a, &b, &c]
            .iter()
            .all(|p| p.members().iter().filter(|m| m.status == MemberStatus::Alive).count() == 3)
    })
    .await;
    c.leave().await;
    assert_eq!(status(&c, "c"), Some(MemberStatus::Left));
    until("c left on a", || status(&a, "c") == Some(MemberStatus::Left)).await;
    drop(stop_c);
    // b stops answering without leaving: it turns failed.
    drop(stop_b);
    until("b failed on a", || status(&a, "b") == Some(MemberStatus::Failed)).await;
    assert_eq!(
        status(&a, "c"),
        Some(MemberStatus::Left),
        "left stays left: {:?}",
        a.members()
    );
    a.force_leave("b", true).await.unwrap();
    until("b pruned", || status(&a, "b").is_none()).await;
    assert!(a
        .force_leave("nobody", false)
        .await
        .unwrap_err()
        .contains("No node found"));
    assert!(a.join(&["127.0.0.1:1".into()], 8301).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_with_the_key_can_join() {
    let ring = |k| Some(Keyring::new(parse_key(&key(k)).unwrap(), None));
    let (a, _sa) = pool("a", ring(1)).await;
    let (b, _sb) = pool("b", ring(1)).await;
    let (wrong, _sw) = pool("wrong", ring(2)).await;
    let (plain, _sp) = pool("plain", None).await;
    assert_eq!(b.join(&[a.addr.to_string()], 8301).await, Ok(1));
    until("a and b see each other", || {
        status(&a, "b") == Some(MemberStatus::Alive) && status(&b, "a") == Some(MemberStatus::Alive)
    })
    .await;
    assert!(wrong.join(&[a.addr.to_string()], 8301).await.is_err());
    assert!(plain.join(&[a.addr.to_string()], 8301).await.is_err());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&a, "wrong"), None);
    assert_eq!(status(&a, "plain"), None);
    assert_eq!(wrong.members().len(), 1);
}

/// A peer that announces the largest push-pull frame and then sends a little costs memory in proportion to
/// what it sent; an announced length over the limit is refused before any body is read.
#[tokio::test]
async fn push_pull_bodies_grow_with_the_bytes_received() {
    use concord_core::gossip::wire::MAX_PUSH_PULL_BYTES;
    let (mut peer, mut ours) = tokio::io::duplex(64 * 1024);
    let sent = vec![7u8; 100_000];
    let writer = tokio::spawn(async move {
        peer.write_all(&sent).await.unwrap();
        // Dropping `peer` ends the stream 16 MiB short.
    });
    let mut body = Vec::new();
    let err = read_frame_body(&mut ours, MAX_PUSH_PULL_BYTES, &mut body)
        .await
        .unwrap_err();
    writer.await.unwrap();
    assert_eq!(
        err,
        format!("push-pull frame truncated: 100000 of {MAX_PUSH_PULL_BYTES} bytes")
    );
    assert_eq!(body.len(), 100_000);
    assert!(
        body.capacity() <= 4 * 100_000,
        "allocated {} bytes for 100000 received",
        body.capacity()
    );

    let (mut peer, mut ours) = tokio::io::duplex(1024);
    peer.write_all(&((MAX_PUSH_PULL_BYTES as u32 + 1).to_be_bytes()))
        .await
        .unwrap();
    let err = read_sync(&mut ours, None).await.unwrap_err();
    assert!(err.ends_with("-byte limit"), "{err}");
}

/// memberlist's TCP fallback ping over a real socket: the pool answers a ping that names it (sealed when
/// a keyring is in use) and refuses one meant for another member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_answers_tcp_fallback_pings_for_itself_only() {
    for sealed in [false, true] {
        let keyring = || sealed.then(|| Keyring::new(parse_key(&key(4)).unwrap(), None));
        let shared = keyring().map(Arc::new);
        let (p, _stop) = pool("tcp-target", keyring()).await;
        let ping = |target: &str| {
            let msg = wire::encode_message(&concord_core::gossip::Message::Ping {
                seq: 42,
                target: target.into(),
            });
            wire::assemble_packet([msg.as_slice()])
        };
        let reply = stream_ping(p.addr, &ping("tcp-target"), shared.as_deref())
            .await
            .unwrap();
        assert_eq!(
            wire::decode_packet(&reply).unwrap(),
            vec![concord_core::gossip::Message::Ack { seq: 42 }]
        );
        assert!(stream_ping(p.addr, &ping("someone-else"), shared.as_deref())
            .await
            .is_err());
        // Push-pulls still work on the same port.
        let mine = PushPull {
            join: false,
            members: Vec::new(),
            event_ltime: 0,
        };
        let theirs = exchange(p.addr, &mine, shared.as_deref()).await.unwrap();
        assert!(theirs.members.iter().any(|m| m.name == "tcp-target"));
    }
}
