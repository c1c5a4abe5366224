//! Tests of `/v1/txn` in the state machine: Consul's per-verb results and errors, and atomicity (a failed
//! transaction leaves the store and the watch layer untouched) as a property over random transactions.
use bytes::Bytes;
use proptest::prelude::*;

use super::{Changes, Command, CommandResult, KvStore, KvTxnOp, KvVerb, StateMachine, TxnError, TxnOp, TxnResult};

fn op(verb: KvVerb, key: &str, value: &str, index: u64) -> TxnOp {
    TxnOp::Kv(KvTxnOp {
        verb,
        key: key.into(),
        value: Bytes::from(value.to_owned()),
        flags: 0,
        index,
        session: String::new(),
    })
}

fn seeded() -> StateMachine {
    let mut sm = StateMachine::default();
    for (i, key) in ["a", "dir/x", "dir/y"].iter().enumerate() {
        let cmd = Command::KvSet {
            key: key.to_string(),
            value: Bytes::from_static(b"old"),
            flags: 0,
            cas: None,
        };
        sm.apply(i as u64 + 2, &cmd, &mut Changes::default());
    }
    sm
}

fn run(sm: &mut StateMachine, index: u64, ops: Vec<TxnOp>) -> (Result<Vec<TxnResult>, Vec<TxnError>>, Changes) {
    let mut changes = Changes::default();
    let CommandResult::Txn(out) = sm.apply(index, &Command::Txn(ops), &mut changes) else {
        panic!("a transaction answers CommandResult::Txn");
    };
    (out, changes)
}

fn kv(result: &TxnResult) -> &super::KvEntry {
    let TxnResult::Kv(e) = result;
    e
}

#[test]
fn committed_transaction_applies_every_op_at_one_index() {
    let mut sm = seeded();
    let ops = vec![
        op(KvVerb::Set, "b", "new", 0),
        op(KvVerb::Cas, "a", "swapped", 2),
        op(KvVerb::Get, "b", "", 0),
        op(KvVerb::CheckIndex, "dir/x", "", 3),
        op(KvVerb::CheckNotExists, "c", "", 0),
        op(KvVerb::DeleteTree, "dir/", "", 0),
        op(KvVerb::GetTree, "dir/", "", 0),
        op(KvVerb::Delete, "missing", "", 0),
    ];
    let (out, changes) = run(&mut sm, 10, ops);
    let results = out.expect("every op succeeds");
    // set, cas, get, check-index; delete verbs and check-not-exists give none; the tree is empty by then.
    assert_eq!(results.len(), 4, "{results:?}");
    assert_eq!((kv(&results[0]).key.as_str(), kv(&results[0]).modify_index), ("b", 10));
    assert!(kv(&results[0]).value.is_empty(), "Value is null except for get verbs");
    assert_eq!((kv(&results[1]).create_index, kv(&results[1]).modify_index), (2, 10));
    assert_eq!(
        &kv(&results[2]).value[..],
        b"new",
        "get sees the earlier set and keeps the value"
    );
    assert_eq!(kv(&results[3]).modify_index, 3);
    assert_eq!(&sm.kv.get("a").1.unwrap().value[..], b"swapped");
    assert!(sm.kv.list("dir/").1.is_empty());
    assert_eq!(changes.keys, ["a", "b", "dir/x", "dir/y"]);
    assert_eq!(sm.kv.range_index(&super::KeyRange::Prefix(String::new())), 10);
}

#[test]
fn failed_transaction_reports_every_error_and_changes_nothing() {
    let mut sm = seeded();
    let before = sm.clone();
    let ops = vec![
        op(KvVerb::Set, "new", "v", 0),
        op(KvVerb::Delete, "a", "", 0),
        op(KvVerb::Cas, "dir/x", "v", 99),
        op(KvVerb::DeleteTree, "dir/", "", 0),
        op(KvVerb::Get, "a", "", 0),
        op(KvVerb::CheckIndex, "zzz", "", 1),
        op(KvVerb::CheckNotExists, "new", "", 0),
        op(KvVerb::DeleteCas, "dir/y", "", 1),
    ];
    let (out, changes) = run(&mut sm, 10, ops);
    let errors = out.expect_err("the transaction is rolled back");
    let errors: Vec<(usize, &str)> = errors.iter().map(|e| (e.op_index, e.what.as_str())).collect();
    assert_eq!(
        errors,
        [
            (2, r#"failed to set key "dir/x", index is stale"#),
            (4, r#"key "a" doesn't exist"#),
            (5, r#"failed to check index, key "zzz" doesn't exist"#),
            (6, r#"key "new" exists"#),
        ],
        "later ops see earlier ones (a was deleted, new was set; dir/y was already gone)"
    );
    assert_eq!(
        sm, before,
        "nothing of the failed transaction remains, tombstones included"
    );
    assert!(changes.is_empty(), "no watch wakes for a rolled-back transaction");
}

#[test]
fn sessions_do_not_exist_so_locks_fail_as_in_consul() {
    let mut sm = seeded();
    let lock = |session: &str| {
        TxnOp::Kv(KvTxnOp {
            verb: KvVerb::Lock,
            key: "a".into(),
            value: Bytes::new(),
            flags: 0,
            index: 0,
            session: session.into(),
        })
    };
    let (out, _) = run(&mut sm, 10, vec![lock(""), lock("abc")]);
    let whats: Vec<String> = out.unwrap_err().into_iter().map(|e| e.what).collect();
    assert_eq!(whats, ["missing session", r#"invalid session "abc""#]);
    let mut check = op(KvVerb::CheckSession, "a", "", 0);
    let (out, _) = run(&mut sm, 11, vec![check.clone()]);
    assert_eq!(out.unwrap().len(), 1, "an unlocked key has the empty session");
    let TxnOp::Kv(c) = &mut check;
    c.session = "abc".into();
    let (out, _) = run(&mut sm, 12, vec![check]);
    assert_eq!(
        out.unwrap_err()[0].what,
        r#"failed session check for key "a", current session "" != "abc""#
    );
}

#[test]
fn get_or_empty_answers_an_absent_key_without_failing() {
    let mut sm = seeded();
    let (out, changes) = run(&mut sm, 10, vec![op(KvVerb::GetOrEmpty, "nope", "", 0)]);
    let results = out.unwrap();
    assert_eq!(
        (kv(&results[0]).key.as_str(), kv(&results[0]).create_index),
        ("nope", 0)
    );
    assert!(changes.is_empty());
}

#[test]
fn transactions_survive_the_log_encoding_and_snapshots_are_unchanged() {
    let cmd = Command::Txn(vec![op(KvVerb::Cas, "k", "v", 7), op(KvVerb::DeleteTree, "", "", 0)]);
    assert_eq!(Command::decode(&cmd.encode()), Ok(cmd));
    // An entry written before `Txn` existed decodes as before: the new variant is the last one.
    let old = Command::KvDelete {
        key: "k".into(),
        cas: None,
    };
    assert_eq!(Command::decode(&old.encode()), Ok(old));
    let mut sm = seeded();
    run(&mut sm, 10, vec![op(KvVerb::Set, "t", "v", 0)]).0.unwrap();
    assert_eq!(StateMachine::restore(&sm.snapshot()), Ok(sm));
}

fn arb_op() -> impl Strategy<Value = TxnOp> {
    let verbs = prop::sample::select(vec![
        KvVerb::Set,
        KvVerb::Cas,
        KvVerb::Get,
        KvVerb::GetOrEmpty,
        KvVerb::GetTree,
        KvVerb::CheckIndex,
        KvVerb::CheckNotExists,
        KvVerb::Delete,
        KvVerb::DeleteTree,
        KvVerb::DeleteCas,
        KvVerb::Lock,
    ]);
    let keys = prop::sample::select(vec!["a", "b", "d/", "d/x", "d/y", ""]);
    (verbs, keys, 0u64..12).prop_map(|(verb, key, index)| op(verb, key, "v", index))
}

/// The plain command a write verb stands for, to compare a committed transaction against.
fn as_command(op: &TxnOp) -> Option<Command> {
    let TxnOp::Kv(op) = op;
    let (key, value) = (op.key.clone(), op.value.clone());
    Some(match op.verb {
        KvVerb::Set => Command::KvSet {
            key,
            value,
            flags: 0,
            cas: None,
        },
        KvVerb::Cas => Command::KvSet {
            key,
            value,
            flags: 0,
            cas: Some(op.index),
        },
        KvVerb::Delete => Command::KvDelete { key, cas: None },
        KvVerb::DeleteCas => Command::KvDelete {
            key,
            cas: Some(op.index),
        },
        KvVerb::DeleteTree => Command::KvDeleteTree { prefix: key },
        _ => return None,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// A transaction either fails and leaves no trace, or equals its write ops applied one by one at the
    /// same index (and then reports exactly the keys those changed).
    #[test]
    fn transactions_are_atomic(
        history in prop::collection::vec(arb_op(), 0..8),
        ops in prop::collection::vec(arb_op(), 0..10),
    ) {
        let mut sm = StateMachine::default();
        for (i, op) in history.iter().enumerate() {
            if let Some(cmd) = as_command(op) {
                sm.apply(i as u64 + 2, &cmd, &mut Changes::default());
            }
        }
        let before = sm.clone();
        let (out, changes) = run(&mut sm, 20, ops.clone());
        match out {
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.windows(2).all(|w| w[0].op_index < w[1].op_index));
                prop_assert_eq!(&sm, &before);
                prop_assert!(changes.is_empty());
            }
            Ok(_) => {
                let mut model: KvStore = before.kv.clone();
                let mut keys = Vec::new();
                for op in &ops {
                    if let Some(cmd) = as_command(op) {
                        model.apply(20, &cmd, &mut keys);
                    }
                }
                keys.sort();
                keys.dedup();
                prop_assert_eq!(&sm.kv, &model);
                prop_assert_eq!(changes.keys, keys);
            }
        }
    }
}
