//! The madsim side of the simulator: one run per seed, on a fresh madsim runtime in a fresh thread.
//!
//! Layout: `plan` (what the seed decides up front), `clock` and `net` and the crate's `disk` (the leaf
//! devices), `cluster` (servers: start, crash, restart, pause — each server is a madsim node running the
//! production driver), `workload` (clients), `run` (phases, nemesis, liveness, checks).

mod clock;
mod cluster;
mod net;
mod plan;
mod run;
mod workload;

pub use clock::SimClock;
pub use net::{LinkFaults, NetStats};
pub use plan::{FaultMix, Plan, WorkloadMix, MAX_DRIFT_PPM};
pub use run::{run_plan, run_seed, run_seed_with, RunStats, SeedReport};

use crate::safety::SafetyChecker;
use concord::driver::DriverHandle;
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// FNV-1a, for the run's trace hash (std's hashers are not guaranteed stable across releases).
#[derive(Clone, Copy, Debug)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> Self {
        TraceHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TraceHash {
    pub fn add(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

/// State the tasks of one run share (madsim runs them on one thread; the locks are never contended).
pub(crate) struct Shared {
    origin: std::time::Instant,
    handles: Mutex<Vec<Option<DriverHandle>>>,
    /// Servers clients talk to: the bootstrapped ones, and spares once asked to join (an idle spare only
    /// answers "No cluster leader").
    targets: Mutex<Vec<bool>>,
    stopping: AtomicBool,
    pub checker: Mutex<SafetyChecker>,
    pub trace: Mutex<TraceHash>,
    pub ops: AtomicU64,
    pub node_events: AtomicU64,
    pub membership_events: AtomicU64,
}

impl Shared {
    fn new(servers: usize) -> Self {
        Shared {
            origin: std::time::Instant::now(),
            handles: Mutex::new(vec![None; servers]),
            targets: Mutex::new(vec![false; servers]),
            stopping: AtomicBool::new(false),
            checker: Mutex::new(SafetyChecker::new()),
            trace: Mutex::new(TraceHash::default()),
            ops: AtomicU64::new(0),
            node_events: AtomicU64::new(0),
            membership_events: AtomicU64::new(0),
        }
    }

    /// True simulated time since the run started, in microseconds.
    pub fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    pub fn handle(&self, i: usize) -> Option<DriverHandle> {
        self.handles.lock().expect("unpoisoned")[i].clone()
    }

    pub fn set_handle(&self, i: usize, h: Option<DriverHandle>) {
        self.handles.lock().expect("unpoisoned")[i] = h;
    }

    pub fn set_target(&self, i: usize) {
        self.targets.lock().expect("unpoisoned")[i] = true;
    }

    /// A random live server among the targets.
    pub fn random_handle(&self, rng: &mut impl Rng) -> Option<(usize, DriverHandle)> {
        let handles = self.handles.lock().expect("unpoisoned");
        let targets = self.targets.lock().expect("unpoisoned");
        let live: Vec<usize> = (0..handles.len())
            .filter(|&i| handles[i].is_some() && targets[i])
            .collect();
        if live.is_empty() {
            return None;
        }
        let i = live[rng.gen_range(0..live.len())];
        handles[i].clone().map(|h| (i, h))
    }

    pub fn live_count(&self) -> usize {
        self.handles
            .lock()
            .expect("unpoisoned")
            .iter()
            .filter(|h| h.is_some())
            .count()
    }

    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    pub fn count_op(&self) {
        self.ops.fetch_add(1, Ordering::Relaxed);
    }

    pub fn violation(&self) -> Option<String> {
        self.checker.lock().expect("unpoisoned").violation().map(str::to_string)
    }
}
