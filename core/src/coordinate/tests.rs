use super::*;
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn dims(n: usize) -> CoordinateConfig {
    CoordinateConfig {
        dimensionality: n,
        ..CoordinateConfig::default()
    }
}

fn coord(vec: &[f64], height: f64, adjustment: f64) -> Coordinate {
    Coordinate {
        vec: vec.to_vec(),
        error: 1.5,
        adjustment,
        height,
    }
}

#[test]
fn defaults_are_serfs() {
    let c = CoordinateConfig::default();
    assert_eq!(c.dimensionality, 8);
    assert_eq!(c.vivaldi_error_max, 1.5);
    assert_eq!((c.vivaldi_ce, c.vivaldi_cc), (0.25, 0.25));
    assert_eq!(c.adjustment_window_size, 20);
    assert_eq!(c.height_min, 10.0e-6);
    assert_eq!(c.latency_filter_size, 3);
    assert_eq!(c.gravity_rho, 150.0);
    let origin = Coordinate::new(&c);
    assert_eq!(origin.vec, vec![0.0; 8]);
    assert_eq!((origin.error, origin.adjustment, origin.height), (1.5, 0.0, 10.0e-6));
}

#[test]
fn distance_is_the_norm_plus_heights_plus_adjustments_unless_negative() {
    // serf's TestCoordinate_DistanceTo: ‖(-0.5,1.3,2.4) − (1.2,-2.3,3.4)‖ = 4.104875150354758.
    let a = coord(&[-0.5, 1.3, 2.4], 0.0, 0.0);
    let b = coord(&[1.2, -2.3, 3.4], 0.0, 0.0);
    assert!((a.distance_secs(&b) - 4.104875150354758).abs() < 1e-12);
    assert_eq!(a.distance_to(&b), Duration::from_nanos(4_104_875_150));
    let a = coord(&[-0.5, 1.3, 2.4], 0.1, 0.2);
    let b = coord(&[1.2, -2.3, 3.4], 0.3, 0.4);
    assert!((a.distance_secs(&b) - (4.104875150354758 + 0.4 + 0.6)).abs() < 1e-12);
    // Adjustments that would make it negative are left out.
    let a = coord(&[0.0, 0.0, 0.0], 0.1, -1.0);
    let b = coord(&[0.3, 0.4, 0.0], 0.1, -1.0);
    assert!((a.distance_secs(&b) - 0.7).abs() < 1e-12);
}

#[test]
fn bad_samples_are_refused_and_change_nothing() {
    let mut client = Client::new(dims(3));
    let mut rng = SmallRng::seed_from_u64(1);
    let before = client.coordinate().clone();
    let ok = coord(&[0.1, 0.0, 0.0], 0.0, 0.0);
    assert_eq!(
        client.update("b", &coord(&[0.0, 0.0], 0.0, 0.0), Duration::from_millis(10), &mut rng),
        Err(CoordinateError::Incompatible)
    );
    assert_eq!(
        client.update(
            "b",
            &coord(&[f64::NAN, 0.0, 0.0], 0.0, 0.0),
            Duration::from_millis(10),
            &mut rng
        ),
        Err(CoordinateError::Invalid)
    );
    for rtt in [Duration::ZERO, MAX_RTT + Duration::from_nanos(1)] {
        assert_eq!(
            client.update("b", &ok, rtt, &mut rng),
            Err(CoordinateError::RttOutOfRange(rtt))
        );
    }
    assert_eq!(*client.coordinate(), before);
    assert_eq!(client.stats().refused, 4);
    assert!(client.update("b", &ok, MAX_RTT, &mut rng).is_ok());
    assert_ne!(*client.coordinate(), before);
}

#[test]
fn the_latency_filter_is_a_moving_median_of_three() {
    let mut client = Client::new(dims(3));
    assert_eq!(client.latency_filter("a", 0.201), 0.201);
    assert_eq!(client.latency_filter("a", 0.200), 0.201);
    assert_eq!(client.latency_filter("a", 0.207), 0.201);
    // The 0.201 sample ages out; an outlier does not move the median.
    assert_eq!(client.latency_filter("a", 1.9), 0.207);
    assert_eq!(client.latency_filter("a", 0.203), 0.207);
    assert_eq!(client.latency_filter("a", 0.199), 0.203);
    // Per peer.
    assert_eq!(client.latency_filter("b", 0.5), 0.5);
    client.forget_node("a");
    assert_eq!(client.latency_filter("a", 0.3), 0.3);
}

#[test]
fn two_agents_at_the_origin_separate_to_their_rtt() {
    // serf's TestClient_Update: both start at the origin; repeated 150 ms samples push them apart.
    let config = dims(3);
    let mut client = Client::new(config.clone());
    let mut rng = SmallRng::seed_from_u64(7);
    let mut other = Coordinate::new(&config);
    other.vec[2] = 0.001;
    for _ in 0..20 {
        client
            .update("other", &other, Duration::from_millis(150), &mut rng)
            .unwrap();
    }
    let c = client.coordinate();
    // Pushed away from `other` along -z, and the estimate approaches the RTT.
    assert!(c.vec[2] < 0.0, "{c:?}");
    let est = c.distance_secs(&other);
    assert!((est - 0.150).abs() < 0.03, "estimate {est}");
}

#[allow(clippy::needless_range_loop)]
/// Nodes on a `side`×`side` grid, `spacing` seconds apart (serf's `GenerateGrid`).
fn grid(side: usize, spacing: f64) -> Vec<Vec<f64>> {
    let n = side * side;
    let mut truth = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..n {
            let (xi, yi) = ((i % side) as f64, (i / side) as f64);
            let (xj, yj) = ((j % side) as f64, (j / side) as f64);
            truth[i][j] = spacing * ((xi - xj).powi(2) + (yi - yj).powi(2)).sqrt();
        }
    }
    truth
}

/// serf's `Simulate`: every cycle each node takes one sample of a random peer's true RTT, with the peer's
/// current coordinate. Returns (mean, max) relative error of the estimates over all pairs.
fn simulate(truth: &[Vec<f64>], cycles: usize, seed: u64) -> (f64, f64) {
    let n = truth.len();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut clients: Vec<Client> = (0..n).map(|_| Client::new(CoordinateConfig::default())).collect();
    for _ in 0..cycles {
        for i in 0..n {
            let j = loop {
                let j = rng.gen_range(0..n);
                if j != i {
                    break j;
                }
            };
            let other = clients[j].coordinate().clone();
            let rtt = Duration::from_secs_f64(truth[i][j]);
            clients[i].update(&format!("n{j}"), &other, rtt, &mut rng).unwrap();
        }
    }
    let (mut sum, mut max, mut pairs) = (0.0, 0.0f64, 0);
    for i in 0..n {
        for j in i + 1..n {
            let est = clients[i].coordinate().distance_secs(clients[j].coordinate());
            let err = (est - truth[i][j]).abs() / truth[i][j];
            sum += err;
            max = max.max(err);
            pairs += 1;
        }
    }
    (sum / pairs as f64, max)
}

#[test]
fn converges_on_a_grid_of_rtts() {
    let truth = grid(5, 0.010);
    let (before, _) = simulate(&truth, 0, 1);
    assert!(before > 0.9, "starts far off: {before}");
    let (mean, max) = simulate(&truth, 1000, 1);
    assert!(mean < 0.05, "mean relative error {mean}");
    assert!(max < 0.5, "max relative error {max}");
}

#[test]
fn converges_on_a_line_with_access_link_heights() {
    // Nodes on a line 10 ms apart, each with a 5 ms access link: heights model the link.
    let n = 10;
    let truth: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if i == j {
                        0.0
                    } else {
                        0.010 * (i as f64 - j as f64).abs() + 0.010
                    }
                })
                .collect()
        })
        .collect();
    let (mean, _) = simulate(&truth, 1000, 2);
    assert!(mean < 0.05, "mean relative error {mean}");
}

#[test]
fn ack_payloads_round_trip_and_junk_is_refused() {
    let c = coord(&[0.1, -0.2, 0.3, 0.0, 0.0, 0.0, 0.0, 1e-3], 1e-5, -2e-4);
    let bytes = encode_ack_payload(&c);
    assert!(bytes.len() <= 8 * 8 + 8 * 3 + 1);
    assert_eq!(decode_ack_payload(&bytes), Some(c));
    assert_eq!(decode_ack_payload(&[]), None);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(decode_ack_payload(&trailing), None);
    let nan = encode_ack_payload(&coord(&[f64::NAN], 0.0, 0.0));
    assert_eq!(decode_ack_payload(&nan), None);
}

fn arb_coord(dims: usize) -> impl Strategy<Value = Coordinate> {
    (
        proptest::collection::vec(-10.0f64..10.0, dims),
        0.0f64..1.5,
        -1.0f64..1.0,
        1e-5f64..1.0,
    )
        .prop_map(|(vec, error, adjustment, height)| Coordinate {
            vec,
            error,
            adjustment,
            height,
        })
}

proptest! {
    #[test]
    fn the_coordinate_stays_valid_and_bounded(
        samples in proptest::collection::vec((0usize..5, arb_coord(8), 1u64..=10_000_000_000), 1..200),
        seed in any::<u64>(),
    ) {
        let config = CoordinateConfig::default();
        let mut client = Client::new(config.clone());
        let mut rng = SmallRng::seed_from_u64(seed);
        for (peer, other, rtt_ns) in samples {
            client.update(&format!("n{peer}"), &other, Duration::from_nanos(rtt_ns), &mut rng).unwrap();
            let c = client.coordinate();
            prop_assert!(c.is_valid());
            prop_assert_eq!(c.vec.len(), 8);
            prop_assert!(c.height >= config.height_min);
            prop_assert!(c.error <= config.vivaldi_error_max);
        }
    }

    #[test]
    fn distance_is_symmetric_and_non_negative(a in arb_coord(8), b in arb_coord(8)) {
        let (ab, ba) = (a.distance_secs(&b), b.distance_secs(&a));
        prop_assert!((ab - ba).abs() < 1e-9);
        prop_assert!(ab >= 0.0);
        prop_assert!(a.distance_secs(&a) >= 0.0);
    }
}

#[test]
fn near_sorts_by_estimated_rtt_with_coordinate_less_nodes_last() {
    let at = |x: f64| Some(coord(&[x, 0.0, 0.0], 0.0, 0.0));
    let origin = coord(&[0.0, 0.0, 0.0], 0.0, 0.0);
    let mut items = vec![
        ("far", at(0.5)),
        ("none-1", None),
        ("self", at(0.0)),
        ("mid", at(-0.2)),
        ("none-2", None),
        ("near", at(0.1)),
        ("wrong-dims", Some(coord(&[0.0], 0.0, 0.0))),
        ("mid-too", at(0.2)),
    ];
    sort_near(&mut items, Some(&origin), |(_, c)| c.as_ref());
    let names: Vec<&str> = items.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "self",
            "near",
            "mid",
            "mid-too",
            "far",
            "none-1",
            "none-2",
            "wrong-dims"
        ]
    );
    // Without an origin coordinate nothing moves.
    let before = names.clone();
    sort_near(&mut items, None, |(_, c)| c.as_ref());
    assert_eq!(items.iter().map(|(n, _)| *n).collect::<Vec<_>>(), before);
}

proptest! {
    #[test]
    fn near_is_a_sorted_permutation(xs in proptest::collection::vec(proptest::option::of(-1.0f64..1.0), 0..40)) {
        let origin = coord(&[0.0, 0.0], 0.0, 0.0);
        let mut items: Vec<(usize, Option<Coordinate>)> =
            xs.iter().enumerate().map(|(i, x)| (i, x.map(|x| coord(&[x, 0.0], 0.0, 0.0)))).collect();
        sort_near(&mut items, Some(&origin), |(_, c)| c.as_ref());
        let mut ids: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
        let d = |c: &Option<Coordinate>| c.as_ref().map_or(f64::INFINITY, |c| origin.distance_secs(c));
        for w in items.windows(2) {
            prop_assert!(d(&w[0].1) <= d(&w[1].1));
            if d(&w[0].1) == d(&w[1].1) {
                prop_assert!(w[0].0 < w[1].0, "stable");
            }
        }
        ids.sort();
        prop_assert_eq!(ids, (0..xs.len()).collect::<Vec<_>>());
    }
}
