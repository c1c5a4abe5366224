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
