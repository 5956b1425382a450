//! The browsable view of an account's snapshots: dated directories, `latest`, and every snapshot's tree, with
//! inode numbers computed from the repository (see `inode`). Everything a FUSE request needs is a method here;
//! the `fuse` module only translates. Nothing here depends on FUSE, so it is tested directly.

pub mod inode;
pub mod naming;
mod node;
mod read;

pub use node::{Attr, DirItem};
pub use read::OpenFile;

use crate::format::links::LinkTable;
use crate::format::manifest::Manifest;
use crate::format::tree::Timestamp;
use crate::format::SnapshotId;
use crate::repo::{RepoError, Repository};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    #[error("no such entry")]
    NotFound,
    #[error("not a directory")]
    NotDirectory,
    #[error("not a symlink")]
    NotSymlink,
    #[error("no such extended attribute")]
    NoXattr,
    #[error("is a directory")]
    IsDirectory,
    #[error("{0}")]
    Repo(#[from] RepoError),
}

/// One snapshot as the view shows it.
pub struct SnapInfo {
    pub id: SnapshotId,
    pub name: String,
    pub manifest: Manifest,
    links: OnceLock<Arc<LinkTable>>,
}

impl SnapInfo {
    pub fn ordinal(&self) -> u64 {
        self.manifest.ordinal
    }

    /// The FUSE generation of this snapshot's inodes: a reused ordinal (after a prune) gets a different one.
    pub fn generation(&self) -> u64 {
        u32::from_le_bytes([self.id.0[0], self.id.0[1], self.id.0[2], self.id.0[3]]) as u64 | 1
    }

    fn link_table(&self, repo: &Repository) -> Result<Arc<LinkTable>, RepoError> {
        if let Some(t) = self.links.get() {
            return Ok(t.clone());
        }
        let table = match self.manifest.links {
            Some(id) => repo.link_table(id)?,
            None => Arc::new(LinkTable::default()),
        };
        Ok(self.links.get_or_init(|| table).clone())
    }
}

#[derive(Default)]
struct Catalog {
    by_name: BTreeMap<String, Arc<SnapInfo>>,
    by_ordinal: HashMap<u64, Arc<SnapInfo>>,
    latest: Option<Arc<SnapInfo>>,
}

pub struct Vfs {
    repo: Arc<Repository>,
    account: String,
    catalog: RwLock<Catalog>,
    names: Mutex<HashMap<u64, String>>,
    /// Owner of the mount root and `latest`: the owner of the mount point, so a user owns their backup view.
    owner: (u32, u32),
}

impl Vfs {
    pub fn new(repo: Arc<Repository>, account: &str, owner: (u32, u32)) -> Result<Self, VfsError> {
        let vfs = Self {
            repo,
            account: account.to_string(),
            catalog: RwLock::new(Catalog::default()),
            names: Mutex::new(HashMap::new()),
            owner,
        };
        vfs.reload()?;
        Ok(vfs)
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Follows other processes' commits and reloads the catalog. Returns whether the snapshot list changed.
    pub fn refresh(&self) -> Result<bool, VfsError> {
        self.repo.refresh()?;
        self.reload()
    }

    fn reload(&self) -> Result<bool, VfsError> {
        let entries = self.repo.snapshots(Some(&self.account))?;
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let times: Vec<(u64, Timestamp)> = entries
            .iter()
            .map(|e| (e.manifest.ordinal, e.manifest.time))
            .collect();
        naming::assign(&times, &mut names);
        let old = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        let unchanged = old.by_ordinal.len() == entries.len()
            && entries.iter().all(|e| {
                old.by_ordinal
                    .get(&e.manifest.ordinal)
                    .is_some_and(|s| s.id == e.id)
            });
        drop(old);
        if unchanged {
            return Ok(false);
        }
        let mut catalog = Catalog::default();
        let old = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            let ordinal = e.manifest.ordinal;
            let info = match old.by_ordinal.get(&ordinal) {
                Some(s) if s.id == e.id => s.clone(),
                _ => Arc::new(SnapInfo {
                    id: e.id,
                    name: names[&ordinal].clone(),
                    manifest: e.manifest,
                    links: OnceLock::new(),
                }),
            };
            catalog.by_name.insert(info.name.clone(), info.clone());
            catalog.by_ordinal.insert(ordinal, info.clone());
            catalog.latest = Some(info);
        }
        drop(old);
        *self.catalog.write().unwrap_or_else(|p| p.into_inner()) = catalog;
        Ok(true)
    }

    /// The snapshots shown at the root, by name.
    pub fn snapshots(&self) -> Vec<Arc<SnapInfo>> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .values()
            .cloned()
            .collect()
    }

    fn snapshot(&self, ordinal: u64) -> Option<Arc<SnapInfo>> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_ordinal
            .get(&ordinal)
            .cloned()
    }

    fn snapshot_named(&self, name: &[u8]) -> Option<Arc<SnapInfo>> {
        let name = std::str::from_utf8(name).ok()?;
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_name
            .get(name)
            .cloned()
    }

    fn latest(&self) -> Option<Arc<SnapInfo>> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .latest
            .clone()
    }
}
