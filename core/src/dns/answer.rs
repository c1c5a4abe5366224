//! Building and encoding replies (see the module doc of `dns` for the contract).
use core::net::IpAddr;
use std::collections::BTreeSet;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use rand::seq::SliceRandom;

use super::name::{self, Lookup};
use super::view::{Addr, Instance, PtrTarget};
use super::{Context, DnsConfigError, Outcome, Responder, Transport};
use crate::state::CheckStatus;

/// A DNS message without EDNS0 fits 512 bytes on UDP.
pub(crate) const DEFAULT_UDP_SIZE: usize = 512;
/// The most a DNS message can hold (its length prefix on TCP is 16 bits).
pub(crate) const MAX_MESSAGE: usize = 65_535;
/// Consul's `maxUDPAnswerLimit`: `udp_answer_limit` is capped at this.
pub(crate) const MAX_UDP_ANSWER_LIMIT: usize = 8;
/// Consul's nameserver answers list at most this many servers.
const MAX_NAMESERVERS: usize = 3;
/// The service whose instances are this datacenter's servers (NS records).
const SERVERS_SERVICE: &str = "consul";

/// A zone we answer for: the domain or the alt domain.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    /// Lower-case labels, leftmost first.
    labels: Vec<Vec<u8>>,
    name: Name,
    /// 0 for the domain, 1 for the alt domain.
    index: usize,
}

impl Zone {
    pub(crate) fn new(domain: &str, index: usize) -> Result<Zone, DnsConfigError> {
        let bad = || DnsConfigError::BadDomain(domain.to_string());
        let mut name = Name::from_ascii(domain).map_err(|_| bad())?;
        name.set_fqdn(true);
        let labels: Vec<Vec<u8>> = name.iter().map(|l| l.to_ascii_lowercase()).collect();
        if labels.is_empty() {
            return Err(bad());
        }
        Ok(Zone {
            labels,
            name: name.to_lowercase(),
            index,
        })
    }

    /// Lower-case labels, leftmost first.
    pub(crate) fn labels(&self) -> &[Vec<u8>] {
        &self.labels
    }

    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The labels of `labels` left of this zone, if it ends with it.
    pub(crate) fn strip<'a, 'b>(&self, labels: &'b [&'a [u8]]) -> Option<&'b [&'a [u8]]> {
        let n = labels.len().checked_sub(self.labels.len())?;
        let tail = &labels[n..];
        tail.iter()
            .zip(&self.labels)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
            .then_some(&labels[..n])
    }

    /// `<labels>.<zone>`; `None` if a label is empty or too long.
    fn child<'l>(&self, labels: impl IntoIterator<Item = &'l [u8]>) -> Option<Name> {
        let mut all: Vec<&[u8]> = labels.into_iter().collect();
        all.extend(self.labels.iter().map(Vec::as_slice));
        if all.iter().any(|l| l.is_empty()) {
            return None;
        }
        Name::from_labels(all).ok()
    }
}

/// A header-only reply to `request` with `rcode` (used when the rest does not decode).
pub(crate) fn header_only(request: &[u8], rcode: ResponseCode, truncated: bool, out: &mut Vec<u8>) -> bool {
    if request.len() < 12 {
        return false;
    }
    let opcode = request[2] & 0x78;
    let rd = request[2] & 0x01;
    let tc = if truncated { 0x02 } else { 0 };
    out.extend_from_slice(&request[..2]);
    out.push(0x80 | opcode | tc | rd);
    out.push(rcode.low() & 0x0f);
    out.extend_from_slice(&[0; 8]);
    true
}

/// A reply being built.
struct Reply {
    msg: Message,
    /// Service answers: `udp_answer_limit` applies to them.
    service: bool,
}

impl Reply {
    fn rcode(&mut self, rcode: ResponseCode) {
        self.msg.metadata.response_code = rcode;
    }

    fn answer(&mut self, name: Name, ttl: u32, rdata: RData) {
        self.msg.answers.push(Record::from_rdata(name, ttl, rdata));
    }

    fn extra(&mut self, name: Name, ttl: u32, rdata: RData) {
        self.msg.additionals.push(Record::from_rdata(name, ttl, rdata));
    }
}

pub(crate) fn respond(
    r: &Responder,
    ctx: &Context<'_>,
    request: &[u8],
    transport: Transport,
    rng: &mut impl rand::RngCore,
    out: &mut Vec<u8>,
) -> Outcome {
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return Outcome::Drop;
    }
    let Ok(req) = Message::from_vec(request) else {
        header_only(request, ResponseCode::FormErr, false, out);
        return Outcome::Reply;
    };
    let mut msg = Message::response(req.id, req.op_code);
    msg.metadata.recursion_desired = req.recursion_desired;
    msg.metadata.recursion_available = r.config.recursion;
    let mut max_size = match transport {
        Transport::Udp => DEFAULT_UDP_SIZE,
        Transport::Tcp => MAX_MESSAGE,
    };
    if let Some(edns) = &req.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().max(DEFAULT_UDP_SIZE as u16));
        msg.edns = Some(ours);
        if transport == Transport::Udp {
            max_size = usize::from(edns.max_payload()).max(DEFAULT_UDP_SIZE);
        }
    }
    let mut reply = Reply { msg, service: false };
    if fill(r, ctx, &req, &mut reply, rng) == Step::Recurse {
        return Outcome::Recurse;
    }
    let udp_limit = (transport == Transport::Udp && max_size == DEFAULT_UDP_SIZE && reply.service)
        .then(|| r.config.udp_answer_limit.clamp(1, MAX_UDP_ANSWER_LIMIT));
    encode(request, reply.msg, udp_limit, max_size, r.config.enable_truncate, out);
    Outcome::Reply
}

#[derive(PartialEq, Eq)]
enum Step {
    Answered,
    Recurse,
}

/// Fill the reply for a decoded request, or say it must be forwarded.
fn fill(r: &Responder, ctx: &Context<'_>, req: &Message, reply: &mut Reply, rng: &mut impl rand::RngCore) -> Step {
    fill_local(r, ctx, req, reply, rng).unwrap_or(Step::Answered)
}

fn fill_local(
    r: &Responder,
    ctx: &Context<'_>,
    req: &Message,
    reply: &mut Reply,
    rng: &mut impl rand::RngCore,
) -> Option<Step> {
    if req.op_code != OpCode::Query {
        reply.msg.queries = req.queries.clone();
        reply.rcode(ResponseCode::NotImp);
        return None;
    }
    let [q] = req.queries.as_slice() else {
        reply.rcode(ResponseCode::FormErr);
        return None;
    };
    reply.msg.queries.push(q.clone());
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        reply.rcode(ResponseCode::BADVERS);
        return None;
    }
    let labels: Vec<&[u8]> = q.name().iter().collect();
    for zone in &r.zones {
        if let Some(rel) = zone.strip(&labels) {
            in_domain(r, ctx, q, rel, zone, reply, rng);
            return None;
        }
    }
    let arpa = |suffix: &[&[u8]]| {
        labels.len() >= suffix.len()
            && labels[labels.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    let reverse = if arpa(&[b"in-addr", b"arpa"]) {
        name::reverse_ip(&labels[..labels.len() - 2], false)
    } else if arpa(&[b"ip6", b"arpa"]) {
        name::reverse_ip(&labels[..labels.len() - 2], true)
    } else {
        None
    };
    let targets = reverse.map_or(&[][..], |ip| ctx.view.ptr(ip));
    if !targets.is_empty() {
        ptr(r, ctx, q, targets, reply);
        return None;
    }
    if r.config.recursion {
        return Some(Step::Recurse);
    }
    if arpa(&[b"arpa"]) {
        reply.msg.metadata.authoritative = true;
        reply.rcode(ResponseCode::NXDomain);
    } else {
        reply.rcode(ResponseCode::Refused);
    }
    None
}

fn in_domain(
    r: &Responder,
    ctx: &Context<'_>,
    q: &Query,
    rel: &[&[u8]],
    zone: &Zone,
    reply: &mut Reply,
    rng: &mut impl rand::RngCore,
) {
    if !r.config.allow_stale && !ctx.known_leader {
        return reply.rcode(ResponseCode::ServFail);
    }
    reply.msg.metadata.authoritative = true;
    match q.query_type() {
        RecordType::SOA => {
            reply.answer(zone.name.clone(), r.config.soa.min_ttl, soa(r, ctx, zone));
            let (ns, glue) = nameservers(r, ctx, zone, rng);
            reply.msg.authorities = ns;
            reply.msg.additionals = glue;
            return;
        }
        RecordType::NS => {
            let (ns, glue) = nameservers(r, ctx, zone, rng);
            reply.msg.answers = ns;
            reply.msg.additionals = glue;
            return;
        }
        RecordType::AXFR | RecordType::IXFR => return reply.rcode(ResponseCode::NotImp),
        _ => {}
    }
    match name::parse(rel, &r.config.datacenter) {
        Lookup::Service { service, tag } => service_lookup(r, ctx, q, zone, &service, tag.as_deref(), reply, rng),
        Lookup::Node(node) => node_lookup(r, ctx, q, zone, &node, reply),
        Lookup::Addr(ip) => {
            let rdata = match (ip, q.query_type()) {
                (IpAddr::V4(ip), RecordType::A | RecordType::ANY) => Some(RData::A(A(ip))),
                (IpAddr::V6(ip), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(ip))),
                _ => None,
            };
            if let Some(rdata) = rdata {
                reply.answer(q.name().clone(), 0, rdata);
            }
        }
        // The apex exists (it has the SOA): NODATA, never NXDOMAIN, which would deny the whole zone.
        Lookup::Apex => {}
        Lookup::PreparedQuery | Lookup::Invalid => reply.rcode(ResponseCode::NXDomain),
    }
    let rcode = reply.msg.metadata.response_code;
    if rcode == ResponseCode::NXDomain || (rcode == ResponseCode::NoError && reply.msg.answers.is_empty()) {
        reply.msg.authorities.push(Record::from_rdata(
            zone.name.clone(),
            r.config.soa.min_ttl,
            soa(r, ctx, zone),
        ));
    }
}

fn soa(r: &Responder, ctx: &Context<'_>, zone: &Zone) -> RData {
    let mname = zone.child([&b"ns"[..]]).unwrap_or_else(|| zone.name.clone());
    let rname = zone.child([&b"hostmaster"[..]]).unwrap_or_else(|| zone.name.clone());
    let s = r.config.soa;
    let i = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    RData::SOA(SOA::new(
        mname,
        rname,
        ctx.unix_time,
        i(s.refresh),
        i(s.retry),
        i(s.expire),
        s.min_ttl,
    ))
}

fn healthy(r: &Responder, inst: &Instance) -> bool {
    match inst.status {
        CheckStatus::Passing => true,
        CheckStatus::Warning => !r.config.only_passing,
        CheckStatus::Critical => false,
    }
}

/// `<node>.node.<dc>.<zone>`
fn node_target(r: &Responder, zone: &Zone, node: &str) -> Option<Name> {
    let labels = node
        .split('.')
        .map(str::as_bytes)
        .chain([&b"node"[..], r.config.datacenter.as_bytes()]);
    zone.child(labels)
}

/// The address records of `addr` named `name` for question type `qtype` (a CNAME for a host name).
fn addr_rdata(addr: &Addr, qtype: RecordType) -> Option<RData> {
    match (addr, qtype) {
        (Addr::V4(ip), RecordType::A | RecordType::ANY) => Some(RData::A(A(*ip))),
        (Addr::V6(ip), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*ip))),
        (Addr::Host(h), RecordType::A | RecordType::AAAA | RecordType::ANY | RecordType::CNAME) => {
            let mut target = Name::from_ascii(h).ok()?;
            target.set_fqdn(true);
            Some(RData::CNAME(CNAME(target)))
        }
        _ => None,
    }
}

/// Nameserver records: up to three servers (instances of `consul`), shuffled, with their A records.
fn nameservers(
    r: &Responder,
    ctx: &Context<'_>,
    zone: &Zone,
    rng: &mut impl rand::RngCore,
) -> (Vec<Record>, Vec<Record>) {
    let mut servers: Vec<&Instance> = ctx
        .view
        .instances(SERVERS_SERVICE)
        .iter()
        .filter(|i| healthy(r, i))
        .collect();
    servers.shuffle(rng);
    let (mut ns, mut glue) = (Vec::new(), Vec::new());
    let mut seen = BTreeSet::new();
    for inst in servers {
        let Some(node) = ctx.view.node(&inst.node) else {
            continue;
        };
        if !seen.insert(&inst.node) {
            continue;
        }
        let Some(target) = node_target(r, zone, &node.name) else {
            continue;
        };
        ns.push(Record::from_rdata(
            zone.name.clone(),
            r.config.node_ttl,
            RData::NS(NS(target.clone())),
        ));
        if let Some(rdata) = node.addr.as_ref().and_then(|a| addr_rdata(a, RecordType::ANY)) {
            glue.push(Record::from_rdata(target, r.config.node_ttl, rdata));
        }
        if ns.len() == MAX_NAMESERVERS {
            break;
        }
    }
    (ns, glue)
}

#[allow(clippy::too_many_arguments)]
fn service_lookup(
    r: &Responder,
    ctx: &Context<'_>,
    q: &Query,
    zone: &Zone,
    service: &str,
    tag: Option<&str>,
    reply: &mut Reply,
    rng: &mut impl rand::RngCore,
) {
    let mut found: Vec<&Instance> = ctx
        .view
        .instances(service)
        .iter()
        .filter(|i| healthy(r, i) && tag.is_none_or(|t| i.tags.iter().any(|have| have == t)))
        .collect();
    if found.is_empty() {
        return reply.rcode(ResponseCode::NXDomain);
    }
    found.shuffle(rng);
    reply.service = true;
    let ttl = r.config.service_ttl(service);
    if q.query_type() == RecordType::SRV {
        return srv_records(r, ctx, zone, q, &found, ttl, reply);
    }
    let limit = match r.config.a_record_limit {
        0 => usize::MAX,
        n => n,
    };
    let mut seen: BTreeSet<&Addr> = BTreeSet::new();
    for inst in found {
        let Some(addr) = &inst.addr else { continue };
        if reply.msg.answers.len() >= limit {
            break;
        }
        if !seen.insert(addr) {
            continue;
        }
        if let Some(rdata) = addr_rdata(addr, q.query_type()) {
            reply.answer(q.name().clone(), ttl, rdata);
        }
    }
}

fn srv_records(
    r: &Responder,
    ctx: &Context<'_>,
    zone: &Zone,
    q: &Query,
    found: &[&Instance],
    ttl: u32,
    reply: &mut Reply,
) {
    let mut seen = BTreeSet::new();
    let mut meta_done = BTreeSet::new();
    for inst in found {
        if !seen.insert((&inst.node, &inst.addr, inst.port)) {
            continue;
        }
        let Some(node) = ctx.view.node(&inst.node) else {
            continue;
        };
        let node_name = node_target(r, zone, &node.name);
        let target = match (&inst.addr, inst.own_addr) {
            (Some(Addr::Host(h)), true) => Name::from_ascii(h).ok().map(|mut n| {
                n.set_fqdn(true);
                n
            }),
            (Some(addr), true) => {
                let hex = hex_label(addr);
                zone.child([hex.as_bytes(), b"addr", r.config.datacenter.as_bytes()])
            }
            _ => node_name.clone(),
        };
        let Some(target) = target else { continue };
        let weight = match inst.status {
            CheckStatus::Warning => inst.weights.warning,
            _ => inst.weights.passing,
        };
        let weight = u16::try_from(weight).unwrap_or(u16::MAX);
        reply.answer(
            q.name().clone(),
            ttl,
            RData::SRV(SRV::new(1, weight, inst.port, target.clone())),
        );
        if let Some(rdata) = inst.addr.as_ref().and_then(|a| match a {
            Addr::Host(_) => None,
            ip => addr_rdata(ip, RecordType::ANY),
        }) {
            reply.extra(target, ttl, rdata);
        }
        if r.config.node_meta_txt && meta_done.insert(&inst.node) {
            if let Some(name) = node_name {
                for txt in &node.txt {
                    reply.extra(name.clone(), ttl, txt_rdata(txt));
                }
            }
        }
    }
}

/// The `<hex>` of a `<hex>.addr.` name: 8 hex digits for IPv4, 32 for IPv6.
fn hex_label(addr: &Addr) -> String {
    let bytes: Vec<u8> = match addr {
        Addr::V4(ip) => ip.octets().to_vec(),
        Addr::V6(ip) => ip.octets().to_vec(),
        Addr::Host(_) => Vec::new(),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A TXT record of one string, split into 255-byte character-strings as the wire format requires.
fn txt_rdata(txt: &str) -> RData {
    let mut parts = Vec::new();
    let mut rest = txt;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        parts.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    parts.push(rest.to_string());
    RData::TXT(TXT::new(parts))
}

fn node_lookup(r: &Responder, ctx: &Context<'_>, q: &Query, zone: &Zone, node: &str, reply: &mut Reply) {
    let Some(entry) = ctx.view.node(node) else {
        return reply.rcode(ResponseCode::NXDomain);
    };
    let _ = zone;
    let ttl = r.config.node_ttl;
    let qtype = q.query_type();
    if let Some(rdata) = entry.addr.as_ref().and_then(|a| addr_rdata(a, qtype)) {
        reply.answer(q.name().clone(), ttl, rdata);
    }
    let txt_answer = matches!(qtype, RecordType::TXT | RecordType::ANY);
    if txt_answer {
        for txt in &entry.txt {
            reply.answer(q.name().clone(), ttl, txt_rdata(txt));
        }
    } else if r.config.node_meta_txt && !reply.msg.answers.is_empty() {
        for txt in &entry.txt {
            reply.extra(q.name().clone(), ttl, txt_rdata(txt));
        }
    }
}

fn ptr(r: &Responder, ctx: &Context<'_>, q: &Query, targets: &[PtrTarget], reply: &mut Reply) {
    if !r.config.allow_stale && !ctx.known_leader {
        return reply.rcode(ResponseCode::ServFail);
    }
    reply.msg.metadata.authoritative = true;
    let zone = &r.zones[0];
    if !matches!(q.query_type(), RecordType::PTR | RecordType::ANY) {
        reply.msg.authorities.push(Record::from_rdata(
            zone.name.clone(),
            r.config.soa.min_ttl,
            soa(r, ctx, zone),
        ));
        return;
    }
    for target in targets {
        let (name, ttl) = match target {
            PtrTarget::Node(node) => (node_target(r, zone, node), r.config.node_ttl),
            PtrTarget::Service(svc) => (
                zone.child(
                    svc.split('.')
                        .map(str::as_bytes)
                        .chain([&b"service"[..], r.config.datacenter.as_bytes()]),
                ),
                r.config.service_ttl(&svc.to_ascii_lowercase()),
            ),
        };
        if let Some(name) = name {
            reply.answer(q.name().clone(), ttl, RData::PTR(PTR(name)));
        }
    }
}

/// Keep only the additional records that belong to a remaining answer (its name or its SRV target).
fn sync_extra(msg: &mut Message) {
    let mut wanted: Vec<&Name> = Vec::new();
    for rec in &msg.answers {
        wanted.push(&rec.name);
        if let RData::SRV(srv) = &rec.data {
            wanted.push(&srv.target);
        }
    }
    let wanted: Vec<Name> = wanted.into_iter().cloned().collect();
    msg.additionals.retain(|rec| wanted.contains(&rec.name));
}

/// Encode `msg` into `out` within `max_size`, cutting answers (and their additional records) if needed.
fn encode(
    request: &[u8],
    mut msg: Message,
    answer_limit: Option<usize>,
    max_size: usize,
    enable_truncate: bool,
    out: &mut Vec<u8>,
) {
    let total = msg.answers.len();
    if let Some(limit) = answer_limit {
        if msg.answers.len() > limit {
            msg.answers.truncate(limit);
            sync_extra(&mut msg);
        }
    }
    // Bounded: every round removes at least one record or ends.
    loop {
        out.clear();
        let mut encoder = BinEncoder::new(out);
        if msg.emit(&mut encoder).is_err() {
            out.clear();
            header_only(request, ResponseCode::ServFail, false, out);
            return;
        }
        if out.len() <= max_size {
            break;
        }
        if msg.answers.is_empty() {
            if msg.additionals.is_empty() && msg.authorities.is_empty() {
                out.clear();
                header_only(request, msg.metadata.response_code, true, out);
                return;
            }
            msg.additionals.clear();
            msg.authorities.clear();
            continue;
        }
        let keep = (msg.answers.len() * max_size / out.len()).min(msg.answers.len() - 1);
        msg.answers.truncate(keep);
        sync_extra(&mut msg);
    }
    if msg.answers.len() < total && enable_truncate && out.len() > 2 {
        out[2] |= 0x02;
    }
}
