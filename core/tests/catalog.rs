//! The catalog through a whole cluster: registrations replicate, health reads in every mode, and a blocking
//! health query on a follower wakes for its own service only.

mod harness;

use concord_core::api::{Blocking, CatalogQuery, CatalogResult, Query, ReadMode, Request, Response};
use concord_core::state::{CheckStatus, Command, CommandResult, HealthCheck, Registration, ServiceInstance};
use concord_core::Mutation;
use harness::{Cluster, Faults};
use std::sync::Arc;
use std::time::Duration;

fn register(node: &str, service: &str, status: CheckStatus) -> Request {
    Request::Write(Command::CatalogRegister(Box::new(Registration {
        node: node.into(),
        address: "10.0.0.1".into(),
        service: Some(ServiceInstance {
            id: service.into(),
            service: service.into(),
            port: 80,
            ..ServiceInstance::default()
        }),
        checks: vec![HealthCheck {
            check_id: format!("service:{service}"),
            name: "check".into(),
            service_id: service.into(),
            status,
            ..HealthCheck::default()
        }],
        ..Registration::default()
    })))
}

fn health(service: &str, mode: ReadMode, block: Option<Blocking>) -> Request {
    Request::Read {
        query: Query::Catalog(CatalogQuery::HealthService {
            name: service.into(),
            tags: vec![],
            passing: true,
        }),
        mode,
        block,
    }
}

fn write(c: &mut Cluster, at: concord_core::NodeId, req: Request) -> u64 {
    let r = c.request(at, req);
    match c.wait_reply(r, Duration::from_secs(2)) {
        Some(Response::Written {
            index,
            result: CommandResult::Bool(true),
        }) => index,
        other => panic!("write failed: {other:?}"),
    }
}

fn passing(resp: &Response) -> (u64, usize) {
    match resp {
        Response::Catalog { meta, result } => match &**result {
            CatalogResult::CheckServiceNodes(v) => (meta.index, v.len()),
            other => panic!("not a health read: {other:?}"),
        },
        other => panic!("not a health read: {other:?}"),
    }
}

#[test]
fn health_reads_in_every_mode_and_blocking_wakes_for_its_service_only() {
    let mut c = Cluster::new(21, 3, Faults::default(), Mutation::None);
    c.bootstrap();
    assert!(c.wait_leader(Duration::from_secs(5)).is_some());
    let ids = c.ids();
    let index = write(&mut c, ids[0], register("n1", "x", CheckStatus::Passing));
    for mode in [ReadMode::Default, ReadMode::Consistent, ReadMode::Stale] {
        let r = c.request(ids[1], health("x", mode, None));
        c.run_for(Duration::from_millis(50));
        let resp = c.wait_reply(r, Duration::from_secs(1)).expect("read answered");
        assert_eq!(passing(&resp), (index, 1), "{mode:?}");
    }
    let block = Some(Blocking {
        min_index: index,
        wait: Duration::from_secs(60),
    });
    let w = c.request(ids[1], health("x", ReadMode::Default, block));
    c.run_for(Duration::from_millis(200));
    assert!(!c.replies.contains_key(&w), "nothing changed: parked");
    write(&mut c, ids[2], register("n1", "y", CheckStatus::Critical));
    c.run_for(Duration::from_millis(200));
    assert!(!c.replies.contains_key(&w), "a change to y must not wake a query on x");
    let changed = write(&mut c, ids[2], register("n1", "x", CheckStatus::Critical));
    let resp = c.wait_reply(w, Duration::from_millis(200)).expect("woken by x");
    assert_eq!(passing(&resp), (changed, 0), "x is critical now: not passing");
}

/// Blocking queries of the same range woken by one change share one read (the same allocation, so the HTTP
/// layer encodes it once), each keeps its own consistency metadata, and a watcher of another service stays
/// parked.
#[test]
fn watchers_of_one_range_share_one_read_and_keep_their_own_meta() {
    let mut c = Cluster::new(22, 3, Faults::default(), Mutation::None);
    c.bootstrap();
    let leader = c.wait_leader(Duration::from_secs(5)).expect("a leader");
    let index = write(&mut c, leader, register("n1", "x", CheckStatus::Passing));
    write(&mut c, leader, register("n1", "z", CheckStatus::Passing));
    let block = |min_index| {
        Some(Blocking {
            min_index,
            wait: Duration::from_secs(60),
        })
    };
    let a = c.request(leader, health("x", ReadMode::Default, block(index)));
    let b = c.request(leader, health("x", ReadMode::Default, block(index)));
    let s = c.request(leader, health("x", ReadMode::Stale, block(index)));
    let z_index = index + 1;
    let z = c.request(leader, health("z", ReadMode::Default, block(z_index)));
    c.run_for(Duration::from_millis(200));
    for w in [a, b, s, z] {
        assert!(!c.replies.contains_key(&w), "nothing changed: {w} parked");
    }
    let changed = write(&mut c, leader, register("n1", "x", CheckStatus::Critical));
    let [ra, rb, rs] = [a, b, s].map(|w| c.wait_reply(w, Duration::from_millis(200)).expect("woken by x"));
    for r in [&ra, &rb, &rs] {
        assert_eq!(passing(r), (changed, 0), "every watcher sees x's new state");
    }
    let result = |r: &Response| match r {
        Response::Catalog { result, .. } => result.clone(),
        other => panic!("not a catalog read: {other:?}"),
    };
    let consistency = |r: &Response| match r {
        Response::Catalog { meta, .. } => meta.consistency,
        other => panic!("not a catalog read: {other:?}"),
    };
    assert!(Arc::ptr_eq(&result(&ra), &result(&rb)), "one read for both");
    assert!(
        Arc::ptr_eq(&result(&ra), &result(&rs)),
        "the mode is metadata, not a different read"
    );
    assert_eq!(consistency(&ra), ReadMode::Default);
    assert_eq!(consistency(&rs), ReadMode::Stale);
    c.run_for(Duration::from_millis(200));
    assert!(!c.replies.contains_key(&z), "a change to x must not wake a query on z");
}
