//! Server-side batching of coordinate updates (Consul's `Coordinate.Update` + `batchUpdate`): whatever
//! server an update reaches, the leader keeps the latest per node and, one `coordinate_update_period` after
//! the first, writes them as log entries of at most `coordinate_update_batch_size` updates, at most
//! `coordinate_update_max_batches` entries a period (the rest discarded).

mod harness;

use concord_core::api::{CatalogQuery, CatalogResult, Request, Response};
use concord_core::coordinate::{Coordinate, CoordinateConfig};
use concord_core::raft::Payload;
use concord_core::state::{Command, CoordinateUpdate, Registration};
use concord_core::Mutation;
use harness::{Cluster, Faults};
use std::time::Duration;

const PERIOD: Duration = Duration::from_secs(5);
const BATCH: usize = 128;

fn started() -> Cluster {
    let mut c = Cluster::new(7, 3, Faults::default(), Mutation::None);
    c.bootstrap();
    assert!(c.wait_leader(Duration::from_secs(5)).is_some(), "no leader elected");
    c
}

fn coord(x: f64) -> Coordinate {
    let mut c = Coordinate::new(&CoordinateConfig::default());
    c.vec[0] = x;
    c
}

fn register(c: &mut Cluster, nodes: &[String]) {
    let leader = c.leader().unwrap();
    for node in nodes {
        let req = c.request(
            leader,
            Request::Write(Command::CatalogRegister(Box::new(Registration {
                node: node.clone(),
                address: "10.1.1.1".into(),
                ..Registration::default()
            }))),
        );
        let reply = c.wait_reply(req, Duration::from_secs(2));
        assert!(matches!(reply, Some(Response::Written { .. })), "{reply:?}");
    }
}

/// The committed entries after `from` that carry coordinate updates, as their update lists.
fn coordinate_entries(c: &Cluster, from: u64) -> Vec<Vec<CoordinateUpdate>> {
    c.history
        .range(from + 1..)
        .filter_map(|(_, (entry, _))| match &entry.payload {
            Payload::Command(bytes) => match Command::decode(bytes).unwrap() {
                Command::CoordinateBatchUpdate(updates) => Some(updates),
                other => panic!("an unexpected entry {other:?}"),
            },
            _ => None,
        })
        .collect()
}

fn last_index(c: &Cluster) -> u64 {
    c.history.keys().next_back().copied().unwrap_or(0)
}

/// Send each update to one of the servers (followers forward to the leader); every one is answered `Done`.
fn send(c: &mut Cluster, updates: &[(String, f64)]) {
    let ids = c.ids();
    let reqs: Vec<u64> = updates
        .iter()
        .enumerate()
        .map(|(i, (node, x))| {
            let update = CoordinateUpdate {
                node: node.clone(),
                coord: coord(*x),
            };
            c.request(ids[i % ids.len()], Request::CoordinateUpdate(update))
        })
        .collect();
    for req in reqs {
        let reply = c.wait_reply(req, Duration::from_secs(2));
        assert_eq!(reply, Some(Response::Done));
    }
}

fn coordinates_on(c: &Cluster) -> Vec<Vec<(String, Coordinate)>> {
    c.nodes
        .values()
        .filter_map(|n| n.node.as_ref())
        .map(|n| match n.state().catalog.read(&CatalogQuery::Coordinates).1 {
            CatalogResult::Coordinates(coords) => coords,
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn updates_of_one_period_become_few_entries_and_all_apply() {
    let mut c = started();
    let n: usize = 300;
    let nodes: Vec<String> = (0..n).map(|i| format!("node-{i:03}")).collect();
    register(&mut c, &nodes);
    let before = last_index(&c);
    // Every node twice in the period: only the latest of each is written.
    let first: Vec<(String, f64)> = nodes.iter().map(|n| (n.clone(), 0.001)).collect();
    let latest: Vec<(String, f64)> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as f64 * 1e-4))
        .collect();
    send(&mut c, &first);
    send(&mut c, &latest);
    c.run_for(PERIOD / 2);
    assert!(
        coordinate_entries(&c, before).is_empty(),
        "nothing is written before the period ends"
    );
    c.run_for(PERIOD);
    let entries = coordinate_entries(&c, before);
    assert_eq!(entries.len(), n.div_ceil(BATCH), "{} entries", entries.len());
    assert!(entries.iter().all(|e| e.len() <= BATCH));
    assert_eq!(entries.iter().map(Vec::len).sum::<usize>(), n);
    // Every server applied them: the latest coordinate of every node.
    c.run_for(Duration::from_millis(200));
    for coords in coordinates_on(&c) {
        assert_eq!(coords.len(), n);
        for (i, (node, got)) in coords.iter().enumerate() {
            assert_eq!(node, &nodes[i]);
            assert_eq!(got, &coord(i as f64 * 1e-4), "{node}");
        }
    }
    // The next period starts with the next update.
    let before = last_index(&c);
    send(&mut c, &[(nodes[0].clone(), 0.5)]);
    c.run_for(PERIOD + Duration::from_millis(500));
    assert_eq!(coordinate_entries(&c, before).len(), 1);
}

#[test]
fn updates_beyond_the_batch_limit_of_a_period_are_discarded() {
    let mut c = started();
    let before = last_index(&c);
    // Nodes the catalog does not know: their updates are still batched (and skipped when applied).
    let updates: Vec<(String, f64)> = (0..700).map(|i| (format!("ghost-{i:03}"), 0.01)).collect();
    send(&mut c, &updates);
    c.run_for(PERIOD + Duration::from_secs(1));
    let entries = coordinate_entries(&c, before);
    assert_eq!(entries.len(), 5, "coordinate_update_max_batches");
    assert!(entries.iter().all(|e| e.len() == BATCH));
    let mut written: Vec<&str> = entries.iter().flatten().map(|u| u.node.as_str()).collect();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), 5 * BATCH, "640 distinct nodes, 60 discarded");
    assert!(coordinates_on(&c).iter().all(Vec::is_empty));
}

#[test]
fn invalid_coordinates_are_refused() {
    let mut c = started();
    let leader = c.leader().unwrap();
    let mut nan = coord(0.0);
    nan.vec[1] = f64::NAN;
    let mut short = coord(0.0);
    short.vec.truncate(3);
    for (node, coord) in [("n1", nan), ("n1", short), ("", coord(0.1))] {
        let req = c.request(
            leader,
            Request::CoordinateUpdate(CoordinateUpdate {
                node: node.into(),
                coord,
            }),
        );
        let reply = c.wait_reply(req, Duration::from_secs(2));
        assert!(
            matches!(reply, Some(Response::Error(concord_core::api::ApiError::BadRequest(_)))),
            "{reply:?}"
        );
    }
}
