//! Coordinated probe schedule (`GossipTiming::coordinated_probes`).
//!
//! memberlist has every member walk its own shuffled list, one target per probe interval. The cluster
//! then probes any one member as a Poisson stream of rate ~1 per interval, at any size: after a crash
//! the wait for the first probe is exponential (p99 ≈ 4.6 intervals), and that wait is most of the
//! detection tail (the rest is Lifeguard's fixed suspicion floor).
//!
//! Here every member derives its target from a permutation all members share: the live members (us
//! included) sorted by a fixed hash of their name form a ring; probe rounds are numbered by a clock all
//! members share (`round = (now + clock offset) / probe_interval`), and in round `r` the member at ring
//! position `p` probes position `(p + offset(r)) mod n`, with `offset(r)` in `1..n` drawn from a hash of
//! `r`. As `p ↦ p + offset` is a bijection, with consistent views and clocks every live member is probed
//! by exactly one member in every round: a crashed member's first failed probe starts at most one
//! interval after the crash, and a different prober (a new independent confirmation) follows in each
//! later round. Every member still sends one probe per interval, and each member is still probed about
//! once per interval, so the load and a slow member's exposure are what they were.
//!
//! A member is probed at a fixed phase of every round (a function of its name), whoever probes it: the
//! wait from a crash to the next probe is uniform over one interval (≤ 1 s, against memberlist's
//! exponential wait with p99 ≈ 4.6 s), and, as the phases of all members are spread over the interval,
//! the probes are too (as memberlist's jittered start spreads them). A prober fires at the phase of its
//! target of the round; a late timer keeps the round it was armed for. Lifeguard's awareness stretches
//! the interval by skipping whole rounds.
//!
//! Degradation: members whose views differ (during joins and failures) or whose clocks disagree compute
//! unrelated targets, which is a random choice — the Poisson behaviour of the shuffled list, no worse.
//! The ring is rebuilt only when the live set changed.

use super::{Gossip, MemberState};
use crate::time::Instant;
use std::time::Duration;

pub(super) enum DueProbe {
    /// memberlist's order (`coordinated_probes` off).
    Shuffled,
    /// The probe of this shared round.
    Round(u64),
    /// Not yet: the timer was re-armed for later in the round.
    Later,
}

/// The shared ring: live members (us included) sorted by `ring_hash(name)`, then name.
#[derive(Default)]
pub(super) struct ProbeRing {
    members: Vec<(u64, String)>,
    /// The `Live::changes` the ring was built at (`None`: never built).
    built_at: Option<u64>,
}

impl Gossip {
    /// Wall-clock alignment of probe rounds: `offset` is added to `now` to get the time all members
    /// share (the runtime passes Unix time minus its monotonic clock). Without it, rounds are keyed to
    /// the runtime's own epoch: still correct, but only coordinated with members using the same epoch.
    pub fn set_clock_offset(&mut self, offset: Duration) {
        self.clock_offset = offset.as_micros().min(u64::MAX as u128) as u64;
        if self.timing.coordinated_probes {
            // Re-align the next probe to the shared rounds.
            self.timers.retain(|(_, t)| *t != super::Timer::Probe);
            self.probe_at = None;
            self.arm_probe(self.now, self.shared_round(self.now) + 1);
        }
    }

    fn interval_us(&self) -> u64 {
        (self.timing.probe_interval.as_micros() as u64).max(1)
    }

    /// The round `now` falls in on the shared clock.
    fn shared_round(&self, now: Instant) -> u64 {
        now.as_micros().wrapping_add(self.clock_offset) / self.interval_us()
    }

    /// When `target` is probed in `round`: at its own phase within the round (a fixed function of its
    /// name), so whoever probes it, a member is probed at the same point of every round and the wait
    /// from a crash to its next probe is at most one interval. The probes of all members still spread
    /// evenly over the interval.
    fn probe_time(&self, round: u64, target: &str) -> Instant {
        let i = self.interval_us();
        let phase = ((ring_hash(target) as u128 * i as u128) >> 64) as u64;
        Instant::from_micros((round * i + phase).wrapping_sub(self.clock_offset))
    }

    /// Arm the probe timer for `round` (or the first round still ahead of `now`).
    pub(super) fn arm_probe(&mut self, now: Instant, round: u64) {
        let mut round = round;
        loop {
            let target = self.scheduled_target(round).unwrap_or_else(|| self.name.clone());
            let at = self.probe_time(round, &target);
            if at > now {
                self.probe_round = round;
                self.probe_at = Some(at);
                self.schedule(at, super::Timer::Probe);
                return;
            }
            round = round.max(self.shared_round(now)) + 1;
        }
    }

    /// After an input: if the live set changed, re-arm the probe timer for the new ring soon (changes
    /// are coalesced, at most one re-arm per tenth of an interval: a join burst must not rebuild the
    /// ring on every packet).
    pub(super) fn note_ring_change(&mut self, now: Instant) {
        if !self.timing.coordinated_probes || self.ring_seen == self.live.changes || self.ring_check.is_some() {
            return;
        }
        let at = now.max(self.last_ring_check + self.timing.probe_interval / 10);
        self.ring_check = Some(at);
        self.schedule(at, super::Timer::RingCheck);
    }

    /// Re-arm the probe timer for the current ring: the probe of the armed round goes to the round's
    /// target under the new ring, at that target's phase (or, if that has passed, the next round's).
    /// Without it, the first round after every membership change would probe members at the old
    /// targets' phases: a member could then wait up to two intervals for its next probe.
    pub(super) fn ring_check(&mut self, now: Instant) {
        self.ring_check = None;
        self.last_ring_check = now;
        self.ring_seen = self.live.changes;
        if let Some(at) = self.probe_at.take() {
            self.timers.remove(&(at, super::Timer::Probe));
            self.arm_probe(now, self.probe_round);
        }
    }

    /// The probe timer fired: which probe is due. With the coordinated schedule the timer was armed for
    /// the phase of the round's target as the ring was then; if the ring changed since and the target now
    /// is one whose phase is still ahead, the timer is re-armed for it (`Later`): otherwise, in the round
    /// after every membership change, members would be probed at the old targets' phases, some twice
    /// and some not at all.
    pub(super) fn due_probe(&mut self, now: Instant) -> DueProbe {
        if !self.timing.coordinated_probes {
            return DueProbe::Shuffled;
        }
        let round = self.probe_round;
        if let Some(target) = self.scheduled_target(round) {
            let at = self.probe_time(round, &target);
            if at > now {
                self.probe_at = Some(at);
                self.schedule(at, super::Timer::Probe);
                return DueProbe::Later;
            }
        }
        DueProbe::Round(round)
    }

    /// Arm the probe timer after the probe of `round` (`None`: the shuffled order). `interval` is the
    /// awareness-scaled probe interval: the coordinated schedule skips whole rounds.
    pub(super) fn schedule_next_probe(&mut self, now: Instant, interval: Duration, round: Option<u64>) {
        match round {
            None => self.schedule(now + interval, super::Timer::Probe),
            Some(round) => {
                let rounds = (interval.as_micros() as u64).div_ceil(self.interval_us()).max(1);
                self.arm_probe(now, round + rounds);
            }
        }
    }

    /// The target of our probe in round `round`, from the shared ring; `None` if we are alone.
    pub(super) fn scheduled_target(&mut self, round: u64) -> Option<String> {
        self.rebuild_ring();
        let ring = &self.ring.members;
        let n = ring.len();
        if n < 2 {
            return None;
        }
        let me = (ring_hash(&self.name), self.name.clone());
        let p = ring.binary_search(&me).ok()?;
        let target = &ring[(p + round_offset(round, n)) % n].1;
        Some(target.clone())
    }

    fn rebuild_ring(&mut self) {
        if self.ring.built_at == Some(self.live.changes) {
            return;
        }
        let mut ring: Vec<(u64, String)> = self
            .members
            .iter()
            .filter(|(_, e)| matches!(e.state, MemberState::Alive | MemberState::Suspect))
            .map(|(name, _)| (ring_hash(name), name.clone()))
            .collect();
        ring.sort_unstable();
        self.ring = ProbeRing {
            members: ring,
            built_at: Some(self.live.changes),
        };
    }
}

/// A hash every member computes alike (FNV-1a, then a 64-bit finaliser so similar names spread out).
pub(super) fn ring_hash(name: &str) -> u64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    mix(h)
}

/// The ring distance probed in `round`, in `1..n` (never 0: nobody probes itself).
pub(super) fn round_offset(round: u64, n: usize) -> usize {
    debug_assert!(n >= 2);
    1 + (mix(round ^ 0x9e37_79b9_7f4a_7c15) % (n as u64 - 1)) as usize
}

/// splitmix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
