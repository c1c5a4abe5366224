//! Reconciliation against a real state machine: apply what the reconciler asks for, read back what users
//! would see (`/v1/health/service`, `/v1/catalog/nodes`), and check that a second pass asks for nothing.

use super::*;
use crate::gossip::Tags;
use crate::state::{CatalogQuery, CatalogResult, Changes, CommandResult, ServiceInstance, StateMachine};
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

fn member(name: &str, ip: u8, status: MemberStatus) -> Member {
    let tags: Tags = [
        ("role", "node"),
        ("dc", "dc1"),
        ("id", &format!("0000000{ip}-0000-0000-0000-000000000000")[..]),
        ("build", "1.17.0:concord-0.1.0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Member {
        name: name.into(),
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, ip)), 8301),
        tags,
        incarnation: 1,
        status,
    }
}

fn leader() -> Reconciler {
    Reconciler {
        node_name: "s1".into(),
        datacenter: "dc1".into(),
    }
}

struct Catalog {
    sm: StateMachine,
    index: u64,
}

impl Catalog {
    fn new() -> Self {
        Catalog {
            sm: StateMachine::default(),
            index: 0,
        }
    }

    fn apply(&mut self, cmd: &Command) {
        self.index += 1;
        let result = self.sm.apply(self.index, cmd, &mut Changes::default());
        assert_eq!(result, CommandResult::Bool(true), "{cmd:?}");
    }

    fn nodes(&self) -> Vec<CatalogNode> {
        match self.sm.catalog.read(&CatalogQuery::Nodes).1 {
            CatalogResult::Nodes(n) => n,
            other => panic!("{other:?}"),
        }
    }

    fn checks(&self) -> Vec<HealthCheck> {
        match self.sm.catalog.read(&CatalogQuery::HealthState { status: None }).1 {
            CatalogResult::Checks(c) => c,
            other => panic!("{other:?}"),
        }
    }

    /// Reconcile fully, apply, and return how many writes it took.
    fn reconcile(&mut self, members: &[Member]) -> usize {
        let plan = leader().reconcile_all(members, &self.nodes(), &self.checks());
        for cmd in &plan {
            self.apply(cmd);
        }
        plan.len()
    }

    fn serf_health(&self, node: &str) -> Option<(CheckStatus, String)> {
        self.sm
            .catalog
            .check(node, SERF_HEALTH)
            .map(|c| (c.status, c.output.clone()))
    }

    /// `/v1/health/service/:name` (`passing` = `?passing`): node names.
    fn healthy(&self, service: &str, passing: bool) -> Vec<String> {
        let query = CatalogQuery::HealthService {
            name: service.into(),
            tags: vec![],
            passing,
        };
        match self.sm.catalog.read(&query).1 {
            CatalogResult::CheckServiceNodes(v) => v.into_iter().map(|e| e.node.node).collect(),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn alive_member_becomes_a_node_with_serf_health_passing_and_a_second_pass_writes_nothing() {
    let mut cat = Catalog::new();
    let c1 = member("c1", 5, MemberStatus::Alive);
    assert_eq!(cat.reconcile(std::slice::from_ref(&c1)), 1);
    let nodes = cat.nodes();
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(
        (n.node.as_str(), n.address.as_str(), n.datacenter.as_str()),
        ("c1", "10.0.0.5", "dc1")
    );
    assert_eq!(n.id, "00000005-0000-0000-0000-000000000000");
    assert_eq!(n.meta.get("consul-version").map(String::as_str), Some("1.17.0"));
    let check = cat.sm.catalog.check("c1", SERF_HEALTH).unwrap();
    assert_eq!(check.name, SERF_CHECK_NAME);
    assert_eq!(check.status, CheckStatus::Passing);
    assert_eq!(check.output, SERF_ALIVE_OUTPUT);
    assert_eq!(cat.reconcile(&[c1]), 0, "idempotent");
}

#[test]
fn an_existing_node_keeps_its_meta_and_tagged_addresses() {
    let mut cat = Catalog::new();
    // What the agent's anti-entropy wrote before the leader saw the member.
    cat.apply(&Command::CatalogRegister(Box::new(Registration {
        id: "00000005-0000-0000-0000-000000000000".into(),
        node: "c1".into(),
        address: "10.0.0.5".into(),
        datacenter: "dc1".into(),
        tagged_addresses: [("lan".to_string(), "10.0.0.5".to_string())].into(),
        node_meta: [("rack".to_string(), "r1".to_string())].into(),
        ..Registration::default()
    })));
    let before = cat.nodes()[0].clone();
    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Alive)]), 1);
    let after = &cat.nodes()[0];
    assert_eq!(after.meta, before.meta);
    assert_eq!(after.tagged_addresses, before.tagged_addresses);
    assert_eq!(
        after.modify_index, before.modify_index,
        "the node row itself did not change"
    );
    assert_eq!(cat.serf_health("c1").unwrap().0, CheckStatus::Passing);
}

#[test]
fn failed_member_turns_its_services_critical_and_recovery_turns_them_back() {
    let mut cat = Catalog::new();
    cat.reconcile(&[member("c1", 5, MemberStatus::Alive)]);
    cat.apply(&Command::CatalogRegister(Box::new(Registration {
        node: "c1".into(),
        skip_node_update: true,
        service: Some(ServiceInstance {
            id: "web1".into(),
            service: "web".into(),
            port: 80,
            ..ServiceInstance::default()
        }),
        ..Registration::default()
    })));
    assert_eq!(cat.healthy("web", true), ["c1"]);

    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Failed)]), 1);
    assert_eq!(
        cat.serf_health("c1"),
        Some((CheckStatus::Critical, SERF_FAILED_OUTPUT.to_string()))
    );
    assert_eq!(cat.healthy("web", false), ["c1"], "still listed, as critical");
    assert!(cat.healthy("web", true).is_empty(), "gone from ?passing");
    assert_eq!(cat.nodes()[0].address, "10.0.0.5", "the node row is kept");
    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Failed)]), 0, "idempotent");

    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Alive)]), 1);
    assert_eq!(cat.healthy("web", true), ["c1"]);
}

#[test]
fn failed_member_unknown_to_the_catalog_is_ignored() {
    let mut cat = Catalog::new();
    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Failed)]), 0);
    assert!(cat.nodes().is_empty());
}

#[test]
fn left_member_is_deregistered_but_the_leader_never_deregisters_itself() {
    let mut cat = Catalog::new();
    let mut s1 = member("s1", 1, MemberStatus::Alive);
    s1.tags.insert("role".into(), "consul".into());
    cat.reconcile(&[s1.clone(), member("c1", 5, MemberStatus::Alive)]);
    assert_eq!(cat.nodes().len(), 2);
    s1.status = MemberStatus::Left;
    assert_eq!(cat.reconcile(&[s1, member("c1", 5, MemberStatus::Left)]), 1);
    let names: Vec<String> = cat.nodes().into_iter().map(|n| n.node).collect();
    assert_eq!(names, ["s1"]);
    assert!(cat.serf_health("c1").is_none(), "its checks went with it");
}

#[test]
fn leaving_member_is_left_alone_until_its_leave_completes() {
    let mut cat = Catalog::new();
    cat.reconcile(&[member("c1", 5, MemberStatus::Alive)]);
    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Leaving)]), 0);
}

#[test]
fn nodes_with_serf_health_that_gossip_forgot_are_reaped_and_external_nodes_are_kept() {
    let mut cat = Catalog::new();
    cat.reconcile(&[
        member("c1", 5, MemberStatus::Alive),
        member("c2", 6, MemberStatus::Alive),
    ]);
    // An external node registered through /v1/catalog/register has no serfHealth: not gossip's to remove.
    cat.apply(&Command::CatalogRegister(Box::new(Registration {
        node: "external".into(),
        address: "192.0.2.1".into(),
        ..Registration::default()
    })));
    assert_eq!(cat.reconcile(&[member("c1", 5, MemberStatus::Alive)]), 1);
    let names: Vec<String> = cat.nodes().into_iter().map(|n| n.node).collect();
    assert_eq!(names, ["c1", "external"]);
    let reaped = leader().reconcile_reaped(
        "c1",
        CatalogRows {
            node: cat.nodes().first(),
            serf_health: None,
        },
    );
    assert!(matches!(reaped, Some(Command::CatalogDeregister { ref node, .. }) if node == "c1"));
}

#[test]
fn members_of_other_datacenters_or_without_a_role_are_skipped() {
    let mut cat = Catalog::new();
    let mut other_dc = member("x1", 7, MemberStatus::Alive);
    other_dc.tags.insert("dc".into(), "dc2".into());
    let mut no_role = member("x2", 8, MemberStatus::Alive);
    no_role.tags.remove("role");
    assert_eq!(cat.reconcile(&[other_dc, no_role]), 0);
}

#[test]
fn a_member_back_at_a_new_address_is_re_registered_there() {
    let mut cat = Catalog::new();
    cat.reconcile(&[member("c1", 5, MemberStatus::Alive)]);
    let mut moved = member("c1", 5, MemberStatus::Alive);
    moved.addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), 8301);
    assert_eq!(cat.reconcile(&[moved]), 1);
    assert_eq!(cat.nodes()[0].address, "10.0.0.9");
}

#[test]
fn a_node_row_written_after_the_read_is_not_clobbered() {
    let mut cat = Catalog::new();
    let c1 = member("c1", 5, MemberStatus::Alive);
    // The leader read an empty catalog; then the agent's anti-entropy registered its node.
    let plan = leader().reconcile_all(std::slice::from_ref(&c1), &[], &[]);
    cat.apply(&Command::CatalogRegister(Box::new(Registration {
        id: "00000005-0000-0000-0000-000000000000".into(),
        node: "c1".into(),
        address: "10.0.0.5".into(),
        datacenter: "dc1".into(),
        node_meta: [("rack".to_string(), "r1".to_string())].into(),
        ..Registration::default()
    })));
    for cmd in &plan {
        cat.apply(cmd);
    }
    assert_eq!(cat.nodes()[0].meta.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(cat.serf_health("c1").unwrap().0, CheckStatus::Passing);
}

#[test]
fn a_new_agent_under_a_failed_members_name_takes_the_node_over_with_its_id() {
    let mut cat = Catalog::new();
    let old = member("web", 5, MemberStatus::Alive);
    cat.reconcile(std::slice::from_ref(&old));
    let failed = Member {
        status: MemberStatus::Failed,
        ..old.clone()
    };
    cat.reconcile(&[failed]);
    // Same name and address, a fresh data dir: another node ID.
    let mut new = old.clone();
    new.tags
        .insert("id".into(), "00000009-0000-0000-0000-000000000000".into());
    assert_eq!(cat.reconcile(std::slice::from_ref(&new)), 1);
    let nodes = cat.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, "00000009-0000-0000-0000-000000000000");
    assert_eq!(cat.serf_health("web").map(|s| s.0), Some(CheckStatus::Passing));
    assert_eq!(cat.reconcile(&[new]), 0, "idempotent");
}

#[test]
fn a_member_matches_its_node_whatever_the_case_of_the_catalogs_name() {
    let mut cat = Catalog::new();
    let web = member("Web1", 5, MemberStatus::Alive);
    assert_eq!(cat.reconcile(std::slice::from_ref(&web)), 1);
    // The catalog's name for the node changes case (a registration through the catalog API): it is the
    // same node, so gossip's member is neither re-registered nor reaped.
    cat.apply(&Command::CatalogRegister(Box::new(Registration {
        node: "web1".into(),
        address: "10.0.0.5".into(),
        skip_node_update: false,
        id: "00000005-0000-0000-0000-000000000000".into(),
        datacenter: "dc1".into(),
        node_meta: cat.nodes()[0].meta.clone(),
        ..Registration::default()
    })));
    assert_eq!(cat.reconcile(std::slice::from_ref(&web)), 0);
    assert_eq!(cat.nodes().len(), 1);
    assert_eq!(cat.serf_health("WEB1").map(|h| h.0), Some(CheckStatus::Passing));
    // Gone from gossip: reaped under the name its serfHealth row has.
    assert_eq!(cat.reconcile(&[]), 1);
    assert!(cat.nodes().is_empty());
}
