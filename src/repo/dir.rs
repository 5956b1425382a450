//! Directories as the mount and the commands see them: one tree blob, or a tree index whose pages are loaded
//! one at a time through the repository's tree cache (see `format::tree_index` for why).
//!
//! Positions (0-based, in name order) and relative DFS numbers (the directory is 0) mean the same in both
//! forms, so inode numbers and `readdir` offsets do not depend on how a directory was written.

use super::{RepoError, Repository};
use crate::format::tree::{Entry, Tree};
use crate::format::tree_index::{PageRef, TreeIndex};
use crate::format::TreeId;
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone)]
pub enum Directory {
    Flat(Arc<Tree>),
    Paged { id: TreeId, index: Arc<TreeIndex> },
}

/// One entry of a directory, keeping the page that holds it alive.
#[derive(Clone)]
pub struct EntryRef {
    page: Arc<Tree>,
    slot: usize,
    /// DFS number relative to the directory.
    pub rel_dfs: u64,
    /// Index in the directory, in name order.
    pub position: u64,
}

impl Deref for EntryRef {
    type Target = Entry;
    fn deref(&self) -> &Entry {
        &self.page.entries[self.slot]
    }
}

/// A loaded page: the entries of positions `first_position..` with DFS numbers `dfs_base + dfs_offsets[i]`.
struct Page {
    tree: Arc<Tree>,
    first_position: u64,
    dfs_base: u64,
}

impl Page {
    fn entry(&self, slot: usize) -> Option<EntryRef> {
        (slot < self.tree.entries.len()).then(|| EntryRef {
            page: self.tree.clone(),
            slot,
            rel_dfs: self.dfs_base + self.tree.dfs_offsets[slot],
            position: self.first_position + slot as u64,
        })
    }
}

impl Directory {
    pub fn len(&self) -> u64 {
        match self {
            Directory::Flat(t) => t.entries.len() as u64,
            Directory::Paged { index, .. } => index.entries,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries at any depth below the directory.
    pub fn descendants(&self) -> u64 {
        match self {
            Directory::Flat(t) => t.descendants,
            Directory::Paged { index, .. } => index.descendants,
        }
    }

    /// Subdirectories, for the directory's link count.
    pub fn subdirs(&self) -> u32 {
        match self {
            Directory::Flat(t) => t.subdirs,
            Directory::Paged { index, .. } => index.subdirs,
        }
    }

    /// The pages of a paged directory (none for a flat one): the tree blobs a reachability walk follows.
    pub fn pages(&self) -> &[PageRef] {
        match self {
            Directory::Flat(_) => &[],
            Directory::Paged { index, .. } => &index.pages,
        }
    }

    fn page(&self, repo: &Repository, i: usize) -> Result<Page, RepoError> {
        match self {
            Directory::Flat(tree) => Ok(Page {
                tree: tree.clone(),
                first_position: 0,
                dfs_base: 0,
            }),
            Directory::Paged { id, index } => {
                let p = &index.pages[i];
                let inconsistent = |what: String| RepoError::TreeIndex { id: *id, what };
                let tree = match repo.directory(p.tree)? {
                    Directory::Flat(tree) => tree,
                    Directory::Paged { .. } => {
                        return Err(inconsistent(format!(
                            "page {} is itself a tree index",
                            p.tree
                        )))
                    }
                };
                index.check_page(i, &tree).map_err(inconsistent)?;
                Ok(Page {
                    tree,
                    first_position: p.first_position,
                    dfs_base: p.first_dfs - 1,
                })
            }
        }
    }

    /// Checks a paged directory's pages against its index (loading each); nothing to do for a flat one.
    pub fn check_pages(&self, repo: &Repository) -> Result<(), RepoError> {
        for i in 0..self.pages().len() {
            self.page(repo, i)?;
        }
        Ok(())
    }

    /// The page a paged directory's index picks (the only one of a flat directory), or None if it picks none.
    fn page_where(
        &self,
        repo: &Repository,
        pick: impl FnOnce(&TreeIndex) -> Option<usize>,
    ) -> Result<Option<Page>, RepoError> {
        let i = match self {
            Directory::Flat(_) => Some(0),
            Directory::Paged { index, .. } => pick(index),
        };
        i.map(|i| self.page(repo, i)).transpose()
    }

    pub fn find(&self, repo: &Repository, name: &[u8]) -> Result<Option<EntryRef>, RepoError> {
        let Some(page) = self.page_where(repo, |index| index.page_for_name(name))? else {
            return Ok(None);
        };
        Ok(page.tree.find(name).and_then(|slot| page.entry(slot)))
    }

    /// The entry whose subtree holds relative DFS number `rel` (>= 1): the entry itself or one of its descendants.
    pub fn spanning(&self, repo: &Repository, rel: u64) -> Result<Option<EntryRef>, RepoError> {
        let Some(page) = self.page_where(repo, |index| index.page_for_dfs(rel))? else {
            return Ok(None);
        };
        Ok(rel
            .checked_sub(page.dfs_base)
            .and_then(|r| page.tree.entry_spanning(r))
            .and_then(|slot| page.entry(slot)))
    }

    /// The entries from `position` on, in name order.
    pub fn entries_from<'a>(&'a self, repo: &'a Repository, position: u64) -> Entries<'a> {
        Entries {
            dir: self,
            repo,
            position,
            page: None,
        }
    }
}

pub struct Entries<'a> {
    dir: &'a Directory,
    repo: &'a Repository,
    position: u64,
    page: Option<Page>,
}

impl Iterator for Entries<'_> {
    type Item = Result<EntryRef, RepoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.dir.len() {
            return None;
        }
        let in_page = |p: &Page| self.position - p.first_position < p.tree.entries.len() as u64;
        if !self
            .page
            .as_ref()
            .is_some_and(|p| self.position >= p.first_position && in_page(p))
        {
            let position = self.position;
            match self
                .dir
                .page_where(self.repo, |index| index.page_for_position(position))
            {
                Ok(Some(p)) => self.page = Some(p),
                Ok(None) => return None,
                Err(e) => {
                    self.position = u64::MAX;
                    return Some(Err(e));
                }
            }
        }
        let page = self.page.as_ref()?;
        let entry = page.entry((self.position - page.first_position) as usize)?;
        self.position += 1;
        Some(Ok(entry))
    }
}
