//! Tree index blobs: a large directory split into pages, so that no reader ever holds it whole.
//!
//! ```text
//! index = magic "BKFSTIDX" | version u32 (1)
//!         entry_count u64 | descendants u64 | subdirs u32 | page_count u32 | page*
//! page  = tree id 32 | entry_count u32 | span u64 | first_name_len u16 | first_name
//! ```
//! A directory entry's tree id names either a tree blob (`BKFSTREE`, the whole directory) or a tree index. Each
//! page of an index is an ordinary tree blob holding a run of the directory's entries; concatenated in order
//! they are the directory, still strictly ascending by name. `span` is the page's entries plus their
//! descendants (the DFS numbers the page covers), `first_name` its first entry's name; the header's totals are
//! the sums over the pages, `subdirs` the number of entries that are directories.
//!
//! Why: a directory of a million files is a ~130 MB tree. Decoding it whole to answer one `readdir` would make
//! the mount's memory grow with the largest directory anyone lists; with pages, a listing or lookup decodes the
//! one page it needs, and the tree cache's byte budget bounds memory whatever the directory's size.
//!
//! Writers page directories of more than [`FLAT_MAX_ENTRIES`] entries and cut pages where the BLAKE3 of an
//! entry's name has its low bits zero (within [`PAGE_MIN`]..=[`PAGE_MAX`] entries): boundaries depend on the
//! names, not on positions, so a file added to a huge Maildir rewrites one page and the index, not every page
//! after it. Readers accept either form at any size and check each page against its index entry when loading it.

use super::codec::{Reader, Writer};
use super::tree::{valid_name, Entry, EntryKind, Tree};
use super::{magic, FormatError, TreeId};
use std::ops::Range;

/// Directories with more entries than this are written as a tree index with pages.
pub const FLAT_MAX_ENTRIES: usize = 4096;
/// A page ends at a name boundary only once it holds this many entries...
pub const PAGE_MIN: usize = 256;
/// ...and ends here regardless, which bounds what one page costs to decode.
pub const PAGE_MAX: usize = 4096;
/// A name whose hash has these low bits zero ends a page: about one in 1024, so pages average ~1,300 entries.
const BOUNDARY_MASK: u32 = 1023;

/// One page as the index describes it, with its position in the directory precomputed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRef {
    pub tree: TreeId,
    pub entries: u32,
    pub span: u64,
    pub first_name: Vec<u8>,
    /// Index of the page's first entry in the whole directory.
    pub first_position: u64,
    /// DFS number of the page's first entry relative to the directory (the directory itself is 0).
    pub first_dfs: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TreeIndex {
    pub pages: Vec<PageRef>,
    pub entries: u64,
    pub descendants: u64,
    pub subdirs: u32,
}

/// Whether a tree blob's plaintext is a tree index (otherwise it must be a tree).
pub fn is_tree_index(plain: &[u8]) -> bool {
    plain.starts_with(&magic::TREE_INDEX)
}

/// The blobs of one directory: `root` is what its entry points to; `pages` are empty for a flat tree.
pub struct EncodedDirectory {
    pub root: Vec<u8>,
    pub pages: Vec<Vec<u8>>,
}

pub fn encode_directory(entries: &[Entry]) -> EncodedDirectory {
    encode_directory_with(entries, &TreeId::of)
}

/// `encode_directory` naming pages with `tree_id` (a repository's blob ids: `repo::BlobCodec`).
#[allow(
    clippy::cast_possible_truncation,
    reason = "pages hold at most PAGE_MAX entries; a directory of 2^32 subdirectories is not a directory"
)]
pub fn encode_directory_with(
    entries: &[Entry],
    tree_id: &dyn Fn(&[u8]) -> TreeId,
) -> EncodedDirectory {
    if entries.len() <= FLAT_MAX_ENTRIES {
        return EncodedDirectory {
            root: Tree::encode(entries),
            pages: Vec::new(),
        };
    }
    let ranges = page_ranges(entries);
    let pages: Vec<Vec<u8>> = ranges
        .iter()
        .map(|r| Tree::encode(&entries[r.clone()]))
        .collect();
    let (mut position, mut dfs) = (0u64, 1u64);
    let refs = ranges
        .iter()
        .zip(&pages)
        .map(|(range, bytes)| {
            let run = &entries[range.clone()];
            let span: u64 = run.iter().map(|e| 1 + e.descendants()).sum();
            let page = PageRef {
                tree: tree_id(bytes),
                entries: run.len() as u32,
                span,
                first_name: run[0].name.clone(),
                first_position: position,
                first_dfs: dfs,
            };
            position += run.len() as u64;
            dfs += span;
            page
        })
        .collect();
    let index = TreeIndex {
        pages: refs,
        entries: entries.len() as u64,
        descendants: dfs - 1,
        subdirs: entries.iter().filter(|e| e.kind == EntryKind::Dir).count() as u32,
    };
    EncodedDirectory {
        root: index.encode(),
        pages,
    }
}

/// Where the pages of `entries` end: content-defined by name, within PAGE_MIN..=PAGE_MAX entries.
pub fn page_ranges(entries: &[Entry]) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    for (i, e) in entries.iter().enumerate() {
        let len = i + 1 - start;
        let hash = blake3::hash(&e.name);
        let low = u32::from_le_bytes([
            hash.as_bytes()[0],
            hash.as_bytes()[1],
            hash.as_bytes()[2],
            hash.as_bytes()[3],
        ]);
        if len >= PAGE_MAX || (len >= PAGE_MIN && low & BOUNDARY_MASK == 0) {
            ranges.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < entries.len() {
        ranges.push(start..entries.len());
    }
    ranges
}

impl TreeIndex {
    /// The index blob; `first_position` and `first_dfs` are derived, not stored.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "at least 256 entries per page but the last, so fewer than 2^32 pages"
    )]
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(32 + self.pages.len() * 80);
        w.bytes(&magic::TREE_INDEX);
        w.u32(magic::TREE_INDEX_VERSION);
        w.u64(self.entries);
        w.u64(self.descendants);
        w.u32(self.subdirs);
        w.u32(self.pages.len() as u32);
        for page in &self.pages {
            w.bytes(&page.tree.0);
            w.u32(page.entries);
            w.u64(page.span);
            w.bytes16(&page.first_name);
        }
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "tree index");
        r.header(magic::TREE_INDEX, magic::TREE_INDEX_VERSION)?;
        let (entries, span_total, subdirs, count) =
            (r.u64()?, r.u64()?, r.u32()?, r.u32()? as usize);
        // Each page takes at least 47 bytes, which bounds the allocation by the blob's size.
        if count == 0 || count > r.remaining() / 47 {
            return Err(r.invalid("page count does not fit the blob"));
        }
        let mut pages: Vec<PageRef> = Vec::with_capacity(count);
        let (mut position, mut dfs) = (0u64, 1u64);
        for _ in 0..count {
            let at = r.offset();
            let tree = TreeId(r.array()?);
            let (n, span) = (r.u32()?, r.u64()?);
            let first_name = r.bytes16()?.to_vec();
            if n == 0 || span < u64::from(n) || !valid_name(&first_name) {
                return Err(r.invalid_at(at, "invalid page"));
            }
            if pages.last().is_some_and(|p| p.first_name >= first_name) {
                return Err(r.invalid_at(at, "pages not in ascending name order"));
            }
            pages.push(PageRef {
                tree,
                entries: n,
                span,
                first_name,
                first_position: position,
                first_dfs: dfs,
            });
            position += u64::from(n);
            dfs = dfs
                .checked_add(span)
                .ok_or_else(|| r.invalid("page spans overflow"))?;
        }
        r.finish()?;
        if position != entries || dfs - 1 != span_total || subdirs as u64 > entries {
            return Err(r.invalid("totals do not match the pages"));
        }
        Ok(Self {
            pages,
            entries,
            descendants: span_total,
            subdirs,
        })
    }

    /// The page that would hold `name`, if any could.
    pub fn page_for_name(&self, name: &[u8]) -> Option<usize> {
        self.pages
            .partition_point(|p| p.first_name.as_slice() <= name)
            .checked_sub(1)
    }

    /// The page holding the entry at `position` (0-based, in name order).
    pub fn page_for_position(&self, position: u64) -> Option<usize> {
        if position >= self.entries {
            return None;
        }
        self.pages
            .partition_point(|p| p.first_position <= position)
            .checked_sub(1)
    }

    /// The page whose entries' subtrees hold relative DFS number `rel` (>= 1).
    pub fn page_for_dfs(&self, rel: u64) -> Option<usize> {
        let i = self
            .pages
            .partition_point(|p| p.first_dfs <= rel)
            .checked_sub(1)?;
        (rel < self.pages[i].first_dfs + self.pages[i].span).then_some(i)
    }

    /// Checks a decoded page against what the index says of it, so that lookups by name, position and DFS
    /// number agree with the page's contents (a page is verified against its id, but the index could lie).
    pub fn check_page(&self, i: usize, page: &Tree) -> Result<(), String> {
        let p = self
            .pages
            .get(i)
            .ok_or_else(|| format!("no page {i} in a tree index of {}", self.pages.len()))?;
        let next_first = self.pages.get(i + 1).map(|n| n.first_name.as_slice());
        let (first, last) = match (page.entries.first(), page.entries.last()) {
            (Some(f), Some(l)) => (&f.name, &l.name),
            _ => return Err(format!("page {} is empty", p.tree)),
        };
        if page.entries.len() as u64 != p.entries as u64
            || page.descendants != p.span
            || *first != p.first_name
            || next_first.is_some_and(|n| last.as_slice() >= n)
        {
            return Err(format!(
                "page {} does not match its tree index entry",
                p.tree
            ));
        }
        Ok(())
    }

    /// Approximate heap size, for the cache's byte budget.
    pub fn heap_size(&self) -> usize {
        self.pages.iter().map(|p| 96 + p.first_name.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::{Payload, Timestamp};

    fn entry(name: String, descendants: Option<u64>) -> Entry {
        Entry {
            name: name.into_bytes(),
            kind: if descendants.is_some() {
                EntryKind::Dir
            } else {
                EntryKind::Fifo
            },
            flags: 0,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            source_ino: 0,
            rdev: 0,
            xattrs: Vec::new(),
            payload: match descendants {
                Some(d) => Payload::Dir {
                    tree: TreeId([7; 32]),
                    descendants: d,
                },
                None => Payload::Special,
            },
        }
    }

    fn directory(n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| entry(format!("m{i:07}"), (i % 10 == 0).then_some(3)))
            .collect()
    }

    #[test]
    fn small_directories_stay_flat() {
        let d = encode_directory(&directory(FLAT_MAX_ENTRIES));
        assert!(d.pages.is_empty() && !is_tree_index(&d.root));
    }

    #[test]
    fn pages_cover_the_directory_and_agree_with_the_index() {
        let entries = directory(20_000);
        let d = encode_directory(&entries);
        let index = TreeIndex::decode(&d.root).unwrap();
        assert_eq!(index.pages.len(), d.pages.len());
        assert!(index.pages.len() >= 5, "{} pages", index.pages.len());
        assert_eq!(index.entries, 20_000);
        assert_eq!(index.subdirs, 2_000);
        assert_eq!(index.descendants, 20_000 + 2_000 * 3);
        let mut all = Vec::new();
        for (i, bytes) in d.pages.iter().enumerate() {
            let page = Tree::decode(bytes).unwrap();
            assert_eq!(TreeId::of(bytes), index.pages[i].tree);
            index.check_page(i, &page).unwrap();
            assert!(page.entries.len() >= PAGE_MIN || i + 1 == d.pages.len());
            assert!(page.entries.len() <= PAGE_MAX);
            all.extend(page.entries);
        }
        assert_eq!(all, entries);
        // Name, position and DFS number each find the page that holds the entry.
        let flat = Tree::decode(&Tree::encode(&entries)).unwrap();
        for k in [0usize, 1, 999, 12_345, 19_999] {
            let p = index.page_for_name(&entries[k].name).unwrap();
            let page = &index.pages[p];
            assert!(
                page.first_position <= k as u64
                    && (k as u64) < page.first_position + page.entries as u64
            );
            assert_eq!(index.page_for_position(k as u64), Some(p));
            assert_eq!(index.page_for_dfs(flat.dfs_offsets[k]), Some(p));
            assert_eq!(
                index.page_for_dfs(flat.dfs_offsets[k] + entries[k].descendants()),
                Some(p)
            );
        }
        assert_eq!(index.page_for_position(20_000), None);
        assert_eq!(index.page_for_dfs(index.descendants + 1), None);
        assert_eq!(index.page_for_name(b"a"), None);
    }

    #[test]
    fn an_added_name_rewrites_one_page() {
        let before = encode_directory(&directory(30_000));
        let mut entries = directory(30_000);
        entries.insert(15_000, entry("m0014999x".into(), None));
        let after = encode_directory(&entries);
        let changed = after
            .pages
            .iter()
            .filter(|p| !before.pages.contains(p))
            .count();
        assert!(changed <= 2, "{changed} pages changed");
    }

    #[test]
    fn a_page_that_does_not_match_its_index_entry_is_refused() {
        let d = encode_directory(&directory(20_000));
        let index = TreeIndex::decode(&d.root).unwrap();
        let first = Tree::decode(&d.pages[0]).unwrap();
        let second = Tree::decode(&d.pages[1]).unwrap();
        index.check_page(0, &first).unwrap();
        // Another page where the index expects this one (wrong first name, count or span)...
        assert!(index.check_page(1, &first).is_err());
        assert!(index.check_page(0, &second).is_err());
        // ...or a page whose last name reaches into the next page's range.
        let mut overlong = first.entries.clone();
        overlong.pop();
        overlong.push(second.entries[0].clone());
        let overlong = Tree::decode(&Tree::encode(&overlong)).unwrap();
        assert!(index.check_page(0, &overlong).is_err());
    }

    #[test]
    fn every_truncation_and_a_lying_total_are_errors() {
        let d = encode_directory(&directory(5_000));
        for n in 0..d.root.len() {
            assert!(
                TreeIndex::decode(&d.root[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let mut lying = d.root.clone();
        lying[12] ^= 1; // entry_count
        assert!(TreeIndex::decode(&lying).is_err());
    }
}
