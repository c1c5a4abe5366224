//! The DNS interface's logic: a question (a raw packet) in, an answer (a raw packet) out, over a
//! [`DnsView`] of the catalog. No sockets, no clock (the SOA serial's time is passed in), no ambient
//! randomness (answers are shuffled with the RNG the caller hands in). Packets are decoded and encoded with
//! hickory-proto.
//!
//! Contract of [`Responder::respond`]:
//! - It never panics, whatever the bytes. A packet too short for a header, or one that is itself a
//!   response (QR set), is dropped ([`Outcome::Drop`]); any other packet that does not decode gets FORMERR
//!   with the request's ID.
//! - Names under the domain (or the alt domain) are answered here, case-insensitively, as Consul answers
//!   them (`dns.go`): NXDOMAIN for a name that does not exist (SOA in the authority section), NODATA
//!   (NOERROR, no answers, SOA) for a name that exists without records of the asked type. Reverse names
//!   (`in-addr.arpa`, `ip6.arpa`) are answered from node and service addresses. Anything else is
//!   [`Outcome::Recurse`] when recursors are configured, else REFUSED.
//! - Over UDP a reply never exceeds 512 bytes, or the EDNS0 payload size the client advertised; without
//!   EDNS0, service answers are also capped at `udp_answer_limit` records. When answers are cut the TC bit
//!   is set (unless `enable_truncate` is off — Consul's own default — which cuts silently), so a resolver
//!   retries over TCP and gets them all. Over TCP a reply is cut only at the 64 KiB message limit.
//!
//! The common questions (A/AAAA/SRV for a service or a node) take an allocation-free path (`fast.rs`) that
//! answers byte for byte as the general hickory path would, or hands the question over to it.
mod answer;
mod fast;
mod name;
#[cfg(test)]
mod tests;
mod view;

use std::collections::BTreeMap;

pub use view::{Addr, DnsView, Instance, NodeEntry, PtrTarget};

/// The `dns_config` settings and names that shape answers. TTLs in seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Fully qualified, e.g. `consul.`.
    pub domain: String,
    pub alt_domain: Option<String>,
    /// The datacenter this agent serves (the only one concord knows).
    pub datacenter: String,
    /// `allow_stale` (default true): answer from this server's state even without a leader.
    pub allow_stale: bool,
    pub node_ttl: u32,
    /// `service_ttl`: exact service names, `prefix*` wildcards and `*`.
    pub service_ttl: BTreeMap<String, u32>,
    /// `udp_answer_limit` (default 3): most service answers in a UDP reply to a client without EDNS0.
    pub udp_answer_limit: usize,
    /// `a_record_limit` (default 0 = none): most A/AAAA answers for a service.
    pub a_record_limit: usize,
    /// `only_passing`: leave out instances with a warning check too (critical ones always are).
    pub only_passing: bool,
    /// Set TC when answers were cut (concord's default: true; Consul's: false).
    pub enable_truncate: bool,
    /// `enable_additional_node_meta_txt` (default true): node meta as TXT in the additional section.
    pub node_meta_txt: bool,
    /// Recursors are configured: names outside the domain are forwarded, and replies set RA.
    pub recursion: bool,
    pub soa: SoaConfig,
}

/// `dns_config.soa`: Consul's defaults are refresh 3600, retry 600, expire 86400, min_ttl 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoaConfig {
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub min_ttl: u32,
}

impl Default for SoaConfig {
    fn default() -> Self {
        SoaConfig {
            refresh: 3600,
            retry: 600,
            expire: 86400,
            min_ttl: 0,
        }
    }
}

impl Default for DnsConfig {
    /// Consul's defaults, except `enable_truncate` (see the module doc).
    fn default() -> Self {
        DnsConfig {
            domain: "consul.".into(),
            alt_domain: None,
            datacenter: "dc1".into(),
            allow_stale: true,
            node_ttl: 0,
            service_ttl: BTreeMap::new(),
            udp_answer_limit: 3,
            a_record_limit: 0,
            only_passing: false,
            enable_truncate: true,
            node_meta_txt: true,
            recursion: false,
            soa: SoaConfig::default(),
        }
    }
}

impl DnsConfig {
    /// The TTL of a service's records: its exact entry, else the longest matching `prefix*`, else `*`.
    pub fn service_ttl(&self, service: &str) -> u32 {
        if let Some(ttl) = self.service_ttl.get(service) {
            return *ttl;
        }
        self.service_ttl
            .iter()
            .filter_map(|(k, ttl)| Some((k.strip_suffix('*')?, ttl)))
            .filter(|(prefix, _)| service.starts_with(prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(0, |(_, ttl)| *ttl)
    }
}

/// How a query arrived: UDP replies are size-limited and may be truncated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send the bytes written to `out`.
    Reply,
    /// The name is outside our zones: forward the request as it is to the recursors (and answer
    /// [`servfail`] if none answers).
    Recurse,
    /// Send nothing (too short to answer, or not a query).
    Drop,
}

/// What the runtime knows at the time of the query.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub view: &'a DnsView,
    /// Whether this server knows a leader (used only when stale reads are not allowed).
    pub known_leader: bool,
    /// Seconds since the Unix epoch: the SOA serial, as Consul sets it.
    pub unix_time: u32,
}

/// Why a configuration cannot serve DNS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsConfigError {
    #[error("invalid DNS domain {0:?}: use a name such as consul.")]
    BadDomain(String),
}

/// Answers DNS packets for one agent's configuration.
#[derive(Clone, Debug)]
pub struct Responder {
    config: DnsConfig,
    zones: Vec<answer::Zone>,
    /// The allocation-free path may answer (see `fast.rs`).
    fast: bool,
    /// Per zone, `<dc>.<zone>` as wire-format labels (no root), for that path's target names.
    fast_suffix: Vec<Vec<u8>>,
}

impl Responder {
    pub fn new(config: DnsConfig) -> Result<Responder, DnsConfigError> {
        let mut zones = vec![answer::Zone::new(&config.domain, 0)?];
        if let Some(alt) = &config.alt_domain {
            zones.push(answer::Zone::new(alt, 1)?);
        }
        let fast = fast::config_ok(&config.datacenter);
        let fast_suffix = zones.iter().map(|z| fast::suffix(&config.datacenter, z)).collect();
        Ok(Responder {
            config,
            zones,
            fast,
            fast_suffix,
        })
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Answer `request` into `out` (cleared first). See the module doc for the contract.
    pub fn respond(
        &self,
        ctx: &Context<'_>,
        request: &[u8],
        transport: Transport,
        rng: &mut impl rand::RngCore,
        out: &mut Vec<u8>,
    ) -> Outcome {
        match self.respond_fast(ctx, request, transport, rng, out) {
            Some(outcome) => outcome,
            None => self.respond_general(ctx, request, transport, rng, out),
        }
    }

    /// [`Responder::respond`] through the general path only (hickory-proto's `Message`): what the
    /// allocation-free path is checked against, byte for byte.
    #[doc(hidden)]
    pub fn respond_general(
        &self,
        ctx: &Context<'_>,
        request: &[u8],
        transport: Transport,
        rng: &mut impl rand::RngCore,
        out: &mut Vec<u8>,
    ) -> Outcome {
        out.clear();
        answer::respond(self, ctx, request, transport, rng, out)
    }

    /// The allocation-free path alone: `None` when it leaves the request to the general path.
    #[doc(hidden)]
    pub fn respond_fast(
        &self,
        ctx: &Context<'_>,
        request: &[u8],
        transport: Transport,
        rng: &mut impl rand::RngCore,
        out: &mut Vec<u8>,
    ) -> Option<Outcome> {
        out.clear();
        fast::respond(self, ctx, request, transport, rng, out)
    }
}

/// SERVFAIL for `request` (when recursion failed). False (and `out` empty) if the request has no header.
pub fn servfail(request: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    answer::header_only(request, hickory_proto::op::ResponseCode::ServFail, false, out)
}
