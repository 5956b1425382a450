//! The hardlinked inodes a backup meets, for the snapshot's hardlink table (`format::links`): the first path of
//! each inode keeps its DFS number and content, later paths reuse that content and count towards the link count.

use crate::format::links::{Link, LinkTable};
use crate::format::tree::Extent;
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// The paths of one hardlinked inode met so far.
struct Group {
    /// The filesystem of the inode: a part walked on another filesystem (mail) may reuse the number.
    dev: u64,
    /// DFS number of the first path.
    dfs: u64,
    /// Paths counted.
    count: u32,
    /// Content of the first path (files only).
    extents: Vec<Extent>,
}

/// Hardlinked inodes by inode number, which is what the hardlink table records.
#[derive(Default)]
pub struct Hardlinks {
    groups: HashMap<u64, Group>,
}

impl Hardlinks {
    /// Whether an entry is a path of a hardlinked inode the snapshot records as such. The table is keyed by
    /// inode number alone, so an inode of another filesystem (the mail part's) whose number a group of the
    /// first one already holds is stored as an ordinary file rather than joined to that group.
    pub fn joins(&self, meta: &Metadata) -> bool {
        meta.nlink() > 1 && (self.groups.get(&meta.ino())).is_none_or(|g| g.dev == meta.dev())
    }

    /// Counts one more path of an inode already met and returns the content of its first path; None if this
    /// is the first path.
    pub fn another_path(&mut self, meta: &Metadata) -> Option<Vec<Extent>> {
        let group = self.groups.get_mut(&meta.ino())?;
        group.count += 1;
        Some(group.extents.clone())
    }

    /// Records the first path of an inode: its DFS number and content (empty for all but files).
    pub fn first_path(&mut self, meta: &Metadata, dfs: u64, extents: Vec<Extent>) {
        let group = Group {
            dev: meta.dev(),
            dfs,
            count: 1,
            extents,
        };
        self.groups.insert(meta.ino(), group);
    }

    /// The hardlink table of the snapshot: only inodes that appear under two or more paths.
    pub fn table(&self) -> LinkTable {
        let mut links: Vec<Link> = (self.groups.iter())
            .filter(|(_, g)| g.count >= 2)
            .map(|(&source_ino, g)| Link {
                source_ino,
                dfs: g.dfs,
                nlink: g.count,
            })
            .collect();
        links.sort_by_key(|l| l.source_ino);
        LinkTable { links }
    }
}
