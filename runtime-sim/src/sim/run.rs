//! One run: start the cluster, bootstrap it, let clients and the nemesis loose for the safety phase, then
//! heal everything and demand liveness within a bound; finally check the histories.
//!
//! The nemesis is a schedule of actions keyed by simulated time, all drawn from the seed: network faults
//! (partitions, one-way cuts, leader isolation, bridges, delay spikes) and process faults (crash and
//! restart from disk, full-cluster restart, pause, membership changes). Background link faults (loss,
//! duplication, reordering) and disk faults (slow or failing fsync) stay on for the whole safety phase.

mod liveness;
mod nemesis;

use crate::history::{self, HistoryStats, Record};
use crate::sim::cluster::{Cluster, Exit};
use crate::sim::net::{LinkFaults, Net, NetStats};
use crate::sim::plan::Plan;
use crate::sim::workload::Client;
use crate::sim::{Shared, TraceHash};
use concord::driver::DriverExit;
use concord_core::api::Response;
use concord_core::Mutation;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
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
