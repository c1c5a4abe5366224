//! Consul's DNS name grammar, for the labels left of the domain (`dns.go` `dispatch`): scan from the right
//! for a query-type label; at most one label (the datacenter) may sit between it and the domain.
//!
//! - `[<tag>.]<service>.service[.<dc>]` (a tag may itself contain dots: every label before the service)
//! - `_<service>._<tag>[.service][.<dc>]` (RFC 2782; `_tcp`/`_udp` mean "no tag filter")
//! - `<node>.node[.<dc>]` (a node name may contain dots)
//! - `<hex>.addr[.<dc>]`, `<id-or-name>.query[.<dc>]`
//!
//! Everything is lower-cased here: lookups are case-insensitive.
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// A [`Lookup`] borrowing the question's labels: what the allocation-free answer path works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LookupRef<'a> {
    /// `service` is the raw label (not lower-cased).
    Service {
        service: &'a [u8],
        tag: Option<TagRef<'a>>,
    },
    /// The node name's labels, raw.
    Node(&'a [&'a [u8]]),
    Addr(IpAddr),
    PreparedQuery,
    Invalid,
    Apex,
}

/// A tag as asked: the labels before the service (joined with dots), or the `<tag>` of `_<tag>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TagRef<'a> {
    Labels(&'a [&'a [u8]]),
    One(&'a [u8]),
}

impl TagRef<'_> {
    fn to_lower(self) -> String {
        match self {
            TagRef::Labels(labels) => join(labels),
            TagRef::One(label) => lower(label),
        }
    }
}

/// `labels`: the question's labels left of the domain, leftmost first. `dc`: the datacenter served.
pub(crate) fn parse(labels: &[&[u8]], dc: &str) -> Lookup {
    match parse_ref(labels, dc) {
        LookupRef::Service { service, tag } => Lookup::Service {
            service: lower(service),
            tag: tag.map(TagRef::to_lower),
        },
        LookupRef::Node(parts) => Lookup::Node(join(parts)),
        LookupRef::Addr(ip) => Lookup::Addr(ip),
        LookupRef::PreparedQuery => Lookup::PreparedQuery,
        LookupRef::Invalid => Lookup::Invalid,
        LookupRef::Apex => Lookup::Apex,
    }
}

/// [`parse`] without copying: the same grammar, the labels left as they were asked.
pub(crate) fn parse_ref<'a>(labels: &'a [&'a [u8]], dc: &str) -> LookupRef<'a> {
    if labels.is_empty() {
        return LookupRef::Apex;
    }
    let mut datacenter: Option<&[u8]> = None;
    for i in (0..labels.len()).rev() {
        let label = labels[i];
        let kind = KINDS.into_iter().find(|k| label.eq_ignore_ascii_case(k.as_bytes()));
        let Some(kind) = kind else {
            if datacenter.is_some() || i == 0 {
                return LookupRef::Invalid;
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
                    LookupRef::Invalid
                };
            }
            continue;
        };
        if !dc_matches(datacenter, dc) {
            return LookupRef::Invalid;
        }
        let parts = &labels[..i];
        return match kind {
            "service" => match parts {
                [] => LookupRef::Invalid,
                [a, b] if rfc2782(a, b) => service_rfc2782(a, b),
                [rest @ .., service] => LookupRef::Service {
                    service,
                    tag: (!rest.is_empty()).then_some(TagRef::Labels(rest)),
                },
            },
            "node" if !parts.is_empty() => LookupRef::Node(parts),
            "addr" => match parts {
                [hex] => hex_ip(hex).map_or(LookupRef::Invalid, LookupRef::Addr),
                _ => LookupRef::Invalid,
            },
            "query" if !parts.is_empty() => LookupRef::PreparedQuery,
            _ => LookupRef::Invalid,
        };
    }
    LookupRef::Invalid
}

/// The query-type labels of the grammar.
pub(crate) const KINDS: [&str; 7] = ["service", "node", "addr", "query", "connect", "virtual", "ingress"];

fn dc_matches(given: Option<&[u8]>, dc: &str) -> bool {
    given.is_none_or(|g| g.eq_ignore_ascii_case(dc.as_bytes()))
}

fn rfc2782(a: &[u8], b: &[u8]) -> bool {
    a.len() > 1 && b.len() > 1 && a[0] == b'_' && b[0] == b'_'
}

fn service_rfc2782<'a>(a: &'a [u8], b: &'a [u8]) -> LookupRef<'a> {
    let tag = &b[1..];
    LookupRef::Service {
        service: &a[1..],
        // `_tcp` (and `_udp`) is the protocol, not a tag: no filter.
        tag: (!tag.eq_ignore_ascii_case(b"tcp") && !tag.eq_ignore_ascii_case(b"udp")).then_some(TagRef::One(tag)),
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
