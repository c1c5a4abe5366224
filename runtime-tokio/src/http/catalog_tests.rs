//! `/v1/catalog/*` and `/v1/health/*` as a client sees them, over real HTTP in front of the fake backend
//! (whose catalog is the real core store): Consul's exact JSON, `[]` vs `null`, key casing on input,
//! `?tag`, `?passing`, `?filter`, errors.

use super::tests::{get, put, TestServer};
use super::HttpSettings;

fn register_web(s: &TestServer) {
    // Lowercase and snake_case keys, as Go's decoder accepts.
    let body = br#"{"node":"n1","address":"10.0.0.1","nodemeta":{"Rack":"r1"},
        "service":{"service":"web","id":"web1","tags":["prod"],"port":8080,
                   "tagged_addresses":{"lan":{"address":"10.0.0.1","port":8080}}},
        "checks":[{"Name":"web alive","CheckID":"web-check","ServiceID":"web1","Status":"passing"},
                  {"name":"serfHealth","status":"passing"}]}"#;
    let r = put(s, "/v1/catalog/register", body);
    assert_eq!((r.status, r.text()), (200, "true"));
}

#[test]
fn catalog_service_and_services_are_consul_json() {
    let s = TestServer::start(HttpSettings::default());
    register_web(&s);
    let r = get(&s, "/v1/catalog/services");
    assert_eq!(r.text(), r#"{"web":["prod"]}"#);
    assert!(r.header("X-Consul-Index").is_some());
    let r = get(&s, "/v1/catalog/service/web");
    assert_eq!(
        r.text(),
        concat!(
            r#"[{"ID":"","Node":"n1","Address":"10.0.0.1","Datacenter":"dc1","TaggedAddresses":null,"#,
            r#""NodeMeta":{"Rack":"r1"},"ServiceKind":"","ServiceID":"web1","ServiceName":"web","#,
            r#""ServiceTags":["prod"],"ServiceAddress":"","#,
            r#""ServiceTaggedAddresses":{"lan":{"Address":"10.0.0.1","Port":8080}},"#,
            r#""ServiceWeights":{"Passing":1,"Warning":1},"ServiceMeta":{},"ServicePort":8080,"#,
            r#""ServiceEnableTagOverride":false,"ServiceProxy":{"Mode":"","MeshGateway":{},"Expose":{}},"#,
            r#""ServiceConnect":{},"CreateIndex":2,"ModifyIndex":2}]"#
        )
    );
    assert_eq!(get(&s, "/v1/catalog/service/nope").text(), "[]");
    assert_eq!(get(&s, "/v1/catalog/service/web?tag=dev").text(), "[]");
    assert_eq!(
        get(&s, "/v1/catalog/service/web?tag=prod")
            .text()
            .matches("web1")
            .count(),
        1
    );
}

#[test]
fn health_endpoints_shape_and_passing() {
    let s = TestServer::start(HttpSettings::default());
    register_web(&s);
    let r = get(&s, "/v1/health/service/web?passing");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["Service"]["ID"], "web1");
    assert_eq!(v[0]["Node"]["Meta"]["Rack"], "r1");
    let checks: Vec<&str> = v[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["CheckID"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["serfHealth", "web-check"], "node checks first");
    assert!(
        r.text().contains(concat!(
            r#"{"Node":"n1","CheckID":"serfHealth","Name":"serfHealth","Status":"passing","Notes":"","#,
            r#""Output":"","ServiceID":"","ServiceName":"","ServiceTags":[],"Type":"","Interval":"","#,
            r#""Timeout":"","ExposedPort":0,"Definition":{},"CreateIndex":2,"ModifyIndex":2}"#
        )),
        "{}",
        r.text()
    );
    // A failing check drops the instance from ?passing only.
    let r = put(
        &s,
        "/v1/catalog/register",
        br#"{"Node":"n1","Address":"10.0.0.1","SkipNodeUpdate":true,
             "Check":{"CheckID":"web-check","Name":"web alive","ServiceID":"web1","Status":"critical"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&s, "/v1/health/service/web?passing=1").text(), "[]");
    let all: serde_json::Value = serde_json::from_slice(&get(&s, "/v1/health/service/web?passing=false").body).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 1);
    let critical: serde_json::Value = serde_json::from_slice(&get(&s, "/v1/health/state/critical").body).unwrap();
    assert_eq!(critical[0]["CheckID"], "web-check");
    assert_eq!(critical[0]["ServiceTags"], serde_json::json!(["prod"]));
    assert_eq!(get(&s, "/v1/health/state/any").text().matches("CheckID").count(), 2);
    assert_eq!(get(&s, "/v1/health/state/bogus").status, 400);
    assert_eq!(get(&s, "/v1/health/checks/web").text().matches("CheckID").count(), 1);
    assert_eq!(get(&s, "/v1/health/node/n1").text().matches("CheckID").count(), 2);
    assert_eq!(get(&s, "/v1/health/node/nope").text(), "[]");
}

#[test]
fn catalog_node_views_and_deregister() {
    let s = TestServer::start(HttpSettings::default());
    register_web(&s);
    let v: serde_json::Value = serde_json::from_slice(&get(&s, "/v1/catalog/node/n1").body).unwrap();
    assert_eq!(v["Node"]["Node"], "n1");
    assert_eq!(v["Services"]["web1"]["Port"], 8080);
    assert_eq!(get(&s, "/v1/catalog/node/nope").text(), "null");
    let r = put(
        &s,
        "/v1/catalog/register",
        br#"{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"db"}}"#,
    );
    assert_eq!(r.status, 200);
    let v: serde_json::Value =
        serde_json::from_slice(&get(&s, "/v1/catalog/node/n1?filter=Service%20%3D%3D%20db").body).unwrap();
    let ids: Vec<&String> = v["Services"].as_object().unwrap().keys().collect();
    assert_eq!(ids, ["db"], "filtered services keep their own IDs");
    let r = put(&s, "/v1/catalog/deregister", br#"{"Node":"n1","ServiceID":"db"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        get(&s, "/v1/catalog/node-services/nope").text(),
        r#"{"Node":null,"Services":[]}"#
    );
    let v: serde_json::Value = serde_json::from_slice(&get(&s, "/v1/catalog/node-services/n1").body).unwrap();
    assert_eq!(v["Services"][0]["ID"], "web1");
    assert_eq!(
        get(&s, "/v1/catalog/nodes").text().matches("\"Node\":\"n1\"").count(),
        1
    );
    assert_eq!(get(&s, "/v1/catalog/datacenters").text(), r#"["dc1"]"#);

    let r = put(&s, "/v1/catalog/deregister", br#"{"Node":"n1","ServiceID":"web1"}"#);
    assert_eq!((r.status, r.text()), (200, "true"));
    assert_eq!(get(&s, "/v1/catalog/services").text(), "{}");
    assert_eq!(get(&s, "/v1/health/node/n1").text().matches("CheckID").count(), 1);
    let r = put(&s, "/v1/catalog/deregister", br#"{"node":"n1"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(get(&s, "/v1/catalog/nodes").text(), "[]");
}

#[test]
fn filters_and_bad_requests() {
    let s = TestServer::start(HttpSettings::default());
    register_web(&s);
    put(
        &s,
        "/v1/catalog/register",
        br#"{"Node":"n2","Address":"10.0.0.2","Service":{"Service":"web","Tags":["dev"]}}"#,
    );
    let ids = |path: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&get(&s, path).body).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["Node"]["Node"].as_str().or(e["Node"].as_str()).unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("/v1/health/service/web"), ["n1", "n2"]);
    assert_eq!(
        ids("/v1/health/service/web?filter=Service.Tags%20contains%20dev"),
        ["n2"]
    );
    assert_eq!(
        ids("/v1/health/service/web?filter=not%20(Node.Node%20%3D%3D%20n2)"),
        ["n1"]
    );
    assert_eq!(
        ids("/v1/catalog/service/web?filter=ServiceTags%20contains%20prod%20or%20Node%20%3D%3D%20n2"),
        ["n1", "n2"]
    );
    assert_eq!(ids("/v1/catalog/service/web?node-meta=Rack:r1"), ["n1"]);
    assert_eq!(get(&s, "/v1/health/service/web?filter=Service.Tags%20%3D").status, 400);

    let r = put(&s, "/v1/catalog/register", br#"{"Address":"1.2.3.4"}"#);
    assert_eq!((r.status, r.text()), (400, "Must provide node"));
    let r = put(
        &s,
        "/v1/catalog/register",
        br#"{"Node":"x","Address":"1.2.3.4","Check":{"Name":"c","ServiceID":"nope"}}"#,
    );
    assert_eq!((r.status, r.text()), (500, "Missing service registration"));
    let r = put(&s, "/v1/catalog/register", b"{not json");
    assert_eq!(r.status, 400);
    assert_eq!(get(&s, "/v1/catalog/register").status, 405);
}

#[test]
fn agent_service_blocks_on_its_content_hash() {
    let s = TestServer::start(HttpSettings::default());
    assert_eq!(
        put(&s, "/v1/agent/service/register", br#"{"Name":"web","Port":80}"#).status,
        200
    );
    let r = get(&s, "/v1/agent/service/web");
    let hash = r.header("X-Consul-ContentHash").unwrap().to_string();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["ContentHash"], hash.as_str());
    let started = std::time::Instant::now();
    let r = get(&s, &format!("/v1/agent/service/web?hash={hash}&wait=300ms"));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "waited for a change"
    );
    assert_eq!(r.header("X-Consul-ContentHash"), Some(hash.as_str()));

    let url = s.url(&format!("/v1/agent/service/web?hash={hash}&wait=20s"));
    let waiting = std::thread::spawn(move || super::tests::call("GET", &url, None));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!waiting.is_finished());
    assert_eq!(
        put(&s, "/v1/agent/service/register", br#"{"Name":"web","Port":81}"#).status,
        200
    );
    let r = waiting.join().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["Port"], 81);
    assert_ne!(r.header("X-Consul-ContentHash"), Some(hash.as_str()));
    assert_eq!(get(&s, "/v1/agent/service/nope").status, 404);
}

#[test]
fn meta_over_consuls_limits_is_400_and_nothing_is_registered() {
    let s = TestServer::start(HttpSettings::default());
    let long_key = "k".repeat(129);
    let body = format!(r#"{{"Node":"n1","Address":"10.0.0.1","NodeMeta":{{"{long_key}":"v"}}}}"#);
    let r = put(&s, "/v1/catalog/register", body.as_bytes());
    assert_eq!(
        (r.status, r.text()),
        (400, "Invalid node metadata: Key is too long (limit: 128 characters)")
    );
    let pairs: Vec<String> = (0..65).map(|i| format!(r#""k{i}":"v""#)).collect();
    let body = format!(
        r#"{{"Node":"n1","Address":"10.0.0.1","Service":{{"Service":"web","Meta":{{{}}}}}}}"#,
        pairs.join(",")
    );
    let r = put(&s, "/v1/catalog/register", body.as_bytes());
    assert_eq!(
        (r.status, r.text()),
        (
            400,
            "Invalid Service Meta: Service metadata cannot contain more than 64 key/value pairs"
        )
    );
    let long_value = "v".repeat(513);
    let body = format!(r#"{{"name":"web","meta":{{"k":"{long_value}"}}}}"#);
    let r = put(&s, "/v1/agent/service/register", body.as_bytes());
    assert_eq!(
        (r.status, r.text()),
        (400, "Invalid Service Meta: Value is too long (limit: 512 characters)")
    );
    assert_eq!(get(&s, "/v1/catalog/nodes").text(), "[]");
    assert_eq!(get(&s, "/v1/agent/services").text(), "{}");
}

#[test]
fn coordinate_endpoints_are_consuls_and_refuse_bad_input() {
    let s = TestServer::start(HttpSettings::default());
    register_web(&s);
    assert_eq!(get(&s, "/v1/coordinate/nodes").text(), "[]");
    let r = get(&s, "/v1/coordinate/node/n1");
    assert_eq!((r.status, r.text()), (404, ""));
    assert!(r.header("X-Consul-Index").is_some());
    // Any key casing, as Go decodes it.
    let body = br#"{"node":"n1","coord":{"vec":[0.5,0,0,0,0,0,0,0],"error":0.25,"adjustment":-0.001,"height":0.0001}}"#;
    let r = put(&s, "/v1/coordinate/update", body);
    assert_eq!((r.status, r.text()), (200, ""));
    let want = r#"[{"Node":"n1","Segment":"","Coord":{"Vec":[0.5,0,0,0,0,0,0,0],"Error":0.25,"Adjustment":-0.001,"Height":0.0001}}]"#;
    assert_eq!(get(&s, "/v1/coordinate/nodes").text(), want);
    assert_eq!(get(&s, "/v1/coordinate/node/n1").text(), want);
    // A node not in the catalog gets no coordinate (Consul skips it).
    let ghost = br#"{"Node":"ghost","Coord":{"Vec":[0,0,0,0,0,0,0,0],"Error":1.5,"Height":0.00001}}"#;
    assert_eq!(put(&s, "/v1/coordinate/update", ghost).status, 200);
    assert_eq!(get(&s, "/v1/coordinate/node/ghost").status, 404);
    for (bad, why) in [
        (
            &br#"{"Node":"n1","Coord":{"Vec":[1,2,3]}}"#[..],
            "Rejected bad coordinate",
        ),
        (br#"{"Node":"n1"}"#, "Missing coordinate"),
        (br#"{"Coord":{"Vec":[0,0,0,0,0,0,0,0]}}"#, "Must provide node"),
        (br#"{"Node":"n1","Coord":{"Vec":["x",0,0,0,0,0,0,0]}}"#, "Coord.Vec"),
        (b"{not json", "Request decode failed"),
    ] {
        let r = put(&s, "/v1/coordinate/update", bad);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(r.text().contains(why), "{}", r.text());
    }
    assert_eq!(get(&s, "/v1/coordinate/update").status, 405);
    let dcs = get(&s, "/v1/coordinate/datacenters");
    let dcs = dcs.text();
    assert_eq!(dcs, r#"[{"Datacenter":"dc1","AreaID":"WAN","Coordinates":[]}]"#);
}

#[test]
fn near_sorts_by_rtt_and_leaves_the_order_without_an_origin_coordinate() {
    let s = TestServer::start(HttpSettings::default());
    for (node, x) in [("a", Some(0.3)), ("b", None), ("c", Some(0.1)), ("d", Some(0.0))] {
        let body = format!(
            r#"{{"Node":"{node}","Address":"10.0.0.1","Service":{{"Service":"web","Port":1}},
                "Check":{{"CheckID":"web-up","Name":"web up","ServiceID":"web","Status":"passing"}}}}"#
        );
        assert_eq!(put(&s, "/v1/catalog/register", body.as_bytes()).status, 200);
        if let Some(x) = x {
            let body =
                format!(r#"{{"Node":"{node}","Coord":{{"Vec":[{x},0,0,0,0,0,0,0],"Error":1.5,"Height":0.00001}}}}"#);
            assert_eq!(put(&s, "/v1/coordinate/update", body.as_bytes()).status, 200);
        }
    }
    let order = |path: &str, key: &dyn Fn(&serde_json::Value) -> String| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(&get(&s, path).body).unwrap();
        v.as_array().unwrap().iter().map(key).collect()
    };
    let node = |v: &serde_json::Value| v["Node"].as_str().unwrap().to_string();
    let health_node = |v: &serde_json::Value| v["Node"]["Node"].as_str().unwrap().to_string();
    assert_eq!(order("/v1/catalog/nodes?near=d", &node), ["d", "c", "a", "b"]);
    assert_eq!(order("/v1/catalog/service/web?near=a", &node), ["a", "c", "d", "b"]);
    assert_eq!(
        order("/v1/health/service/web?near=c", &health_node),
        ["c", "d", "a", "b"]
    );
    // Checks sort by their node's RTT on `/health/checks/:service` and `/health/state/:state`, as Consul's
    // `ServiceChecks` and `ChecksInState` do.
    assert_eq!(order("/v1/health/checks/web?near=a", &node), ["a", "c", "d", "b"]);
    assert_eq!(
        order("/v1/health/state/passing?near=_agent", &node),
        ["a", "b", "c", "d"]
    );
    assert_eq!(order("/v1/health/state/any?near=d", &node), ["d", "c", "a", "b"]);
    assert_eq!(order("/v1/health/checks/web", &node), ["a", "b", "c", "d"]);
    // Node names are case-insensitive in `?near` too.
    assert_eq!(order("/v1/health/checks/web?near=A", &node), ["a", "c", "d", "b"]);
    // b has no coordinate, nor does an unknown node: Consul's order stays.
    assert_eq!(order("/v1/catalog/nodes?near=b", &node), ["a", "b", "c", "d"]);
    assert_eq!(order("/v1/catalog/nodes?near=nobody", &node), ["a", "b", "c", "d"]);
    assert_eq!(order("/v1/catalog/nodes", &node), ["a", "b", "c", "d"]);
}

/// Node and service names are case-insensitive, as Consul's catalog indexes them lower-cased: `Web1` is
/// found as `web1`, registering `web1` updates the same node (which then has that name), and a service
/// registered as `Api` is read, watched and health-checked as `api` or `API`.
#[test]
fn node_and_service_names_are_case_insensitive() {
    let s = TestServer::start(HttpSettings::default());
    let body = br#"{"Node":"Web1","Address":"10.0.0.1","Service":{"Service":"Api","ID":"api1","Port":80},
        "Check":{"CheckID":"api-up","Name":"api up","ServiceID":"api1","Status":"passing"}}"#;
    assert_eq!(put(&s, "/v1/catalog/register", body).status, 200);
    let json = |path: &str| -> serde_json::Value {
        let r = get(&s, path);
        assert_eq!(r.status, 200, "{path}");
        serde_json::from_slice(&r.body).unwrap()
    };
    for node in ["web1", "WEB1", "Web1"] {
        let v = json(&format!("/v1/catalog/node/{node}"));
        assert_eq!(v["Node"]["Node"], "Web1", "{node}");
        assert_eq!(v["Services"]["api1"]["Service"], "Api");
        assert_eq!(json(&format!("/v1/health/node/{node}"))[0]["CheckID"], "api-up");
        assert_eq!(
            json(&format!("/v1/catalog/node-services/{node}"))["Services"][0]["ID"],
            "api1"
        );
    }
    for name in ["api", "API", "Api"] {
        assert_eq!(
            json(&format!("/v1/catalog/service/{name}"))[0]["ServiceName"],
            "Api",
            "{name}"
        );
        assert_eq!(
            json(&format!("/v1/health/service/{name}?passing"))[0]["Node"]["Node"],
            "Web1"
        );
        assert_eq!(json(&format!("/v1/health/checks/{name}"))[0]["CheckID"], "api-up");
    }
    // A blocking read of `api` wakes when the service changes under another case.
    let index: u64 = get(&s, "/v1/health/service/api")
        .header("X-Consul-Index")
        .unwrap()
        .parse()
        .unwrap();
    let url = format!("/v1/health/service/api?index={index}&wait=20s");
    let started = std::time::Instant::now();
    let waiter = {
        let url = s.url(&url);
        std::thread::spawn(move || {
            ureq::get(&url)
                .call()
                .map(|r| r.header("X-Consul-Index").map(str::to_string))
                .map_err(|e| e.to_string())
        })
    };
    let body = br#"{"Node":"web1","Address":"10.0.0.2","Service":{"Service":"API","ID":"api1","Port":81}}"#;
    assert_eq!(put(&s, "/v1/catalog/register", body).status, 200);
    let woke: u64 = waiter.join().unwrap().unwrap().unwrap().parse().unwrap();
    assert!(
        woke > index && started.elapsed() < std::time::Duration::from_secs(15),
        "woke {woke} index {index} after {:?}",
        started.elapsed()
    );
    // The same node, renamed to the case last written.
    let nodes = json("/v1/catalog/nodes");
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(
        (&nodes[0]["Node"], &nodes[0]["Address"]),
        (&"web1".into(), &"10.0.0.2".into())
    );
    assert_eq!(json("/v1/catalog/service/api")[0]["ServicePort"], 81);
    // Coordinates too.
    let coord = br#"{"Node":"WEB1","Coord":{"Vec":[0.1,0,0,0,0,0,0,0],"Error":1.5,"Height":0.00001}}"#;
    assert_eq!(put(&s, "/v1/coordinate/update", coord).status, 200);
    assert_eq!(json("/v1/coordinate/node/Web1")[0]["Node"], "web1");
    // Deregistration in yet another case.
    let r = put(&s, "/v1/catalog/deregister", br#"{"Node":"wEb1"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(get(&s, "/v1/catalog/nodes").text(), "[]");
    assert_eq!(get(&s, "/v1/coordinate/nodes").text(), "[]");
}

/// Service and check IDs are case-insensitive too (Consul's services and checks tables index `ServiceID`
/// and `CheckID` lower-cased): registering `api1` after `Api1` updates the same instance, a check names
/// its service in any case, and deregistration finds both in any case.
#[test]
fn service_and_check_ids_are_case_insensitive() {
    let s = TestServer::start(HttpSettings::default());
    let json = |path: &str| -> serde_json::Value {
        let r = get(&s, path);
        assert_eq!(r.status, 200, "{path}");
        serde_json::from_slice(&r.body).unwrap()
    };
    let body = br#"{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"api","ID":"Api1","Port":80},
        "Checks":[{"CheckID":"Api-Up","Name":"api up","ServiceID":"Api1","Status":"passing"},
                  {"CheckID":"Node-Up","Name":"node up","Status":"passing"}]}"#;
    assert_eq!(put(&s, "/v1/catalog/register", body).status, 200);
    let body = br#"{"Node":"n1","Address":"10.0.0.1","Service":{"Service":"api","ID":"api1","Port":81},
        "Check":{"CheckID":"api-up","Name":"api up","ServiceID":"API1","Status":"critical"}}"#;
    assert_eq!(put(&s, "/v1/catalog/register", body).status, 200);
    let instances = json("/v1/catalog/service/api");
    assert_eq!(instances.as_array().unwrap().len(), 1, "{instances}");
    assert_eq!(
        (&instances[0]["ServiceID"], &instances[0]["ServicePort"]),
        (&"api1".into(), &81.into())
    );
    let health = json("/v1/health/service/api");
    let checks: Vec<(&str, &str)> = health[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["CheckID"].as_str().unwrap(), c["Status"].as_str().unwrap()))
        .collect();
    assert_eq!(checks, [("Node-Up", "passing"), ("api-up", "critical")]);
    assert_eq!(get(&s, "/v1/health/service/api?passing").text(), "[]");
    let r = put(&s, "/v1/catalog/deregister", br#"{"Node":"n1","CheckID":"NODE-UP"}"#);
    assert_eq!(r.status, 200);
    let r = put(&s, "/v1/catalog/deregister", br#"{"Node":"n1","ServiceID":"API1"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(get(&s, "/v1/catalog/service/api").text(), "[]");
    assert_eq!(
        get(&s, "/v1/health/node/n1").text(),
        "[]",
        "the service's check goes with it"
    );
}
