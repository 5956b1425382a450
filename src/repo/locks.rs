//! Locks between writers, all flock(2)-based so that a process that dies releases them by dying:
//!
//! - `locks/prune.lock`: prune and index repair exclude each other (a second one fails at once).
//! - `locks/backup-<pid>-<n>.lock`: held by every running backup for its whole run. Prune lists these to know
//!   which backups started before it removed dead blobs from the index, and waits for them before deleting any
//!   pack (they may still reference those blobs; see `prune`).
//! - `locks/index.lock`: held while committing to the index (see `index`).

use super::{RepoError, Repository};
use crate::backend::local::flock;
use crate::backend::BackendError;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct ExclusiveLock {
    _file: File,
}

fn open_lock(path: &Path) -> Result<File, RepoError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| BackendError::io(path, e).into())
}

impl Repository {
    /// Takes the prune/repair lock or fails at once naming it.
    pub fn prune_lock(&self) -> Result<ExclusiveLock, RepoError> {
        let path = self.state().prune_lock();
        let file = open_lock(&path)?;
        flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|_| RepoError::Locked { path })?;
        Ok(ExclusiveLock { _file: file })
    }

    /// Marks a backup as running until the returned marker is dropped (or the process dies).
    pub fn backup_marker(&self) -> Result<BackupMarker, RepoError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "backup-{}-{}.lock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.state().locks().join(name);
        let file = open_lock(&path)?;
        flock(&file, libc::LOCK_EX).map_err(|e| BackendError::io(&path, e))?;
        Ok(BackupMarker { path, _file: file })
    }

    /// Markers of backups running now; markers of dead backups are removed on the way.
    pub fn running_backups(&self) -> Result<Vec<PathBuf>, RepoError> {
        let dir = self.state().locks();
        let mut running = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| BackendError::io(&dir, e))? {
            let path = entry.map_err(|e| BackendError::io(&dir, e))?.path();
            let is_marker = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("backup-"));
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if !is_marker {
                continue;
            }
            if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_ok() {
                let _ = std::fs::remove_file(&path);
            } else {
                running.push(path);
            }
        }
        Ok(running)
    }

    /// Blocks until every backup in `markers` has finished.
    pub fn wait_for_backups(&self, markers: &[PathBuf]) {
        for path in markers {
            if let Ok(file) = File::open(path) {
                let _ = flock(&file, libc::LOCK_SH);
            }
        }
    }
}

pub struct BackupMarker {
    path: PathBuf,
    _file: File,
}

impl Drop for BackupMarker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
