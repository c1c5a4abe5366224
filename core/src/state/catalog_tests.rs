//! Tests of the catalog: Consul's register/deregister semantics, health views, and (property) that every
//! read's range index moves forward exactly when its answer changes, against a plain model.
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{
    CatalogError, CatalogQuery, CatalogRange, CatalogResult, CatalogStore, Changes, CheckStatus, Command,
    CommandResult, HealthCheck, Registration, ServiceInstance, StateMachine, SyncSeq,
};

fn node_reg(node: &str, address: &str) -> Registration {
    Registration {
        node: node.into(),
        address: address.into(),
        datacenter: "dc1".into(),
        ..Registration::default()
    }
}

fn service(id: &str, name: &str, tags: &[&str]) -> ServiceInstance {
    ServiceInstance {
        id: id.into(),
        service: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        port: 80,
        ..ServiceInstance::default()
    }
}

fn check(id: &str, service_id: &str, status: CheckStatus) -> HealthCheck {
    HealthCheck {
        check_id: id.into(),
        name: id.into(),
        service_id: service_id.into(),
        status,
        ..HealthCheck::default()
    }
}

fn apply(sm: &mut StateMachine, index: u64, cmd: Command) -> (CommandResult, Changes) {
    let mut changes = Changes::default();
    let result = sm.apply(index, &cmd, &mut changes);
    (result, changes)
}

fn register(sm: &mut StateMachine, index: u64, reg: Registration) -> (CommandResult, Changes) {
    apply(sm, index, Command::CatalogRegister(Box::new(reg)))
}

fn health(sm: &StateMachine, name: &str, passing: bool) -> Vec<(String, String)> {
    let query = CatalogQuery::HealthService {
        name: name.into(),
        tags: vec![],
        passing,
    };
    match sm.catalog.read(&query).1 {
        CatalogResult::CheckServiceNodes(v) => v.into_iter().map(|e| (e.node.node, e.service.id)).collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn register_creates_node_service_and_checks_with_raft_indexes() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service("web1", "web", &["prod"]));
    reg.checks = vec![check("service:web1", "web1", CheckStatus::Passing)];
    let (result, changes) = register(&mut sm, 5, reg.clone());
    assert_eq!(result, CommandResult::Bool(true));
    for range in [
        CatalogRange::Nodes,
        CatalogRange::Services,
        CatalogRange::Checks,
        CatalogRange::Node("n1".into()),
        CatalogRange::Service("web".into()),
    ] {
        assert!(changes.catalog.contains(&range), "{range:?} not reported");
        assert_eq!(sm.catalog.range_index(&range), 5);
    }
    let c = sm.catalog.check("n1", "service:web1").unwrap();
    assert_eq!((c.node.as_str(), c.service_name.as_str()), ("n1", "web"));
    assert_eq!(c.service_tags, vec!["prod".to_string()]);
    assert_eq!((c.create_index, c.modify_index), (5, 5));

    // The same registration again changes nothing: no index moves, nobody wakes.
    let (_, changes) = register(&mut sm, 6, reg.clone());
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(sm.catalog.range_index(&CatalogRange::Service("web".into())), 5);

    // A new tag: the service, its node, the service list, and the check (which mirrors the tags) move.
    reg.service = Some(service("web1", "web", &["prod", "v2"]));
    let (_, changes) = register(&mut sm, 7, reg);
    assert!(changes.catalog.contains(&CatalogRange::Services));
    assert!(!changes.catalog.contains(&CatalogRange::Nodes));
    let svc = sm.catalog.service("n1", "web1").unwrap();
    assert_eq!((svc.create_index, svc.modify_index), (5, 7));
    assert_eq!(sm.catalog.check("n1", "service:web1").unwrap().service_tags.len(), 2);
}

#[test]
fn a_refused_registration_writes_nothing() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.checks = vec![check("c", "nope", CheckStatus::Passing)];
    let (result, changes) = register(&mut sm, 2, reg);
    assert_eq!(result, CommandResult::Refused(CatalogError::MissingService));
    assert!(changes.is_empty());
    assert!(
        sm.catalog.node("n1").is_none(),
        "the node of a refused registration is not created"
    );
    assert_eq!(
        register(&mut sm, 3, node_reg("", "1.2.3.4")).0,
        CommandResult::Refused(CatalogError::MissingNode)
    );
    assert_eq!(
        register(&mut sm, 3, node_reg("n", "")).0,
        CommandResult::Refused(CatalogError::MissingAddress)
    );
}

const ID_A: &str = "11111111-2222-3333-4444-555555555555";
const ID_B: &str = "22222222-2222-3333-4444-555555555555";

fn agent_reg(node: &str, id: &str, address: &str, serf: CheckStatus) -> Registration {
    let mut reg = node_reg(node, address);
    reg.id = id.into();
    reg.checks = vec![check("serfHealth", "", serf)];
    reg
}

#[test]
fn a_live_nodes_name_is_reserved_for_its_id_a_failed_ones_is_reusable() {
    let mut sm = StateMachine::default();
    let mut web = agent_reg("web", ID_A, "10.0.0.1", CheckStatus::Passing);
    web.service = Some(service("api", "api", &[]));
    register(&mut sm, 2, web);
    // Another agent (another node ID) under the same name while the first is alive: refused, untouched.
    let (result, changes) = register(&mut sm, 3, agent_reg("web", ID_B, "10.0.0.2", CheckStatus::Passing));
    let CommandResult::Refused(e @ CatalogError::NodeIdConflict { .. }) = result else {
        panic!("{result:?}")
    };
    assert_eq!(
        e.to_string(),
        format!(
            "failed inserting node: Error while renaming Node ID: \"{ID_B}\": Node name web is reserved by node {ID_A} with name web (10.0.0.1)"
        )
    );
    assert!(changes.is_empty());
    assert_eq!(sm.catalog.node("web").map(|n| n.id.as_str()), Some(ID_A));

    // Once its serfHealth is critical (failed), the name goes to the new ID, node row and all.
    register(&mut sm, 4, agent_reg("web", ID_A, "10.0.0.1", CheckStatus::Critical));
    let (result, _) = register(&mut sm, 5, agent_reg("web", ID_B, "10.0.0.2", CheckStatus::Passing));
    assert_eq!(result, CommandResult::Bool(true));
    let node = sm.catalog.node("web").unwrap();
    assert_eq!((node.id.as_str(), node.address.as_str()), (ID_B, "10.0.0.2"));
    assert_eq!(node.modify_index, 5);

    // Even a registration that skips the node row takes the name over at the same address.
    register(&mut sm, 6, agent_reg("web", ID_B, "10.0.0.2", CheckStatus::Critical));
    let mut reuse = agent_reg("web", ID_A, "10.0.0.2", CheckStatus::Passing);
    reuse.skip_node_update = true;
    assert_eq!(register(&mut sm, 7, reuse).0, CommandResult::Bool(true));
    assert_eq!(sm.catalog.node("web").map(|n| n.id.as_str()), Some(ID_A));

    // A node without serfHealth (registered from outside) does not reserve its name.
    let mut ext = node_reg("ext", "10.0.0.9");
    ext.id = ID_B.into();
    register(&mut sm, 8, ext);
    let mut other = node_reg("ext", "10.0.0.9");
    other.id = "33333333-2222-3333-4444-555555555555".into();
    assert_eq!(register(&mut sm, 9, other).0, CommandResult::Bool(true));
}

#[test]
fn a_node_id_registered_under_a_new_name_renames_the_node() {
    let mut sm = StateMachine::default();
    let mut a = agent_reg("a", ID_A, "1.1.1.1", CheckStatus::Passing);
    a.service = Some(service("api", "api", &[]));
    register(&mut sm, 2, a);
    // Consul: the ID moves to the new name; the old name goes with everything on it.
    assert_eq!(
        register(&mut sm, 3, agent_reg("b", ID_A, "1.1.1.1", CheckStatus::Passing)).0,
        CommandResult::Bool(true)
    );
    assert!(sm.catalog.node("a").is_none());
    assert!(sm.catalog.service("a", "api").is_none());
    assert_eq!(sm.catalog.node("b").map(|n| n.id.as_str()), Some(ID_A));
    // Renaming onto a name a live node holds is refused, and then nothing moves.
    register(&mut sm, 4, agent_reg("c", ID_B, "2.2.2.2", CheckStatus::Passing));
    let result = register(&mut sm, 5, agent_reg("c", ID_A, "1.1.1.1", CheckStatus::Passing)).0;
    let CommandResult::Refused(e) = result else {
        panic!("{result:?}")
    };
    assert!(
        e.to_string()
            .contains(&format!("\"{ID_A}\" (1.1.1.1): Node name c is reserved by node {ID_B}")),
        "{e}"
    );
    assert!(sm.catalog.node("b").is_some());
    assert_eq!(sm.catalog.node("c").map(|n| n.id.as_str()), Some(ID_B));
}

#[test]
fn health_passing_needs_every_node_and_service_check_passing() {
    let mut sm = StateMachine::default();
    for (i, node) in ["n1", "n2"].iter().enumerate() {
        let mut reg = node_reg(node, "10.0.0.1");
        reg.service = Some(service("web", "web", &[]));
        reg.checks = vec![
            check("serfHealth", "", CheckStatus::Passing),
            check("service:web", "web", CheckStatus::Passing),
        ];
        register(&mut sm, 2 + i as u64, reg);
    }
    assert_eq!(health(&sm, "web", true).len(), 2);
    let (_, changes) = apply(
        &mut sm,
        10,
        Command::CatalogCheckUpdate {
            node: "n2".into(),
            check_id: "serfHealth".into(),
            status: CheckStatus::Critical,
            output: "gone".into(),
        },
    );
    assert!(
        changes.catalog.contains(&CatalogRange::Service("web".into())),
        "a node check changes the health of every service on the node"
    );
    assert_eq!(health(&sm, "web", true), vec![("n1".to_string(), "web".to_string())]);
    assert_eq!(health(&sm, "web", false).len(), 2);
    assert_eq!(sm.catalog.range_index(&CatalogRange::Service("web".into())), 10);
    assert_eq!(sm.catalog.range_index(&CatalogRange::Node("n1".into())), 2);
}

#[test]
fn deregister_removes_a_check_a_service_or_the_whole_node() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service("db1", "db", &[]));
    reg.checks = vec![
        check("serfHealth", "", CheckStatus::Passing),
        check("db-check", "db1", CheckStatus::Passing),
    ];
    register(&mut sm, 2, reg);
    let mut other = node_reg("n1", "10.0.0.1");
    other.service = Some(service("cache1", "cache", &[]));
    register(&mut sm, 3, other);

    let dereg = |service_id: Option<&str>, check_id: Option<&str>| Command::CatalogDeregister {
        node: "n1".into(),
        service_id: service_id.map(String::from),
        check_id: check_id.map(String::from),
    };
    let (_, changes) = apply(&mut sm, 4, dereg(Some("db1"), None));
    assert!(sm.catalog.service("n1", "db1").is_none());
    assert!(
        sm.catalog.check("n1", "db-check").is_none(),
        "the service's checks go with it"
    );
    assert!(sm.catalog.check("n1", "serfHealth").is_some());
    assert!(!changes.catalog.contains(&CatalogRange::Service("cache".into())));
    assert_eq!(
        sm.catalog.range_index(&CatalogRange::Service("db".into())),
        4,
        "kept after the rows go"
    );

    let (_, changes) = apply(&mut sm, 5, dereg(Some("db1"), None));
    assert!(changes.is_empty(), "removing what is absent is a no-op");

    apply(&mut sm, 6, dereg(None, Some("serfHealth")));
    assert!(sm.catalog.check("n1", "serfHealth").is_none());
    assert_eq!(sm.catalog.range_index(&CatalogRange::Service("cache".into())), 6);

    apply(&mut sm, 7, dereg(None, None));
    assert!(sm.catalog.node("n1").is_none());
    assert!(sm.catalog.service("n1", "cache1").is_none());
    assert_eq!(
        sm.catalog.read(&CatalogQuery::Services).1,
        CatalogResult::Services(BTreeMap::new())
    );
}

#[test]
fn services_lists_the_union_of_tags_and_tag_queries_need_every_tag() {
    let mut sm = StateMachine::default();
    for (i, (node, tags)) in [("n1", &["primary", "v1"][..]), ("n2", &["secondary", "v1"][..])]
        .iter()
        .enumerate()
    {
        let mut reg = node_reg(node, "10.0.0.1");
        reg.service = Some(service("redis", "redis", tags));
        register(&mut sm, 2 + i as u64, reg);
    }
    let CatalogResult::Services(services) = sm.catalog.read(&CatalogQuery::Services).1 else {
        panic!()
    };
    assert_eq!(services["redis"], vec!["primary", "secondary", "v1"]);
    let query = CatalogQuery::Service {
        name: "redis".into(),
        tags: vec!["V1".into(), "primary".into()],
    };
    let CatalogResult::ServiceNodes(nodes) = sm.catalog.read(&query).1 else {
        panic!()
    };
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].0.node, "n1");
}

#[test]
fn snapshot_restores_the_catalog_and_rejects_corruption() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service("web1", "web", &["a"]));
    reg.checks = vec![check("c1", "web1", CheckStatus::Warning)];
    register(&mut sm, 3, reg);
    apply(&mut sm, 4, Command::KvReapTombstones { up_to: 2 });
    let restored = StateMachine::restore(&sm.snapshot()).expect("own snapshot decodes");
    assert_eq!(restored, sm);
    let data = sm.catalog.encode();
    assert!(CatalogStore::decode(&data[..data.len() - 1], super::SNAPSHOT_FORMAT).is_err());
    let mut longer = data.clone();
    longer.push(0);
    assert!(CatalogStore::decode(&longer, super::SNAPSHOT_FORMAT).is_err());
}

// ---------------------------------------------------------------- property: against a model

#[derive(Clone, Debug)]
enum Op {
    RegisterNode {
        node: usize,
        address: usize,
        skip: bool,
    },
    RegisterService {
        node: usize,
        id: usize,
        name: usize,
        tags: Vec<usize>,
    },
    RegisterCheck {
        node: usize,
        id: usize,
        service: Option<usize>,
        status: usize,
    },
    UpdateCheck {
        node: usize,
        id: usize,
        status: usize,
    },
    DeregisterNode {
        node: usize,
    },
    DeregisterService {
        node: usize,
        id: usize,
    },
    DeregisterCheck {
        node: usize,
        id: usize,
    },
    Reap,
}

const NODES: [&str; 3] = ["n0", "n1", "n2"];
const NAMES: [&str; 3] = ["web", "db", "cache"];
const STATUSES: [CheckStatus; 3] = [CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..2usize, any::<bool>()).prop_map(|(node, address, skip)| Op::RegisterNode {
            node,
            address,
            skip
        }),
        (
            0..3usize,
            0..3usize,
            0..3usize,
            proptest::collection::vec(0..3usize, 0..3)
        )
            .prop_map(|(node, id, name, tags)| Op::RegisterService { node, id, name, tags }),
        (0..3usize, 0..3usize, proptest::option::of(0..3usize), 0..3usize).prop_map(|(node, id, service, status)| {
            Op::RegisterCheck {
                node,
                id,
                service,
                status,
            }
        }),
        (0..3usize, 0..3usize, 0..3usize).prop_map(|(node, id, status)| Op::UpdateCheck { node, id, status }),
        (0..3usize).prop_map(|node| Op::DeregisterNode { node }),
        (0..3usize, 0..3usize).prop_map(|(node, id)| Op::DeregisterService { node, id }),
        (0..3usize, 0..3usize).prop_map(|(node, id)| Op::DeregisterCheck { node, id }),
        Just(Op::Reap),
    ]
}

fn command(op: &Op, index: u64) -> Command {
    let node = |n: usize| NODES[n].to_string();
    let reg = |n: usize| Registration {
        skip_node_update: true,
        ..node_reg(NODES[n], "10.0.0.1")
    };
    match op {
        Op::RegisterNode { node, address, skip } => {
            let mut r = node_reg(NODES[*node], ["10.0.0.1", "10.0.0.2"][*address]);
            r.skip_node_update = *skip;
            Command::CatalogRegister(Box::new(r))
        }
        Op::RegisterService { node, id, name, tags } => {
            let mut r = reg(*node);
            let tags: Vec<&str> = tags.iter().map(|t| ["a", "b", "c"][*t]).collect();
            r.service = Some(service(&format!("s{id}"), NAMES[*name], &tags));
            Command::CatalogRegister(Box::new(r))
        }
        Op::RegisterCheck {
            node,
            id,
            service,
            status,
        } => {
            let mut r = reg(*node);
            let sid = service.map(|s| format!("s{s}")).unwrap_or_default();
            r.checks = vec![check(&format!("c{id}"), &sid, STATUSES[*status])];
            Command::CatalogRegister(Box::new(r))
        }
        Op::UpdateCheck { node: n, id, status } => Command::CatalogCheckUpdate {
            node: node(*n),
            check_id: format!("c{id}"),
            status: STATUSES[*status],
            output: String::new(),
        },
        Op::DeregisterNode { node: n } => Command::CatalogDeregister {
            node: node(*n),
            service_id: None,
            check_id: None,
        },
        Op::DeregisterService { node: n, id } => Command::CatalogDeregister {
            node: node(*n),
            service_id: Some(format!("s{id}")),
            check_id: None,
        },
        Op::DeregisterCheck { node: n, id } => Command::CatalogDeregister {
            node: node(*n),
            service_id: None,
            check_id: Some(format!("c{id}")),
        },
        Op::Reap => Command::KvReapTombstones {
            up_to: index.saturating_sub(3),
        },
    }
}

/// Write node and service names and service and check IDs of `cmd` in case variant `case` (0: as is, 1:
/// upper, 2: capitalized): the catalog must treat them as the same (Consul's lower-cased memdb indexes).
fn recase(cmd: Command, case: usize) -> Command {
    let f = |s: &str| match case {
        0 => s.to_string(),
        1 => s.to_uppercase(),
        _ if s.is_empty() => String::new(),
        _ => s[..1].to_uppercase() + &s[1..],
    };
    match cmd {
        Command::CatalogRegister(mut r) => {
            r.node = f(&r.node);
            if let Some(svc) = &mut r.service {
                svc.service = f(&svc.service);
                svc.id = f(&svc.id);
            }
            for c in &mut r.checks {
                c.check_id = f(&c.check_id);
                c.service_id = f(&c.service_id);
            }
            Command::CatalogRegister(r)
        }
        Command::CatalogCheckUpdate {
            node,
            check_id,
            status,
            output,
        } => Command::CatalogCheckUpdate {
            node: f(&node),
            check_id: f(&check_id),
            status,
            output,
        },
        Command::CatalogDeregister {
            node,
            service_id,
            check_id,
        } => Command::CatalogDeregister {
            node: f(&node),
            service_id: service_id.as_deref().map(f),
            check_id: check_id.as_deref().map(f),
        },
        other => other,
    }
}

/// `query` with its node or service name upper-cased.
fn upper(query: &CatalogQuery) -> CatalogQuery {
    let mut q = query.clone();
    match &mut q {
        CatalogQuery::Service { name, .. }
        | CatalogQuery::HealthService { name, .. }
        | CatalogQuery::HealthChecks { service: name }
        | CatalogQuery::Node { node: name }
        | CatalogQuery::HealthNode { node: name } => *name = name.to_uppercase(),
        _ => {}
    }
    q
}

/// The catalog as plain sets: node → address, (node, id) → (name, tags), (node, check) → (service, status),
/// by lower-cased node names and IDs (names and IDs are case-insensitive; a row keeps the case last written).
#[derive(Default, Debug, PartialEq)]
struct Model {
    nodes: BTreeMap<String, String>,
    services: BTreeMap<(String, String), (String, Vec<String>)>,
    checks: BTreeMap<(String, String), (String, CheckStatus)>,
}

impl Model {
    fn apply(&mut self, cmd: &Command) {
        match cmd {
            Command::CatalogRegister(r) => {
                let node = r.node.to_lowercase();
                let ok = r.checks.iter().all(|c| {
                    let in_reg = r
                        .service
                        .as_ref()
                        .is_some_and(|s| s.id.eq_ignore_ascii_case(&c.service_id));
                    c.service_id.is_empty()
                        || in_reg
                        || self.services.contains_key(&(node.clone(), c.service_id.to_lowercase()))
                });
                if !ok {
                    return;
                }
                if !r.skip_node_update || !self.nodes.contains_key(&node) {
                    self.nodes.insert(node.clone(), r.address.clone());
                }
                if let Some(s) = &r.service {
                    self.services
                        .insert((node.clone(), s.id.to_lowercase()), (s.service.clone(), s.tags.clone()));
                }
                for c in &r.checks {
                    self.checks.insert(
                        (node.clone(), c.check_id.to_lowercase()),
                        (c.service_id.to_lowercase(), c.status),
                    );
                }
            }
            Command::CatalogCheckUpdate {
                node, check_id, status, ..
            } => {
                if let Some(c) = self.checks.get_mut(&(node.to_lowercase(), check_id.to_lowercase())) {
                    c.1 = *status;
                }
            }
            Command::CatalogDeregister {
                node,
                service_id,
                check_id,
            } => {
                let node = &node.to_lowercase();
                match (service_id, check_id) {
                    (None, None) => {
                        self.nodes.remove(node);
                        self.services.retain(|(n, _), _| n != node);
                        self.checks.retain(|(n, _), _| n != node);
                    }
                    _ => {
                        if let Some(id) = service_id {
                            let id = &id.to_lowercase();
                            self.services.remove(&(node.clone(), id.clone()));
                            self.checks.retain(|(n, _), (s, _)| !(n == node && s == id));
                        }
                        if let Some(id) = check_id {
                            self.checks.remove(&(node.clone(), id.to_lowercase()));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn of(store: &CatalogStore) -> Model {
        let mut m = Model::default();
        let CatalogResult::Nodes(nodes) = store.read(&CatalogQuery::Nodes).1 else {
            unreachable!()
        };
        for n in nodes {
            let (services, checks) = store.node_rows(&n.node);
            let node = n.node.to_lowercase();
            for s in services {
                m.services
                    .insert((node.clone(), s.id.to_lowercase()), (s.service, s.tags));
            }
            for c in checks {
                m.checks.insert(
                    (node.clone(), c.check_id.to_lowercase()),
                    (c.service_id.to_lowercase(), c.status),
                );
            }
            m.nodes.insert(node, n.address);
        }
        m
    }
}

fn queries() -> Vec<CatalogQuery> {
    let mut q = vec![
        CatalogQuery::Services,
        CatalogQuery::Nodes,
        CatalogQuery::HealthState { status: None },
        CatalogQuery::HealthState {
            status: Some(CheckStatus::Passing),
        },
    ];
    for name in NAMES {
        q.push(CatalogQuery::Service {
            name: name.into(),
            tags: vec![],
        });
        q.push(CatalogQuery::HealthService {
            name: name.into(),
            tags: vec![],
            passing: false,
        });
        q.push(CatalogQuery::HealthService {
            name: name.into(),
            tags: vec!["a".into()],
            passing: true,
        });
        q.push(CatalogQuery::HealthChecks { service: name.into() });
    }
    q.push(CatalogQuery::All);
    for node in NODES {
        q.push(CatalogQuery::Node { node: node.into() });
        q.push(CatalogQuery::HealthNode { node: node.into() });
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn catalog_matches_the_model_and_reads_wake_exactly_when_they_change(
        ops in proptest::collection::vec((1..3u64, op(), 0..3usize), 1..60)
    ) {
        let mut sm = StateMachine::default();
        let mut model = Model::default();
        let queries = queries();
        let mut before: Vec<(u64, CatalogResult)> = queries.iter().map(|q| sm.catalog.read(q)).collect();
        let mut index = 1;
        for (gap, op, case) in &ops {
            index += gap;
            let cmd = recase(command(op, index), *case);
            let (_, changes) = apply(&mut sm, index, cmd.clone());
            model.apply(&cmd);
            prop_assert_eq!(&Model::of(&sm.catalog), &model, "after {:?}", cmd);
            let reported: BTreeSet<_> = changes.catalog.iter().cloned().collect();
            prop_assert_eq!(reported.len(), changes.catalog.len(), "ranges reported once: {:?}", changes);
            for (query, old) in queries.iter().zip(before.iter_mut()) {
                let now = sm.catalog.read(query);
                prop_assert_eq!(&sm.catalog.read(&upper(query)), &now, "names are case-insensitive");
                prop_assert!(now.0 >= 1 && now.0 >= old.0, "{:?} went from {} to {}", query, old.0, now.0);
                if now.1 != old.1 {
                    prop_assert!(now.0 > old.0, "{:?} changed but its index stayed at {} ({:?})", query, now.0, cmd);
                    prop_assert!(reported.contains(&query.range()), "{:?} changed but no watch fires", query);
                }
                *old = now;
            }
        }
        let restored = StateMachine::restore(&sm.snapshot()).expect("own snapshot decodes");
        prop_assert_eq!(restored, sm);
    }
}

// ---------------------------------------------------------------- anti-entropy fences

fn seq(round: u64) -> SyncSeq {
    SyncSeq { epoch: 7, round }
}

fn sync_register(sm: &mut StateMachine, index: u64, round: u64, svc: &str) -> CommandResult {
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service(svc, "web", &[]));
    apply(sm, index, Command::CatalogRegister(Box::new(reg)).fenced(seq(round))).0
}

fn sync_deregister(sm: &mut StateMachine, index: u64, round: u64, svc: &str) -> CommandResult {
    let cmd = Command::CatalogDeregister {
        node: "n1".into(),
        service_id: Some(svc.into()),
        check_id: None,
    };
    apply(sm, index, cmd.fenced(seq(round))).0
}

#[test]
fn a_sync_write_older_than_an_applied_round_is_refused_and_changes_nothing() {
    let mut sm = StateMachine::default();
    assert_eq!(sync_register(&mut sm, 2, 1, "web1"), CommandResult::Bool(true));
    // Round 2 removes it; round 1's late write (another service, same node) must not apply.
    assert_eq!(sync_deregister(&mut sm, 3, 2, "web1"), CommandResult::Bool(true));
    let before = sm.clone();
    let (result, changes) = apply(
        &mut sm,
        4,
        Command::CatalogRegister(Box::new(Registration {
            service: Some(service("web1", "web", &[])),
            ..node_reg("n1", "10.0.0.1")
        }))
        .fenced(seq(1)),
    );
    assert_eq!(
        result,
        CommandResult::Refused(CatalogError::StaleSync {
            node: "n1".into(),
            seq: seq(1),
            applied: seq(2),
        })
    );
    assert!(result_message(&result).contains("stale anti-entropy write"));
    assert!(changes.is_empty());
    assert_eq!(sm, before, "a refused write changes nothing");
    assert!(sm.catalog.service("n1", "web1").is_none());
    // Several writes of one round all apply; a later round and a later run (epoch) too.
    assert_eq!(sync_register(&mut sm, 5, 2, "web2"), CommandResult::Bool(true));
    assert_eq!(sync_register(&mut sm, 6, 2, "web3"), CommandResult::Bool(true));
    let next_run = Command::CatalogDeregister {
        node: "n1".into(),
        service_id: Some("web3".into()),
        check_id: None,
    }
    .fenced(SyncSeq { epoch: 8, round: 1 });
    assert_eq!(apply(&mut sm, 7, next_run).0, CommandResult::Bool(true));
    assert_eq!(sm.catalog.fence("n1"), Some(SyncSeq { epoch: 8, round: 1 }));
    // The fence is per node: other nodes are not held back by n1's rounds.
    let mut other = node_reg("n2", "10.0.0.2");
    other.service = Some(service("web1", "web", &[]));
    let cmd = Command::CatalogRegister(Box::new(other)).fenced(seq(1));
    assert_eq!(apply(&mut sm, 8, cmd).0, CommandResult::Bool(true));
}

fn result_message(result: &CommandResult) -> String {
    match result {
        CommandResult::Refused(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

#[test]
fn plain_catalog_writes_are_not_fenced_and_do_not_move_the_fence() {
    let mut sm = StateMachine::default();
    assert_eq!(sync_register(&mut sm, 2, 5, "web1"), CommandResult::Bool(true));
    // `/v1/catalog/register` and `/deregister` (no sequence) work as in Consul whatever the fence says.
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service("api", "api", &[]));
    assert_eq!(register(&mut sm, 3, reg).0, CommandResult::Bool(true));
    let dereg = Command::CatalogDeregister {
        node: "n1".into(),
        service_id: Some("web1".into()),
        check_id: None,
    };
    assert_eq!(apply(&mut sm, 4, dereg).0, CommandResult::Bool(true));
    assert!(sm.catalog.service("n1", "api").is_some());
    assert!(sm.catalog.service("n1", "web1").is_none());
    assert_eq!(sm.catalog.fence("n1"), Some(seq(5)));
    // A refused (invalid) fenced write does not move the fence either.
    let invalid = Command::CatalogRegister(Box::new(node_reg("n1", ""))).fenced(seq(9));
    assert!(matches!(
        apply(&mut sm, 5, invalid).0,
        CommandResult::Refused(CatalogError::MissingAddress)
    ));
    assert_eq!(sm.catalog.fence("n1"), Some(seq(5)));
}

#[test]
fn a_fence_outlives_its_node_until_a_reap_passes_the_nodes_last_change() {
    let mut sm = StateMachine::default();
    sync_register(&mut sm, 2, 3, "web1");
    let dereg_node = Command::CatalogDeregister {
        node: "n1".into(),
        service_id: None,
        check_id: None,
    };
    apply(&mut sm, 10, dereg_node);
    // A late write of an older round cannot bring the node back.
    assert!(matches!(
        sync_register(&mut sm, 11, 2, "web1"),
        CommandResult::Refused(CatalogError::StaleSync { .. })
    ));
    assert!(sm.catalog.node("n1").is_none());
    apply(&mut sm, 12, Command::KvReapTombstones { up_to: 9 });
    assert_eq!(
        sm.catalog.fence("n1"),
        Some(seq(3)),
        "the node changed after the reap point"
    );
    apply(&mut sm, 13, Command::KvReapTombstones { up_to: 10 });
    assert_eq!(sm.catalog.fence("n1"), None, "gone node, reaped");
    // A live node keeps its fence through any reap.
    sync_register(&mut sm, 14, 1, "web1");
    apply(&mut sm, 15, Command::KvReapTombstones { up_to: 15 });
    assert_eq!(sm.catalog.fence("n1"), Some(seq(1)));
}

#[test]
fn fences_survive_a_snapshot_and_format_1_snapshots_still_restore() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service("web1", "web", &["a"]));
    reg.checks = vec![check("c1", "web1", CheckStatus::Warning)];
    register(&mut sm, 3, reg);
    let plain = sm.clone();
    sync_register(&mut sm, 4, 2, "web2");
    let restored = StateMachine::restore(&sm.snapshot()).expect("own snapshot decodes");
    assert_eq!(restored, sm);
    assert_eq!(restored.catalog.fence("n1"), Some(seq(2)));

    // Format 1 is format 2 without the fences and coordinates (the catalog's last fields, here two empty
    // lists: a 0 byte each).
    let current = plain.snapshot();
    assert_eq!(current[0], 2);
    let (parts, rest): (super::Snapshot, _) = postcard::take_from_bytes(&current[1..]).expect("decodes");
    assert!(rest.is_empty());
    assert!(parts.catalog.ends_with(&[0, 0]));
    let v1_parts = super::Snapshot {
        kv: parts.kv,
        catalog: parts.catalog[..parts.catalog.len() - 2].to_vec(),
    };
    let mut v1 = vec![1];
    v1.extend(postcard::to_allocvec(&v1_parts).expect("encodes"));
    assert_eq!(StateMachine::restore(&v1).expect("format 1 restores"), plain);
    // The same bytes labelled format 2 are not misread.
    v1[0] = 2;
    assert!(StateMachine::restore(&v1).is_err());

    // The committed format-1 seeds of the state_snapshot fuzz corpus still restore.
    let seeds: [&[u8]; 4] = [
        include_bytes!("../../../fuzz/corpus/state_snapshot/seed-empty-state"),
        include_bytes!("../../../fuzz/corpus/state_snapshot/seed-one-entry"),
        include_bytes!("../../../fuzz/corpus/state_snapshot/seed-entries-tombstones-floor"),
        include_bytes!("../../../fuzz/corpus/state_snapshot/seed-twenty-keys"),
    ];
    for seed in seeds {
        assert_eq!(seed[0], 1);
        let state = StateMachine::restore(seed).expect("a format-1 seed restores");
        assert_eq!(StateMachine::restore(&state.snapshot()).expect("re-encodes"), state);
    }
}

// ---------------------------------------------------------------- coordinates

fn coord_at(x: f64) -> crate::coordinate::Coordinate {
    let mut c = crate::coordinate::Coordinate::new(&Default::default());
    c.vec[0] = x;
    c
}

fn coordinates(sm: &StateMachine) -> (u64, Vec<(String, f64)>) {
    let (index, result) = sm.catalog.read(&CatalogQuery::Coordinates);
    let CatalogResult::Coordinates(all) = result else {
        panic!()
    };
    (index, all.into_iter().map(|(n, c)| (n, c.vec[0])).collect())
}

#[test]
fn coordinates_are_kept_per_known_node_and_removed_with_it() {
    use super::CoordinateUpdate;
    let mut sm = StateMachine::default();
    register(&mut sm, 2, node_reg("n1", "10.0.0.1"));
    register(&mut sm, 3, node_reg("n2", "10.0.0.2"));
    let all_before = sm.catalog.range_index(&CatalogRange::All);
    let update = |node: &str, x: f64| CoordinateUpdate {
        node: node.into(),
        coord: coord_at(x),
    };
    let mut nan = update("n2", 0.0);
    nan.coord.height = f64::NAN;
    let batch = Command::CoordinateBatchUpdate(vec![update("n1", 0.1), update("ghost", 0.2), nan]);
    let (result, changes) = apply(&mut sm, 4, batch);
    assert_eq!(result, CommandResult::Bool(true));
    assert_eq!(changes.catalog, vec![CatalogRange::Coordinates]);
    assert_eq!(
        coordinates(&sm),
        (4, vec![("n1".to_string(), 0.1)]),
        "unknown node and NaN skipped"
    );
    assert_eq!(
        sm.catalog.range_index(&CatalogRange::All),
        all_before,
        "no catalog row changed"
    );
    // One per node: a newer one replaces it; the same one again changes nothing.
    apply(
        &mut sm,
        5,
        Command::CoordinateBatchUpdate(vec![update("n1", 0.3), update("n2", 0.4)]),
    );
    let (_, unchanged) = apply(&mut sm, 6, Command::CoordinateBatchUpdate(vec![update("n1", 0.3)]));
    assert!(unchanged.is_empty());
    assert_eq!(
        coordinates(&sm),
        (5, vec![("n1".to_string(), 0.3), ("n2".to_string(), 0.4)])
    );
    let restored = StateMachine::restore(&sm.snapshot()).expect("snapshot with coordinates");
    assert_eq!(restored, sm);
    let dereg = Command::CatalogDeregister {
        node: "n1".into(),
        service_id: None,
        check_id: None,
    };
    apply(&mut sm, 7, dereg);
    assert_eq!(coordinates(&sm), (7, vec![("n2".to_string(), 0.4)]));
    assert!(sm.catalog.coordinate("n1").is_none());
}

// ---------------------------------------------------------------- case-insensitive names

fn node_names(sm: &StateMachine) -> Vec<(String, String, u64, u64)> {
    let CatalogResult::Nodes(nodes) = sm.catalog.read(&CatalogQuery::Nodes).1 else {
        panic!()
    };
    nodes
        .into_iter()
        .map(|n| (n.node, n.address, n.create_index, n.modify_index))
        .collect()
}

#[test]
fn node_and_service_names_are_case_insensitive_and_keep_their_case() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("Web1", "10.0.0.1");
    reg.service = Some(service("api1", "Api", &[]));
    reg.checks = vec![check("c1", "api1", CheckStatus::Passing)];
    register(&mut sm, 2, reg);
    for name in ["web1", "WEB1", "Web1"] {
        assert_eq!(sm.catalog.node(name).map(|n| n.node.as_str()), Some("Web1"), "{name}");
        let CatalogResult::Node(Some(found)) = sm.catalog.read(&CatalogQuery::Node { node: name.into() }).1 else {
            panic!("{name} not found")
        };
        assert_eq!(found.1.len(), 1);
        let CatalogResult::Checks(checks) = sm.catalog.read(&CatalogQuery::HealthNode { node: name.into() }).1 else {
            panic!()
        };
        assert_eq!(checks.len(), 1);
    }
    for name in ["api", "API", "Api"] {
        assert_eq!(
            health(&sm, name, true),
            [("Web1".to_string(), "api1".to_string())],
            "{name}"
        );
        let CatalogResult::Checks(checks) = sm.catalog.read(&CatalogQuery::HealthChecks { service: name.into() }).1
        else {
            panic!()
        };
        assert_eq!(checks.len(), 1, "{name}");
    }
    // `web1` is the same node: updated in place, under the case it was written with last.
    let (_, changes) = register(&mut sm, 3, node_reg("web1", "10.0.0.2"));
    assert_eq!(node_names(&sm), [("web1".to_string(), "10.0.0.2".to_string(), 2, 3)]);
    assert!(changes.catalog.contains(&CatalogRange::node("WEB1")));
    assert_eq!(CatalogRange::node("WEB1"), CatalogRange::Node("web1".into()));
    assert_eq!(sm.catalog.node_rows("WEB1").0.len(), 1, "its service stays");
    assert_eq!(health(&sm, "api", false), [("web1".to_string(), "api1".to_string())]);
    // The same registration again changes nothing.
    let (_, changes) = register(&mut sm, 4, node_reg("web1", "10.0.0.2"));
    assert!(changes.catalog.is_empty());
    // A second node with the service under another case: one service for reads and watches.
    let mut reg = node_reg("n2", "10.0.0.3");
    reg.service = Some(service("api2", "API", &[]));
    let (_, changes) = register(&mut sm, 5, reg);
    assert!(changes.catalog.contains(&CatalogRange::service("api")));
    assert_eq!(health(&sm, "aPi", false).len(), 2);
    assert_eq!(
        sm.catalog.range_index(
            &CatalogQuery::HealthService {
                name: "Api".into(),
                tags: vec![],
                passing: false
            }
            .range()
        ),
        5
    );
    // Consul's `/catalog/services` groups by the name as registered.
    let CatalogResult::Services(services) = sm.catalog.read(&CatalogQuery::Services).1 else {
        panic!()
    };
    assert_eq!(services.keys().collect::<Vec<_>>(), ["API", "Api"]);
    // Deregistration finds rows in any case.
    let dereg = Command::CatalogDeregister {
        node: "WEB1".into(),
        service_id: Some("api1".into()),
        check_id: None,
    };
    let (_, changes) = apply(&mut sm, 6, dereg);
    assert!(changes.catalog.contains(&CatalogRange::service("api")));
    assert_eq!(health(&sm, "api", false), [("n2".to_string(), "api2".to_string())]);
    let dereg = Command::CatalogDeregister {
        node: "N2".into(),
        service_id: None,
        check_id: None,
    };
    apply(&mut sm, 7, dereg);
    assert_eq!(node_names(&sm).len(), 1);
    // Fences and coordinates follow the node whatever the case.
    sm.catalog.advance_fence(8, "WEB1", seq(4));
    assert_eq!(sm.catalog.fence("web1"), Some(seq(4)));
    let restored = StateMachine::restore(&sm.snapshot()).expect("own snapshot decodes");
    assert_eq!(restored, sm);
}

/// The catalog part of snapshot format 2 as earlier versions wrote it (the same layout as today's).
#[derive(serde::Serialize)]
struct CatalogSnapshotV2 {
    nodes: Vec<super::CatalogNode>,
    services: Vec<(String, ServiceInstance)>,
    checks: Vec<HealthCheck>,
    indexes: Vec<(CatalogRange, u64)>,
    reap_floor: u64,
    fences: Vec<(String, SyncSeq, u64)>,
    coordinates: Vec<(String, crate::coordinate::Coordinate)>,
}

#[test]
fn a_snapshot_with_names_differing_only_in_case_restores_as_one_node() {
    // Written before names were case-insensitive: `Web1` and `web1` were two nodes.
    let node = |name: &str, address: &str, modify_index: u64| super::CatalogNode {
        node: name.into(),
        address: address.into(),
        create_index: 2,
        modify_index,
        ..super::CatalogNode::default()
    };
    let mut api = service("api1", "Api", &[]);
    api.modify_index = 3;
    let mut other = service("db1", "db", &[]);
    other.modify_index = 5;
    let mut c = check("c1", "api1", CheckStatus::Passing);
    c.node = "Web1".into();
    c.service_name = "Api".into();
    let old = CatalogSnapshotV2 {
        nodes: vec![node("Web1", "10.0.0.1", 3), node("web1", "10.0.0.2", 6)],
        services: vec![("Web1".into(), api), ("web1".into(), other)],
        checks: vec![c],
        indexes: vec![
            (CatalogRange::Node("Web1".into()), 3),
            (CatalogRange::Node("web1".into()), 6),
            (CatalogRange::Service("Api".into()), 3),
        ],
        reap_floor: 0,
        fences: vec![("Web1".into(), seq(1), 3), ("web1".into(), seq(2), 6)],
        coordinates: vec![("Web1".into(), coord_at(0.5))],
    };
    let data = postcard::to_allocvec(&old).unwrap();
    let store = CatalogStore::decode(&data, super::SNAPSHOT_FORMAT).expect("restores");
    assert_eq!(
        store.node("WEB1").map(|n| (n.node.as_str(), n.address.as_str())),
        Some(("web1", "10.0.0.2")),
        "the most recently modified row"
    );
    let (services, checks) = store.node_rows("web1");
    assert_eq!(services.len(), 2, "both nodes' services");
    assert_eq!(checks.len(), 1);
    assert_eq!(store.range_index(&CatalogRange::node("web1")), 6);
    assert_eq!(store.range_index(&CatalogRange::service("api")), 3);
    assert_eq!(store.fence("web1"), Some(seq(2)));
    assert!(store.coordinate("web1").is_some());
    // And it encodes and restores as itself from then on.
    let again = CatalogStore::decode(&store.encode(), super::SNAPSHOT_FORMAT).unwrap();
    assert_eq!(again, store);
}

fn service_ids(sm: &StateMachine, node: &str) -> Vec<(String, u64, u64)> {
    let (services, _) = sm.catalog.node_rows(node);
    services
        .into_iter()
        .map(|s| (s.id, s.create_index, s.modify_index))
        .collect()
}

#[test]
fn service_and_check_ids_are_case_insensitive_and_keep_their_case() {
    let mut sm = StateMachine::default();
    let mut reg = node_reg("n1", "10.0.0.1");
    reg.service = Some(service("Api1", "api", &["a"]));
    reg.checks = vec![
        check("Svc-Check", "Api1", CheckStatus::Passing),
        check("Node-Check", "", CheckStatus::Passing),
    ];
    register(&mut sm, 2, reg.clone());
    for id in ["api1", "API1", "Api1"] {
        assert_eq!(
            sm.catalog.service("N1", id).map(|s| s.id.as_str()),
            Some("Api1"),
            "{id}"
        );
    }
    assert_eq!(
        sm.catalog.check("n1", "svc-check").map(|c| c.check_id.as_str()),
        Some("Svc-Check")
    );
    // Registering `api1` updates the same row (create index kept), under the case written last.
    reg.service = Some(service("api1", "api", &["b"]));
    reg.checks = vec![];
    let (_, changes) = register(&mut sm, 3, reg.clone());
    assert_eq!(service_ids(&sm, "n1"), [("api1".to_string(), 2, 3)]);
    assert!(changes.catalog.contains(&CatalogRange::service("api")));
    let svc_check = sm.catalog.check("n1", "SVC-CHECK").unwrap();
    assert_eq!(svc_check.service_tags, ["b"], "the check still mirrors its service");
    // A check naming the service in another case belongs to it (Consul's node_service index folds it).
    reg.checks = vec![check("svc-check", "API1", CheckStatus::Critical)];
    reg.service = None;
    register(&mut sm, 4, reg.clone());
    let CatalogResult::Checks(checks) = sm.catalog.read(&CatalogQuery::HealthNode { node: "n1".into() }).1 else {
        panic!()
    };
    let ids: Vec<&str> = checks.iter().map(|c| c.check_id.as_str()).collect();
    assert_eq!(ids, ["Node-Check", "svc-check"], "one row per folded check ID");
    assert_eq!(checks[1].service_name, "api");
    assert_eq!(health(&sm, "api", false), [("n1".to_string(), "api1".to_string())]);
    assert!(
        health(&sm, "api", true).is_empty(),
        "the critical service check counts for the service"
    );
    // Updating and deregistering find rows in any case.
    let update = Command::CatalogCheckUpdate {
        node: "n1".into(),
        check_id: "SVC-check".into(),
        status: CheckStatus::Passing,
        output: "ok".into(),
    };
    let (_, changes) = apply(&mut sm, 5, update);
    assert!(changes.catalog.contains(&CatalogRange::service("api")));
    assert_eq!(health(&sm, "api", true).len(), 1);
    let dereg = |service_id: Option<&str>, check_id: Option<&str>| Command::CatalogDeregister {
        node: "n1".into(),
        service_id: service_id.map(String::from),
        check_id: check_id.map(String::from),
    };
    let (_, changes) = apply(&mut sm, 6, dereg(None, Some("NODE-CHECK")));
    assert!(changes.catalog.contains(&CatalogRange::node("n1")));
    let (_, changes) = apply(&mut sm, 7, dereg(Some("API1"), None));
    assert!(changes.catalog.contains(&CatalogRange::service("api")));
    assert!(service_ids(&sm, "n1").is_empty());
    assert!(
        sm.catalog.node_rows("n1").1.is_empty(),
        "the service's checks go with it"
    );
    let restored = StateMachine::restore(&sm.snapshot()).expect("own snapshot decodes");
    assert_eq!(restored, sm);
}

#[test]
fn a_snapshot_with_ids_differing_only_in_case_restores_one_row_each() {
    // Written before IDs were case-insensitive: `Api1`/`api1` and `C1`/`c1` were two rows each.
    let n1 = super::CatalogNode {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        create_index: 2,
        modify_index: 2,
        ..super::CatalogNode::default()
    };
    let mut older = service("Api1", "api", &["old"]);
    older.modify_index = 3;
    let mut newer = service("api1", "api", &["new"]);
    newer.modify_index = 5;
    let check_row = |id: &str, service_id: &str, tags: &[&str], modify_index: u64| HealthCheck {
        node: "n1".into(),
        service_name: "api".into(),
        service_tags: tags.iter().map(|t| t.to_string()).collect(),
        modify_index,
        ..check(id, service_id, CheckStatus::Passing)
    };
    let old = CatalogSnapshotV2 {
        nodes: vec![n1],
        services: vec![("n1".into(), older), ("n1".into(), newer)],
        checks: vec![
            check_row("C1", "Api1", &["old"], 7),
            check_row("c1", "api1", &["new"], 4),
            check_row("c2", "Api1", &["old"], 3),
        ],
        indexes: vec![(CatalogRange::Service("api".into()), 7)],
        reap_floor: 0,
        fences: vec![],
        coordinates: vec![],
    };
    let data = postcard::to_allocvec(&old).unwrap();
    let store = CatalogStore::decode(&data, super::SNAPSHOT_FORMAT).expect("restores");
    let (services, checks) = store.node_rows("n1");
    let ids: Vec<(&str, &[String])> = services.iter().map(|s| (s.id.as_str(), &s.tags[..])).collect();
    assert_eq!(
        ids,
        [("api1", &["new".to_string()][..])],
        "the most recently modified service"
    );
    let ids: Vec<(&str, &str, &[String])> = checks
        .iter()
        .map(|c| (c.check_id.as_str(), c.service_id.as_str(), &c.service_tags[..]))
        .collect();
    let new = &["new".to_string()][..];
    assert_eq!(
        ids,
        [("C1", "Api1", new), ("c2", "Api1", new)],
        "the most recently modified check; checks mirror the surviving service"
    );
    let again = CatalogStore::decode(&store.encode(), super::SNAPSHOT_FORMAT).unwrap();
    assert_eq!(again, store);
}
