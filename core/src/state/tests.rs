//! Tests of the replicated state: the KV store against a plain model, its range indexes, the watch index
//! and snapshots.
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;

use super::{Command, CommandResult, KeyRange, KvEntry, KvStore, StateMachine, WatchId, Watches};

fn set(key: &str, value: &str, cas: Option<u64>) -> Command {
    Command::KvSet {
        key: key.into(),
        value: Bytes::from(value.to_owned()),
        flags: 0,
        cas,
    }
}

fn del(key: &str, cas: Option<u64>) -> Command {
    Command::KvDelete { key: key.into(), cas }
}

/// Apply `cmd` and return (result as bool, changed keys).
fn apply(kv: &mut KvStore, index: u64, cmd: &Command) -> (bool, Vec<String>) {
    let mut changed = Vec::new();
    let CommandResult::Bool(ok) = kv.apply(index, cmd, &mut changed) else {
        panic!("KV commands answer a bool");
    };
    (ok, changed)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- KV unit tests (Consul docs examples)

#[test]
fn keys_with_separator_lists_directories_once() {
    let mut kv = KvStore::default();
    for (i, key) in ["/web/bar", "/web/foo", "/web/subdir/x", "/web/subdir/y", "/other"]
        .iter()
        .enumerate()
    {
        apply(&mut kv, i as u64 + 1, &set(key, "v", None));
    }
    let (index, keys) = kv.keys("/web/", Some("/"));
    assert_eq!(keys, strings(&["/web/bar", "/web/foo", "/web/subdir/"]));
    assert_eq!(
        index, 4,
        "the index of /web/ is the max ModifyIndex under it, not the store's"
    );
    assert_eq!(
        kv.keys("/web/", None).1,
        strings(&["/web/bar", "/web/foo", "/web/subdir/x", "/web/subdir/y"])
    );
    assert_eq!(kv.keys("/web/", Some("")).1.len(), 4, "an empty separator means none");
    assert_eq!(kv.keys("", Some("/")).1, strings(&["/"]));
}

#[test]
fn cas_zero_creates_only_if_absent() {
    let mut kv = KvStore::default();
    assert_eq!(apply(&mut kv, 5, &set("k", "one", Some(0))), (true, strings(&["k"])));
    assert_eq!(apply(&mut kv, 6, &set("k", "two", Some(0))), (false, vec![]));
    let (index, entry) = kv.get("k");
    let entry = entry.expect("k exists");
    assert_eq!(
        (index, entry.value.as_ref(), entry.create_index, entry.modify_index),
        (5, &b"one"[..], 5, 5)
    );
}

#[test]
fn cas_set_needs_the_current_modify_index() {
    let mut kv = KvStore::default();
    apply(&mut kv, 3, &set("k", "one", None));
    assert_eq!(apply(&mut kv, 4, &set("missing", "x", Some(3))), (false, vec![]));
    assert_eq!(apply(&mut kv, 5, &set("k", "x", Some(2))), (false, vec![]));
    assert_eq!(apply(&mut kv, 6, &set("k", "two", Some(3))), (true, strings(&["k"])));
    let entry = kv.get("k").1.expect("k exists");
    assert_eq!((entry.create_index, entry.modify_index, entry.lock_index), (3, 6, 0));
    assert_eq!(entry.value.as_ref(), b"two");
}

#[test]
fn delete_cas_zero_on_existing_key_deletes_nothing() {
    let mut kv = KvStore::default();
    apply(&mut kv, 7, &set("k", "v", None));
    assert_eq!(apply(&mut kv, 8, &del("k", Some(0))), (false, vec![]));
    assert_eq!(apply(&mut kv, 9, &del("k", Some(6))), (false, vec![]));
    assert!(kv.get("k").1.is_some());
    assert_eq!(apply(&mut kv, 10, &del("k", Some(7))), (true, strings(&["k"])));
    assert_eq!(
        kv.get("k"),
        (10, None),
        "the tombstone keeps the key's index at the delete"
    );
}

#[test]
fn delete_of_absent_key_is_true_and_changes_nothing() {
    let mut kv = KvStore::default();
    assert_eq!(apply(&mut kv, 1, &del("nope", None)), (true, vec![]));
    assert_eq!(apply(&mut kv, 2, &del("nope", Some(5))), (true, vec![]));
    assert_eq!(
        apply(&mut kv, 3, &Command::KvDeleteTree { prefix: "nope".into() }),
        (true, vec![])
    );
    assert_eq!(kv.get("nope"), (1, None), "an index is never 0");
    assert_eq!(kv.tombstone_count(), 0);
}

#[test]
fn delete_tree_removes_exactly_the_prefix() {
    let mut kv = KvStore::default();
    for (i, key) in ["a", "a/x", "a/y", "ab", "b"].iter().enumerate() {
        apply(&mut kv, i as u64 + 1, &set(key, "v", None));
    }
    assert_eq!(
        apply(&mut kv, 10, &Command::KvDeleteTree { prefix: "a/".into() }),
        (true, strings(&["a/x", "a/y"]))
    );
    assert_eq!(kv.keys("", None).1, strings(&["a", "ab", "b"]));
    assert_eq!(kv.list("a/"), (10, vec![]));
    assert_eq!(
        apply(&mut kv, 11, &Command::KvDeleteTree { prefix: String::new() }),
        (true, strings(&["a", "ab", "b"]))
    );
    assert!(kv.is_empty());
}

#[test]
fn deleting_the_newest_key_does_not_move_the_index_back_even_after_reaping() {
    let mut kv = KvStore::default();
    apply(&mut kv, 1, &set("dir/old", "v", None));
    apply(&mut kv, 2, &set("dir/new", "v", None));
    assert_eq!(kv.list("dir/").0, 2);
    apply(&mut kv, 3, &del("dir/new", None));
    assert_eq!(kv.list("dir/").0, 3);
    assert_eq!(
        apply(&mut kv, 4, &Command::KvReapTombstones { up_to: 3 }),
        (true, vec![])
    );
    assert_eq!(kv.tombstone_count(), 0);
    assert_eq!(
        kv.list("dir/").0,
        3,
        "the reap floor stands in for the reaped tombstone"
    );
    assert_eq!(kv.get("elsewhere").0, 3);
    apply(&mut kv, 5, &set("dir/old", "w", None));
    assert_eq!(kv.list("dir/").0, 5);
}

#[test]
fn set_removes_the_tombstone_and_starts_a_new_life() {
    let mut kv = KvStore::default();
    apply(&mut kv, 1, &set("k", "v", None));
    apply(&mut kv, 2, &del("k", None));
    assert_eq!(kv.tombstone_count(), 1);
    apply(&mut kv, 3, &set("k", "w", Some(0)));
    assert_eq!(kv.tombstone_count(), 0);
    let entry = kv.get("k").1.expect("k exists");
    assert_eq!((entry.create_index, entry.modify_index), (3, 3));
}

#[test]
fn state_machine_snapshot_restores_the_same_state() {
    let mut sm = StateMachine::default();
    let mut changed = super::Changes::default();
    sm.apply(1, &set("a", "1", None), &mut changed);
    sm.apply(2, &set("b", "2", None), &mut changed);
    sm.apply(3, &del("a", None), &mut changed);
    let restored = StateMachine::restore(&sm.snapshot()).expect("own snapshot decodes");
    assert_eq!(restored, sm);
    assert_eq!(restored.kv.get("a"), (3, None));
    // Encoded from borrows, byte for byte the owned form older builds wrote (and every build reads).
    let owned = super::Snapshot {
        kv: sm.kv.encode(),
        catalog: sm.catalog.encode(),
    };
    let mut expected = vec![super::SNAPSHOT_FORMAT];
    expected.extend(postcard::to_allocvec(&owned).unwrap());
    assert_eq!(sm.snapshot().to_vec(), expected);
    let entries: Vec<_> = ["b"].iter().map(|k| sm.kv.get(k).1.unwrap()).collect();
    let tombstones = vec![("a".to_string(), 3u64)];
    let owned_kv = postcard::to_allocvec(&(entries, tombstones, sm.kv.reap_floor())).unwrap();
    assert_eq!(sm.kv.encode(), owned_kv);
}

#[test]
fn snapshot_with_trailing_bytes_or_duplicates_is_rejected() {
    let mut kv = KvStore::default();
    apply(&mut kv, 1, &set("a", "1", None));
    let mut bytes = kv.encode();
    bytes.push(0);
    assert!(KvStore::decode(&bytes).is_err());
    let entry = kv.get("a").1.expect("a exists");
    let dup = postcard::to_allocvec(&(vec![entry.clone(), entry], Vec::<(String, u64)>::new(), 0u64)).unwrap();
    assert!(KvStore::decode(&dup).is_err());
    let live_and_dead =
        postcard::to_allocvec(&(vec![kv.get("a").1.unwrap()], vec![("a".to_string(), 1u64)], 0u64)).unwrap();
    assert!(KvStore::decode(&live_and_dead).is_err());
}

#[test]
fn a_snapshot_of_an_unknown_format_is_refused_with_its_format_named() {
    let mut sm = StateMachine::default();
    sm.apply(1, &set("a", "1", None), &mut super::Changes::default());
    let mut bytes = sm.snapshot().to_vec();
    assert_eq!(
        bytes[0],
        super::SNAPSHOT_FORMAT,
        "every snapshot starts with its format"
    );
    bytes[0] = super::SNAPSHOT_FORMAT + 1;
    let err = StateMachine::restore(&bytes).expect_err("a future format is refused, not misread");
    assert!(
        err.to_string()
            .contains(&format!("format {}", super::SNAPSHOT_FORMAT + 1)),
        "{err}"
    );
    assert!(StateMachine::restore(&[]).is_err());
}

// ---------------------------------------------------------------- watch unit tests

fn fire(watches: &mut Watches, changed: &[&str]) -> Vec<u64> {
    let mut fired = Vec::new();
    watches.fire(&strings(changed), &mut fired);
    let mut ids: Vec<u64> = fired.iter().map(|id| id.0).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn exact_watches_fire_only_for_their_key() {
    let mut w = Watches::default();
    w.insert(KeyRange::Key("a".into()), WatchId(1));
    w.insert(KeyRange::Key("a/b".into()), WatchId(2));
    w.insert(KeyRange::Key("a".into()), WatchId(3));
    assert_eq!(fire(&mut w, &["ab", "a/bc", "b"]), Vec::<u64>::new());
    assert_eq!(fire(&mut w, &["a"]), vec![1, 3]);
    assert_eq!(w.len(), 1);
    assert_eq!(fire(&mut w, &["a"]), Vec::<u64>::new(), "a fired watch is gone");
}

#[test]
fn prefix_watches_fire_for_any_key_under_them() {
    let mut w = Watches::default();
    w.insert(KeyRange::Prefix("a/".into()), WatchId(1));
    w.insert(KeyRange::Prefix("a".into()), WatchId(2));
    w.insert(KeyRange::Prefix(String::new()), WatchId(3));
    w.insert(KeyRange::Prefix("é/ü".into()), WatchId(4));
    w.insert(KeyRange::Prefix("b".into()), WatchId(5));
    assert_eq!(fire(&mut w, &["a"]), vec![2, 3]);
    assert_eq!(fire(&mut w, &["é/ü", "a/x", "a/y"]), vec![1, 4]);
    assert_eq!(fire(&mut w, &["c"]), Vec::<u64>::new());
    assert_eq!(w.len(), 1);
    assert_eq!(fire(&mut w, &["bbb"]), vec![5]);
    assert!(w.is_empty());
}

#[test]
fn each_watch_fires_once_even_when_several_changed_keys_match() {
    let mut w = Watches::default();
    w.insert(KeyRange::Prefix(String::new()), WatchId(1));
    w.insert(KeyRange::Key("x".into()), WatchId(2));
    let mut fired = Vec::new();
    w.fire(&strings(&["x", "x", "y", "x/z"]), &mut fired);
    assert_eq!(fired.len(), 2);
    assert_eq!(fired.iter().collect::<BTreeSet<_>>().len(), 2);
}

#[test]
fn removed_and_moved_watches() {
    let mut w = Watches::default();
    w.insert(KeyRange::Key("a".into()), WatchId(1));
    w.insert(KeyRange::Prefix("b".into()), WatchId(2));
    assert!(w.remove(WatchId(1)));
    assert!(!w.remove(WatchId(1)));
    assert!(!w.remove(WatchId(9)));
    assert_eq!(fire(&mut w, &["a"]), Vec::<u64>::new());
    // Re-inserting an id moves it.
    w.insert(KeyRange::Key("c".into()), WatchId(2));
    assert_eq!(w.len(), 1);
    assert_eq!(fire(&mut w, &["b"]), Vec::<u64>::new());
    assert_eq!(fire(&mut w, &["c"]), vec![2]);
    assert!(w.is_empty());
}

// ---------------------------------------------------------------- the model

/// The KV semantics written the obvious way, with the full history of change indexes (never reaped).
#[derive(Default)]
struct Model {
    entries: BTreeMap<String, KvEntry>,
    last_change: BTreeMap<String, u64>,
    floor: u64,
}

impl Model {
    fn modify_index(&self, key: &str) -> Option<u64> {
        self.entries.get(key).map(|e| e.modify_index)
    }

    fn apply(&mut self, index: u64, cmd: &Command) -> (bool, BTreeSet<String>) {
        let mut changed = BTreeSet::new();
        let ok = match cmd {
            Command::KvSet { key, value, flags, cas } => {
                let old = self.entries.get(key).cloned();
                let ok = match cas {
                    None => true,
                    Some(0) => old.is_none(),
                    Some(n) => old.as_ref().is_some_and(|e| e.modify_index == *n),
                };
                if ok {
                    let entry = KvEntry {
                        key: key.clone(),
                        create_index: old.as_ref().map_or(index, |e| e.create_index),
                        modify_index: index,
                        lock_index: old.as_ref().map_or(0, |e| e.lock_index),
                        flags: *flags,
                        value: value.clone(),
                        session: old.and_then(|e| e.session),
                    };
                    self.entries.insert(key.clone(), entry);
                    changed.insert(key.clone());
                }
                ok
            }
            Command::KvDelete { key, cas } => match self.modify_index(key) {
                None => true,
                Some(m) if cas.is_some_and(|n| n != m) => false,
                Some(_) => {
                    self.entries.remove(key);
                    changed.insert(key.clone());
                    true
                }
            },
            Command::KvDeleteTree { prefix } => {
                changed = self
                    .entries
                    .keys()
                    .filter(|k| k.starts_with(prefix.as_str()))
                    .cloned()
                    .collect();
                self.entries.retain(|k, _| !changed.contains(k));
                true
            }
            Command::KvReapTombstones { up_to } => {
                self.floor = self.floor.max(*up_to);
                true
            }
            Command::CatalogRegister(_)
            | Command::CatalogDeregister { .. }
            | Command::CatalogCheckUpdate { .. }
            | Command::Txn(_)
            | Command::CatalogSync(_)
            | Command::CoordinateBatchUpdate(_) => {
                unreachable!("the KV history has no catalog commands or transactions")
            }
        };
        for key in &changed {
            self.last_change.insert(key.clone(), index);
        }
        (ok, changed)
    }

    /// Reaped tombstones were at or below the floor, so the full history gives the same maximum.
    fn range_index(&self, range: &KeyRange) -> u64 {
        let history = self
            .last_change
            .iter()
            .filter(|(k, _)| range.contains(k))
            .map(|(_, i)| *i)
            .max();
        history.unwrap_or(0).max(self.floor).max(1)
    }

    fn keys(&self, prefix: &str, separator: Option<&str>) -> Vec<String> {
        let under = self.entries.keys().filter(|k| k.starts_with(prefix));
        let cut = under.map(
            |k| match separator.and_then(|s| k[prefix.len()..].find(s).map(|at| at + s.len())) {
                Some(end) => k[..prefix.len() + end].to_string(),
                None => k.clone(),
            },
        );
        cut.collect::<BTreeSet<_>>().into_iter().collect()
    }
}

// ---------------------------------------------------------------- generators

const ALPHABET: [char; 4] = ['a', 'b', '/', 'é'];

fn key() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET.to_vec()), 0..=3).prop_map(String::from_iter)
}

/// How a CAS value is picked; `Current` is resolved against the state when the op is applied, so that
/// successful CAS writes actually happen.
#[derive(Clone, Debug)]
enum Cas {
    None,
    Zero,
    Current,
    Any(u64),
}

fn cas() -> impl Strategy<Value = Cas> {
    prop_oneof![1 => Just(Cas::None), 1 => Just(Cas::Zero), 2 => Just(Cas::Current), 1 => (1u64..40).prop_map(Cas::Any)]
}

#[derive(Clone, Debug)]
enum Op {
    Set {
        key: String,
        value: Vec<u8>,
        flags: u64,
        cas: Cas,
    },
    Delete {
        key: String,
        cas: Cas,
    },
    DeleteTree {
        prefix: String,
    },
    /// Reap up to `back` below the last applied index, as the leader would.
    Reap {
        back: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (key(), prop::collection::vec(any::<u8>(), 0..4), 0u64..3, cas())
            .prop_map(|(key, value, flags, cas)| Op::Set { key, value, flags, cas }),
        3 => (key(), cas()).prop_map(|(key, cas)| Op::Delete { key, cas }),
        1 => key().prop_map(|prefix| Op::DeleteTree { prefix }),
        1 => (0u64..6).prop_map(|back| Op::Reap { back }),
    ]
}

/// Turn `op` into the command applied at `index`, resolving CAS picks against `model`.
fn command(op: &Op, index: u64, model: &Model) -> Command {
    let resolve = |key: &str, cas: &Cas| match cas {
        Cas::None => None,
        Cas::Zero => Some(0),
        Cas::Current => Some(model.modify_index(key).unwrap_or(index / 2 + 1)),
        Cas::Any(n) => Some(*n),
    };
    match op {
        Op::Set { key, value, flags, cas } => Command::KvSet {
            key: key.clone(),
            value: Bytes::from(value.clone()),
            flags: *flags,
            cas: resolve(key, cas),
        },
        Op::Delete { key, cas } => Command::KvDelete {
            key: key.clone(),
            cas: resolve(key, cas),
        },
        Op::DeleteTree { prefix } => Command::KvDeleteTree { prefix: prefix.clone() },
        Op::Reap { back } => Command::KvReapTombstones {
            up_to: (index - 1).saturating_sub(*back),
        },
    }
}

/// Ops with strictly increasing indexes (gaps stand for other commands in the log).
fn history() -> impl Strategy<Value = Vec<(u64, Op)>> {
    prop::collection::vec((1u64..4, op()), 0..60)
}

fn checked_ranges() -> Vec<KeyRange> {
    let mut ranges = Vec::new();
    for k in ["", "a", "a/", "a/b", "b", "é", "aé"] {
        ranges.push(KeyRange::Key(k.to_string()));
        ranges.push(KeyRange::Prefix(k.to_string()));
    }
    ranges
}

fn check_against_model(kv: &KvStore, model: &Model) -> Result<(), TestCaseError> {
    let all: Vec<KvEntry> = model.entries.values().cloned().collect();
    prop_assert_eq!(kv.list("").1, all);
    prop_assert_eq!(kv.len(), model.entries.len());
    for prefix in ["", "a", "a/", "a/b", "b", "/", "é"] {
        let expected: Vec<KvEntry> = model
            .entries
            .values()
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect();
        prop_assert_eq!(kv.list(prefix).1, expected);
        for separator in [None, Some("/"), Some("b/"), Some("é")] {
            prop_assert_eq!(
                kv.keys(prefix, separator).1,
                model.keys(prefix, separator),
                "{:?} {:?}",
                prefix,
                separator
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn kv_store_matches_the_model_and_range_indexes_only_move_forward(ops in history()) {
        let mut kv = KvStore::default();
        let mut model = Model::default();
        let ranges = checked_ranges();
        let mut before: Vec<u64> = ranges.iter().map(|r| kv.range_index(r)).collect();
        let mut index = 1; // index 1 is the first leader's no-op in Raft; KV writes come after it
        for (gap, op) in &ops {
            index += gap;
            let cmd = command(op, index, &model);
            let (ok, changed) = apply(&mut kv, index, &cmd);
            let (expected_ok, expected_changed) = model.apply(index, &cmd);
            prop_assert_eq!(ok, expected_ok, "{:?}", cmd);
            prop_assert_eq!(changed.len(), expected_changed.len(), "changed has no repeats: {:?}", changed);
            prop_assert_eq!(changed.iter().cloned().collect::<BTreeSet<_>>(), expected_changed);
            check_against_model(&kv, &model)?;
            for (range, old) in ranges.iter().zip(before.iter_mut()) {
                let now = kv.range_index(range);
                prop_assert_eq!(now, model.range_index(range), "{:?} after {:?}", range, cmd);
                prop_assert!(now >= 1 && now >= *old, "{:?} went from {} to {}", range, old, now);
                if changed.iter().any(|k| range.contains(k)) {
                    prop_assert!(now > *old, "{:?} changed but stayed at {}", range, now);
                }
                *old = now;
            }
            if let Command::KvSet { key, .. } | Command::KvDelete { key, .. } = &cmd {
                let expected = model.entries.get(key).cloned();
                prop_assert_eq!(kv.get(key), (model.range_index(&KeyRange::Key(key.clone())), expected));
            }
        }
    }

    #[test]
    fn snapshot_round_trips(ops in history()) {
        let mut kv = KvStore::default();
        let mut model = Model::default();
        let mut index = 1; // index 1 is the first leader's no-op in Raft; KV writes come after it
        for (gap, op) in &ops {
            index += gap;
            let cmd = command(op, index, &model);
            model.apply(index, &cmd);
            apply(&mut kv, index, &cmd);
        }
        let bytes = kv.encode();
        prop_assert_eq!(KvStore::decode(&bytes), Ok(kv.clone()));
        for cut in 0..bytes.len() {
            prop_assert!(KvStore::decode(&bytes[..cut]).is_err(), "truncated at {} decoded", cut);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = KvStore::decode(&bytes);
        let _ = StateMachine::restore(&bytes);
    }

    #[test]
    fn decoding_a_corrupted_snapshot_never_panics(ops in history(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut kv = KvStore::default();
        let model = Model::default();
        for (i, (_, op)) in ops.iter().enumerate() {
            apply(&mut kv, i as u64 + 1, &command(op, i as u64 + 1, &model));
        }
        let mut bytes = kv.encode();
        for (at, byte) in flips {
            let len = bytes.len();
            bytes[at % len] ^= byte;
        }
        let _ = KvStore::decode(&bytes);
    }

    #[test]
    fn a_watch_fires_iff_a_changed_key_is_in_its_range(
        parked in prop::collection::vec((any::<bool>(), key()), 0..20),
        changed in prop::collection::vec(key(), 0..4),
    ) {
        let mut w = Watches::default();
        let ranges: Vec<KeyRange> = parked
            .into_iter()
            .map(|(prefix, k)| if prefix { KeyRange::Prefix(k) } else { KeyRange::Key(k) })
            .collect();
        for (i, range) in ranges.iter().enumerate() {
            w.insert(range.clone(), WatchId(i as u64));
        }
        let mut fired = Vec::new();
        w.fire(&changed, &mut fired);
        let fired_set: BTreeSet<WatchId> = fired.iter().copied().collect();
        prop_assert_eq!(fired_set.len(), fired.len(), "an id fired twice: {:?}", fired);
        let expected: BTreeSet<WatchId> = ranges
            .iter()
            .enumerate()
            .filter(|(_, r)| changed.iter().any(|k| r.contains(k)))
            .map(|(i, _)| WatchId(i as u64))
            .collect();
        prop_assert_eq!(&fired_set, &expected);
        prop_assert_eq!(w.len(), ranges.len() - expected.len());
        for i in 0..ranges.len() as u64 {
            prop_assert_eq!(w.remove(WatchId(i)), !expected.contains(&WatchId(i)));
        }
        prop_assert!(w.is_empty());
    }
}
