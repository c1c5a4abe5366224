//! Deterministic simulation of concord clusters: the production node driver (`concord::driver`) under
//! madsim, with the leaf devices swapped for simulated ones — a seeded network with a nemesis, clocks that
//! drift, and a disk that keeps unsynced writes pending and loses them on a crash.
//!
//! Entry point: `cargo test --features sim` from the workspace root (see `tests/chaos.rs`). One seed decides
//! the whole run: cluster size, which faults are on and how often (swarm testing), the workload and the
//! schedule. A run has a safety phase (faults on, checkers watching every event and reply) and a liveness
//! phase (faults healed, the cluster must converge within a bound).
//!
//! The checkers and the simulated disk are pure and always built (their unit tests run without madsim);
//! everything that needs the simulator sits under `cfg(all(feature = "sim", madsim))`.
#![forbid(unsafe_code)]

#[cfg(all(feature = "sim", not(madsim)))]
compile_error!(
    "concord-sim's `sim` feature needs rustc's `--cfg madsim`, which the workspace's .cargo/config.toml sets. \
     Run cargo from the workspace root (e.g. `cargo test --features sim`), and do not set the RUSTFLAGS \
     environment variable: it replaces the config's rustflags (or add `--cfg madsim` to it yourself)."
);

pub mod disk;
pub mod history;
pub mod linearizability;
pub mod safety;

#[cfg(all(feature = "sim", madsim))]
mod sim;
#[cfg(all(feature = "sim", madsim))]
pub use sim::*;
