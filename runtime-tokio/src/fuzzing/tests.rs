//! Replays the committed corpus of every runtime fuzz target (`fuzz/corpus/<target>/`) through the same
//! checks cargo-fuzz runs, so plain `cargo test` exercises them. A missing or empty corpus fails.
//!
//! `cargo test -p concord --lib fuzzing::tests::write_seed_corpus -- --ignored` regenerates the seeds.

use super::{Check, GOSSIP_KEYS, SNAPSHOT_NAME, TARGETS};
use concord_core::fuzzing::{find_target, replay_inputs};
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn target_fn(target: &str) -> Check {
    find_target(TARGETS, target)
}

fn replay(target: &str) {
    replay_inputs(TARGETS, target, &corpus_files(target));
}

/// Every file of the target's committed corpus, sorted by path, as (path, bytes).
fn corpus_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable corpus file"),
            )
        })
        .collect()
}

#[test]
fn config_file_corpus() {
    replay("config_file");
}

#[test]
fn storage_record_corpus() {
    replay("storage_record");
}

#[test]
fn gossip_sealed_corpus() {
    replay("gossip_sealed");
}

#[test]
fn http_request_corpus() {
    replay("http_request");
}

#[test]
fn user_event_corpus() {
    replay("user_event");
}

#[test]
fn http_wire_corpus() {
    replay("http_wire");
}

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "config_file",
            "storage_record",
            "gossip_sealed",
            "http_request",
            "user_event",
            "http_wire"
        ]
    );
    for key in GOSSIP_KEYS {
        crate::gossip::parse_key(key).expect("fuzz keyring keys are valid");
    }
}

// ---- seed corpus generator ----------------------------------------------------------------------------

#[test]
#[ignore = "generator: run by hand to refresh the seed corpus"]
fn write_seed_corpus() {
    type Seeds = fn() -> Vec<(&'static str, Vec<u8>)>;
    let seeds: [(&str, Seeds); 6] = [
        ("config_file", config_seeds),
        ("storage_record", storage_seeds),
        ("gossip_sealed", sealed_seeds),
        ("http_request", http_seeds),
        ("user_event", user_event_seeds),
        ("http_wire", wire_seeds),
    ];
    for (target, make) in seeds {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (name, data) in make() {
            target_fn(target)(&data);
            std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
        }
    }
}

fn text(pick: u8, s: &str) -> Vec<u8> {
    [vec![pick], s.as_bytes().to_vec()].concat()
}

fn config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "json-server",
            text(
                0,
                r#"{"server": true, "bootstrap_expect": 3, "data_dir": "/tmp/x", "node_name": "s1",
                   "datacenter": "dc1", "bind_addr": "127.0.0.1", "client_addr": "127.0.0.1 ::1",
                   "ports": {"http": 8500, "dns": -1}, "retry_join": ["127.0.0.2"],
                   "limits": {"http_max_conns_per_client": 500, "kv_max_value_size": 1024},
                   "node_meta": {"rack": "a"}, "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
                   "service": {"name": "web", "port": 80, "tags": ["a"],
                               "check": {"http": "http://127.0.0.1/", "interval": "10s"}}}"#,
            ),
        ),
        (
            "hcl-server",
            text(
                1,
                "server = true\nbootstrap = true\ndata_dir = \"/tmp/x\"\nnode_name = \"s1\"\n\
                 ports {\n  http = 8500\n}\nlimits {\n  http_max_conns_per_client = 10\n}\n\
                 service {\n  name = \"web\"\n  port = 80\n}\nservice {\n  name = \"db\"\n}\n\
                 check {\n  id = \"c\"\n  ttl = \"30s\"\n}\n",
            ),
        ),
        (
            "json-wrong-type",
            text(0, r#"{"server": "yes", "ports": {"http": "x"}}"#),
        ),
        ("json-unknown-key", text(0, r#"{"no_such_key": 1}"#)),
        ("json-top-level-array", text(0, "[1, 2]")),
        ("json-truncated", text(0, r#"{"server": tr"#)),
        ("json-deep", text(0, &format!("{}{}", "[".repeat(200), "]".repeat(200)))),
        ("hcl-bad", text(1, "server = = true\n")),
        ("hcl-heredoc", text(1, "node_name = <<EOF\nx\nEOF\n")),
        (
            "json-bad-duration",
            text(0, r#"{"check": {"ttl": "10parsecs"}, "data_dir": "/tmp"}"#),
        ),
        ("empty", Vec::new()),
    ]
}

fn storage_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::storage::codec::encode_checked;
    use crate::storage::snapshot_file::file_header;
    use concord_core::raft::{Entry, HardState, Payload, Snapshot, SnapshotMeta};
    use concord_core::state::{Command, StateMachine};
    let cmd = Command::KvSet {
        key: "a".into(),
        value: bytes::Bytes::from_static(b"v"),
        flags: 0,
        cas: None,
    };
    let entry = Entry {
        term: 2,
        index: 7,
        payload: Payload::Command(cmd.encode()),
    };
    let noop = Entry {
        term: 2,
        index: 8,
        payload: Payload::Noop,
    };
    let hs = HardState {
        term: 3,
        vote: Some(concord_core::NodeId(5)),
    };
    let mut sm = StateMachine::default();
    sm.apply(3, &cmd, &mut concord_core::state::Changes::default());
    let (term, index) = SNAPSHOT_NAME;
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            ..SnapshotMeta::default()
        },
        data: sm.snapshot(),
    };
    let body = postcard::to_allocvec(&snapshot).unwrap();
    let file = [file_header(&body).as_slice(), &body].concat();
    let mut flipped = file.clone();
    *flipped.last_mut().unwrap() ^= 0x40;
    let mut bad_entry = encode_checked(&entry);
    bad_entry[5] ^= 1;
    vec![
        ("log-entry", encode_checked(&entry)),
        ("log-noop", encode_checked(&noop)),
        ("hard-state", encode_checked(&hs)),
        ("snapshot-file", file.clone()),
        ("snapshot-truncated", file[..file.len() - 3].to_vec()),
        ("snapshot-bit-flip", flipped),
        ("log-entry-bit-flip", bad_entry),
        ("short", vec![1, 2]),
        ("empty", Vec::new()),
    ]
}

fn sealed_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use concord_core::gossip::wire::{assemble_packet, encode_message};
    use concord_core::gossip::Message;
    let ping = encode_message(&Message::Ping {
        seq: 1,
        target: "n".into(),
    });
    let packet = assemble_packet([ping.as_slice()]);
    let ring = crate::gossip::Keyring::new(crate::gossip::parse_key(GOSSIP_KEYS[1]).unwrap(), None);
    vec![
        ("plain-ping", packet.clone()),
        ("sealed-with-second-key", ring.encrypt(&packet)),
        ("version-only", vec![1]),
        ("empty", Vec::new()),
    ]
}

fn user_event_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::agent::events::{encode_event, UserEvent};
    let event = |node: &str, service: &str, tag: &str| {
        encode_event(&UserEvent {
            id: "0b6d2e4a-6c2e-4b0e-9d3c-2f1a6e8b7c5d".into(),
            name: "deploy".into(),
            payload: b"v2".to_vec(),
            node_filter: node.into(),
            service_filter: service.into(),
            tag_filter: tag.into(),
            version: 1,
            ltime: 0,
        })
    };
    vec![
        ("plain", event("", "", "")),
        ("filters", event("^node-[0-9]+$", "web|api", "v1")),
        ("bad-regex", event("(", "[", "")),
        ("big-repeat", event("a{1000}{1000}", "", "")),
    ]
}

fn http_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Method bytes: 0 GET, 1 PUT, 2 DELETE, 3 POST.
    let req = |m: u8, rest: &str| text(m, rest);
    vec![
        ("kv-put", req(1, "kv/a/b?flags=3&cas=0\n\nvalue")),
        (
            "txn-kv",
            req(
                1,
                "txn\n\n[{\"KV\":{\"Verb\":\"set\",\"Key\":\"a\",\"Value\":\"aGk=\",\"Flags\":1}},\
                 {\"KV\":{\"Verb\":\"cas\",\"Key\":\"a\",\"Index\":0}},{\"kv\":{\"verb\":\"get-tree\",\"key\":\"\"}},\
                 {\"KV\":{\"Verb\":\"delete-tree\"}},{\"KV\":{\"Verb\":\"lock\",\"Key\":\"l\",\"Session\":\"s\"}}]",
            ),
        ),
        (
            "txn-bad",
            req(
                1,
                "txn\n\n[{\"KV\":{\"Verb\":\"nope\",\"Value\":\"!\"}},null,{\"Node\":{}}]",
            ),
        ),
        (
            "event-fire",
            req(1, "event/fire/deploy?node=.&service=web&tag=v1\n\npayload"),
        ),
        ("event-fire-bad-filter", req(1, "event/fire/x?node=(")),
        ("event-list-blocking", req(0, "event/list?name=deploy&index=1&wait=1s")),
        ("kv-get-recurse", req(0, "kv/a?recurse&stale=&dc=dc1")),
        ("kv-keys-separator", req(0, "kv/?keys&separator=%2F")),
        ("kv-raw", req(0, "kv/a?raw")),
        ("kv-blocking", req(0, "kv/a?index=1&wait=60000ms")),
        ("kv-blocking-hang", req(0, "kv/hang?index=5&wait=10m")),
        ("kv-delete-cas", req(2, "kv/a?cas=0&recurse")),
        ("kv-encoded-newline", req(1, "kv/a%0ab\n\nx")),
        ("kv-dotdot", req(0, "kv/../agent/self")),
        (
            "kv-too-big",
            req(1, &format!("kv/big\ncontent-length: 5000\n\n{}", "x".repeat(5000))),
        ),
        ("kv-bad-dc", req(0, "kv/a?dc=other")),
        ("conflicting-modes", req(0, "kv/a?stale&consistent")),
        (
            "catalog-register",
            req(
                1,
                "catalog/register\ncontent-type: application/json\n\n{\"Node\":\"n1\",\"Address\":\"10.0.0.1\",\
                 \"Service\":{\"Service\":\"web\",\"Port\":80,\"Tags\":[\"a\"],\"Meta\":{\"k\":\"v\"}},\
                 \"Check\":{\"CheckID\":\"c\",\"Status\":\"passing\"}}",
            ),
        ),
        (
            "catalog-service",
            req(
                0,
                "catalog/service/web?tag=a&near=_agent&node-meta=k:v&filter=Port%3D%3D80",
            ),
        ),
        ("health-service", req(0, "health/service/web?passing=1&index=1&wait=5s")),
        (
            "agent-service-register",
            req(
                1,
                "agent/service/register\n\n{\"name\":\"web\",\"port\":80,\"enable_tag_override\":true,\
                 \"check\":{\"ttl\":\"30s\",\"DeregisterCriticalServiceAfter\":\"1m\"}}",
            ),
        ),
        ("agent-check-pass", req(1, "agent/check/pass/service:web?note=ok")),
        ("agent-self", req(0, "agent/self")),
        ("status-leader", req(0, "status/leader")),
        ("bad-json", req(1, "agent/service/register\n\n{\"name\":")),
        (
            "duplicate-headers",
            req(1, "kv/d\nX-Consul-Token: a\nx-consul-token: b\n\nv"),
        ),
        ("not-found", req(0, "/nope")),
        ("empty", Vec::new()),
    ]
}

fn wire_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("get-keep-alive", b"GET /v1/kv/a?index=3&wait=5m HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("put-length", b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nvalueGET / HTTP/1.1\r\n\r\n".to_vec()),
        ("put-chunked", b"PUT /v1/kv/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 100\r\n\r\n3\r\nabc\r\na;x=y\r\n0123456789\r\n0\r\nT: v\r\n\r\n".to_vec()),
        ("chunked-bad-crlf", b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n".to_vec()),
        ("duplicate-length", b"PUT / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nevil!".to_vec()),
        ("expect-continue", b"PUT /v1/kv/e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok".to_vec()),
        ("http10", b"GET /v1/status/leader HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec()),
        ("absolute-form", b"GET http://x/v1/agent/self HTTP/1.1\r\n\r\n".to_vec()),
    ]
}
