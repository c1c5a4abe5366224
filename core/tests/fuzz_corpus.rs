//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`) through the same checks the
//! cargo-fuzz targets run (`concord_core::fuzzing`), so CI exercises the corpora on stable without
//! cargo-fuzz. A missing or empty corpus directory fails: a lost corpus must not pass silently.
//!
//! `cargo test -p concord-core --test fuzz_corpus -- --ignored write_seed_corpus` regenerates the seed
//! files (`seed-*`; `SEED_TARGETS=a,b` limits it to those targets); entries the fuzzers found keep their
//! hash names.
// The test reads corpus files from disk; core's I/O ban (clippy.toml) is for the library, not its tests.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use concord_core::api::{Blocking, KvQuery, KvResult, QueryMeta, ReadMode, Request, Response};
use concord_core::fuzzing::{self, find_target, replay_inputs, Check, Op, TARGETS};
use concord_core::gossip::wire::{assemble_packet, encode_message, encode_push_pull};
use concord_core::gossip::{MemberRecord, MemberState, Message as GossipMessage, PushPull, Tags};
use concord_core::raft::{Entry, Membership, Message, Payload, ServerInfo, SnapshotMeta};
use concord_core::state::{Command, CommandResult, KvEntry, KvTxnOp, KvVerb, StateMachine, TxnOp};
use concord_core::wire::{encode_frame, Frame, WIRE_VERSION};
use concord_core::{NodeId, PeerMessage};
use std::path::PathBuf;
use std::time::Duration;

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
fn rpc_frame_corpus() {
    replay("rpc_frame");
}

#[test]
fn state_snapshot_corpus() {
    replay("state_snapshot");
}

#[test]
fn command_corpus() {
    replay("command");
}

#[test]
fn go_duration_corpus() {
    replay("go_duration");
}

#[test]
fn cluster_schedule_corpus() {
    replay("cluster_schedule");
}

#[test]
fn dns_packet_corpus() {
    replay("dns_packet");
}

#[test]
fn gossip_packet_corpus() {
    replay("gossip_packet");
}

#[test]
fn gossip_push_pull_corpus() {
    replay("gossip_push_pull");
}

#[test]
fn template_corpus() {
    replay("template");
}

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        [
            "rpc_frame",
            "state_snapshot",
            "command",
            "go_duration",
            "cluster_schedule",
            "dns_packet",
            "gossip_packet",
            "gossip_push_pull",
            "template"
        ]
    );
}

// ---- seed corpus generator ----------------------------------------------------------------------------

/// Writes the hand-made seed inputs (valid encodings and edge cases) into `fuzz/corpus/<target>/seed-*`.
#[test]
#[ignore = "generator: run by hand to refresh the seed corpus"]
fn write_seed_corpus() {
    type Seeds = fn() -> Vec<(&'static str, Vec<u8>)>;
    let seeds: [(&str, Seeds); 9] = [
        ("rpc_frame", rpc_frame_seeds),
        ("state_snapshot", state_snapshot_seeds),
        ("command", command_seeds),
        ("go_duration", go_duration_seeds),
        ("cluster_schedule", cluster_schedule_seeds),
        ("gossip_packet", gossip_packet_seeds),
        ("gossip_push_pull", gossip_push_pull_seeds),
        ("template", template_seeds),
        ("dns_packet", dns_packet_seeds),
    ];
    // `SEED_TARGETS=a,b` regenerates only those targets' seeds. Without it, every target but
    // state_snapshot: its committed seeds are format-1 snapshots on purpose (catalog_tests'
    // `fences_survive_a_snapshot_and_format_1_snapshots_still_restore` restores them), and this generator
    // writes the current format.
    let only = std::env::var("SEED_TARGETS").ok();
    let seeds = seeds
        .into_iter()
        .filter(|(t, _)| match only.as_deref() {
            Some(o) => o.split(',').any(|x| x == *t),
            None => *t != "state_snapshot",
        })
        .map(|(t, f)| (t, f()));
    for (target, inputs) in seeds {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (name, data) in inputs {
            // Every seed must pass its own target before it is committed.
            target_fn(target)(&data);
            std::fs::write(dir.join(format!("seed-{name}")), data).expect("write seed");
        }
    }
}

fn id(i: u128) -> NodeId {
    NodeId(0x1000 + i)
}

fn set(key: &str, value: &str, cas: Option<u64>) -> Command {
    Command::KvSet {
        key: key.into(),
        value: Bytes::from(value.to_string()),
        flags: 42,
        cas,
    }
}

fn membership() -> Membership {
    Membership {
        servers: (0..3)
            .map(|i| {
                let info = ServerInfo {
                    name: format!("s{i}"),
                    address: format!("10.0.0.{i}:8300"),
                    voter: i != 2,
                };
                (id(i), info)
            })
            .collect(),
    }
}

fn entry() -> KvEntry {
    KvEntry {
        key: "dir/x".into(),
        create_index: 5,
        modify_index: 9,
        lock_index: 1,
        flags: 42,
        value: Bytes::from_static(b"hello"),
        session: Some("adf4238a-882b-9ddc-4a9d-5b6758e4159e".into()),
    }
}

fn rpc_frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let meta = QueryMeta {
        index: 12,
        known_leader: true,
        last_contact_ms: 3,
        consistency: ReadMode::Consistent,
    };
    let entries = vec![
        Entry {
            term: 1,
            index: 1,
            payload: Payload::Config(membership()),
        },
        Entry {
            term: 2,
            index: 2,
            payload: Payload::Noop,
        },
        Entry {
            term: 2,
            index: 3,
            payload: Payload::Command(set("a", "1", None).encode()),
        },
    ];
    let raft = |m: Message| Frame::Peer(PeerMessage::Raft(m));
    let frames: Vec<(&str, Frame)> = vec![
        (
            "hello",
            Frame::Hello {
                id: id(1),
                name: "s1".into(),
                address: "10.0.0.1:8300".into(),
                datacenter: "dc1".into(),
                servers: vec![(id(2), "s2".into(), "10.0.0.2:8300".into())],
            },
        ),
        (
            "prevote",
            raft(Message::PreVote {
                term: 3,
                last_index: 7,
                last_term: 2,
            }),
        ),
        (
            "vote",
            raft(Message::Vote {
                term: 3,
                last_index: 7,
                last_term: 2,
                transfer: true,
            }),
        ),
        ("vote-response", raft(Message::VoteResponse { term: 3, granted: true })),
        (
            "append",
            raft(Message::Append {
                term: 2,
                prev_index: 0,
                prev_term: 0,
                entries,
                commit: 1,
                round: 4,
            }),
        ),
        (
            "append-response",
            raft(Message::AppendResponse {
                term: 2,
                success: false,
                index: 3,
                round: 4,
            }),
        ),
        (
            "install-snapshot",
            raft(Message::InstallSnapshot {
                term: 2,
                meta: SnapshotMeta {
                    index: 9,
                    term: 2,
                    membership: membership(),
                    digest: 0xdead_beef,
                },
                offset: 0,
                data: fuzzing::command_start_state().snapshot(),
                done: true,
                round: 5,
            }),
        ),
        ("timeout-now", raft(Message::TimeoutNow { term: 4 })),
        (
            "forward-write",
            Frame::Peer(PeerMessage::Forward {
                id: 7,
                req: Request::Write(set("k", "v", Some(0))),
            }),
        ),
        (
            "read-index",
            Frame::Peer(PeerMessage::ReadIndexReply { id: 7, index: Some(12) }),
        ),
        (
            "call-blocking-read",
            Frame::Call {
                id: 1,
                req: Request::KvRead {
                    query: KvQuery::Keys {
                        prefix: "dir/".into(),
                        separator: Some("/".into()),
                    },
                    mode: ReadMode::Stale,
                    block: Some(Blocking {
                        min_index: 10,
                        wait: Duration::from_millis(1500),
                    }),
                },
            },
        ),
        (
            "call-add-server",
            Frame::Call {
                id: 2,
                req: Request::AddServer {
                    id: id(3),
                    name: "s3".into(),
                    address: "10.0.0.3:8300".into(),
                },
            },
        ),
        (
            "reply-kv",
            Frame::Reply {
                id: 1,
                resp: Response::Kv {
                    meta,
                    result: KvResult::Entries(vec![entry()]).into(),
                },
            },
        ),
        (
            "reply-written",
            Frame::Reply {
                id: 3,
                resp: Response::Written {
                    index: 5,
                    result: CommandResult::Bool(true),
                },
            },
        ),
        (
            "reply-error",
            Frame::Reply {
                id: 4,
                resp: Response::Error(concord_core::api::ApiError::BadRequest("bad".into())),
            },
        ),
    ];
    let mut seeds: Vec<(&str, Vec<u8>)> = frames.iter().map(|(n, f)| (*n, encode_frame(f))).collect();
    let hello = encode_frame(&frames[0].1);
    let append = encode_frame(&frames[4].1);
    let mut stream = hello.clone();
    stream.extend_from_slice(&append);
    stream.extend_from_slice(&encode_frame(&frames[3].1));
    seeds.push(("stream-of-three", stream));
    seeds.push(("empty", Vec::new()));
    seeds.push(("short-prefix", vec![0, 0, 1]));
    seeds.push(("zero-length", vec![0, 0, 0, 0]));
    seeds.push(("oversized-length", vec![0xff, 0xff, 0xff, 0xff, WIRE_VERSION, 0]));
    seeds.push(("just-over-max", vec![0x00, 0x80, 0x00, 0x01, WIRE_VERSION]));
    let mut wrong_version = hello.clone();
    wrong_version[4] = WIRE_VERSION + 1;
    seeds.push(("wrong-version", wrong_version));
    seeds.push(("truncated-body", append[..append.len() / 2].to_vec()));
    let mut trailing = hello.clone();
    trailing.push(0);
    let len = (trailing.len() - 4) as u32;
    trailing[..4].copy_from_slice(&len.to_be_bytes());
    seeds.push(("trailing-byte-in-frame", trailing));
    seeds.push(("bad-variant", vec![0, 0, 0, 2, WIRE_VERSION, 0x7f]));
    seeds.push((
        "huge-vec-length",
        vec![0, 0, 0, 8, WIRE_VERSION, 1, 4, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ));
    seeds
}

fn state_snapshot_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut one = StateMachine::default();
    one.apply(3, &set("a", "x", None), &mut concord_core::state::Changes::default());
    // The KV part of a snapshot: [entries: 1][entry "a"…][tombstones: 0][reap floor 0]; spliced to make
    // duplicates and clashes, then wrapped as a whole snapshot (format byte, KV bytes, catalog bytes).
    let kv = one.kv.encode();
    let wrap = |kv: &[u8]| {
        let catalog = concord_core::state::CatalogStore::default().encode();
        let mut out = vec![concord_core::state::SNAPSHOT_FORMAT];
        for part in [kv, &catalog[..]] {
            let mut len = part.len();
            while len >= 0x80 {
                out.push((len as u8) | 0x80);
                len >>= 7;
            }
            out.push(len as u8);
            out.extend_from_slice(part);
        }
        out
    };
    let one = one.snapshot().to_vec();
    let entry_bytes = &kv[1..kv.len() - 2];
    let mut duplicate = vec![2];
    duplicate.extend_from_slice(entry_bytes);
    duplicate.extend_from_slice(entry_bytes);
    duplicate.extend_from_slice(&[0, 0]);
    let mut live_and_dead = vec![1];
    live_and_dead.extend_from_slice(entry_bytes);
    live_and_dead.extend_from_slice(&[1, 1, b'a', 5, 0]);
    let mut big = StateMachine::default();
    for i in 0..20u64 {
        big.apply(
            i + 2,
            &set(&format!("svc/{}/k{i}", i % 3), &"v".repeat(i as usize), None),
            &mut concord_core::state::Changes::default(),
        );
    }
    big.apply(
        30,
        &Command::KvDeleteTree {
            prefix: "svc/1/".into(),
        },
        &mut concord_core::state::Changes::default(),
    );
    let (duplicate, live_and_dead) = (wrap(&duplicate), wrap(&live_and_dead));
    for bad in [&duplicate, &live_and_dead] {
        let err = StateMachine::restore(bad).expect_err("spliced snapshot is rejected");
        assert!(
            err.to_string().contains("duplicate"),
            "rejected for the splice, not a typo: {err}"
        );
    }
    let full = fuzzing::command_start_state().snapshot().to_vec();
    let mut trailing = full.clone();
    trailing.push(0);
    vec![
        ("empty-state", StateMachine::default().snapshot().to_vec()),
        ("one-entry", one.clone()),
        ("entries-tombstones-floor", full.clone()),
        ("twenty-keys", big.snapshot().to_vec()),
        ("empty", Vec::new()),
        ("truncated", full[..full.len() / 2].to_vec()),
        ("trailing-byte", trailing),
        ("duplicate-key", duplicate),
        ("live-and-tombstoned", live_and_dead),
        ("huge-entry-count", wrap(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0])),
        ("invalid-utf8-key", wrap(&[1, 1, 0xc3, 1, 1, 0, 0, 0, 0, 0, 0])),
        ("unknown-format", {
            let mut future = full.clone();
            future[0] = concord_core::state::SNAPSHOT_FORMAT + 1;
            future
        }),
    ]
}

fn txn(ops: &[(KvVerb, &str, u64)]) -> Command {
    Command::Txn(
        ops.iter()
            .map(|&(verb, key, index)| {
                TxnOp::Kv(KvTxnOp {
                    verb,
                    key: key.into(),
                    value: Bytes::from_static(b"v"),
                    flags: 0,
                    index,
                    session: String::new(),
                })
            })
            .collect(),
    )
}

fn command_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let cmds = [
        ("set-new", set("new", "v", None)),
        ("set-existing", set("a", "v", None)),
        ("set-cas-create", set("a", "v", Some(0))),
        ("set-cas-hit", set("dir/x", "v", Some(10))),
        ("set-cas-miss", set("dir/y", "v", Some(5))),
        ("set-over-tombstone", set("gone", "v", None)),
        (
            "delete",
            Command::KvDelete {
                key: "dir/y".into(),
                cas: None,
            },
        ),
        (
            "delete-cas-hit",
            Command::KvDelete {
                key: "dir/x".into(),
                cas: Some(10),
            },
        ),
        (
            "delete-absent",
            Command::KvDelete {
                key: "nope".into(),
                cas: Some(0),
            },
        ),
        ("delete-tree", Command::KvDeleteTree { prefix: "dir/".into() }),
        ("delete-tree-all", Command::KvDeleteTree { prefix: String::new() }),
        ("reap", Command::KvReapTombstones { up_to: 8 }),
        ("reap-max", Command::KvReapTombstones { up_to: u64::MAX }),
        (
            "txn-commit",
            txn(&[
                (KvVerb::Cas, "dir/x", 10),
                (KvVerb::Set, "new", 0),
                (KvVerb::DeleteTree, "dir/", 0),
            ]),
        ),
        (
            "txn-rollback",
            txn(&[
                (KvVerb::Delete, "a", 0),
                (KvVerb::Get, "a", 0),
                (KvVerb::CheckIndex, "dir/y", 1),
            ]),
        ),
        (
            "sync-register",
            Command::CatalogRegister(Box::new(concord_core::state::Registration {
                node: "n1".into(),
                address: "10.0.0.1".into(),
                service: Some(concord_core::state::ServiceInstance {
                    id: "web1".into(),
                    service: "web".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .fenced(concord_core::state::SyncSeq { epoch: 1, round: 2 }),
        ),
        (
            "sync-deregister",
            Command::CatalogDeregister {
                node: "n1".into(),
                service_id: Some("web1".into()),
                check_id: None,
            }
            .fenced(concord_core::state::SyncSeq { epoch: 1, round: 3 }),
        ),
        (
            "coordinate-update",
            Command::CoordinateBatchUpdate(vec![concord_core::state::CoordinateUpdate {
                node: "n1".into(),
                coord: concord_core::coordinate::Coordinate::new(&Default::default()),
            }]),
        ),
    ];
    let mut seeds: Vec<(&str, Vec<u8>)> = cmds.iter().map(|(n, c)| (*n, c.encode().to_vec())).collect();
    let set_bytes = cmds[0].1.encode().to_vec();
    let mut trailing = set_bytes.clone();
    trailing.push(0);
    seeds.extend([
        ("empty", Vec::new()),
        ("bad-variant", vec![9]),
        ("truncated", set_bytes[..set_bytes.len() - 2].to_vec()),
        ("trailing-byte", trailing),
        ("huge-key-length", vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        ("invalid-utf8-key", vec![2, 2, 0xff, 0xfe]),
        (
            "overlong-varint",
            vec![3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ]);
    seeds
}

fn go_duration_seeds() -> Vec<(&'static str, Vec<u8>)> {
    [
        ("ms", "60000ms"),
        ("compound", "1h15m30.5s"),
        ("zero", "0"),
        ("plus", "+5s"),
        ("minus", "-5s"),
        ("leading-dot", ".5s"),
        ("trailing-dot", "1.s"),
        ("micro-sign", "10µs"),
        ("greek-mu", "10μs"),
        ("empty", ""),
        ("no-unit", "5"),
        ("overflow", "99999999999999999999h"),
        ("long-fraction", "1.0000000000000000000000000000000000009s"),
        ("u64-seconds", "18446744073709551615s"),
        ("u64-seconds-plus-one", "18446744073709551616s"),
        ("repeated-unit", "1h1h"),
        ("exponent", "1e3s"),
        ("sub-nanosecond", "0.9ns"),
        ("two-dots", "1..2s"),
        ("unit-only", "ms"),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.as_bytes().to_vec()))
    .collect()
}

fn cluster_schedule_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let settle = |rounds| Op::Settle { rounds };
    let writes = |n: u8| {
        (0..n)
            .map(|i| Op::Write {
                node: i % 3,
                kind: i % 6,
            })
            .collect::<Vec<_>>()
    };
    let mut elect_and_write = vec![settle(15), settle(15)];
    elect_and_write.extend(writes(3));
    elect_and_write.extend([settle(15), Op::Read { node: 0, mode: 0 }, Op::Read { node: 1, mode: 1 }]);
    elect_and_write.extend([Op::Read { node: 2, mode: 2 }, settle(15)]);

    let mut crash_restart = vec![settle(15), settle(15)];
    crash_restart.extend(writes(4));
    crash_restart.extend([Op::DeliverAll, Op::Sync { node: 1 }, Op::Crash { node: 0 }, settle(15)]);
    crash_restart.extend([Op::Crash { node: 1 }, Op::Restart { node: 0 }, settle(15), settle(15)]);
    crash_restart.extend(writes(2));
    crash_restart.extend([settle(15), Op::Restart { node: 1 }, settle(15), settle(15)]);

    let mut snapshots = vec![settle(15), settle(15), Op::Crash { node: 2 }];
    for _ in 0..6 {
        snapshots.extend(writes(4));
        snapshots.push(settle(3));
    }
    snapshots.extend([Op::Restart { node: 2 }, settle(15), settle(15), settle(15)]);

    let mut members = vec![settle(15), settle(15)];
    for kind in 0..6 {
        members.extend([
            Op::Membership { node: 0, kind },
            Op::Membership { node: 1, kind },
            settle(15),
        ]);
    }
    members.extend(writes(3));
    members.push(settle(15));

    let mut chaos = vec![Op::Advance { steps: 15 }];
    for i in 0..40u8 {
        chaos.extend([
            Op::Deliver { at: i % 16 },
            Op::Duplicate { at: i % 5 },
            Op::Drop { at: i % 7 },
            Op::SyncOldest { node: i % 3 },
            Op::DeliverTo { node: (i + 1) % 3 },
            Op::Advance { steps: i % 4 },
            Op::Write {
                node: i % 3,
                kind: i % 6,
            },
        ]);
        if i % 10 == 9 {
            chaos.extend([
                Op::Crash { node: i % 3 },
                Op::Tick { node: i % 3 },
                Op::Restart { node: i % 3 },
            ]);
        }
    }
    let mut storage_failure = vec![settle(15), settle(15)];
    storage_failure.extend(writes(3));
    storage_failure.extend([
        Op::DeliverAll,
        Op::StorageFails { node: 0 },
        Op::StorageFails { node: 1 },
    ]);
    storage_failure.extend([settle(15), Op::Crash { node: 0 }, Op::Restart { node: 0 }, settle(15)]);
    storage_failure.extend(writes(3));
    storage_failure.extend([settle(15), Op::Crash { node: 1 }, Op::Restart { node: 1 }, settle(15)]);
    let encode = |ops: Vec<Op>| ops.into_iter().map(Op::encode).collect::<Vec<u8>>();
    vec![
        ("empty", Vec::new()),
        ("elect-and-write", encode(elect_and_write)),
        ("crash-restart", encode(crash_restart)),
        ("snapshot-catch-up", encode(snapshots)),
        ("membership", encode(members)),
        ("chaos", encode(chaos)),
        ("storage-failure", encode(storage_failure)),
    ]
}

/// DNS requests: every name form and type the server answers, EDNS0, then the malformed shapes (short,
/// truncated question, bad label length, compression loop, several questions, a response, other opcodes).
fn dns_packet_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use hickory_proto::op::{Edns, Message as Dns, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let q = |name: &str, t: RecordType| {
        let mut m = Dns::new(0x1234, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m
    };
    let mut seeds: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let forms = [
        ("service-a", "web.service.consul.", RecordType::A),
        ("service-srv", "web.service.dc1.consul.", RecordType::SRV),
        ("tag", "t1.web.service.consul.", RecordType::A),
        ("rfc2782", "_web._t1.service.consul.", RecordType::SRV),
        ("rfc2782-tcp", "_web._tcp.consul.", RecordType::SRV),
        ("node", "n1.node.consul.", RecordType::ANY),
        ("node-txt", "n1.node.dc1.consul.", RecordType::TXT),
        ("addr", "0a000001.addr.consul.", RecordType::A),
        (
            "addr6",
            "fd00000000000000000000000000000b.addr.consul.",
            RecordType::AAAA,
        ),
        ("query", "x.query.consul.", RecordType::A),
        ("ptr", "1.0.0.10.in-addr.arpa.", RecordType::PTR),
        (
            "ptr6",
            "b.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
            RecordType::PTR,
        ),
        ("soa", "consul.", RecordType::SOA),
        ("ns", "consul.", RecordType::NS),
        ("alt", "web.service.alt.example.", RecordType::SRV),
        ("other", "example.com.", RecordType::A),
        ("axfr", "consul.", RecordType::AXFR),
    ];
    for (name, qname, t) in forms {
        seeds.push((name, q(qname, t).to_vec().unwrap()));
    }
    let mut edns = q("web.service.consul.", RecordType::SRV);
    let mut opt = Edns::new();
    opt.set_max_payload(4096);
    edns.edns = Some(opt.clone());
    seeds.push(("edns", edns.to_vec().unwrap()));
    opt.set_version(1);
    edns.edns = Some(opt);
    seeds.push(("edns-version", edns.to_vec().unwrap()));
    let good = q("web.service.consul.", RecordType::A).to_vec().unwrap();
    seeds.push(("empty", Vec::new()));
    seeds.push(("short", good[..11].to_vec()));
    seeds.push(("truncated-question", good[..good.len() - 3].to_vec()));
    let mut bad_label = good.clone();
    bad_label[12] = 0x3f;
    seeds.push(("bad-label", bad_label));
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    seeds.push(("compression-loop", looped));
    let mut two = q("web.service.consul.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("n1.node.consul.").unwrap(),
        RecordType::A,
    ));
    seeds.push(("two-questions", two.to_vec().unwrap()));
    let mut response = good.clone();
    response[2] |= 0x80;
    seeds.push(("response", response));
    let mut notify = good.clone();
    notify[2] = 4 << 3;
    seeds.push(("opcode-notify", notify));
    let mut many = good.clone();
    many[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
    seeds.push(("huge-qdcount", many));
    seeds
}

fn gossip_addr(last: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, last], 8301))
}

fn gossip_messages() -> Vec<(&'static str, GossipMessage)> {
    let tags: Tags = [("dc", "dc1"), ("role", "consul"), ("port", "8300")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vec![
        (
            "ping",
            GossipMessage::Ping {
                seq: 1,
                target: "fuzz-self".into(),
            },
        ),
        (
            "indirect-ping",
            GossipMessage::IndirectPing {
                seq: 2,
                target: "fuzz-peer".into(),
                target_addr: gossip_addr(2),
                nack: true,
            },
        ),
        ("ack", GossipMessage::Ack { seq: 1 }),
        ("nack", GossipMessage::Nack { seq: 2 }),
        (
            "alive",
            GossipMessage::Alive {
                incarnation: 3,
                name: "node-3".into(),
                addr: gossip_addr(3),
                tags,
            },
        ),
        (
            "suspect-peer",
            GossipMessage::Suspect {
                incarnation: 0,
                name: "fuzz-peer".into(),
                from: "node-3".into(),
            },
        ),
        (
            "suspect-self",
            GossipMessage::Suspect {
                incarnation: 0,
                name: "fuzz-self".into(),
                from: "fuzz-peer".into(),
            },
        ),
        (
            "dead-peer",
            GossipMessage::Dead {
                incarnation: 0,
                name: "fuzz-peer".into(),
                from: "node-3".into(),
            },
        ),
        (
            "leave-peer",
            GossipMessage::Leave {
                incarnation: 0,
                name: "fuzz-peer".into(),
                prune: true,
            },
        ),
        (
            "user-event",
            GossipMessage::UserEvent {
                ltime: 9,
                name: "deploy".into(),
                payload: b"v1.2".to_vec(),
            },
        ),
    ]
}

fn gossip_packet_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let msgs = gossip_messages();
    let mut seeds: Vec<(&'static str, Vec<u8>)> = msgs
        .iter()
        .map(|(name, m)| (*name, assemble_packet([encode_message(m).as_slice()])))
        .collect();
    let all: Vec<Vec<u8>> = msgs.iter().map(|(_, m)| encode_message(m)).collect();
    let compound = assemble_packet(all.iter().map(Vec::as_slice));
    let mut wrong_version = compound.clone();
    wrong_version[0] = 2;
    let mut trailing = assemble_packet([all[0].as_slice()]);
    trailing.push(0);
    let mut bad_len = assemble_packet([all[4].as_slice()]);
    bad_len[1..3].copy_from_slice(&u16::MAX.to_be_bytes());
    let long_name = GossipMessage::Ping {
        seq: 1,
        target: "n".repeat(300),
    };
    let big_payload = GossipMessage::UserEvent {
        ltime: 1,
        name: "e".into(),
        payload: vec![7; 600],
    };
    let mut bad_tag = assemble_packet([all[2].as_slice()]);
    bad_tag[3] = 0x7f;
    let coordinate = concord_core::coordinate::Coordinate::new(&Default::default());
    let ack_payload = GossipMessage::AckPayload {
        seq: 3,
        payload: concord_core::coordinate::encode_ack_payload(&coordinate),
    };
    seeds.extend([
        (
            "ack-payload",
            assemble_packet([encode_message(&ack_payload).as_slice()]),
        ),
        ("compound", compound.clone()),
        ("empty", Vec::new()),
        ("version-only", vec![1]),
        ("wrong-version", wrong_version),
        ("truncated", compound[..compound.len() / 2].to_vec()),
        ("trailing-byte", trailing),
        ("oversized-length", bad_len),
        ("long-name", assemble_packet([encode_message(&long_name).as_slice()])),
        (
            "big-event-payload",
            assemble_packet([encode_message(&big_payload).as_slice()]),
        ),
        ("bad-enum-tag", bad_tag),
    ]);
    seeds
}

fn gossip_push_pull_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let record = |name: &str, last: u8, state: MemberState| MemberRecord {
        name: name.into(),
        addr: gossip_addr(last),
        tags: [("role".to_string(), "node".to_string())].into_iter().collect(),
        incarnation: 1,
        state,
    };
    let body = |pp: &PushPull| encode_push_pull(pp)[4..].to_vec();
    let full = PushPull {
        join: true,
        members: vec![
            record("fuzz-self", 1, MemberState::Suspect),
            record("fuzz-peer", 2, MemberState::Dead),
            record("node-3", 3, MemberState::Alive),
            record("node-4", 4, MemberState::Left),
        ],
        event_ltime: 12,
    };
    let empty = PushPull {
        join: false,
        members: Vec::new(),
        event_ltime: 0,
    };
    let mut huge_count = body(&empty);
    huge_count.truncate(2);
    huge_count.extend([0xff, 0xff, 0xff, 0xff, 0x0f]);
    let full_body = body(&full);
    vec![
        ("full", full_body.clone()),
        ("empty-state", body(&empty)),
        ("empty", Vec::new()),
        ("wrong-version", [vec![9], full_body[1..].to_vec()].concat()),
        ("truncated", full_body[..full_body.len() / 2].to_vec()),
        ("huge-member-count", huge_count),
    ]
}

fn template_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let with = |delims: u8, src: &str| [vec![delims], src.as_bytes().to_vec()].concat();
    vec![
        (
            "nginx-upstream",
            with(
                0,
                "upstream http_backend {\n  {{range service \"nginx\"}}\n  server {{.Address}}:{{.Port}};\n  {{end}}\n}\n",
            ),
        ),
        (
            "services-nested",
            with(
                0,
                "{{range services}}{{.Name}}:{{range service .Name}}{{.Address}} {{end}}\n{{end}}",
            ),
        ),
        (
            "kv-and-funcs",
            with(
                0,
                "{{key \"a/b\"}} {{keyOrDefault \"x\" \"d\"}} {{range ls \"dir\"}}{{.Key}}={{.Value}}{{end}} \
                 {{with $x := \"v\" | toUpper}}{{$x}}{{end}} {{printf \"%d-%s\" 3 \"x\"}} {{- \"trim\" -}}",
            ),
        ),
        (
            "control-flow",
            with(
                0,
                "{{if and (eq 1 1) (ne \"a\" \"b\")}}y{{else if true}}n{{else}}z{{end}}\
                 {{range $i, $e := split \",\" \"a,b,c\"}}{{if eq $i 1}}{{continue}}{{end}}{{$e}}{{end}}\
                 {{/* comment */}}{{len \"abc\"}} {{index (split \",\" \"a,b\") 1}}",
            ),
        ),
        (
            "json-and-math",
            with(
                0,
                "{{toJSON (parseJSON \"{\\\"a\\\":[1,2.5,null]}\")}} {{add 1 2}} {{divide 7 2}} \
                 {{timestamp \"2006-01-02\"}} {{env \"HOME\"}} {{base64Encode \"hi\"}}",
            ),
        ),
        ("square-delims", with(1, "[[range service \"web\"]][[.Address]][[end]]")),
        ("percent-delims", with(2, "<% key \"k\" %>")),
        ("unclosed", with(0, "{{range service \"x\"}}")),
        ("unterminated-action", with(0, "{{ key \"a")),
        ("unsupported-define", with(0, "{{define \"x\"}}{{end}}")),
        ("deep-parens", with(0, &format!("{{{{{}1{}}}}}", "(".repeat(200), ")".repeat(200)))),
        ("empty", Vec::new()),
    ]
}
