use super::*;
use concord_core::api::{Blocking, KvResult, QueryMeta};
use concord_core::state::KvEntry;
use std::time::Duration;

fn put(client: usize, call: u64, ret: u64, key: &str, value: &str, index: Option<u64>) -> Record {
    Record {
        client,
        node: 0,
        call,
        ret,
        req: Request::Write(Command::KvSet {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            flags: 0,
            cas: None,
        }),
        resp: index.map(|index| Response::Written {
            index,
            result: CommandResult::Bool(true),
        }),
    }
}

fn cas(call: u64, ret: u64, key: &str, value: &str, expect: u64, outcome: Option<(u64, bool)>) -> Record {
    Record {
        client: 0,
        node: 0,
        call,
        ret,
        req: Request::Write(Command::KvSet {
            key: key.into(),
            value: Bytes::from(value.to_string()),
            flags: 0,
            cas: Some(expect),
        }),
        resp: outcome.map(|(index, b)| Response::Written {
            index,
            result: CommandResult::Bool(b),
        }),
    }
}

fn get_with(
    client: usize,
    (call, ret): (u64, u64),
    key: &str,
    mode: ReadMode,
    block: Option<u64>,
    seen: Option<(&str, u64)>,
    index: u64,
) -> Record {
    let entries = seen
        .map(|(v, m)| KvEntry {
            key: key.into(),
            create_index: m,
            modify_index: m,
            lock_index: 0,
            flags: 0,
            value: Bytes::from(v.to_string()),
            session: None,
        })
        .into_iter()
        .collect();
    Record {
        client,
        node: 0,
        call,
        ret,
        req: Request::KvRead {
            query: KvQuery::Get { key: key.into() },
            mode,
            block: block.map(|min_index| Blocking {
                min_index,
                wait: Duration::from_secs(1),
            }),
        },
        resp: Some(Response::Kv {
            meta: QueryMeta {
                index,
                known_leader: true,
                last_contact_ms: 0,
                consistency: mode,
            },
            result: KvResult::Entries(entries).into(),
        }),
    }
}

fn get(call: u64, ret: u64, key: &str, mode: ReadMode, seen: Option<(&str, u64)>, index: u64) -> Record {
    get_with(1, (call, ret), key, mode, None, seen, index)
}

fn keys() -> Vec<String> {
    vec!["a/1".into(), "a/2".into(), "b/1".into()]
}

#[test]
fn a_correct_history_passes_every_check() {
    let h = vec![
        put(0, 0, 10, "a/1", "x", Some(5)),
        get(20, 30, "a/1", ReadMode::Consistent, Some(("x", 5)), 5),
        cas(40, 50, "a/1", "y", 5, Some((6, true))),
        get(60, 70, "a/1", ReadMode::Default, Some(("y", 6)), 6),
        get(60, 70, "a/1", ReadMode::Stale, Some(("x", 5)), 5),
        put(0, 80, 90, "a/2", "z", None),
        Record {
            client: 0,
            node: 0,
            call: 100,
            ret: 110,
            req: Request::Write(Command::KvDeleteTree { prefix: "a/".into() }),
            resp: Some(Response::Written {
                index: 8,
                result: CommandResult::Bool(true),
            }),
        },
        get(120, 130, "a/1", ReadMode::Consistent, None, 8),
        get(120, 130, "a/2", ReadMode::Consistent, None, 8),
    ];
    let stats = check(&h, &keys()).expect("linearizable");
    assert_eq!(stats.unknown_writes, 1);
    assert_eq!(stats.linearizable_reads, 4);
    assert_eq!(stats.stale_reads, 1);
}

#[test]
fn a_lost_acknowledged_write_is_caught() {
    let h = vec![
        put(0, 0, 10, "a/1", "x", Some(5)),
        put(0, 20, 30, "a/1", "y", Some(6)),
        // After a crash the cluster forgot "y".
        get(40, 50, "a/1", ReadMode::Consistent, Some(("x", 5)), 6),
    ];
    let err = check(&h, &keys()).unwrap_err();
    assert!(err.message.contains("not linearizable"), "{err}");
    assert!(err.message.contains(">> #2"), "the stuck read is marked: {err}");
}

#[test]
fn delete_tree_clears_every_covered_key() {
    let h = vec![
        put(0, 0, 10, "a/2", "x", Some(5)),
        Record {
            client: 0,
            node: 0,
            call: 20,
            ret: 30,
            req: Request::Write(Command::KvDeleteTree { prefix: "a/".into() }),
            resp: Some(Response::Written {
                index: 6,
                result: CommandResult::Bool(true),
            }),
        },
        get(40, 50, "a/2", ReadMode::Default, Some(("x", 5)), 6),
    ];
    assert!(check(&h, &keys()).is_err());
}

#[test]
fn a_stale_read_from_the_future_is_caught_but_an_old_one_is_fine() {
    let old = vec![
        put(0, 0, 10, "a/1", "x", Some(5)),
        put(0, 20, 30, "a/1", "y", Some(6)),
        get(40, 50, "a/1", ReadMode::Stale, Some(("x", 5)), 5),
    ];
    assert!(check(&old, &keys()).is_ok());
    let future = vec![
        get(0, 5, "a/1", ReadMode::Stale, Some(("x", 5)), 5),
        put(0, 10, 20, "a/1", "x", Some(5)),
    ];
    let err = check(&future, &keys()).unwrap_err();
    assert!(err.message.contains("from the future"), "{err}");
}

#[test]
fn a_value_must_keep_its_modify_index() {
    let h = vec![
        put(0, 0, 10, "a/1", "x", Some(5)),
        get(20, 30, "a/1", ReadMode::Stale, Some(("x", 7)), 7),
    ];
    let err = check(&h, &keys()).unwrap_err();
    assert!(err.message.contains("ModifyIndex 5 and later 7"), "{err}");
}

#[test]
fn a_value_nobody_wrote_is_caught() {
    let h = vec![get(20, 30, "a/1", ReadMode::Stale, Some(("ghost", 7)), 7)];
    assert!(check(&h, &keys()).unwrap_err().message.contains("no client ever wrote"));
}

#[test]
fn blocking_query_indexes_never_go_back_and_never_miss_a_change() {
    let ok = vec![
        put(0, 0, 10, "b/1", "x", Some(5)),
        get_with(2, (20, 30), "b/1", ReadMode::Default, Some(0), Some(("x", 5)), 5),
        put(0, 40, 50, "b/1", "y", Some(9)),
        get_with(2, (31, 55), "b/1", ReadMode::Default, Some(5), Some(("y", 9)), 9),
    ];
    assert!(check(&ok, &keys()).is_ok());

    let back = vec![
        put(0, 0, 10, "b/1", "x", Some(5)),
        get_with(2, (20, 30), "b/1", ReadMode::Default, Some(0), Some(("x", 5)), 7),
        get_with(2, (31, 55), "b/1", ReadMode::Default, Some(7), Some(("x", 5)), 6),
    ];
    assert!(check(&back, &keys()).unwrap_err().message.contains("went back"));

    let missed = vec![
        put(0, 0, 10, "b/1", "x", Some(5)),
        put(0, 20, 30, "b/1", "y", Some(9)),
        Record {
            client: 0,
            node: 0,
            call: 31,
            ret: 35,
            req: Request::Write(Command::KvDelete {
                key: "b/1".into(),
                cas: None,
            }),
            resp: Some(Response::Written {
                index: 10,
                result: CommandResult::Bool(true),
            }),
        },
        // Sent after "y" was acknowledged: the value (absent) fits, but the index shows a state from before "y"
        // (a read served from a stale state that happens to look the same).
        get_with(2, (40, 1000), "b/1", ReadMode::Default, Some(5), None, 5),
    ];
    assert!(check(&missed, &keys()).unwrap_err().message.contains("missed"));
}

/// A blocking query of `key` above `min` with a 5 s wait, answered with X-Consul-Index `index` (or never).
fn watch(client: usize, (call, ret): (u64, u64), key: &str, min: u64, index: Option<u64>) -> Record {
    let mut r = get_with(
        client,
        (call, ret),
        key,
        ReadMode::Default,
        Some(min),
        None,
        index.unwrap_or(0),
    );
    if let Request::KvRead { block: Some(b), .. } = &mut r.req {
        b.wait = Duration::from_secs(5);
    }
    if index.is_none() {
        r.resp = None;
    }
    r
}

const BOUND: WakeBound = WakeBound {
    from_us: 1_000_000,
    bound_us: 1_000_000,
    drift_ppm: 200_000,
};

#[test]
fn a_prompt_wake_up_passes() {
    let h = vec![
        watch(1, (1_100_000, 1_210_000), "a/1", 7, Some(9)),
        watch(2, (1_100_000, 1_900_000), "a/1", 7, Some(9)),
        put(0, 1_150_000, 1_200_000, "a/1", "x", Some(9)),
        // Nothing changed: it may sleep its whole wait (5 s, less a fast clock's share).
        watch(1, (1_300_000, 5_600_000), "a/1", 9, Some(9)),
        // Before the bound applies, anything goes.
        watch(3, (0, 900_000), "a/1", 3, Some(3)),
    ];
    assert_eq!(check_wakeups(&h, BOUND), Ok(3));
}

#[test]
fn a_late_wake_up_is_caught() {
    let h = vec![
        watch(1, (1_100_000, 1_210_000), "a/1", 7, Some(9)),
        // Parked on another node, woken only by its 5 s deadline.
        watch(2, (1_100_000, 6_200_000), "a/1", 7, Some(9)),
        put(0, 1_150_000, 1_200_000, "a/1", "x", Some(9)),
    ];
    let err = check_wakeups(&h, BOUND).unwrap_err();
    assert!(err.message.contains("missed wake-up: blocking query #1"), "{err}");
    assert!(err.message.contains("write #2 (ModifyIndex 9)"), "{err}");
    // A query the client gave up on is as late.
    let h = vec![
        watch(2, (1_100_000, 5_500_000), "a/1", 7, None),
        put(0, 1_150_000, 1_200_000, "a/1", "x", Some(9)),
    ];
    assert!(check_wakeups(&h, BOUND).is_err());
    // A write acknowledged before the query was sent must make it return at once.
    let h = vec![
        put(0, 1_150_000, 1_200_000, "a/1", "x", Some(9)),
        watch(2, (1_300_000, 6_300_000), "a/1", 7, Some(9)),
    ];
    assert!(check_wakeups(&h, BOUND).unwrap_err().message.contains("missed wake-up"));
    // A write of another key, or one at or below min_index, does not have to wake it.
    let h = vec![
        watch(2, (1_100_000, 6_200_000), "a/1", 9, Some(9)),
        put(0, 1_150_000, 1_200_000, "a/2", "x", Some(10)),
        put(0, 1_150_000, 1_200_000, "a/1", "y", Some(8)),
    ];
    assert_eq!(check_wakeups(&h, BOUND), Ok(1));
}

#[test]
fn an_early_return_without_a_change_is_caught() {
    let h = vec![watch(1, (1_100_000, 1_500_000), "a/1", 9, Some(9))];
    let err = check_wakeups(&h, BOUND).unwrap_err();
    assert!(err.message.contains("no change, yet its wait had not passed"), "{err}");
}
