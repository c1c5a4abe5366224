//! Snapshot files: `<dir>/<term>-<index>.snap`, each a header then the postcard-encoded `Snapshot`.
//!
//! Header (20 bytes): magic `CSNP`, format version (u32 LE), body length (u64 LE), crc32 of the body
//! (u32 LE). A file is written under a `.tmp` name, fsynced, renamed into place and the directory fsynced,
//! so a crash leaves either the whole file or a leftover temp file that recovery deletes.

use crate::driver::StorageError;
use concord_core::raft::{Index, Snapshot, Term};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"CSNP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 20;
const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
/// How many snapshot files are kept: the newest, plus one to fall back on if the newest is damaged.
const KEEP: usize = 2;

/// A damaged snapshot file and the index its name claims.
pub(crate) type Damaged = (PathBuf, Index);

pub(crate) struct SnapshotDir {
    path: PathBuf,
}

/// A snapshot file's identity, taken from its name. Ordered by index, then term: the newest is the max.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SnapName {
    index: Index,
    term: Term,
}

impl SnapName {
    fn file_name(self) -> String {
        format!("{}-{}{SUFFIX}", self.term, self.index)
    }

    fn parse(name: &str) -> Option<SnapName> {
        let (term, index) = name.strip_suffix(SUFFIX)?.split_once('-')?;
        Some(SnapName {
            term: term.parse().ok()?,
            index: index.parse().ok()?,
        })
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Io(format!("{what} {}: {e}", path.display()))
}

impl SnapshotDir {
    pub(crate) fn open(path: PathBuf) -> Result<SnapshotDir, StorageError> {
        fs::create_dir_all(&path).map_err(|e| io_err("cannot create snapshot dir", &path, e))?;
        Ok(SnapshotDir { path })
    }

    /// Make `snapshot` durable, then delete every other file that is newer than it (it replaces them)
    /// and all but the newest `KEEP` files.
    pub(crate) fn write(&self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let name = SnapName {
            index: snapshot.meta.index,
            term: snapshot.meta.term,
        };
        let final_path = self.path.join(name.file_name());
        let tmp_path = self.path.join(format!("{}-{}{TMP_SUFFIX}", name.term, name.index));
        let body = postcard::to_allocvec(snapshot).expect("postcard encoding into a Vec cannot fail");
        let mut file = File::create(&tmp_path).map_err(|e| io_err("cannot create", &tmp_path, e))?;
        file.write_all(&file_header(&body))
            .and_then(|()| file.write_all(&body))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_err("cannot write", &tmp_path, e))?;
        drop(file);
        fs::rename(&tmp_path, &final_path).map_err(|e| io_err("cannot rename", &tmp_path, e))?;
        self.sync_dir()?;

        let mut others: Vec<SnapName> = self.list()?.into_iter().filter(|n| *n != name).collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        let (newer, older): (Vec<_>, Vec<_>) = others.into_iter().partition(|n| *n > name);
        for stale in newer.into_iter().chain(older.into_iter().skip(KEEP - 1)) {
            self.remove(&self.path.join(stale.file_name()))?;
        }
        Ok(())
    }

    /// Load the newest snapshot that validates. Damaged or partial files newer than it are reported (with a
    /// warning) and returned in the second element, not deleted: the caller decides whether it can go on
    /// without them ([`SnapshotDir::remove_damaged`]). Leftover temp files are deleted silently.
    pub(crate) fn load_newest(&self) -> Result<(Option<Snapshot>, Vec<Damaged>), StorageError> {
        let mut names = self.list()?;
        names.sort_unstable_by(|a, b| b.cmp(a));
        let mut discarded = Vec::new();
        for name in names {
            let path = self.path.join(name.file_name());
            match read_file(&path, name) {
                Ok(snapshot) => return Ok((Some(snapshot), discarded)),
                Err(reason) => {
                    tracing::warn!(
                        path = %path.display(),
                        "damaged snapshot file ({reason}); trying an older snapshot"
                    );
                    discarded.push((path, name.index));
                }
            }
        }
        Ok((None, discarded))
    }

    /// The snapshot files present, in no particular order; deletes leftover temp files on the way.
    fn list(&self) -> Result<Vec<SnapName>, StorageError> {
        let read = fs::read_dir(&self.path).map_err(|e| io_err("cannot list", &self.path, e))?;
        let mut names = Vec::new();
        for dirent in read {
            let dirent = dirent.map_err(|e| io_err("cannot list", &self.path, e))?;
            let file_name = dirent.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.ends_with(TMP_SUFFIX) {
                self.remove(&dirent.path())?;
            } else if let Some(name) = SnapName::parse(file_name) {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Delete damaged snapshot files once recovery decided to go on without them.
    pub(crate) fn remove_damaged(&self, paths: &[PathBuf]) -> Result<(), StorageError> {
        paths.iter().try_for_each(|p| self.remove(p))
    }

    fn remove(&self, path: &Path) -> Result<(), StorageError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("cannot delete", path, e)),
        }
    }

    fn sync_dir(&self) -> Result<(), StorageError> {
        File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| io_err("cannot sync directory", &self.path, e))
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Read and validate one snapshot file; the error says why it was rejected.
fn read_file(path: &Path, name: SnapName) -> Result<Snapshot, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    decode_file(&bytes, name.term, name.index)
}

/// The header of a snapshot file for `body`.
pub(crate) fn file_header(body: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[16..20].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    header
}

/// Validate and decode the bytes of the snapshot file named `<term>-<index>.snap`; the error says why they
/// were rejected.
pub(crate) fn decode_file(bytes: &[u8], term: Term, index: Index) -> Result<Snapshot, String> {
    let name = SnapName { index, term };
    let (header, body) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or_else(|| format!("{} bytes, shorter than the header", bytes.len()))?;
    if header[0..4] != MAGIC {
        return Err("bad magic".into());
    }
    let version = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("unknown format version {version}"));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    if len != body.len() as u64 {
        return Err(format!("header says {len} body bytes, file has {}", body.len()));
    }
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let snapshot: Snapshot = postcard::from_bytes(body).map_err(|e| format!("does not decode: {e}"))?;
    if snapshot.meta.index != name.index || snapshot.meta.term != name.term {
        return Err(format!(
            "holds term {} index {}, which does not match its name",
            snapshot.meta.term, snapshot.meta.index
        ));
    }
    Ok(snapshot)
}
