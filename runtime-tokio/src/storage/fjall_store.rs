//! [`FjallStore`]: the Raft log and hard state in fjall, snapshots in files, one fsync per `sync`.
//!
//! Layout under `<data_dir>`: `LOCK` (held with `File::try_lock` while the store lives), `raft/log/` (the
//! fjall database: keyspace `log` maps a big-endian u64 index to a checksummed postcard `Entry`, keyspace
//! `meta` holds the checksummed `HardState`), `raft/snapshots/` (see `snapshot_file`).
//!
//! Each staged op is one fjall write batch, so it is atomic; the journal is only flushed and fdatasync'ed
//! by `sync` (`manual_journal_persist`), which is what makes group commit cheap. The store tracks the range
//! of stored indexes, so truncation and compaction delete exactly the keys in range (fjall has no range
//! delete) without scanning.

use super::check_append;
use super::codec::{decode_checked, encode_checked};
use super::snapshot_file::SnapshotDir;
use crate::driver::{LogStore, StorageError};
use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use concord_core::raft::{Entry, HardState, Index, PersistOp, Recovered, Snapshot};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

const HARD_STATE_KEY: &[u8] = b"hard_state";

/// What recovery found wrong and repaired; all zero/empty after a clean shutdown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Log entries deleted as a torn or corrupt tail (the first bad one and everything after it).
    pub truncated_entries: u64,
    /// Index of the first entry deleted as a torn tail, if any.
    pub truncated_from: Option<Index>,
    /// Damaged or partial snapshot files that were deleted.
    pub discarded_snapshots: Vec<PathBuf>,
}

/// Durable Raft storage on fjall. See the module docs for the layout.
pub struct FjallStore {
    // Field order is drop order: fjall closes before the lock is released.
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    snapshots: SnapshotDir,
    /// Index covered by the newest snapshot (0 without one).
    snapshot_index: Index,
    /// `first..=last` of the stored entries, contiguous; `None` when the log is empty.
    stored: Option<(Index, Index)>,
    /// Loaded by `open`, handed out by the first `recover`.
    recovered: Option<Recovered>,
    report: RecoveryReport,
    hard_state_path: PathBuf,
    _lock: File,
}

fn fjall_err(e: ::fjall::Error) -> StorageError {
    StorageError::Io(format!("fjall: {e}"))
}

/// An error opening or reading back the log store: I/O stays I/O; anything else (a checksum mismatch, an
/// undecodable table or journal) means the files are damaged, and the agent refuses to start.
fn damaged(raft_dir: &Path, e: ::fjall::Error) -> StorageError {
    match e {
        ::fjall::Error::Io(_) | ::fjall::Error::Poisoned | ::fjall::Error::Locked => fjall_err(e),
        e => StorageError::Corrupt(format!(
            "the Raft log store in {} is damaged ({e:?}); refusing to start rather than serve it. Restore the \
             data dir from a backup, or remove this server from the cluster (`operator raft remove-peer` on a \
             healthy server), delete {} and start it again to join as a new member",
            raft_dir.join("log").display(),
            raft_dir.display(),
        )),
    }
}

fn key(index: Index) -> [u8; 8] {
    index.to_be_bytes()
}

/// Take `<data_dir>/LOCK` for as long as the returned file is open.
fn lock_data_dir(data_dir: &Path) -> Result<File, StorageError> {
    let path = data_dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::Io(format!("cannot open lock file {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::Locked(data_dir.display().to_string())),
        Err(TryLockError::Error(e)) => Err(StorageError::Io(format!("cannot lock {}: {e}", path.display()))),
    }
}

impl FjallStore {
    /// Open (creating if needed) the store under `<data_dir>/raft/`, lock the data dir and recover: the
    /// result is handed out by the first [`LogStore::recover`] call, and what recovery repaired is in
    /// [`FjallStore::recovery_report`].
    pub fn open(data_dir: &Path) -> Result<FjallStore, StorageError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StorageError::Io(format!("cannot create data dir {}: {e}", data_dir.display())))?;
        let lock = lock_data_dir(data_dir)?;
        let raft_dir = data_dir.join("raft");
        let db_dir = raft_dir.join("log");
        let db = Database::builder(&db_dir)
            .manual_journal_persist(true)
            .open()
            .map_err(|e| match e {
                ::fjall::Error::Locked => StorageError::Locked(data_dir.display().to_string()),
                e => damaged(&raft_dir, e),
            })?;
        // Journal writes reach the OS only at `sync`: one write and one fdatasync per group.
        let options = || KeyspaceCreateOptions::default().manual_journal_persist(true);
        let log = db.keyspace("log", options).map_err(|e| damaged(&raft_dir, e))?;
        let meta = db.keyspace("meta", options).map_err(|e| damaged(&raft_dir, e))?;
        let snapshots = SnapshotDir::open(raft_dir.join("snapshots"))?;
        let mut store = FjallStore {
            db,
            log,
            meta,
            snapshots,
            snapshot_index: 0,
            stored: None,
            recovered: None,
            report: RecoveryReport::default(),
            hard_state_path: db_dir,
            _lock: lock,
        };
        let recovered = store.load()?;
        store.recovered = Some(recovered);
        Ok(store)
    }

    /// What the recovery done by [`FjallStore::open`] found damaged and repaired.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Read everything back, deleting a torn tail, entries the snapshot covers and damaged snapshots.
    fn load(&mut self) -> Result<Recovered, StorageError> {
        let hard_state = self.load_hard_state()?;
        let (snapshot, discarded) = self.snapshots.load_newest()?;
        self.snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
        if let Some(&(ref path, lost)) = discarded.iter().max_by_key(|(_, index)| *index) {
            // Decided before anything is deleted, so a refusal holds at every later start too.
            let reach = self.log_reach()?;
            if reach < lost {
                return Err(StorageError::Corrupt(format!(
                    "snapshot {} is damaged and neither an older snapshot nor the Raft log reaches its index \
                     {lost} (this server's intact state ends at {reach}); refusing to start rather than serve \
                     or vote with state it acknowledged and lost. Restore the data dir from a backup, or remove \
                     this server from the cluster (`operator raft remove-peer` on a healthy server), delete {} \
                     and start it again to join as a new member",
                    path.display(),
                    self.hard_state_path.parent().unwrap_or(&self.hard_state_path).display(),
                )));
            }
            let paths: Vec<PathBuf> = discarded.into_iter().map(|(p, _)| p).collect();
            self.snapshots.remove_damaged(&paths)?;
            self.report.discarded_snapshots.extend(paths);
        }
        let entries = self.load_log()?;
        self.stored = entries.first().zip(entries.last()).map(|(f, l)| (f.index, l.index));
        Ok(Recovered {
            hard_state,
            snapshot,
            entries,
        })
    }

    fn load_hard_state(&self) -> Result<HardState, StorageError> {
        let Some(bytes) = self.meta.get(HARD_STATE_KEY).map_err(fjall_err)? else {
            return Ok(HardState::default());
        };
        decode_checked(&bytes).map_err(|e| {
            StorageError::Corrupt(format!(
                "the Raft hard state (term and vote) in {} is damaged ({e}); refusing to start rather than \
                 forget a vote. Restore the data dir from a backup, or remove it and re-join this server as \
                 a new one",
                self.hard_state_path.display()
            ))
        })
    }

    /// The highest index the recovered state can reach without the damaged snapshots: the loaded snapshot's,
    /// or the last log key when the log continues it without a gap (a damaged entry further on is a torn
    /// tail, cut as usual: it was never acknowledged).
    fn log_reach(&self) -> Result<Index, StorageError> {
        let index_of = |guard: Option<::fjall::Guard>| -> Result<Option<Index>, StorageError> {
            let Some(guard) = guard else { return Ok(None) };
            let k = guard.key().map_err(fjall_err)?;
            Ok(<[u8; 8]>::try_from(&*k).map(u64::from_be_bytes).ok())
        };
        let first = index_of(self.log.first_key_value())?;
        let last = index_of(self.log.last_key_value())?;
        Ok(match (first, last) {
            (Some(first), Some(last)) if first <= self.snapshot_index + 1 => last.max(self.snapshot_index),
            _ => self.snapshot_index,
        })
    }

    /// The good prefix of the log after the snapshot; deletes everything else from the log keyspace.
    fn load_log(&mut self) -> Result<Vec<Entry>, StorageError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut covered = Vec::new();
        let mut torn: Vec<Vec<u8>> = Vec::new();
        let raft_dir = self
            .hard_state_path
            .parent()
            .unwrap_or(&self.hard_state_path)
            .to_path_buf();
        for guard in self.log.iter() {
            let (k, v) = guard.into_inner().map_err(|e| damaged(&raft_dir, e))?;
            if !torn.is_empty() {
                torn.push(k.to_vec());
                continue;
            }
            let index = <[u8; 8]>::try_from(&*k).map(u64::from_be_bytes).ok();
            if index.is_some_and(|i| i <= self.snapshot_index) {
                covered.push(k.to_vec());
                continue;
            }
            let expected = entries.last().map_or(self.snapshot_index + 1, |e| e.index + 1);
            let problem = match (index, decode_checked::<Entry>(&v)) {
                (None, _) => Some(format!("a key of {} bytes is not a log index", k.len())),
                (Some(i), _) if i != expected => Some(format!("expected index {expected}, found {i}: a gap")),
                (Some(_), Err(e)) => Some(e.to_string()),
                (Some(i), Ok(entry)) if entry.index != i => Some(format!("key {i} holds entry {}", entry.index)),
                (Some(_), Ok(entry)) => {
                    entries.push(entry);
                    None
                }
            };
            if let Some(problem) = problem {
                tracing::warn!(
                    index = expected,
                    "the Raft log has a torn or corrupt tail ({problem}); deleting it and every entry after it"
                );
                self.report.truncated_from = Some(expected);
                torn.push(k.to_vec());
            }
        }
        self.report.truncated_entries += torn.len() as u64;
        if !covered.is_empty() || !torn.is_empty() {
            let mut batch = self.db.batch();
            for k in covered.into_iter().chain(torn) {
                batch.remove(&self.log, k);
            }
            batch
                .durability(Some(PersistMode::SyncData))
                .commit()
                .map_err(fjall_err)?;
        }
        Ok(entries)
    }

    /// Last index of the log or of the snapshot, whichever is higher: the next append may start after it.
    fn last_index(&self) -> Index {
        self.stored
            .map_or(self.snapshot_index, |(_, last)| last.max(self.snapshot_index))
    }

    /// Delete stored entries in `from..=to` (clamped to what is stored) and update the stored range.
    fn delete_range(&mut self, from: Index, to: Index) -> Result<(), StorageError> {
        let Some((first, last)) = self.stored else {
            return Ok(());
        };
        let (lo, hi) = (from.max(first), to.min(last));
        if lo > hi {
            return Ok(());
        }
        let mut batch = self.db.batch();
        for index in lo..=hi {
            batch.remove(&self.log, key(index));
        }
        batch.commit().map_err(fjall_err)?;
        self.stored = match (lo > first, hi < last) {
            (false, false) => None,
            (true, false) => Some((first, lo - 1)),
            (false, true) => Some((hi + 1, last)),
            (true, true) => unreachable!("deleting from the middle would leave a gap"),
        };
        Ok(())
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        check_append(entries, self.last_index())?;
        let (Some(head), Some(tail)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let mut batch = self.db.batch();
        let mut first = head.index;
        if let Some((old_first, last)) = self.stored {
            // Stored entries that do not reach `head` all lie at or below the snapshot (`check_append`
            // saw no gap): drop them so the stored range stays contiguous.
            let keep_old = head.index <= last + 1;
            let doomed = if keep_old {
                tail.index + 1..=last
            } else {
                old_first..=last
            };
            for index in doomed {
                batch.remove(&self.log, key(index));
            }
            if keep_old {
                first = old_first.min(head.index);
            }
        }
        for entry in entries {
            batch.insert(&self.log, key(entry.index), encode_checked(entry));
        }
        batch.commit().map_err(fjall_err)?;
        self.stored = Some((first, tail.index));
        Ok(())
    }

    fn store_snapshot(&mut self, snapshot: &Snapshot, keep_log: bool) -> Result<(), StorageError> {
        // The file is durable before any entry it covers is deleted.
        self.snapshots.write(snapshot)?;
        self.snapshot_index = snapshot.meta.index;
        let up_to = if keep_log { snapshot.meta.index } else { Index::MAX };
        self.delete_range(0, up_to)
    }

    #[cfg(test)]
    pub(crate) fn log_keyspace(&self) -> &Keyspace {
        &self.log
    }

    #[cfg(test)]
    pub(crate) fn meta_keyspace(&self) -> &Keyspace {
        &self.meta
    }

    #[cfg(test)]
    pub(crate) fn snapshot_dir(&self) -> &Path {
        self.snapshots.path()
    }
}

impl LogStore for FjallStore {
    fn recover(&mut self) -> Result<Recovered, StorageError> {
        match self.recovered.take() {
            Some(recovered) => Ok(recovered),
            None => self.load(),
        }
    }

    fn stage(&mut self, op: &PersistOp) -> Result<(), StorageError> {
        // Anything staged makes the state read at open stale.
        self.recovered = None;
        match op {
            PersistOp::HardState(hard_state) => self
                .meta
                .insert(HARD_STATE_KEY, encode_checked(hard_state))
                .map_err(fjall_err),
            PersistOp::Append(entries) => self.append(entries),
            PersistOp::Truncate { from } => self.delete_range(*from, Index::MAX),
            PersistOp::Snapshot { snapshot, keep_log } => self.store_snapshot(snapshot, *keep_log),
            PersistOp::Compact { up_to } => self.delete_range(0, *up_to),
        }
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.db.persist(PersistMode::SyncData).map_err(fjall_err)
    }
}
