//! Consul's DNS name grammar, for the labels left of the domain (`dns.go` `dispatch`): scan from the right
//! for a query-type label; at most one label (the datacenter) may sit between it and the domain.
//!
//! - `[<tag>.]<service>.service[.<dc>]` (a tag may itself contain dots: every label before the service)
//! - `_<service>._<tag>[.service][.<dc>]` (RFC 2782; `_tcp`/`_udp` mean "no tag filter")
//! - `<node>.node[.<dc>]` (a node name may contain dots)
//! - `<hex>.addr[.<dc>]`, `<id-or-name>.query[.<dc>]`
//!
//! Everything is lower-cased here: lookups are case-insensitive.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Service {
        service: String,
        tag: Option<String>,
    },
    Node(String),
    Addr(IpAddr),
    /// A prepared query: none exist in concord yet, so every one is unknown (NXDOMAIN, as Consul answers
    /// for a query it does not know).
    PreparedQuery,
    /// Not a valid name under the domain, a datacenter we do not serve, or a mesh form concord does not
    /// implement (`connect`, `virtual`, `ingress`): NXDOMAIN.
    Invalid,
    /// The domain itself.
    Apex,
}

fn lower(label: &[u8]) -> String {
    String::from_utf8_lossy(label).to_ascii_lowercase()
}

fn join(labels: &[&[u8]]) -> String {
    let mut out = String::new();
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&lower(l));
    }
    out
}

/// `labels`: the question's labels left of the domain, leftmost first. `dc`: the datacenter served.
pub(crate) fn parse(labels: &[&[u8]], dc: &str) -> Lookup {
    if labels.is_empty() {
        return Lookup::Apex;
    }
    let mut datacenter: Option<&[u8]> = None;
    for i in (0..labels.len()).rev() {
        let label = labels[i];
        let kind = ["service", "node", "addr", "query", "connect", "virtual", "ingress"]
            .into_iter()
            .find(|k| label.eq_ignore_ascii_case(k.as_bytes()));
        let Some(kind) = kind else {
            if datacenter.is_some() || i == 0 {
                return Lookup::Invalid;
            }
            datacenter = Some(label);
            if i == 1 && rfc2782(labels[0], labels[1]) {
                // `_svc._tag.<domain>` has no datacenter: the label just taken is the tag.
                return service_rfc2782(labels[0], labels[1]);
            }
            if i == 2 && rfc2782(labels[0], labels[1]) {
                return if dc_matches(datacenter, dc) {
                    service_rfc2782(labels[0], labels[1])
                } else {
                    Lookup::Invalid
                };
            }
            continue;
        };
        if !dc_matches(datacenter, dc) {
            return Lookup::Invalid;
        }
        let parts = &labels[..i];
        return match kind {
            "service" => match parts {
                [] => Lookup::Invalid,
                [a, b] if rfc2782(a, b) => service_rfc2782(a, b),
                [rest @ .., service] => Lookup::Service {
                    service: lower(service),
                    tag: (!rest.is_empty()).then(|| join(rest)),
                },
            },
            "node" if !parts.is_empty() => Lookup::Node(join(parts)),
            "addr" => match parts {
                [hex] => hex_ip(hex).map_or(Lookup::Invalid, Lookup::Addr),
                _ => Lookup::Invalid,
            },
            "query" if !parts.is_empty() => Lookup::PreparedQuery,
            _ => Lookup::Invalid,
        };
    }
    Lookup::Invalid
}

fn dc_matches(given: Option<&[u8]>, dc: &str) -> bool {
    given.is_none_or(|g| g.eq_ignore_ascii_case(dc.as_bytes()))
}

fn rfc2782(a: &[u8], b: &[u8]) -> bool {
    a.len() > 1 && b.len() > 1 && a[0] == b'_' && b[0] == b'_'
}

fn service_rfc2782(a: &[u8], b: &[u8]) -> Lookup {
    let tag = lower(&b[1..]);
    Lookup::Service {
        service: lower(&a[1..]),
        // `_tcp` (and `_udp`) is the protocol, not a tag: no filter.
        tag: (tag != "tcp" && tag != "udp").then_some(tag),
    }
}

/// `7f000001` → 127.0.0.1; 32 hex digits → an IPv6 address.
pub(crate) fn hex_ip(hex: &[u8]) -> Option<IpAddr> {
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut bytes = [0u8; 16];
    match hex.len() {
        8 | 32 => {}
        _ => return None,
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        bytes[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(if hex.len() == 8 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    })
}

/// The address of a reverse name (labels left of `in-addr.arpa` / `ip6.arpa`, leftmost first).
pub(crate) fn reverse_ip(labels: &[&[u8]], v6: bool) -> Option<IpAddr> {
    if v6 {
        if labels.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, label) in labels.iter().rev().enumerate() {
            let [c] = label else { return None };
            let d = (*c as char).to_digit(16)? as u8;
            bytes[i / 2] |= if i % 2 == 0 { d << 4 } else { d };
        }
        return Some(IpAddr::V6(Ipv6Addr::from(bytes)));
    }
    if labels.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (i, label) in labels.iter().rev().enumerate() {
        let s = std::str::from_utf8(label).ok()?;
        if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        octets[i] = s.parse().ok()?;
    }
    Some(IpAddr::V4(Ipv4Addr::from(octets)))
}
