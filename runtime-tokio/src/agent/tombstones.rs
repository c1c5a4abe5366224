//! The leader's KV tombstone collector (Consul's `TombstoneGC`). A deleted key leaves a tombstone so a
//! blocking query on its prefix sees the delete's index; once no reasonable blocking query can still be
//! waiting on it (`TOMBSTONE_TTL`), the leader reaps it through Raft with `KvReapTombstones`, so the
//! tombstone table does not grow without bound.
//!
//! Consul hints each delete's index into a bucket that expires `TombstoneTTL` later (rounded to a
//! granularity) and reaps up to the highest index of an expired bucket. Sampling the applied index once per
//! granularity and reaping up to the sample taken a TTL ago reaps the same tombstones at the same time,
//! without a hint per delete.

use crate::driver::DriverHandle;
use concord_core::api::{Request, Response};
use concord_core::state::Command;
use concord_core::NodeId;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Consul's default `TombstoneTTL`.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(15 * 60);
/// Consul's `TombstoneTTLGranularity`.
pub const TOMBSTONE_GRANULARITY: Duration = Duration::from_secs(30);

/// What the collector needs to know, so tests can shorten it.
#[derive(Clone, Copy, Debug)]
pub struct TombstoneGc {
    pub ttl: Duration,
    pub granularity: Duration,
}

impl Default for TombstoneGc {
    fn default() -> Self {
        Self {
            ttl: TOMBSTONE_TTL,
            granularity: TOMBSTONE_GRANULARITY,
        }
    }
}

/// Run until the driver goes away. Only acts while `handle`'s node is the Raft leader; a new leader starts
/// with no samples, so the first reap comes one TTL after it took over (as Consul's GC, reset on leadership).
pub async fn run(handle: DriverHandle, gc: TombstoneGc) {
    let mut leader = handle.subscribe_leader();
    loop {
        if *leader.borrow_and_update() == Some(handle.id()) {
            lead(&handle, gc, &mut leader).await;
            continue;
        }
        if leader.changed().await.is_err() {
            return;
        }
    }
}

async fn lead(handle: &DriverHandle, gc: TombstoneGc, leader: &mut watch::Receiver<Option<NodeId>>) {
    let applied = handle.subscribe_applied();
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    // Highest index reaped up to, and the index of our own last reap entry: a sample that saw nothing but
    // that entry has nothing new to reap (otherwise an idle cluster would write a reap every granularity).
    let (mut reaped, mut own_entry) = (0, 0);
    let mut tick = tokio::time::interval(gc.granularity);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = leader.changed() => {
                if changed.is_err() || *leader.borrow_and_update() != Some(handle.id()) {
                    return;
                }
                continue;
            }
        }
        let now = Instant::now();
        samples.push_back((now, applied.borrow().index));
        let mut due = None;
        while let Some(&(at, index)) = samples.front() {
            if now.duration_since(at) < gc.ttl {
                break;
            }
            due = Some(index);
            samples.pop_front();
        }
        let Some(up_to) = due.filter(|&i| i > reaped && i != own_entry) else {
            continue;
        };
        match handle.call(Request::Write(Command::KvReapTombstones { up_to })).await {
            Response::Written { index, .. } => {
                tracing::debug!(target: "agent.leader", "reaped KV tombstones up to index {up_to}");
                (reaped, own_entry) = (up_to, index);
            }
            // Not leading any more, or no quorum: the next leader's collector takes over.
            other => tracing::debug!(target: "agent.leader", "tombstone reap failed: {other:?}"),
        }
    }
}
