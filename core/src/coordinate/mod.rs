//! Network coordinates: serf's Vivaldi client (`serf/coordinate`), pure. Each agent keeps a coordinate in an
//! 8-dimensional Euclidean space plus a height (the access-link latency every path from it pays) and an
//! adjustment term (the mean residual error of its recent samples); the estimated round trip between two
//! agents is the distance between their coordinates. A [`Client`] moves its coordinate with every RTT
//! sample to another agent (taken from gossip probe round trips, with the other agent's coordinate in the
//! ack), as a spring system: a measured RTT longer than the estimate pushes the two apart, a shorter one
//! pulls together, weighted by the two coordinates' confidence (`error`).
//!
//! Invariants (as serf keeps them): a client's coordinate is always valid (every component finite) — an
//! update that would make it invalid resets it; its height is at least `height_min`; its error is at most
//! `vivaldi_error_max`; samples from other agents with an incompatible (wrong dimensionality) or invalid
//! coordinate, or an RTT outside `(0, 10 s]`, are refused and change nothing.

#[cfg(test)]
mod tests;

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// serf's `coordinate.Config`, with its `DefaultConfig()` values.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinateConfig {
    /// Dimensions of the Euclidean part (8: enough for Internet-like latencies, per the Vivaldi paper).
    pub dimensionality: usize,
    /// The largest (and initial) error of a coordinate.
    pub vivaldi_error_max: f64,
    /// How fast the error estimate follows new samples.
    pub vivaldi_ce: f64,
    /// How far a sample moves the coordinate.
    pub vivaldi_cc: f64,
    /// Samples in the adjustment term's window (0 turns the adjustment off).
    pub adjustment_window_size: usize,
    /// The smallest height, in seconds.
    pub height_min: f64,
    /// RTT samples per peer of which the median is used (a moving median filter against outliers).
    pub latency_filter_size: usize,
    /// The gravity constant, in seconds: how strongly coordinates are pulled back towards the origin so the
    /// whole system does not drift.
    pub gravity_rho: f64,
}

impl Default for CoordinateConfig {
    fn default() -> Self {
        CoordinateConfig {
            dimensionality: 8,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10.0e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

/// A network coordinate (Consul's JSON `Coord`: `Vec`, `Error`, `Adjustment`, `Height`; all in seconds).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Coordinate {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

/// Bitwise equality: coordinates are replicated state, compared exactly (and `Eq` is sound for it).
impl PartialEq for Coordinate {
    fn eq(&self, other: &Self) -> bool {
        let bits = |c: &Coordinate| {
            (
                c.vec.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                c.error.to_bits(),
                c.adjustment.to_bits(),
                c.height.to_bits(),
            )
        };
        bits(self) == bits(other)
    }
}

impl Eq for Coordinate {}

/// Distances below this are treated as zero (serf's `zeroThreshold`).
const ZERO_THRESHOLD: f64 = 1.0e-6;
/// The longest RTT sample accepted (serf's `maxRTT`).
pub const MAX_RTT: Duration = Duration::from_secs(10);

impl Coordinate {
    /// A coordinate at the origin with the largest error (serf's `NewCoordinate`).
    pub fn new(config: &CoordinateConfig) -> Self {
        Coordinate {
            vec: vec![0.0; config.dimensionality],
            error: config.vivaldi_error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Every component is finite.
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    /// Both live in the same space (same dimensionality).
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// The distance without the adjustment terms, in seconds.
    fn raw_distance_to(&self, other: &Coordinate) -> f64 {
        magnitude(self.vec.iter().zip(&other.vec).map(|(a, b)| a - b)) + self.height + other.height
    }

    /// The estimated round trip to `other`, in seconds: `‖a−b‖ + heights`, plus both adjustments only if
    /// that keeps it positive. Coordinates of different dimensionality compare over the shorter vector
    /// (callers check [`Coordinate::is_compatible_with`] first).
    pub fn distance_secs(&self, other: &Coordinate) -> f64 {
        let dist = self.raw_distance_to(other);
        let adjusted = dist + self.adjustment + other.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            dist
        }
    }

    /// [`Coordinate::distance_secs`] as a duration (whole nanoseconds, as Go's `time.Duration`).
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        let secs = self.distance_secs(other);
        if secs.is_finite() && secs > 0.0 {
            Duration::from_nanos((secs * 1.0e9) as u64)
        } else {
            Duration::ZERO
        }
    }

    /// Move by `force` along the unit vector from `other` to us (serf's `ApplyForce`); the height follows.
    fn apply_force(&self, config: &CoordinateConfig, force: f64, other: &Coordinate, rng: &mut impl Rng) -> Coordinate {
        let mut ret = self.clone();
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, rng);
        for (v, u) in ret.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        if mag > ZERO_THRESHOLD {
            ret.height = ((ret.height + other.height) * force / mag + ret.height).max(config.height_min);
        }
        ret
    }
}

fn magnitude(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector from `b` to `a` and the distance between them; for (nearly) equal points a random
/// direction (so two agents that start at the origin can separate) and distance 0.
fn unit_vector_at(a: &[f64], b: &[f64], rng: &mut impl Rng) -> (Vec<f64>, f64) {
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mag = magnitude(diff.iter().copied());
    if mag > ZERO_THRESHOLD {
        return (diff.iter().map(|x| x / mag).collect(), mag);
    }
    let random: Vec<f64> = diff.iter().map(|_| rng.gen::<f64>() - 0.5).collect();
    let rmag = magnitude(random.iter().copied());
    if rmag > ZERO_THRESHOLD {
        return (random.iter().map(|x| x / rmag).collect(), 0.0);
    }
    let mut unit = vec![0.0; a.len()];
    if let Some(first) = unit.first_mut() {
        *first = 1.0;
    }
    (unit, 0.0)
}

/// Why a sample was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinateError {
    #[error("dimensions aren't compatible")]
    Incompatible,
    #[error("coordinate is invalid")]
    Invalid,
    #[error("round trip time not in valid range, duration {0:?} is not a positive value less than {MAX_RTT:?}")]
    RttOutOfRange(Duration),
}

/// Counters (serf's `ClientStats`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Times the coordinate became invalid and was reset to the origin.
    pub resets: u64,
    pub updates: u64,
    pub refused: u64,
}

/// Most peers whose latency samples are kept; beyond it the oldest-named peer's samples are dropped (serf
/// relies on `ForgetNode` alone; a bound keeps a churning pool from growing the table).
const MAX_FILTERED_PEERS: usize = 4096;

/// serf's `coordinate.Client`: this agent's coordinate and the state that moves it.
#[derive(Clone, Debug)]
pub struct Client {
    coord: Coordinate,
    origin: Coordinate,
    config: CoordinateConfig,
    adjustment_index: usize,
    adjustment_samples: Vec<f64>,
    latency_samples: BTreeMap<String, Vec<f64>>,
    stats: ClientStats,
}

impl Client {
    pub fn new(config: CoordinateConfig) -> Self {
        Client {
            coord: Coordinate::new(&config),
            origin: Coordinate::new(&config),
            adjustment_index: 0,
            adjustment_samples: vec![0.0; config.adjustment_window_size],
            latency_samples: BTreeMap::new(),
            stats: ClientStats::default(),
            config,
        }
    }

    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Replace our coordinate (serf's `SetCoordinate`), if it is valid and compatible.
    pub fn set_coordinate(&mut self, coord: Coordinate) -> Result<(), CoordinateError> {
        self.check(&coord)?;
        self.coord = coord;
        Ok(())
    }

    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Forget the latency samples of a peer that left.
    pub fn forget_node(&mut self, node: &str) {
        self.latency_samples.remove(node);
    }

    /// The estimated round trip from us to `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        self.coord.distance_to(other)
    }

    fn check(&self, other: &Coordinate) -> Result<(), CoordinateError> {
        if !self.coord.is_compatible_with(other) {
            return Err(CoordinateError::Incompatible);
        }
        if !other.is_valid() {
            return Err(CoordinateError::Invalid);
        }
        Ok(())
    }

    /// One RTT sample to `node`, whose coordinate is `other` (serf's `Update`): filter the RTT, then the
    /// Vivaldi step, the adjustment and gravity. Returns our new coordinate; a refused sample changes
    /// nothing. `rng` only breaks the tie of two coinciding coordinates.
    pub fn update(
        &mut self,
        node: &str,
        other: &Coordinate,
        rtt: Duration,
        rng: &mut impl Rng,
    ) -> Result<&Coordinate, CoordinateError> {
        if let Err(e) = self.check(other) {
            self.stats.refused += 1;
            return Err(e);
        }
        if rtt.is_zero() || rtt > MAX_RTT {
            self.stats.refused += 1;
            return Err(CoordinateError::RttOutOfRange(rtt));
        }
        let rtt_secs = self.latency_filter(node, rtt.as_secs_f64());
        self.update_vivaldi(other, rtt_secs, rng);
        self.update_adjustment(other, rtt_secs);
        self.update_gravity(rng);
        if !self.coord.is_valid() {
            self.stats.resets += 1;
            self.coord = Coordinate::new(&self.config);
        }
        self.stats.updates += 1;
        Ok(&self.coord)
    }

    /// The median of the last `latency_filter_size` samples to `node`, this one included.
    fn latency_filter(&mut self, node: &str, rtt_secs: f64) -> f64 {
        if !self.latency_samples.contains_key(node) && self.latency_samples.len() >= MAX_FILTERED_PEERS {
            let first = self.latency_samples.keys().next().cloned();
            if let Some(first) = first {
                self.latency_samples.remove(&first);
            }
        }
        let samples = self.latency_samples.entry(node.to_owned()).or_default();
        samples.push(rtt_secs);
        if samples.len() > self.config.latency_filter_size.max(1) {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt_secs: f64, rng: &mut impl Rng) {
        let c = &self.config;
        let dist = self.coord.distance_secs(other);
        let rtt_secs = rtt_secs.max(ZERO_THRESHOLD);
        let wrongness = (dist - rtt_secs).abs() / rtt_secs;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        self.coord.error = (c.vivaldi_ce * weight * wrongness + self.coord.error * (1.0 - c.vivaldi_ce * weight))
            .min(c.vivaldi_error_max);
        let force = c.vivaldi_cc * weight * (rtt_secs - dist);
        self.coord = self.coord.apply_force(c, force, other, rng);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt_secs: f64) {
        let window = self.config.adjustment_window_size;
        if window == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] = rtt_secs - self.coord.raw_distance_to(other);
        self.adjustment_index = (self.adjustment_index + 1) % window;
        self.coord.adjustment = self.adjustment_samples.iter().sum::<f64>() / (2.0 * window as f64);
    }

    fn update_gravity(&mut self, rng: &mut impl Rng) {
        let dist = self.origin.distance_secs(&self.coord);
        let force = -(dist / self.config.gravity_rho).powi(2);
        self.coord = self.coord.apply_force(&self.config, force, &self.origin, rng);
    }
}

/// Encode a coordinate for a gossip ack payload (postcard; at most `8 + 8·dims + 3` bytes for 8 dims).
pub fn encode_ack_payload(coord: &Coordinate) -> Vec<u8> {
    postcard::to_allocvec(coord).expect("coordinates always encode")
}

/// Decode an ack payload; `None` for anything that is not exactly one valid coordinate of at most
/// `MAX_DIMENSIONS` dimensions.
pub fn decode_ack_payload(bytes: &[u8]) -> Option<Coordinate> {
    match postcard::take_from_bytes::<Coordinate>(bytes) {
        Ok((c, [])) if c.vec.len() <= MAX_DIMENSIONS && c.is_valid() => Some(c),
        _ => None,
    }
}

/// The most dimensions a coordinate from the network may have.
pub const MAX_DIMENSIONS: usize = 64;

/// Consul's `?near` order: a stable sort of `items` by the estimated RTT from `origin`; items whose node has
/// no (compatible) coordinate go last, in their original order. Without an origin coordinate the order is
/// left as it is (Consul sorts only when the source node has one).
pub fn sort_near<T>(items: &mut [T], origin: Option<&Coordinate>, coord_of: impl Fn(&T) -> Option<&Coordinate>) {
    let coords: Vec<Option<&Coordinate>> = items.iter().map(&coord_of).collect();
    let order = near_order(origin, &coords);
    apply_permutation(items, order);
}

/// The positions of `coords` in `?near` order (see [`sort_near`]).
pub fn near_order(origin: Option<&Coordinate>, coords: &[Option<&Coordinate>]) -> Vec<usize> {
    let Some(origin) = origin else {
        return (0..coords.len()).collect();
    };
    let key = |c: &Option<&Coordinate>| {
        c.filter(|c| c.is_compatible_with(origin))
            .map_or(f64::INFINITY, |c| origin.distance_secs(c))
    };
    let mut keyed: Vec<(f64, usize)> = coords.iter().enumerate().map(|(i, c)| (key(c), i)).collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// Rearrange `items` so that position `k` holds what was at `order[k]`.
fn apply_permutation<T>(items: &mut [T], mut order: Vec<usize>) {
    for k in 0..order.len() {
        let mut from = order[k];
        while from < k {
            from = order[from];
        }
        items.swap(k, from);
        order[k] = from;
    }
}
