//! Black-box gossip membership (consul-compat.md §5, §1.4 `/v1/agent/members`, §4.3 `members`): three
//! servers and two client agents as real processes on their own loopback addresses.

use concord_tests::{poll, run_concord, Cluster};
use std::time::Duration;

/// Joins, elections and gossip convergence of five fresh processes on a loaded machine.
const FORMED: Duration = Duration::from_secs(40);
/// Failure detection with memberlist's LAN defaults for 5 members: probe (1 s) + suspicion (4 s with
/// two confirmations, up to 24 s without) + dissemination; generous for a loaded machine.
const DETECTED: Duration = Duration::from_secs(60);

/// `(name, Status)` of every member agent `i` lists.
fn members(c: &Cluster, i: usize) -> Result<Vec<(String, u64)>, String> {
    let body = c.get(i, "/v1/agent/members")?.expect_status(200)?.json()?;
    let list = body.as_array().ok_or("members is not an array")?;
    Ok(list
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap_or_default().to_string(),
                m["Status"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

fn status_on(c: &Cluster, i: usize, name: &str) -> Result<u64, String> {
    members(c, i)?
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .ok_or_else(|| format!("{name} unknown to {}", c.servers[i].name))
}

#[test]
fn three_servers_two_clients_alive_then_failed_and_left() {
    let mut c = Cluster::start(3);
    let c1 = c.add_client("c1");
    let c2 = c.add_client("c2");
    c.wait_leader(FORMED);
    poll(FORMED, "every agent to list 5 alive members", || {
        for i in 0..c.len() {
            let list = members(&c, i)?;
            let alive = list.iter().filter(|(_, s)| *s == 1).count();
            if alive != 5 {
                return Err(format!("{} sees {list:?}", c.servers[i].name));
            }
        }
        Ok(())
    });

    // `concord members` through a client: a header and five alive rows, servers first.
    let out = run_concord(Some(&c.servers[c1].http_addr()), &["members"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), 5, "{text}");
    assert!(rows.iter().all(|r| r.contains(" alive ")), "{text}");
    assert_eq!(rows.iter().filter(|r| r.contains(" server ")).count(), 3, "{text}");
    assert!(rows[3].starts_with("c1 ") && rows[4].starts_with("c2 "), "{text}");

    // A KV write through a client reaches the servers.
    let resp = c
        .put(c1, "/v1/kv/gossip", b"works")
        .unwrap()
        .expect_status(200)
        .unwrap();
    assert_eq!(resp.text().trim(), "true");
    poll(FORMED, "the write on s1", || {
        let r = c.get(0, "/v1/kv/gossip?raw")?.expect_status(200)?;
        (r.text() == "works").then_some(()).ok_or_else(|| r.text())
    });

    // kill -9 a client: it turns failed (4) on every other agent.
    c.kill(c2);
    poll(DETECTED, "c2 failed everywhere", || {
        for i in (0..c.len()).filter(|&i| i != c2) {
            let s = status_on(&c, i, "c2")?;
            if s != 4 {
                return Err(format!("{} sees c2 as {s}", c.servers[i].name));
            }
        }
        Ok(())
    });

    // A graceful leave: left (3), which is not failed.
    let out = run_concord(Some(&c.servers[c1].http_addr()), &["leave"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    poll(FORMED, "c1 left on the servers", || {
        for i in 0..3 {
            let s = status_on(&c, i, "c1")?;
            if s != 3 {
                return Err(format!("{} sees c1 as {s}", c.servers[i].name));
            }
        }
        Ok(())
    });
    assert_eq!(status_on(&c, 0, "c2"), Ok(4), "the killed client stays failed");

    // force-leave moves the failed client to left.
    let out = run_concord(Some(&c.servers[0].http_addr()), &["force-leave", "c2"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    poll(FORMED, "c2 left after force-leave", || match status_on(&c, 1, "c2")? {
        3 => Ok(()),
        s => Err(format!("s2 sees c2 as {s}")),
    });
}

/// `(node, serfHealth status, output)` of each instance of `service`, as agent `i` answers
/// `/v1/health/service/:service` (with `?passing` when `passing`).
fn serf_health_of(
    c: &Cluster,
    i: usize,
    service: &str,
    passing: bool,
) -> Result<Vec<(String, String, String)>, String> {
    let q = if passing { "?passing" } else { "" };
    let body = c
        .get(i, &format!("/v1/health/service/{service}{q}"))?
        .expect_status(200)?
        .json()?;
    let list = body.as_array().ok_or("health is not an array")?;
    let mut out = Vec::new();
    for entry in list {
        let node = entry["Node"]["Node"].as_str().unwrap_or_default().to_string();
        let checks = entry["Checks"].as_array().ok_or("no Checks")?;
        let serf = checks
            .iter()
            .find(|c| c["CheckID"] == "serfHealth")
            .ok_or_else(|| format!("{node} has no serfHealth: {entry}"))?;
        out.push((
            node,
            serf["Status"].as_str().unwrap_or_default().to_string(),
            serf["Output"].as_str().unwrap_or_default().to_string(),
        ));
    }
    out.sort();
    Ok(out)
}

fn catalog_nodes(c: &Cluster, i: usize) -> Result<Vec<String>, String> {
    let body = c.get(i, "/v1/catalog/nodes")?.expect_status(200)?.json()?;
    let list = body.as_array().ok_or("nodes is not an array")?;
    Ok(list
        .iter()
        .map(|n| n["Node"].as_str().unwrap_or_default().to_string())
        .collect())
}

fn row(node: &str, status: &str, output: &str) -> (String, String, String) {
    (node.to_string(), status.to_string(), output.to_string())
}

/// The leader turns gossip into the catalog's `serfHealth` (Consul's reconcileMember): every agent is a
/// node with `serfHealth` passing; a killed client's services turn critical and leave `?passing`; a left
/// client and a force-left failed one disappear from `/v1/catalog/nodes`.
#[test]
fn serf_health_follows_gossip_in_the_catalog() {
    let mut c = Cluster::start(3);
    let c1 = c.add_client("c1");
    let c2 = c.add_client("c2");
    c.wait_leader(FORMED);
    for i in [c1, c2] {
        c.put(i, "/v1/agent/service/register", br#"{"Name":"web","Port":8080}"#)
            .and_then(|r| r.expect_status(200))
            .unwrap();
    }
    let alive = "Agent alive and reachable";
    poll(FORMED, "five nodes in the catalog, web passing on c1 and c2", || {
        let nodes = catalog_nodes(&c, 0)?;
        if nodes != ["c1", "c2", "s1", "s2", "s3"] {
            return Err(format!("nodes {nodes:?}"));
        }
        let web = serf_health_of(&c, 1, "web", true)?;
        let want = vec![row("c1", "passing", alive), row("c2", "passing", alive)];
        (web == want).then_some(()).ok_or(format!("web {web:?}"))
    });
    // Servers carry serfHealth too (the leader registers itself).
    let consul = serf_health_of(&c, 2, "consul", true).unwrap();
    assert_eq!(consul.len(), 3, "{consul:?}");

    c.kill(c2);
    poll(
        DETECTED,
        "c2's web critical through serfHealth, gone from ?passing",
        || {
            for i in 0..3 {
                let all = serf_health_of(&c, i, "web", false)?;
                let want = vec![
                    row("c1", "passing", alive),
                    row("c2", "critical", "Agent not live or unreachable"),
                ];
                if all != want {
                    return Err(format!("s{}: {all:?}", i + 1));
                }
                let passing = serf_health_of(&c, i, "web", true)?;
                if passing != [row("c1", "passing", alive)] {
                    return Err(format!("s{} ?passing: {passing:?}", i + 1));
                }
            }
            Ok(())
        },
    );
    assert!(
        catalog_nodes(&c, 0).unwrap().contains(&"c2".to_string()),
        "a failed node stays in the catalog"
    );

    let out = run_concord(Some(&c.servers[c1].http_addr()), &["leave"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    poll(FORMED, "c1 deregistered after its leave", || {
        let nodes = catalog_nodes(&c, 1)?;
        (nodes == ["c2", "s1", "s2", "s3"])
            .then_some(())
            .ok_or(format!("{nodes:?}"))
    });

    let out = run_concord(Some(&c.servers[0].http_addr()), &["force-leave", "c2"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    poll(FORMED, "c2 deregistered after force-leave", || {
        let nodes = catalog_nodes(&c, 2)?;
        (nodes == ["s1", "s2", "s3"]).then_some(()).ok_or(format!("{nodes:?}"))
    });
    let web = serf_health_of(&c, 0, "web", false).unwrap();
    assert!(web.is_empty(), "no web instance is left: {web:?}");
}

/// Both log files of agent `i`.
fn agent_logs(c: &Cluster, i: usize) -> String {
    let home = c.servers[i]
        .data_dir
        .parent()
        .expect("the data dir is inside the agent's home");
    let read = |f: &str| std::fs::read_to_string(home.join(f)).unwrap_or_default();
    read("stdout.log") + &read("stderr.log")
}

/// The node ID agent `i` keeps in its data dir (written as it starts).
fn stored_node_id(c: &Cluster, i: usize) -> String {
    let path = c.servers[i].data_dir.join("node-id");
    poll(FORMED, "the agent's node-id file", || {
        let id = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let id = id.trim().to_string();
        (id.len() == 36).then_some(id.clone()).ok_or(format!("node-id {id:?}"))
    })
}

/// `ID` of `node` in the catalog, as agent `i` answers `/v1/catalog/node/:node`.
fn catalog_node_id(c: &Cluster, i: usize, node: &str) -> Result<String, String> {
    let body = c
        .get(i, &format!("/v1/catalog/node/{node}"))?
        .expect_status(200)?
        .json()?;
    body["Node"]["ID"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no node {node}: {body}"))
}

/// Node names belong to one live agent (consul-compat.md §5 "Node IDs", memberlist's name conflicts): a
/// second agent started under a live agent's name, with its own data dir and so its own node ID, is refused
/// and exits with a readable error while the first keeps working; once the first has failed, a new agent
/// under that name joins, and the catalog node carries the new node ID.
#[test]
fn a_live_agents_name_is_refused_to_another_agent_and_reusable_once_it_failed() {
    let mut c = Cluster::start(3);
    let web = c.add_client("web");
    c.wait_leader(FORMED);
    let first_id = stored_node_id(&c, web);
    poll(FORMED, "web in the catalog with its node ID", || {
        let id = catalog_node_id(&c, 0, "web")?;
        (id == first_id).then_some(()).ok_or(format!("ID {id}"))
    });

    // Same -node, fresh data dir: refused; the process ends with the reason.
    let dup = c.add_client("web");
    assert_ne!(stored_node_id(&c, dup), first_id);
    poll(FORMED, "the second 'web' agent to exit", || {
        if c.servers[dup].is_running() {
            Err("still running".to_string())
        } else {
            Ok(())
        }
    });
    let logs = agent_logs(&c, dup);
    let first_addr = format!("{}:8301", c.servers[web].ip);
    assert!(
        logs.contains(&format!(
            "Failed to join the cluster: node name 'web' is in use by another live agent at {first_addr} (node ID {first_id})"
        )),
        "{logs}"
    );
    poll(FORMED, "the servers to log the refused claim", || {
        let l = agent_logs(&c, 0);
        l.contains("Conflicting address for web")
            .then_some(())
            .ok_or("no conflict logged on s1".to_string())
    });
    // The first one is unaffected: alive everywhere, same ID in the catalog, its API answers.
    for i in 0..3 {
        assert_eq!(status_on(&c, i, "web"), Ok(1), "s{}", i + 1);
    }
    assert_eq!(catalog_node_id(&c, 1, "web"), Ok(first_id.clone()));
    c.get(web, "/v1/agent/self").and_then(|r| r.expect_status(200)).unwrap();

    // The first one dies and is declared failed: a new agent may take the name (after memberlist's
    // dead-node reclaim time, 30 s), and the catalog then shows the new node ID.
    c.kill(web);
    poll(DETECTED, "web failed on the servers", || {
        for i in 0..3 {
            let s = status_on(&c, i, "web")?;
            if s != 4 {
                return Err(format!("s{} sees web as {s}", i + 1));
            }
        }
        Ok(())
    });
    let again = c.add_client("web");
    let new_id = stored_node_id(&c, again);
    assert_ne!(new_id, first_id);
    poll(
        DETECTED + Duration::from_secs(40),
        "the new web alive, with its ID in the catalog",
        || {
            let id = catalog_node_id(&c, 0, "web")?;
            if id != new_id {
                return Err(format!("catalog ID {id}"));
            }
            for i in 0..3 {
                let s = status_on(&c, i, "web")?;
                if s != 1 {
                    return Err(format!("s{} sees web as {s}", i + 1));
                }
            }
            Ok(())
        },
    );
    assert!(c.servers[again].is_running(), "{}", agent_logs(&c, again));
    let nodes = catalog_nodes(&c, 2).unwrap();
    assert_eq!(nodes.iter().filter(|n| *n == "web").count(), 1, "{nodes:?}");
}
