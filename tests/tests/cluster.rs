//! Black-box behaviour of a real three-server concord cluster over its Consul-compatible HTTP API
//! (reference: consul-compat.md §1.0 consistency modes and blocking queries, §1.1 KV, §1.7 status).

use concord_tests::{poll, poll_until, Cluster, Resp, ELECTION_TIMEOUT};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// First election of a fresh cluster: processes start, find each other by `-retry-join`, bootstrap once
/// `-bootstrap-expect` servers are known, elect. Generous, because a cold start on a loaded 2-core machine
/// is slow; failover is bounded much more tightly below.
const FIRST_LEADER: Duration = Duration::from_secs(30);

fn kv_get(c: &Cluster, i: usize, key: &str, query: &str) -> Result<Resp, String> {
    c.get(i, &format!("/v1/kv/{key}{query}"))
}

/// PUTs `value` at `key` through server `i` and checks the write was acknowledged (`200`, body `true`).
fn kv_put(c: &Cluster, i: usize, key: &str, value: &[u8]) -> Result<(), String> {
    let resp = c.put(i, &format!("/v1/kv/{key}"), value)?.expect_status(200)?;
    match resp.text().trim() {
        "true" => Ok(()),
        other => Err(format!(
            "PUT {key} via {} answered {other:?}, want true",
            c.servers[i].name
        )),
    }
}

/// The value at `key` read through server `i` with `query` (e.g. "" or "?consistent"), which must be 200.
fn read_value(c: &Cluster, i: usize, key: &str, query: &str) -> Result<Vec<u8>, String> {
    let resp = kv_get(c, i, key, query)?
        .expect_status(200)
        .map_err(|e| format!("GET {key}{query} via {}: {e}", c.servers[i].name))?;
    let index = resp.index()?;
    if index == 0 {
        return Err(format!(
            "GET {key}{query} via {}: X-Consul-Index is 0",
            c.servers[i].name
        ));
    }
    resp.kv_value()
}

#[test]
fn three_servers_elect_one_leader_and_list_three_peers() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(FIRST_LEADER);
    let want: BTreeSet<String> = c.servers.iter().map(|s| s.rpc_addr()).collect();
    for i in 0..c.len() {
        let resp = c.get(i, "/v1/status/leader").unwrap().expect_status(200).unwrap();
        assert_eq!(
            resp.json().unwrap(),
            c.servers[leader].rpc_addr(),
            "leader seen by {}",
            c.servers[i].name
        );
        let peers = c
            .get(i, "/v1/status/peers")
            .unwrap()
            .expect_status(200)
            .unwrap()
            .json()
            .unwrap();
        let peers: BTreeSet<String> = peers
            .as_array()
            .unwrap_or_else(|| panic!("peers is not an array: {peers}"))
            .iter()
            .map(|p| {
                p.as_str()
                    .unwrap_or_else(|| panic!("peer is not a string: {p}"))
                    .to_string()
            })
            .collect();
        assert_eq!(peers, want, "/v1/status/peers on {}", c.servers[i].name);
    }
}

#[test]
fn a_write_through_any_server_is_readable_through_every_server() {
    let mut c = Cluster::start(3);
    c.wait_leader(FIRST_LEADER);
    for writer in 0..c.len() {
        let key = format!("any/written-via-{}", c.servers[writer].name);
        let value = format!("value from {}", c.servers[writer].name);
        kv_put(&c, writer, &key, value.as_bytes()).unwrap();
        for reader in 0..c.len() {
            // Default mode and ?consistent both go through the leader, which applied the write before
            // acknowledging it: read-after-write holds immediately, no polling.
            for query in ["", "?consistent"] {
                let got = read_value(&c, reader, &key, query).unwrap();
                assert_eq!(got, value.as_bytes(), "GET {key}{query} via {}", c.servers[reader].name);
            }
            // ?stale is served by the reader itself, which may lag the leader: eventually.
            poll(
                Duration::from_secs(5),
                &format!("?stale read of {key} via {}", c.servers[reader].name),
                || {
                    let got = read_value(&c, reader, &key, "?stale")?;
                    if got == value.as_bytes() {
                        Ok(())
                    } else {
                        Err(format!("got {:?}", String::from_utf8_lossy(&got)))
                    }
                },
            );
        }
    }
}

/// Kill the leader: the two others elect a new one and take writes again within two election timeouts
/// (`ELECTION_TIMEOUT` = 1 s, `performance.raft_multiplier = 1`, set by the harness); followers time out
/// after a random time in [T, 2T) since they last heard the leader, so 2T bounds the first election.
/// Restart the old leader: it catches up and serves the write it missed from its own state (`?stale`).
#[test]
fn leader_failover_within_two_election_timeouts_and_the_old_leader_catches_up() {
    let mut c = Cluster::start(3);
    let old = c.wait_leader(FIRST_LEADER);
    kv_put(&c, old, "failover/before", b"1").unwrap();
    let survivors: Vec<usize> = (0..c.len()).filter(|&i| i != old).collect();

    c.kill(old);
    let killed_at = Instant::now();
    let bound = 2 * ELECTION_TIMEOUT;
    let mut attempt = 0;
    let via = poll_until(
        killed_at + bound,
        "a write to succeed after the leader was killed",
        || {
            let i = survivors[attempt % survivors.len()];
            attempt += 1;
            // A retrying client: each attempt gets a quarter of an election timeout (ample for a
            // forwarded commit on loopback), so one request parked during the election does not hide a
            // later success. What happens to that parked request is the next test's subject.
            let left = (killed_at + bound)
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(50), ELECTION_TIMEOUT / 4);
            let resp = concord_tests::http("PUT", &c.url(i, "/v1/kv/failover/during"), Some(b"2"), left)?;
            match (resp.status, resp.text().trim()) {
                (200, "true") => Ok(i),
                (s, b) => Err(format!("PUT via {}: {s} {b}", c.servers[i].name)),
            }
        },
    );
    let took = killed_at.elapsed();
    eprintln!(
        "write succeeded via {} {took:?} after the leader was killed",
        c.servers[via].name
    );
    assert!(took <= bound, "failover took {took:?}, bound {bound:?}");

    let new = c.wait_leader(Duration::from_secs(5));
    assert_ne!(new, old, "the killed server cannot be the leader");
    for &i in &survivors {
        assert_eq!(read_value(&c, i, "failover/during", "?consistent").unwrap(), b"2");
    }

    c.restart(old);
    poll(
        Duration::from_secs(20),
        "the restarted old leader to serve the missed write with ?stale",
        || {
            let got = read_value(&c, old, "failover/during", "?stale")?;
            if got == b"2" {
                Ok(())
            } else {
                Err(format!("got {:?}", String::from_utf8_lossy(&got)))
            }
        },
    );
    assert_eq!(read_value(&c, old, "failover/before", "?stale").unwrap(), b"1");
    c.wait_leader(Duration::from_secs(10));
}

/// A write sent to a surviving server right after the leader dies, before a new leader exists, is held and
/// then carried out by the new leader: it succeeds within two election timeouts. Consul holds such requests
/// up to `rpc_hold_timeout` (7 s) and retries the forward while it waits for the election, so a client with
/// an ordinary timeout never sees the failover.
#[test]
fn a_write_sent_during_the_election_succeeds_once_a_new_leader_exists() {
    let mut c = Cluster::start(3);
    let old = c.wait_leader(FIRST_LEADER);
    kv_put(&c, old, "inflight/before", b"1").unwrap();
    let follower = (old + 1) % c.len();
    c.kill(old);
    let killed_at = Instant::now();
    let bound = 2 * ELECTION_TIMEOUT;
    let resp = concord_tests::http(
        "PUT",
        &c.url(follower, "/v1/kv/inflight/during"),
        Some(b"2"),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("write sent during the election: {e}"));
    let took = killed_at.elapsed();
    eprintln!(
        "write sent during the election answered {} {:?} after {took:?}",
        resp.status,
        resp.text()
    );
    assert_eq!(
        (resp.status, resp.text().trim()),
        (200, "true"),
        "write sent during the election"
    );
    assert!(
        took <= bound,
        "write sent during the election took {took:?}, bound {bound:?}"
    );
    assert_eq!(
        read_value(&c, follower, "inflight/during", "?consistent").unwrap(),
        b"2"
    );
}

/// 200 acknowledged writes, `kill -9` of every server, restart: every acknowledged write is there.
#[test]
fn every_acknowledged_write_survives_kill_9_of_the_whole_cluster() {
    const KEYS: usize = 200;
    let mut c = Cluster::start(3);
    c.wait_leader(FIRST_LEADER);
    for k in 0..KEYS {
        // Spread the writes over all servers so forwarded writes are covered too.
        kv_put(&c, k % c.len(), &format!("durable/{k:03}"), format!("v{k}").as_bytes())
            .unwrap_or_else(|e| panic!("write {k}: {e}"));
    }
    for i in 0..c.len() {
        c.kill(i);
    }
    for i in 0..c.len() {
        c.restart(i);
    }
    c.wait_leader(FIRST_LEADER);
    for k in 0..KEYS {
        let key = format!("durable/{k:03}");
        let got = read_value(&c, k % c.len(), &key, "").unwrap_or_else(|e| panic!("after restart: {e}"));
        assert_eq!(String::from_utf8_lossy(&got), format!("v{k}"), "{key} after restart");
    }
    let keys = c
        .get(0, "/v1/kv/durable/?keys")
        .unwrap()
        .expect_status(200)
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(keys.as_array().map(Vec::len), Some(KEYS), "?keys after restart: {keys}");
}

/// `GET ?index=X&wait=30s` on a key wakes as soon as that key changes, and not when another key does.
#[test]
fn blocking_get_wakes_on_its_own_key_only() {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(FIRST_LEADER);
    let follower = (leader + 1) % c.len();
    kv_put(&c, leader, "watch/mine", b"old").unwrap();
    kv_put(&c, leader, "watch/other", b"a").unwrap();
    let index = kv_get(&c, follower, "watch/mine", "")
        .unwrap()
        .expect_status(200)
        .unwrap()
        .index()
        .unwrap();

    let url = c.url(follower, &format!("/v1/kv/watch/mine?index={index}&wait=30s"));
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let watcher = std::thread::spawn(move || {
        let resp = concord_tests::http("GET", &url, None, Duration::from_secs(60));
        let _ = tx.send((resp, Instant::now()));
    });

    // A change to another key must not wake it: after that write is acknowledged (and applied everywhere,
    // as a ?stale read of it on the watcher's server shows) the query is still pending.
    kv_put(&c, leader, "watch/other", b"b").unwrap();
    poll(
        Duration::from_secs(5),
        "the other key's change to reach the watcher's server",
        || match read_value(&c, follower, "watch/other", "?stale")?.as_slice() {
            b"b" => Ok(()),
            v => Err(format!("got {:?}", String::from_utf8_lossy(v))),
        },
    );
    match rx.recv_timeout(Duration::from_secs(2)) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        Ok((resp, at)) => panic!(
            "blocking GET returned {:?} after a change to another key: {:?}",
            at - started,
            resp.map(|r| (r.status, r.text(), r.headers))
        ),
        Err(e) => panic!("watcher thread died: {e}"),
    }

    kv_put(&c, leader, "watch/mine", b"new").unwrap();
    let changed = Instant::now();
    let (resp, returned) = rx
        .recv_timeout(Duration::from_secs(40))
        .expect("blocking GET never returned");
    watcher.join().unwrap();
    let resp = resp.unwrap().expect_status(200).unwrap();
    let woke_after = returned.saturating_duration_since(changed);
    eprintln!(
        "blocking GET returned {woke_after:?} after its key changed ({:?} after it was sent)",
        returned - started
    );
    assert!(
        woke_after < Duration::from_secs(2),
        "woke {woke_after:?} after the change; wait was 30 s"
    );
    assert!(
        returned - started < Duration::from_secs(25),
        "returned only after {:?}",
        returned - started
    );
    assert_eq!(resp.kv_value().unwrap(), b"new");
    assert!(resp.index().unwrap() > index, "index did not move past {index}");
}

/// `concord agent -dev -http-port P` is a working single-server KV store with no config file or data dir.
#[test]
fn dev_agent_serves_kv_without_config() {
    let dev = concord_tests::Agent::dev();
    let url = dev.url("/v1/kv/dev/hello");
    poll(Duration::from_secs(20), "the -dev agent to acknowledge a PUT", || {
        let resp = concord_tests::http_put(&url, b"world")?.expect_status(200)?;
        match resp.text().trim() {
            "true" => Ok(()),
            other => Err(format!("PUT answered {other:?}")),
        }
    });
    let resp = concord_tests::http_get(&url).unwrap().expect_status(200).unwrap();
    assert_eq!(resp.kv_value().unwrap(), b"world");
    assert!(resp.index().unwrap() > 0);
    let raw = concord_tests::http_get(&format!("{url}?raw"))
        .unwrap()
        .expect_status(200)
        .unwrap();
    assert_eq!(raw.body, b"world");
    let del = concord_tests::http_delete(&url).unwrap().expect_status(200).unwrap();
    assert_eq!(del.text().trim(), "true");
    assert_eq!(concord_tests::http_get(&url).unwrap().status, 404);
}
