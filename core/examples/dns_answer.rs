//! The DNS answer path alone, for instruction counts (see BENCHMARKS.md, "DNS"): the `tests/bench/dns.sh`
//! catalog (100 services × 10 instances, each on its own node, tags `t0`/`t1`) and query mix (every service
//! by A, SRV, tag `t1` A, RFC 2782 SRV, plus a node A), answered `N` times over UDP without EDNS0 (what
//! dnsperf sends) through `Responder::respond`.
//!
//!     cargo build --release -p concord-core --example dns_answer
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/dns_answer 20000
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/dns_answer 120000
//!
//! (total instructions of the second run − the first) / 100,000 = instructions per query, set-up excluded.
//! `EDNS=1` in the environment adds an EDNS0 OPT record (payload 4096) to every query.
use std::hint::black_box;

use concord_core::dns::{Context, DnsConfig, DnsView, Outcome, Responder, Transport};
use concord_core::state::{CatalogDump, CatalogNode, ServiceInstance};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let edns = std::env::var_os("EDNS").is_some();
    let mut dump = CatalogDump::default();
    for s in 0..100 {
        for i in 0..10 {
            let node = format!("node-{s}-{i}");
            dump.nodes.push(CatalogNode {
                node: node.clone(),
                address: format!("10.{s}.{i}.1"),
                datacenter: "dc1".into(),
                ..CatalogNode::default()
            });
            dump.services.push((
                node,
                ServiceInstance {
                    id: format!("svc-{s}"),
                    service: format!("svc-{s}"),
                    port: 20000 + i,
                    tags: vec![format!("t{}", i % 2)],
                    ..ServiceInstance::default()
                },
            ));
        }
    }
    let view = DnsView::build(&dump);
    let mut queries = Vec::new();
    for s in 0..100 {
        for (name, qtype) in [
            (format!("svc-{s}.service.consul."), RecordType::A),
            (format!("svc-{s}.service.consul."), RecordType::SRV),
            (format!("t1.svc-{s}.service.consul."), RecordType::A),
            (format!("_svc-{s}._tcp.service.consul."), RecordType::SRV),
            (format!("node-{s}-0.node.consul."), RecordType::A),
        ] {
            let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
            m.metadata.recursion_desired = true;
            m.add_query(Query::query(Name::from_ascii(&name).expect("name"), qtype));
            if edns {
                let mut e = Edns::new();
                e.set_max_payload(4096);
                m.edns = Some(e);
            }
            queries.push(m.to_vec().expect("encode"));
        }
    }
    let responder = Responder::new(DnsConfig::default()).expect("config");
    let ctx = Context {
        view: &view,
        known_leader: true,
        unix_time: 1_700_000_000,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let mut out = Vec::with_capacity(4096);
    let mut bytes = 0usize;
    for i in 0..n {
        let q = &queries[i % queries.len()];
        let outcome = responder.respond(&ctx, black_box(q), Transport::Udp, &mut rng, &mut out);
        assert_eq!(outcome, Outcome::Reply);
        bytes += out.len();
    }
    println!("{n} queries, {bytes} reply bytes");
}
