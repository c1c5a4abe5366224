//! Sending this agent's LAN coordinate to the servers (Consul's `agent.sendCoordinate`): every
//! rate-scaled interval (at least `sync_coordinate_interval_min`, longer in big pools so the whole cluster
//! stays near `sync_coordinate_rate_target` updates a second) plus a random stagger, whether or not the
//! coordinate moved — so an update the leader accepted but lost (it batches them, see `concord_core`'s node
//! coordinate batching, and a leader change drops the pending batch) is sent again on the next interval.
//! The leader writes them into the replicated catalog (one coordinate per node, removed with the node);
//! a coordinate equal to the stored one writes nothing.
//!
//! One difference from Consul: the first update goes out a few seconds after the first RTT sample moved the
//! coordinate instead of after a full interval, so a fresh agent (and a test) sees its coordinate without
//! waiting 15–30 s. Without any sample the origin goes out after a full interval, as Consul's would.

use crate::gossip::PoolHandle;
use crate::http::Backend;
use concord_core::api::{Request, Response};
use concord_core::coordinate::Coordinate;
use concord_core::state::CoordinateUpdate;
use rand::Rng;
use std::time::Duration;
use tokio::sync::watch;

/// Consul's default `sync_coordinate_rate_target`: cluster-wide coordinate updates per second.
pub const SYNC_COORDINATE_RATE_TARGET: f64 = 64.0;
/// Consul's default `sync_coordinate_interval_min`.
pub const SYNC_COORDINATE_INTERVAL_MIN: Duration = Duration::from_secs(15);
/// Delay before looking for the first update (plus a stagger of up to as much again).
const FIRST_UPDATE: Duration = Duration::from_secs(2);

/// Consul's `lib.RateScaledInterval`: the interval at which `n` agents together send `rate` a second,
/// never below `min` (`min` itself for a rate of 0 or less).
pub fn rate_scaled_interval(rate: f64, min: Duration, n: usize) -> Duration {
    if rate <= f64::MIN_POSITIVE || rate.is_nan() {
        return min;
    }
    let interval = Duration::try_from_secs_f64(n as f64 / rate).unwrap_or(Duration::MAX);
    interval.max(min)
}

/// `sync_coordinate_rate_target` and `sync_coordinate_interval_min`.
#[derive(Clone, Copy, Debug)]
pub struct SyncCoordinate {
    pub rate_target: f64,
    pub interval_min: Duration,
}

impl SyncCoordinate {
    /// The wait before the next update in a LAN pool of `members`: the rate-scaled interval plus a
    /// random stagger of up to as much again (`lib.RandomStagger`).
    fn next_wait(&self, members: usize) -> Duration {
        let interval = rate_scaled_interval(self.rate_target, self.interval_min, members);
        interval.saturating_add(rand::rngs::OsRng.gen_range(Duration::ZERO..=interval))
    }
}

pub async fn run<B: Backend>(backend: B, lan: PoolHandle, node: String, sync: SyncCoordinate) {
    let coordinate = lan.coordinate.clone();
    send_loop(backend, coordinate, move || lan.members().len(), node, sync).await
}

/// [`run`]'s loop: `coordinate` is this agent's LAN coordinate, `members` the LAN pool's size.
async fn send_loop<B: Backend>(
    backend: B,
    coordinate: watch::Receiver<Coordinate>,
    members: impl Fn() -> usize,
    node: String,
    sync: SyncCoordinate,
) {
    let start = tokio::time::Instant::now();
    let origin = coordinate.borrow().clone();
    let first_interval = sync.next_wait(members());
    let mut wait = FIRST_UPDATE + rand::rngs::OsRng.gen_range(Duration::ZERO..=FIRST_UPDATE);
    let mut sent_once = false;
    loop {
        tokio::time::sleep(wait).await;
        let coord = coordinate.borrow().clone();
        if !sent_once && coord == origin && start.elapsed() < first_interval {
            // No sample yet: look again soon rather than after a whole interval.
            wait = FIRST_UPDATE;
            continue;
        }
        let update = CoordinateUpdate {
            node: node.clone(),
            coord,
        };
        match backend.call(Request::CoordinateUpdate(update)).await {
            Response::Done => sent_once = true,
            other => tracing::debug!(target: "agent", "coordinate update failed: {other:?}"),
        }
        wait = sync.next_wait(members());
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
        assert_eq!(
            rate_scaled_interval(2.0, Duration::from_secs(1), 10),
            Duration::from_secs(5)
        );
        // Consul's guard: no rate means every `min`.
        assert_eq!(rate_scaled_interval(0.0, min, 6400), min);
        assert_eq!(rate_scaled_interval(-1.0, min, 6400), min);
    }

    fn sent(fake: &crate::http::fake::FakeBackend) -> Vec<Coordinate> {
        fake.requests()
            .into_iter()
            .filter_map(|r| match r {
                Request::CoordinateUpdate(u) => Some(u.coord),
                _ => None,
            })
            .collect()
    }

    const SYNC: SyncCoordinate = SyncCoordinate {
        rate_target: 64.0,
        interval_min: Duration::from_secs(10),
    };

    /// Consul's `sendCoordinate` sends every interval whether or not the coordinate moved, so an update
    /// lost between the leader's batches is sent again.
    #[tokio::test(start_paused = true)]
    async fn the_coordinate_is_sent_every_interval_even_when_it_did_not_move() {
        let fake = crate::http::fake::FakeBackend::new();
        let config = concord_core::coordinate::CoordinateConfig::default();
        let (tx, rx) = watch::channel(Coordinate::new(&config));
        let mut moved = Coordinate::new(&config);
        moved.vec[0] = 0.25;
        tx.send(moved.clone()).unwrap();
        let task = tokio::spawn(send_loop(fake.clone(), rx, || 3, "n1".into(), SYNC));
        // The first update a few seconds in, then one every 10–20 s: at least 10 in 200 s, all the same.
        tokio::time::sleep(Duration::from_secs(200)).await;
        let coords = sent(&fake);
        assert!((10..=21).contains(&coords.len()), "{} updates", coords.len());
        assert!(coords.iter().all(|c| *c == moved));
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_any_sample_the_origin_goes_out_after_a_full_interval() {
        let fake = crate::http::fake::FakeBackend::new();
        let origin = Coordinate::new(&concord_core::coordinate::CoordinateConfig::default());
        let (_tx, rx) = watch::channel(origin.clone());
        let task = tokio::spawn(send_loop(fake.clone(), rx, || 1, "n1".into(), SYNC));
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(sent(&fake).is_empty(), "not before the interval");
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(sent(&fake).first(), Some(&origin));
        task.abort();
    }
}
