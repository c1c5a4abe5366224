use super::identity::{node_id, random_node_id};
use super::*;
use std::net::Ipv4Addr;
use std::time::UNIX_EPOCH;

#[test]
fn bind_any_needs_exactly_one_private_ipv4() {
    let ip = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let one = [
        ip(127, 0, 0, 1),
        ip(192, 168, 1, 5),
        ip(8, 8, 8, 8),
        "fe80::1".parse().unwrap(),
    ];
    assert_eq!(single_private_ipv4(&one).unwrap(), ip(192, 168, 1, 5));
    let two = [ip(10, 0, 0, 1), ip(172, 17, 0, 1)];
    let err = single_private_ipv4(&two).unwrap_err().to_string();
    assert!(err.starts_with("Multiple private IPv4 addresses found"), "{err}");
    assert!(err.contains("10.0.0.1") && err.contains("172.17.0.1"), "{err}");
    let err = single_private_ipv4(&[ip(127, 0, 0, 1), ip(8, 8, 8, 8)])
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("No private IPv4 address found"), "{err}");
    assert_eq!(single_private_ipv4(&[ip(100, 64, 3, 2)]).unwrap(), ip(100, 64, 3, 2));
}

#[test]
fn node_id_is_created_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = node_id(None, Some(dir.path())).unwrap();
    let stored = std::fs::read_to_string(dir.path().join("node-id")).unwrap();
    assert_eq!(stored, first.to_string());
    assert_eq!(stored.len(), 36);
    assert_eq!(node_id(None, Some(dir.path())).unwrap(), first);
    // The same ID given explicitly is fine; another one is refused with a clear message.
    assert_eq!(node_id(Some(&first.to_string()), Some(dir.path())).unwrap(), first);
    let other = random_node_id();
    let err = node_id(Some(&other.to_string()), Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("differs from the ID"), "{err}");
}

#[test]
fn node_ids_are_version_4_uuids_and_differ() {
    let a = random_node_id().to_string();
    let b = random_node_id().to_string();
    assert_ne!(a, b);
    assert_eq!(&a[14..15], "4");
    assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
}

#[test]
fn a_corrupt_node_id_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("node-id"), "not-a-uuid").unwrap();
    let err = node_id(None, Some(dir.path())).unwrap_err().to_string();
    assert!(err.contains("node-id") && err.contains("remove the file"), "{err}");
}

#[test]
fn timestamps_are_rfc3339_utc_with_millis() {
    let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
    assert_eq!(utc_timestamp(t), "2026-11-18T11:06:40.123Z");
    assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
        "2000-02-29T00:00:00.000Z"
    );
}

#[test]
fn log_levels_use_consul_names() {
    use tracing_subscriber::filter::LevelFilter;
    assert_eq!(logging::parse_level("err").unwrap(), LevelFilter::ERROR);
    assert_eq!(logging::parse_level("WARN").unwrap(), LevelFilter::WARN);
    assert_eq!(logging::parse_level("trace").unwrap(), LevelFilter::TRACE);
    assert!(logging::parse_level("loud")
        .unwrap_err()
        .to_string()
        .contains("invalid log level"));
}

#[test]
fn raft_timings_scale_with_the_multiplier_and_dev_is_fast() {
    let mut config = crate::config::parse_agent_args(&["-dev".to_string()]).unwrap();
    let dev = raft_config(&config);
    assert_eq!(dev.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(dev.election_timeout, Duration::from_millis(300));
    assert_eq!(dev.lease_timeout, Duration::from_millis(150));
    config.dev = false;
    config.raft_multiplier = 5;
    let slow = raft_config(&config);
    assert_eq!(slow.election_timeout, RaftConfig::default().election_timeout * 5);
    assert_eq!(slow.heartbeat_interval, RaftConfig::default().heartbeat_interval * 5);
}

// ---- whole agents in one process, on 127.0.0.1 ----

use crate::config::parse_agent_args;
use concord_core::api::{KvQuery, KvResult, ReadMode, Request, Response};
use concord_core::state::Command;
use concord_core::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

fn server_config(name: &str, dir: &std::path::Path, port: u16, extra: &[String]) -> AgentConfig {
    let mut args: Vec<String> = [
        "-server",
        "-node",
        name,
        "-data-dir",
        dir.to_str().unwrap(),
        "-bind",
        "127.0.0.1",
        "-client",
        "127.0.0.1",
        "-http-port",
        "0",
        "-server-port",
        &port.to_string(),
        "-dns-port",
        "0",
        "-serf-lan-port",
        "0",
        "-serf-wan-port",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    parse_agent_args(&args).unwrap()
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

/// Poll `f` until it returns Some, failing at the deadline.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut f: impl FnMut() -> F) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The leader every listed agent agrees on.
async fn agreed_leader(agents: &[&Agent]) -> NodeId {
    eventually("an agreed leader", || async {
        let first = agents[0].handle.leader()?;
        agents.iter().all(|a| a.handle.leader() == Some(first)).then_some(first)
    })
    .await
}

fn put(key: &str, value: &str) -> Request {
    Request::Write(Command::KvSet {
        key: key.into(),
        value: value.as_bytes().to_vec().into(),
        flags: 0,
        cas: None,
    })
}

async fn read(agent: &Agent, key: &str) -> Option<String> {
    let req = Request::KvRead {
        query: KvQuery::Get { key: key.into() },
        mode: ReadMode::Default,
        block: None,
    };
    match agent.handle.call(req).await {
        Response::Kv { result, .. } => match &*result {
            KvResult::Entries(e) => e.first().map(|e| String::from_utf8_lossy(&e.value).into()),
            KvResult::Keys(_) => None,
        },
        _ => None,
    }
}

/// A minimal HTTP/1.1 exchange: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_bootstrap_expect_replicate_and_survive_the_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Port 0 everywhere: s0 starts first and the others join the RPC address it actually got.
    let expect = strings(&["-bootstrap-expect", "3"]);
    let mut agents = vec![Agent::start(server_config("s0", dirs[0].path(), 0, &expect))
        .await
        .unwrap()];
    let mut join = expect.clone();
    join.extend(strings(&["-retry-join", &agents[0].lan.addr.to_string()]));
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let config = server_config(&format!("s{i}"), dir.path(), 0, &join);
        agents.push(Agent::start(config).await.unwrap());
    }
    let refs: Vec<&Agent> = agents.iter().collect();
    let leader = agreed_leader(&refs).await;
    // The servers flood-join each other's WAN pool from what the LAN pool shows.
    for a in &agents {
        let wan = a.wan.clone().unwrap();
        eventually("3 alive WAN members", || async {
            let alive = wan
                .members()
                .iter()
                .filter(|m| m.status == concord_core::gossip::MemberStatus::Alive)
                .count();
            (alive == 3).then_some(())
        })
        .await;
        assert!(wan.members().iter().any(|m| m.name == "s0.dc1"));
    }
    for a in &agents {
        assert_eq!(
            a.handle.membership().servers.len(),
            3,
            "every server is a voter of one configuration"
        );
    }

    // A write through a follower is forwarded; every server then reads it.
    let follower = agents.iter().find(|a| a.handle.id() != leader).unwrap();
    assert!(matches!(
        follower.handle.call(put("color", "blue")).await,
        Response::Written { .. }
    ));
    for a in &agents {
        assert_eq!(eventually("the write everywhere", || read(a, "color")).await, "blue");
    }
    let (status, body) = http(agents[1].http_addrs[0], "GET", "/v1/status/leader").await;
    assert_eq!(status, 200);
    let leader_addr = agents
        .iter()
        .find(|a| a.handle.id() == leader)
        .unwrap()
        .book
        .me()
        .address
        .clone();
    assert_eq!(body, format!("\"{leader_addr}\""));

    // A late server with -bootstrap-expect 3 and the lowest ID joins the existing cluster rather than
    // founding a second one with the first two.
    let late_dir = tempfile::tempdir().unwrap();
    let mut late_flags = join.clone();
    late_flags.extend(strings(&["-node-id", "00000000-0000-4000-8000-000000000001"]));
    let late = Agent::start(server_config("s3", late_dir.path(), 0, &late_flags))
        .await
        .unwrap();
    let late_id = late.handle.id();
    eventually("the late server in the configuration", || async {
        agents[0]
            .handle
            .membership()
            .servers
            .contains_key(&late_id)
            .then_some(())
    })
    .await;
    assert_eq!(
        eventually("the late server's leader", || async { late.handle.leader() }).await,
        leader
    );
    assert_eq!(
        eventually("the data on the late server", || read(&late, "color")).await,
        "blue"
    );
    agents.push(late);

    // Stop the leader: the others elect a new one and keep serving writes.
    let position = agents.iter().position(|a| a.handle.id() == leader).unwrap();
    let old = agents.remove(position);
    old.run_until(async {}).await.unwrap();
    let refs: Vec<&Agent> = agents.iter().collect();
    let new_leader = eventually("a new leader", || async {
        let l = agreed_leader(&refs).await;
        (l != leader).then_some(l)
    })
    .await;
    assert_ne!(new_leader, leader);
    let resp = eventually("a write after failover", || async {
        let r = agents[0].handle.call(put("color", "green")).await;
        matches!(r, Response::Written { .. }).then_some(r)
    })
    .await;
    assert!(matches!(resp, Response::Written { .. }));
    for a in &agents {
        assert_eq!(eventually("the new write", || read(a, "color")).await, "green");
    }
    for a in agents {
        a.run_until(async {}).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_join_adds_a_server_and_leave_removes_it() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = Agent::start(server_config("s0", dirs[0].path(), 0, &strings(&["-bootstrap"])))
        .await
        .unwrap();
    let join = strings(&["-retry-join", &first.lan.addr.to_string()]);
    let second = Agent::start(server_config("s1", dirs[1].path(), 0, &join))
        .await
        .unwrap();
    let second_id = second.handle.id();
    eventually("s1 in s0's configuration", || async {
        first.handle.membership().servers.contains_key(&second_id).then_some(())
    })
    .await;
    assert_eq!(agreed_leader(&[&first, &second]).await, first.handle.id());
    let members = |agent: SocketAddr| async move {
        let (status, body) = http(agent, "GET", "/v1/agent/members").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Vec<serde_json::Value>>(&body).unwrap()
    };
    let status_of = |list: &[serde_json::Value], name: &str| {
        list.iter()
            .find(|m| m["Name"] == name)
            .map(|m| m["Status"].as_u64().unwrap())
    };
    let list = members(first.http_addrs[0]).await;
    assert_eq!(status_of(&list, "s0"), Some(1));
    assert_eq!(status_of(&list, "s1"), Some(1));
    let s1 = list.iter().find(|m| m["Name"] == "s1").unwrap();
    assert_eq!(s1["Tags"]["role"], "consul");
    assert_eq!(s1["Tags"]["port"], second.rpc_addr.port().to_string());
    assert_eq!(s1["Port"], second.lan.addr.port());
    let (status, _) = http(first.http_addrs[0], "GET", "/v1/agent/members?wan").await;
    assert_eq!(status, 200);
    let (status, body) = http(first.http_addrs[0], "PUT", "/v1/agent/force-leave/nobody").await;
    assert_eq!(status, 500, "{body}");

    // PUT /v1/agent/leave on s1: it is removed from the configuration and its agent stops.
    let (status, body) = http(second.http_addrs[0], "PUT", "/v1/agent/leave").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(DEADLINE, second.run_until(std::future::pending()))
        .await
        .unwrap()
        .unwrap();
    eventually("s1 gone from s0's configuration", || async {
        (!first.handle.membership().servers.contains_key(&second_id)).then_some(())
    })
    .await;
    let left = || async { (status_of(&members(first.http_addrs[0]).await, "s1") == Some(3)).then_some(()) };
    eventually("s1 left (not failed) in s0's member list", left).await;
    first.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_server_leaves_by_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(server_config("s0", dir.path(), 0, &strings(&["-bootstrap"])))
        .await
        .unwrap();
    agreed_leader(&[&agent]).await;
    let (status, body) = http(agent.http_addrs[0], "PUT", "/v1/agent/leave").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::timeout(DEADLINE, agent.run_until(std::future::pending()))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_keeps_its_id_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = 0;
    let agent = Agent::start(server_config("s0", dir.path(), port, &strings(&["-bootstrap"])))
        .await
        .unwrap();
    let id = agent.handle.id();
    agreed_leader(&[&agent]).await;
    assert!(matches!(
        agent.handle.call(put("k", "kept")).await,
        Response::Written { .. }
    ));
    agent.run_until(async {}).await.unwrap();

    // Same data dir, no bootstrap flag: it recovers the configuration and elects itself again.
    let agent = Agent::start(server_config("s0", dir.path(), port, &[])).await.unwrap();
    assert_eq!(agent.handle.id(), id);
    assert_eq!(agreed_leader(&[&agent]).await, id);
    assert_eq!(read(&agent, "k").await.as_deref(), Some("kept"));
    agent.run_until(async {}).await.unwrap();
}

#[tokio::test]
async fn a_second_agent_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(server_config("s0", dir.path(), 0, &strings(&["-bootstrap"])))
        .await
        .unwrap();
    let Err(err) = Agent::start(server_config("s0", dir.path(), 0, &strings(&["-bootstrap"]))).await else {
        panic!("two agents on one data dir")
    };
    assert!(err.to_string().contains("in use"), "{err}");
    agent.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_agent_finds_the_server_by_gossip_and_forwards_requests() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let server = Agent::start(server_config("s0", dirs[0].path(), 0, &strings(&["-bootstrap"])))
        .await
        .unwrap();
    agreed_leader(&[&server]).await;
    let mut args = strings(&["-node", "c0", "-data-dir", dirs[1].path().to_str().unwrap()]);
    args.extend(strings(&[
        "-bind",
        "127.0.0.1",
        "-client",
        "127.0.0.1",
        "-http-port",
        "0",
    ]));
    args.extend(strings(&[
        "-dns-port",
        "0",
        "-serf-lan-port",
        "0",
        "-retry-join",
        &server.lan.addr.to_string(),
    ]));
    let client = ClientAgent::start(parse_agent_args(&args).unwrap()).await.unwrap();
    let http_c = client.http_addrs[0];

    // The client learns the server from gossip, then serves writes and reads through it.
    eventually("a write through the client", || async {
        let mut s = tokio::net::TcpStream::connect(http_c).await.unwrap();
        let req = "PUT /v1/kv/color HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nred";
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).contains("\r\n\r\ntrue").then_some(())
    })
    .await;
    assert_eq!(read(&server, "color").await.as_deref(), Some("red"));
    let (status, body) = http(http_c, "GET", "/v1/kv/color?raw").await;
    assert_eq!((status, body.as_str()), (200, "red"));
    let (status, body) = http(http_c, "GET", "/v1/agent/members").await;
    assert_eq!(status, 200);
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let roles: Vec<(&str, &str)> = list
        .iter()
        .map(|m| (m["Name"].as_str().unwrap(), m["Tags"]["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, vec![("c0", "node"), ("s0", "consul")]);
    let (_, body) = http(http_c, "GET", "/v1/agent/self").await;
    assert!(body.contains("\"known_servers\":\"1\""), "{body}");

    // The client leaves: the server lists it as left (3), not failed.
    let (status, _) = http(http_c, "PUT", "/v1/agent/leave").await;
    assert_eq!(status, 200);
    tokio::time::timeout(DEADLINE, client.run_until(std::future::pending(), true))
        .await
        .unwrap()
        .unwrap();
    eventually("the client left on the server", || async {
        let m = server.lan.members();
        m.iter()
            .any(|m| m.name == "c0" && m.status == concord_core::gossip::MemberStatus::Left)
            .then_some(())
    })
    .await;
    server.run_until(async {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gossip_encryption_keeps_out_a_wrong_key_and_rotates_keys_cluster_wide() {
    let (k1, k2, k3) = (
        crate::gossip::generate_key(),
        crate::gossip::generate_key(),
        crate::gossip::generate_key(),
    );
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let s0 = Agent::start(server_config(
        "s0",
        dirs[0].path(),
        0,
        &strings(&["-bootstrap", "-encrypt", &k1]),
    ))
    .await
    .unwrap();
    let join = |key: &str| strings(&["-encrypt", key, "-retry-join", &s0.lan.addr.to_string()]);
    let s1 = Agent::start(server_config("s1", dirs[1].path(), 0, &join(&k1)))
        .await
        .unwrap();
    let s2 = Agent::start(server_config("s2", dirs[2].path(), 0, &join(&k2)))
        .await
        .unwrap();
    eventually("s1 in s0's member list", || async {
        s0.lan.members().iter().any(|m| m.name == "s1").then_some(())
    })
    .await;
    let stored = std::fs::read_to_string(dirs[0].path().join("serf/local.keyring")).unwrap();
    assert_eq!(stored, format!("[\"{k1}\"]"));

    // Install a key through s0's HTTP API: it reaches s1's keyring by gossip; then make it primary.
    let http_body = |method: &str, key: &str| {
        let body = format!("{{\"Key\":\"{key}\"}}");
        format!("{method} /v1/operator/keyring HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    };
    for req in [http_body("POST", &k3), http_body("PUT", &k3)] {
        let mut s = tokio::net::TcpStream::connect(s0.http_addrs[0]).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        assert!(
            String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
    let ring1 = s1.lan.keyring.clone().unwrap();
    eventually("k3 primary on s1", || async { (ring1.primary() == k3).then_some(()) }).await;
    let (status, body) = http(s0.http_addrs[0], "GET", "/v1/operator/keyring").await;
    assert_eq!(status, 200);
    assert!(body.contains(&k3) && body.contains("\"WAN\":true"), "{body}");

    // Gossip still flows between s0 and s1 under the new primary; s2 (wrong key) never got in.
    eventually("s1 alive on s0 after rotation", || async {
        s0.lan
            .members()
            .iter()
            .any(|m| m.name == "s1" && m.status == concord_core::gossip::MemberStatus::Alive)
            .then_some(())
    })
    .await;
    assert!(!s0.lan.members().iter().any(|m| m.name == "s2"));
    assert_eq!(s2.lan.members().len(), 1);
    for a in [s2, s1, s0] {
        a.run_until(async {}).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_rejoins_from_its_snapshot_unless_it_left_without_rejoin() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let server = Agent::start(server_config("s0", dirs[0].path(), 0, &strings(&["-bootstrap"])))
        .await
        .unwrap();
    let client_args = |extra: &[&str]| {
        let mut args = strings(&["-node", "c0", "-data-dir", dirs[1].path().to_str().unwrap()]);
        args.extend(strings(&[
            "-bind",
            "127.0.0.1",
            "-client",
            "127.0.0.1",
            "-http-port",
            "0",
            "-dns-port",
            "0",
            "-serf-lan-port",
            "0",
        ]));
        args.extend(strings(extra));
        parse_agent_args(&args).unwrap()
    };
    let sees_server = |c: &ClientAgent| {
        c.lan
            .members()
            .iter()
            .any(|m| m.name == "s0" && m.status == concord_core::gossip::MemberStatus::Alive)
    };
    let join = server.lan.addr.to_string();
    let client = ClientAgent::start(client_args(&["-retry-join", &join])).await.unwrap();
    eventually("c0 sees s0", || async { sees_server(&client).then_some(()) }).await;
    let snapshot = dirs[1].path().join("serf/local.snapshot");
    eventually("the snapshot", || async {
        std::fs::read_to_string(&snapshot).ok().filter(|s| s.contains(&join))
    })
    .await;
    client.run_until(async {}, false).await.unwrap();

    // Restarted without -retry-join: it rejoins the members it knew.
    let client = ClientAgent::start(client_args(&[])).await.unwrap();
    eventually("c0 rejoined from its snapshot", || async {
        sees_server(&client).then_some(())
    })
    .await;
    let (status, _) = http(client.http_addrs[0], "PUT", "/v1/agent/leave").await;
    assert_eq!(status, 200);
    client.run_until(std::future::pending(), true).await.unwrap();
    assert!(std::fs::read_to_string(&snapshot).unwrap().contains("\"left\":true"));

    // After a graceful leave it stays out, unless started with -rejoin.
    let client = ClientAgent::start(client_args(&[])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        client.lan.members().len(),
        1,
        "a left agent does not rejoin without -rejoin"
    );
    client.run_until(async {}, false).await.unwrap();
    let client = ClientAgent::start(client_args(&["-rejoin"])).await.unwrap();
    eventually("c0 rejoined with -rejoin", || async {
        sees_server(&client).then_some(())
    })
    .await;
    client.run_until(async {}, false).await.unwrap();
    server.run_until(async {}).await.unwrap();
}

#[test]
fn a_server_leaves_one_core_to_its_storage_thread() {
    assert_eq!(worker_threads(true, false, 1), Some(1));
    assert_eq!(worker_threads(true, false, 2), Some(1));
    assert_eq!(worker_threads(true, false, 8), Some(7));
    // TOKIO_WORKER_THREADS decides when set; client agents keep tokio's default.
    assert_eq!(worker_threads(true, true, 8), None);
    assert_eq!(worker_threads(false, false, 8), None);
}
