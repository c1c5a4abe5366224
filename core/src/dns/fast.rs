//! The allocation-free answer path for the common questions: a standard query for one name under the
//! domain, type A, AAAA or SRV, naming a service (with or without a tag, RFC 2782 too) that has healthy
//! instances or a node with an address, over UDP or TCP, with or without a plain EDNS0 OPT record.
//!
//! Contract: [`respond`] either answers exactly as the general path (`answer.rs`, hickory-proto's
//! `Message`) would — **the same bytes**, given the same RNG state — or returns `None` and leaves the
//! question to the general path. To that end it parses the request strictly (anything unusual is left to
//! the general path), shuffles the same list the general path shuffles (so the same RNG draws give the
//! same order), cuts answers by the same rules, and encodes with the same name compression as hickory's
//! `BinEncoder` (`Wire` below). The unit tests and the `dns_packet` fuzz target compare the two paths byte
//! for byte.
//!
//! It gives up (`None`) when the reply would not fit, on host-name addresses (CNAMEs), on NXDOMAIN/NODATA,
//! and on services with more than [`MAX_FOUND`] healthy instances. Giving up after the shuffle is fine:
//! the general path shuffles again with fresh draws.
use std::sync::Arc;

use rand::seq::SliceRandom;

use super::answer::{Zone, DEFAULT_UDP_SIZE, MAX_MESSAGE, MAX_UDP_ANSWER_LIMIT};
use super::name::{self, LookupRef, TagRef};
use super::view::{Addr, Instance, NodeEntry};
use super::{Context, Outcome, Responder, Transport};
use crate::state::CheckStatus;

/// Most labels in a question the fast path takes (names under the domain have a handful).
const MAX_LABELS: usize = 32;
/// Most healthy instances the fast path answers for (more go the general path).
const MAX_FOUND: usize = 64;
/// Names longer than this (wire bytes, root included) are left to the general path, which knows
/// hickory's exact limit.
const MAX_NAME: usize = 250;

const TYPE_A: u16 = 1;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// hickory's `BinEncoder` limits: compression candidates kept, names compressed per message, and the
/// highest offset a candidate may end before.
const COMPRESSION_CANDIDATES: usize = 64;
const COMPRESSED_NAMES: usize = 120;
const POINTER_LIMIT: usize = 0x3FFF;

/// The parts of a request the fast path reads.
struct Request<'a> {
    id: [u8; 2],
    rd: bool,
    /// Labels of the question name, leftmost first.
    labels: [&'a [u8]; MAX_LABELS],
    nlabels: usize,
    qtype: u16,
    /// The EDNS0 payload size the client advertised, if it sent an OPT record.
    payload: Option<u16>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// A standard query with one question in class IN, an uncompressed ASCII name, nothing in the answer and
/// authority sections and at most a plain OPT record (version 0, root name, options hickory keeps
/// opaque) in the additional one, ending exactly at the packet's end. Anything else: `None`.
fn parse(p: &[u8]) -> Option<Request<'_>> {
    if p.len() < 12 || p[2] & 0x80 != 0 || p[2] & 0x78 != 0 {
        return None;
    }
    if u16_at(p, 4)? != 1 || u16_at(p, 6)? != 0 || u16_at(p, 8)? != 0 {
        return None;
    }
    let additional = u16_at(p, 10)?;
    let mut req = Request {
        id: [p[0], p[1]],
        rd: p[2] & 0x01 != 0,
        labels: [&[]; MAX_LABELS],
        nlabels: 0,
        qtype: 0,
        payload: None,
    };
    let mut at = 12;
    loop {
        let len = usize::from(*p.get(at)?);
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 || req.nlabels == MAX_LABELS {
            return None;
        }
        let label = p.get(at + 1..at + 1 + len)?;
        if !label.is_ascii() {
            return None;
        }
        req.labels[req.nlabels] = label;
        req.nlabels += 1;
        at += 1 + len;
        if at - 12 >= MAX_NAME {
            return None;
        }
    }
    req.qtype = u16_at(p, at)?;
    if u16_at(p, at + 2)? != CLASS_IN {
        return None;
    }
    at += 4;
    match additional {
        0 => {}
        1 => {
            // OPT: root name, type, payload (class), extended rcode, version, flags (ttl), rdlength.
            if *p.get(at)? != 0 || u16_at(p, at + 1)? != TYPE_OPT || *p.get(at + 6)? != 0 {
                return None;
            }
            req.payload = Some(u16_at(p, at + 3)?.max(DEFAULT_UDP_SIZE as u16));
            let rdlen = usize::from(u16_at(p, at + 9)?);
            at += 11;
            let end = at + rdlen;
            while at < end {
                let code = u16_at(p, at)?;
                let len = usize::from(u16_at(p, at + 2)?);
                // NSID (3), Subnet (8) and DAU (5) have contents hickory checks; others it keeps as bytes.
                if matches!(code, 3 | 5 | 8) {
                    return None;
                }
                at += 4 + len;
            }
            if at != end {
                return None;
            }
        }
        _ => return None,
    }
    (at == p.len()).then_some(req)
}

/// A name in an answer: the question's, a node's `<node>.node.<dc>.<zone>` or a service address's
/// `<hex>.addr.<dc>.<zone>`.
#[derive(Clone, Copy)]
enum Target<'v> {
    Node(&'v NodeEntry),
    Hex(&'v Addr),
}

impl Target<'_> {
    fn same(self, other: Target<'_>) -> bool {
        match (self, other) {
            (Target::Node(a), Target::Node(b)) => std::ptr::eq(a, b),
            (Target::Hex(a), Target::Hex(b)) => a == b,
            _ => false,
        }
    }
}

pub(crate) fn respond(
    r: &Responder,
    ctx: &Context<'_>,
    request: &[u8],
    transport: Transport,
    rng: &mut impl rand::RngCore,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if !r.fast {
        return None;
    }
    let req = parse(request)?;
    if !r.config.allow_stale && !ctx.known_leader {
        return None;
    }
    if !matches!(req.qtype, TYPE_A | TYPE_AAAA | TYPE_SRV) {
        return None;
    }
    let labels = &req.labels[..req.nlabels];
    let (zone, rel) = r.zones.iter().find_map(|z| Some((z, z.strip(labels)?)))?;
    let max_size = match (transport, req.payload) {
        (Transport::Udp, Some(p)) => usize::from(p),
        (Transport::Udp, None) => DEFAULT_UDP_SIZE,
        (Transport::Tcp, _) => MAX_MESSAGE,
    };
    let fit = Fit {
        max_size,
        udp_limit: (transport == Transport::Udp && max_size == DEFAULT_UDP_SIZE)
            .then(|| r.config.udp_answer_limit.clamp(1, MAX_UDP_ANSWER_LIMIT)),
    };
    let mut w = Wire::start(out, &req, r.config.recursion);
    let done = match name::parse_ref(rel, &r.config.datacenter) {
        LookupRef::Service { service, tag } => service_answer(r, ctx, &req, zone, service, tag, fit, &mut w, rng),
        LookupRef::Node(parts) => node_answer(r, ctx, &req, parts, fit, &mut w),
        _ => None,
    };
    if done.is_none() {
        out.clear();
    }
    done.map(|()| Outcome::Reply)
}

/// How much of the reply may go out.
#[derive(Clone, Copy)]
struct Fit {
    max_size: usize,
    /// `udp_answer_limit`, when it applies (UDP without a larger EDNS0 payload, service answers).
    udp_limit: Option<usize>,
}

/// Copy `label` lower-cased into `buf` at `at`; the new end, or `None` if it does not fit.
fn push_lower(buf: &mut [u8], at: usize, label: &[u8]) -> Option<usize> {
    let end = at + label.len();
    let dst = buf.get_mut(at..end)?;
    for (d, s) in dst.iter_mut().zip(label) {
        *d = s.to_ascii_lowercase();
    }
    Some(end)
}

fn healthy(r: &Responder, inst: &Instance) -> bool {
    match inst.status {
        CheckStatus::Passing => true,
        CheckStatus::Warning => !r.config.only_passing,
        CheckStatus::Critical => false,
    }
}

/// `have` (a lower-case tag) equals the tag asked, compared case-insensitively.
fn tag_eq(have: &[u8], tag: TagRef<'_>) -> bool {
    let eq = |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| *x == y.to_ascii_lowercase());
    match tag {
        TagRef::One(label) => eq(have, label),
        TagRef::Labels(labels) => {
            let mut rest = have;
            for (i, label) in labels.iter().enumerate() {
                if i > 0 {
                    let [b'.', after @ ..] = rest else { return false };
                    rest = after;
                }
                if rest.len() < label.len() || !eq(&rest[..label.len()], label) {
                    return false;
                }
                rest = &rest[label.len()..];
            }
            rest.is_empty()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn service_answer(
    r: &Responder,
    ctx: &Context<'_>,
    req: &Request<'_>,
    zone: &Zone,
    service: &[u8],
    tag: Option<TagRef<'_>>,
    fit: Fit,
    w: &mut Wire<'_>,
    rng: &mut impl rand::RngCore,
) -> Option<()> {
    let mut key = [0u8; 64];
    let n = push_lower(&mut key, 0, service)?;
    let key = std::str::from_utf8(&key[..n]).ok()?;
    let instances = ctx.view.instances(key);
    let mut found = [0u16; MAX_FOUND];
    let mut nfound = 0;
    for (i, inst) in instances.iter().enumerate() {
        if healthy(r, inst) && tag.is_none_or(|t| inst.tags.iter().any(|have| tag_eq(have.as_bytes(), t))) {
            if nfound == MAX_FOUND {
                return None;
            }
            found[nfound] = u16::try_from(i).ok()?;
            nfound += 1;
        }
    }
    if nfound == 0 {
        return None;
    }
    let found = &mut found[..nfound];
    found.shuffle(rng);
    let ttl = r.config.service_ttl(key);
    if req.qtype == TYPE_SRV {
        return srv_answer(r, req, zone, instances, found, ttl, fit, w);
    }
    let limit = match r.config.a_record_limit {
        0 => usize::MAX,
        n => n,
    };
    let mut seen: [Option<&Addr>; MAX_FOUND] = [None; MAX_FOUND];
    let mut nseen = 0;
    let mut answers: [Option<&Addr>; MAX_FOUND] = [None; MAX_FOUND];
    let mut nanswers = 0;
    for &i in found.iter() {
        let inst = &instances[usize::from(i)];
        let Some(addr) = &inst.addr else { continue };
        if nanswers >= limit {
            break;
        }
        if seen[..nseen].contains(&Some(addr)) {
            continue;
        }
        seen[nseen] = Some(addr);
        nseen += 1;
        match (addr, req.qtype) {
            (Addr::V4(_), TYPE_A) | (Addr::V6(_), TYPE_AAAA) => {
                answers[nanswers] = Some(addr);
                nanswers += 1;
            }
            (Addr::Host(_), _) => return None,
            _ => {}
        }
    }
    if nanswers == 0 {
        return None;
    }
    let keep = fit.udp_limit.map_or(nanswers, |l| l.min(nanswers));
    for addr in answers[..keep].iter().flatten() {
        w.record_qname(req, ttl);
        w.ip(addr);
    }
    w.finish(keep, 0, req, keep < nanswers && r.config.enable_truncate, fit.max_size)
}

/// Where an SRV answer points: the node, or the service's own address (`<hex>.addr.`).
fn srv_target(inst: &Instance) -> Target<'_> {
    match (&inst.addr, inst.own_addr) {
        (Some(addr), true) => Target::Hex(addr),
        _ => Target::Node(&inst.entry),
    }
}

#[allow(clippy::too_many_arguments)]
fn srv_answer(
    r: &Responder,
    req: &Request<'_>,
    zone: &Zone,
    instances: &[Instance],
    found: &[u16],
    ttl: u32,
    fit: Fit,
    w: &mut Wire<'_>,
) -> Option<()> {
    // One answer per (node, address, port), in shuffled order.
    let mut taken: [u16; MAX_FOUND] = [0; MAX_FOUND];
    let mut ntaken = 0;
    for &i in found {
        let inst = &instances[usize::from(i)];
        let dup = taken[..ntaken].iter().any(|&j| {
            let o = &instances[usize::from(j)];
            Arc::ptr_eq(&o.entry, &inst.entry) && o.addr == inst.addr && o.port == inst.port
        });
        if dup {
            continue;
        }
        if inst.own_addr && matches!(inst.addr, Some(Addr::Host(_))) {
            return None;
        }
        taken[ntaken] = i;
        ntaken += 1;
    }
    let taken = &taken[..ntaken];
    let keep = fit.udp_limit.map_or(ntaken, |l| l.min(ntaken));
    for &i in &taken[..keep] {
        let inst = &instances[usize::from(i)];
        let weight = match inst.status {
            CheckStatus::Warning => inst.weights.warning,
            _ => inst.weights.passing,
        };
        w.record_qname(req, ttl);
        w.srv(
            u16::try_from(weight).unwrap_or(u16::MAX),
            inst.port,
            srv_target(inst),
            zone,
            r,
        )?;
    }
    // The additional records of every answer, cut ones included, kept when their name is the target of
    // an answer that stayed (the general path's `sync_extra`).
    let wanted = |name: Target<'_>| {
        keep == ntaken
            || taken[..keep]
                .iter()
                .any(|&j| srv_target(&instances[usize::from(j)]).same(name))
    };
    let mut extras = 0;
    for (n, &i) in taken.iter().enumerate() {
        let inst = &instances[usize::from(i)];
        let target = srv_target(inst);
        if let Some(addr @ (Addr::V4(_) | Addr::V6(_))) = &inst.addr {
            if wanted(target) {
                let rtype = if matches!(addr, Addr::V4(_)) { TYPE_A } else { TYPE_AAAA };
                w.record_target(target, zone, r, rtype, ttl)?;
                w.ip(addr);
                extras += 1;
            }
        }
        let node = Target::Node(&inst.entry);
        let first_of_node = !taken[..n]
            .iter()
            .any(|&j| Arc::ptr_eq(&instances[usize::from(j)].entry, &inst.entry));
        if r.config.node_meta_txt && first_of_node && wanted(node) {
            for txt in &inst.entry.txt {
                w.record_target(node, zone, r, TYPE_TXT, ttl)?;
                w.txt(txt);
                extras += 1;
            }
        }
    }
    w.finish(
        keep,
        extras,
        req,
        keep < ntaken && r.config.enable_truncate,
        fit.max_size,
    )
}

fn node_answer(
    r: &Responder,
    ctx: &Context<'_>,
    req: &Request<'_>,
    parts: &[&[u8]],
    fit: Fit,
    w: &mut Wire<'_>,
) -> Option<()> {
    let mut key = [0u8; 256];
    let mut n = 0;
    for (i, label) in parts.iter().enumerate() {
        if i > 0 {
            *key.get_mut(n)? = b'.';
            n += 1;
        }
        n = push_lower(&mut key, n, label)?;
    }
    let key = std::str::from_utf8(&key[..n]).ok()?;
    let entry = ctx.view.node(key)?;
    let ttl = r.config.node_ttl;
    match (entry.addr.as_ref()?, req.qtype) {
        (addr @ Addr::V4(_), TYPE_A) | (addr @ Addr::V6(_), TYPE_AAAA) => {
            w.record_qname(req, ttl);
            w.ip(addr);
        }
        _ => return None,
    }
    let mut extras = 0;
    if r.config.node_meta_txt {
        for txt in &entry.txt {
            w.record_qname_typed(req, TYPE_TXT, ttl);
            w.txt(txt);
            extras += 1;
        }
    }
    w.finish(1, extras, req, false, fit.max_size)
}

/// The reply being written: the same bytes hickory's `BinEncoder` writes for the same message, name
/// compression included (every suffix of every name written is a candidate; a name is replaced from its
/// first label whose suffix was written before; SRV targets are written whole but remembered; at most
/// [`COMPRESSION_CANDIDATES`] candidates ending before [`POINTER_LIMIT`], [`COMPRESSED_NAMES`] names).
struct Wire<'o> {
    out: &'o mut Vec<u8>,
    candidates: [u16; COMPRESSION_CANDIDATES],
    ncandidates: usize,
    compressed: usize,
    /// Offset of the record's RDLENGTH being written.
    rdlen_at: usize,
}

impl<'o> Wire<'o> {
    /// Header (counts filled in by [`Wire::finish`]) and question.
    fn start(out: &'o mut Vec<u8>, req: &Request<'_>, recursion: bool) -> Wire<'o> {
        out.clear();
        out.extend_from_slice(&req.id);
        out.push(0x80 | 0x04 | u8::from(req.rd));
        out.push(if recursion { 0x80 } else { 0 });
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        let mut w = Wire {
            out,
            candidates: [0; COMPRESSION_CANDIDATES],
            ncandidates: 0,
            compressed: 0,
            rdlen_at: 0,
        };
        w.name(req.labels[..req.nlabels].iter().copied(), true);
        w.out.extend_from_slice(&req.qtype.to_be_bytes());
        w.out.extend_from_slice(&CLASS_IN.to_be_bytes());
        w
    }

    /// Write a name from its labels (all valid: 1..=63 bytes, the whole within 255).
    fn name<'l>(&mut self, labels: impl Iterator<Item = &'l [u8]>, compress: bool) {
        let begin = self.out.len();
        for label in labels {
            self.out.push(label.len() as u8);
            self.out.extend_from_slice(label);
        }
        self.compress_from(begin, compress);
    }

    /// Write a name given as pieces of wire-format labels (valid, no root, the whole within 255).
    fn name_wire(&mut self, parts: &[&[u8]], compress: bool) {
        let begin = self.out.len();
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.compress_from(begin, compress);
    }

    /// The labels from `begin` to the end were just written: replace the longest suffix written before
    /// by a pointer (if compressing), remember the others, and end the name.
    fn compress_from(&mut self, begin: usize, compress: bool) {
        let end = self.out.len();
        let compress = compress && self.compressed < COMPRESSED_NAMES;
        if compress {
            self.compressed += 1;
        }
        let mut start = begin;
        while start < end {
            if compress {
                if let Some(at) = self.candidate(start, end) {
                    self.out.truncate(start);
                    self.out.extend_from_slice(&(0xC000 | at).to_be_bytes());
                    return;
                }
            }
            if end < POINTER_LIMIT && self.ncandidates < COMPRESSION_CANDIDATES {
                self.candidates[self.ncandidates] = start as u16;
                self.ncandidates += 1;
            }
            start += 1 + usize::from(self.out[start]);
        }
        self.out.push(0);
    }

    /// A remembered name position whose labels (pointers followed) are exactly `out[start..end]`.
    fn candidate(&self, start: usize, end: usize) -> Option<u16> {
        let out = &self.out[..];
        let suffix = &out[start..end];
        self.candidates[..self.ncandidates].iter().copied().find(|&at| {
            let mut pos = usize::from(at);
            let mut i = 0;
            // Bounded: every step consumes a label of the suffix or follows a pointer backwards.
            for _ in 0..=256 {
                // A candidate of the name being written ends where the buffer does (no root yet).
                let Some(&len) = out.get(pos).filter(|_| pos < end) else {
                    return i == suffix.len();
                };
                if len >= 0xC0 {
                    let Some(&low) = out.get(pos + 1) else { return false };
                    pos = usize::from(len & 0x3F) << 8 | usize::from(low);
                    continue;
                }
                if len == 0 {
                    return i == suffix.len();
                }
                let l = 1 + usize::from(len);
                if suffix.get(i) != Some(&len) || suffix.get(i..i + l) != out.get(pos..pos + l) {
                    return false;
                }
                i += l;
                pos += l;
            }
            false
        })
    }

    fn record_head(&mut self, rtype: u16, ttl: u32) {
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.rdlen_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
    }

    fn rdata_done(&mut self) {
        let len = (self.out.len() - self.rdlen_at - 2) as u16;
        self.out[self.rdlen_at..self.rdlen_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    /// A record named as the question, of the question's type.
    fn record_qname(&mut self, req: &Request<'_>, ttl: u32) {
        self.record_qname_typed(req, req.qtype, ttl);
    }

    fn record_qname_typed(&mut self, req: &Request<'_>, rtype: u16, ttl: u32) {
        if self.compressed < COMPRESSED_NAMES {
            // What `name` would write: the question name (at least one label) was the first name
            // written, at offset 12, and is always remembered there, so the whole name matches it at
            // once and nothing new is remembered.
            self.compressed += 1;
            self.out.extend_from_slice(&[0xC0, 12]);
        } else {
            self.name(req.labels[..req.nlabels].iter().copied(), true);
        }
        self.record_head(rtype, ttl);
    }

    fn record_target(&mut self, target: Target<'_>, zone: &Zone, r: &Responder, rtype: u16, ttl: u32) -> Option<()> {
        self.target(target, zone, r, true)?;
        self.record_head(rtype, ttl);
        Some(())
    }

    fn ip(&mut self, addr: &Addr) {
        match addr {
            Addr::V4(ip) => self.out.extend_from_slice(&ip.octets()),
            Addr::V6(ip) => self.out.extend_from_slice(&ip.octets()),
            Addr::Host(_) => {}
        }
        self.rdata_done();
    }

    fn srv(&mut self, weight: u16, port: u16, target: Target<'_>, zone: &Zone, r: &Responder) -> Option<()> {
        self.out.extend_from_slice(&1u16.to_be_bytes());
        self.out.extend_from_slice(&weight.to_be_bytes());
        self.out.extend_from_slice(&port.to_be_bytes());
        // hickory writes SRV targets uncompressed (RFC 2782) but remembers them.
        self.target(target, zone, r, false)?;
        self.rdata_done();
        Some(())
    }

    /// One TXT record's data: the string in 255-byte character-strings, cut at char boundaries.
    fn txt(&mut self, txt: &str) {
        let mut rest = txt;
        while rest.len() > 255 {
            let mut cut = 255;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.out.push(cut as u8);
            self.out.extend_from_slice(&rest.as_bytes()[..cut]);
            rest = &rest[cut..];
        }
        self.out.push(rest.len() as u8);
        self.out.extend_from_slice(rest.as_bytes());
        self.rdata_done();
    }

    /// `<node>.node.<dc>.<zone>` or `<hex>.addr.<dc>.<zone>`; `None` if not a valid name.
    fn target(&mut self, target: Target<'_>, zone: &Zone, r: &Responder, compress: bool) -> Option<()> {
        let mut hex = [0u8; 33];
        let (first, kind): (&[u8], &[u8]) = match target {
            Target::Node(node) => (node.wire.as_deref()?, b"\x04node"),
            Target::Hex(addr) => {
                let bytes: &[u8] = match addr {
                    Addr::V4(ip) => &ip.octets(),
                    Addr::V6(ip) => &ip.octets(),
                    Addr::Host(_) => return None,
                };
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                hex[0] = (bytes.len() * 2) as u8;
                for (i, b) in bytes.iter().enumerate() {
                    hex[1 + 2 * i] = DIGITS[usize::from(b >> 4)];
                    hex[2 + 2 * i] = DIGITS[usize::from(b & 0xF)];
                }
                (&hex[..1 + bytes.len() * 2], b"\x04addr")
            }
        };
        let suffix = &r.fast_suffix[zone.index()];
        if first.len() + kind.len() + suffix.len() + 1 > MAX_NAME {
            return None;
        }
        self.name_wire(&[first, kind, suffix], compress);
        Some(())
    }

    /// Counts, the TC bit, the OPT record; `None` if the reply is over `max_size`.
    fn finish(
        &mut self,
        answers: usize,
        extras: usize,
        req: &Request<'_>,
        truncated: bool,
        max_size: usize,
    ) -> Option<()> {
        if let Some(payload) = req.payload {
            self.out.push(0);
            self.out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            self.out.extend_from_slice(&payload.to_be_bytes());
            self.out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        let extras = extras + usize::from(req.payload.is_some());
        if self.out.len() > max_size {
            return None;
        }
        self.out[6..8].copy_from_slice(&u16::try_from(answers).ok()?.to_be_bytes());
        self.out[10..12].copy_from_slice(&u16::try_from(extras).ok()?.to_be_bytes());
        if truncated {
            self.out[2] |= 0x02;
        }
        Some(())
    }
}

/// Whether the fast path can serve a configuration: the datacenter must be one plain label that is not
/// a query-type word (so a target name can never read as a question name).
pub(crate) fn config_ok(datacenter: &str) -> bool {
    let dc = datacenter.as_bytes();
    !dc.is_empty()
        && dc.len() <= 63
        && dc.is_ascii()
        && !dc.contains(&b'.')
        && !name::KINDS.iter().any(|k| dc.eq_ignore_ascii_case(k.as_bytes()))
}

/// `<dc>.<zone>` as wire-format labels without the root (see [`config_ok`] for when it is used).
pub(crate) fn suffix(datacenter: &str, zone: &Zone) -> Vec<u8> {
    let mut out = Vec::new();
    for label in std::iter::once(datacenter.as_bytes()).chain(zone.labels().iter().map(Vec::as_slice)) {
        out.push(label.len().min(255) as u8);
        out.extend_from_slice(label);
    }
    out
}
