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

fn machine_with_id(name: &str, i: u8, id: &str) -> Gossip {
    Gossip::new(
        GossipConfig {
            name: name.into(),
            addr: addr(i),
            tags: [(ID_TAG.to_string(), id.to_string())].into(),
            seed: i as u64,
            timing: GossipTiming::lan(),
        },
        Instant::ZERO,
    )
}

/// A full join exchange: `joiner` pushes its state to `seed`, then merges the reply.
fn join_through(joiner: &mut Gossip, seed: &mut Gossip, now: Instant) -> (Vec<Effect>, Vec<Effect>) {
    let (mut out_j, mut out_s) = (Vec::new(), Vec::new());
    let state = joiner.local_state(true);
    seed.handle(now, Input::PushPull { conn: 1, state }, &mut out_s);
    let reply = out_s
        .iter()
        .find_map(|e| match e {
            Effect::PushPullReply { state, .. } => Some(state.clone()),
            _ => None,
        })
        .expect("seed answers");
    joiner.handle(now, Input::PushPullReply { state: reply }, &mut out_j);
    (out_j, out_s)
}

fn dead(g: &mut Gossip, name: &str, now: Instant) {
    let incarnation = g.member(name).unwrap().incarnation;
    let msg = Message::Dead {
        incarnation,
        name: name.into(),
        from: "x".into(),
    };
    g.handle(
        now,
        Input::Packet {
            from: addr(200),
            bytes: packet(&[msg]),
        },
        &mut Vec::new(),
    );
}

#[test]
fn a_second_member_under_a_live_name_is_refused_and_goes_quiet() {
    let mut a = machine_with_id("web", 1, "id-a");
    let mut seed = machine_with_id("s1", 2, "id-s1");
    join_through(&mut a, &mut seed, Instant(1));
    // Another process, same name, another address and node ID.
    let mut b = machine_with_id("web", 3, "id-b");
    let (out_b, out_s) = join_through(&mut b, &mut seed, Instant(2));
    let web = seed.member("web").unwrap();
    assert_eq!(
        (web.addr, web.tags[ID_TAG].as_str()),
        (addr(1), "id-a"),
        "the seed keeps the first"
    );
    assert!(
        out_s.iter().any(
            |e| matches!(e, Effect::Event(GossipEvent::NameConflict { name, ours, theirs })
            if name == "web" && *ours == addr(1) && *theirs == addr(3))
        ),
        "{out_s:?}"
    );
    let holder = out_b.iter().find_map(|e| match e {
        Effect::Event(GossipEvent::Conflicted { holder }) => Some(holder.clone()),
        _ => None,
    });
    assert_eq!(holder.map(|h| h.addr), Some(addr(1)), "the newcomer lost: {out_b:?}");
    assert_eq!(b.next_deadline(), None, "a loser has no timers left");
    let mut out = Vec::new();
    b.handle(Instant(3), Input::Join { addrs: vec![addr(2)] }, &mut out);
    assert!(out.is_empty(), "a loser stays quiet: {out:?}");

    // The first one hears the other claim of its name: no refutation (that would never end).
    let mut out_a = Vec::new();
    let claim = Message::Alive {
        incarnation: 5,
        name: "web".into(),
        addr: addr(3),
        tags: [(ID_TAG.to_string(), "id-b".to_string())].into(),
    };
    a.handle(
        Instant(4),
        Input::Packet {
            from: addr(3),
            bytes: packet(&[claim]),
        },
        &mut out_a,
    );
    assert_eq!(a.member("web").unwrap().incarnation, 0);
    assert_eq!(a.stats().refutations, 0);
    assert!(out_a
        .iter()
        .any(|e| matches!(e, Effect::Event(GossipEvent::NameConflict { .. }))));
}

#[test]
fn a_failed_name_is_reusable_after_the_reclaim_time_a_left_one_at_once() {
    let reclaim = GossipTiming::lan().dead_node_reclaim;
    let mut seed = machine_with_id("s1", 2, "id-s1");
    let mut a = machine_with_id("web", 1, "id-a");
    join_through(&mut a, &mut seed, Instant(1));
    let t = Instant::ZERO + Duration::from_secs(1);
    dead(&mut seed, "web", t);
    assert_eq!(seed.member("web").unwrap().status, MemberStatus::Failed);

    // Too soon: the failed member may still come back; the newcomer is refused but not beaten.
    let mut b = machine_with_id("web", 3, "id-b");
    let (out_b, _) = join_through(&mut b, &mut seed, t + reclaim / 2);
    assert_eq!(seed.member("web").unwrap().addr, addr(1));
    assert!(!out_b
        .iter()
        .any(|e| matches!(e, Effect::Event(GossipEvent::Conflicted { .. }))));

    // It syncs again once the name is free, without waiting for the periodic push-pull.
    let due = t + reclaim / 2 + reclaim;
    let mut syncs = Vec::new();
    let mut refreshed = 0;
    while let Some(now) = b.next_deadline().filter(|d| *d <= due) {
        let mut out = Vec::new();
        // The seed stays alive in b's view (nothing answers b's probes here).
        refreshed += 1;
        let alive = Message::Alive {
            incarnation: refreshed,
            name: "s1".into(),
            addr: addr(2),
            tags: [(ID_TAG.to_string(), "id-s1".to_string())].into(),
        };
        let bytes = packet(&[alive]);
        b.handle(now, Input::Packet { from: addr(2), bytes }, &mut out);
        b.handle(now, Input::Tick, &mut out);
        syncs.extend(out.iter().filter(|e| matches!(e, Effect::PushPull { .. })).map(|_| now));
    }
    assert!(syncs.contains(&due), "push-pulls at {syncs:?}");
    // After the reclaim time the new process takes the name, with its own node ID.
    let (_, out_s) = join_through(&mut b, &mut seed, t + reclaim);
    let web = seed.member("web").unwrap();
    assert_eq!(
        (web.addr, web.status, web.tags[ID_TAG].as_str()),
        (addr(3), MemberStatus::Alive, "id-b")
    );
    assert!(out_s
        .iter()
        .any(|e| matches!(e, Effect::Event(GossipEvent::MemberJoin(m)) if m.addr == addr(3))));

    // A left member's name is free at once.
    let mut seed = machine_with_id("s1", 2, "id-s1");
    let mut a = machine_with_id("web", 1, "id-a");
    join_through(&mut a, &mut seed, Instant(1));
    let leave = Message::Leave {
        incarnation: 0,
        name: "web".into(),
        prune: false,
    };
    seed.handle(
        Instant(2),
        Input::Packet {
            from: addr(1),
            bytes: packet(&[leave]),
        },
        &mut Vec::new(),
    );
    let mut b = machine_with_id("web", 3, "id-b");
    join_through(&mut b, &mut seed, Instant(3));
    assert_eq!(seed.member("web").unwrap().addr, addr(3));
}

#[test]
fn a_node_id_held_by_a_live_member_is_refused() {
    let mut seed = machine_with_id("s1", 2, "id-s1");
    let mut a = machine_with_id("web", 1, "same-id");
    join_through(&mut a, &mut seed, Instant(1));
    // A clone (copied data dir) under another name.
    let mut clone = machine_with_id("web-copy", 3, "same-id");
    let (out_c, out_s) = join_through(&mut clone, &mut seed, Instant(2));
    assert!(seed.member("web-copy").is_none());
    assert_eq!(seed.stats().id_conflicts, 1);
    assert!(out_s.iter().any(
        |e| matches!(e, Effect::Event(GossipEvent::NodeIdConflict { id, holder, claimant })
            if id == "same-id" && holder == "web" && claimant == "web-copy")
    ));
    assert!(out_c
        .iter()
        .any(|e| matches!(e, Effect::Event(GossipEvent::Conflicted { holder }) if holder.name == "web")));

    // Once the holder failed, the ID may come back under the new name (a renamed node).
    dead(&mut seed, "web", Instant(3));
    let mut renamed = machine_with_id("web-copy", 3, "same-id");
    let (out_r, _) = join_through(&mut renamed, &mut seed, Instant(4));
    assert_eq!(seed.member("web-copy").map(|m| m.status), Some(MemberStatus::Alive));
    assert!(!out_r
        .iter()
        .any(|e| matches!(e, Effect::Event(GossipEvent::Conflicted { .. }))));
}

#[test]
fn an_agent_restarted_at_a_new_address_takes_its_name_back() {
    let mut seed = machine_with_id("s1", 2, "id-s1");
    let mut a = machine_with_id("web", 1, "id-a");
    // Its previous run had raised its incarnation.
    a.handle(
        Instant(1),
        Input::SetTags([(ID_TAG.to_string(), "id-a".to_string())].into()),
        &mut Vec::new(),
    );
    a.handle(
        Instant(1),
        Input::SetTags([(ID_TAG.to_string(), "id-a".to_string())].into()),
        &mut Vec::new(),
    );
    join_through(&mut a, &mut seed, Instant(2));
    assert_eq!(seed.member("web").unwrap().incarnation, 2);
    // The same data dir (node ID) at another port, before anyone noticed the old process is gone.
    let mut again = machine_with_id("web", 3, "id-a");
    let (out, _) = join_through(&mut again, &mut seed, Instant(3));
    assert!(!out
        .iter()
        .any(|e| matches!(e, Effect::Event(GossipEvent::Conflicted { .. }))));
    assert_eq!(again.member("web").unwrap().incarnation, 3, "out-bids its previous run");
    // Its refutation reaches the seed, which moves the member to the new address.
    let mut out = Vec::new();
    again.handle(
        Instant(4),
        Input::Packet {
            from: addr(2),
            bytes: packet(&[Message::Ping {
                seq: 1,
                target: "web".into(),
            }]),
        },
        &mut out,
    );
    let Some(Effect::Packet { bytes, .. }) = out.first() else {
        panic!("{out:?}")
    };
    seed.handle(
        Instant(5),
        Input::Packet {
            from: addr(3),
            bytes: bytes.clone(),
        },
        &mut Vec::new(),
    );
    let web = seed.member("web").unwrap();
    assert_eq!(
        (web.addr, web.incarnation, web.status),
        (addr(3), 3, MemberStatus::Alive)
    );
}

#[test]
fn a_ping_to_a_suspect_carries_the_suspicion_buddy_system() {
    let mut a = machine("a", 1);
    let mut out = Vec::new();
    a.handle(
        Instant::ZERO,
        Input::PushPullReply {
            state: machine("b", 2).local_state(false),
        },
        &mut out,
    );
    let suspect = Message::Suspect {
        incarnation: 0,
        name: "b".into(),
        from: "c".into(),
    };
    a.handle(
        Instant::ZERO,
        Input::Packet {
            from: addr(3),
            bytes: packet(&[suspect]),
        },
        &mut out,
    );
    // Run until a probes b (its only peer).
    let ping = loop {
        out.clear();
        let now = a.next_deadline().unwrap();
        a.handle(now, Input::Tick, &mut out);
        let found = out.iter().find_map(|e| match e {
            Effect::Packet { to, bytes } if *to == addr(2) => {
                let msgs = decode_packet(bytes).unwrap();
                matches!(msgs[0], Message::Ping { .. }).then_some(msgs)
            }
            _ => None,
        });
        if let Some(msgs) = found {
            break msgs;
        }
    };
    assert!(
        ping.iter()
            .any(|m| matches!(m, Message::Suspect { name, from, .. } if name == "b" && from == "a")),
        "{ping:?}"
    );
}

#[test]
fn joining_through_the_holder_of_our_name_loses_and_the_holder_stays() {
    let mut a = machine_with_id("web", 1, "id-a");
    let mut b = machine_with_id("web", 3, "id-b");
    let (out_b, out_a) = join_through(&mut b, &mut a, Instant(1));
    assert!(
        out_b
            .iter()
            .any(|e| matches!(e, Effect::Event(GossipEvent::Conflicted { .. }))),
        "{out_b:?}"
    );
    assert!(
        !out_a
            .iter()
            .any(|e| matches!(e, Effect::Event(GossipEvent::Conflicted { .. }))),
        "{out_a:?}"
    );
    assert!(a.next_deadline().is_some(), "the holder keeps running");
    assert_eq!(a.member("web").unwrap().addr, addr(1));
}

// ---------------------------------------------------------------- RTT samples and ack payloads

fn machine_tagged(name: &str, i: u8, ack_payload: bool) -> Gossip {
    let tags: Tags = if ack_payload {
        [(ACK_PAYLOAD_TAG.to_string(), "1".to_string())].into()
    } else {
        Tags::new()
    };
    Gossip::new(
        GossipConfig {
            name: name.into(),
            addr: addr(i),
            tags,
            seed: i as u64,
            timing: GossipTiming::lan(),
        },
        Instant::ZERO,
    )
}

/// Tick `g` until it pings `to`; returns (when, the packet).
fn run_until_ping(g: &mut Gossip, to: SocketAddr) -> (Instant, Vec<u8>) {
    let mut out = Vec::new();
    for _ in 0..1000 {
        out.clear();
        let now = g.next_deadline().unwrap();
        g.handle(now, Input::Tick, &mut out);
        for e in &out {
            if let Effect::Packet { to: t, bytes } = e {
                if *t == to && matches!(decode_packet(bytes).unwrap()[0], Message::Ping { .. }) {
                    return (now, bytes.clone());
                }
            }
        }
    }
    panic!("no ping to {to}");
}

fn packets_to(out: &[Effect], to: SocketAddr) -> Vec<Message> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Packet { to: t, bytes } if *t == to => Some(decode_packet(bytes).unwrap()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn rtt_events(out: &[Effect]) -> Vec<(String, Duration, Option<Vec<u8>>)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Event(GossipEvent::PingRtt { member, rtt, payload }) => {
                Some((member.clone(), *rtt, payload.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_direct_probe_reports_its_rtt_with_the_ackers_payload() {
    let mut a = machine_tagged("a", 1, true);
    let mut b = machine_tagged("b", 2, true);
    join_through(&mut a, &mut b, Instant::ZERO);
    b.set_ack_payload(Some(vec![7, 7, 7]));
    let (sent, ping) = run_until_ping(&mut a, addr(2));
    let mut out = Vec::new();
    b.handle(
        sent + Duration::from_millis(3),
        Input::Packet {
            from: addr(1),
            bytes: ping,
        },
        &mut out,
    );
    let acks = packets_to(&out, addr(1));
    let Some(Message::AckPayload { seq, payload }) = acks.first().cloned() else {
        panic!("b answers with its payload: {acks:?}")
    };
    assert_eq!(payload, vec![7, 7, 7]);
    let ack = packet(&[Message::AckPayload { seq, payload }]);
    let mut out = Vec::new();
    a.handle(
        sent + Duration::from_millis(5),
        Input::Packet {
            from: addr(2),
            bytes: ack.clone(),
        },
        &mut out,
    );
    assert_eq!(
        rtt_events(&out),
        vec![("b".to_string(), Duration::from_millis(5), Some(vec![7, 7, 7]))]
    );
    // The probe counts as acked: no indirect probe, no suspicion of b when the interval ends.
    let mut out = Vec::new();
    a.handle(sent + Duration::from_secs(2), Input::Tick, &mut out);
    assert!(!out.iter().any(|e| matches!(e, Effect::Packet { bytes, .. }
        if decode_packet(bytes).unwrap().iter().any(|m| matches!(m, Message::IndirectPing { .. } | Message::Suspect { .. })))));
    // A second copy of the ack is no second sample.
    let mut out = Vec::new();
    a.handle(
        sent + Duration::from_millis(6),
        Input::Packet {
            from: addr(2),
            bytes: ack,
        },
        &mut out,
    );
    assert!(rtt_events(&out).is_empty());
}

#[test]
fn members_without_the_tag_get_plain_acks_and_relayed_acks_are_no_sample() {
    // `old` is an older build: it does not advertise the tag, so b never sends it an AckPayload.
    let mut old = machine_tagged("old", 1, false);
    let mut b = machine_tagged("b", 2, true);
    join_through(&mut old, &mut b, Instant::ZERO);
    b.set_ack_payload(Some(vec![1]));
    let (sent, ping) = run_until_ping(&mut old, addr(2));
    let mut out = Vec::new();
    b.handle(
        sent,
        Input::Packet {
            from: addr(1),
            bytes: ping,
        },
        &mut out,
    );
    let acks = packets_to(&out, addr(1));
    assert!(matches!(acks.first(), Some(Message::Ack { .. })), "{acks:?}");
    // The plain ack is still an RTT sample, without payload.
    let mut out = Vec::new();
    old.handle(
        sent + Duration::from_millis(2),
        Input::Packet {
            from: addr(2),
            bytes: packet(&acks[..1]),
        },
        &mut out,
    );
    assert_eq!(
        rtt_events(&out),
        vec![("b".to_string(), Duration::from_millis(2), None)]
    );

    // An ack for a direct probe that arrives from a relay's address measured another path.
    let mut a = machine_tagged("a", 3, true);
    let mut c = machine_tagged("c", 4, true);
    join_through(&mut a, &mut c, Instant::ZERO);
    let (sent, ping) = run_until_ping(&mut a, addr(4));
    let Message::Ping { seq, .. } = decode_packet(&ping).unwrap()[0].clone() else {
        unreachable!()
    };
    let mut out = Vec::new();
    a.handle(
        sent + Duration::from_millis(1),
        Input::Packet {
            from: addr(9),
            bytes: packet(&[Message::Ack { seq }]),
        },
        &mut out,
    );
    assert!(rtt_events(&out).is_empty());
}

#[test]
fn oversized_ack_payloads_are_neither_sent_nor_accepted() {
    let mut b = machine_tagged("b", 2, true);
    b.set_ack_payload(Some(vec![0; MAX_ACK_PAYLOAD + 1]));
    assert_eq!(b.ack_for(addr(1), 1), Message::Ack { seq: 1 });
    let big = Message::AckPayload {
        seq: 1,
        payload: vec![0; MAX_ACK_PAYLOAD + 1],
    };
    assert_eq!(decode_packet(&packet(&[big])), Err(GossipWireError::FieldTooLarge));
}

/// Probes far apart, so that only gossip is sent in the tests below.
fn gossip_only(eager_gossip: bool) -> GossipTiming {
    GossipTiming {
        probe_interval: Duration::from_secs(600),
        probe_timeout: Duration::from_secs(300),
        eager_gossip,
        ..GossipTiming::lan()
    }
}

/// `a` knowing `b`, `c`, `d`, with nothing left to gossip (the broadcasts of the join sent out), at the
/// returned time.
fn quiet_member(timing: GossipTiming) -> (Gossip, Instant) {
    let mut a = Gossip::new(
        GossipConfig {
            name: "a".into(),
            addr: addr(1),
            tags: Tags::new(),
            seed: 1,
            timing,
        },
        Instant::ZERO,
    );
    let mut state = machine("b", 2).local_state(false);
    for (name, i) in [("c", 3), ("d", 4)] {
        state.members.extend(machine(name, i).local_state(false).members);
    }
    let mut now = Instant::ZERO;
    a.handle(now, Input::PushPullReply { state }, &mut Vec::new());
    while a.queued_broadcasts() > 0 {
        now = a.next_deadline().unwrap().max(now);
        a.handle(now, Input::Tick, &mut Vec::new());
    }
    (a, now)
}

fn alive(name: &str, i: u8) -> Input {
    Input::Packet {
        from: addr(2),
        bytes: packet(&[Message::Alive {
            incarnation: 0,
            name: name.into(),
            addr: addr(i),
            tags: Tags::new(),
        }]),
    }
}

/// Gossip packets (broadcasts only, no probe) in `out` that tell that `name` is alive.
fn told_alive(out: &[Effect], name: &str) -> usize {
    out.iter()
        .filter(|e| match e {
            Effect::Packet { bytes, .. } => {
                let msgs = decode_packet(bytes).unwrap();
                msgs.iter().all(|m| {
                    matches!(
                        m,
                        Message::Alive { .. } | Message::Suspect { .. } | Message::Dead { .. } | Message::Leave { .. }
                    )
                }) && msgs
                    .iter()
                    .any(|m| matches!(m, Message::Alive { name: n, .. } if n == name))
            }
            _ => false,
        })
        .count()
}

/// Run `a`'s timers from `now` until a gossip packet tells that `name` is alive; when that was.
fn until_told(a: &mut Gossip, mut now: Instant, name: &str) -> Instant {
    loop {
        now = a.next_deadline().unwrap().max(now);
        let mut out = Vec::new();
        a.handle(now, Input::Tick, &mut out);
        if told_alive(&out, name) > 0 {
            return now;
        }
    }
}

#[test]
fn a_quiet_member_gossips_news_at_once_and_a_busy_one_at_its_tick() {
    let timing = gossip_only(true);
    let (mut a, t) = quiet_member(timing.clone());
    // Between two ticks, `a` learns that `e` joined: it tells `gossip_nodes` members now, not at the tick.
    let now = t + timing.gossip_interval / 2;
    let mut out = Vec::new();
    a.handle(now, alive("e", 5), &mut out);
    assert_eq!(told_alive(&out, "e"), timing.gossip_nodes, "{out:?}");
    // News while `e`'s is still queued waits for the tick, which resumes a full interval after that round.
    let mut out = Vec::new();
    a.handle(now + Duration::from_millis(1), alive("f", 6), &mut out);
    assert_eq!(told_alive(&out, "f"), 0, "{out:?}");
    assert_eq!(until_told(&mut a, now, "f"), now + timing.gossip_interval);
}

#[test]
fn a_suspicion_keeps_the_gossip_pace() {
    let timing = gossip_only(true);
    let (mut a, t) = quiet_member(timing.clone());
    let now = t + Duration::from_millis(1);
    let suspect = Message::Suspect {
        incarnation: 0,
        name: "b".into(),
        from: "c".into(),
    };
    let mut out = Vec::new();
    let bytes = packet(&[suspect]);
    a.handle(now, Input::Packet { from: addr(3), bytes }, &mut out);
    assert_eq!(a.queued_broadcasts(), 1);
    assert!(out.iter().all(|e| !matches!(e, Effect::Packet { .. })), "{out:?}");
}

#[test]
fn with_fixed_ticks_news_waits_for_the_next_tick() {
    let timing = gossip_only(false);
    let (mut a, t) = quiet_member(timing.clone());
    let now = t + Duration::from_millis(1);
    let mut out = Vec::new();
    a.handle(now, alive("e", 5), &mut out);
    assert_eq!(told_alive(&out, "e"), 0, "{out:?}");
    let told = until_told(&mut a, now, "e");
    assert!(told > now && told <= now + timing.gossip_interval, "{told:?}");
}
