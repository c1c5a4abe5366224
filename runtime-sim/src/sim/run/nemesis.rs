//! The nemesis: network faults (partitions, one-way cuts, leader isolation, bridges, delay spikes) and
//! process faults (crash and restart from disk, full-cluster restart, pause, membership changes), each
//! drawn from the seed when its turn comes. Every fault it starts is healed by a scheduled action.

use super::{Action, Sim};
use crate::sim::cluster::ServerState;
use concord_core::api::Request;
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

impl Sim {
    /// An exponentially distributed pause around the nemesis period.
    pub(super) fn nemesis_gap(&mut self) -> Duration {
        let mean = self.plan.faults.nemesis_every.as_secs_f64();
        let u: f64 = self.rng.gen_range(0.01..1.0);
        Duration::from_secs_f64((-u.ln() * mean).min(mean * 5.0))
    }

    /// Servers that are part of the run (started, not removed).
    pub(super) fn candidates(&self) -> Vec<usize> {
        let c = self.cluster.as_ref().expect("started");
        (0..c.servers.len())
            .filter(|&i| c.servers[i].state != ServerState::Removed)
            .collect()
    }

    /// The leader most running servers believe in.
    pub(super) fn believed_leader(&self) -> Option<usize> {
        let mut votes: BTreeMap<usize, usize> = BTreeMap::new();
        for i in 0..self.plan.servers + self.plan.spares {
            if let Some(l) = self.shared.handle(i).and_then(|h| h.leader()) {
                if let Some(l) = crate::sim::net::index_of(l) {
                    *votes.entry(l).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
            .map(|(i, _)| i)
    }

    pub(super) fn net_fault(&mut self) {
        let f = &self.plan.faults;
        let mut kinds = Vec::new();
        for (on, k) in [
            (f.partitions, 0),
            (f.asymmetric, 1),
            (f.leader_isolation, 2),
            (f.bridges, 3),
            (f.delay_spikes, 4),
        ] {
            if on {
                kinds.push(k);
            }
        }
        let Some(&kind) = kinds.choose(&mut self.rng) else {
            return;
        };
        let nodes = self.candidates();
        if nodes.len() < 2 {
            return;
        }
        self.nemesis_actions += 1;
        let duration = Duration::from_millis(self.rng.gen_range(300..5_000));
        let mut links = BTreeSet::new();
        let both = |links: &mut BTreeSet<(usize, usize)>, a: &[usize], b: &[usize]| {
            for &x in a {
                for &y in b {
                    links.insert((x, y));
                    links.insert((y, x));
                }
            }
        };
        match kind {
            0 => {
                let mut shuffled = nodes.clone();
                shuffled.shuffle(&mut self.rng);
                let k = self.rng.gen_range(1..shuffled.len());
                both(&mut links, &shuffled[..k], &shuffled[k..]);
            }
            1 => {
                for _ in 0..self.rng.gen_range(1..=nodes.len()) {
                    let a = *nodes.choose(&mut self.rng).expect("nodes");
                    let b = *nodes.choose(&mut self.rng).expect("nodes");
                    if a != b {
                        links.insert((a, b));
                    }
                }
            }
            2 => {
                let leader = self
                    .believed_leader()
                    .unwrap_or_else(|| *nodes.choose(&mut self.rng).expect("nodes"));
                let rest: Vec<usize> = nodes.iter().copied().filter(|&i| i != leader).collect();
                both(&mut links, &[leader], &rest);
            }
            3 => {
                let mut shuffled = nodes.clone();
                shuffled.shuffle(&mut self.rng);
                // The last node is the bridge: it keeps talking to both sides.
                shuffled.pop();
                let k = shuffled.len() / 2;
                both(&mut links, &shuffled[..k], &shuffled[k..]);
            }
            _ => {
                let node = *nodes.choose(&mut self.rng).expect("nodes");
                let extra = Duration::from_millis(self.rng.gen_range(50..1_500));
                self.cluster().net.spike(node, Instant::now() + duration, extra);
                return;
            }
        }
        self.next_token += 1;
        let token = self.next_token;
        self.cluster().net.cut(token, links);
        self.schedule(duration, Action::Heal(token));
    }

    pub(super) async fn proc_fault(&mut self) {
        let f = &self.plan.faults;
        let mut kinds = Vec::new();
        for (on, k) in [(f.crashes, 0), (f.full_restarts, 1), (f.pauses, 2), (f.membership, 3)] {
            if on {
                kinds.push(k);
            }
        }
        let Some(&kind) = kinds.choose(&mut self.rng) else {
            return;
        };
        self.nemesis_actions += 1;
        let running: Vec<usize> = self
            .candidates()
            .into_iter()
            .filter(|&i| self.cluster().is_running(i))
            .collect();
        match kind {
            0 => {
                if let Some(&i) = running.choose(&mut self.rng) {
                    self.cluster().crash(i);
                    let after = Duration::from_millis(self.rng.gen_range(100..4_000));
                    self.schedule(after, Action::Restart(i));
                }
            }
            1 => {
                for i in running {
                    self.cluster().crash(i);
                    let after = Duration::from_millis(self.rng.gen_range(200..3_000));
                    self.schedule(after, Action::Restart(i));
                }
            }
            2 => {
                let up: Vec<usize> = running
                    .into_iter()
                    .filter(|&i| self.cluster().servers[i].state == ServerState::Up)
                    .collect();
                if let Some(&i) = up.choose(&mut self.rng) {
                    self.cluster().pause(i);
                    let after = Duration::from_millis(self.rng.gen_range(100..3_000));
                    self.schedule(after, Action::Resume(i));
                }
            }
            _ => self.membership_change(),
        }
    }

    /// Adds a spare, or removes a voter while at least three would remain. Sent from a task: the answer
    /// may take long, and its outcome does not matter (the liveness phase reads the final configuration).
    pub(super) fn membership_change(&mut self) {
        let spares: Vec<usize> = (self.plan.servers..self.plan.servers + self.plan.spares)
            .filter(|i| !self.added.contains(i) && self.cluster().servers[*i].state == ServerState::Up)
            .collect();
        let Some((_, handle)) = self.shared.random_handle(&mut self.rng) else {
            return;
        };
        let req = if let Some(&i) = spares.choose(&mut self.rng) {
            self.added.insert(i);
            self.shared.set_target(i);
            let s = &self.cluster().servers[i];
            Request::AddServer {
                id: s.id,
                name: s.name.clone(),
                address: s.address.clone(),
            }
        } else {
            let m = handle.membership();
            let voters: Vec<_> = m.voters().collect();
            if self.removals > 0 || voters.len() <= 3 {
                return;
            }
            self.removals += 1;
            let id = *voters.choose(&mut self.rng).expect("voters");
            Request::RemovePeer {
                id: Some(id),
                address: None,
            }
        };
        madsim::task::spawn(async move {
            let _ = madsim::time::timeout(Duration::from_secs(5), handle.call(req)).await;
        });
    }
}
