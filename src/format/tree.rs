//! Tree blobs: one directory's entries, sorted by name, with everything a restore needs.
//!
//! ```text
//! tree     = magic "BKFSTREE" | version u32 (1) | entry_count u32 | entry*
//! entry    = name_len u16 | name bytes
//!            kind u8 (1 file, 2 dir, 3 symlink, 4 fifo, 5 socket, 6 char dev, 7 block dev)
//!            flags u8 (bit 0: hardlinked non-directory, see `links`; other bits zero)
//!            mode u32 (permission bits incl. setuid/setgid/sticky, no type bits)
//!            uid u32 | gid u32 | size u64
//!            mtime_sec i64 | mtime_nsec u32 | ctime_sec i64 | ctime_nsec u32
//!            source_ino u64 (inode number in the source filesystem, for incremental backup and hardlinks)
//!            rdev u64 (device number, glibc dev_t encoding; 0 unless a device)
//!            xattr_count u16 | (name_len u16 | name | value_len u32 | value)*
//!            payload by kind:
//!              file:    extent_count u32 | (tag u8 | len u64 | [chunk id 32 if tag = 0])*
//!                       tag 0 = data chunk, tag 1 = hole of zeros (sparse files); lengths sum to size
//!              dir:     descendants u64 | tree id 32
//!              symlink: target_len u32 | target bytes (verbatim)
//!              others:  nothing
//! ```
//! Names are non-empty, contain no `/` or NUL, are not `.` or `..`, and are strictly ascending as byte strings.
//! `descendants` is the number of entries below the directory, at any depth. It gives every entry of a snapshot
//! a number in depth-first pre-order (the snapshot root is 0) that can be computed from the trees alone: the
//! basis of the mount's stable inode numbers.

use super::codec::{Reader, Writer};
use super::{magic, ChunkId, FormatError, TreeId};

pub const FLAG_HARDLINK: u8 = 1;
/// Limits a decoder enforces, so that a hostile tree cannot make it allocate without bound.
pub const MAX_XATTR_VALUE: usize = 64 * 1024;
pub const MAX_SYMLINK_TARGET: usize = 64 * 1024;
/// The longest chunk of the format: a data extent is 1..=16 MiB (SPEC.md), the config's `chunk_max` is at most
/// this, and a pack trailer's chunk entries have a `raw_len` of at most this.
pub const MAX_CHUNK_LEN: u64 = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDev = 6,
    BlockDev = 7,
}

impl EntryKind {
    fn from_u8(v: u8) -> Option<Self> {
        use EntryKind::*;
        [File, Dir, Symlink, Fifo, Socket, CharDev, BlockDev]
            .into_iter()
            .find(|k| *k as u8 == v)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Timestamp {
    pub sec: i64,
    pub nsec: u32,
}

/// One piece of a file's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extent {
    Data { id: ChunkId, len: u32 },
    Hole { len: u64 },
}

impl Extent {
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data { len, .. } => *len as u64,
            Extent::Hole { len } => *len,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    File {
        extents: Vec<Extent>,
    },
    Dir {
        tree: TreeId,
        descendants: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Fifos, sockets and devices: metadata only.
    Special,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub kind: EntryKind,
    pub flags: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub source_ino: u64,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub payload: Payload,
}

impl Entry {
    /// Entries below this one (directories only); its subtree spans `1 + descendants()` DFS numbers.
    pub fn descendants(&self) -> u64 {
        match self.payload {
            Payload::Dir { descendants, .. } => descendants,
            _ => 0,
        }
    }

    pub fn is_hardlinked(&self) -> bool {
        self.flags & FLAG_HARDLINK != 0
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "listxattr(2) returns at most 64 KiB of NUL-terminated names (< 2^16 names); a file of 2^32 \
                  extents would be 256 GiB even of 64-byte chunks (the smallest chunk_min)"
    )]
    pub fn encode(&self, w: &mut Writer) {
        w.bytes16(&self.name);
        w.u8(self.kind as u8);
        w.u8(self.flags);
        w.u32(self.mode);
        w.u32(self.uid);
        w.u32(self.gid);
        w.u64(self.size);
        for t in [self.mtime, self.ctime] {
            w.i64(t.sec);
            w.u32(t.nsec);
        }
        w.u64(self.source_ino);
        w.u64(self.rdev);
        w.u16(self.xattrs.len() as u16);
        for (name, value) in &self.xattrs {
            w.bytes16(name);
            w.bytes32(value);
        }
        match &self.payload {
            Payload::File { extents } => {
                w.u32(extents.len() as u32);
                for e in extents {
                    match e {
                        Extent::Data { id, len } => {
                            w.u8(0);
                            w.u64(*len as u64);
                            w.bytes(&id.0);
                        }
                        Extent::Hole { len } => {
                            w.u8(1);
                            w.u64(*len);
                        }
                    }
                }
            }
            Payload::Dir { tree, descendants } => {
                w.u64(*descendants);
                w.bytes(&tree.0);
            }
            Payload::Symlink { target } => w.bytes32(target),
            Payload::Special => {}
        }
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Self, FormatError> {
        let name = r.bytes16()?.to_vec();
        let kind = EntryKind::from_u8(r.u8()?).ok_or_else(|| r.invalid("unknown entry kind"))?;
        let flags_at = r.offset();
        let flags = r.u8()?;
        // SPEC.md: any entry but a directory may be hardlinked (files from the start, other kinds since 2026-11).
        if flags & !FLAG_HARDLINK != 0 || (flags != 0 && kind == EntryKind::Dir) {
            return Err(r.invalid_at(flags_at, "unknown entry flags"));
        }
        let (mode, uid, gid, size) = (r.u32()?, r.u32()?, r.u32()?, r.u64()?);
        if mode & !0o7777 != 0 {
            return Err(r.invalid("mode has bits beyond 0o7777"));
        }
        let mtime = decode_time(r)?;
        let ctime = decode_time(r)?;
        let (source_ino, rdev) = (r.u64()?, r.u64()?);
        let xattrs = decode_xattrs(r)?;
        let payload = decode_payload(r, kind, size)?;
        Ok(Self {
            name,
            kind,
            flags,
            mode,
            uid,
            gid,
            size,
            mtime,
            ctime,
            source_ino,
            rdev,
            xattrs,
            payload,
        })
    }
}

pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

fn decode_time(r: &mut Reader<'_>) -> Result<Timestamp, FormatError> {
    let sec = r.i64()?;
    let nsec = r.u32()?;
    if nsec >= 1_000_000_000 {
        return Err(r.invalid("nanoseconds out of range"));
    }
    Ok(Timestamp { sec, nsec })
}

fn decode_xattrs(r: &mut Reader<'_>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, FormatError> {
    let count = r.u16()?;
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(count.min(64).into());
    for _ in 0..count {
        let at = r.offset();
        let name = r.bytes16()?;
        let value = r.bytes32()?;
        if name.is_empty() || name.contains(&0) || value.len() > MAX_XATTR_VALUE {
            return Err(r.invalid_at(at, "invalid xattr"));
        }
        // Sorted by name (SPEC.md); the names of one inode are distinct, so strictly.
        if xattrs
            .last()
            .is_some_and(|(prev, _)| prev.as_slice() >= name)
        {
            return Err(r.invalid_at(at, "xattrs not in strictly ascending name order"));
        }
        xattrs.push((name.to_vec(), value.to_vec()));
    }
    Ok(xattrs)
}

fn decode_payload(r: &mut Reader<'_>, kind: EntryKind, size: u64) -> Result<Payload, FormatError> {
    Ok(match kind {
        EntryKind::File => {
            let count = r.u32()? as usize;
            // Each extent takes at least 9 bytes, which bounds the allocation by the blob's size.
            if count > r.remaining() / 9 {
                return Err(r.invalid("extent count exceeds tree size"));
            }
            let mut extents = Vec::with_capacity(count);
            let mut total: u64 = 0;
            for _ in 0..count {
                let at = r.offset();
                let tag = r.u8()?;
                let len = r.u64()?;
                let extent = match (tag, u32::try_from(len)) {
                    (0, Ok(data_len)) if data_len > 0 && len <= MAX_CHUNK_LEN => Extent::Data {
                        id: ChunkId(r.array()?),
                        len: data_len,
                    },
                    (1, _) if len > 0 => Extent::Hole { len },
                    _ => return Err(r.invalid_at(at, "invalid extent")),
                };
                total = total
                    .checked_add(len)
                    .ok_or_else(|| r.invalid("extent lengths overflow"))?;
                extents.push(extent);
            }
            if total != size {
                return Err(r.invalid(format!("extents cover {total} bytes, size is {size}")));
            }
            Payload::File { extents }
        }
        EntryKind::Dir => {
            let descendants = r.u64()?;
            Payload::Dir {
                tree: TreeId(r.array()?),
                descendants,
            }
        }
        EntryKind::Symlink => {
            let target = r.bytes32()?;
            if target.is_empty() || target.len() > MAX_SYMLINK_TARGET {
                return Err(r.invalid("invalid symlink target"));
            }
            Payload::Symlink {
                target: target.to_vec(),
            }
        }
        _ => Payload::Special,
    })
}

/// A decoded directory, with the derived numbers the mount needs precomputed.
#[derive(Debug)]
pub struct Tree {
    pub entries: Vec<Entry>,
    /// DFS number of each entry relative to this directory (the directory itself is 0).
    pub dfs_offsets: Vec<u64>,
    /// Entries at any depth below this directory.
    pub descendants: u64,
    /// Number of subdirectories, for the directory's link count.
    pub subdirs: u32,
}

impl Tree {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "directories of more than 4,096 entries are paged (tree_index), pages hold at most 4,096"
    )]
    pub fn encode(entries: &[Entry]) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + entries.len() * 96);
        w.bytes(&magic::TREE);
        w.u32(magic::TREE_VERSION);
        w.u32(entries.len() as u32);
        for e in entries {
            e.encode(&mut w);
        }
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "tree");
        r.header(magic::TREE, magic::TREE_VERSION)?;
        let count = r.u32()? as usize;
        if count > r.remaining() / 64 {
            return Err(r.invalid("entry count exceeds tree size"));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        for _ in 0..count {
            let e = Entry::decode(&mut r)?;
            if !valid_name(&e.name) {
                return Err(r.invalid("invalid entry name"));
            }
            if entries.last().is_some_and(|prev| prev.name >= e.name) {
                return Err(r.invalid("entries not in strictly ascending name order"));
            }
            entries.push(e);
        }
        r.finish()?;
        Self::from_entries(entries).map_err(|what| FormatError::Invalid {
            object: "tree",
            offset: 0,
            what,
        })
    }

    fn from_entries(entries: Vec<Entry>) -> Result<Self, String> {
        let mut dfs_offsets = Vec::with_capacity(entries.len());
        let mut next: u64 = 1;
        let mut subdirs = 0;
        for e in &entries {
            dfs_offsets.push(next);
            next = next
                .checked_add(1)
                .and_then(|n| n.checked_add(e.descendants()))
                .ok_or("descendant counts overflow")?;
            subdirs += (e.kind == EntryKind::Dir) as u32;
        }
        Ok(Self {
            entries,
            dfs_offsets,
            descendants: next - 1,
            subdirs,
        })
    }

    pub fn find(&self, name: &[u8]) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
    }

    /// The entry whose subtree holds relative DFS number `rel` (>= 1): the entry itself or one of its descendants.
    pub fn entry_spanning(&self, rel: u64) -> Option<usize> {
        let i = self
            .dfs_offsets
            .partition_point(|&o| o <= rel)
            .checked_sub(1)?;
        (rel <= self.dfs_offsets[i] + self.entries[i].descendants()).then_some(i)
    }

    /// Heap bytes the decoded tree occupies (allocator overhead included), for the cache's byte budget: an
    /// estimate that undercounts lets a cache hold more than its budget says.
    pub fn heap_size(&self) -> usize {
        let per_entry = std::mem::size_of::<Entry>() + std::mem::size_of::<u64>();
        self.entries
            .iter()
            .map(|e| {
                let xattrs: usize = e
                    .xattrs
                    .iter()
                    .map(|(n, v)| allocation(n.len()) + allocation(v.len()))
                    .sum();
                let payload = match &e.payload {
                    Payload::File { extents } => {
                        allocation(extents.len() * std::mem::size_of::<Extent>())
                    }
                    Payload::Symlink { target } => allocation(target.len()),
                    _ => 0,
                };
                let xattr_vec =
                    allocation(e.xattrs.len() * std::mem::size_of::<(Vec<u8>, Vec<u8>)>());
                per_entry + allocation(e.name.len()) + xattr_vec + xattrs + payload
            })
            .sum()
    }
}

/// What glibc's malloc takes for `n` bytes: an 8-byte header, 16-byte granules, 32 bytes at least (none for 0).
fn allocation(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(name: &str, payload: Payload) -> Entry {
        let kind = match payload {
            Payload::File { .. } => EntryKind::File,
            Payload::Dir { .. } => EntryKind::Dir,
            Payload::Symlink { .. } => EntryKind::Symlink,
            Payload::Special => EntryKind::Fifo,
        };
        let size = match &payload {
            Payload::File { extents } => extents.iter().map(Extent::len).sum(),
            _ => 0,
        };
        Entry {
            name: name.as_bytes().to_vec(),
            kind,
            flags: 0,
            mode: 0o644,
            uid: 1,
            gid: 2,
            size,
            mtime: Timestamp {
                sec: 1_700_000_000,
                nsec: 123,
            },
            ctime: Timestamp {
                sec: -5,
                nsec: 999_999_999,
            },
            source_ino: 42,
            rdev: 0,
            xattrs: vec![(b"user.a".to_vec(), vec![0, 1, 2])],
            payload,
        }
    }

    fn sample() -> Vec<Entry> {
        let file = Payload::File {
            extents: vec![
                Extent::Data {
                    id: ChunkId([1; 32]),
                    len: 10,
                },
                Extent::Hole { len: 1 << 33 },
            ],
        };
        vec![
            entry("a", file),
            entry(
                "b",
                Payload::Dir {
                    tree: TreeId([2; 32]),
                    descendants: 5,
                },
            ),
            entry(
                "c",
                Payload::Symlink {
                    target: b"\xff/x".to_vec(),
                },
            ),
            entry("d", Payload::Special),
        ]
    }

    #[test]
    fn round_trip_and_dfs_numbers() {
        let bytes = Tree::encode(&sample());
        let tree = Tree::decode(&bytes).unwrap();
        assert_eq!(tree.entries, sample());
        assert_eq!(tree.dfs_offsets, vec![1, 2, 8, 9]);
        assert_eq!(tree.descendants, 9);
        assert_eq!(tree.entry_spanning(1), Some(0));
        assert_eq!(tree.entry_spanning(2), Some(1));
        assert_eq!(tree.entry_spanning(7), Some(1));
        assert_eq!(tree.entry_spanning(8), Some(2));
        assert_eq!(tree.entry_spanning(10), None);
        assert_eq!(tree.entry_spanning(0), None);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = Tree::encode(&sample());
        for n in 0..bytes.len() {
            assert!(
                Tree::decode(&bytes[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn unsorted_and_bad_names_are_refused() {
        let mut entries = sample();
        entries.swap(0, 1);
        assert!(Tree::decode(&Tree::encode(&entries)).is_err());
        let bad = vec![entry("x/y", Payload::Special)];
        assert!(Tree::decode(&Tree::encode(&bad)).is_err());
    }
}
