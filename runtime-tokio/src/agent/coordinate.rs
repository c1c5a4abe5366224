//! Sending this agent's LAN coordinate to the servers (Consul's `agent.sendCoordinate`): periodically, at
//! Consul's rate-scaled interval (at least `SYNC_COORDINATE_INTERVAL_MIN`, longer in big pools so the whole
//! cluster stays near `SYNC_COORDINATE_RATE_TARGET` updates a second) plus a random stagger, and only when the
//! coordinate moved since the last accepted update. The leader keeps the latest update per node and writes
//! them in batches (`Request::CoordinateUpdate`, see `concord_core`'s node coordinate batching) into the
//! replicated catalog (one coordinate per node, removed with the node).
//!
//! One difference from Consul: the first update goes out a few seconds after the first RTT sample moved the
//! coordinate instead of after a full interval, so a fresh agent (and a test) sees its coordinate without
//! waiting 15–30 s.

use crate::gossip::PoolHandle;
use crate::http::Backend;
use concord_core::api::{Request, Response};
use concord_core::coordinate::Coordinate;
use concord_core::state::CoordinateUpdate;
use rand::Rng;
use std::time::Duration;

/// Consul's `sync_coordinate_rate_target`: cluster-wide coordinate updates per second.
pub const SYNC_COORDINATE_RATE_TARGET: f64 = 64.0;
/// Consul's `sync_coordinate_interval_min`.
pub const SYNC_COORDINATE_INTERVAL_MIN: Duration = Duration::from_secs(15);
/// Delay before the first update (plus a stagger of up to as much again).
const FIRST_UPDATE: Duration = Duration::from_secs(2);

/// Consul's `lib.RateScaledInterval`: the interval at which `n` agents together send `rate` a second,
/// never below `min`.
pub fn rate_scaled_interval(rate: f64, min: Duration, n: usize) -> Duration {
    let interval = Duration::from_secs_f64(n as f64 / rate);
    interval.max(min)
}

pub async fn run<B: Backend>(backend: B, lan: PoolHandle, node: String) {
    let mut wait = FIRST_UPDATE + rand::rngs::OsRng.gen_range(Duration::ZERO..=FIRST_UPDATE);
    // The coordinate before any RTT sample (the origin) tells the servers nothing: never sent.
    let mut last_sent: Option<Coordinate> = Some(lan.coordinate.borrow().clone());
    loop {
        tokio::time::sleep(wait).await;
        let coord = lan.coordinate.borrow().clone();
        if last_sent.as_ref() == Some(&coord) && last_sent.as_ref().is_some_and(|c| c.vec.iter().all(|x| *x == 0.0)) {
            // No sample yet: look again soon rather than after a whole interval.
            wait = FIRST_UPDATE;
            continue;
        }
        if last_sent.as_ref() != Some(&coord) {
            let update = CoordinateUpdate {
                node: node.clone(),
                coord: coord.clone(),
            };
            match backend.call(Request::CoordinateUpdate(update)).await {
                Response::Done => last_sent = Some(coord),
                other => tracing::debug!(target: "agent", "coordinate update failed: {other:?}"),
            }
        }
        let interval = rate_scaled_interval(
            SYNC_COORDINATE_RATE_TARGET,
            SYNC_COORDINATE_INTERVAL_MIN,
            lan.members().len(),
        );
        wait = interval + rand::rngs::OsRng.gen_range(Duration::ZERO..=interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_scales_with_the_pool_above_the_minimum() {
        let min = SYNC_COORDINATE_INTERVAL_MIN;
        assert_eq!(rate_scaled_interval(64.0, min, 3), min);
        assert_eq!(rate_scaled_interval(64.0, min, 960), min);
        assert_eq!(rate_scaled_interval(64.0, min, 6400), Duration::from_secs(100));
    }
}
