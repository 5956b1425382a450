//! The per-machine state of a repository: the RocksDB index, the lock files and the sync stamp. All of it can be
//! rebuilt from the store's objects, so a machine may lose it, and a new machine starts without it.
//!
//! For a local repository the state lives in the repository directory itself (`REPO/index`, `REPO/locks`), as it
//! always has. For an object store it lives in a state directory: `--state-dir`, `BACKUPFS_STATE_DIR`, the config
//! file's `state_dir`, else `/var/lib/backupfs/<repository id>` for root and
//! `$XDG_STATE_HOME/backupfs/<repository id>` (`~/.local/state/...`) for other users.

use crate::backend::BackendError;
use std::path::{Path, PathBuf};

/// backupfs's directory of a kind: `system` for root; for other users `$XDG_VAR/backupfs`, else
/// `~/HOME_DEFAULT/backupfs` (the XDG base directory specification's default).
pub(crate) fn per_user_dir(system: &str, xdg_var: &str, home_default: &str) -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(system);
    }
    if let Some(x) = std::env::var_os(xdg_var).filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("backupfs");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(home_default).join("backupfs")
}

/// The file in a state directory naming the location whose index it holds.
const LOCATION_FILE: &str = "location";

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    /// Whether the index here follows a store that other machines write too: it is then brought up to date from
    /// the store's listings (`Repository::sync`), and snapshots whose manifests left the store leave the index.
    follows_store: bool,
}

impl StateDir {
    /// The state kept inside a local repository directory.
    pub fn inside_repository(repo: &Path) -> Self {
        Self {
            root: repo.to_path_buf(),
            follows_store: false,
        }
    }

    /// A state directory of its own, created if missing.
    pub fn separate(root: &Path) -> Result<Self, BackendError> {
        let locks = root.join("locks");
        std::fs::create_dir_all(&locks).map_err(|e| BackendError::io(&locks, e))?;
        Ok(Self {
            root: root.to_path_buf(),
            follows_store: true,
        })
    }

    /// The default state directory of the repository at `location`, from its id: `<first 8 bytes of the id>`,
    /// unless that one already follows another location with the same id (a replica made with `init --like`),
    /// then `<id>-<first 4 bytes of BLAKE3(location)>`.
    pub fn default_for(repo_id: &[u8; 32], location: &str) -> PathBuf {
        let id: String = repo_id[..8].iter().map(|b| format!("{b:02x}")).collect();
        let base = per_user_dir("/var/lib/backupfs", "XDG_STATE_HOME", ".local/state");
        let first = base.join(&id);
        match std::fs::read_to_string(first.join(LOCATION_FILE)) {
            Ok(recorded) if recorded.trim_end() != location => {
                let h = blake3::hash(location.as_bytes());
                base.join(format!(
                    "{id}-{}",
                    crate::format::ids::hex(&h.as_bytes()[..4])
                ))
            }
            _ => first,
        }
    }

    /// A state directory of its own for the repository at `location`: created if missing, and refused if it
    /// follows another location (two repositories with one id, a primary and its replica, must not share an
    /// index). One that records no location yet (made before this was recorded) is taken over.
    pub fn separate_for(root: &Path, location: &str) -> Result<Self, crate::repo::RepoError> {
        let state = Self::separate(root)?;
        let file = root.join(LOCATION_FILE);
        match std::fs::read_to_string(&file) {
            Ok(recorded) if recorded.trim_end() == location => {}
            Ok(recorded) => {
                return Err(crate::repo::RepoError::StateOfAnother {
                    state: root.to_path_buf(),
                    recorded: recorded.trim_end().to_string(),
                    location: location.to_string(),
                })
            }
            Err(_) => {
                let tmp = root.join("location.tmp");
                std::fs::write(&tmp, format!("{location}\n"))
                    .and_then(|()| std::fs::rename(&tmp, &file))
                    .map_err(|e| BackendError::io(&file, e))?;
            }
        }
        Ok(state)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn follows_store(&self) -> bool {
        self.follows_store
    }
    pub fn index(&self) -> PathBuf {
        self.root.join("index")
    }
    /// Where `repair index` builds the new index before swapping it in.
    pub fn index_rebuild(&self) -> PathBuf {
        self.root.join("index.rebuild")
    }
    pub fn index_old(&self) -> PathBuf {
        self.root.join("index.old")
    }
    pub fn index_damaged(&self) -> PathBuf {
        self.root.join("index.damaged")
    }
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
    pub fn index_lock(&self) -> PathBuf {
        self.root.join("locks/index.lock")
    }
    pub fn index_rebuild_lock(&self) -> PathBuf {
        self.root.join("locks/index.rebuild.lock")
    }
    pub fn prune_lock(&self) -> PathBuf {
        self.root.join("locks/prune.lock")
    }
    /// Touched after each sync from the store: mounts of several accounts on one machine share one listing.
    pub fn sync_stamp(&self) -> PathBuf {
        self.root.join("synced")
    }

    /// Creates an empty index where none is, whole or not at all: built under a name of this process's and
    /// renamed into place, so that a process killed while creating it leaves no half index that every later
    /// open would refuse. Another process that won the race keeps its own.
    pub fn create_index(&self) -> Result<(), crate::repo::RepoError> {
        let tmp = self.root.join(format!("index.new.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        drop(crate::index::IndexWriter::create(&tmp, &self.index_lock())?);
        match std::fs::rename(&tmp, self.index()) {
            Ok(()) => Ok(()),
            Err(_) if self.index().exists() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(e) => Err(BackendError::io(self.index(), e).into()),
        }
    }

    /// Moves an unusable index to `index.damaged` (replacing an older one).
    pub fn set_index_aside(&self) -> Result<(), BackendError> {
        let aside = self.index_damaged();
        let _ = std::fs::remove_dir_all(&aside);
        std::fs::rename(self.index(), &aside).map_err(|e| BackendError::io(self.index(), e))
    }

    /// This machine's id in leases: random, made on first use, kept with the state.
    pub fn machine_id(&self) -> Result<[u8; 16], BackendError> {
        let path = self.root.join("machine-id");
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(id) = <[u8; 16]>::try_from(bytes.as_slice()) {
                return Ok(id);
            }
        }
        let id = crate::repo::random_bytes::<16>()?;
        let tmp = self.root.join("machine-id.tmp");
        std::fs::write(&tmp, id)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| BackendError::io(&path, e))?;
        Ok(id)
    }
}
