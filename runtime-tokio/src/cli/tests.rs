//! CLI commands end to end against the HTTP API served over the in-memory fake backend: exact stdout,
//! stderr and exit codes as Consul's CLI prints them.

use super::{run_with, Io};
use crate::http::tests::TestServer;
use crate::http::HttpSettings;
use concord_core::api::{ApiError, KvQuery, ReadMode, Request};
use std::io::{Read, Write};
use std::sync::atomic::Ordering;

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) out: String,
    pub(crate) err: String,
}

fn run_env(args: &[&str], stdin: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut input = stdin;
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        stdin: &mut input,
        env,
    };
    let code = run_with(&args, &mut io);
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// Run against `s`, addressed through `CONSUL_HTTP_ADDR` as users usually do.
pub(crate) fn run(s: &TestServer, args: &[&str]) -> Run {
    run_stdin(s, args, b"")
}

fn run_stdin(s: &TestServer, args: &[&str], stdin: &[u8]) -> Run {
    let addr = format!("http://{}", s.addr);
    run_env(args, stdin, &move |k| (k == "CONSUL_HTTP_ADDR").then(|| addr.clone()))
}

pub(crate) fn ok(r: &Run) -> &str {
    assert_eq!((r.code, r.err.as_str()), (0, ""), "stdout: {}", r.out);
    &r.out
}

pub(crate) fn failed(r: &Run) -> &str {
    assert_eq!(r.code, 1, "stdout: {}", r.out);
    &r.err
}

fn server() -> TestServer {
    TestServer::start(HttpSettings::default())
}

#[test]
fn kv_put_and_get() {
    let s = server();
    assert_eq!(
        ok(&run(&s, &["kv", "put", "foo", "bar"])),
        "Success! Data written to: foo\n"
    );
    assert_eq!(ok(&run(&s, &["kv", "get", "foo"])), "bar\n");
    assert_eq!(
        ok(&run(&s, &["kv", "get", "/foo"])),
        "bar\n",
        "a leading slash is stripped"
    );
    assert_eq!(
        failed(&run(&s, &["kv", "get", "nope"])),
        "Error! No key exists at: nope\n"
    );
    assert_eq!(failed(&run(&s, &["kv", "get"])), "Error! Missing KEY argument\n");
    assert_eq!(
        failed(&run(&s, &["kv", "get", "a", "b"])),
        "Too many arguments (expected 1, got 2)\n"
    );
    // An empty value prints an empty line.
    ok(&run(&s, &["kv", "put", "empty"]));
    assert_eq!(ok(&run(&s, &["kv", "get", "empty"])), "\n");
}

#[test]
fn kv_get_detailed_recurse_keys_base64() {
    let s = server();
    ok(&run(&s, &["kv", "put", "-flags=42", "web/a", "1"]));
    ok(&run(&s, &["kv", "put", "--flags", "7", "web/sub/b", "2"]));
    assert_eq!(
        ok(&run(&s, &["kv", "get", "-detailed", "web/a"])),
        "CreateIndex      2\nFlags            42\nKey              web/a\nLockIndex        0\n\
         ModifyIndex      2\nSession          -\nValue            1\n"
    );
    assert_eq!(
        ok(&run(&s, &["kv", "get", "-recurse", "web"])),
        "web/a:1\nweb/sub/b:2\n"
    );
    assert_eq!(
        ok(&run(&s, &["kv", "get", "-recurse", "-base64", "web/"])),
        "web/a:MQ==\nweb/sub/b:Mg==\n"
    );
    assert_eq!(ok(&run(&s, &["kv", "get", "-keys", "web/"])), "web/a\nweb/sub/\n");
    assert_eq!(
        ok(&run(&s, &["kv", "get", "-keys", "-separator=", "web/"])),
        "web/a\nweb/sub/b\n"
    );
    assert_eq!(ok(&run(&s, &["kv", "get", "-keys"])), "web/\n");
    assert_eq!(ok(&run(&s, &["kv", "get", "-recurse", "nothing"])), "");
    let detailed = ok(&run(&s, &["kv", "get", "-recurse", "-detailed", "web/"])).to_string();
    assert!(
        detailed.contains("Value            1\n\nCreateIndex      3\n"),
        "{detailed}"
    );
    assert_eq!(ok(&run(&s, &["kv", "get", "-stale", "web/a"])), "1\n");
    let last_read = s
        .fake
        .requests()
        .into_iter()
        .rev()
        .find(|r| matches!(r, Request::KvRead { .. }))
        .unwrap();
    assert_eq!(
        last_read,
        Request::KvRead {
            query: KvQuery::Get { key: "web/a".into() },
            mode: ReadMode::Stale,
            block: None
        }
    );
}

#[test]
fn kv_put_sources_flags_and_cas() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, b"from\nfile").unwrap();
    ok(&run(&s, &["kv", "put", "f", &format!("@{}", file.display())]));
    assert_eq!(s.fake.get("f").unwrap().value.as_ref(), b"from\nfile");
    ok(&run_stdin(&s, &["kv", "put", "-flags", "9", "in", "-"], b"from stdin"));
    let entry = s.fake.get("in").unwrap();
    assert_eq!((entry.value.as_ref(), entry.flags), (&b"from stdin"[..], 9));
    ok(&run(&s, &["kv", "put", "-base64", "b", "aGVsbG8="]));
    assert_eq!(s.fake.get("b").unwrap().value.as_ref(), b"hello");
    ok(&run(&s, &["kv", "put", "dash", "-x"]));
    assert_eq!(
        s.fake.get("dash").unwrap().value.as_ref(),
        b"-x",
        "a dash-prefixed value is literal"
    );

    let index = s.fake.get("b").unwrap().modify_index.to_string();
    let r = run(&s, &["kv", "put", "-cas", "-modify-index=999", "b", "x"]);
    assert_eq!(failed(&r), "Error! Did not write to b: CAS failed\n");
    let r = run(&s, &["kv", "put", "-cas", "-modify-index", &index, "b", "x"]);
    assert_eq!(ok(&r), "Success! Data written to: b\n");
    assert_eq!(
        failed(&run(&s, &["kv", "put", "-cas", "b", "x"])),
        "Must specify -modify-index with -cas!\n"
    );
    assert_eq!(failed(&run(&s, &["kv", "put"])), "Error! Missing KEY argument\n");
    assert_eq!(
        failed(&run(&s, &["kv", "put", "a", "b", "c"])),
        "Error! Too many arguments (expected 1 or 2, got 3)\n"
    );
    assert_eq!(
        failed(&run(&s, &["kv", "put", "-acquire", "k"])),
        "Error! Missing -session (required with -acquire and -release)\n"
    );
    assert_eq!(
        failed(&run(&s, &["kv", "put", "-acquire", "-session=abc", "k"])),
        "Error! Failed writing data: Unexpected response code: 400 (sessions are not supported yet)\n"
    );
}

#[test]
fn kv_delete_variants() {
    let s = server();
    for k in ["a", "t/1", "t/2"] {
        ok(&run(&s, &["kv", "put", k, "v"]));
    }
    assert_eq!(ok(&run(&s, &["kv", "delete", "a"])), "Success! Deleted key: a\n");
    assert!(s.fake.get("a").is_none());
    assert_eq!(
        ok(&run(&s, &["kv", "delete", "-recurse", "t/"])),
        "Success! Deleted keys with prefix: t/\n"
    );
    assert!(s.fake.get("t/1").is_none() && s.fake.get("t/2").is_none());
    ok(&run(&s, &["kv", "put", "c", "v"]));
    let index = s.fake.get("c").unwrap().modify_index.to_string();
    assert_eq!(
        failed(&run(&s, &["kv", "delete", "-cas", "-modify-index=1", "c"])),
        "Error! Did not delete key c: CAS failed\n"
    );
    assert_eq!(
        ok(&run(&s, &["kv", "delete", "-cas", "-modify-index", &index, "c"])),
        "Success! Deleted key: c\n"
    );
    assert_eq!(
        failed(&run(&s, &["kv", "delete", "-modify-index=3", "c"])),
        "Cannot specify -modify-index without -cas!\n"
    );
    assert_eq!(failed(&run(&s, &["kv", "delete"])), "Error! Missing KEY argument\n");
}

#[test]
fn kv_export_and_import_round_trip() {
    let s = server();
    ok(&run(&s, &["kv", "put", "-flags=3", "app/a", "one"]));
    ok(&run(&s, &["kv", "put", "app/b", ""]));
    let exported = ok(&run(&s, &["kv", "export", "app/"])).to_string();
    assert_eq!(
        exported,
        "[\n\t{\n\t\t\"key\": \"app/a\",\n\t\t\"flags\": 3,\n\t\t\"value\": \"b25l\"\n\t},\n\
         \t{\n\t\t\"key\": \"app/b\",\n\t\t\"flags\": 0,\n\t\t\"value\": \"\"\n\t}\n]\n"
    );
    assert_eq!(ok(&run(&s, &["kv", "export", "nothing"])), "[]\n");

    let target = server();
    let r = run_stdin(&target, &["kv", "import", "-"], exported.as_bytes());
    assert_eq!(ok(&r), "Imported: app/a\nImported: app/b\n");
    let a = target.fake.get("app/a").unwrap();
    assert_eq!((a.value.as_ref(), a.flags), (&b"one"[..], 3));
    let r = run(&target, &["kv", "import", r#"[{"Key":"x","Flags":0,"Value":"eA=="}]"#]);
    assert_eq!(ok(&r), "Imported: x\n");
    assert!(failed(&run(&target, &["kv", "import", "not json"])).starts_with("Cannot unmarshal data: "));
    assert_eq!(
        failed(&run(&target, &["kv", "import"])),
        "Error! Missing DATA argument\n"
    );
}

#[test]
fn info_prints_stats_sections_sorted() {
    let s = server();
    let out = ok(&run(&s, &["info"])).to_string();
    let sections: Vec<&str> = out.lines().filter(|l| !l.starts_with('\t')).collect();
    assert_eq!(sections, ["agent:", "build:", "consul:", "raft:", "runtime:"]);
    for line in [
        "\tstate = Leader",
        "\tcommit_index = 42",
        "\tleader = true",
        "\tleader_addr = 127.0.0.1:8300",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    let raft: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "raft:")
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    let mut sorted = raft.clone();
    sorted.sort();
    assert_eq!(raft, sorted);
}

#[test]
fn operator_raft_commands() {
    let s = server();
    assert_eq!(
        ok(&run(&s, &["operator", "raft", "list-peers"])),
        "Node      ID                                    Address         State     Voter  RaftProtocol\n\
         server-1  00000000-0000-0000-0000-000000000001  127.0.0.1:8300  leader    true   3\n\
         server-2  00000000-0000-0000-0000-000000000002  127.0.0.2:8300  follower  false  3\n"
    );
    assert_eq!(
        ok(&run(
            &s,
            &["operator", "raft", "remove-peer", "-address=127.0.0.2:8300"]
        )),
        "Removed peer with address \"127.0.0.2:8300\"\n"
    );
    assert_eq!(
        ok(&run(
            &s,
            &[
                "operator",
                "raft",
                "remove-peer",
                "-id",
                "00000000-0000-0000-0000-000000000002"
            ]
        )),
        "Removed peer with id \"00000000-0000-0000-0000-000000000002\"\n"
    );
    assert_eq!(
        failed(&run(&s, &["operator", "raft", "remove-peer"])),
        "Error removing peer: an address or id is required for the peer to remove\n"
    );
    assert_eq!(
        ok(&run(
            &s,
            &[
                "operator",
                "raft",
                "transfer-leader",
                "-id=00000000-0000-0000-0000-000000000002"
            ]
        )),
        "Success\n"
    );
    assert_eq!(
        failed(&run(&s, &["operator", "raft", "transfer-leader", "-id=bad"])),
        "Error transfering leadership: Failed to transfer leadership Unexpected response code: 400 \
         (invalid node ID \"bad\": want 36 hex characters in the form 8-4-4-4-12)\n"
    );
    assert_eq!(run(&s, &["operator", "raft"]).code, 1);
}

#[test]
fn members_join_force_leave_keygen() {
    let s = server();
    let out = ok(&run(&s, &["members"])).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("Node      Address"), "{out}");
    assert!(
        lines[1].starts_with("server-1  10.0.0.1:8301   alive   server  1.21.0  2"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("client-1  10.0.0.22:8301  failed  client"),
        "{out}"
    );
    let detailed = ok(&run(&s, &["members", "-detailed"])).to_string();
    assert!(detailed.contains("role=consul"), "{detailed}");
    assert_eq!(ok(&run(&s, &["members", "-wan"])).lines().count(), 2);
    assert_eq!(ok(&run(&s, &["members", "-status", "failed"])).lines().count(), 2);

    assert_eq!(
        ok(&run(&s, &["join", "10.0.0.5", "10.0.0.6"])),
        "Successfully joined cluster by contacting 2 nodes.\n"
    );
    let r = run(&s, &["join", "192.0.2.1"]);
    assert_eq!(r.code, 1);
    assert!(
        r.err.contains("Error joining address '192.0.2.1'") && r.err.contains("Failed to join any nodes."),
        "{}",
        r.err
    );

    assert_eq!(ok(&run(&s, &["force-leave", "-prune", "client-1"])), "");
    assert!(failed(&run(&s, &["force-leave", "ghost"])).contains("No node found with name 'ghost'"));
    assert!(failed(&run(&s, &["force-leave"])).contains("A single node name"));

    let key = ok(&run(&s, &["keygen"])).trim().to_string();
    assert_eq!(crate::gossip::parse_key(&key).unwrap().len(), 32);
    assert!(failed(&run(&s, &["keyring", "-list"])).contains("not configured"));
}

#[test]
fn leave_and_version() {
    let s = server();
    assert_eq!(ok(&run(&s, &["leave"])), "Graceful leave complete\n");
    assert!(s.fake.left.load(Ordering::SeqCst));
    let v = ok(&run(&s, &["version"])).to_string();
    assert_eq!(
        v,
        format!(
            "Consul v{}-compatible concord {}\nProtocol 2 spoken by default, understands 2 to 3 \
             (agent will automatically use protocol >2 when speaking to compatible agents)\n",
            crate::http::CONSUL_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION")
        )
    );
}

#[test]
fn errors_are_one_line_on_stderr() {
    let s = server();
    s.fake.fail_next(ApiError::NoLeader);
    assert_eq!(
        failed(&run(&s, &["kv", "get", "x"])),
        "Error querying Consul agent: Unexpected response code: 500 (No cluster leader)\n"
    );
    s.fake.fail_next(ApiError::NoLeader);
    assert_eq!(
        failed(&run(&s, &["kv", "put", "x", "y"])),
        "Error! Failed writing data: Unexpected response code: 500 (No cluster leader)\n"
    );
    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = run_env(
        &["kv", "get", &format!("-http-addr=127.0.0.1:{port}"), "x"],
        b"",
        &|_| None,
    );
    let err = failed(&r);
    assert!(
        err.starts_with(&format!(
            "Error querying Consul agent: GET \"http://127.0.0.1:{port}/v1/kv/x\": "
        )),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let r = run(&s, &["kv", "get", "-nope", "x"]);
    assert_eq!(
        failed(&r),
        "flag provided but not defined: -nope (run with -help for usage)\n"
    );
    let r = run(&s, &["kv", "get", "-h"]);
    assert_eq!(r.code, 0);
    assert!(r.out.starts_with("Usage: concord kv get"));
    assert_eq!(run(&s, &["bogus"]).code, 1);
    assert_eq!(run(&s, &[]).code, 1);
}

#[test]
fn token_datacenter_and_escaping_reach_the_wire() {
    // A one-shot HTTP server that records the request head.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ntrue")
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let env = move |k: &str| match k {
        "CONSUL_HTTP_ADDR" => Some(addr.to_string()),
        "CONSUL_HTTP_TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    let r = run_env(&["kv", "delete", "-datacenter=dc1", "a b/c?d"], b"", &env);
    assert_eq!((r.code, r.out.as_str()), (0, "Success! Deleted key: a b/c?d\n"));
    let head = server.join().unwrap();
    assert!(
        head.starts_with("DELETE /v1/kv/a%20b/c%3Fd?dc=dc1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("\r\nx-consul-token: s3cret\r\n"),
        "{head}"
    );
}

#[test]
fn agent_command_reports_config_errors() {
    // The agent's flags are parsed by the config module; whatever it rejects is one line and exit 1.
    let r = run_env(&["agent", "-definitely-not-a-flag"], b"", &|_| None);
    assert_eq!(r.code, 1);
    assert!(r.err.starts_with("==> "), "{}", r.err);
    assert_eq!(r.err.lines().count(), 1);
}
