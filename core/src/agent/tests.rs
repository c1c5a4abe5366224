//! The agent's local state: TTL expiry and anti-flap on a virtual clock, reaping critical services, and
//! anti-entropy converging a real catalog store to the local state (and then writing nothing).
use super::*;
use crate::state::{CatalogQuery, CatalogResult, Changes, StateMachine};

fn t(secs: u64) -> Instant {
    Instant::from_micros(secs * 1_000_000)
}

fn agent() -> LocalAgent {
    LocalAgent::new(
        NodeIdentity {
            name: "n1".into(),
            id: "11111111-2222-3333-4444-555555555555".into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            ..NodeIdentity::default()
        },
        None,
    )
}

fn svc(id: &str, tags: &[&str]) -> ServiceInstance {
    ServiceInstance {
        id: id.into(),
        service: "web".into(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        port: 80,
        ..ServiceInstance::default()
    }
}

fn check(kind: CheckKind) -> CheckDef {
    CheckDef {
        id: String::new(),
        name: String::new(),
        notes: String::new(),
        service_id: String::new(),
        kind,
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        deregister_critical_service_after: None,
        success_before_passing: 0,
        failures_before_critical: 0,
        initial_status: CheckStatus::Critical,
    }
}

fn ttl(secs: u64) -> CheckDef {
    check(CheckKind::Ttl {
        ttl: Duration::from_secs(secs),
    })
}

#[test]
fn ttl_checks_expire_to_critical_and_updates_restart_the_clock() {
    let mut a = agent();
    a.add_service(t(0), svc("web1", &[]), vec![ttl(10)], false).unwrap();
    assert_eq!(
        a.checks()["service:web1"].status,
        CheckStatus::Critical,
        "initial status"
    );
    a.update_ttl(t(1), "service:web1", CheckStatus::Passing, "ok").unwrap();
    assert_eq!(a.next_deadline(), Some(t(11)));
    assert!(!a.tick(t(10)));
    assert_eq!(a.checks()["service:web1"].status, CheckStatus::Passing);
    assert!(a.tick(t(11)));
    let c = &a.checks()["service:web1"];
    assert_eq!((c.status, c.output.as_str()), (CheckStatus::Critical, "TTL expired"));
    assert_eq!(a.next_deadline(), None);
    assert!(matches!(
        a.update_ttl(t(12), "nope", CheckStatus::Passing, ""),
        Err(AgentError::NotFound(_))
    ));
    let refused = a.add_service(t(12), svc("bad", &[]), vec![ttl(5), ttl(0)], false);
    assert!(matches!(refused, Err(AgentError::BadRequest(_))));
    assert!(
        !a.services().contains_key("bad"),
        "a refused registration changes nothing"
    );
}

#[test]
fn thresholds_delay_status_changes() {
    let mut a = agent();
    let mut def = check(CheckKind::Tcp {
        address: "127.0.0.1:1".into(),
    });
    def.id = "tcp".into();
    def.success_before_passing = 2;
    def.failures_before_critical = 3;
    a.add_check(t(0), def).unwrap();
    a.check_result(t(1), "tcp", CheckStatus::Passing, "up");
    assert_eq!(
        a.checks()["tcp"].status,
        CheckStatus::Critical,
        "one success is not enough"
    );
    a.check_result(t(2), "tcp", CheckStatus::Passing, "up");
    assert_eq!(a.checks()["tcp"].status, CheckStatus::Passing);
    a.check_result(t(3), "tcp", CheckStatus::Critical, "down");
    a.check_result(t(4), "tcp", CheckStatus::Critical, "down");
    assert_eq!(a.checks()["tcp"].status, CheckStatus::Passing);
    a.check_result(t(5), "tcp", CheckStatus::Critical, "down");
    assert_eq!(a.checks()["tcp"].status, CheckStatus::Critical);
    let long = "x".repeat(10_000);
    a.check_result(t(6), "tcp", CheckStatus::Critical, &long);
    assert_eq!(a.checks()["tcp"].output.len(), MAX_OUTPUT);
}

#[test]
fn a_service_critical_too_long_is_deregistered() {
    let mut a = agent();
    let mut def = ttl(5);
    def.deregister_critical_service_after = Some(Duration::from_secs(60));
    a.add_service(t(0), svc("web1", &[]), vec![def], false).unwrap();
    assert_eq!(a.next_deadline(), Some(t(5)));
    a.update_ttl(t(30), "service:web1", CheckStatus::Passing, "").unwrap();
    a.tick(t(35)); // expires at 35: critical since 35
    assert_eq!(a.next_deadline(), Some(t(95)));
    assert!(!a.tick(t(94)));
    assert!(a.services().contains_key("web1"));
    assert!(a.tick(t(95)));
    assert!(a.services().is_empty() && a.checks().is_empty());
}

#[test]
fn several_checks_get_numbered_ids_and_maintenance_is_a_critical_check() {
    let mut a = agent();
    a.add_service(t(0), svc("web1", &[]), vec![ttl(5), ttl(5)], false)
        .unwrap();
    assert!(a.checks().contains_key("service:web1:1") && a.checks().contains_key("service:web1:2"));
    a.set_service_maintenance(t(1), "web1", true, "upgrade").unwrap();
    let (status, checks) = a.service_health("web1").unwrap();
    assert_eq!(status, CheckStatus::Critical);
    assert!(checks
        .iter()
        .any(|c| c.check_id == "_service_maintenance:web1" && c.notes == "upgrade"));
    a.set_node_maintenance(t(1), true, "");
    assert!(a.checks().contains_key(NODE_MAINTENANCE_CHECK));
    a.set_node_maintenance(t(1), false, "");
    a.set_service_maintenance(t(1), "web1", false, "").unwrap();
    assert_eq!(a.checks().len(), 2);
    assert!(a.remove_service("web1"));
    assert!(a.checks().is_empty(), "a service's checks go with it");
}

/// Run anti-entropy against a real store until it has nothing to write; returns the number of rounds.
fn converge(a: &mut LocalAgent, sm: &mut StateMachine, index: &mut u64) -> usize {
    for round in 0..5 {
        let (_, node) = sm.catalog.read(&CatalogQuery::Node { node: "n1".into() });
        let CatalogResult::Node(node) = node else {
            unreachable!()
        };
        let (node, services) = match node {
            Some(b) => (Some(b.0), b.1),
            None => (None, Vec::new()),
        };
        let CatalogResult::Checks(checks) = sm.catalog.read(&CatalogQuery::HealthNode { node: "n1".into() }).1 else {
            unreachable!()
        };
        let plan = a.sync_plan(t(*index), node.as_ref(), &services, &checks);
        if plan.is_empty() {
            return round;
        }
        for cmd in plan {
            *index += 1;
            let r = sm.apply(*index, &cmd, &mut Changes::default());
            assert_eq!(r, crate::state::CommandResult::Bool(true), "{cmd:?}");
        }
    }
    panic!("anti-entropy does not converge");
}

#[test]
fn anti_entropy_converges_deletes_foreign_rows_and_honours_tag_override() {
    let mut a = agent();
    let mut sm = StateMachine::default();
    let mut index = 1;
    a.add_service(t(0), svc("web1", &["v1"]), vec![ttl(30)], false).unwrap();
    let mut over = svc("api1", &["a"]);
    over.service = "api".into();
    over.enable_tag_override = true;
    a.add_service(t(0), over, vec![], false).unwrap();
    assert_eq!(converge(&mut a, &mut sm, &mut index), 1);
    assert!(sm.catalog.service("n1", "web1").is_some());
    assert_eq!(
        sm.catalog.check("n1", "service:web1").unwrap().status,
        CheckStatus::Critical
    );

    // Someone else writes rows on our node and retags both services.
    let mut foreign = Registration {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        skip_node_update: true,
        service: Some(svc("stray", &[])),
        ..Registration::default()
    };
    index += 1;
    sm.apply(
        index,
        &Command::CatalogRegister(Box::new(foreign.clone())),
        &mut Changes::default(),
    );
    for (id, name) in [("web1", "web"), ("api1", "api")] {
        let mut s = svc(id, &["external"]);
        s.service = name.into();
        s.enable_tag_override = id == "api1";
        foreign.service = Some(s);
        index += 1;
        sm.apply(
            index,
            &Command::CatalogRegister(Box::new(foreign.clone())),
            &mut Changes::default(),
        );
    }
    a.update_ttl(t(1), "service:web1", CheckStatus::Passing, "fine")
        .unwrap();
    converge(&mut a, &mut sm, &mut index);
    assert!(
        sm.catalog.service("n1", "stray").is_none(),
        "unknown services are removed"
    );
    assert_eq!(
        sm.catalog.service("n1", "web1").unwrap().tags,
        vec!["v1"],
        "tags restored"
    );
    assert_eq!(
        sm.catalog.service("n1", "api1").unwrap().tags,
        vec!["external"],
        "override kept"
    );
    assert_eq!(a.services()["api1"].tags, vec!["external"]);
    let c = sm.catalog.check("n1", "service:web1").unwrap();
    assert_eq!((c.status, c.output.as_str()), (CheckStatus::Passing, "fine"));

    a.remove_service("web1");
    converge(&mut a, &mut sm, &mut index);
    assert!(sm.catalog.service("n1", "web1").is_none());
    assert!(sm.catalog.check("n1", "service:web1").is_none());
}

#[test]
fn a_server_carries_the_consul_service_and_snapshots_keep_ttl_state() {
    let mut a = LocalAgent::new(agent().node().clone(), Some(8300));
    let mut sm = StateMachine::default();
    let mut index = 1;
    converge(&mut a, &mut sm, &mut index);
    assert_eq!(sm.catalog.service("n1", "consul").unwrap().port, 8300);
    assert!(
        sm.catalog.check("n1", SERF_HEALTH).is_none(),
        "serfHealth is the leader's to write, from gossip"
    );

    a.add_service(t(0), svc("web1", &[]), vec![ttl(30)], false).unwrap();
    a.update_ttl(t(10), "service:web1", CheckStatus::Passing, "ok").unwrap();
    let snap = a.snapshot(t(20));
    let mut b = LocalAgent::new(a.node().clone(), Some(8300));
    b.restore(t(100), snap);
    assert_eq!(
        b.checks()["service:web1"].status,
        CheckStatus::Passing,
        "status survives a restart"
    );
    assert_eq!(b.next_deadline(), Some(t(120)), "for what was left of its TTL");
}

#[test]
fn output_only_changes_wait_for_the_check_update_interval() {
    let mut a = agent();
    a.set_check_update_interval(Duration::from_secs(300));
    let mut sm = StateMachine::default();
    let mut index = 1;
    a.add_service(t(0), svc("web1", &[]), vec![ttl(3600)], false).unwrap();
    a.update_ttl(t(0), "service:web1", CheckStatus::Passing, "load 0.1")
        .unwrap();
    converge(&mut a, &mut sm, &mut index);
    a.update_ttl(t(0), "service:web1", CheckStatus::Passing, "load 0.2")
        .unwrap();
    assert_eq!(converge(&mut a, &mut sm, &mut index), 0, "output alone waits");
    assert_eq!(sm.catalog.check("n1", "service:web1").unwrap().output, "load 0.1");
    a.update_ttl(t(0), "service:web1", CheckStatus::Warning, "load 9")
        .unwrap();
    assert_eq!(converge(&mut a, &mut sm, &mut index), 1, "a status change goes at once");
    a.update_ttl(t(0), "service:web1", CheckStatus::Warning, "load 8")
        .unwrap();
    assert_eq!(converge(&mut a, &mut sm, &mut index), 0);
    index += 300; // converge's clock is the Raft index, in seconds
    assert_eq!(
        converge(&mut a, &mut sm, &mut index),
        1,
        "after the interval the output is written"
    );
    assert_eq!(sm.catalog.check("n1", "service:web1").unwrap().output, "load 8");
}

#[test]
fn config_definitions_are_not_resurrected_but_their_state_is_kept() {
    let mut a = agent();
    let mut cfg = ttl(60);
    cfg.id = "cfg-ttl".into();
    a.add_service(t(0), svc("from-file", &[]), vec![], false).unwrap();
    a.add_check(t(0), cfg.clone()).unwrap();
    a.mark_registered_as_config();
    a.add_service(t(0), svc("from-api", &[]), vec![], false).unwrap();
    a.update_ttl(t(1), "cfg-ttl", CheckStatus::Passing, "ok").unwrap();
    let snap = a.snapshot(t(2));
    assert_eq!(snap.services.len(), 1, "config services are not saved as definitions");

    // Next start: the files still define the check but no longer the service.
    let mut b = agent();
    b.add_check(t(100), cfg).unwrap();
    b.mark_registered_as_config();
    b.restore(t(100), snap.clone());
    assert!(b.services().contains_key("from-api") && !b.services().contains_key("from-file"));
    assert_eq!(
        b.checks()["cfg-ttl"].status,
        CheckStatus::Passing,
        "state kept for the file's check"
    );

    // The files dropped the check too: it stays gone.
    let mut c = agent();
    c.mark_registered_as_config();
    c.restore(t(100), snap);
    assert!(!c.checks().contains_key("cfg-ttl"));
}

fn row(check_id: &str, service_id: &str, status: CheckStatus) -> HealthCheck {
    HealthCheck {
        node: "n2".into(),
        check_id: check_id.into(),
        name: check_id.into(),
        status,
        output: format!("{check_id} says so"),
        service_id: service_id.into(),
        ..HealthCheck::default()
    }
}

#[test]
fn alias_status_follows_consuls_rules() {
    use CheckStatus::*;
    // Nothing to mirror: passing.
    assert_eq!(alias_status(&[], "n2", "", true), (Passing, "No checks found.".into()));
    // Node alias: node checks count, service checks do not.
    let checks = [row("mem", "", Passing), row("service:db", "db", Critical)];
    assert_eq!(
        alias_status(&checks, "n2", "", false),
        (Passing, "All checks passing.".into())
    );
    // Service alias: the service's checks and the node's; critical beats warning whatever the order.
    let checks = [
        row("mem", "", Warning),
        row("service:db", "db", Critical),
        row("disk", "", Warning),
    ];
    let (status, output) = alias_status(&checks, "n2", "db", true);
    assert_eq!(status, Critical);
    assert!(
        output.contains("\"service:db\" failing: service:db says so"),
        "{output}"
    );
    let checks = [row("service:db", "db", Passing), row("mem", "", Warning)];
    assert_eq!(alias_status(&checks, "n2", "db", true).0, Warning);
    // Another service's failure does not leak into a service alias.
    let checks = [row("service:db", "db", Passing), row("service:web", "web", Critical)];
    assert_eq!(alias_status(&checks, "n2", "db", true).0, Passing);
    // A service without checks is passing; a service the node does not have is critical.
    assert_eq!(alias_status(&[], "n2", "db", true).0, Passing);
    let (status, output) = alias_status(&[row("mem", "", Passing)], "n2", "db", false);
    assert_eq!(status, Critical);
    assert_eq!(output, "Service db could not be found on node n2");
}

/// The catalog's rows for n1: (service IDs, check IDs), as stored.
fn catalog_ids(sm: &StateMachine) -> (Vec<String>, Vec<String>) {
    let (services, checks) = sm.catalog.node_rows("n1");
    (
        services.into_iter().map(|s| s.id).collect(),
        checks.into_iter().map(|c| c.check_id).collect(),
    )
}

#[test]
fn local_ids_differing_only_in_case_sync_one_row_without_flapping() {
    // The agent keeps both (Consul's local state is keyed by exact ID); the catalog folds IDs, so it
    // can hold one of each: the first in ID order, with its checks, every round the same.
    let mut a = agent();
    let mut sm = StateMachine::default();
    let mut index = 1;
    let named = |id: &str| CheckDef {
        id: id.into(),
        ..ttl(30)
    };
    a.add_service(t(0), svc("web1", &[]), vec![named("web1-check")], false)
        .unwrap();
    a.add_service(t(0), svc("Web1", &["upper"]), vec![named("Web1-check")], false)
        .unwrap();
    a.add_check(t(0), named("Node-Check")).unwrap();
    a.add_check(t(0), named("node-check")).unwrap();
    assert_eq!(a.services().len(), 2);
    assert_eq!(converge(&mut a, &mut sm, &mut index), 1);
    assert_eq!(
        catalog_ids(&sm),
        (
            vec!["Web1".to_string()],
            vec!["Node-Check".to_string(), "Web1-check".to_string()]
        )
    );
    assert_eq!(sm.catalog.service("n1", "web1").unwrap().tags, ["upper"]);
    // Nothing to write from then on.
    assert_eq!(converge(&mut a, &mut sm, &mut index), 0);
    // Removing the synced one lets the other take its place.
    assert!(a.remove_service("Web1"));
    a.remove_check("Node-Check");
    converge(&mut a, &mut sm, &mut index);
    assert_eq!(
        catalog_ids(&sm),
        (
            vec!["web1".to_string()],
            vec!["node-check".to_string(), "web1-check".to_string()]
        )
    );
    assert_eq!(converge(&mut a, &mut sm, &mut index), 0);
}

#[test]
fn a_catalog_row_in_another_case_is_rewritten_not_deleted() {
    let mut a = agent();
    let mut sm = StateMachine::default();
    let mut index = 1;
    a.add_service(t(0), svc("web1", &[]), vec![ttl(30)], false).unwrap();
    converge(&mut a, &mut sm, &mut index);
    // Someone re-registers our service and check through the catalog API under other cases.
    let mut s = svc("WEB1", &[]);
    s.port = 81;
    let mut c = a.health_check(&a.checks()["service:web1"]);
    c.check_id = "SERVICE:WEB1".into();
    c.service_id = "WEB1".into();
    let foreign = Registration {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        skip_node_update: true,
        service: Some(s),
        checks: vec![c],
        ..Registration::default()
    };
    index += 1;
    sm.apply(
        index,
        &Command::CatalogRegister(Box::new(foreign)),
        &mut Changes::default(),
    );
    assert_eq!(
        catalog_ids(&sm),
        (vec!["WEB1".to_string()], vec!["SERVICE:WEB1".to_string()])
    );
    let (_, node) = sm.catalog.read(&CatalogQuery::Node { node: "n1".into() });
    let CatalogResult::Node(Some(found)) = node else {
        unreachable!()
    };
    let (_, checks) = sm.catalog.node_rows("n1");
    let plan = a.sync_plan(t(1), Some(&found.0), &found.1, &checks);
    assert!(
        !plan.iter().any(|c| matches!(c, Command::CatalogDeregister { .. })),
        "the rows are ours: {plan:?}"
    );
    assert_eq!(converge(&mut a, &mut sm, &mut index), 1);
    assert_eq!(
        catalog_ids(&sm),
        (vec!["web1".to_string()], vec!["service:web1".to_string()])
    );
    assert_eq!(sm.catalog.service("n1", "web1").unwrap().port, 80);
}
