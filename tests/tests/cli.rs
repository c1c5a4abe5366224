//! The `concord` CLI against a running three-server cluster (reference: consul-compat.md §4.3): the KV
//! verbs, `operator raft list-peers`, `info`, `version`, and bad input.

use concord_tests::{run_concord, Cluster};
use std::process::Output;
use std::time::Duration;

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "`{what}` exited {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failed command: non-zero exit and exactly one (non-empty) line on stderr.
fn fails_with_one_line(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "`{what}` should fail but exited {:?}\nstdout:\n{}\nstderr:\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "`{what}` should print one line on stderr, printed:\n{stderr}"
    );
    lines[0].to_string()
}

fn cluster() -> (Cluster, usize) {
    let mut c = Cluster::start(3);
    let leader = c.wait_leader(Duration::from_secs(30));
    (c, leader)
}

#[test]
fn kv_put_get_delete() {
    let (c, _) = cluster();
    let addr = c.servers[1].http_addr();
    let a = Some(addr.as_str());

    let out = run_concord(a, &["kv", "put", "cli/greeting", "hello world"], None);
    assert_eq!(ok(&out, "kv put").trim(), "Success! Data written to: cli/greeting");
    let out = run_concord(a, &["kv", "get", "cli/greeting"], None);
    assert_eq!(ok(&out, "kv get"), "hello world\n");
    // The CLI and the HTTP API see the same store, through any server.
    let resp = c.get(2, "/v1/kv/cli/greeting?raw").unwrap().expect_status(200).unwrap();
    assert_eq!(resp.body, b"hello world");

    // -http-addr overrides CONSUL_HTTP_ADDR.
    let other = format!("http://{}", c.servers[0].http_addr());
    let out = run_concord(
        Some("127.0.0.1:1"),
        &["kv", "get", "-http-addr", &other, "cli/greeting"],
        None,
    );
    assert_eq!(ok(&out, "kv get -http-addr"), "hello world\n");

    let out = run_concord(a, &["kv", "delete", "cli/greeting"], None);
    assert_eq!(ok(&out, "kv delete").trim(), "Success! Deleted key: cli/greeting");
    let out = run_concord(a, &["kv", "get", "cli/greeting"], None);
    let line = fails_with_one_line(&out, "kv get <deleted key>");
    assert_eq!(line, "Error! No key exists at: cli/greeting");
    assert_eq!(c.get(2, "/v1/kv/cli/greeting").unwrap().status, 404);
}

#[test]
fn kv_export_then_import_restores_the_keys() {
    let (c, _) = cluster();
    let addr = c.servers[0].http_addr();
    let a = Some(addr.as_str());
    let keys = [
        ("cli/exp/a", "alpha"),
        ("cli/exp/b/c", "beta gamma"),
        ("cli/exp/empty", ""),
    ];
    for (k, v) in keys {
        ok(&run_concord(a, &["kv", "put", k, v], None), "kv put");
    }

    let exported = ok(&run_concord(a, &["kv", "export", "cli/exp/"], None), "kv export");
    let json: serde_json::Value = serde_json::from_str(&exported).expect("export prints JSON");
    let entries = json.as_array().expect("export prints an array");
    assert_eq!(entries.len(), keys.len(), "export: {exported}");
    for (k, v) in keys {
        let e = entries
            .iter()
            .find(|e| e["key"] == k)
            .unwrap_or_else(|| panic!("{k} missing from {exported}"));
        assert_eq!(e["flags"], 0, "{exported}");
        let value = e["value"]
            .as_str()
            .unwrap_or_else(|| panic!("value of {k} is not a string: {exported}"));
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD.decode(value).unwrap();
        assert_eq!(decoded, v.as_bytes(), "{k} in {exported}");
    }

    let out = run_concord(a, &["kv", "delete", "-recurse", "cli/exp/"], None);
    ok(&out, "kv delete -recurse");
    assert_eq!(c.get(1, "/v1/kv/cli/exp/?recurse").unwrap().status, 404);

    // Import from a file (@file) …
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    std::fs::write(&file, &exported).unwrap();
    let arg = format!("@{}", file.display());
    ok(&run_concord(a, &["kv", "import", &arg], None), "kv import @file");
    for (k, v) in keys {
        let resp = c
            .get(2, &format!("/v1/kv/{k}?raw"))
            .unwrap()
            .expect_status(200)
            .unwrap();
        assert_eq!(resp.body, v.as_bytes(), "{k} after import");
    }
    // … and from stdin (-).
    ok(
        &run_concord(a, &["kv", "delete", "-recurse", "cli/exp/"], None),
        "kv delete -recurse",
    );
    ok(
        &run_concord(a, &["kv", "import", "-"], Some(exported.as_bytes())),
        "kv import -",
    );
    for (k, v) in keys {
        let resp = c
            .get(1, &format!("/v1/kv/{k}?raw"))
            .unwrap()
            .expect_status(200)
            .unwrap();
        assert_eq!(resp.body, v.as_bytes(), "{k} after import from stdin");
    }
}

#[test]
fn operator_raft_list_peers_info_and_version() {
    let (c, leader) = cluster();
    let addr = c.servers[2].http_addr();
    let a = Some(addr.as_str());

    let out = ok(
        &run_concord(a, &["operator", "raft", "list-peers"], None),
        "operator raft list-peers",
    );
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 4, "a header and three peers:\n{out}");
    // Consul's documented table; since 1.14 it ends with "Commit Index" and "Trails Leader By" columns
    // (leader: `<index> -`, follower: `<index> <n> commits`), which are accepted but not required.
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    let columns = ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"];
    let trailing = ["Commit", "Index", "Trails", "Leader", "By"];
    let with_commit = header.len() > columns.len();
    assert!(header[..columns.len().min(header.len())] == columns, "header: {out}");
    assert!(!with_commit || header[columns.len()..] == trailing, "header: {out}");
    for (i, s) in c.servers.iter().enumerate() {
        let row: Vec<&str> = lines
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|r| r.first() == Some(&s.name.as_str()))
            .unwrap_or_else(|| panic!("no row for {}:\n{out}", s.name));
        let want_len = match (with_commit, i == leader) {
            (false, _) => 6,
            (true, true) => 8,
            (true, false) => 9,
        };
        assert_eq!(row.len(), want_len, "row of {}: {out}", s.name);
        assert_eq!(row[2], s.rpc_addr(), "{out}");
        assert_eq!(row[3], if i == leader { "leader" } else { "follower" }, "{out}");
        assert_eq!(row[4], "true", "{out}");
    }

    let info = ok(&run_concord(a, &["info"], None), "info");
    for section in ["agent:", "consul:", "raft:"] {
        assert!(
            info.lines().any(|l| l.trim_end() == section),
            "no `{section}` section in:\n{info}"
        );
    }
    let leader_addr = format!("leader_addr = {}", c.servers[leader].rpc_addr());
    assert!(
        info.lines().any(|l| l.trim() == leader_addr),
        "no `{leader_addr}` in:\n{info}"
    );
    assert!(
        info.lines().any(|l| l.trim() == "server = true"),
        "no `server = true` in:\n{info}"
    );
    assert!(
        info.lines().any(|l| l.trim().starts_with("commit_index = ")),
        "no commit_index in:\n{info}"
    );

    // `version` is local: it needs no agent. It names concord and its version (the first line may lead
    // with the Consul version it is compatible with, for scripts that parse `consul version`).
    let out = ok(&run_concord(None, &["version"], None), "version");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.to_ascii_lowercase().contains("concord") && first.contains(env!("CARGO_PKG_VERSION")),
        "version's first line: {first:?}"
    );
}

#[test]
fn bad_input_gives_one_line_and_a_non_zero_exit() {
    let (c, _) = cluster();
    let addr = c.servers[0].http_addr();
    let a = Some(addr.as_str());
    let cases: &[&[&str]] = &[
        &["kv", "put"],
        &["kv", "get"],
        &["kv", "put", "-flags", "not-a-number", "k", "v"],
        &["kv", "delete", "-cas", "k"],
        &["kv", "import", "@/nonexistent/concord-test-file.json"],
        &["kv", "frobnicate"],
        &["operator", "raft", "list-peers", "-no-such-flag"],
    ];
    let mut runs: Vec<(String, Output)> = cases
        .iter()
        .map(|args| (args.join(" "), run_concord(a, args, None)))
        .collect();
    runs.push((
        "kv import - <garbage>".into(),
        run_concord(a, &["kv", "import", "-"], Some(b"this is not json")),
    ));
    // Nothing listening: one line, not a stack of errors.
    runs.push((
        "kv get k against a closed port".into(),
        run_concord(Some("127.0.0.1:1"), &["kv", "get", "k"], None),
    ));
    // Check every case and report all violations at once.
    let violations: Vec<String> = runs
        .iter()
        .filter_map(|(what, out)| {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
            (out.status.success() || lines != 1).then(|| {
                format!(
                    "`concord {what}`: exit {:?}, {lines} stderr lines:\n{stderr}",
                    out.status.code()
                )
            })
        })
        .collect();
    assert!(
        violations.is_empty(),
        "bad input must give one stderr line and a non-zero exit:\n{}",
        violations.join("\n")
    );
}
