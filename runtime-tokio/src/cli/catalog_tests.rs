//! `concord catalog`, `concord services` and `concord maint` against the HTTP API over the fake backend
//! (whose catalog and local agent are the real ones).

use super::tests::{failed, ok, run};
use crate::http::tests::{put, TestServer};
use crate::http::HttpSettings;

#[test]
fn catalog_commands_list_datacenters_nodes_and_services() {
    let s = TestServer::start(HttpSettings::default());
    assert_eq!(ok(&run(&s, &["catalog", "datacenters"])), "dc1\n");
    assert_eq!(
        failed(&run(&s, &["catalog", "nodes"])),
        "No nodes match the given query - try expanding your search.\n"
    );
    let body = br#"{"Node":"worker-01","ID":"1b662d97-8b5c-3cc2-0ac0-96f8a3aa2a2e","Address":"10.4.5.31",
                    "Service":{"Service":"redis","Tags":["primary","v1"]}}"#;
    assert_eq!(put(&s, "/v1/catalog/register", body).status, 200);
    let body = br#"{"Node":"n2","Address":"10.4.5.32","Service":{"Service":"web"}}"#;
    assert_eq!(put(&s, "/v1/catalog/register", body).status, 200);
    assert_eq!(
        ok(&run(&s, &["catalog", "nodes"])),
        "Node       ID        Address    DC\nn2                   10.4.5.32  dc1\nworker-01  1b662d97  10.4.5.31  dc1\n"
    );
    assert_eq!(
        ok(&run(&s, &["catalog", "nodes", "-service", "redis"])).lines().count(),
        2
    );
    assert_eq!(ok(&run(&s, &["catalog", "services"])), "redis\nweb\n");
    assert_eq!(
        ok(&run(&s, &["catalog", "services", "-tags"])),
        "redis  primary,v1\nweb\n"
    );
    assert_eq!(ok(&run(&s, &["catalog", "services", "-node", "n2"])), "web\n");
    assert!(failed(&run(&s, &["catalog", "bogus"])).starts_with("Unknown subcommand"));
}

#[test]
fn services_register_deregister_and_maint() {
    let s = TestServer::start(HttpSettings::default());
    let r = run(
        &s,
        &[
            "services", "register", "-name", "web", "-port", "80", "-tag", "a", "-tag", "b", "-meta", "k=v",
        ],
    );
    assert_eq!(ok(&r), "Registered service: web\n");
    let local = s.fake.local.as_ref().unwrap();
    let svc = local.service("web").expect("registered on the agent");
    assert_eq!(
        (svc.port, svc.tags.clone(), svc.meta["k"].as_str()),
        (80, vec!["a".to_string(), "b".to_string()], "v")
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("svc.json");
    std::fs::write(
        &file,
        r#"{"services":[{"name":"db","id":"db1","port":5432},{"name":"cache"}]}"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(
        ok(&run(&s, &["services", "register", path])),
        "Registered service: db\nRegistered service: cache\n"
    );
    assert!(local.service("db1").is_some());

    assert_eq!(
        ok(&run(&s, &["maint", "-enable", "-reason", "upgrade"])),
        "Node entered maintenance mode\n"
    );
    assert_eq!(
        ok(&run(&s, &["maint", "-enable", "-service", "web"])),
        "Service entered maintenance mode: web\n"
    );
    let listed = run(&s, &["maint"]);
    assert!(
        ok(&listed).contains("Node:\n  Name:   server-1\n  Reason: upgrade\n"),
        "{}",
        listed.out
    );
    assert!(listed.out.contains("Service:\n  ID:     web\n"), "{}", listed.out);
    assert_eq!(
        local.service_health("web").unwrap().0,
        concord_core::state::CheckStatus::Critical
    );
    assert_eq!(ok(&run(&s, &["maint", "-disable"])), "Node left maintenance mode\n");
    assert_eq!(
        ok(&run(&s, &["maint", "-disable", "-service", "web"])),
        "Service left maintenance mode: web\n"
    );
    assert_eq!(ok(&run(&s, &["maint"])), "");
    assert!(failed(&run(&s, &["maint", "-enable", "-service", "nope"])).contains("404"));

    assert_eq!(
        ok(&run(&s, &["services", "deregister", "-id", "web"])),
        "Deregistered service: web\n"
    );
    assert_eq!(
        ok(&run(&s, &["services", "deregister", path])),
        "Deregistered service: db1\nDeregistered service: cache\n"
    );
    assert!(local.services().is_empty());
    assert!(failed(&run(&s, &["services", "deregister", "-id", "web"])).contains("404"));
}
