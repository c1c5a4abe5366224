//! Gossip input from the network: UDP packets (also as TCP fallback pings and their replies) and push-pull
//! frames. Decoding never panics and what decodes
//! round-trips; a member that receives the input keeps working (its own packets still decode and fit
//! `max_packet`, its push-pull state still encodes within the frame limit).

use crate::gossip::wire::{
    assemble_packet, decode_packet, decode_push_pull, encode_message, encode_push_pull, push_pull_frame_len,
};
use crate::gossip::{stream_ping_reply, Effect, Gossip, GossipConfig, GossipTiming, Input, PushPull};
use crate::time::Instant;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 8301)
}

/// A member that already knows one peer, so probes, suspicion and broadcasts all have someone to act on.
fn member() -> Gossip {
    let timing = GossipTiming::dev();
    let config = GossipConfig {
        name: "fuzz-self".into(),
        addr: addr(1),
        tags: [("role".to_string(), "node".to_string())].into_iter().collect(),
        seed: 7,
        timing,
    };
    let mut g = Gossip::new(config, Instant::ZERO);
    let mut peer = g.local_state(false);
    peer.members[0].name = "fuzz-peer".into();
    peer.members[0].addr = addr(2);
    g.handle(Instant::ZERO, Input::PushPullReply { state: peer }, &mut Vec::new());
    g
}

/// Every effect the member produced is well-formed: packets decode and fit, push-pull states encode
/// within the frame limit and decode back to themselves.
fn check_effects(g: &Gossip, out: &[Effect]) {
    for effect in out {
        match effect {
            Effect::Packet { bytes, .. } => {
                assert!(
                    bytes.len() <= GossipTiming::dev().max_packet,
                    "{}-byte packet",
                    bytes.len()
                );
                if let Err(e) = decode_packet(bytes) {
                    panic!("the member sent a packet that does not decode: {e}");
                }
            }
            Effect::PushPull { state, .. } | Effect::PushPullReply { state, .. } => check_push_pull_round_trip(state),
            Effect::StreamPing { bytes, .. } => {
                if let Err(e) = decode_packet(bytes) {
                    panic!("the member sent a TCP ping that does not decode: {e}");
                }
            }
            Effect::Event(_) => {}
        }
    }
    assert!(g.member(g.name()).is_some(), "the member forgot itself");
}

/// Run the member for a while after some input (probes time out, suspicions expire, broadcasts go out).
fn run(g: &mut Gossip, start: Instant) {
    let mut out = Vec::new();
    let mut now = start;
    for _ in 0..64 {
        let Some(next) = g.next_deadline() else { break };
        now = next.max(now);
        if now > start + Duration::from_secs(30) {
            break;
        }
        out.clear();
        g.handle(now, Input::Tick, &mut out);
        check_effects(g, &out);
    }
}

fn check_push_pull_round_trip(pp: &PushPull) {
    let frame = encode_push_pull(pp);
    let (prefix, body) = frame.split_first_chunk::<4>().expect("a frame has a length prefix");
    assert_eq!(push_pull_frame_len(*prefix), Ok(body.len()), "push-pull length prefix");
    assert_eq!(decode_push_pull(body).as_ref(), Ok(pp), "push-pull does not round-trip");
}

/// One UDP datagram from anyone. Decoding never panics; decoded messages re-encode to a packet that decodes
/// to the same messages; a member handed the datagram (decodable or not) keeps sending valid packets.
pub fn gossip_packet(data: &[u8]) {
    if let Ok(msgs) = decode_packet(data) {
        let parts: Vec<Vec<u8>> = msgs.iter().map(encode_message).collect();
        let again = assemble_packet(parts.iter().map(Vec::as_slice));
        assert_eq!(decode_packet(&again).as_ref(), Ok(&msgs), "packet does not round-trip");
        for msg in &msgs {
            if let crate::gossip::Message::AckPayload { payload, .. } = msg {
                ack_payload(payload);
            }
        }
    }
    let mut g = member();
    let now = Instant::from_micros(1_000);
    let mut out = Vec::new();
    let input = Input::Packet {
        from: addr(2),
        bytes: data.to_vec(),
    };
    g.handle(now, input, &mut out);
    check_effects(&g, &out);
    run(&mut g, now);
    // The same bytes over TCP: as a fallback ping's request (the answer, if any, is a valid packet) and
    // as its reply.
    if let Some(reply) = stream_ping_reply(g.name(), data) {
        assert!(decode_packet(&reply).is_ok(), "a TCP ping reply that does not decode");
    }
    out.clear();
    g.handle(now, Input::StreamReply { bytes: data.to_vec() }, &mut out);
    check_effects(&g, &out);
}

/// An ack payload as the coordinate client takes it (`concord::gossip` decodes it the same way): decoding
/// never panics; a decoded coordinate is valid, round-trips, and a sample with it keeps the client's
/// coordinate valid.
fn ack_payload(payload: &[u8]) {
    use crate::coordinate::{decode_ack_payload, encode_ack_payload, Client, CoordinateConfig};
    use rand::SeedableRng;
    let Some(other) = decode_ack_payload(payload) else {
        return;
    };
    assert!(other.is_valid());
    assert_eq!(decode_ack_payload(&encode_ack_payload(&other)), Some(other.clone()));
    let mut client = Client::new(CoordinateConfig::default());
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    for _ in 0..3 {
        let _ = client.update("peer", &other, Duration::from_millis(5), &mut rng);
        assert!(client.coordinate().is_valid());
    }
}

/// The body of a push-pull frame (after its 4-byte length). Decoding never panics; what decodes
/// round-trips and, merged into a member both as a request and as a reply, leaves it working.
pub fn gossip_push_pull(data: &[u8]) {
    let Ok(pp) = decode_push_pull(data) else { return };
    check_push_pull_round_trip(&pp);
    let mut g = member();
    let now = Instant::from_micros(1_000);
    let mut out = Vec::new();
    g.handle(
        now,
        Input::PushPull {
            conn: 1,
            state: pp.clone(),
        },
        &mut out,
    );
    g.handle(now, Input::PushPullReply { state: pp }, &mut out);
    check_effects(&g, &out);
    run(&mut g, now);
}
