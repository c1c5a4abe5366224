//! Server-side batching of network coordinate updates (Consul's `Coordinate.Update` and `batchUpdate` in
//! `agent/consul/coordinate_endpoint.go`). Every agent sends its coordinate every 15 s or more; writing each
//! as its own log entry would cost a Raft round per agent, so the leader keeps only the latest update per
//! node and, one `coordinate_update_period` after the first update of a period, writes them as entries of
//! at most `coordinate_update_batch_size` updates, at most `coordinate_update_max_batches` entries a flush.
//! Updates beyond that are discarded (reported as `Event::CoordinateUpdatesDiscarded`): the agents send
//! again next interval.
//!
//! Invariants: at most one pending update per node, and at most [`PENDING_FACTOR`] × what one flush writes
//! (updates for further nodes are discarded on arrival and counted with the flush's); a
//! `Timer::CoordinateFlush` is set exactly when updates are pending; only a leader writes (a server that
//! lost leadership drops what it collected, as Consul's failed `raftApply` does).

use super::client::{Origin, Timer};
use super::{Effect, Event, Node, Role};
use crate::api::{ApiError, Response};
use crate::coordinate::{Coordinate, CoordinateConfig};
use crate::raft::Payload;
use crate::state::{Command, CoordinateUpdate};
use crate::time::Instant;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;

/// How many times a flush's capacity (`batch_size × max_batches`) the leader holds at most: Consul's map is
/// unbounded; a bound keeps a flood of made-up node names from growing it without end, while leaving the
/// choice of what to discard to the flush (at random) in all but such floods.
pub(crate) const PENDING_FACTOR: usize = 4;

/// The updates collected since the last flush.
#[derive(Debug, Default)]
pub(crate) struct CoordinateBatch {
    /// Node → its latest coordinate.
    pending: BTreeMap<String, Coordinate>,
    /// Updates for new nodes discarded on arrival since the last flush (the map was full).
    overflow: usize,
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
        let batch = &mut self.coordinates;
        if batch.pending.len() >= PENDING_FACTOR.saturating_mul(flush_capacity(&self.config.limits))
            && !batch.pending.contains_key(&update.node)
        {
            batch.overflow += 1;
        } else {
            batch.pending.insert(update.node, update.coord);
        }
        self.reply(origin, Response::Done, out);
    }

    /// Write what was collected: batches of `batch_size`, at most `max_batches` of them.
    pub(super) fn flush_coordinates(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let pending = std::mem::take(&mut self.coordinates.pending);
        let overflow = std::mem::take(&mut self.coordinates.overflow);
        if self.raft.role != Role::Leader || pending.is_empty() {
            return;
        }
        let batch_size = self.config.limits.coordinate_update_batch_size.max(1);
        let limit = flush_capacity(&self.config.limits);
        let mut updates: Vec<CoordinateUpdate> = pending
            .into_iter()
            .map(|(node, coord)| CoordinateUpdate { node, coord })
            .collect();
        let mut count = overflow;
        if updates.len() > limit {
            count += updates.len() - limit;
            // Consul keeps whichever updates its map iteration yields first (random order): choose at
            // random too, so the same nodes are not always the ones left out.
            updates.shuffle(&mut self.rng);
            updates.truncate(limit);
            updates.sort_by(|a, b| a.node.cmp(&b.node));
        }
        if count > 0 {
            out.push(Effect::Event(Event::CoordinateUpdatesDiscarded { count }));
        }
        for chunk in updates.chunks(batch_size) {
            let cmd = Command::CoordinateBatchUpdate(chunk.to_vec());
            // No client waits on these entries: a proposal lost to a leader change is sent again by the agent.
            let _ = self.raft.propose(now, Payload::Command(cmd.encode()));
        }
    }
}

/// The most updates one flush writes: `batch_size × max_batches`.
fn flush_capacity(limits: &crate::node::Limits) -> usize {
    let batch_size = limits.coordinate_update_batch_size.max(1);
    batch_size.saturating_mul(limits.coordinate_update_max_batches.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Request;
    use crate::node::{Input, Limits, NodeConfig, RaftConfig};
    use crate::raft::Recovered;
    use crate::NodeId;
    use std::time::Duration;

    /// A single elected server with tiny batching limits: batches of 2, 2 a flush, 1 s periods.
    fn leader() -> (Node, Instant) {
        let config = NodeConfig {
            id: NodeId(1),
            name: "s1".into(),
            address: "10.0.0.1:8300".into(),
            seed: 1,
            raft: RaftConfig::default(),
            limits: Limits {
                coordinate_update_period: Duration::from_secs(1),
                coordinate_update_batch_size: 2,
                coordinate_update_max_batches: 2,
                ..Limits::default()
            },
            mutation: Default::default(),
        };
        let mut now = Instant(1_000_000);
        let mut node = Node::new(config, Recovered::default(), now);
        let mut out = Vec::new();
        let servers = vec![(NodeId(1), "s1".to_string(), "10.0.0.1:8300".to_string())];
        node.handle(
            now,
            Input::Client {
                req_id: 1,
                req: Request::Bootstrap { servers },
            },
            &mut out,
        );
        for _ in 0..100 {
            if node.raft.role == Role::Leader {
                break;
            }
            now = node.next_deadline().unwrap_or(now).max(now);
            node.handle(now, Input::Tick, &mut out);
            let persisted: Vec<u64> = out
                .iter()
                .filter_map(|e| match e {
                    Effect::Persist { seq, .. } => Some(*seq),
                    _ => None,
                })
                .collect();
            out.clear();
            for seq in persisted {
                node.handle(now, Input::Persisted { up_to: seq }, &mut out);
            }
        }
        assert_eq!(node.raft.role, Role::Leader);
        (node, now)
    }

    fn update(node: &str) -> Request {
        let mut coord = Coordinate::new(&CoordinateConfig::default());
        coord.vec[0] = 0.01;
        Request::CoordinateUpdate(CoordinateUpdate {
            node: node.into(),
            coord,
        })
    }

    #[test]
    fn a_flood_of_node_names_is_bounded_and_counted_as_discarded() {
        let (mut node, now) = leader();
        let mut out = Vec::new();
        let capacity = 2 * 2;
        for i in 0..100 {
            node.handle(
                now,
                Input::Client {
                    req_id: 10 + i,
                    req: update(&format!("n{i}")),
                },
                &mut out,
            );
        }
        assert_eq!(node.coordinates.pending.len(), PENDING_FACTOR * capacity);
        // A node already pending is still updated.
        node.handle(
            now,
            Input::Client {
                req_id: 999,
                req: update("n0"),
            },
            &mut out,
        );
        assert!(out
            .iter()
            .all(|e| !matches!(e, Effect::Reply { resp, .. } if *resp != Response::Done)));
        out.clear();
        node.handle(now + Duration::from_secs(1), Input::Tick, &mut out);
        let discarded: Vec<usize> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Event(Event::CoordinateUpdatesDiscarded { count }) => Some(*count),
                _ => None,
            })
            .collect();
        assert_eq!(discarded, [100 - capacity], "the overflow and the flush's excess");
        assert!(node.coordinates.pending.is_empty());
        assert_eq!(node.coordinates.overflow, 0);
        let batches = out
            .iter()
            .filter_map(|e| match e {
                Effect::Persist { ops, .. } => Some(ops),
                _ => None,
            })
            .flatten()
            .filter_map(|op| match op {
                crate::raft::PersistOp::Append(entries) => Some(entries),
                _ => None,
            })
            .flatten()
            .count();
        assert_eq!(batches, 2, "coordinate_update_max_batches entries");
    }
}
