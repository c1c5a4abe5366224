//! A server restarted on damaged files (a flipped byte in its snapshot, or in its Raft log) never serves
//! damaged data: the damage is reported in one log line, and the server either drops what is damaged and
//! catches up from the others (snapshot, torn log tail) or refuses to start with a clear error.

use concord_tests::{http_get, http_put, poll, Cluster};
use std::path::{Path, PathBuf};
use std::time::Duration;

const KEYS: usize = 60;
/// Small enough that 60 writes leave snapshots behind, with a short log after them (the snapshot check
/// runs every 50-100 ms rather than Consul's 30-60 s).
const CONFIG: &str = r#""raft_snapshot_threshold": 16, "raft_snapshot_interval": "50ms", "raft_trailing_logs": 4"#;

fn value(i: usize) -> String {
    format!("value-{i}-{}", "x".repeat(i % 7))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Flip one byte in the middle of `path` (a bit-rot or a torn write).
fn flip_middle(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read file to damage");
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).expect("write damaged file");
}

/// A 3-server cluster with `KEYS` acknowledged keys; returns it and a follower that has a snapshot.
fn cluster_with_snapshots() -> (Cluster, usize) {
    let mut c = Cluster::start_with(3, CONFIG);
    let leader = c.wait_leader(Duration::from_secs(60));
    for i in 0..KEYS {
        let r = http_put(&c.url(leader, &format!("/v1/kv/k/{i}")), value(i).as_bytes()).expect("PUT");
        assert_eq!((r.status, r.text()), (200, "true".to_string()));
    }
    let follower = (leader + 1) % 3;
    poll(Duration::from_secs(30), "the follower has a snapshot file", || {
        let mut files = Vec::new();
        files_under(&c.servers[follower].data_dir.join("raft/snapshots"), &mut files);
        match files.iter().any(|f| f.extension().is_some_and(|e| e == "snap")) {
            true => Ok(()),
            false => Err(format!("{files:?}")),
        }
    });
    (c, follower)
}

/// Every key read from server `i` (stale reads: its own state) is either absent or exactly what was
/// acknowledged; returns how many are present.
fn check_no_wrong_value(c: &Cluster, i: usize) -> Result<usize, String> {
    let mut present = 0;
    for k in 0..KEYS {
        let r = http_get(&c.url(i, &format!("/v1/kv/k/{k}?stale&raw")))?;
        match r.status {
            404 => {}
            200 if r.text() == value(k) => present += 1,
            status => panic!(
                "server {i} served k/{k} as {status} {:?}: damaged data served",
                r.text()
            ),
        }
    }
    Ok(present)
}

fn stderr_of(c: &Cluster, i: usize) -> String {
    std::fs::read_to_string(c.servers[i].log_dir.join("stderr.log")).unwrap_or_default()
}

/// Restart server `f`, which must refuse to start: it exits, its last start's output has exactly one
/// error line containing each of `needles`, and the other two servers still serve every acknowledged key.
fn assert_refuses_to_start(c: &mut Cluster, f: usize, needles: &[&str]) {
    c.restart(f);
    poll(Duration::from_secs(30), "the damaged server exits", || {
        match c.running().contains(&f) {
            false => Ok(()),
            true => Err("still running".into()),
        }
    });
    let logs = stderr_of(c, f);
    let last_start = logs.rsplit("start #").next().unwrap_or_default();
    let errors: Vec<&str> = last_start
        .lines()
        .filter(|l| l.contains("Error starting agent"))
        .collect();
    assert_eq!(errors.len(), 1, "one clear error line expected:\n{logs}");
    for needle in needles {
        assert!(errors[0].contains(needle), "{needle:?} missing from {:?}", errors[0]);
    }
    for i in (0..3).filter(|&i| i != f) {
        assert_eq!(
            check_no_wrong_value(c, i).unwrap(),
            KEYS,
            "server {i} lost acknowledged data"
        );
    }
    let leader = c.wait_leader(Duration::from_secs(30));
    let r = http_put(&c.url(leader, "/v1/kv/after"), b"ok").expect("PUT after");
    assert_eq!(r.status, 200, "the other two still accept writes");
}

#[test]
fn a_damaged_snapshot_the_log_cannot_replace_stops_the_server_with_a_clear_error() {
    let (mut c, f) = cluster_with_snapshots();
    c.kill(f);
    let mut files = Vec::new();
    files_under(&c.servers[f].data_dir.join("raft/snapshots"), &mut files);
    for file in files.iter().filter(|p| p.extension().is_some_and(|e| e == "snap")) {
        flip_middle(file);
    }
    let needles = ["snapshot", "is damaged", "refusing to start", "remove-peer"];
    assert_refuses_to_start(&mut c, f, &needles);
    // Nothing was deleted on the way: the next start refuses just the same.
    assert_refuses_to_start(&mut c, f, &needles);
}

#[test]
fn a_damaged_log_table_stops_the_server_with_a_clear_error() {
    let (mut c, f) = cluster_with_snapshots();
    c.kill(f);
    let mut files = Vec::new();
    files_under(&c.servers[f].data_dir.join("raft/log/keyspaces"), &mut files);
    let tables: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("tables")))
        .collect();
    assert!(!tables.is_empty(), "no log tables were written: {files:#?}");
    for table in tables {
        flip_middle(table);
    }
    assert_refuses_to_start(&mut c, f, &["Raft log store", "is damaged", "refusing to start"]);
}
