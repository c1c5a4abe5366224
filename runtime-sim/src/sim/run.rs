//! One run: start the cluster, bootstrap it, let clients and the nemesis loose for the safety phase, then
//! heal everything and demand liveness within a bound; finally check the histories.
//!
//! The nemesis is a schedule of actions keyed by simulated time, all drawn from the seed: network faults
//! (partitions, one-way cuts, leader isolation, bridges, delay spikes) and process faults (crash and
//! restart from disk, full-cluster restart, pause, membership changes). Background link faults (loss,
//! duplication, reordering) and disk faults (slow or failing fsync) stay on for the whole safety phase.

use crate::disk::DiskFaults;
use crate::history::{self, HistoryStats, Record};
use crate::sim::cluster::{Cluster, Exit, ServerState};
use crate::sim::net::{node_id, LinkFaults, Net, NetStats};
use crate::sim::plan::Plan;
use crate::sim::workload::Client;
use crate::sim::{Shared, TraceHash};
use concord::driver::DriverExit;
use concord_core::api::{KvQuery, KvResult, ReadMode, Request, Response};
use concord_core::node::Role;
use concord_core::state::{Command, CommandResult};
use concord_core::Mutation;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Counters of one run.
#[derive(Clone, Debug, Default)]
pub struct RunStats {
    pub simulated: Duration,
    pub client_ops: u64,
    pub node_events: u64,
    pub net: NetStats,
    pub syncs: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    pub torn_writes: u64,
    pub failed_syncs: u64,
    /// Terms in which a leader was seen, and configuration changes seen by any node.
    pub terms_with_leader: u64,
    pub membership_events: u64,
    pub nemesis_actions: u64,
    pub history: HistoryStats,
    /// Client replies by kind (`written`, `read`, `client-timeout`, or the error).
    pub outcomes: BTreeMap<String, u64>,
}

impl RunStats {
    /// Simulated events: packets sent, fsyncs, client operations and node events.
    pub fn events(&self) -> u64 {
        self.net.sent + self.syncs + self.client_ops + self.node_events
    }
}

#[derive(Clone, Debug)]
pub struct SeedReport {
    pub seed: u64,
    pub plan: String,
    /// The first checker that failed, with its evidence.
    pub failure: Option<String>,
    pub trace_hash: u64,
    pub stats: RunStats,
}

/// Runs `seed` in a fresh thread with a fresh madsim runtime (thread-local RNG state, such as the keys of
/// std's hash maps, then starts the same on every run of the seed).
pub fn run_seed(seed: u64) -> SeedReport {
    run_seed_with(seed, Mutation::None)
}

pub fn run_seed_with(seed: u64, mutation: Mutation) -> SeedReport {
    run_plan(Plan::from_seed(seed, mutation))
}

/// Runs one plan (see [`run_seed`]).
pub fn run_plan(plan: Plan) -> SeedReport {
    let seed = plan.seed;
    let description = plan.to_string();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
                rt.set_time_limit(plan.safety_phase + plan.liveness_bound + Duration::from_secs(120));
                // Built inside the runtime: its clocks must read simulated time.
                rt.block_on(async move { Sim::new(plan).run().await })
            }));
            let _ = done_tx.send(run);
        })
        .expect("spawn a thread");
    let failed = |failure: String| SeedReport {
        seed,
        plan: description.clone(),
        failure: Some(failure),
        trace_hash: 0,
        stats: RunStats::default(),
    };
    match done.recv_timeout(WALL_LIMIT) {
        Ok(Ok(report)) => report,
        Ok(Err(panic)) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            failed(format!("panic inside the simulation: {msg}"))
        }
        // A livelock that never advances simulated time (madsim's time limit cannot see it). The thread is
        // left behind; the suite fails anyway.
        Err(_) => failed(format!(
            "the run did not finish within {WALL_LIMIT:?} of real time (livelock?)"
        )),
    }
}

/// Real time one seed may take before it is declared hung.
const WALL_LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    NetFault,
    ProcFault,
    Heal(u64),
    Restart(usize),
    Resume(usize),
}

struct Sim {
    plan: Plan,
    rng: SmallRng,
    shared: Arc<Shared>,
    cluster: Option<Cluster>,
    exits: Option<mpsc::UnboundedReceiver<Exit>>,
    actions: BTreeMap<(u64, u64), Action>,
    next_action: u64,
    next_token: u64,
    nemesis_actions: u64,
    removals: usize,
    added: BTreeSet<usize>,
}

fn us(d: Duration) -> u64 {
    d.as_micros() as u64
}

impl Sim {
    fn new(plan: Plan) -> Sim {
        let total = plan.servers + plan.spares;
        Sim {
            rng: SmallRng::seed_from_u64(plan.seed ^ 0x00ae_5e5e),
            shared: Arc::new(Shared::new(total)),
            plan,
            cluster: None,
            exits: None,
            actions: BTreeMap::new(),
            next_action: 0,
            next_token: 0,
            nemesis_actions: 0,
            removals: 0,
            added: BTreeSet::new(),
        }
    }

    fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("started")
    }

    fn schedule(&mut self, after: Duration, action: Action) {
        self.next_action += 1;
        let at = self.shared.now_us() + us(after);
        self.actions.insert((at, self.next_action), action);
    }

    /// An exponentially distributed pause around the nemesis period.
    fn nemesis_gap(&mut self) -> Duration {
        let mean = self.plan.faults.nemesis_every.as_secs_f64();
        let u: f64 = self.rng.gen_range(0.01..1.0);
        Duration::from_secs_f64((-u.ln() * mean).min(mean * 5.0))
    }

    async fn run(mut self) -> SeedReport {
        let total = self.plan.servers + self.plan.spares;
        let (net, router) = Net::new(self.plan.seed ^ 0x4e37, total, self.plan.faults.links.clone());
        madsim::task::spawn(router);
        let (exit_tx, exit_rx) = mpsc::unbounded_channel();
        self.exits = Some(exit_rx);
        self.cluster = Some(Cluster::new(&self.plan, net, self.shared.clone(), exit_tx));
        for i in 0..total {
            self.cluster().start(i);
        }
        for i in 0..self.plan.servers {
            self.shared.set_target(i);
        }

        let mut clients = Vec::new();
        let w = &self.plan.workload;
        for c in 0..w.clients + w.watchers {
            let mut client = Client::new(c, self.plan.seed, w.clone(), self.shared.clone(), self.plan.op_timeout);
            let watcher = c >= w.clients;
            clients.push(madsim::task::spawn(async move {
                if watcher {
                    client.watch().await;
                } else {
                    client.run().await;
                }
                client.records
            }));
        }

        let safety_end = self.shared.now_us() + us(self.plan.safety_phase);
        let gap = self.nemesis_gap();
        self.schedule(gap, Action::NetFault);
        let gap = self.nemesis_gap();
        self.schedule(gap, Action::ProcFault);
        self.safety_phase(safety_end).await;

        let heal_at = self.shared.now_us();
        let liveness = self.liveness_phase(clients).await;
        self.report(heal_at, liveness)
    }

    async fn safety_phase(&mut self, end: u64) {
        let mut exits = self.exits.take().expect("exits");
        loop {
            if self.shared.violation().is_some() {
                break; // fail fast: the rest of the run cannot make it pass
            }
            let now = self.shared.now_us();
            if now >= end {
                break;
            }
            let next = self.actions.keys().next().map_or(end, |&(at, _)| at.min(end));
            tokio::select! {
                biased;
                Some(exit) = exits.recv() => self.on_exit(exit),
                _ = madsim::time::sleep(Duration::from_micros(next.saturating_sub(now))) => {
                    let now = self.shared.now_us();
                    while let Some((&(at, seq), &action)) = self.actions.iter().next() {
                        if at > now {
                            break;
                        }
                        self.actions.remove(&(at, seq));
                        self.apply(action).await;
                    }
                }
            }
        }
        self.exits = Some(exits);
    }

    fn on_exit(&mut self, (i, incarnation, why): Exit) {
        if self.cluster().servers[i].incarnation != incarnation || !self.cluster().is_running(i) {
            return;
        }
        match why {
            DriverExit::Removed => self.cluster().retire(i),
            DriverExit::StorageFailed(_) | DriverExit::Shutdown => {
                // Like a supervisor (systemd) would: the process died; start it again shortly.
                self.cluster().crash(i);
                let after = Duration::from_millis(self.rng.gen_range(200..2_000));
                self.schedule(after, Action::Restart(i));
            }
        }
    }

    async fn apply(&mut self, action: Action) {
        match action {
            Action::NetFault => {
                self.net_fault();
                let gap = self.nemesis_gap();
                self.schedule(gap, Action::NetFault);
            }
            Action::ProcFault => {
                self.proc_fault().await;
                let gap = self.nemesis_gap();
                self.schedule(gap, Action::ProcFault);
            }
            Action::Heal(token) => self.cluster().net.heal(token),
            Action::Restart(i) => self.cluster().restart(i),
            Action::Resume(i) => self.cluster().resume(i),
        }
    }

    /// Servers that are part of the run (started, not removed).
    fn candidates(&self) -> Vec<usize> {
        let c = self.cluster.as_ref().expect("started");
        (0..c.servers.len())
            .filter(|&i| c.servers[i].state != ServerState::Removed)
            .collect()
    }

    /// The leader most running servers believe in.
    fn believed_leader(&self) -> Option<usize> {
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

    fn net_fault(&mut self) {
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

    async fn proc_fault(&mut self) {
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
    fn membership_change(&mut self) {
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

    /// Heal everything, then demand within the bound: every client operation completes, a leader exists that
    /// every member follows, writes and linearizable reads succeed, and every member applies the same state.
    async fn liveness_phase(
        &mut self,
        clients: Vec<madsim::task::JoinHandle<Vec<Record>>>,
    ) -> (Vec<Record>, Option<String>) {
        self.shared.stop();
        self.actions.clear();
        let deadline = self.shared.now_us() + us(self.plan.liveness_bound);
        let total = self.plan.servers + self.plan.spares;
        self.cluster().net.heal_all();
        for i in 0..total {
            self.cluster().servers[i]
                .disk
                .lock()
                .expect("unpoisoned")
                .set_faults(DiskFaults::default());
            match self.cluster().servers[i].state {
                ServerState::Paused => self.cluster().resume(i),
                ServerState::Down => self.cluster().restart(i),
                _ => {}
            }
        }
        let mut records = Vec::new();
        let mut failure = None;
        for c in clients {
            let left = Duration::from_micros(deadline.saturating_sub(self.shared.now_us()));
            match madsim::time::timeout(left, c).await {
                Ok(Ok(r)) => records.extend(r),
                _ => {
                    failure.get_or_insert("client operations did not complete within the liveness bound".into());
                }
            }
        }
        if failure.is_none() {
            failure = self.converge(deadline, &mut records).await.err();
        }
        (records, failure)
    }

    /// Status of every running server (None for a server that does not answer promptly).
    async fn statuses(&self) -> Vec<Option<concord_core::node::NodeStatus>> {
        let mut out = Vec::new();
        for i in 0..self.plan.servers + self.plan.spares {
            let st = match self.shared.handle(i) {
                Some(h) => madsim::time::timeout(Duration::from_millis(200), h.status())
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            out.push(st);
        }
        out
    }

    /// Waits for a leader followed by every member; returns (leader, members).
    async fn stable_leader(&mut self, deadline: u64, last: &mut String) -> Option<(usize, Vec<usize>)> {
        while self.shared.now_us() < deadline {
            self.drain_exits();
            let st = self.statuses().await;
            let leader = st
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.as_ref().filter(|s| s.role == Role::Leader).map(|s| (s.term, i)))
                .max();
            *last = format!(
                "statuses: {:?}",
                st.iter()
                    .map(|s| s
                        .as_ref()
                        .map(|s| (s.role, s.term, s.leader, s.commit_index, s.applied_index)))
                    .collect::<Vec<_>>()
            );
            if let Some((term, l)) = leader {
                let members: Vec<usize> = self
                    .shared
                    .handle(l)
                    .map(|h| {
                        h.membership()
                            .servers
                            .keys()
                            .filter_map(|&id| crate::sim::net::index_of(id))
                            .collect()
                    })
                    .unwrap_or_default();
                // A member that stopped (e.g. it saw itself removed by an entry that was later rolled back)
                // is restarted, as an operator would.
                for &m in &members {
                    if m < self.plan.servers + self.plan.spares && !self.cluster().is_running(m) {
                        self.cluster().restart(m);
                    }
                }
                let all = members.iter().all(|&m| {
                    st.get(m)
                        .and_then(|s| s.as_ref())
                        .is_some_and(|s| s.term == term && s.leader == Some(node_id(l)))
                });
                if all && !members.is_empty() {
                    return Some((l, members));
                }
            }
            madsim::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    fn drain_exits(&mut self) {
        let mut exits = self.exits.take().expect("exits");
        while let Ok(exit) = exits.try_recv() {
            self.on_exit(exit);
        }
        self.exits = Some(exits);
    }

    async fn converge(&mut self, deadline: u64, records: &mut Vec<Record>) -> Result<(), String> {
        let bound = self.plan.liveness_bound;
        let mut last = String::new();
        let Some((_, members)) = self.stable_leader(deadline, &mut last).await else {
            return Err(format!(
                "no leader followed by every member within {bound:?} of healing; {last}"
            ));
        };
        // Final operations: a write through every member, then one write and one linearizable read per key
        // through random members.
        let mut client = Client::new(
            999,
            self.plan.seed,
            self.plan.workload.clone(),
            self.shared.clone(),
            self.plan.op_timeout,
        );
        // A client of any member can write again: each member takes a write (forwarded to the leader).
        let first_key = self.plan.workload.keys[0].clone();
        for &m in &members {
            let write = |attempt: u32| {
                let value = bytes::Bytes::from(format!("via-s{}-{attempt}", m + 1));
                Request::Write(Command::KvSet {
                    key: first_key.clone(),
                    value,
                    flags: 0,
                    cas: None,
                })
            };
            let ok = |r: &Response| {
                matches!(
                    r,
                    Response::Written {
                        result: CommandResult::Bool(true),
                        ..
                    }
                )
            };
            self.until_ok(&mut client, &[m], write, deadline, ok)
                .await
                .map_err(|e| {
                    format!(
                        "a write through member s{} did not succeed within {bound:?} of healing: {e}",
                        m + 1
                    )
                })?;
        }
        let mut finals = BTreeMap::new();
        for (k, key) in self.plan.workload.keys.clone().into_iter().enumerate() {
            let write = |attempt: u32| {
                let value = bytes::Bytes::from(format!("final-{k}-{attempt}"));
                Request::Write(Command::KvSet {
                    key: key.clone(),
                    value,
                    flags: 0,
                    cas: None,
                })
            };
            self.until_ok(&mut client, &members, write, deadline, |r| {
                matches!(
                    r,
                    Response::Written {
                        result: CommandResult::Bool(true),
                        ..
                    }
                )
            })
            .await
            .map_err(|e| format!("a write of {key:?} did not succeed within {bound:?} of healing: {e}"))?;
            let read = |_| Request::KvRead {
                query: KvQuery::Get { key: key.clone() },
                mode: ReadMode::Consistent,
                block: None,
            };
            let resp = self
                .until_ok(&mut client, &members, read, deadline, |r| {
                    matches!(r, Response::Kv { .. })
                })
                .await
                .map_err(|e| {
                    format!("a consistent read of {key:?} did not succeed within {bound:?} of healing: {e}")
                })?;
            finals.insert(key, entry_value(&resp));
        }
        // Every member applies everything and agrees.
        let target = self
            .shared
            .checker
            .lock()
            .expect("unpoisoned")
            .highest_applied()
            .map_or(0, |(i, _)| i);
        loop {
            let applied: Vec<_> = members
                .iter()
                .map(|&m| self.shared.handle(m).map(|h| *h.subscribe_applied().borrow()))
                .collect();
            let done = applied.iter().all(|a| a.is_some_and(|a| a.index >= target));
            if done {
                let digests: BTreeSet<_> = applied.iter().flatten().map(|a| (a.index, a.digest)).collect();
                if digests.len() > 1 {
                    // Different indexes are fine while a write is still being applied; wait for them.
                    if self.shared.now_us() >= deadline {
                        return Err(format!("members applied different states: {digests:?}"));
                    }
                } else {
                    break;
                }
            }
            if self.shared.now_us() >= deadline {
                return Err(format!(
                    "members did not apply up to index {target} within {bound:?} of healing: {applied:?}"
                ));
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        // And serve the same data: a stale read of every key on every member.
        for &m in &members {
            for (key, want) in &finals {
                let read = Request::KvRead {
                    query: KvQuery::Get { key: key.clone() },
                    mode: ReadMode::Stale,
                    block: None,
                };
                let resp = client.call(read, Some(m), self.plan.op_timeout).await;
                let got = resp.as_ref().map(entry_value);
                if got.as_ref() != Some(want) {
                    return Err(format!(
                        "after convergence, member s{} serves {key:?} = {got:?}, the cluster says {want:?}",
                        m + 1
                    ));
                }
            }
        }
        records.extend(client.records);
        Ok(())
    }

    /// Retries `req(attempt)` on random members until `ok` accepts a reply or the deadline passes.
    async fn until_ok(
        &mut self,
        client: &mut Client,
        members: &[usize],
        req: impl Fn(u32) -> Request,
        deadline: u64,
        ok: impl Fn(&Response) -> bool,
    ) -> Result<Response, String> {
        let (mut attempt, mut outcomes) = (0, BTreeMap::<String, u32>::new());
        while self.shared.now_us() < deadline {
            attempt += 1;
            let m = *members.choose(&mut self.rng).expect("members");
            let resp = client.call(req(attempt), Some(m), self.plan.op_timeout).await;
            match resp {
                Some(resp) if ok(&resp) => return Ok(resp),
                other => *outcomes.entry(format!("{other:?}")).or_default() += 1,
            }
            madsim::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("{attempt} attempts answered {outcomes:?}"))
    }

    fn report(mut self, heal_at: u64, (records, liveness): (Vec<Record>, Option<String>)) -> SeedReport {
        let cluster = self.cluster.take().expect("started");
        let mut failure = self.shared.violation().map(|v| format!("raft safety: {v}"));
        for s in &cluster.servers {
            if let Some(a) = s.disk.lock().expect("unpoisoned").anomalies().first() {
                failure.get_or_insert(format!("storage: s{} was asked to {a}", s.index + 1));
            }
        }
        let mut stats = RunStats::default();
        match history::check(&records, &self.plan.workload.keys) {
            Ok(h) => stats.history = h,
            Err(v) => {
                failure.get_or_insert(format!("client history: {v}"));
            }
        }
        if let Some(l) = liveness {
            failure.get_or_insert(format!("liveness (healed at {:.3}s): {l}", heal_at as f64 / 1e6));
        }
        let mut trace: TraceHash = *self.shared.trace.lock().expect("unpoisoned");
        for r in &records {
            let kind = match &r.resp {
                None => "client-timeout".to_string(),
                Some(Response::Written { .. }) => "written".into(),
                Some(Response::Kv { .. }) => "read".into(),
                Some(Response::Error(e)) => format!("{e:?}").split('(').next().unwrap_or_default().to_string(),
                Some(other) => format!("{other:?}").chars().take(20).collect(),
            };
            *stats.outcomes.entry(kind).or_default() += 1;
            trace.add(&r.call.to_le_bytes());
            trace.add(&r.ret.to_le_bytes());
            trace.add(history::describe(r).as_bytes());
        }
        stats.simulated = Duration::from_micros(self.shared.now_us());
        stats.client_ops = self.shared.ops.load(Ordering::Relaxed);
        stats.node_events = self.shared.node_events.load(Ordering::Relaxed);
        stats.net = cluster.net.stats();
        stats.nemesis_actions = self.nemesis_actions;
        for s in &cluster.servers {
            let d = s.disk.lock().expect("unpoisoned");
            stats.syncs += d.syncs;
            stats.crashes += d.crashes;
            stats.torn_writes += d.torn_writes;
            stats.failed_syncs += d.failed_syncs;
        }
        stats.restarts = cluster.restarts;
        stats.pauses = cluster.pauses;
        stats.terms_with_leader = self.shared.checker.lock().expect("unpoisoned").terms_with_leader() as u64;
        stats.membership_events = self.shared.membership_events.load(Ordering::Relaxed);
        cluster.net.set_faults(LinkFaults::default());
        SeedReport {
            seed: self.plan.seed,
            plan: self.plan.to_string(),
            failure,
            trace_hash: trace.value(),
            stats,
        }
    }
}

fn entry_value(resp: &Response) -> Option<bytes::Bytes> {
    match resp {
        Response::Kv {
            result: KvResult::Entries(e),
            ..
        } => e.first().map(|e| e.value.clone()),
        _ => None,
    }
}
