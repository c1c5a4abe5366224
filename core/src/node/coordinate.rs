//! Server-side batching of network coordinate updates (Consul's `Coordinate.Update` and `batchUpdate` in
//! `agent/consul/coordinate_endpoint.go`). Every agent sends its coordinate every 15 s or more; writing each
//! as its own log entry would cost a Raft round per agent, so the leader keeps only the latest update per
//! node and, one `coordinate_update_period` after the first update of a period, writes them as entries of
//! at most `coordinate_update_batch_size` updates, at most `coordinate_update_max_batches` entries a flush.
//! Updates beyond that are discarded (reported as `Event::CoordinateUpdatesDiscarded`): the agents send
//! again next interval.
//!
//! Invariants: at most one pending update per node; a `Timer::CoordinateFlush` is set exactly when updates
//! are pending; only a leader writes (a server that lost leadership drops what it collected, as Consul's
//! failed `raftApply` does).

use super::client::{Origin, Timer};
use super::{Effect, Event, Node, Role};
use crate::api::{ApiError, Response};
use crate::coordinate::{Coordinate, CoordinateConfig};
use crate::raft::Payload;
use crate::state::{Command, CoordinateUpdate};
use crate::time::Instant;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// The updates collected since the last flush.
#[derive(Debug, Default)]
pub(crate) struct CoordinateBatch {
    /// Node → its latest coordinate.
    pending: BTreeMap<String, Coordinate>,
}

impl Node {
    /// Queue one node's coordinate (on the leader), answering `Done` at once as Consul does.
    pub(super) fn queue_coordinate(
        &mut self,
        now: Instant,
        origin: Origin,
        update: CoordinateUpdate,
        out: &mut Vec<Effect>,
    ) {
        if update.node.is_empty() {
            let err = ApiError::BadRequest("Must provide node".into());
            return self.reply(origin, Response::Error(err), out);
        }
        // Consul refuses NaN/Inf and coordinates of another dimensionality than its own.
        let ours = Coordinate::new(&CoordinateConfig::default());
        if !update.coord.is_valid() || !update.coord.is_compatible_with(&ours) {
            let err = ApiError::BadRequest("invalid coordinate".into());
            return self.reply(origin, Response::Error(err), out);
        }
        if self.coordinates.pending.is_empty() {
            let at = now + self.config.limits.coordinate_update_period;
            self.timer(at, Timer::CoordinateFlush);
        }
        self.coordinates.pending.insert(update.node, update.coord);
        self.reply(origin, Response::Done, out);
    }

    /// Write what was collected: batches of `batch_size`, at most `max_batches` of them.
    pub(super) fn flush_coordinates(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let pending = std::mem::take(&mut self.coordinates.pending);
        if self.raft.role != Role::Leader || pending.is_empty() {
            return;
        }
        let limits = &self.config.limits;
        let batch_size = limits.coordinate_update_batch_size.max(1);
        let limit = batch_size.saturating_mul(limits.coordinate_update_max_batches.max(1));
        let mut updates: Vec<CoordinateUpdate> = pending
            .into_iter()
            .map(|(node, coord)| CoordinateUpdate { node, coord })
            .collect();
        if updates.len() > limit {
            let count = updates.len() - limit;
            // Consul keeps whichever updates its map iteration yields first (random order): choose at
            // random too, so the same nodes are not always the ones left out.
            updates.shuffle(&mut self.rng);
            updates.truncate(limit);
            updates.sort_by(|a, b| a.node.cmp(&b.node));
            out.push(Effect::Event(Event::CoordinateUpdatesDiscarded { count }));
        }
        for chunk in updates.chunks(batch_size) {
            let cmd = Command::CoordinateBatchUpdate(chunk.to_vec());
            // No client waits on these entries: a proposal lost to a leader change is sent again by the agent.
            let _ = self.raft.propose(now, Payload::Command(cmd.encode()));
        }
    }
}
