//! `dns_packet`: any bytes as a DNS request, answered by the server logic in every configuration shape.
use std::sync::OnceLock;

use hickory_proto::op::Message;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::dns::{Context, DnsConfig, DnsView, Outcome, Responder, Transport};
use crate::state::{CatalogDump, CatalogNode, CheckStatus, HealthCheck, ServiceInstance};

fn view() -> &'static DnsView {
    static VIEW: OnceLock<DnsView> = OnceLock::new();
    VIEW.get_or_init(|| {
        let mut dump = CatalogDump::default();
        for i in 0..12u32 {
            let node = format!("n{i}");
            let address = if i == 11 {
                "fd00::b".to_string()
            } else {
                format!("10.0.0.{i}")
            };
            dump.nodes.push(CatalogNode {
                node: node.clone(),
                address,
                meta: [
                    ("k".to_string(), "v".repeat(300)),
                    ("rfc1035-x".to_string(), "y".into()),
                ]
                .into(),
                ..CatalogNode::default()
            });
            let svc = ServiceInstance {
                id: format!("web{i}"),
                service: if i == 0 { "consul".into() } else { "web".into() },
                address: if i % 3 == 0 {
                    format!("10.1.0.{i}")
                } else if i == 5 {
                    "host.example".into()
                } else {
                    String::new()
                },
                port: 80 + i,
                tags: vec![format!("t{}", i % 2)],
                ..ServiceInstance::default()
            };
            dump.services.push((node.clone(), svc));
            dump.checks.push(HealthCheck {
                node,
                check_id: format!("c{i}"),
                service_id: format!("web{i}"),
                status: [CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical][i as usize % 3],
                ..HealthCheck::default()
            });
        }
        DnsView::build(&dump)
    })
}

fn responders() -> &'static [(Responder, bool)] {
    static RESPONDERS: OnceLock<Vec<(Responder, bool)>> = OnceLock::new();
    RESPONDERS.get_or_init(|| {
        let strict = DnsConfig {
            alt_domain: Some("alt.example.".into()),
            allow_stale: false,
            only_passing: true,
            enable_truncate: false,
            recursion: true,
            udp_answer_limit: 1,
            a_record_limit: 2,
            ..DnsConfig::default()
        };
        vec![
            (Responder::new(DnsConfig::default()).expect("default config"), true),
            (Responder::new(strict.clone()).expect("strict config"), false),
            (Responder::new(strict).expect("strict config"), true),
        ]
    })
}

/// The server logic never panics; it drops only headerless packets and responses, answers FORMERR to what
/// does not decode, and otherwise replies with a well-formed message for the same ID within the size limit
/// (512 bytes or the EDNS0 payload on UDP, 64 KiB on TCP). Whenever the allocation-free path answers, its
/// reply is byte for byte the general (hickory `Message`) path's for the same RNG seed.
pub fn dns_packet(data: &[u8]) {
    let decoded = Message::from_vec(data).ok();
    for (responder, known_leader) in responders() {
        let ctx = Context {
            view: view(),
            known_leader: *known_leader,
            unix_time: 1_700_000_000,
        };
        for transport in [Transport::Udp, Transport::Tcp] {
            let mut out = Vec::new();
            let mut fast = Vec::new();
            let rng = &mut SmallRng::seed_from_u64(7);
            if let Some(outcome) = responder.respond_fast(&ctx, data, transport, rng, &mut fast) {
                let general =
                    responder.respond_general(&ctx, data, transport, &mut SmallRng::seed_from_u64(7), &mut out);
                assert_eq!((outcome, &fast), (general, &out), "the fast path answered differently");
            }
            let outcome = responder.respond(&ctx, data, transport, &mut SmallRng::seed_from_u64(7), &mut out);
            match outcome {
                Outcome::Drop => assert!(data.len() < 12 || data[2] & 0x80 != 0, "dropped a query"),
                Outcome::Recurse => assert!(
                    decoded.is_some() && responder.config().recursion,
                    "forwarding without recursors, or a packet that does not decode"
                ),
                Outcome::Reply => {
                    assert!(
                        out.len() >= 12 && out[..2] == data[..2],
                        "reply without the request's ID"
                    );
                    assert!(out[2] & 0x80 != 0, "reply without QR");
                    let limit = match (transport, &decoded) {
                        (Transport::Tcp, _) => 65_535,
                        (Transport::Udp, Some(m)) => {
                            m.edns.as_ref().map_or(512, |e| usize::from(e.max_payload()).max(512))
                        }
                        (Transport::Udp, None) => 512,
                    };
                    assert!(out.len() <= limit, "{} bytes over a limit of {limit}", out.len());
                    if decoded.is_none() {
                        assert_eq!(out[3] & 0x0f, 1, "undecodable request not answered FORMERR");
                    }
                    assert!(Message::from_vec(&out).is_ok(), "our own reply does not decode");
                }
            }
        }
    }
}
