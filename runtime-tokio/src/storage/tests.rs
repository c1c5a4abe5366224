use super::codec::encode_checked;
use super::*;
use crate::driver::LogStore;
use bytes::Bytes;
use concord_core::raft::{
    Entry, HardState, Index, Membership, Payload, PersistOp, Recovered, ServerInfo, Snapshot, SnapshotMeta, Term,
};
use concord_core::NodeId;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

fn entry(term: Term, index: Index) -> Entry {
    Entry {
        term,
        index,
        payload: Payload::Command(Bytes::from(format!("cmd {term}/{index}"))),
    }
}

fn entries(term: Term, range: std::ops::RangeInclusive<Index>) -> Vec<Entry> {
    range.map(|i| entry(term, i)).collect()
}

fn snapshot(term: Term, index: Index) -> Snapshot {
    let mut membership = Membership::default();
    membership.servers.insert(
        NodeId(1),
        ServerInfo {
            name: "s1".into(),
            address: "127.0.0.1:8300".into(),
            voter: true,
        },
    );
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            membership,
            digest: index.wrapping_mul(31),
        },
        data: Bytes::from(format!("state machine at {index}").repeat(10)),
    }
}

/// Open the store under `dir`. fjall releases its own directory lock when its last background worker has let
/// go of the database, which on a loaded machine can be a moment after the previous store was dropped, so a
/// `Locked` answer is retried until a deadline (any other error fails at once).
fn open(dir: &Path) -> FjallStore {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match FjallStore::open(dir) {
            Ok(store) => return store,
            Err(StorageError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open store: {e}"),
        }
    }
}

fn stage_sync(store: &mut dyn LogStore, ops: &[PersistOp]) {
    for op in ops {
        store.stage(op).expect("stage");
    }
    store.sync().expect("sync");
}

/// What a fresh open of `dir` recovers, and what it had to repair.
fn reopen(dir: &Path) -> (Recovered, RecoveryReport) {
    let mut store = open(dir);
    let recovered = store.recover().expect("recover");
    (recovered, store.recovery_report().clone())
}

fn stored_keys(store: &FjallStore) -> Vec<Index> {
    store
        .log_keyspace()
        .iter()
        .map(|g| u64::from_be_bytes((*g.key().unwrap()).try_into().unwrap()))
        .collect()
}

#[test]
fn fresh_store_recovers_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered, Recovered::default());
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(MemStore::new().recover().unwrap(), Recovered::default());
}

#[test]
fn append_overwrites_conflicting_suffix_and_truncate_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut mem = MemStore::new();
    let ops = [
        PersistOp::Append(entries(1, 1..=5)),
        // Overwrite 3..=4 with term 2: entry 5 (term 1) must go too.
        PersistOp::Append(entries(2, 3..=4)),
    ];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    let expected = [entries(1, 1..=2), entries(2, 3..=4)].concat();
    assert_eq!(store.recover().unwrap().entries, expected);
    assert_eq!(mem.recover().unwrap().entries, expected);
    assert_eq!(stored_keys(&store), vec![1, 2, 3, 4]);

    let ops = [PersistOp::Truncate { from: 3 }, PersistOp::Append(entries(3, 3..=6))];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    drop(store);
    let expected = [entries(1, 1..=2), entries(3, 3..=6)].concat();
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.entries, expected);
    assert_eq!(mem.recover().unwrap().entries, expected);
    assert_eq!(report, RecoveryReport::default());

    let mut store = open(dir.path());
    stage_sync(&mut store, &[PersistOp::Truncate { from: 1 }]);
    drop(store);
    assert_eq!(reopen(dir.path()).0.entries, vec![]);
}

#[test]
fn append_leaving_a_gap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(&mut store, &[PersistOp::Append(entries(1, 1..=3))]);
    let gap = PersistOp::Append(entries(1, 5..=6));
    assert!(matches!(store.stage(&gap), Err(StorageError::Corrupt(_))));
    assert!(matches!(MemStore::new().stage(&gap), Err(StorageError::Corrupt(_))));
    let not_contiguous = PersistOp::Append(vec![entry(1, 4), entry(1, 6)]);
    assert!(matches!(store.stage(&not_contiguous), Err(StorageError::Corrupt(_))));
    drop(store);
    assert_eq!(reopen(dir.path()).0.entries, entries(1, 1..=3));
}

#[test]
fn hard_state_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let first = HardState {
        term: 3,
        vote: Some(NodeId(7)),
    };
    let second = HardState { term: 4, vote: None };
    stage_sync(&mut store, &[PersistOp::HardState(first)]);
    drop(store);
    assert_eq!(reopen(dir.path()).0.hard_state, first);
    let mut store = open(dir.path());
    stage_sync(&mut store, &[PersistOp::HardState(second)]);
    drop(store);
    assert_eq!(reopen(dir.path()).0.hard_state, second);
}

#[test]
fn corrupt_hard_state_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(
        &mut store,
        &[PersistOp::HardState(HardState {
            term: 9,
            vote: Some(NodeId(2)),
        })],
    );
    let mut bytes = store.meta_keyspace().get(b"hard_state").unwrap().unwrap().to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    store.meta_keyspace().insert(b"hard_state", bytes).unwrap();
    store.sync().unwrap();
    drop(store);
    match FjallStore::open(dir.path()) {
        Err(StorageError::Corrupt(msg)) => {
            assert!(msg.contains("hard state") && msg.contains("refusing to start"), "{msg}")
        }
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("a damaged hard state must not open"),
    }
}

#[test]
fn snapshot_keeps_later_entries_and_compact_deletes_covered_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut mem = MemStore::new();
    let ops = [
        PersistOp::Append(entries(1, 1..=10)),
        PersistOp::Snapshot {
            snapshot: snapshot(1, 5),
            keep_log: true,
        },
    ];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    assert_eq!(stored_keys(&store), (6..=10).collect::<Vec<_>>());
    drop(store);
    let (recovered, _) = reopen(dir.path());
    assert_eq!(recovered.snapshot, Some(snapshot(1, 5)));
    assert_eq!(recovered.entries, entries(1, 6..=10));
    assert_eq!(mem.recover().unwrap(), recovered);

    let mut store = open(dir.path());
    let ops = [PersistOp::Append(entries(2, 11..=12)), PersistOp::Compact { up_to: 8 }];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    assert_eq!(stored_keys(&store), (9..=12).collect::<Vec<_>>());
    drop(store);
    // Entries 6..=8 are gone, but the snapshot ends at 5: the log after it has a hole, so none of it is
    // usable. (The core only compacts up to a durable snapshot; this checks recovery never serves a gap.)
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.entries, vec![]);
    assert_eq!(report.truncated_from, Some(6));
    assert_eq!(report.truncated_entries, 4);
}

#[test]
fn compact_up_to_the_snapshot_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let ops = [
        PersistOp::Append(entries(1, 1..=10)),
        PersistOp::Snapshot {
            snapshot: snapshot(1, 7),
            keep_log: true,
        },
        PersistOp::Compact { up_to: 7 },
        PersistOp::Append(entries(1, 11..=11)),
    ];
    stage_sync(&mut store, &ops);
    drop(store);
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.snapshot, Some(snapshot(1, 7)));
    assert_eq!(recovered.entries, entries(1, 8..=11));
    assert_eq!(report, RecoveryReport::default());
}

#[test]
fn installed_snapshot_without_keep_log_deletes_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut mem = MemStore::new();
    let ops = [
        PersistOp::Append(entries(1, 1..=10)),
        PersistOp::Snapshot {
            snapshot: snapshot(3, 20),
            keep_log: false,
        },
    ];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    assert_eq!(stored_keys(&store), Vec::<Index>::new());
    // The log continues right after the snapshot.
    let ops = [PersistOp::Append(entries(3, 21..=22))];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    drop(store);
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.snapshot, Some(snapshot(3, 20)));
    assert_eq!(recovered.entries, entries(3, 21..=22));
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(mem.recover().unwrap(), recovered);
}

#[test]
fn only_the_two_newest_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    for index in [5, 10, 15] {
        stage_sync(
            &mut store,
            &[PersistOp::Snapshot {
                snapshot: snapshot(2, index),
                keep_log: false,
            }],
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(store.snapshot_dir())
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["2-10.snap", "2-15.snap"]);
    // A snapshot older than the stored ones replaces them.
    stage_sync(
        &mut store,
        &[PersistOp::Snapshot {
            snapshot: snapshot(2, 7),
            keep_log: false,
        }],
    );
    drop(store);
    assert_eq!(reopen(dir.path()).0.snapshot, Some(snapshot(2, 7)));
}

fn corrupt_value(store: &FjallStore, index: Index) {
    let mut bytes = store
        .log_keyspace()
        .get(index.to_be_bytes())
        .unwrap()
        .expect("entry exists")
        .to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    store.log_keyspace().insert(index.to_be_bytes(), bytes).unwrap();
}

#[test]
fn corrupt_entry_truncates_the_tail_and_keeps_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(&mut store, &[PersistOp::Append(entries(1, 1..=10))]);
    corrupt_value(&store, 8);
    store.sync().unwrap();
    drop(store);

    let mut store = open(dir.path());
    assert_eq!(
        store.recovery_report(),
        &RecoveryReport {
            truncated_entries: 3,
            truncated_from: Some(8),
            discarded_snapshots: vec![]
        }
    );
    assert_eq!(store.recover().unwrap().entries, entries(1, 1..=7));
    assert_eq!(stored_keys(&store), (1..=7).collect::<Vec<_>>());
    // The log goes on from the good prefix.
    stage_sync(&mut store, &[PersistOp::Append(entries(2, 8..=9))]);
    drop(store);
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.entries, [entries(1, 1..=7), entries(2, 8..=9)].concat());
    assert_eq!(report, RecoveryReport::default());
}

#[test]
fn garbage_or_a_gap_after_the_last_entry_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(&mut store, &[PersistOp::Append(entries(1, 1..=10))]);
    // A half-written value at the next index, and a well-formed entry after a hole.
    store.log_keyspace().insert(11u64.to_be_bytes(), vec![1, 2, 3]).unwrap();
    store
        .log_keyspace()
        .insert(13u64.to_be_bytes(), encode_checked(&entry(1, 13)))
        .unwrap();
    store.sync().unwrap();
    drop(store);
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.entries, entries(1, 1..=10));
    assert_eq!(report.truncated_from, Some(11));
    assert_eq!(report.truncated_entries, 2);

    let mut store = open(dir.path());
    store
        .log_keyspace()
        .insert(12u64.to_be_bytes(), encode_checked(&entry(1, 12)))
        .unwrap();
    store.sync().unwrap();
    drop(store);
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.entries, entries(1, 1..=10));
    assert_eq!(report.truncated_from, Some(11));
    assert_eq!(report.truncated_entries, 1);
}

#[test]
fn corrupt_newest_snapshot_without_a_log_reaching_it_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(
        &mut store,
        &[
            PersistOp::Append(entries(1, 1..=10)),
            PersistOp::Snapshot {
                snapshot: snapshot(1, 4),
                keep_log: true,
            },
            PersistOp::Snapshot {
                snapshot: snapshot(1, 6),
                keep_log: true,
            },
        ],
    );
    let snap_dir = store.snapshot_dir().to_path_buf();
    drop(store);
    let newest = snap_dir.join("1-6.snap");
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&newest, bytes).unwrap();
    // A crash mid-write leaves a temp file behind; it must not be mistaken for a snapshot.
    std::fs::write(snap_dir.join("1-9.snap.tmp"), b"partial").unwrap();

    // Entries 5..=6 were deleted when snapshot 6 was taken: snapshot 4 and the log (7..=10) cannot rebuild
    // the state this server acknowledged, so it refuses to start, and keeps refusing (nothing was deleted).
    for _ in 0..2 {
        match FjallStore::open(dir.path()) {
            Err(StorageError::Corrupt(msg)) => {
                assert!(msg.contains("1-6.snap is damaged"), "{msg}");
                assert!(msg.contains("index 6") && msg.contains("ends at 4"), "{msg}");
                assert!(msg.contains("refusing to start"), "{msg}");
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
        assert!(newest.exists());
    }
    assert!(!snap_dir.join("1-9.snap.tmp").exists());
}

/// The crash window of a snapshot: its file is durable, the entries it covers are not deleted yet. If that
/// newest file is then damaged, the older snapshot plus the log still reach its index: recovery goes on
/// without it (and deletes it), losing nothing.
#[test]
fn damaged_newest_snapshot_the_log_still_covers_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(
        &mut store,
        &[
            PersistOp::Append(entries(1, 1..=10)),
            PersistOp::Snapshot {
                snapshot: snapshot(1, 4),
                keep_log: true,
            },
        ],
    );
    let snap_dir = store.snapshot_dir().to_path_buf();
    drop(store);
    // A "newer" snapshot file whose contents do not match its name: damaged.
    let newest = snap_dir.join("1-6.snap");
    std::fs::copy(snap_dir.join("1-4.snap"), &newest).unwrap();
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.snapshot, Some(snapshot(1, 4)));
    assert_eq!(recovered.entries, entries(1, 5..=10));
    assert_eq!(report.discarded_snapshots, vec![newest.clone()]);
    assert!(!newest.exists());
}

#[test]
fn truncated_only_snapshot_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    stage_sync(
        &mut store,
        &[PersistOp::Snapshot {
            snapshot: snapshot(1, 4),
            keep_log: false,
        }],
    );
    let path = store.snapshot_dir().join("1-4.snap");
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(
        matches!(FjallStore::open(dir.path()), Err(StorageError::Corrupt(m)) if m.contains("ends at 0")),
        "the only snapshot is damaged and the log was compacted under it: refuse, not start empty"
    );
    assert!(path.exists());
}

#[test]
fn second_open_of_a_data_dir_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    match FjallStore::open(dir.path()) {
        Err(StorageError::Locked(path)) => assert_eq!(path, dir.path().display().to_string()),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("two stores opened the same data dir"),
    }
    drop(store);
    FjallStore::open(dir.path()).expect("open after the first store is dropped");
}

/// A store that counts syncs and, when given a gate, signals on entering its first sync and waits there
/// until the gate is released, so a test can queue batches behind a sync in progress.
struct CountingStore {
    inner: MemStore,
    syncs: Arc<AtomicUsize>,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    fail_sync: bool,
}

impl LogStore for CountingStore {
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        self.inner.recover()
    }

    fn stage(&mut self, op: &PersistOp) -> Result<(), StorageError> {
        self.inner.stage(op)
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if let Some((entered, release)) = self.gate.take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        if self.fail_sync {
            return Err(StorageError::Io("disk on fire".into()));
        }
        Ok(())
    }
}

#[test]
fn writer_groups_queued_batches_into_one_sync() {
    let syncs = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let store = CountingStore {
        inner: MemStore::new(),
        syncs: syncs.clone(),
        gate: Some((entered_tx, release_rx)),
        fail_sync: false,
    };
    let mut writer = spawn_writer(Box::new(store));
    writer.tx.send((1, vec![PersistOp::Append(entries(1, 1..=1))])).unwrap();
    entered_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("writer syncs the first batch");
    // While the first sync is in progress, 99 more batches queue up.
    for seq in 2..=100 {
        writer
            .tx
            .send((seq, vec![PersistOp::Append(entries(1, seq..=seq))]))
            .unwrap();
    }
    release_tx.send(()).unwrap();
    assert_eq!(writer.done.blocking_recv().unwrap().unwrap(), 1);
    assert_eq!(writer.done.blocking_recv().unwrap().unwrap(), 100);
    assert_eq!(syncs.load(Ordering::SeqCst), 2);
    drop(writer.tx);
    writer.thread.join().unwrap();
    assert!(writer.done.blocking_recv().is_none());
}

#[test]
fn writer_reports_an_error_and_stops() {
    let syncs = Arc::new(AtomicUsize::new(0));
    let store = CountingStore {
        inner: MemStore::new(),
        syncs: syncs.clone(),
        gate: None,
        fail_sync: true,
    };
    let mut writer = spawn_writer(Box::new(store));
    writer.tx.send((1, vec![PersistOp::Append(entries(1, 1..=1))])).unwrap();
    assert!(matches!(writer.done.blocking_recv(), Some(Err(StorageError::Io(_)))));
    writer.thread.join().unwrap();
    assert!(writer.done.blocking_recv().is_none());
    assert!(
        writer.tx.send((2, vec![])).is_err(),
        "a stopped writer takes no more batches"
    );
    assert_eq!(syncs.load(Ordering::SeqCst), 1);
}

#[test]
fn writer_reports_a_bad_op_instead_of_syncing_it() {
    let syncs = Arc::new(AtomicUsize::new(0));
    let store = CountingStore {
        inner: MemStore::new(),
        syncs: syncs.clone(),
        gate: None,
        fail_sync: false,
    };
    let mut writer = spawn_writer(Box::new(store));
    writer.tx.send((1, vec![PersistOp::Append(entries(1, 5..=5))])).unwrap();
    assert!(matches!(
        writer.done.blocking_recv(),
        Some(Err(StorageError::Corrupt(_)))
    ));
    writer.thread.join().unwrap();
    assert_eq!(syncs.load(Ordering::SeqCst), 0);
}

#[test]
fn writer_on_fjall_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.recover().unwrap();
    let mut writer = spawn_writer(Box::new(store));
    for seq in 1..=20 {
        let ops = vec![
            PersistOp::HardState(HardState {
                term: seq,
                vote: Some(NodeId(1)),
            }),
            PersistOp::Append(entries(seq, seq..=seq)),
        ];
        writer.tx.send((seq, ops)).unwrap();
    }
    let mut up_to = 0;
    while up_to < 20 {
        let seq = writer.done.blocking_recv().unwrap().unwrap();
        assert!(seq > up_to, "reported seqs increase");
        up_to = seq;
    }
    drop(writer.tx);
    writer.thread.join().unwrap();
    let (recovered, _) = reopen(dir.path());
    assert_eq!(
        recovered.hard_state,
        HardState {
            term: 20,
            vote: Some(NodeId(1))
        }
    );
    assert_eq!(recovered.entries, (1..=20).map(|i| entry(i, i)).collect::<Vec<_>>());
}

const CRASH_DIR_ENV: &str = "CONCORD_STORAGE_CRASH_DIR";
const CRASH_PER_BATCH: u64 = 10;
const CRASH_IN_FLIGHT: u64 = 20;
const CRASH_ABORT_AT: u64 = 100;

/// Not a test on its own: run by `crash_loses_nothing_synced` as a child process (with `CRASH_DIR_ENV`
/// set). Writes through the writer with batches in flight, prints each durable point and aborts mid-way.
#[test]
fn crash_child() {
    use std::io::Write;
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let mut store = open(Path::new(&dir));
    store.recover().unwrap();
    let mut writer = spawn_writer(Box::new(store));
    let send = |seq: u64| {
        let first = (seq - 1) * CRASH_PER_BATCH + 1;
        let ops = vec![
            PersistOp::HardState(HardState { term: seq, vote: None }),
            PersistOp::Append(entries(seq, first..=seq * CRASH_PER_BATCH)),
        ];
        writer.tx.send((seq, ops)).unwrap();
    };
    let mut sent = 0;
    while sent < CRASH_IN_FLIGHT {
        sent += 1;
        send(sent);
    }
    let mut out = std::io::stdout().lock();
    loop {
        let seq = writer.done.blocking_recv().unwrap().unwrap();
        writeln!(out, "synced {seq}").unwrap();
        out.flush().unwrap();
        if seq >= CRASH_ABORT_AT {
            std::process::abort();
        }
        while sent < seq + CRASH_IN_FLIGHT {
            sent += 1;
            send(sent);
        }
    }
}

#[test]
fn crash_loses_nothing_synced() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "storage::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let synced = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("synced ")?.parse::<u64>().ok())
        .max();
    let synced = synced.unwrap_or_else(|| panic!("child reported nothing: {stdout}"));
    assert!(synced >= CRASH_ABORT_AT);

    let (recovered, _) = reopen(dir.path());
    // Everything reported durable is there; more may be (written before the abort, not yet reported).
    assert!(recovered.hard_state.term >= synced);
    let last = recovered.entries.last().map_or(0, |e| e.index);
    assert!(
        last >= synced * CRASH_PER_BATCH,
        "lost synced entries: last {last}, synced batch {synced}"
    );
    for (i, e) in recovered.entries.iter().enumerate() {
        let index = i as u64 + 1;
        assert_eq!(*e, entry(index.div_ceil(CRASH_PER_BATCH), index));
    }
}

mod model {
    //! FjallStore against MemStore on random op sequences: after a reopen, fjall recovers exactly what
    //! the in-memory model holds.
    use super::*;
    use proptest::prelude::*;

    /// Turn a raw choice into an op valid for the model's current state (no gaps, compaction only up to
    /// the snapshot), as the core would issue it.
    fn make_op(model: &mut MemStore, term: &mut Term, (kind, a, b): (u8, u8, u8)) -> PersistOp {
        let state = model.recover().unwrap();
        let snap = state.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let last = state.entries.last().map_or(snap, |e| e.index);
        let (a, b) = (u64::from(a), u64::from(b));
        match kind % 5 {
            0 => {
                *term += 1;
                let first = (last + 1).saturating_sub(a % 3).max(snap + 1);
                PersistOp::Append(entries(*term, first..=first + b % 5))
            }
            1 => PersistOp::Truncate {
                from: (last + 1).saturating_sub(a % 3).max(snap + 1),
            },
            2 if last > snap && b % 2 == 0 => PersistOp::Snapshot {
                snapshot: snapshot(*term, snap + 1 + a % (last - snap)),
                keep_log: true,
            },
            2 => PersistOp::Snapshot {
                snapshot: snapshot(*term, snap + 1 + a % 8),
                keep_log: false,
            },
            3 => PersistOp::Compact { up_to: snap },
            _ => PersistOp::HardState(HardState {
                term: *term,
                vote: (a % 2 == 0).then_some(NodeId(b.into())),
            }),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn fjall_recovers_what_the_model_holds(
            choices in proptest::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..40),
            reopen_every in 3usize..15,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = open(dir.path());
            let mut model = MemStore::new();
            let mut term = 0;
            for (i, choice) in choices.into_iter().enumerate() {
                let op = make_op(&mut model, &mut term, choice);
                model.stage(&op).unwrap();
                store.stage(&op).unwrap();
                if i % reopen_every == reopen_every - 1 {
                    store.sync().unwrap();
                    drop(store);
                    store = open(dir.path());
                    prop_assert_eq!(store.recovery_report(), &RecoveryReport::default());
                    prop_assert_eq!(store.recover().unwrap(), model.recover().unwrap());
                }
            }
            store.sync().unwrap();
            drop(store);
            let (recovered, report) = reopen(dir.path());
            prop_assert_eq!(report, RecoveryReport::default());
            prop_assert_eq!(recovered, model.recover().unwrap());
        }
    }
}

/// `cargo test -p concord --release storage::tests::measure_append_throughput -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a check"]
fn measure_append_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let payload = Bytes::from(vec![0xab; 200]);
    let start = std::time::Instant::now();
    let mut in_sync = Duration::ZERO;
    for batch in 0..1000u64 {
        let batch_entries = (1..=100).map(|i| Entry {
            term: 1,
            index: batch * 100 + i,
            payload: Payload::Command(payload.clone()),
        });
        store.stage(&PersistOp::Append(batch_entries.collect())).unwrap();
        let sync_start = std::time::Instant::now();
        store.sync().unwrap();
        in_sync += sync_start.elapsed();
    }
    let elapsed = start.elapsed();
    drop(store);
    let reopen_start = std::time::Instant::now();
    let (recovered, _) = reopen(dir.path());
    println!(
        "100k 200-byte appends, one sync per 100: {:.3} s ({:.0} entries/s, {:.3} s of it in the 1000 syncs); \
         recovery of {} entries: {:.3} s",
        elapsed.as_secs_f64(),
        100_000.0 / elapsed.as_secs_f64(),
        in_sync.as_secs_f64(),
        recovered.entries.len(),
        reopen_start.elapsed().as_secs_f64()
    );
}

#[test]
fn entries_below_the_snapshot_never_leave_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut mem = MemStore::new();
    let ops = [
        PersistOp::Snapshot {
            snapshot: snapshot(2, 20),
            keep_log: false,
        },
        // Entries the snapshot already covers (useless, but not a gap) ...
        PersistOp::Append(entries(1, 5..=6)),
        // ... and the log going on after the snapshot.
        PersistOp::Append(entries(2, 21..=22)),
    ];
    stage_sync(&mut store, &ops);
    stage_sync(&mut mem, &ops);
    assert_eq!(stored_keys(&store), vec![21, 22]);
    drop(store);
    let (recovered, report) = reopen(dir.path());
    assert_eq!(recovered.entries, entries(2, 21..=22));
    assert_eq!(report, RecoveryReport::default());
    assert_eq!(mem.recover().unwrap(), recovered);
}
