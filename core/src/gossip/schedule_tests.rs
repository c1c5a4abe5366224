//! The coordinated probe schedule and the TCP fallback ping.

use super::schedule::round_offset;
use super::wire::*;
use super::*;
use std::collections::VecDeque;

const SEC: u64 = 1_000_000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 1, (i >> 8) as u8, i as u8], 8301))
}

fn machine(i: usize, timing: GossipTiming) -> Gossip {
    Gossip::new(
        GossipConfig {
            name: format!("m{i}"),
            addr: addr(i),
            tags: Tags::new(),
            seed: i as u64,
            timing,
        },
        Instant::ZERO,
    )
}

/// `n` members that all know each other, wired by a lossless zero-latency network.
struct Net {
    g: Vec<Gossip>,
    down: Vec<bool>,
    /// Every direct probe (relays' pings excluded): (time, prober, target).
    pings: Vec<(Instant, usize, usize)>,
    stream_pings: Vec<(usize, Effect)>,
}

impl Net {
    fn new(n: usize, timing: GossipTiming) -> Net {
        let mut g: Vec<Gossip> = (0..n).map(|i| machine(i, timing.clone())).collect();
        let mut all = g[0].local_state(false);
        for m in &g[1..] {
            all.members.extend(m.local_state(false).members);
        }
        for m in &mut g {
            m.handle(
                Instant::ZERO,
                Input::PushPullReply { state: all.clone() },
                &mut Vec::new(),
            );
            assert_eq!(m.num_alive(), n);
        }
        Net {
            g,
            down: vec![false; n],
            pings: Vec::new(),
            stream_pings: Vec::new(),
        }
    }

    fn index(&self, a: SocketAddr) -> usize {
        (0..self.g.len()).find(|&i| addr(i) == a).expect("known address")
    }

    /// Fire every timer due before `until`, in time order, delivering packets at once.
    fn run_until(&mut self, until: Instant) {
        loop {
            let next = (0..self.g.len())
                .filter(|&i| !self.down[i])
                .filter_map(|i| self.g[i].next_deadline().map(|t| (t, i)))
                .min();
            let Some((now, i)) = next.filter(|(t, _)| *t < until) else {
                return;
            };
            let mut out = Vec::new();
            self.g[i].handle(now, Input::Tick, &mut out);
            // (from, effect, sent by a timer): a timer's pings are direct probes, a relay's answer a packet.
            let mut queue: VecDeque<(usize, Effect, bool)> = out.into_iter().map(|e| (i, e, true)).collect();
            while let Some((from, effect, direct)) = queue.pop_front() {
                match effect {
                    Effect::Packet { to, bytes } => {
                        let to = self.index(to);
                        let msgs = decode_packet(&bytes).unwrap();
                        if direct && matches!(msgs[0], Message::Ping { .. }) {
                            self.pings.push((now, from, to));
                        }
                        if self.down[to] {
                            continue;
                        }
                        let mut out = Vec::new();
                        let input = Input::Packet {
                            from: addr(from),
                            bytes,
                        };
                        self.g[to].handle(now, input, &mut out);
                        queue.extend(out.into_iter().map(|e| (to, e, false)));
                    }
                    e @ Effect::StreamPing { .. } => self.stream_pings.push((from, e)),
                    _ => {}
                }
            }
        }
    }

    /// How often each member was probed in round `r` (pings sent in `[r, r + 1)` seconds).
    fn probed_in_round(&self, r: u64) -> Vec<usize> {
        let mut count = vec![0; self.g.len()];
        for &(t, _, to) in &self.pings {
            if t.as_micros() / SEC == r {
                count[to] += 1;
            }
        }
        count
    }
}

#[test]
fn with_consistent_views_every_member_is_probed_exactly_once_per_round() {
    let n = 40;
    let mut net = Net::new(n, GossipTiming::lan());
    net.run_until(Instant(12 * SEC));
    assert!(
        net.pings.iter().all(|&(_, from, to)| from != to),
        "a member probed itself"
    );
    for r in 2..12 {
        assert_eq!(net.probed_in_round(r), vec![1; n], "round {r}");
    }
    // Different rounds use different offsets, so a member's probers differ (independent confirmations).
    let probers_of_0: BTreeSet<usize> = net.pings.iter().filter(|p| p.2 == 0).map(|p| p.1).collect();
    assert!(probers_of_0.len() >= 8, "{probers_of_0:?}");
    assert!(net.g.iter().all(|g| g.health_score() == 0));
}

#[test]
fn the_shuffled_order_leaves_members_unprobed_in_some_rounds() {
    // The behaviour the schedule replaces (memberlist's): independent shuffles, Poisson arrivals.
    let n = 40;
    let timing = GossipTiming {
        coordinated_probes: false,
        ..GossipTiming::lan()
    };
    let mut net = Net::new(n, timing);
    net.run_until(Instant(12 * SEC));
    let unprobed: usize = (2..12)
        .map(|r| net.probed_in_round(r).iter().filter(|&&c| c == 0).count())
        .sum();
    // ~e^-1 of 400 member-rounds.
    assert!(unprobed > 80, "{unprobed}");
}

#[test]
fn a_crashed_member_is_probed_within_a_round_and_by_a_new_prober_every_round() {
    let n = 30;
    let mut net = Net::new(n, GossipTiming::lan());
    net.run_until(Instant(3 * SEC + SEC / 3));
    net.down[7] = true;
    let crash = Instant(3 * SEC + SEC / 3);
    net.run_until(Instant(9 * SEC));
    let probes: Vec<(Instant, usize)> = net
        .pings
        .iter()
        .filter(|p| p.2 == 7 && p.0 >= crash)
        .map(|p| (p.0, p.1))
        .collect();
    let first = probes.first().expect("probed after the crash").0;
    assert!(first.saturating_since(crash) <= Duration::from_secs(1), "{probes:?}");
    // Rounds 4..9 each probe it once, each time from another member.
    let probers: BTreeSet<usize> = probes.iter().filter(|p| p.0 >= Instant(4 * SEC)).map(|p| p.1).collect();
    assert_eq!(probers.len(), 5, "{probes:?}");
    // Every one of them suspects it, and its relays' nacks arrived in time: the prober's own health
    // score is untouched (the relays could not reach m7 either, so the fault is not the prober's).
    for &p in &probers {
        assert_eq!(net.g[p].members[&"m7".to_string()].state, MemberState::Suspect, "m{p}");
        assert_eq!(net.g[p].health_score(), 0, "m{p}");
    }
}

#[test]
fn after_a_member_is_declared_failed_everywhere_the_rest_are_again_probed_once_per_round() {
    let n = 30;
    let mut net = Net::new(n, GossipTiming::lan());
    // Mid-run, after every member armed its next probe with m3 still in the ring.
    net.run_until(Instant(3 * SEC + SEC / 2));
    net.down[3] = true;
    for g in &mut net.g {
        let incarnation = g.member("m3").unwrap().incarnation;
        let msg = encode_message(&Message::Dead {
            incarnation,
            name: "m3".into(),
            from: "x".into(),
        });
        let bytes = assemble_packet([msg.as_slice()]);
        g.handle(
            Instant(3 * SEC + SEC / 2),
            Input::Packet { from: addr(200), bytes },
            &mut Vec::new(),
        );
    }
    net.run_until(Instant(9 * SEC));
    let mut expected = vec![1; n];
    expected[3] = 0;
    // From the first round that starts after the change (round 3 is mixed: before and after).
    for r in 4..9 {
        assert_eq!(net.probed_in_round(r), expected, "round {r}");
    }
    // ... and at its own fixed phase of the round, whoever probes it (so a crash is never more than one
    // interval away from the next probe).
    for i in 0..n {
        let phases: BTreeSet<u64> = net
            .pings
            .iter()
            .filter(|p| p.2 == i && p.0 >= Instant(4 * SEC))
            .map(|p| p.0.as_micros() % SEC)
            .collect();
        assert!(phases.len() <= 1, "m{i} probed at phases {phases:?}");
    }
}

#[test]
fn unsynchronised_clocks_degrade_to_random_probing_not_to_silence() {
    let n = 30;
    let mut net = Net::new(n, GossipTiming::lan());
    for (i, g) in net.g.iter_mut().enumerate() {
        // Clocks up to 10 hours apart, to the microsecond.
        g.set_clock_offset(Duration::from_micros((i as u64 * 7_777_777_777) % (36_000 * SEC)));
    }
    net.run_until(Instant(40 * SEC));
    assert!(
        net.pings.iter().all(|&(_, from, to)| from != to),
        "a member probed itself"
    );
    // Every member still sends one probe per second, and every member gets probed.
    for i in 0..n {
        let sent = net.pings.iter().filter(|p| p.1 == i && p.0 >= Instant(2 * SEC)).count();
        assert!((36..=40).contains(&sent), "m{i} sent {sent}");
        let got = net.pings.iter().filter(|p| p.2 == i).count();
        assert!(got >= 15, "m{i} probed {got} times");
    }
}

#[test]
fn the_round_offset_is_never_zero_and_covers_the_ring() {
    for n in [2usize, 3, 7, 1000] {
        let seen: BTreeSet<usize> = (0..20 * n as u64).map(|r| round_offset(r, n)).collect();
        assert!(seen.iter().all(|&o| (1..n).contains(&o)), "n={n}");
        assert_eq!(seen.len(), n - 1, "n={n}");
    }
}

/// Member 0 probes member 1, which never answers over UDP; returns the TCP ping a emitted, if any.
fn failed_udp_probe(timing: GossipTiming) -> (Net, Option<(SocketAddr, Vec<u8>, Instant)>) {
    let mut net = Net::new(2, timing);
    net.down[1] = true;
    let mut t = Instant::ZERO;
    while net.stream_pings.is_empty() && t < Instant(4 * SEC) {
        t = t + Duration::from_millis(10);
        net.run_until(t);
    }
    let ping = net.stream_pings.iter().find_map(|(from, e)| match e {
        Effect::StreamPing { to, bytes, deadline } if *from == 0 => Some((*to, bytes.clone(), *deadline)),
        _ => None,
    });
    (net, ping)
}

#[test]
fn a_udp_probe_failure_answered_over_tcp_does_not_raise_a_suspicion() {
    let (net, ping) = failed_udp_probe(GossipTiming::lan());
    let (to, bytes, deadline) = ping.expect("a TCP fallback ping");
    assert_eq!(to, addr(1));
    // Sent at probe timeout, it may take until the end of the probe interval.
    let probe = net.pings.iter().find(|p| p.1 == 0).unwrap().0;
    assert_eq!(deadline, probe + Duration::from_secs(1));
    // m1's runtime answers it (and only m1 may: it names its target).
    assert_eq!(stream_ping_reply("m0", &bytes), None);
    let reply = stream_ping_reply("m1", &bytes).expect("m1 answers");

    // Answered: no suspicion at the end of the interval, the rescue counted, our health unharmed.
    let mut g = net.g.into_iter().next().unwrap();
    let mut out = Vec::new();
    g.handle(
        deadline - Duration::from_millis(100),
        Input::StreamReply { bytes: reply },
        &mut out,
    );
    while g.next_deadline().is_some_and(|t| t <= deadline) {
        let t = g.next_deadline().unwrap();
        g.handle(t, Input::Tick, &mut out);
    }
    assert_eq!(g.members[&"m1".to_string()].state, MemberState::Alive);
    assert_eq!(g.stats().probes_rescued_by_tcp, 1);
    assert_eq!(g.stats().probes_failed, 0);
}

#[test]
fn a_udp_probe_failure_without_a_tcp_answer_raises_a_suspicion() {
    let (net, ping) = failed_udp_probe(GossipTiming::lan());
    let (_, _, deadline) = ping.expect("a TCP fallback ping");
    let mut g = net.g.into_iter().next().unwrap();
    while g.next_deadline().is_some_and(|t| t <= deadline) {
        let t = g.next_deadline().unwrap();
        g.handle(t, Input::Tick, &mut Vec::new());
    }
    assert_eq!(g.members[&"m1".to_string()].state, MemberState::Suspect);
    assert_eq!(g.stats().probes_failed, 1);
}

#[test]
fn without_the_tcp_fallback_no_stream_ping_is_sent() {
    let timing = GossipTiming {
        tcp_fallback: false,
        ..GossipTiming::lan()
    };
    let (net, ping) = failed_udp_probe(timing);
    assert!(ping.is_none());
    assert!(net.g[0].stats().probes_failed >= 1);
}
