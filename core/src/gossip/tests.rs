use super::broadcast::{BroadcastKey, BroadcastQueue};
use super::wire::*;
use super::*;
use proptest::prelude::*;

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, i], 8301))
}

fn machine(name: &str, i: u8) -> Gossip {
    Gossip::new(
        GossipConfig {
            name: name.into(),
            addr: addr(i),
            tags: Tags::new(),
            seed: i as u64,
            timing: GossipTiming::lan(),
        },
        Instant::ZERO,
    )
}

fn packet(msgs: &[Message]) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = msgs.iter().map(encode_message).collect();
    assemble_packet(parts.iter().map(|p| p.as_slice()))
}

#[test]
fn packets_and_push_pull_round_trip() {
    let msgs = vec![
        Message::Ping {
            seq: 7,
            target: "a".into(),
        },
        Message::Alive {
            incarnation: 3,
            name: "b".into(),
            addr: addr(2),
            tags: [("role".to_string(), "consul".to_string())].into(),
        },
        Message::Leave {
            incarnation: 1,
            name: "c".into(),
            prune: true,
        },
    ];
    assert_eq!(decode_packet(&packet(&msgs)).unwrap(), msgs);
    let pp = machine("a", 1).local_state(true);
    let frame = encode_push_pull(&pp);
    let len = push_pull_frame_len(frame[..4].try_into().unwrap()).unwrap();
    assert_eq!(len, frame.len() - 4);
    assert_eq!(decode_push_pull(&frame[4..]).unwrap(), pp);
}

#[test]
fn decoder_rejects_bad_versions_truncation_and_oversized_fields() {
    let good = packet(&[Message::Ack { seq: 1 }]);
    let mut bad_version = good.clone();
    bad_version[0] = 9;
    assert_eq!(decode_packet(&bad_version), Err(GossipWireError::Version(9)));
    assert_eq!(decode_packet(&good[..good.len() - 1]), Err(GossipWireError::Truncated));
    assert_eq!(decode_packet(&[]), Err(GossipWireError::Truncated));
    let long = Message::Ping {
        seq: 1,
        target: "x".repeat(MAX_NAME_BYTES + 1),
    };
    assert_eq!(decode_packet(&packet(&[long])), Err(GossipWireError::FieldTooLarge));
    assert!(push_pull_frame_len((MAX_PUSH_PULL_BYTES as u32 + 1).to_be_bytes()).is_err());
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let _ = decode_packet(&bytes);
        let _ = decode_push_pull(&bytes);
        let mut with_version = vec![GOSSIP_VERSION];
        with_version.extend_from_slice(&bytes);
        let _ = decode_packet(&with_version);
        let _ = decode_push_pull(&with_version);
    }
}

#[test]
fn a_malformed_packet_is_counted_and_changes_nothing() {
    let mut g = machine("a", 1);
    let mut out = Vec::new();
    g.handle(
        Instant(5),
        Input::Packet {
            from: addr(2),
            bytes: vec![1, 0, 9, 9],
        },
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(g.stats().malformed_packets, 1);
    assert_eq!(g.members().len(), 1);
}

#[test]
fn ping_for_us_is_acked_ping_for_someone_else_is_not() {
    let mut g = machine("a", 1);
    let mut out = Vec::new();
    let ping = |t: &str| Input::Packet {
        from: addr(2),
        bytes: packet(&[Message::Ping {
            seq: 4,
            target: t.into(),
        }]),
    };
    g.handle(Instant(1), ping("b"), &mut out);
    assert!(out.is_empty());
    g.handle(Instant(2), ping("a"), &mut out);
    let [Effect::Packet { to, bytes }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*to, addr(2));
    assert_eq!(decode_packet(bytes).unwrap()[0], Message::Ack { seq: 4 });
}

#[test]
fn suspicion_about_us_is_refuted_with_a_higher_incarnation() {
    let mut g = machine("a", 1);
    let mut out = Vec::new();
    let suspect = Message::Suspect {
        incarnation: 0,
        name: "a".into(),
        from: "b".into(),
    };
    g.handle(
        Instant(1),
        Input::Packet {
            from: addr(2),
            bytes: packet(&[suspect]),
        },
        &mut out,
    );
    assert_eq!(g.member("a").unwrap().incarnation, 1);
    assert_eq!(g.member("a").unwrap().status, MemberStatus::Alive);
    assert_eq!(g.stats().refutations, 1);
    assert_eq!(g.health_score(), 1, "being suspected lowers our own health (Lifeguard)");
    assert_eq!(g.queued_broadcasts(), 1);
}

#[test]
fn suspicion_timeout_shrinks_with_confirmations() {
    let s = Suspicion {
        start: Instant::ZERO,
        min: Duration::from_secs(12),
        max: Duration::from_secs(72),
        k: 2,
        confirmers: BTreeSet::new(),
        deadline: Instant::ZERO,
    };
    let t: Vec<u64> = (0..4).map(|c| s.timeout(c, true).as_secs()).collect();
    assert_eq!(t[0], 72);
    assert!(t[1] < 72 && t[1] > 12, "{t:?}");
    assert_eq!(t[2], 12);
    assert_eq!(t[3], 12, "never below the floor");
    assert_eq!(s.timeout(0, false).as_secs(), 12, "classic SWIM: fixed");
}

#[test]
fn broadcast_queue_replaces_by_key_limits_retransmits_and_size() {
    let mut q = BroadcastQueue::default();
    q.push(BroadcastKey::Member("a".into()), vec![1; 10], 100);
    q.push(BroadcastKey::Member("a".into()), vec![2; 10], 100);
    assert_eq!(q.len(), 1);
    assert_eq!(q.take(1000, 3), vec![vec![2; 10]]);
    assert_eq!(q.take(1000, 3).len(), 1);
    assert_eq!(q.take(1000, 3).len(), 1);
    assert_eq!(q.len(), 0, "dropped after 3 transmissions");
    for i in 0..10 {
        q.push(BroadcastKey::Member(format!("m{i}")), vec![i; 100], 5);
    }
    assert_eq!(q.len(), 5);
    assert_eq!(q.take(250, 10).len(), 2, "only what fits the budget");
}

#[test]
fn join_emits_a_push_pull_and_merging_learns_members() {
    let mut a = machine("a", 1);
    let mut b = machine("b", 2);
    let mut out = Vec::new();
    a.handle(Instant(1), Input::Join { addrs: vec![addr(2)] }, &mut out);
    let [Effect::PushPull { to, state }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*to, addr(2));
    let mut out_b = Vec::new();
    b.handle(
        Instant(2),
        Input::PushPull {
            conn: 9,
            state: state.clone(),
        },
        &mut out_b,
    );
    let Some(Effect::PushPullReply { conn: 9, state: reply }) = out_b.first() else {
        panic!("{out_b:?}")
    };
    assert!(matches!(&out_b[1], Effect::Event(GossipEvent::MemberJoin(m)) if m.name == "a"));
    a.handle(Instant(3), Input::PushPullReply { state: reply.clone() }, &mut out);
    assert_eq!(a.num_alive(), 2);
    assert_eq!(b.num_alive(), 2);
}

#[test]
fn a_failed_member_is_asked_for_a_push_pull_by_reconnect() {
    let mut a = machine("a", 1);
    let mut out = Vec::new();
    a.handle(
        Instant::ZERO,
        Input::PushPullReply {
            state: machine("b", 2).local_state(false),
        },
        &mut out,
    );
    let inc = a.member("b").unwrap().incarnation;
    let dead = packet(&[Message::Dead {
        incarnation: inc,
        name: "b".into(),
        from: "c".into(),
    }]);
    a.handle(
        Instant::ZERO,
        Input::Packet {
            from: addr(3),
            bytes: dead,
        },
        &mut out,
    );
    assert_eq!(a.member("b").unwrap().status, MemberStatus::Failed);
    // With one failed member and one alive (us), serf's chance is 1: the first reconnect round asks b.
    out.clear();
    let t = GossipTiming::lan().reconnect_interval;
    let mut now = Instant::ZERO;
    while now < Instant::ZERO + t {
        now = a.next_deadline().unwrap().max(now);
        a.handle(now, Input::Tick, &mut out);
    }
    let asked = out
        .iter()
        .any(|e| matches!(e, Effect::PushPull { to, .. } if *to == addr(2)));
    assert!(asked, "no push-pull to the failed member by {t:?}: {out:?}");
}
