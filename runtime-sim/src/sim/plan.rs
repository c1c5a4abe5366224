//! What one seed decides before the run starts: cluster size, which faults are on and how often (swarm
//! testing: each seed turns some faults off entirely, so rare interleavings of the remaining ones get
//! room), the workload mix and the node configuration. The schedule itself unfolds from the same seed.

use crate::disk::DiskFaults;
use crate::sim::net::LinkFaults;
use concord_core::{Limits, Mutation, RaftConfig};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Duration;

/// Faults the nemesis may inject in this run.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultMix {
    pub partitions: bool,
    pub asymmetric: bool,
    pub leader_isolation: bool,
    pub bridges: bool,
    pub delay_spikes: bool,
    pub crashes: bool,
    pub full_restarts: bool,
    pub pauses: bool,
    pub membership: bool,
    /// Background link faults during the safety phase (loss, duplication, reordering through jitter).
    pub links: LinkFaults,
    pub disk: DiskFaults,
    /// Per-node clock drift in ppm (all zero when drift is off).
    pub drift_ppm: Vec<i64>,
    /// Mean time between nemesis actions.
    pub nemesis_every: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadMix {
    pub clients: usize,
    pub watchers: usize,
    pub keys: Vec<String>,
    /// Weights of put, get, cas, delete, cas-delete, delete-tree.
    pub ops: [u32; 6],
    /// Weights of default, consistent and stale reads.
    pub modes: [u32; 3],
    /// Pause between one client's operations, in milliseconds.
    pub think_ms: (u64, u64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub seed: u64,
    pub mutation: Mutation,
    /// Voters the cluster is bootstrapped with.
    pub servers: usize,
    /// Extra servers started idle, which the nemesis may add.
    pub spares: usize,
    pub faults: FaultMix,
    pub workload: WorkloadMix,
    pub raft: RaftConfig,
    pub limits: Limits,
    pub safety_phase: Duration,
    /// After healing, the cluster must converge within this long.
    pub liveness_bound: Duration,
    /// A client gives up waiting for a reply after this long (the outcome is then unknown).
    pub op_timeout: Duration,
}

/// Most drift between any node's timers and true time. The lease (half the election timeout) stays safe
/// while (1+d)/(1-d) < election_timeout/lease_timeout = 2, i.e. d < 1/3.
pub const MAX_DRIFT_PPM: i64 = 200_000;

impl Plan {
    pub fn from_seed(seed: u64, mutation: Mutation) -> Plan {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed_0fc0_5c0d);
        let servers = [1, 3, 3, 5, 5][rng.gen_range(0..5)];
        let on = |rng: &mut SmallRng, p: f64| rng.gen_bool(p);
        let membership = servers >= 3 && on(&mut rng, 0.4);
        let spares = if membership { rng.gen_range(1..=2) } else { 0 };
        let total = servers + spares;
        let links = LinkFaults {
            loss: if on(&mut rng, 0.5) {
                rng.gen_range(0.0..0.2)
            } else {
                0.0
            },
            duplicate: if on(&mut rng, 0.4) {
                rng.gen_range(0.0..0.2)
            } else {
                0.0
            },
            delay_us: if on(&mut rng, 0.5) {
                (100, rng.gen_range(2_000..40_000))
            } else {
                (100, 1_000)
            },
            straggle: if on(&mut rng, 0.3) {
                rng.gen_range(0.0..0.02)
            } else {
                0.0
            },
        };
        let disk = DiskFaults {
            sync_latency_us: (
                100,
                if on(&mut rng, 0.5) {
                    rng.gen_range(2_000..20_000)
                } else {
                    2_000
                },
            ),
            slow_sync: if on(&mut rng, 0.4) {
                rng.gen_range(0.0..0.2)
            } else {
                0.0
            },
            fail_sync: if on(&mut rng, 0.25) {
                rng.gen_range(0.0..0.01)
            } else {
                0.0
            },
            ..DiskFaults::default()
        };
        let drift = on(&mut rng, 0.6);
        let drift_ppm = (0..total)
            .map(|_| {
                if drift {
                    rng.gen_range(-MAX_DRIFT_PPM..=MAX_DRIFT_PPM)
                } else {
                    0
                }
            })
            .collect();
        let crashes = on(&mut rng, 0.6);
        let faults = FaultMix {
            partitions: on(&mut rng, 0.5),
            asymmetric: on(&mut rng, 0.3),
            leader_isolation: on(&mut rng, 0.4),
            bridges: servers >= 3 && on(&mut rng, 0.3),
            delay_spikes: on(&mut rng, 0.3),
            crashes,
            full_restarts: crashes && on(&mut rng, 0.3),
            pauses: on(&mut rng, 0.4),
            membership,
            links,
            disk,
            drift_ppm,
            nemesis_every: Duration::from_millis(rng.gen_range(300..2_000)),
        };
        let mut ops = [30, 30, 15, 8, 5, 2];
        for w in &mut ops {
            *w = if on(&mut rng, 0.15) {
                0
            } else {
                *w * rng.gen_range(1..=3)
            };
        }
        if ops[0] == 0 {
            ops[0] = 10; // something must write
        }
        let mut modes = [1, 1, 1];
        for w in &mut modes {
            *w = if on(&mut rng, 0.2) { 0 } else { rng.gen_range(1..=4) };
        }
        if modes == [0, 0, 0] {
            modes[1] = 1;
        }
        let nkeys = rng.gen_range(2..=6);
        let keys = (0..nkeys)
            .map(|i| format!("{}/{}", if i % 2 == 0 { "a" } else { "b" }, i))
            .collect();
        let workload = WorkloadMix {
            clients: rng.gen_range(2..=6),
            watchers: rng.gen_range(0..=2),
            keys,
            ops,
            modes,
            think_ms: (rng.gen_range(0..5), rng.gen_range(10..60)),
        };
        // Drawn from a stream of their own, so every other choice of a seed is what it was before these
        // knobs existed. Half the seeds check for a snapshot after every step (entries accumulate only to
        // the threshold); the rest check every 0.1-3 s like Consul, some with a tiny in-memory log cap.
        let mut snap_rng = SmallRng::seed_from_u64(seed ^ 0x5a95_1707_c4ec);
        let (snapshot_interval, snapshot_log_bytes) = if on(&mut snap_rng, 0.5) {
            (Duration::ZERO, usize::MAX)
        } else {
            let interval = Duration::from_millis(snap_rng.gen_range(100..=3_000));
            let cap = if on(&mut snap_rng, 0.3) {
                snap_rng.gen_range(256..=8_192)
            } else {
                usize::MAX
            };
            (interval, cap)
        };
        let raft = RaftConfig {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(500),
            lease_timeout: Duration::from_millis(250),
            max_append_entries: rng.gen_range(1..=64),
            max_append_bytes: rng.gen_range(256..=65_536),
            max_inflight: rng.gen_range(1..=8),
            snapshot_threshold: rng.gen_range(10..=300),
            snapshot_interval,
            snapshot_log_bytes,
            trailing_logs: rng.gen_range(2..=50),
            snapshot_chunk_bytes: rng.gen_range(64..=8_192),
        };
        let limits = Limits {
            max_pending: rng.gen_range(16..=1024),
            max_watches: rng.gen_range(4..=64),
            request_timeout: Duration::from_secs(2),
            default_query_time: Duration::from_secs(5),
            max_query_time: Duration::from_secs(10),
            // Tiny, so a workload that sends coordinates exercises the discard path (no RNG draw: the plan
            // a seed gives stays the same).
            coordinate_update_period: Duration::from_secs(1),
            coordinate_update_batch_size: 2,
            coordinate_update_max_batches: 2,
        };
        Plan {
            seed,
            mutation,
            servers,
            spares,
            faults,
            workload,
            raft,
            limits,
            safety_phase: Duration::from_secs(rng.gen_range(10..=30)),
            liveness_bound: Duration::from_secs(30),
            op_timeout: Duration::from_secs(4),
        }
    }
}

impl Plan {
    /// The same run with every fault off (to tell a fault-induced failure from a plain bug).
    pub fn calm(mut self) -> Plan {
        let n = self.faults.drift_ppm.len();
        self.faults = FaultMix {
            partitions: false,
            asymmetric: false,
            leader_isolation: false,
            bridges: false,
            delay_spikes: false,
            crashes: false,
            full_restarts: false,
            pauses: false,
            membership: false,
            links: LinkFaults::default(),
            disk: DiskFaults::default(),
            drift_ppm: vec![0; n],
            nemesis_every: self.faults.nemesis_every,
        };
        self
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fm = &self.faults;
        let mut on = Vec::new();
        for (name, yes) in [
            ("partitions", fm.partitions),
            ("asymmetric", fm.asymmetric),
            ("leader-isolation", fm.leader_isolation),
            ("bridges", fm.bridges),
            ("delay-spikes", fm.delay_spikes),
            ("crashes", fm.crashes),
            ("full-restarts", fm.full_restarts),
            ("pauses", fm.pauses),
            ("membership", fm.membership),
        ] {
            if yes {
                on.push(name.to_string());
            }
        }
        if fm.links.loss > 0.0 {
            on.push(format!("loss={:.3}", fm.links.loss));
        }
        if fm.links.duplicate > 0.0 {
            on.push(format!("dup={:.3}", fm.links.duplicate));
        }
        if fm.links.straggle > 0.0 {
            on.push(format!("stragglers={:.4}", fm.links.straggle));
        }
        if fm.disk.sync_latency_us.1 > 2_000 {
            on.push(format!("fsync≤{}ms", fm.disk.sync_latency_us.1 / 1000));
        }
        if fm.links.delay_us.1 > 1_000 {
            on.push(format!("reorder(delay≤{}ms)", fm.links.delay_us.1 / 1000));
        }
        if fm.disk.slow_sync > 0.0 {
            on.push(format!("slow-fsync={:.3}", fm.disk.slow_sync));
        }
        if fm.disk.fail_sync > 0.0 {
            on.push(format!("failing-fsync={:.4}", fm.disk.fail_sync));
        }
        if fm.drift_ppm.iter().any(|&d| d != 0) {
            on.push(format!("drift(ppm {:?})", fm.drift_ppm));
        }
        write!(
            f,
            "{} server(s) + {} spare(s), {:?} safety phase, {} clients + {} watchers on {} keys, ops {:?}, modes {:?}, \
             faults: [{}]",
            self.servers,
            self.spares,
            self.safety_phase,
            self.workload.clients,
            self.workload.watchers,
            self.workload.keys.len(),
            self.workload.ops,
            self.workload.modes,
            on.join(", ")
        )?;
        if self.mutation != Mutation::None {
            write!(f, ", mutation {:?}", self.mutation)?;
        }
        Ok(())
    }
}
