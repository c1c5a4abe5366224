use core::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::*;
use crate::state::{CatalogDump, CatalogNode, CheckStatus, HealthCheck, ServiceInstance, Weights};

fn node(name: &str, addr: &str, meta: &[(&str, &str)]) -> CatalogNode {
    CatalogNode {
        node: name.into(),
        address: addr.into(),
        datacenter: "dc1".into(),
        meta: meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..CatalogNode::default()
    }
}

fn svc(id: &str, name: &str, addr: &str, port: u32, tags: &[&str]) -> ServiceInstance {
    ServiceInstance {
        id: id.into(),
        service: name.into(),
        address: addr.into(),
        port,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..ServiceInstance::default()
    }
}

fn check(node: &str, service_id: &str, status: CheckStatus) -> HealthCheck {
    HealthCheck {
        node: node.into(),
        check_id: format!("c-{service_id}"),
        service_id: service_id.into(),
        status,
        ..HealthCheck::default()
    }
}

/// web on n1 (passing, tag prod), n2 (warning, own address 10.0.0.20), n3 (critical); db on n1; api
/// with 10 instances on n10..n19; consul on n1 (the server).
fn dump() -> CatalogDump {
    let mut d = CatalogDump::default();
    d.nodes
        .push(node("n1", "10.0.0.1", &[("rack", "a"), ("rfc1035-x", "bare")]));
    d.nodes.push(node("n2", "10.0.0.2", &[]));
    d.nodes.push(node("n3", "10.0.0.3", &[]));
    d.nodes.push(node("v6", "fd00::1", &[]));
    let mut web1 = svc("web1", "web", "", 80, &["prod"]);
    web1.weights = Weights { passing: 7, warning: 2 };
    d.services.push(("n1".into(), web1));
    let mut web2 = svc("web2", "web", "10.0.0.20", 8080, &["canary"]);
    web2.weights = Weights { passing: 7, warning: 2 };
    d.services.push(("n2".into(), web2));
    d.services.push(("n3".into(), svc("web3", "web", "", 80, &["prod"])));
    d.services.push(("n1".into(), svc("db1", "db", "", 5432, &[])));
    d.services.push(("n1".into(), svc("consul", "consul", "", 8300, &[])));
    d.services.push(("v6".into(), svc("six", "six", "", 1, &[])));
    d.checks.push(check("n1", "web1", CheckStatus::Passing));
    d.checks.push(check("n2", "web2", CheckStatus::Warning));
    d.checks.push(check("n3", "", CheckStatus::Critical));
    for i in 10..20 {
        let name = format!("n{i}");
        d.nodes.push(node(&name, &format!("10.0.1.{i}"), &[]));
        d.services
            .push((name, svc(&format!("api{i}"), "api", "", 9000 + i, &[])));
    }
    d
}

fn responder(f: impl FnOnce(&mut DnsConfig)) -> Responder {
    let mut config = DnsConfig::default();
    f(&mut config);
    Responder::new(config).unwrap()
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(4242, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

struct Asked {
    outcome: Outcome,
    bytes: Vec<u8>,
}

impl Asked {
    fn msg(&self) -> Message {
        assert_eq!(self.outcome, Outcome::Reply);
        Message::from_vec(&self.bytes).expect("the reply decodes")
    }
}

fn ask_with(r: &Responder, view: &DnsView, req: &Message, transport: Transport, seed: u64) -> Asked {
    let ctx = Context {
        view,
        known_leader: true,
        unix_time: 1_700_000_000,
    };
    let mut out = Vec::new();
    let bytes = req.to_vec().unwrap();
    let outcome = r.respond(&ctx, &bytes, transport, &mut SmallRng::seed_from_u64(seed), &mut out);
    Asked { outcome, bytes: out }
}

fn ask(r: &Responder, name: &str, qtype: RecordType) -> Message {
    let view = DnsView::build(&dump());
    ask_with(r, &view, &query(name, qtype), Transport::Udp, 1).msg()
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn has_soa(m: &Message) -> bool {
    m.authorities.iter().any(|r| matches!(r.data, RData::SOA(_)))
}

#[test]
fn service_a_records_are_the_non_critical_instances() {
    let r = responder(|_| {});
    let m = ask(&r, "web.service.consul.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.authoritative);
    assert!(!m.recursion_available);
    assert_eq!(m.id, 4242);
    assert_eq!(
        a_records(&m),
        vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 20)]
    );
    assert!(m
        .answers
        .iter()
        .all(|a| a.ttl == 0 && a.name == Name::from_ascii("web.service.consul.").unwrap()));
    // Case-insensitive, with the datacenter, and only passing when asked.
    let m = ask(&r, "WEB.Service.DC1.consul.", RecordType::A);
    assert_eq!(a_records(&m).len(), 2);
    let strict = responder(|c| c.only_passing = true);
    assert_eq!(
        a_records(&ask(&strict, "web.service.consul.", RecordType::A)),
        vec![Ipv4Addr::new(10, 0, 0, 1)]
    );
}

#[test]
fn tags_and_rfc2782_names_filter_instances() {
    let r = responder(|_| {});
    let prod = vec![Ipv4Addr::new(10, 0, 0, 1)];
    assert_eq!(a_records(&ask(&r, "prod.web.service.consul.", RecordType::A)), prod);
    assert_eq!(a_records(&ask(&r, "PROD.web.service.dc1.consul.", RecordType::A)), prod);
    for name in [
        "_web._prod.service.consul.",
        "_web._prod.consul.",
        "_web._prod.dc1.consul.",
    ] {
        let m = ask(&r, name, RecordType::SRV);
        assert_eq!(m.answers.len(), 1, "{name}");
    }
    for name in [
        "_web._tcp.service.consul.",
        "_web._tcp.consul.",
        "_web._tcp.service.dc1.consul.",
    ] {
        let m = ask(&r, name, RecordType::SRV);
        assert_eq!(m.answers.len(), 2, "{name}: _tcp does not filter");
    }
    let m = ask(&r, "nosuchtag.web.service.consul.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NXDomain);
}

#[test]
fn srv_targets_the_node_or_the_addr_name_with_addresses_in_additional() {
    let r = responder(|_| {});
    let m = ask(&r, "web.service.consul.", RecordType::SRV);
    let mut srvs: Vec<(String, u16, u16)> = m
        .answers
        .iter()
        .map(|a| match &a.data {
            RData::SRV(s) => (s.target.to_ascii(), s.port, s.weight),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    srvs.sort();
    assert_eq!(
        srvs,
        vec![
            ("0a000014.addr.dc1.consul.".to_string(), 8080, 2),
            ("n1.node.dc1.consul.".to_string(), 80, 7),
        ]
    );
    let extra = |name: &str| -> Vec<RData> {
        m.additionals
            .iter()
            .filter(|r| r.name == Name::from_ascii(name).unwrap())
            .map(|r| r.data.clone())
            .collect()
    };
    assert!(extra("0a000014.addr.dc1.consul.").contains(&RData::A(Ipv4Addr::new(10, 0, 0, 20).into())));
    let n1 = extra("n1.node.dc1.consul.");
    assert!(n1.contains(&RData::A(Ipv4Addr::new(10, 0, 0, 1).into())));
    let txt: Vec<String> = n1
        .iter()
        .filter_map(|d| match d {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(txt, vec!["rack=a".to_string(), "bare".to_string()]);
    let plain = responder(|c| c.node_meta_txt = false);
    let m = ask(&plain, "web.service.consul.", RecordType::SRV);
    assert!(m.additionals.iter().all(|r| !matches!(r.data, RData::TXT(_))));
}

#[test]
fn node_lookups_answer_address_and_meta() {
    let r = responder(|_| {});
    let m = ask(&r, "N1.node.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    assert_eq!(m.additionals.len(), 2, "meta TXT in additional");
    let m = ask(&r, "n1.node.dc1.consul.", RecordType::TXT);
    let txt: Vec<String> = m.answers.iter().map(|a| a.data.to_string()).collect();
    assert_eq!(txt.len(), 2, "{txt:?}");
    // NODATA: the node exists, it has no AAAA.
    let m = ask(&r, "n1.node.consul.", RecordType::AAAA);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && has_soa(&m));
    let m = ask(&r, "v6.node.consul.", RecordType::AAAA);
    assert_eq!(
        m.answers[0].data,
        RData::AAAA("fd00::1".parse::<Ipv6Addr>().unwrap().into())
    );
    // NXDOMAIN: no such node, or a datacenter we do not serve.
    for name in ["nope.node.consul.", "n1.node.dc2.consul.", "n1.node.a.b.consul."] {
        let m = ask(&r, name, RecordType::A);
        assert_eq!(m.response_code, ResponseCode::NXDomain, "{name}");
        assert!(has_soa(&m));
    }
}

#[test]
fn addr_and_reverse_lookups() {
    let r = responder(|_| {});
    let m = ask(&r, "0a000014.addr.dc1.consul.", RecordType::A);
    assert_eq!(a_records(&m), vec![Ipv4Addr::new(10, 0, 0, 20)]);
    let m = ask(&r, "fd000000000000000000000000000001.addr.consul.", RecordType::AAAA);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(
        ask(&r, "zz.addr.consul.", RecordType::A).response_code,
        ResponseCode::NXDomain
    );
    let m = ask(&r, "1.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.answers[0].data.to_string(), "n1.node.dc1.consul.");
    // A service address no node has: the service's name.
    let m = ask(&r, "20.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(m.answers[0].data.to_string(), "web.service.dc1.consul.");
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(
        ask(&r, v6, RecordType::PTR).answers[0].data.to_string(),
        "v6.node.dc1.consul."
    );
    assert_eq!(
        ask(&r, "9.9.9.9.in-addr.arpa.", RecordType::PTR).response_code,
        ResponseCode::NXDomain
    );
}

#[test]
fn soa_and_ns_for_the_domain() {
    let r = responder(|_| {});
    let m = ask(&r, "consul.", RecordType::SOA);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("{m:?}")
    };
    assert_eq!(soa.mname.to_ascii(), "ns.consul.");
    assert_eq!(soa.rname.to_ascii(), "hostmaster.consul.");
    assert_eq!(
        (soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum),
        (1_700_000_000, 3600, 600, 86400, 0)
    );
    assert_eq!(m.authorities.len(), 1);
    let m = ask(&r, "consul.", RecordType::NS);
    assert_eq!(m.answers[0].data.to_string(), "n1.node.dc1.consul.");
    assert_eq!(m.additionals[0].data, RData::A(Ipv4Addr::new(10, 0, 0, 1).into()));
    // The apex has no A: NODATA, not NXDOMAIN (which would deny the whole zone).
    let m = ask(&r, "consul.", RecordType::A);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(has_soa(&m));
}

#[test]
fn nxdomain_vs_nodata() {
    let r = responder(|_| {});
    for name in [
        "nope.service.consul.",
        "x.query.consul.",
        "web.connect.consul.",
        "foo.consul.",
    ] {
        let m = ask(&r, name, RecordType::A);
        assert_eq!(m.response_code, ResponseCode::NXDomain, "{name}");
        assert!(has_soa(&m), "{name}");
    }
    // Every web instance is critical on n3 only: web exists; a service whose instances are all critical
    // is NXDOMAIN as in Consul.
    let m = ask(&r, "db.service.consul.", RecordType::AAAA);
    assert_eq!(m.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty() && has_soa(&m));
}

#[test]
fn udp_answers_are_limited_and_marked_truncated() {
    let r = responder(|_| {});
    let view = DnsView::build(&dump());
    let m = ask_with(
        &r,
        &view,
        &query("api.service.consul.", RecordType::A),
        Transport::Udp,
        1,
    )
    .msg();
    assert_eq!(m.answers.len(), 3);
    assert!(m.truncation);
    let m = ask_with(
        &r,
        &view,
        &query("api.service.consul.", RecordType::SRV),
        Transport::Udp,
        1,
    )
    .msg();
    assert_eq!(m.answers.len(), 3);
    assert_eq!(m.additionals.len(), 3, "additional records follow the answers kept");
    assert!(m.truncation);
    let m = ask_with(
        &r,
        &view,
        &query("api.service.consul.", RecordType::A),
        Transport::Tcp,
        1,
    )
    .msg();
    assert_eq!((m.answers.len(), m.truncation), (10, false));
    let mut edns = query("api.service.consul.", RecordType::SRV);
    let mut opt = Edns::new();
    opt.set_max_payload(4096);
    edns.edns = Some(opt);
    let m = ask_with(&r, &view, &edns, Transport::Udp, 1).msg();
    assert_eq!((m.answers.len(), m.truncation), (10, false));
    assert!(m.edns.is_some(), "EDNS0 answered with EDNS0");
    // Consul's default: cut silently.
    let silent = responder(|c| c.enable_truncate = false);
    let m = ask_with(
        &silent,
        &view,
        &query("api.service.consul.", RecordType::A),
        Transport::Udp,
        1,
    )
    .msg();
    assert_eq!((m.answers.len(), m.truncation), (3, false));
}

#[test]
fn a_small_payload_cuts_by_size() {
    let mut d = dump();
    for i in 0..100 {
        let name = format!("big-node-with-a-long-name-{i}");
        d.nodes.push(node(&name, &format!("10.9.{}.{}", i / 200, i % 200), &[]));
        d.services.push((name, svc(&format!("big{i}"), "big", "", 1, &[])));
    }
    let view = DnsView::build(&d);
    let r = responder(|c| c.udp_answer_limit = 8);
    let mut req = query("big.service.consul.", RecordType::SRV);
    let mut opt = Edns::new();
    opt.set_max_payload(1232);
    req.edns = Some(opt);
    let asked = ask_with(&r, &view, &req, Transport::Udp, 1);
    assert!(asked.bytes.len() <= 1232);
    let m = asked.msg();
    assert!(m.truncation && !m.answers.is_empty() && m.answers.len() < 100);
    let tcp = ask_with(
        &r,
        &view,
        &query("big.service.consul.", RecordType::SRV),
        Transport::Tcp,
        1,
    )
    .msg();
    assert_eq!(tcp.answers.len(), 100);
}

#[test]
fn answers_are_shuffled_by_the_given_rng() {
    let r = responder(|_| {});
    let view = DnsView::build(&dump());
    let req = query("api.service.consul.", RecordType::A);
    let first = |seed| {
        ask_with(&r, &view, &req, Transport::Tcp, seed).msg().answers[0]
            .data
            .clone()
    };
    assert_eq!(first(7), first(7), "same seed, same order");
    let distinct: std::collections::BTreeSet<String> = (0..50).map(|s| first(s).to_string()).collect();
    assert!(distinct.len() > 3, "orders vary: {distinct:?}");
}

#[test]
fn ttls_come_from_the_config() {
    let r = responder(|c| {
        c.node_ttl = 30;
        c.service_ttl = [("*".to_string(), 5), ("we*".to_string(), 10), ("web".to_string(), 20)]
            .into_iter()
            .collect();
    });
    assert_eq!(ask(&r, "web.service.consul.", RecordType::A).answers[0].ttl, 20);
    assert_eq!(ask(&r, "db.service.consul.", RecordType::A).answers[0].ttl, 5);
    assert_eq!(ask(&r, "n1.node.consul.", RecordType::A).answers[0].ttl, 30);
    assert_eq!(r.config().service_ttl("webby"), 10);
}

#[test]
fn servfail_without_leader_only_when_stale_reads_are_off() {
    let view = DnsView::build(&dump());
    let req = query("web.service.consul.", RecordType::A).to_vec().unwrap();
    let ctx = Context {
        view: &view,
        known_leader: false,
        unix_time: 1,
    };
    let mut out = Vec::new();
    let mut rng = SmallRng::seed_from_u64(1);
    let stale = responder(|_| {});
    stale.respond(&ctx, &req, Transport::Udp, &mut rng, &mut out);
    assert_eq!(Message::from_vec(&out).unwrap().response_code, ResponseCode::NoError);
    let strict = responder(|c| c.allow_stale = false);
    strict.respond(&ctx, &req, Transport::Udp, &mut rng, &mut out);
    assert_eq!(Message::from_vec(&out).unwrap().response_code, ResponseCode::ServFail);
}

#[test]
fn other_names_are_forwarded_or_refused() {
    let view = DnsView::build(&dump());
    let req = query("example.com.", RecordType::A);
    let forwarding = responder(|c| c.recursion = true);
    assert_eq!(
        ask_with(&forwarding, &view, &req, Transport::Udp, 1).outcome,
        Outcome::Recurse
    );
    let m = ask_with(
        &forwarding,
        &view,
        &query("web.service.consul.", RecordType::A),
        Transport::Udp,
        1,
    )
    .msg();
    assert!(m.recursion_available);
    let alone = responder(|_| {});
    assert_eq!(
        ask_with(&alone, &view, &req, Transport::Udp, 1).msg().response_code,
        ResponseCode::Refused
    );
    let mut out = Vec::new();
    assert!(servfail(&req.to_vec().unwrap(), &mut out));
    let m = Message::from_vec(&out).unwrap();
    assert_eq!((m.id, m.response_code), (4242, ResponseCode::ServFail));
}

#[test]
fn alt_domain_answers_in_the_domain_asked() {
    let r = responder(|c| c.alt_domain = Some("test-domain.".into()));
    let m = ask(&r, "web.service.test-domain.", RecordType::SRV);
    assert!(m
        .answers
        .iter()
        .all(|a| a.data.to_string().ends_with(".dc1.test-domain.")));
    assert_eq!(a_records(&ask(&r, "db.service.consul.", RecordType::A)).len(), 1);
}

#[test]
fn malformed_packets_get_formerr_or_nothing() {
    let r = responder(|_| {});
    let view = DnsView::build(&dump());
    let ctx = Context {
        view: &view,
        known_leader: true,
        unix_time: 1,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let mut out = Vec::new();
    assert_eq!(
        r.respond(&ctx, &[1, 2, 3], Transport::Udp, &mut rng, &mut out),
        Outcome::Drop
    );
    let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f, b'a']);
    assert_eq!(
        r.respond(&ctx, &garbage, Transport::Udp, &mut rng, &mut out),
        Outcome::Reply
    );
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(
        (m.id, m.response_code, m.message_type),
        (0xabcd, ResponseCode::FormErr, MessageType::Response)
    );
    // A response is never answered (no reflection loops).
    let mut resp = query("web.service.consul.", RecordType::A);
    resp.metadata.message_type = MessageType::Response;
    assert_eq!(ask_with(&r, &view, &resp, Transport::Udp, 1).outcome, Outcome::Drop);
    let mut two = query("web.service.consul.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("db.service.consul.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        ask_with(&r, &view, &two, Transport::Udp, 1).msg().response_code,
        ResponseCode::FormErr
    );
    let mut notify = query("web.service.consul.", RecordType::A);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        ask_with(&r, &view, &notify, Transport::Udp, 1).msg().response_code,
        ResponseCode::NotImp
    );
}

/// `dump()` plus the shapes the fast path must get exactly right: two instances of a service on one node
/// (different ports, the same SRV target), an own IPv6 address, a host-name address, a node with long
/// meta (TXT split at 255 bytes), a service with 80 instances (over the fast path's limit), upper-case
/// names and tags as registered.
fn rich_dump() -> CatalogDump {
    let mut d = dump();
    d.nodes
        .push(node("Meta-Node", "10.0.2.1", &[("long", &"x".repeat(300)), ("k", "v")]));
    d.nodes.push(node("n4", "10.0.2.4", &[]));
    d.services
        .push(("Meta-Node".into(), svc("m1", "Multi", "", 1000, &["A.B", "x"])));
    d.services
        .push(("Meta-Node".into(), svc("m2", "Multi", "", 1001, &["x"])));
    d.services
        .push(("n4".into(), svc("m3", "Multi", "fd00::4", 1002, &["y"])));
    d.services
        .push(("n4".into(), svc("m4", "Multi", "10.0.9.9", 1003, &["x"])));
    d.services
        .push(("n1".into(), svc("h1", "hosted", "db.example.com", 5, &[])));
    for i in 0..80 {
        let name = format!("big{i}");
        d.nodes.push(node(&name, &format!("10.3.{}.{}", i / 200, i % 200), &[]));
        d.services.push((name, svc(&format!("b{i}"), "big", "", 1, &[])));
    }
    // 64 instances (the fast path's most): an SRV reply over TCP writes more than hickory's 120
    // compressed names, so the rest are written whole.
    for i in 0..64 {
        let name = format!("wide-node-{i}");
        d.nodes.push(node(&name, &format!("10.4.0.{i}"), &[]));
        d.services.push((name, svc(&format!("w{i}"), "wide", "", 2, &[])));
    }
    d
}

/// Every question the fast path may take is answered by it exactly as the general path answers it: the
/// same bytes from the same RNG seed, in every configuration shape, over UDP and TCP, with and without
/// EDNS0. Questions it must not take (and the common ones it must) are checked too.
#[test]
fn the_fast_path_answers_byte_for_byte_as_the_general_path() {
    let view = DnsView::build(&rich_dump());
    let configs: Vec<(&str, Responder)> = vec![
        ("default", responder(|_| {})),
        (
            "strict",
            responder(|c| {
                c.only_passing = true;
                c.a_record_limit = 2;
                c.udp_answer_limit = 1;
                c.enable_truncate = false;
                c.recursion = true;
                c.node_meta_txt = false;
                c.alt_domain = Some("Alt.Example.".into());
            }),
        ),
        (
            "ttls",
            responder(|c| {
                c.udp_answer_limit = 20;
                c.node_ttl = 30;
                c.service_ttl = [("*".to_string(), 5), ("mul*".to_string(), 7)].into();
                c.domain = "cluster.local.".into();
            }),
        ),
    ];
    let mut names = vec![
        "web.service.consul.",
        "WEB.Service.CONSUL.",
        "web.service.dc1.consul.",
        "web.service.dc2.consul.",
        "prod.web.service.consul.",
        "canary.web.service.consul.",
        "_web._tcp.service.consul.",
        "_web._prod.consul.",
        "_web._TCP.dc1.consul.",
        "multi.service.consul.",
        "x.multi.service.consul.",
        "a.b.multi.service.consul.",
        "A.B.Multi.service.consul.",
        "_multi._x.service.consul.",
        "y.multi.service.consul.",
        "api.service.consul.",
        "six.service.consul.",
        "hosted.service.consul.",
        "big.service.consul.",
        "wide.service.consul.",
        "nope.service.consul.",
        "n1.node.consul.",
        "N1.node.dc1.consul.",
        "meta-node.node.consul.",
        "v6.node.consul.",
        "n3.node.consul.",
        "missing.node.consul.",
        "0a000001.addr.consul.",
        "consul.",
        "web.service.alt.example.",
        "web.service.cluster.local.",
        "multi.service.cluster.local.",
        "n1.node.cluster.local.",
        "example.com.",
    ];
    names.sort();
    let qtypes = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::TXT,
        RecordType::ANY,
    ];
    let ctx = Context {
        view: &view,
        known_leader: true,
        unix_time: 1_700_000_000,
    };
    let (mut fast, mut general) = (Vec::new(), Vec::new());
    let mut taken = 0;
    for (label, r) in &configs {
        for name in &names {
            for qtype in qtypes {
                for edns in [None, Some(512u16), Some(1232), Some(100), Some(4096)] {
                    let mut req = query(name, qtype);
                    if let Some(payload) = edns {
                        let mut e = Edns::new();
                        e.set_max_payload(payload);
                        req.edns = Some(e);
                    }
                    let bytes = req.to_vec().unwrap();
                    for transport in [Transport::Udp, Transport::Tcp] {
                        for seed in 0..4 {
                            let mut rng = SmallRng::seed_from_u64(seed);
                            let Some(outcome) = r.respond_fast(&ctx, &bytes, transport, &mut rng, &mut fast) else {
                                assert!(fast.is_empty(), "{label} {name} {qtype}: left bytes behind");
                                continue;
                            };
                            taken += 1;
                            let mut rng = SmallRng::seed_from_u64(seed);
                            let want = r.respond_general(&ctx, &bytes, transport, &mut rng, &mut general);
                            assert_eq!(
                                (outcome, &fast),
                                (want, &general),
                                "{label}: {name} {qtype} edns {edns:?} {transport:?} seed {seed}\nfast:    {:?}\ngeneral: {:?}",
                                Message::from_vec(&fast),
                                Message::from_vec(&general)
                            );
                        }
                    }
                }
            }
        }
    }
    // The common questions do take the fast path.
    let r = &configs[0].1;
    for (name, qtype, transport) in [
        ("web.service.consul.", RecordType::A, Transport::Udp),
        ("web.service.consul.", RecordType::SRV, Transport::Udp),
        ("prod.web.service.consul.", RecordType::A, Transport::Udp),
        ("_web._tcp.service.consul.", RecordType::SRV, Transport::Udp),
        ("api.service.consul.", RecordType::SRV, Transport::Udp),
        ("n1.node.consul.", RecordType::A, Transport::Udp),
        // The 300-byte node meta does not fit 512 bytes, but does fit TCP.
        ("multi.service.consul.", RecordType::SRV, Transport::Tcp),
        ("wide.service.consul.", RecordType::SRV, Transport::Tcp),
    ] {
        let bytes = query(name, qtype).to_vec().unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        assert!(
            r.respond_fast(&ctx, &bytes, transport, &mut rng, &mut fast).is_some(),
            "{name} {qtype} not on the fast path"
        );
    }
    assert!(taken > 1000, "only {taken} answers took the fast path");
}

/// Byte patterns the fast path's strict parser must leave alone or read exactly as hickory does: EDNS0
/// options, a compressed question name, trailing bytes, other classes, a second OPT.
#[test]
fn the_fast_path_parses_strictly() {
    let view = DnsView::build(&rich_dump());
    let r = responder(|_| {});
    let ctx = Context {
        view: &view,
        known_leader: true,
        unix_time: 1,
    };
    let mut base = query("web.service.consul.", RecordType::A);
    let mut e = Edns::new();
    e.set_max_payload(1232);
    base.edns = Some(e);
    let plain = base.to_vec().unwrap();
    // The OPT record is the last 11 bytes; its RDLENGTH the last two.
    let with_option = |code: u16, data: &[u8]| {
        let mut p = plain.clone();
        let rdlen = (4 + data.len()) as u16;
        let n = p.len();
        p[n - 2..].copy_from_slice(&rdlen.to_be_bytes());
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&(data.len() as u16).to_be_bytes());
        p.extend_from_slice(data);
        p
    };
    let cookie = with_option(10, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let subnet = with_option(8, &[0, 1, 24, 0, 10, 0, 0]);
    let mut trailing = plain.clone();
    trailing.push(0);
    let mut chaos = query("web.service.consul.", RecordType::A).to_vec().unwrap();
    let n = chaos.len();
    chaos[n - 1] = 3; // class CH
    let mut short_opt = plain.clone();
    short_opt.truncate(plain.len() - 1);
    let mut version1 = plain.clone();
    let n = version1.len();
    version1[n - 5] = 1;
    // `web` then a pointer to `service.consul.` elsewhere: the general path's business.
    let mut pointer = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pointer.extend_from_slice(b"\x03web\xc0\x12\x00\x01\x00\x01\x07service\x06consul\x00");
    for (what, bytes, fast_ok) in [
        ("plain EDNS", &plain, true),
        ("cookie", &cookie, true),
        ("subnet", &subnet, false),
        ("trailing byte", &trailing, false),
        ("class CH", &chaos, false),
        ("cut OPT", &short_opt, false),
        ("EDNS version 1", &version1, false),
        ("compressed question", &pointer, false),
    ] {
        let (mut fast, mut general) = (Vec::new(), Vec::new());
        let got = r.respond_fast(&ctx, bytes, Transport::Udp, &mut SmallRng::seed_from_u64(3), &mut fast);
        assert_eq!(got.is_some(), fast_ok, "{what}");
        if got.is_some() {
            r.respond_general(
                &ctx,
                bytes,
                Transport::Udp,
                &mut SmallRng::seed_from_u64(3),
                &mut general,
            );
            assert_eq!(fast, general, "{what}");
        }
        // Whichever path answers, `respond` stays well-formed.
        let outcome = r.respond(&ctx, bytes, Transport::Udp, &mut SmallRng::seed_from_u64(3), &mut fast);
        if outcome == Outcome::Reply {
            assert_eq!(&fast[..2], &bytes[..2], "{what}");
        }
    }
}

#[test]
fn a_service_check_naming_its_service_in_another_case_counts_for_it() {
    // The catalog matches a check to its service by folded ID (a check row keeps the case it was
    // registered with): a critical check written for `WEB1` takes `web1` out of the answers.
    let r = responder(|_| {});
    let mut d = dump();
    d.checks.push(check("N1", "WEB1", CheckStatus::Critical));
    let view = DnsView::build(&d);
    let m = ask_with(
        &r,
        &view,
        &query("web.service.consul.", RecordType::A),
        Transport::Udp,
        1,
    )
    .msg();
    assert_eq!(a_records(&m), [Ipv4Addr::new(10, 0, 0, 20)]);
}
