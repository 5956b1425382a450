//! The browsable view of an account's snapshots: dated directories, `latest`, and every snapshot's tree, with
//! inode numbers computed from the repository (see `inode`). Everything a FUSE request needs is a method here;
//! the `fuse` module only translates. Nothing here depends on FUSE, so it is tested directly.

pub mod inode;
pub mod naming;
mod node;
mod prefetch;
mod read;
mod seek;

pub use node::{Attr, DirItem};
pub use read::{OpenFile, PREFETCH_BYTES};
pub use seek::Whence;

use crate::format::links::LinkTable;
use crate::format::manifest::Manifest;
use crate::format::tree::Timestamp;
use crate::format::SnapshotId;
use crate::index::CatalogEntry;
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
    /// SEEK_DATA or SEEK_HOLE from the end of the file on, or SEEK_DATA with no data after the offset.
    #[error("no data or hole at or after the offset")]
    OutOfRange,
    #[error("{0}")]
    Repo(#[from] RepoError),
}

/// One snapshot as the view shows it.
pub struct SnapInfo {
    pub id: SnapshotId,
    pub name: String,
    pub manifest: Manifest,
    /// Inode of the directory listing this snapshot (the mount root, or its account's directory).
    pub listing: u64,
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

/// One account's snapshot directories and `latest`: the mount root of a one-account mount, or an account's
/// directory in a mount of all accounts.
pub struct Listing {
    pub account: String,
    pub ino: u64,
    pub latest_ino: u64,
    by_name: BTreeMap<String, Arc<SnapInfo>>,
    latest: Option<Arc<SnapInfo>>,
}

#[derive(Default)]
struct Catalog {
    listings: BTreeMap<String, Arc<Listing>>,
    by_ino: HashMap<u64, Arc<Listing>>,
    by_ordinal: HashMap<u64, Arc<SnapInfo>>,
}

/// Ownership and permission bits of the mount root, taken from the mount point.
#[derive(Clone, Copy, Debug)]
pub struct MountRoot {
    pub uid: u32,
    pub gid: u32,
    pub perm: u32,
}

impl MountRoot {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            uid: meta.uid(),
            gid: meta.gid(),
            perm: meta.mode() & 0o7777,
        }
    }
}

/// Which snapshots a mount shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One account's snapshots at the root.
    Account(String),
    /// A directory per account at the root.
    All,
}

/// Names a catalog reload removed, as (directory inode, name): what the kernel must forget.
pub type GoneNames = Vec<(u64, Vec<u8>)>;

pub struct Vfs {
    repo: Arc<Repository>,
    scope: Scope,
    catalog: RwLock<Catalog>,
    names: Mutex<HashMap<u64, String>>,
    /// Owner of the mount root, account directories and `latest`, and the root's mode: the mount point's, so that
    /// a user owns their backup view and a private mount point stays private.
    root: MountRoot,
    prefetch: prefetch::Prefetcher,
}

impl Vfs {
    pub fn new(repo: Arc<Repository>, scope: Scope, root: MountRoot) -> Result<Self, VfsError> {
        let vfs = Self {
            prefetch: prefetch::Prefetcher::new(repo.clone()),
            repo,
            scope,
            catalog: RwLock::new(Catalog::default()),
            names: Mutex::new(HashMap::new()),
            root,
        };
        vfs.reload()?;
        Ok(vfs)
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Follows other processes' commits and reloads the catalog. Returns None if the snapshot list is unchanged,
    /// else the names that are gone (pruned), as (directory inode, name): the kernel may hold them in its
    /// dentry cache, and must be told to forget them.
    pub fn refresh(&self) -> Result<Option<GoneNames>, VfsError> {
        self.repo.refresh()?;
        self.reload()
    }

    fn reload(&self) -> Result<Option<GoneNames>, VfsError> {
        let account = match &self.scope {
            Scope::Account(a) => Some(a.as_str()),
            Scope::All => None,
        };
        let entries = self.repo.snapshots(account)?;
        {
            let old = self.catalog.read().unwrap_or_else(|p| p.into_inner());
            // An empty catalog was never built (a one-account mount still needs its empty listing at the root).
            let built = !old.listings.is_empty();
            let unchanged = built
                && old.by_ordinal.len() == entries.len()
                && entries.iter().all(|e| {
                    old.by_ordinal
                        .get(&e.manifest.ordinal)
                        .is_some_and(|s| s.id == e.id)
                });
            if unchanged {
                return Ok(None);
            }
        }
        let mut by_account: BTreeMap<String, Vec<CatalogEntry>> = BTreeMap::new();
        for e in entries {
            by_account
                .entry(e.manifest.account.clone())
                .or_default()
                .push(e);
        }
        if let Scope::Account(a) = &self.scope {
            by_account.entry(a.clone()).or_default();
        }
        let catalog = self.build_catalog(by_account);
        let mut current = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        let gone = names_gone(&current, &catalog);
        *current = catalog;
        Ok(Some(gone))
    }

    fn build_catalog(&self, by_account: BTreeMap<String, Vec<CatalogEntry>>) -> Catalog {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        let mut catalog = Catalog::default();
        for (account, entries) in by_account {
            let ino = match self.scope {
                Scope::Account(_) => inode::ROOT,
                Scope::All => (0..)
                    .map(|probe| inode::account_dir(&account, probe))
                    .find(|i| !catalog.by_ino.contains_key(i))
                    .unwrap_or(0),
            };
            let latest_ino = if ino == inode::ROOT {
                inode::LATEST
            } else {
                ino + 1
            };
            let times: Vec<(u64, Timestamp)> = entries
                .iter()
                .map(|e| (e.manifest.ordinal, e.manifest.time))
                .collect();
            naming::assign(&times, &mut names);
            let mut listing = Listing {
                account: account.clone(),
                ino,
                latest_ino,
                by_name: BTreeMap::new(),
                latest: None,
            };
            for e in entries {
                let ordinal = e.manifest.ordinal;
                if catalog.by_ordinal.contains_key(&ordinal) || !names.contains_key(&ordinal) {
                    // Inode numbers derive from the ordinal: showing both would mix two snapshots' files.
                    tracing::error!(
                        "snapshot {} not shown: its ordinal {ordinal} belongs to another snapshot; run \
                         `backupfs check`",
                        e.id
                    );
                    continue;
                }
                let info = match old.by_ordinal.get(&ordinal) {
                    Some(s) if s.id == e.id => s.clone(),
                    _ => Arc::new(SnapInfo {
                        id: e.id,
                        name: names[&ordinal].clone(),
                        manifest: e.manifest,
                        listing: ino,
                        links: OnceLock::new(),
                    }),
                };
                listing.by_name.insert(info.name.clone(), info.clone());
                catalog.by_ordinal.insert(ordinal, info.clone());
                listing.latest = Some(info);
            }
            let listing = Arc::new(listing);
            catalog.by_ino.insert(ino, listing.clone());
            catalog.by_ino.insert(latest_ino, listing.clone());
            catalog.listings.insert(account, listing);
        }
        catalog
    }

    /// The listing whose directory or `latest` has inode `ino`.
    fn listing(&self, ino: u64) -> Option<Arc<Listing>> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_ino
            .get(&ino)
            .cloned()
    }

    /// The inode numbers of every `latest` symlink, whose targets change when a snapshot is added or pruned.
    pub fn latest_inodes(&self) -> Vec<u64> {
        self.listings().iter().map(|l| l.latest_ino).collect()
    }

    /// The account directories of a mount of all accounts.
    fn listings(&self) -> Vec<Arc<Listing>> {
        self.catalog
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .listings
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
}

/// Snapshot and account directories of `old` that `new` no longer has under the same name and inode.
fn names_gone(old: &Catalog, new: &Catalog) -> GoneNames {
    let mut gone = Vec::new();
    for (account, listing) in &old.listings {
        let kept = new.listings.get(account);
        if kept.is_none() {
            gone.push((inode::ROOT, account.as_bytes().to_vec()));
        }
        for (name, snap) in &listing.by_name {
            let same = kept
                .and_then(|l| l.by_name.get(name))
                .is_some_and(|s| s.id == snap.id);
            if !same {
                gone.push((listing.ino, name.as_bytes().to_vec()));
            }
        }
    }
    gone
}

impl Listing {
    pub fn snapshots(&self) -> impl Iterator<Item = &Arc<SnapInfo>> {
        self.by_name.values()
    }

    fn named(&self, name: &[u8]) -> Option<Arc<SnapInfo>> {
        self.by_name.get(std::str::from_utf8(name).ok()?).cloned()
    }
}
