//! Network coordinates end to end (reference: consul-compat.md §1.9, `?near`): real agents measure probe
//! round trips over gossip, move their Vivaldi coordinates and send them to the servers, so every node gets a
//! coordinate in `/v1/coordinate/nodes`; `?near=_agent|<node>` sorts catalog and health reads by estimated
//! RTT with nodes without a coordinate last; `concord rtt` prints Consul's line.

use concord_tests::{poll, run_concord, Cluster};
use serde_json::Value;
use std::time::Duration;

const FIRST_LEADER: Duration = Duration::from_secs(30);
/// First coordinate updates go out 2–4 s after start; gossip needs a few probe rounds before that.
const COORDINATES: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(15);

fn names(v: &Value, path: &[&str]) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| path.iter().try_fold(x, |x, k| x.get(k)).and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_node_gets_a_coordinate_and_near_sorts_by_it() {
    let started_at = std::time::Instant::now();
    let mut c = Cluster::start(1);
    c.add_client("c1");
    c.add_client("c2");
    c.wait_leader(FIRST_LEADER);

    // Every agent's coordinate arrives, moved off the origin by real probe RTTs.
    let (coords, text) = poll(COORDINATES, "a coordinate for every node", || {
        let r = c.get(0, "/v1/coordinate/nodes")?.expect_status(200)?;
        r.index()?;
        let v = r.json()?;
        let text = r.text();
        let mut got = names(&v, &["Node"]);
        got.sort();
        let moved = v.as_array().ok_or("not a list")?.iter().all(|e| {
            e["Coord"]["Vec"]
                .as_array()
                .is_some_and(|v| v.iter().any(|x| x.as_f64() != Some(0.0)))
        });
        (got == ["c1", "c2", "s1"] && moved)
            .then_some((v.clone(), text))
            .ok_or(format!("{v}"))
    });
    eprintln!("coordinates for every node after {:?}", started_at.elapsed());
    // Consul's JSON shape, field for field and in Go's field order.
    assert!(
        text.starts_with(r#"[{"Node":"c1","Segment":"","Coord":{"Vec":["#),
        "{text}"
    );
    for e in coords.as_array().unwrap() {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["Coord", "Node", "Segment"], "{e}");
        assert_eq!(e["Segment"], "");
        let coord: Vec<&str> = e["Coord"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(coord, ["Adjustment", "Error", "Height", "Vec"], "{e}");
        let [v, er, ad, h] = ["\"Vec\"", "\"Error\"", "\"Adjustment\"", "\"Height\""].map(|k| text.find(k).unwrap());
        assert!(v < er && er < ad && ad < h, "{text}");
        assert_eq!(e["Coord"]["Vec"].as_array().unwrap().len(), 8);
        let error = e["Coord"]["Error"].as_f64().unwrap();
        assert!(error > 0.0 && error <= 1.5, "{e}");
        assert!(e["Coord"]["Height"].as_f64().unwrap() >= 10.0e-6, "{e}");
    }
    let one = c
        .get(2, "/v1/coordinate/node/c1")
        .unwrap()
        .expect_status(200)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(names(&one, &["Node"]), ["c1"]);
    c.get(0, "/v1/coordinate/node/nobody")
        .unwrap()
        .expect_status(404)
        .unwrap();

    // A service on the agent's own node and on three external nodes: two with coordinates far away (set
    // through /v1/coordinate/update, which gossip never overwrites for them), one without.
    c.put(
        0,
        "/v1/agent/service/register",
        br#"{"Name":"web","Port":80,"Check":{"TTL":"60s"}}"#,
    )
    .and_then(|r| r.expect_status(200))
    .unwrap();
    for ext in ["ext-far", "ext-mid", "ext-none"] {
        let body = format!(
            r#"{{"Node":"{ext}","Address":"10.9.9.9","Service":{{"Service":"web","Port":80}},
                "Check":{{"CheckID":"web-up","Name":"web up","ServiceID":"web","Status":"passing"}}}}"#
        );
        c.put(0, "/v1/catalog/register", body.as_bytes())
            .and_then(|r| r.expect_status(200))
            .unwrap();
    }
    for (ext, x) in [("ext-far", 1.0), ("ext-mid", 0.5)] {
        let body = format!(
            r#"{{"Node":"{ext}","Coord":{{"Vec":[{x},0,0,0,0,0,0,0],"Error":0.2,"Adjustment":0,"Height":0.00001}}}}"#
        );
        c.put(0, "/v1/coordinate/update", body.as_bytes())
            .and_then(|r| r.expect_status(200))
            .unwrap();
    }
    // A blocking read of the coordinates wakes when one changes.
    let index = c.get(0, "/v1/coordinate/nodes").unwrap().index().unwrap();
    let url = c.url(0, &format!("/v1/coordinate/nodes?index={index}&wait=30s"));
    let started = std::time::Instant::now();
    let blocked = std::thread::spawn(move || concord_tests::http("GET", &url, None, Duration::from_secs(40)));
    std::thread::sleep(Duration::from_millis(300));
    let body =
        br#"{"Node":"ext-mid","Coord":{"Vec":[0.5,0,0,0,0,0,0,0],"Error":0.25,"Adjustment":0,"Height":0.00001}}"#;
    c.put(0, "/v1/coordinate/update", body)
        .and_then(|r| r.expect_status(200))
        .unwrap();
    let woke = blocked.join().unwrap().unwrap();
    assert!(woke.index().unwrap() > index);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken by the update, not the wait"
    );
    let body = br#"{"Node":"ext-mid","Coord":{"Vec":[0.5,0,0,0,0,0,0,0],"Error":0.2,"Adjustment":0,"Height":0.00001}}"#;
    c.put(0, "/v1/coordinate/update", body)
        .and_then(|r| r.expect_status(200))
        .unwrap();

    let bad = br#"{"Node":"ext-far","Coord":{"Vec":[1,2],"Error":0.2}}"#;
    c.put(0, "/v1/coordinate/update", bad)
        .unwrap()
        .expect_status(400)
        .unwrap();

    let web_order = |path: &str, node: &[&str]| -> Result<Vec<String>, String> {
        let v = c.get(0, path)?.expect_status(200)?.json()?;
        Ok(names(&v, node))
    };
    let want = ["s1", "ext-mid", "ext-far", "ext-none"];
    poll(SETTLE, "?near=_agent puts the agent's own node first", || {
        let got = web_order("/v1/health/service/web?near=_agent", &["Node", "Node"])?;
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    });
    assert_eq!(
        web_order("/v1/catalog/service/web?near=_agent", &["Node"]).unwrap(),
        want
    );
    assert_eq!(
        web_order("/v1/catalog/service/web?near=ext-far", &["Node"]).unwrap(),
        ["ext-far", "ext-mid", "s1", "ext-none"]
    );
    // The checks of a service and the checks in a state sort by their node's RTT too.
    assert_eq!(web_order("/v1/health/checks/web?near=_agent", &["Node"]).unwrap(), want);
    assert_eq!(
        web_order("/v1/health/checks/web?near=ext-far", &["Node"]).unwrap(),
        ["ext-far", "ext-mid", "s1", "ext-none"]
    );
    assert_eq!(
        web_order("/v1/health/state/passing?near=ext-far", &["Node"]).unwrap()[..2],
        ["ext-far", "ext-mid"]
    );
    // Without ?near: Consul's node order.
    assert_eq!(
        web_order("/v1/catalog/service/web", &["Node"]).unwrap(),
        ["ext-far", "ext-mid", "ext-none", "s1"]
    );
    // The agents' own nodes are all within a loopback RTT of each other (their order among themselves is
    // up to their coordinates), then the far ones, then the node without a coordinate.
    let nodes = web_order("/v1/catalog/nodes?near=_agent", &["Node"]).unwrap();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    assert_eq!(nodes[3..], ["ext-mid", "ext-far", "ext-none"], "{nodes:?}");

    // concord rtt: Consul's line; the second node defaults to the agent's own.
    let addr = c.servers[0].http_addr();
    let out = run_concord(Some(&addr), &["rtt", "ext-far", "ext-mid"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Estimated ext-far <-> ext-mid rtt: 500.020 ms (using LAN coordinates)\n"
    );
    let out = run_concord(Some(&addr), &["rtt", "c1"], None);
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && line.starts_with("Estimated c1 <-> s1 rtt: "),
        "{out:?}"
    );
    // `catalog nodes -near` prints the nodes in that order.
    let out = run_concord(
        Some(&addr),
        &["catalog", "nodes", "-service", "web", "-near", "ext-far"],
        None,
    );
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    assert_eq!(listed, ["ext-far", "ext-mid", "s1", "ext-none"], "{out:?}");

    // WAN coordinates: the one server of dc1, alone in its WAN pool, so still at the origin.
    let dcs = c
        .get(0, "/v1/coordinate/datacenters")
        .unwrap()
        .expect_status(200)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(dcs[0]["Datacenter"], "dc1", "{dcs}");
    assert_eq!(dcs[0]["AreaID"], "WAN", "{dcs}");
    assert_eq!(names(&dcs[0]["Coordinates"], &["Node"]), ["s1.dc1"], "{dcs}");
    let out = run_concord(Some(&addr), &["rtt", "-wan", "s1.dc1", "s1.dc1"], None);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Estimated s1.dc1 <-> s1.dc1 rtt: 0.020 ms (using WAN coordinates)\n",
        "{out:?}"
    );
    let out = run_concord(Some(&addr), &["rtt", "ext-none"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Could not find a coordinate for node \"ext-none\"\n"
    );
}

/// The leader batches coordinate updates (Consul's `coordinate_update_*`): 300 updates sent within one
/// period (5 s by default) become at most ceil(300/128) = 3 log entries, and every one becomes visible.
#[test]
fn coordinate_updates_of_a_period_are_written_in_batches() {
    const N: usize = 300;
    const PERIOD: Duration = Duration::from_secs(5);
    let mut c = Cluster::start(1);
    c.wait_leader(FIRST_LEADER);
    poll(SETTLE, "the server's own catalog entry", || {
        let v = c.get(0, "/v1/health/node/s1")?.expect_status(200)?.json()?;
        (v.as_array().is_some_and(|a| !a.is_empty()))
            .then_some(())
            .ok_or(format!("{v}"))
    });
    let nodes: Vec<String> = (0..N).map(|i| format!("ext-{i:03}")).collect();
    for node in &nodes {
        let body = format!(r#"{{"Node":"{node}","Address":"10.9.9.9"}}"#);
        c.put(0, "/v1/catalog/register", body.as_bytes())
            .and_then(|r| r.expect_status(200))
            .unwrap();
    }
    // Consecutive log indexes around the updates: a KV write before and one after.
    let modify_index = |key: &str| -> u64 {
        c.put(0, &format!("/v1/kv/{key}"), b"x")
            .and_then(|r| r.expect_status(200))
            .unwrap();
        c.get(0, &format!("/v1/kv/{key}")).unwrap().json().unwrap()[0]["ModifyIndex"]
            .as_u64()
            .unwrap()
    };
    let before = modify_index("before");
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for chunk in nodes.chunks(N / 10) {
            let c = &c;
            scope.spawn(move || {
                for (i, node) in chunk.iter().enumerate() {
                    let body = format!(
                        r#"{{"Node":"{node}","Coord":{{"Vec":[{x},0,0,0,0,0,0,0],"Error":0.2,"Adjustment":0,"Height":0.00001}}}}"#,
                        x = 0.001 * (i + 1) as f64
                    );
                    c.put(0, "/v1/coordinate/update", body.as_bytes())
                        .and_then(|r| r.expect_status(200))
                        .unwrap();
                }
            });
        }
    });
    let sending = started.elapsed();
    poll(Duration::from_secs(30), "every update visible", || {
        let v = c.get(0, "/v1/coordinate/nodes")?.expect_status(200)?.json()?;
        let n = v.as_array().map_or(0, |a| a.len());
        (n == N).then_some(()).ok_or(format!("{n} coordinates"))
    });
    let after = modify_index("after");
    let entries = after - before - 1;
    // The period starts with the first update: sending within it makes one flush. (A machine so loaded
    // that sending took longer spreads the updates over more flushes; the bound follows.)
    let flushes = 1 + (sending.as_secs_f64() / PERIOD.as_secs_f64()).ceil() as u64;
    let bound = if sending < PERIOD { 3 } else { 3 * flushes };
    assert!(
        entries <= bound,
        "{entries} log entries for {N} coordinate updates sent in {sending:?}"
    );
    eprintln!("{N} coordinate updates sent in {sending:?} became {entries} log entries");
}
