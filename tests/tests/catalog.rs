//! Black-box service discovery on a real three-server cluster (reference: consul-compat.md §1.2 catalog,
//! §1.3 health, §1.4 agent, §2 checks and anti-entropy): every server registers itself, a service
//! registered through one server's agent API is seen through every server, its HTTP check against a
//! target started here moves it in and out of `?passing`, and blocking health queries wake for their
//! own service only.

use concord_tests::{poll, Cluster};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FIRST_LEADER: Duration = Duration::from_secs(30);
const SETTLE: Duration = Duration::from_secs(15);

/// An HTTP server on 127.0.0.1 answering every request with the status in `code`.
fn http_target(code: Arc<AtomicU16>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let code = code.load(Ordering::SeqCst);
            let resp = format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = s.write_all(resp.as_bytes());
        }
    });
    addr
}

/// Instances of `service` passing all checks, as server `i` answers.
fn passing(c: &Cluster, i: usize, service: &str) -> Result<usize, String> {
    let v = c
        .get(i, &format!("/v1/health/service/{service}?passing"))?
        .expect_status(200)?
        .json()?;
    v.as_array().map(Vec::len).ok_or_else(|| format!("not a list: {v}"))
}

#[test]
fn services_reach_every_server_and_health_follows_the_check() {
    let mut c = Cluster::start(3);
    c.wait_leader(FIRST_LEADER);

    // Anti-entropy registers every server node with its `consul` service.
    poll(SETTLE, "three nodes and three consul instances", || {
        let nodes = c.get(0, "/v1/catalog/nodes")?.expect_status(200)?.json()?;
        let consul = c.get(1, "/v1/catalog/service/consul")?.expect_status(200)?.json()?;
        let (n, k) = (
            nodes.as_array().map_or(0, Vec::len),
            consul.as_array().map_or(0, Vec::len),
        );
        (n == 3 && k == 3)
            .then_some(())
            .ok_or(format!("{n} nodes, {k} consul instances"))
    });

    let code = Arc::new(AtomicU16::new(200));
    let target = http_target(code.clone());
    let body =
        format!(r#"{{"Name":"web","Port":8080,"Tags":["v1"],"Check":{{"HTTP":"http://{target}/","Interval":"1s"}}}}"#);
    c.put(1, "/v1/agent/service/register", body.as_bytes())
        .and_then(|r| r.expect_status(200))
        .unwrap();
    poll(SETTLE, "web passing through every server", || {
        for i in 0..3 {
            let n = passing(&c, i, "web")?;
            if n != 1 {
                return Err(format!("server {i}: {n} passing"));
            }
        }
        Ok(())
    });
    let v = c.get(2, "/v1/catalog/service/web").unwrap().json().unwrap();
    assert_eq!(
        v[0]["Node"],
        c.servers[1].name.as_str(),
        "registered on the node of the agent that took it"
    );
    assert_eq!(v[0]["ServicePort"], 8080);

    code.store(503, Ordering::SeqCst);
    let failed_at = Instant::now();
    poll(SETTLE, "web gone from ?passing", || {
        (passing(&c, 0, "web")? == 0)
            .then_some(())
            .ok_or("still passing".to_string())
    });
    let took = failed_at.elapsed();
    eprintln!("web left ?passing on another server {took:?} after its target failed (interval 1s)");
    assert!(took < Duration::from_secs(4), "took {took:?} with a 1s check interval");

    code.store(200, Ordering::SeqCst);
    poll(SETTLE, "web passing again", || {
        (passing(&c, 2, "web")? == 1)
            .then_some(())
            .ok_or("not passing yet".to_string())
    });

    c.put(1, "/v1/agent/service/deregister/web", b"")
        .and_then(|r| r.expect_status(200))
        .unwrap();
    poll(SETTLE, "web gone from the catalog", || {
        let services = c.get(0, "/v1/catalog/services")?.json()?;
        services.get("web").is_none().then_some(()).ok_or(format!("{services}"))
    });
}

#[test]
fn a_blocking_health_query_on_a_follower_wakes_for_its_service_only() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(FIRST_LEADER);
    let follower = (leader + 1) % 3;
    let register = |name: &str, tag: &str| {
        let body = format!(r#"{{"Name":"{name}","Tags":["{tag}"],"Port":1}}"#);
        c.put(leader, "/v1/agent/service/register", body.as_bytes())
            .and_then(|r| r.expect_status(200))
            .unwrap();
    };
    register("x", "v1");
    // Settled: x is there, and so is the leader's serfHealth on its node (a node check is part of x's
    // health, so its first write would rightly wake the query below).
    poll(SETTLE, "x with serfHealth on the follower", || {
        let v = c
            .get(follower, "/v1/health/service/x?passing")?
            .expect_status(200)?
            .json()?;
        let serf = v[0]["Checks"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|k| k["CheckID"] == "serfHealth"));
        (v.as_array().map_or(0, Vec::len) == 1 && serf)
            .then_some(())
            .ok_or(format!("not yet: {v}"))
    });
    let first = c.get(follower, "/v1/health/service/x").unwrap();
    let index = first.index().unwrap();

    let url = c.url(follower, &format!("/v1/health/service/x?index={index}&wait=30s"));
    let waiting = std::thread::spawn(move || concord_tests::http("GET", &url, None, Duration::from_secs(60)));
    register("y", "v1");
    poll(SETTLE, "y on the follower", || {
        (passing(&c, follower, "y")? == 1)
            .then_some(())
            .ok_or("not yet".to_string())
    });
    assert!(!waiting.is_finished(), "a change to y must not wake a query on x");

    register("x", "v2");
    let woken = waiting.join().unwrap().unwrap();
    assert!(woken.index().unwrap() > index);
    assert_eq!(woken.json().unwrap()[0]["Service"]["Tags"][0], "v2");
}

#[test]
fn a_client_agents_services_and_checks_reach_the_servers_catalog() {
    let mut c = Cluster::start(1);
    let client = c.add_client("c1");
    c.wait_leader(FIRST_LEADER);

    // The client's node itself is synced once it has found a server through gossip.
    poll(SETTLE, "the client's node in the catalog", || {
        let nodes = c.get(0, "/v1/catalog/nodes")?.expect_status(200)?.json()?;
        let names: Vec<&str> = nodes
            .as_array()
            .ok_or("not a list")?
            .iter()
            .filter_map(|n| n["Node"].as_str())
            .collect();
        names.contains(&"c1").then_some(()).ok_or(format!("{names:?}"))
    });

    let code = Arc::new(AtomicU16::new(200));
    let target = http_target(code.clone());
    let body = format!(
        r#"{{"Name":"api","ID":"api-1","Port":9090,"Tags":["blue"],"Check":{{"HTTP":"http://{target}/","Interval":"1s"}}}}"#
    );
    c.put(client, "/v1/agent/service/register", body.as_bytes())
        .and_then(|r| r.expect_status(200))
        .unwrap();
    poll(SETTLE, "api passing on the server", || {
        (passing(&c, 0, "api")? == 1)
            .then_some(())
            .ok_or("not passing yet".to_string())
    });
    let v = c.get(0, "/v1/catalog/service/api").unwrap().json().unwrap();
    assert_eq!(v[0]["Node"], "c1", "{v}");
    assert_eq!(v[0]["ServiceID"], "api-1", "{v}");
    assert_eq!(v[0]["ServicePort"], 9090, "{v}");
    assert_eq!(v[0]["ServiceTags"][0], "blue", "{v}");
    assert_eq!(v[0]["Address"], c.servers[client].ip.to_string(), "{v}");
    let h = c.get(0, "/v1/health/service/api").unwrap().json().unwrap();
    let checks = h[0]["Checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .any(|k| k["CheckID"] == "service:api-1" && k["Status"] == "passing"),
        "{h}"
    );

    // An alias check on the server mirrors the client's service through the catalog.
    c.put(
        0,
        "/v1/agent/check/register",
        br#"{"Name":"api-alias","AliasNode":"c1","AliasService":"api-1"}"#,
    )
    .and_then(|r| r.expect_status(200))
    .unwrap();
    let alias = |want: &str| {
        poll(SETTLE, &format!("the alias check {want}"), || {
            let checks = c.get(0, "/v1/agent/checks")?.expect_status(200)?.json()?;
            let check = &checks["api-alias"];
            (check["Status"] == want && check["Type"] == "alias")
                .then_some(())
                .ok_or(format!("{check}"))
        })
    };
    alias("passing");

    // The check runs on the client; its result reaches the server's health view, and the alias follows.
    code.store(500, Ordering::SeqCst);
    poll(SETTLE, "api critical on the server", || {
        let h = c.get(0, "/v1/health/checks/api")?.expect_status(200)?.json()?;
        (h[0]["Status"] == "critical").then_some(()).ok_or(format!("{h}"))
    });
    assert_eq!(passing(&c, 0, "api").unwrap(), 0);
    alias("critical");

    // A node-level check registered on the client, then the service's deregistration.
    c.put(
        client,
        "/v1/agent/check/register",
        br#"{"Name":"mem","TTL":"30s","Status":"passing"}"#,
    )
    .and_then(|r| r.expect_status(200))
    .unwrap();
    c.put(client, "/v1/agent/service/deregister/api-1", b"")
        .and_then(|r| r.expect_status(200))
        .unwrap();
    poll(SETTLE, "api gone and the node check present on the server", || {
        let services = c.get(0, "/v1/catalog/services")?.json()?;
        if services.get("api").is_some() {
            return Err(format!("api still listed: {services}"));
        }
        let node = c.get(0, "/v1/health/node/c1")?.expect_status(200)?.json()?;
        let ids: Vec<&str> = node
            .as_array()
            .ok_or("not a list")?
            .iter()
            .filter_map(|k| k["CheckID"].as_str())
            .filter(|id| *id != "serfHealth")
            .collect();
        (ids == ["mem"]).then_some(()).ok_or(format!("checks of c1: {ids:?}"))
    });
}

/// Many blocking queries on one service, woken by one change, share one read and one encoded body on the
/// server; each must still get the body its own parameters ask for (`?pretty`, `?tag`) and its own
/// consistency headers (`?stale`), and a query on another service stays parked.
#[test]
fn watchers_woken_together_each_get_their_own_shape_and_headers() {
    let mut c = Cluster::start(1);
    c.wait_leader(FIRST_LEADER);
    let register = |name: &str, tag: &str| {
        let body = format!(r#"{{"Name":"{name}","Tags":["{tag}"],"Port":1}}"#);
        c.put(0, "/v1/agent/service/register", body.as_bytes())
            .and_then(|r| r.expect_status(200))
            .unwrap();
    };
    register("x", "v1");
    register("z", "v1");
    poll(SETTLE, "x and z with serfHealth", || {
        let ok = |s: &str| -> Result<bool, String> {
            let v = c
                .get(0, &format!("/v1/health/service/{s}"))?
                .expect_status(200)?
                .json()?;
            Ok(v[0]["Checks"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|k| k["CheckID"] == "serfHealth")))
        };
        (ok("x")? && ok("z")?).then_some(()).ok_or("not yet".to_string())
    });
    let x_index = c.get(0, "/v1/health/service/x").unwrap().index().unwrap();
    let z_index = c.get(0, "/v1/health/service/z").unwrap().index().unwrap();
    let watch = |path: String| {
        let url = c.url(0, &path);
        std::thread::spawn(move || concord_tests::http("GET", &url, None, Duration::from_secs(60)))
    };
    let x = |extra: &str| watch(format!("/v1/health/service/x?index={x_index}&wait=30s{extra}"));
    let (a, b, stale, pretty, tagged) = (x(""), x(""), x("&stale"), x("&pretty"), x("&tag=v1"));
    let z = watch(format!("/v1/health/service/z?index={z_index}&wait=30s"));

    register("x", "v2");
    let [a, b, stale, pretty, tagged] = [a, b, stale, pretty, tagged].map(|w| w.join().unwrap().unwrap());
    for r in [&a, &b, &stale, &pretty, &tagged] {
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.index().unwrap() > x_index);
    }
    assert_eq!(a.json().unwrap()[0]["Service"]["Tags"][0], "v2");
    assert_eq!(a.body, b.body, "the same query woken by the same change: the same body");
    assert_eq!(a.body, stale.body);
    assert_eq!(a.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(stale.header("X-Consul-Effective-Consistency"), Some("stale"));
    assert!(
        pretty.text().contains("\n    "),
        "?pretty is indented: {}",
        pretty.text()
    );
    assert_eq!(pretty.json().unwrap(), a.json().unwrap());
    assert_eq!(tagged.json().unwrap(), serde_json::json!([]), "x no longer has tag v1");
    assert!(!z.is_finished(), "a change to x must not wake a query on z");
}
