//! Gossip membership over a simulated lossy network: convergence, failure detection without false
//! positives (a slow member is not declared failed), leave vs fail, force-leave, refutation, user events,
//! determinism. The 1,000-member measurement is `bench_1000_members` (ignored; run with `--ignored`).

mod gossip_harness;

use concord_core::gossip::{GossipTiming, Input, MemberStatus};
use gossip_harness::{name, quantile, Cluster, Net};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

/// `n` members joining `gap` apart through one of the first three (the "servers" a `-retry-join` names);
/// then run until converged.
fn formed(seed: u64, n: usize, timing: GossipTiming, net: Net, gap: Duration) -> Cluster {
    let mut c = Cluster::new(seed, timing, net);
    c.spawn();
    for i in 1..n {
        c.spawn();
        let via = (seed as usize + i) % i.min(3);
        c.join(i, via);
        c.run_for(gap);
    }
    let t = c.run_until(Duration::from_secs(60), 50 * MS, Cluster::converged);
    assert!(t.is_some(), "seed {seed}: {n} members did not converge within 60 s");
    c
}

#[test]
fn fifty_members_converge_without_false_positives() {
    for seed in 1..=3 {
        let c = formed(seed, 50, GossipTiming::lan(), Net::default(), 20 * MS);
        assert_eq!(c.false_positives(), 0, "seed {seed}");
        assert!(c.max_packet_seen <= 1400, "packet of {} bytes", c.max_packet_seen);
    }
}

#[test]
fn crashed_member_fails_slow_member_stays_alive_under_loss() {
    for (seed, loss) in [(11, 0.0), (12, 0.10), (13, 0.10)] {
        let net = Net { loss, ..Net::default() };
        let mut c = formed(seed, 50, GossipTiming::lan(), net, 20 * MS);
        c.members[7].slow = Some(Duration::from_millis(400));
        c.crash(3);
        let t0 = c.now;
        let done = c.run_until(Duration::from_secs(60), 100 * MS, |c| {
            c.all_see(&name(3), MemberStatus::Failed)
        });
        let t = done.unwrap_or_else(|| panic!("seed {seed}: crash not detected by everyone within 60 s"));
        assert!(
            t.saturating_since(t0) >= Duration::from_secs(5),
            "detected implausibly fast"
        );
        c.run_for(Duration::from_secs(30));
        assert_eq!(c.false_positives(), 0, "seed {seed} loss {loss}: {:?}", c.seen);
        assert!(
            c.all_see(&name(7), MemberStatus::Alive),
            "seed {seed}: slow member not alive everywhere"
        );
    }
}

#[test]
fn leave_is_left_not_failed() {
    let mut c = formed(21, 20, GossipTiming::lan(), Net::default(), 20 * MS);
    c.input(5, Input::Leave);
    assert_eq!(
        c.members[5].gossip.member(&name(5)).map(|m| m.status),
        Some(MemberStatus::Leaving)
    );
    c.run_for(Duration::from_secs(2));
    assert_eq!(
        c.members[5].gossip.member(&name(5)).map(|m| m.status),
        Some(MemberStatus::Left)
    );
    c.crash(5); // the process exits after LeaveDone
    c.run_until(Duration::from_secs(10), 100 * MS, |c| {
        c.all_see(&name(5), MemberStatus::Left)
    })
    .expect("leave spread");
    c.run_for(Duration::from_secs(40));
    assert!(
        c.all_see(&name(5), MemberStatus::Left),
        "a left member must not turn failed"
    );
    assert_eq!(c.seen.iter().filter(|s| s.status == MemberStatus::Failed).count(), 0);
}

#[test]
fn force_leave_moves_failed_to_left_and_prune_forgets() {
    let mut c = formed(31, 20, GossipTiming::dev(), Net::default(), 20 * MS);
    c.crash(4);
    c.crash(6);
    c.run_until(Duration::from_secs(20), 100 * MS, |c| {
        c.all_see(&name(4), MemberStatus::Failed) && c.all_see(&name(6), MemberStatus::Failed)
    })
    .expect("failures detected");
    c.input(
        0,
        Input::ForceLeave {
            name: name(4),
            prune: false,
        },
    );
    c.input(
        0,
        Input::ForceLeave {
            name: name(6),
            prune: true,
        },
    );
    c.run_until(Duration::from_secs(10), 100 * MS, |c| {
        c.all_see(&name(4), MemberStatus::Left) && c.live().all(|(_, m)| m.gossip.member(&name(6)).is_none())
    })
    .expect("force-leave spread");
}

#[test]
fn force_leave_of_a_live_member_is_refuted() {
    let mut c = formed(41, 20, GossipTiming::dev(), Net::default(), 20 * MS);
    let before = c.members[9].gossip.member(&name(9)).unwrap().incarnation;
    c.input(
        0,
        Input::ForceLeave {
            name: name(9),
            prune: false,
        },
    );
    c.run_until(Duration::from_secs(10), 50 * MS, |c| {
        c.all_see(&name(9), MemberStatus::Alive) && c.members[0].gossip.member(&name(9)).unwrap().incarnation > before
    })
    .expect("the member refuted and is alive everywhere");
}

#[test]
fn tags_change_and_user_events_reach_everyone_once() {
    let mut c = formed(
        51,
        30,
        GossipTiming::dev(),
        Net {
            loss: 0.05,
            ..Net::default()
        },
        20 * MS,
    );
    c.input(2, Input::SetTags([("role".into(), "consul".into())].into()));
    c.input(
        3,
        Input::UserEvent {
            name: "deploy".into(),
            payload: b"v2".to_vec(),
        },
    );
    c.run_until(Duration::from_secs(10), 50 * MS, |c| {
        c.live()
            .all(|(_, m)| m.gossip.member(&name(2)).unwrap().tags.get("role").map(String::as_str) == Some("consul"))
            && c.user_events.len() >= 30
    })
    .expect("tags and event spread");
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.user_events.len(), 30, "each member delivers the event exactly once");
    assert!(c.live().all(|(_, m)| m.gossip.event_clock() >= 1));
}

#[test]
fn a_restarted_member_with_a_stale_incarnation_rejoins() {
    let mut c = formed(61, 10, GossipTiming::dev(), Net::default(), 20 * MS);
    c.crash(4);
    c.run_until(Duration::from_secs(20), 100 * MS, |c| {
        c.all_see(&name(4), MemberStatus::Failed)
    })
    .expect("failed");
    // A fresh process under the same name and address: incarnation 0, below what others hold.
    let timing = c.timing.clone();
    let config = concord_core::gossip::GossipConfig {
        name: name(4),
        addr: gossip_harness::addr(4),
        tags: Default::default(),
        seed: 99,
        timing,
    };
    c.members[4].gossip = concord_core::gossip::Gossip::new(config, c.now);
    c.members[4].crashed = false;
    c.join(4, 0);
    c.run_until(Duration::from_secs(10), 50 * MS, Cluster::converged)
        .expect("rejoined");
}

#[test]
fn same_seed_same_trace() {
    let run = |seed| {
        let mut c = formed(
            seed,
            30,
            GossipTiming::dev(),
            Net {
                loss: 0.1,
                ..Net::default()
            },
            10 * MS,
        );
        c.crash(1);
        c.run_for(Duration::from_secs(10));
        (c.trace, c.packets_sent)
    };
    assert_eq!(run(71), run(71));
    assert_ne!(run(71), run(72));
}

/// Measurements for the report (not timed assertions). Run with
/// `cargo test --release -p concord-core --test gossip bench_1000_members -- --ignored --nocapture`.
/// Knobs (environment): `GOSSIP_BENCH_N` members (1000), `GOSSIP_BENCH_SEED` (0; offsets the cluster
/// seed), `GOSSIP_BENCH_JOINS` joins measured one after another (10), `GOSSIP_BENCH_CRASHES` crashes per
/// run (10), `GOSSIP_BENCH_LOSS` comma-separated loss fractions ("0,0.1"), `GOSSIP_BENCH_MODES`
/// comma-separated among `concord`, `memberlist` (memberlist's algorithm and defaults: shuffled probe
/// order, fixed gossip ticks, TCP fallback ping), `classic` (memberlist without Lifeguard), `no-tcp`
/// (concord without the TCP fallback ping), `no-eager` (concord with memberlist's fixed gossip ticks);
/// default "concord,memberlist", and `GOSSIP_BENCH_CLASSIC=0` means "concord" only.
#[test]
#[ignore]
fn bench_1000_members() {
    let env = |k: &str| std::env::var(k).ok();
    let n: usize = env("GOSSIP_BENCH_N").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let seed: u64 = env("GOSSIP_BENCH_SEED").and_then(|v| v.parse().ok()).unwrap_or(0);
    let crashes: usize = env("GOSSIP_BENCH_CRASHES").and_then(|v| v.parse().ok()).unwrap_or(10);
    let joins: usize = env("GOSSIP_BENCH_JOINS").and_then(|v| v.parse().ok()).unwrap_or(10);
    let losses: Vec<f64> = env("GOSSIP_BENCH_LOSS")
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0.0, 0.10]);
    // Modes: concord's defaults; memberlist's algorithm with the same timings (independently shuffled
    // probe order); classic SWIM (memberlist without Lifeguard).
    let default_modes = match env("GOSSIP_BENCH_CLASSIC").as_deref() {
        Some("0") => "concord",
        _ => "concord,memberlist",
    };
    let modes = env("GOSSIP_BENCH_MODES").unwrap_or_else(|| default_modes.to_string());
    let memberlist = GossipTiming {
        coordinated_probes: false,
        eager_gossip: false,
        ..GossipTiming::lan()
    };
    let mut configs = Vec::new();
    for mode in modes.split(',').map(str::trim) {
        match mode {
            "concord" => configs.push(("concord", GossipTiming::lan())),
            "memberlist" => configs.push(("memberlist defaults", memberlist.clone())),
            "classic" => configs.push((
                "classic SWIM",
                GossipTiming {
                    lifeguard: false,
                    ..memberlist.clone()
                },
            )),
            "no-tcp" => configs.push((
                "concord, no TCP ping",
                GossipTiming {
                    tcp_fallback: false,
                    ..GossipTiming::lan()
                },
            )),
            "no-eager" => configs.push((
                "concord, fixed ticks",
                GossipTiming {
                    eager_gossip: false,
                    ..GossipTiming::lan()
                },
            )),
            other => panic!("unknown GOSSIP_BENCH_MODES entry {other:?}"),
        }
    }
    for (label, timing) in configs {
        for &loss in &losses {
            bench(label, n, seed, joins, crashes, timing.clone(), loss);
        }
    }
}

fn bench(label: &str, n: usize, seed: u64, joins: usize, crashes: usize, timing: GossipTiming, loss: f64) {
    let net = Net { loss, ..Net::default() };
    #[allow(clippy::disallowed_methods)] // wall-clock cost of the benchmark itself, not simulated time
    let wall = std::time::Instant::now();
    let mut c = formed(1000 + n as u64 + seed * 7919, n, timing, net, 5 * MS);
    let formed_at = c.now;
    // Dissemination of a join: newcomers one after another, each through a random member; time until every
    // member has it. Packets sent from each join until 2 s after it reached everyone are counted.
    let mut conv = Vec::new();
    let (join_packets, join_gossip) = (c.packets_sent, c.gossip_packets);
    for k in 0..joins {
        let i = c.spawn();
        c.watch.insert(name(i));
        c.join(i, (k * 97) % n);
        let t0 = c.now;
        let live = c.live().count() - 1;
        let done = c.run_until(Duration::from_secs(30), 10 * MS, |c| {
            c.seen
                .iter()
                .filter(|s| s.about == name(i) && s.status == MemberStatus::Alive)
                .count()
                >= live
        });
        if let Some(t) = done {
            conv.push(t.saturating_since(t0).as_secs_f64());
            if t.saturating_since(t0) > Duration::from_secs(2) {
                let mut ev: Vec<_> = c.seen.iter().filter(|s| s.about == name(i)).cloned().collect();
                ev.sort_by_key(|s| s.at);
                for s in ev.iter().rev().take(5) {
                    eprintln!("DEBUG join {k} node {i}: {:?} t0={:?}", s, t0);
                }
            }
        }
        c.run_for(Duration::from_secs(2));
    }
    let (join_packets, join_gossip) = (c.packets_sent - join_packets, c.gossip_packets - join_gossip);
    let join_time = c.now.saturating_since(formed_at).as_secs_f64();
    // Failure detection: crash members one after another, plus one slow member throughout. For each crash:
    // when the first probe was sent to it, when the first member declared it failed, when all had.
    c.members[n / 2].slow = Some(Duration::from_millis(400));
    let (mut first_probe, mut first, mut all, mut suspicion) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in 0..crashes {
        let victim = 1 + k * (n / (crashes + 1));
        if victim == n / 2 {
            continue;
        }
        c.crash(victim);
        c.ping_watch = Some(gossip_harness::addr(victim));
        c.first_ping = None;
        let t0 = c.now;
        let done = c.run_until(Duration::from_secs(120), 100 * MS, |c| {
            c.all_see(&name(victim), MemberStatus::Failed)
        });
        let first_at = c
            .seen
            .iter()
            .filter(|s| s.about == name(victim) && s.status == MemberStatus::Failed)
            .map(|s| s.at)
            .min();
        if let Some(first_at) = first_at {
            first.push(first_at.saturating_since(t0).as_secs_f64());
            if let Some(p) = c.first_ping {
                first_probe.push(p.saturating_since(t0).as_secs_f64());
                suspicion.push(first_at.saturating_since(p).as_secs_f64());
            }
        }
        if let Some(t) = done {
            all.push(t.saturating_since(t0).as_secs_f64());
        }
    }
    c.ping_watch = None;
    c.run_for(Duration::from_secs(30));
    for s in c.seen.iter().filter(|s| s.status == MemberStatus::Failed) {
        let i: usize = s.about[5..].parse().unwrap_or(0);
        if !c.members[i].crashed {
            println!(
                "  false positive: {} seen failed by node-{:04} at {:.1}s",
                s.about,
                s.observer,
                s.at.0 as f64 / 1e6
            );
        }
    }
    let q = |xs: &[f64], p: f64| quantile(&mut xs.to_vec(), p);
    println!(
        "{label:20} n={n} seed={seed} loss={:>3.0}% | formed in {:.1}s | join spread p50 {:.2}s p99 {:.2}s max {:.2}s ({} of {joins}; {} packets, {} of them gossip rounds, in {:.1}s) | failure: first p50 {:.1}s p99 {:.1}s, everyone p50 {:.1}s p99 {:.1}s ({} of {}) | first probe after crash p50 {:.2}s p99 {:.2}s | first probe -> declared p50 {:.1}s max {:.1}s | false positives {} | TCP pings {} probes failed {} rescued by TCP {} refutations {} | slow member alive everywhere: {} | packets {} ({} gossip rounds) max {} B | wall {:.0}s",
        loss * 100.0,
        formed_at.0 as f64 / 1e6,
        q(&conv, 0.5),
        q(&conv, 0.99),
        q(&conv, 1.0),
        conv.len(),
        join_packets,
        join_gossip,
        join_time,
        q(&first, 0.5),
        q(&first, 0.99),
        q(&all, 0.5),
        q(&all, 0.99),
        all.len(),
        first.len(),
        q(&first_probe, 0.5),
        q(&first_probe, 0.99),
        q(&suspicion, 0.5),
        q(&suspicion, 1.0),
        c.false_positives(),
        c.stream_pings,
        c.members.iter().map(|m| m.gossip.stats().probes_failed).sum::<u64>(),
        c.members.iter().map(|m| m.gossip.stats().probes_rescued_by_tcp).sum::<u64>(),
        c.members.iter().map(|m| m.gossip.stats().refutations).sum::<u64>(),
        c.all_see(&name(n / 2), MemberStatus::Alive),
        c.packets_sent,
        c.gossip_packets,
        c.max_packet_seen,
        wall.elapsed().as_secs_f64(),
    );
    let fmt = |xs: &[f64]| xs.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(",");
    println!(
        "  samples join=[{}] first=[{}] all=[{}] probe=[{}]",
        fmt(&conv),
        fmt(&first),
        fmt(&all),
        fmt(&first_probe)
    );
}
