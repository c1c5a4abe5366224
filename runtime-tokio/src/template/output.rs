//! Writing a rendered template (`CT:renderer/renderer.go`) and running its command.
//!
//! The write is atomic: a temporary file in the destination's directory gets the contents and the
//! mode, is synced, then renamed over the destination, so readers see the old file or the new one,
//! never a mix. Nothing is written when the contents are unchanged.

use super::config::TemplateSpec;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const DEFAULT_PERMS: u32 = 0o644;

/// Write `contents` to the spec's destination unless it already holds exactly that. Returns whether
/// the file changed.
pub(crate) fn write_if_changed(spec: &TemplateSpec, contents: &[u8]) -> Result<bool, String> {
    let dest = &spec.destination;
    let ctx = |e: std::io::Error| format!("writing {}: {e}", dest.display());
    let existing = match fs::read(dest) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ctx(e)),
    };
    if existing.as_deref() == Some(contents) {
        return Ok(false);
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if spec.create_dest_dirs {
        fs::create_dir_all(&dir).map_err(ctx)?;
    }
    let mode = match (spec.perms, fs::metadata(dest)) {
        (Some(p), _) => p,
        (None, Ok(meta)) => meta.permissions().mode() & 0o7777,
        (None, Err(_)) => DEFAULT_PERMS,
    };
    let tmp = temp_path(&dir, dest);
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        if spec.backup && existing.is_some() {
            backup(dest)?;
        }
        fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ctx(e));
    }
    Ok(true)
}

fn temp_path(dir: &Path, dest: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// `dest.bak` becomes a hard link to the current file; an earlier `.bak` moves to `.old.bak`.
fn backup(dest: &Path) -> std::io::Result<()> {
    let with_suffix = |suffix: &str| {
        let mut s = dest.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let (bak, old) = (with_suffix(".bak"), with_suffix(".old.bak"));
    if bak.exists() {
        fs::rename(&bak, &old)?;
    }
    fs::hard_link(dest, &bak).or_else(|_| fs::copy(dest, &bak).map(|_| ()))
}

/// Run a template's command under `sh -c`, killing it after `timeout`. Its output goes to ours.
pub(crate) async fn run_command(command: &str, timeout: Duration) -> Result<(), String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("failed to execute command {command:?}: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("command {command:?} failed: {status}")),
        Ok(Err(e)) => Err(format!("command {command:?}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Err(format!("command {command:?} did not finish within {timeout:?}; killed"))
        }
    }
}
