//! Fuzz-target bodies, shared by the cargo-fuzz crate (`fuzz/`) and the corpus replay test
//! (`core/tests/fuzz_corpus.rs`), so every corpus input runs the very same checks under libFuzzer and under
//! `cargo test`. Not part of concord's API.
//!
//! Contract of every function here: it takes arbitrary untrusted bytes and returns normally for every
//! input. It panics only when the code under test breaks one of its documented properties (a decoder
//! panics, a decoded value does not round-trip, two nodes disagree on the applied history), and that panic
//! is the bug report.

mod dns;
mod gossip;
mod schedule;
mod template;

pub use dns::dns_packet;
pub use gossip::{gossip_packet, gossip_push_pull};
pub use schedule::{cluster_schedule, Op};
pub use template::template;

use crate::api::parse_go_duration;
use crate::state::{Command, CommandResult, KeyRange, StateMachine};
use crate::wire::{decode_frame, encode_frame, frame_len, Frame, DEFAULT_MAX_FRAME};

/// A target's body: takes any bytes, panics only on a bug.
pub type Check = fn(&[u8]);

/// Every target: its name (the cargo-fuzz target and its corpus directory `fuzz/corpus/<name>/`) and body.
pub const TARGETS: &[(&str, Check)] = &[
    ("rpc_frame", rpc_frame),
    ("state_snapshot", state_snapshot),
    ("command", command),
    ("go_duration", go_duration),
    ("cluster_schedule", cluster_schedule),
    ("dns_packet", dns_packet),
    ("gossip_packet", gossip_packet),
    ("gossip_push_pull", gossip_push_pull),
    ("template", template),
];

/// The body of the target called `target` in `targets` (core's [`TARGETS`] or the runtime's own list).
pub fn find_target(targets: &[(&str, Check)], target: &str) -> Check {
    targets
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target {target}"))
}

/// Test support for the corpus replay tests (`core/tests/fuzz_corpus.rs`, concord's `fuzzing::tests`, which
/// read the files: core does no I/O): runs `target`'s check over every `(file name, bytes)` input and panics
/// naming every failing input at once. No inputs fail too: a lost corpus must not pass silently.
pub fn replay_inputs(targets: &[(&str, Check)], target: &str, inputs: &[(String, Vec<u8>)]) {
    assert!(!inputs.is_empty(), "corpus {target} is empty");
    let check = find_target(targets, target);
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(data))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs fail (reproduce: cd fuzz && cargo fuzz run {target} <file>): {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

/// The bytes a server reads from an RPC connection: length-prefixed frames back to back, read the way a
/// connection reader does (stop at the first bad prefix or short body). Every frame that decodes must
/// re-encode to bytes that decode to the same frame.
pub fn rpc_frame(data: &[u8]) {
    let mut rest = data;
    while let Some((prefix, after)) = rest.split_first_chunk::<4>() {
        let len = match frame_len(*prefix, DEFAULT_MAX_FRAME) {
            Ok(len) => len,
            Err(_) => return,
        };
        assert!((1..=DEFAULT_MAX_FRAME).contains(&len), "frame_len accepted {len}");
        let Some(body) = after.get(..len) else { return };
        if let Ok(frame) = decode_frame(body) {
            check_frame_round_trip(&frame);
        }
        rest = &after[len..];
    }
}

fn check_frame_round_trip(frame: &Frame) {
    let bytes = encode_frame(frame);
    let (prefix, body) = bytes.split_first_chunk::<4>().expect("a frame has a length prefix");
    assert_eq!(
        frame_len(*prefix, DEFAULT_MAX_FRAME),
        Ok(body.len()),
        "length prefix of a re-encoded frame"
    );
    assert_eq!(decode_frame(body).as_ref(), Ok(frame), "frame does not round-trip");
}

/// A Raft snapshot's state-machine bytes (from disk or from a leader's InstallSnapshot). Restoring never
/// panics; a restored state snapshots to bytes that restore to an equal state, and serves reads.
pub fn state_snapshot(data: &[u8]) {
    let Ok(sm) = StateMachine::restore(data) else { return };
    let again = StateMachine::restore(&sm.snapshot()).expect("a snapshot of a restored state restores");
    assert_eq!(again, sm, "snapshot does not round-trip");
    let (index, entries) = sm.kv.list("");
    assert!(index >= 1, "a range index is never 0");
    assert_eq!(entries.len(), sm.kv.len());
    let (keys_index, _) = sm.kv.keys("", Some("/"));
    assert_eq!(keys_index, sm.kv.range_index(&KeyRange::Prefix(String::new())));
}

/// The index at which [`command`] applies the decoded command: above every index in its starting state.
const COMMAND_INDEX: u64 = 20;

/// The keys [`command_start_state`] holds, live or tombstoned, and `dir/`: absent, but a prefix of live keys.
pub const COMMAND_KEYS: &[&str] = &["a", "dir/x", "dir/y", "dir/z", "gone", "dir/"];

/// A small KV state with live keys, tombstones and a reap floor, so a fuzzed command meets every case
/// (create, overwrite, CAS hit and miss, delete of live, tombstoned and absent keys, tree deletes).
pub fn command_start_state() -> StateMachine {
    let set = |key: &str| Command::KvSet {
        key: key.into(),
        value: bytes::Bytes::from_static(b"v"),
        flags: 7,
        cas: None,
    };
    let del = |key: &str| Command::KvDelete {
        key: key.into(),
        cas: None,
    };
    let history = [
        set("gone"),
        set("a"),
        Command::KvReapTombstones { up_to: 3 },
        set("dir/x"),
        set("dir/y"),
        del("gone"),
        set("dir/z"),
        del("dir/z"),
        set("dir/x"),
    ];
    let mut sm = StateMachine::default();
    for (i, cmd) in history.iter().enumerate() {
        sm.apply(i as u64 + 2, cmd, &mut crate::state::Changes::default());
    }
    // One catalog node, so catalog commands (fenced ones, coordinates) have something to act on.
    let node = Command::CatalogRegister(Box::new(crate::state::Registration {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        ..Default::default()
    }));
    sm.apply(history.len() as u64 + 2, &node, &mut crate::state::Changes::default());
    sm
}

/// A Raft log entry's command bytes. Decoding never panics; a decoded command round-trips, and applying it
/// never panics and keeps the KV invariants: every key reported changed now reports the apply index, keys
/// not reported keep their entry, and no range index goes backwards.
pub fn command(data: &[u8]) {
    let Ok(cmd) = Command::decode(data) else { return };
    assert_eq!(
        Command::decode(&cmd.encode()).as_ref(),
        Ok(&cmd),
        "command does not round-trip"
    );
    let before = command_start_state();
    let mut sm = before.clone();
    let mut changes = crate::state::Changes::default();
    let result = sm.apply(COMMAND_INDEX, &cmd, &mut changes);
    let changed = changes.keys;
    let succeeded = matches!(result, CommandResult::Bool(true) | CommandResult::Txn(Ok(_)));
    if !changed.is_empty() {
        assert!(succeeded, "{cmd:?} changed {changed:?} but failed: {result:?}");
    }
    if let CommandResult::Txn(Err(_)) = &result {
        assert_eq!(sm, before, "a rolled-back transaction left a change: {cmd:?}");
    }
    let floor = sm.kv.reap_floor();
    for key in &changed {
        let index = sm.kv.range_index(&KeyRange::Key(key.clone()));
        assert_eq!(index, COMMAND_INDEX.max(floor), "changed key {key:?} after {cmd:?}");
    }
    let mut ranges: Vec<KeyRange> = COMMAND_KEYS.iter().map(|k| KeyRange::Key(k.to_string())).collect();
    ranges.extend(["", "d", "dir/", "z"].map(|p| KeyRange::Prefix(p.to_string())));
    ranges.extend(changed.iter().map(|k| KeyRange::Key(k.clone())));
    for range in &ranges {
        let (old, new) = (before.kv.range_index(range), sm.kv.range_index(range));
        assert!(
            new >= old,
            "index of {range:?} went back from {old} to {new} after {cmd:?}"
        );
    }
    for key in COMMAND_KEYS.iter().filter(|k| !changed.iter().any(|c| c == *k)) {
        assert_eq!(
            sm.kv.get(key).1,
            before.kv.get(key).1,
            "unreported change of {key:?} by {cmd:?}"
        );
    }
    let restored = StateMachine::restore(&sm.snapshot()).expect("state after apply restores");
    assert_eq!(restored, sm, "state after apply does not round-trip");
}

/// A Go duration as `?wait=` or a config file gives it. Parsing arbitrary UTF-8 never panics, and what
/// parses is exactly the duration its count of nanoseconds names.
pub fn go_duration(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(d) = parse_go_duration(s) {
        let ns = format!("{}ns", d.as_nanos());
        assert_eq!(parse_go_duration(&ns), Ok(d), "{s:?} parsed to {d:?}, {ns:?} does not");
    }
}
