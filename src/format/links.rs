//! Hardlink tables: per snapshot, which DFS number stands for each hardlinked inode, and its link count.
//!
//! ```text
//! links = magic "BKFSLINK" | version u32 (1) | count u32 | (source_ino u64 | dfs u64 | nlink u32)*
//! ```
//! Sorted by `source_ino`, strictly ascending. A tree entry with the hardlink flag is looked up here by its
//! `source_ino`: every path of the group is shown with the inode number of `dfs`, the group's first path in DFS
//! order, and with `nlink` (the number of paths inside the snapshot, not in the source filesystem).

use super::codec::{Reader, Writer};
use super::{magic, FormatError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub source_ino: u64,
    pub dfs: u64,
    pub nlink: u32,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct LinkTable {
    pub links: Vec<Link>,
}

impl LinkTable {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "one link per hardlinked file of a snapshot, far fewer than 2^32"
    )]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(16 + self.links.len() * 20);
        w.bytes(&magic::LINKS);
        w.u32(magic::LINKS_VERSION);
        w.u32(self.links.len() as u32);
        for l in &self.links {
            w.u64(l.source_ino);
            w.u64(l.dfs);
            w.u32(l.nlink);
        }
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "links");
        r.header(magic::LINKS, magic::LINKS_VERSION)?;
        let count = r.u32()? as usize;
        if count > r.remaining() / 20 {
            return Err(r.invalid("count exceeds table size"));
        }
        let mut links: Vec<Link> = Vec::with_capacity(count);
        for _ in 0..count {
            let link = Link {
                source_ino: r.u64()?,
                dfs: r.u64()?,
                nlink: r.u32()?,
            };
            if links
                .last()
                .is_some_and(|p| p.source_ino >= link.source_ino)
                || link.nlink < 2
            {
                return Err(r.invalid("links not sorted or link count below 2"));
            }
            links.push(link);
        }
        r.finish()?;
        Ok(Self { links })
    }

    pub fn get(&self, source_ino: u64) -> Option<Link> {
        let i = self
            .links
            .binary_search_by_key(&source_ino, |l| l.source_ino)
            .ok()?;
        Some(self.links[i])
    }
}
