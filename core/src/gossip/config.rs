//! Gossip timings and limits. The defaults are memberlist's (`DefaultLANConfig`, `DefaultWANConfig`) so the
//! failure detector behaves like Consul's; `dev()` is the fast profile `-dev` uses.

use std::time::Duration;

/// Timing and limits of one gossip pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipTiming {
    /// A member probes one other member this often (scaled by the local health multiplier).
    pub probe_interval: Duration,
    /// How long a direct probe waits for its ack before asking `indirect_checks` members to probe too.
    pub probe_timeout: Duration,
    /// Members asked to probe indirectly after a missed ack.
    pub indirect_checks: usize,
    /// Piggybacked dissemination runs this often, to `gossip_nodes` random members.
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    /// Failed members still receive gossip this long, so a wrongly declared member learns it and refutes.
    pub gossip_to_the_dead: Duration,
    /// Suspicion timeout floor is `suspicion_mult × log10(n) × probe_interval`.
    pub suspicion_mult: u32,
    /// The timeout starts at `suspicion_max_timeout_mult ×` the floor and shrinks with confirmations.
    pub suspicion_max_timeout_mult: u32,
    /// A broadcast is sent `retransmit_mult × ceil(log10(n + 1))` times before it is dropped.
    pub retransmit_mult: u32,
    /// Full-state TCP sync with one random member this often (scaled up above 32 members).
    pub push_pull_interval: Duration,
    /// Lifeguard: missed nacks slow the local probe timings up to this multiplier.
    pub awareness_max_multiplier: u32,
    /// Lifeguard on (awareness + shrinking suspicion). Off gives classic SWIM with a fixed suspicion
    /// timeout, kept only for comparison in the benchmark.
    pub lifeguard: bool,
    /// Probe targets follow a schedule shared by all members, so every member is probed once per
    /// interval (see `schedule.rs`); off gives memberlist's independently shuffled round-robin.
    pub coordinated_probes: bool,
    /// memberlist's TCP fallback ping (`DisableTcpPings = false`): when a direct UDP probe gets no ack in
    /// `probe_timeout`, also ping the target over TCP alongside the indirect probes; an answer there
    /// spares the target a suspicion (UDP loss alone does not make it suspect).
    pub tcp_fallback: bool,
    /// A member with nothing queued to gossip that learns good news (a join, a refutation, new tags, a
    /// leave or a user event, its own or another's) gossips it at once, to `gossip_nodes` members,
    /// instead of holding it until its next `gossip_interval` tick (the ticks then resume a full
    /// interval later). A busy member (anything queued) keeps its ticks, and the news is sent the same
    /// number of times, only sooner. Suspicions and deaths keep the gossip pace, so a refutation outruns
    /// the suspicion it answers. Off gives memberlist's fixed ticks (each hop of a rumour then waits half
    /// an interval on average), kept only for comparison in the benchmark.
    pub eager_gossip: bool,
    /// Largest UDP packet we send (memberlist's `UDPBufferSize`).
    pub max_packet: usize,
    /// Bound on queued broadcasts; the most retransmitted are dropped first.
    pub max_broadcasts: usize,
    /// Bound on known members (a join flood cannot exhaust memory).
    pub max_members: usize,
    /// A failed member's name may be reused by another address after this long.
    pub dead_node_reclaim: Duration,
    /// Failed members are forgotten after this long (Consul: 72 h).
    pub reconnect_timeout: Duration,
    /// Left members are kept as tombstones this long (serf: 24 h).
    pub tombstone_timeout: Duration,
    pub reap_interval: Duration,
    /// serf's `ReconnectInterval`: this often, try a push-pull with one random failed member (with
    /// probability failed/alive), so the two sides of a healed partition find each other again after
    /// they stopped gossiping to each other.
    pub reconnect_interval: Duration,
    /// After a leave intent is first sent, wait this long for it to spread before reporting `LeaveDone`.
    pub leave_propagate_delay: Duration,
    /// User-event ids remembered for de-duplication.
    pub max_seen_events: usize,
    /// A joiner syncs once more with a random member this long after joining, to learn members that
    /// joined concurrently through other seeds (their broadcasts may have died out before anyone knew
    /// the joiner). Not in memberlist, which waits for the next periodic push-pull.
    pub join_sync_delay: Duration,
}

impl GossipTiming {
    /// memberlist's `DefaultLANConfig` (+ serf and Consul's reaping settings).
    pub fn lan() -> Self {
        GossipTiming {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead: Duration::from_secs(30),
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            awareness_max_multiplier: 8,
            lifeguard: true,
            coordinated_probes: true,
            tcp_fallback: true,
            eager_gossip: true,
            max_packet: 1400,
            max_broadcasts: 8192,
            max_members: 65_536,
            dead_node_reclaim: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(72 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            reap_interval: Duration::from_secs(15),
            reconnect_interval: Duration::from_secs(30),
            leave_propagate_delay: Duration::from_secs(1),
            max_seen_events: 1024,
            join_sync_delay: Duration::from_secs(2),
        }
    }

    /// memberlist's `DefaultWANConfig`.
    pub fn wan() -> Self {
        GossipTiming {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            suspicion_mult: 6,
            push_pull_interval: Duration::from_secs(60),
            ..Self::lan()
        }
    }

    /// Consul's `-dev` gossip timings.
    pub fn dev() -> Self {
        GossipTiming {
            probe_interval: Duration::from_millis(100),
            probe_timeout: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(100),
            suspicion_mult: 3,
            push_pull_interval: Duration::from_secs(5),
            gossip_to_the_dead: Duration::from_secs(5),
            dead_node_reclaim: Duration::from_secs(2),
            leave_propagate_delay: Duration::from_millis(300),
            join_sync_delay: Duration::from_millis(500),
            ..Self::lan()
        }
    }
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self::lan()
    }
}
