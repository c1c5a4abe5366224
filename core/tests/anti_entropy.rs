//! Anti-entropy against a faulty Raft cluster, over the pure harness: several agents (each a `LocalAgent`
//! whose services and checks change at random) run anti-entropy rounds exactly as
//! `runtime-tokio/src/local/sync.rs` does (read the node's rows, `sync_plan`, write each command; one round at
//! a time; a failed round is retried after `RETRY`) through client requests that are delayed, lost, time out
//! or hit crashed and partitioned servers. Two properties:
//!
//! - convergence: within a bound after every fault heals, every server's catalog rows for every agent's node
//!   equal that agent's local state;
//! - no resurrection: once an agent removed a service locally and the catalog acknowledged the
//!   deregistration at index `i`, no entry after `i` in the committed history (hence no server's state at
//!   any applied index) shows that service again unless the agent registered it again in between.
//!
//! The history is the committed log itself (the harness records every applied entry), replayed through a
//! fresh `StateMachine`. Two mutations show that the checker is not vacuous: without fencing, two rounds of
//! one agent running concurrently (a plan computed before a local deregistration lands after the
//! deregistration of a later round) resurrect, and so do forwards held back past their round's timeout.
//!
//! Every write of a round carries the round's `SyncSeq` (`Command::fenced`), as sync.rs sends it: the state
//! machine refuses a write of a round older than one already applied for that node.

mod harness;

use concord_core::agent::{CheckDef, CheckKind, LocalAgent, NodeIdentity};
use concord_core::api::{CatalogQuery, CatalogResult, Query, ReadMode, Request, Response};
use concord_core::raft::Payload;
use concord_core::state::{
    CatalogWrite, Changes, CheckStatus, Command, CommandResult, Registration, ServiceInstance, StateMachine, SyncSeq,
};
use concord_core::{Instant, Mutation, NodeId};
use harness::{Cluster, Faults};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// sync.rs's retry delay after a failed round.
const RETRY: Duration = Duration::from_secs(1);
/// The periodic full sync (scaled down from Consul's minute so a run sees many).
const INTERVAL: Duration = Duration::from_secs(2);
/// How long an agent waits for one answer before it gives up on the request (and resets the connection:
/// a request not yet delivered is never delivered).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Services each agent picks from: small, so services are removed and registered again.
const POOL: usize = 4;
/// How long the faults last, and the bound on convergence once they heal.
const CHAOS: Duration = Duration::from_secs(20);
const CONVERGE_BOUND: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Model {
    /// What sync.rs does: one round at a time.
    Sequential,
    /// Mutation: a local change starts a new round even while one is still writing.
    Concurrent,
}

/// One request on its way: sent at `deliver_at` to `to` (None: lost), answered via `req_id`.
struct Call {
    to: NodeId,
    req: Request,
    deliver_at: Option<Instant>,
    req_id: Option<u64>,
    deadline: Instant,
}

/// Whether rounds fence their writes with their sync sequence (what sync.rs does).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fencing {
    On,
    /// Mutation: plain catalog writes, as before fencing existed.
    Off,
}

enum Step {
    ReadNode,
    ReadChecks(Option<concord_core::state::CatalogNode>, Vec<ServiceInstance>),
    Write(VecDeque<Command>),
}

struct Round {
    step: Step,
    call: Call,
    seq: SyncSeq,
}

struct Agent {
    name: String,
    local: LocalAgent,
    /// Index into the server list this agent talks to (rotated after a failure, as an RPC client does).
    server: usize,
    rounds: Vec<Round>,
    /// Rounds started so far (the sync sequence's counter).
    started: u64,
    next_round: Instant,
    dirty: bool,
    /// Service ID -> local (present, since) transitions, oldest first.
    local_history: BTreeMap<String, Vec<(Instant, bool)>>,
    /// Acknowledged deregistrations: (service ID, catalog index, removed locally at).
    acked: Vec<(String, u64, Instant)>,
}

impl Agent {
    fn present_since(&self, id: &str) -> Option<(bool, Instant)> {
        self.local_history.get(id)?.last().map(|&(t, p)| (p, t))
    }

    /// Whether the agent registered `id` locally in `(after, until]`.
    fn registered_between(&self, id: &str, after: Instant, until: Instant) -> bool {
        self.local_history
            .get(id)
            .is_some_and(|h| h.iter().any(|&(t, p)| p && t > after && t <= until))
    }
}

fn ttl_check(id: &str, service_id: &str) -> CheckDef {
    CheckDef {
        id: id.into(),
        name: format!("check {id}"),
        notes: String::new(),
        service_id: service_id.into(),
        kind: CheckKind::Ttl {
            ttl: Duration::from_secs(3600),
        },
        interval: Duration::ZERO,
        timeout: Duration::ZERO,
        deregister_critical_service_after: None,
        success_before_passing: 0,
        failures_before_critical: 0,
        initial_status: CheckStatus::Critical,
    }
}

fn read(query: CatalogQuery) -> Request {
    Request::Read {
        query: Query::Catalog(query),
        mode: ReadMode::Default,
        block: None,
    }
}

struct Sim {
    c: Cluster,
    rng: SmallRng,
    ids: Vec<NodeId>,
    agents: Vec<Agent>,
    model: Model,
    fencing: Fencing,
    /// Agent `a` cannot reach server `s`.
    agent_cut: BTreeSet<(usize, NodeId)>,
    /// Lost agent requests and the delay range of delivered ones.
    loss: f64,
    max_delay_ms: u64,
    /// Rounds that failed (a lost, refused or timed-out request): the faults reached anti-entropy.
    failed_rounds: usize,
}

impl Sim {
    fn send(&mut self, a: usize, req: Request) -> Call {
        let now = self.c.now;
        let to = self.ids[self.agents[a].server % self.ids.len()];
        let lost = self.agent_cut.contains(&(a, to)) || self.rng.gen_bool(self.loss);
        let delay = Duration::from_millis(self.rng.gen_range(0..=self.max_delay_ms));
        Call {
            to,
            req,
            deliver_at: (!lost).then_some(now + delay),
            req_id: None,
            deadline: now + CALL_TIMEOUT,
        }
    }

    fn start_round(&mut self, a: usize) {
        let name = self.agents[a].name.clone();
        let call = self.send(a, read(CatalogQuery::Node { node: name }));
        let agent = &mut self.agents[a];
        agent.dirty = false;
        agent.started += 1;
        let seq = SyncSeq {
            epoch: 1,
            round: agent.started,
        };
        agent.rounds.push(Round {
            step: Step::ReadNode,
            call,
            seq,
        });
    }

    /// A local change: wakes anti-entropy (sync.rs's `changes.changed()`).
    fn changed(&mut self, a: usize) {
        let now = self.c.now;
        let agent = &mut self.agents[a];
        agent.dirty = true;
        let idle = agent.rounds.is_empty();
        if idle {
            agent.next_round = now;
        } else if self.model == Model::Concurrent {
            self.start_round(a);
        }
    }

    fn local_change(&mut self, a: usize) {
        let now = self.c.now;
        let k = self.rng.gen_range(0..POOL);
        let id = format!("svc-{k}");
        let agent = &mut self.agents[a];
        let present = agent.local.services().contains_key(&id);
        match self.rng.gen_range(0..10) {
            0..=2 if !present => {
                let service = ServiceInstance {
                    id: id.clone(),
                    service: if k % 2 == 0 { "web".into() } else { "db".into() },
                    port: 8000 + k as u32,
                    tags: vec![format!("v{}", self.rng.gen_range(0..3))],
                    ..ServiceInstance::default()
                };
                let check = ttl_check(&format!("service:{id}"), &id);
                agent
                    .local
                    .add_service(now, service, vec![check], true)
                    .expect("valid service");
                agent.local_history.entry(id).or_default().push((now, true));
            }
            0..=3 if present => {
                assert!(agent.local.remove_service(&id));
                agent.local_history.entry(id).or_default().push((now, false));
            }
            4 => {
                // A node check comes and goes.
                if !agent.local.remove_check("mem") {
                    agent.local.add_check(now, ttl_check("mem", "")).expect("valid check");
                }
            }
            _ if present => {
                // A check result: the classic trigger of a re-registration of a live service.
                let status =
                    [CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical][self.rng.gen_range(0..3)];
                let output = format!("out {}", self.rng.gen_range(0..100));
                agent
                    .local
                    .update_ttl(now, &format!("service:{id}"), status, &output)
                    .expect("ttl check");
            }
            _ => return,
        }
        self.changed(a);
    }

    /// Move every agent's requests and rounds along; call after each millisecond of cluster time.
    fn agents_step(&mut self) {
        let now = self.c.now;
        for a in 0..self.agents.len() {
            if self.agents[a].rounds.is_empty() && self.agents[a].next_round <= now {
                self.start_round(a);
            }
            let mut r = 0;
            while r < self.agents[a].rounds.len() {
                match self.advance(a, r) {
                    Some(true) => {
                        self.agents[a].rounds.remove(r);
                        self.round_done(a, true);
                    }
                    Some(false) => {
                        self.agents[a].rounds.remove(r);
                        self.round_done(a, false);
                    }
                    None => r += 1,
                }
            }
        }
    }

    fn round_done(&mut self, a: usize, ok: bool) {
        let now = self.c.now;
        let stagger = Duration::from_millis(self.rng.gen_range(0..=INTERVAL.as_millis() as u64 / 16));
        let agent = &mut self.agents[a];
        if !ok {
            agent.server += 1;
            self.failed_rounds += 1;
        }
        if !agent.rounds.is_empty() {
            return;
        }
        agent.next_round = match (ok, agent.dirty) {
            (_, true) => now,
            (true, false) => now + INTERVAL + stagger,
            (false, false) => now + RETRY,
        };
    }

    /// Drive round `r` of agent `a`: Some(ok) when it finished.
    fn advance(&mut self, a: usize, r: usize) -> Option<bool> {
        let now = self.c.now;
        let call = &mut self.agents[a].rounds[r].call;
        if call.req_id.is_none() && call.deliver_at.is_some_and(|at| at <= now) {
            let (to, req) = (call.to, call.req.clone());
            let id = self.c.request(to, req);
            self.agents[a].rounds[r].call.req_id = Some(id);
        }
        let call = &self.agents[a].rounds[r].call;
        let reply = call.req_id.and_then(|id| self.c.replies.remove(&id));
        let Some(reply) = reply else {
            // Timed out: a request still on its way dies with the connection.
            return (now >= call.deadline).then_some(false);
        };
        let (fencing, seq) = (self.fencing, self.agents[a].rounds[r].seq);
        let agent = &mut self.agents[a];
        let round = &mut agent.rounds[r];
        let next = match (&mut round.step, reply) {
            (Step::ReadNode, Response::Catalog { result, .. }) if matches!(*result, CatalogResult::Node(_)) => {
                let CatalogResult::Node(found) = std::sync::Arc::unwrap_or_clone(result) else {
                    unreachable!("matched above")
                };
                let (node, services) = match found {
                    Some(b) => (Some(b.0), b.1),
                    None => (None, Vec::new()),
                };
                round.step = Step::ReadChecks(node, services);
                read(CatalogQuery::HealthNode {
                    node: agent.name.clone(),
                })
            }
            (Step::ReadChecks(node, services), Response::Catalog { result, .. })
                if matches!(*result, CatalogResult::Checks(_)) =>
            {
                let CatalogResult::Checks(checks) = std::sync::Arc::unwrap_or_clone(result) else {
                    unreachable!("matched above")
                };
                let plan = agent.local.sync_plan(now, node.as_ref(), services, &checks);
                let mut plan: VecDeque<Command> = plan.into();
                let Some(first) = plan.pop_front() else {
                    return Some(true);
                };
                round.step = Step::Write(plan);
                write(fencing, seq, first)
            }
            (
                Step::Write(_),
                Response::Written {
                    index,
                    result: CommandResult::Bool(_),
                },
            ) => {
                if let Some(id) = service_deregistered(&round.call.req) {
                    if let Some((false, since)) = agent.present_since(&id) {
                        agent.acked.push((id, index, since));
                    }
                }
                let agent = &mut self.agents[a];
                let Step::Write(plan) = &mut agent.rounds[r].step else {
                    unreachable!()
                };
                let Some(next) = plan.pop_front() else {
                    return Some(true);
                };
                write(fencing, seq, next)
            }
            (_, Response::Error(_) | Response::Written { .. }) => return Some(false),
            (_, other) => panic!("unexpected answer {other:?}"),
        };
        let call = self.send(a, next);
        self.agents[a].rounds[r].call = call;
        None
    }

    /// The catalog rows of every agent on every live server equal its local state.
    fn converged(&self) -> bool {
        let now = self.c.now;
        self.c.nodes.values().filter_map(|n| n.node.as_ref()).all(|node| {
            let catalog = &node.state().catalog;
            self.agents.iter().all(|agent| {
                let (services, checks) = catalog.node_rows(&agent.name);
                let have: BTreeSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
                let want: BTreeSet<&str> = agent.local.services().keys().map(String::as_str).collect();
                let mut probe = agent.local.clone();
                have == want
                    && probe
                        .sync_plan(now, catalog.node(&agent.name), &services, &checks)
                        .is_empty()
            })
        })
    }

    fn heal(&mut self) {
        self.c.heal();
        self.agent_cut.clear();
        let down: Vec<NodeId> = self
            .c
            .nodes
            .iter()
            .filter(|(_, n)| n.node.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.c.restart(id);
        }
    }
}

/// A write of a round with sequence `seq`, fenced unless fencing is off.
fn write(fencing: Fencing, seq: SyncSeq, cmd: Command) -> Request {
    Request::Write(match fencing {
        Fencing::On => cmd.fenced(seq),
        Fencing::Off => cmd,
    })
}

/// The service a (fenced or plain) catalog write deregisters.
fn service_deregistered(req: &Request) -> Option<String> {
    match req {
        Request::Write(Command::CatalogDeregister {
            service_id: Some(id), ..
        }) => Some(id.clone()),
        Request::Write(Command::CatalogSync(sync)) => match &sync.write {
            CatalogWrite::Deregister {
                service_id: Some(id), ..
            } => Some(id.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The registration a (fenced or plain) command carries.
fn registration(cmd: &Command) -> Option<&Registration> {
    match cmd {
        Command::CatalogRegister(reg) => Some(reg),
        Command::CatalogSync(sync) => match &sync.write {
            CatalogWrite::Register(reg) => Some(reg.as_ref()),
            _ => None,
        },
        _ => None,
    }
}

/// Replay the committed history and return the first resurrection: (agent, service, acked dereg index,
/// index that showed it again).
fn resurrection(sim: &Sim) -> Option<(String, String, u64, u64)> {
    let mut state = StateMachine::default();
    let mut changes = Changes::default();
    for (expect, (&index, (entry, applied_at))) in (1..).zip(&sim.c.history) {
        assert_eq!(index, expect, "the recorded history starts at 1 and has no gaps");
        let Payload::Command(bytes) = &entry.payload else {
            continue;
        };
        let cmd = Command::decode(bytes).expect("committed commands decode");
        let result = state.apply(index, &cmd, &mut changes);
        changes.clear();
        let Some(reg) = registration(&cmd) else { continue };
        let (Some(service), CommandResult::Bool(true)) = (&reg.service, result) else {
            continue;
        };
        let Some(agent) = sim.agents.iter().find(|a| a.name == reg.node) else {
            continue;
        };
        assert!(state.catalog.service(&reg.node, &service.id).is_some());
        for (id, acked_at, removed_at) in &agent.acked {
            if *id == service.id && *acked_at < index && !agent.registered_between(id, *removed_at, *applied_at) {
                return Some((agent.name.clone(), id.clone(), *acked_at, index));
            }
        }
    }
    None
}

struct Outcome {
    resurrection: Option<(String, String, u64, u64)>,
    converged_after: Option<Duration>,
    acked: usize,
    entries: usize,
    failed_rounds: usize,
}

fn run(seed: u64, model: Model, fencing: Fencing, slow_forwards: bool) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = if rng.gen_bool(0.5) { 3 } else { 5 };
    let faults = Faults {
        loss: rng.gen_range(0.0..0.05),
        duplicate: rng.gen_range(0.0..0.05),
        max_delay: Duration::from_millis(rng.gen_range(2..20)),
        slow: if slow_forwards { 0.02 } else { 0.0 },
        slow_delay: Duration::from_secs(4),
        ..Faults::default()
    };
    let mut c = Cluster::new(seed, n, faults, Mutation::None);
    c.bootstrap();
    let ids = c.ids();
    let start = c.now;
    let agents = (0..rng.gen_range(2..=4))
        .map(|i| {
            let mut local = LocalAgent::new(
                NodeIdentity {
                    name: format!("agent-{i}"),
                    id: format!("00000000-0000-0000-0000-00000000000{i}"),
                    address: format!("10.1.0.{i}"),
                    datacenter: "dc1".into(),
                    ..NodeIdentity::default()
                },
                None,
            );
            local.set_check_update_interval(Duration::ZERO);
            Agent {
                name: format!("agent-{i}"),
                local,
                server: i,
                rounds: Vec::new(),
                started: 0,
                next_round: start,
                dirty: false,
                local_history: BTreeMap::new(),
                acked: Vec::new(),
            }
        })
        .collect();
    let mut sim = Sim {
        c,
        rng,
        ids: ids.clone(),
        agents,
        model,
        fencing,
        agent_cut: BTreeSet::new(),
        loss: 0.02,
        max_delay_ms: 30,
        failed_rounds: 0,
    };
    let chaos_end = start + CHAOS;
    let mut next_change = start;
    let mut next_fault = start + Duration::from_millis(500);
    while sim.c.now < chaos_end {
        let now = sim.c.now;
        if now >= next_change {
            let a = sim.rng.gen_range(0..sim.agents.len());
            sim.local_change(a);
            next_change = now + Duration::from_millis(sim.rng.gen_range(5..150));
        }
        if now >= next_fault {
            let victim = ids[sim.rng.gen_range(0..ids.len())];
            let crashed = sim.c.nodes.values().filter(|n| n.node.is_none()).count();
            match sim.rng.gen_range(0..6) {
                0 => sim.c.isolate(victim),
                1 if sim.c.nodes[&victim].node.is_some() && crashed + 1 < (n as usize).div_ceil(2) + 1 => {
                    sim.c.crash(victim)
                }
                1 if sim.c.nodes[&victim].node.is_none() => sim.c.restart(victim),
                2 => {
                    let a = sim.rng.gen_range(0..sim.agents.len());
                    sim.agent_cut.insert((a, victim));
                }
                3 => sim.heal(),
                _ => {}
            }
            next_fault = now + Duration::from_millis(sim.rng.gen_range(100..1500));
        }
        sim.c.run_for(Duration::from_millis(1));
        sim.agents_step();
    }
    // Everything heals: partitions, crashed servers, and the lossy links (a lost message is not
    // retried by the protocol, it costs a request timeout).
    sim.heal();
    sim.c.faults.loss = 0.0;
    sim.loss = 0.0;
    let healed = sim.c.now;
    let mut converged_after = None;
    while sim.c.now < healed + CONVERGE_BOUND {
        sim.c.run_for(Duration::from_millis(1));
        sim.agents_step();
        if sim.c.now.as_micros().is_multiple_of(50_000)
            && sim.agents.iter().all(|a| a.rounds.is_empty())
            && sim.converged()
        {
            converged_after = Some(Duration::from_micros(sim.c.now.as_micros() - healed.as_micros()));
            break;
        }
    }
    Outcome {
        resurrection: resurrection(&sim),
        converged_after,
        acked: sim.agents.iter().map(|a| a.acked.len()).sum(),
        entries: sim.c.history.len(),
        failed_rounds: sim.failed_rounds,
    }
}

/// `CONCORD_AE_SEEDS=N` runs seeds `0..N`, `=A..B` runs `A..B`.
fn seeds() -> std::ops::Range<u64> {
    let var = std::env::var("CONCORD_AE_SEEDS").unwrap_or_default();
    let parse = |s: &str| s.parse::<u64>().ok();
    match var.split_once("..") {
        Some((a, b)) => parse(a).expect("seed")..parse(b).expect("seed"),
        None => 0..parse(&var).unwrap_or(40),
    }
}

#[test]
fn catalog_converges_and_never_resurrects_under_faults() {
    let mut acked = 0;
    let mut entries = 0;
    let mut failed = 0;
    let mut worst = Duration::ZERO;
    for seed in seeds() {
        let out = run(seed, Model::Sequential, Fencing::On, false);
        assert_eq!(out.resurrection, None, "seed {seed}: a deregistered service came back");
        let after = out
            .converged_after
            .unwrap_or_else(|| panic!("seed {seed}: not converged {CONVERGE_BOUND:?} after healing"));
        worst = worst.max(after);
        acked += out.acked;
        entries += out.entries;
        failed += out.failed_rounds;
    }
    assert!(
        acked > 0,
        "some deregistrations were acknowledged: the property was exercised"
    );
    assert!(failed > 0, "some rounds failed: the faults reached anti-entropy");
    eprintln!(
        "{} seeds: converged within {worst:?} of healing; {acked} acknowledged deregistrations checked \
         against {entries} committed entries; {failed} failed rounds",
        seeds().count()
    );
}

/// The checker is not vacuous: unfenced anti-entropy that lets a change-triggered round run while an older
/// round is still writing lets a plan computed before a deregistration land after it.
#[test]
fn mutation_concurrent_unfenced_rounds_resurrect_and_are_caught() {
    let caught = seeds().find_map(|seed| {
        run(seed, Model::Concurrent, Fencing::Off, false)
            .resurrection
            .map(|r| (seed, r))
    });
    let (seed, (agent, service, acked, again)) = caught.expect("the checker catches concurrent rounds");
    eprintln!("seed {seed}: {agent}'s {service} deregistered at {acked}, back at {again}");
}

/// Fencing also covers a plan that outlives a later round inside one agent: even concurrent rounds cannot
/// resurrect, because the older round's writes are refused once a later round's write applied.
#[test]
fn concurrent_fenced_rounds_do_not_resurrect() {
    for seed in seeds() {
        let out = run(seed, Model::Concurrent, Fencing::On, false);
        assert_eq!(out.resurrection, None, "seed {seed}: a deregistered service came back");
    }
}

/// Seeds where, with 2 % of peer messages held back 4 s (a peer connection that takes long to connect,
/// with the forward queued behind it), a forwarded write reaches the leader after the follower already
/// answered `Timeout` and is still proposed: a registration of an earlier, failed round lands after the
/// deregistration a later round had acknowledged (seed 10 unfenced: agent-0's svc-1, deregistered at index
/// 12, back at 13, until the next periodic sync).
const LATE_FORWARD_SEEDS: [u64; 3] = [1, 10, 54];

/// The late forwards above really do resurrect without fencing (so the next test is not vacuous).
#[test]
fn mutation_unfenced_late_forwards_resurrect_and_are_caught() {
    let caught: Vec<u64> = LATE_FORWARD_SEEDS
        .into_iter()
        .filter(|&seed| run(seed, Model::Sequential, Fencing::Off, true).resurrection.is_some())
        .collect();
    assert!(!caught.is_empty(), "unfenced late forwards resurrect on some seed");
    eprintln!("unfenced late forwards resurrected on seeds {caught:?}");
}

/// A forwarded write may reach the leader long after the round that sent it gave up; fenced with its round's
/// sequence, it is refused once a later round of the node applied, so it never undoes that round.
#[test]
fn late_forwards_do_not_resurrect() {
    let mut seeds: Vec<u64> = LATE_FORWARD_SEEDS.to_vec();
    seeds.extend(self::seeds());
    for seed in seeds {
        let out = run(seed, Model::Sequential, Fencing::On, true);
        assert_eq!(
            out.resurrection, None,
            "seed {seed}: a late forward resurrected a service"
        );
    }
}
