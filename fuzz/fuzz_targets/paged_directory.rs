//! Model-based test of large directories (`tree_index::encode_directory` and the readers' lookups).
//!
//! From the fuzz input, build a directory: a sorted, deduplicated list of valid entries (files, directories with
//! arbitrary descendant counts, symlinks, a few special files), sometimes more than `FLAT_MAX_ENTRIES` so that it
//! is paged. Names come from the input bytes; once the input is used up, from a counter mixed with the input
//! (splitmix64), so that a short input still yields thousands of distinct names cheaply.
//!
//! Encode it, decode the root (a tree index or a flat tree, per `is_tree_index`) and every page, and compare
//! with a brute-force model: SPEC.md's DFS numbering (entry i has relative number
//! `1 + sum over j < i of (1 + descendants_j)`), positions in the sorted list, and the page cut rule. For
//! every entry, and for numbers inside every directory's subtree span, `page_for_dfs`, `page_for_name`,
//! `page_for_position`, and within the page `Tree::entry_spanning` and `Tree::find`, must agree with the model;
//! `check_page` must accept every page; the pages concatenated must be the directory.
#![no_main]

use backupfs_fuzz::format::tree::{
    valid_name, Entry, EntryKind, Extent, Payload, Timestamp, Tree, MAX_CHUNK_LEN,
    MAX_SYMLINK_TARGET,
};
use backupfs_fuzz::format::tree_index::{
    encode_directory, is_tree_index, TreeIndex, FLAT_MAX_ENTRIES, PAGE_MAX, PAGE_MIN,
};
use backupfs_fuzz::format::{ChunkId, TreeId};
use libfuzzer_sys::fuzz_target;

/// The input as an endless byte stream: its bytes, then a splitmix64 stream seeded from them.
struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
    state: u64,
}

impl<'a> Gen<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for &b in data {
            state = state.rotate_left(5) ^ u64::from(b);
            state = state.wrapping_mul(0x0100_0000_01b3);
        }
        Self {
            data,
            pos: 0,
            state,
        }
    }
    fn u64(&mut self) -> u64 {
        match self.data.get(self.pos..self.pos + 8) {
            Some(bytes) => {
                self.pos += 8;
                u64::from_le_bytes(bytes.try_into().unwrap())
            }
            None => {
                self.pos = self.data.len();
                self.mix()
            }
        }
    }
    fn mix(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn u8(&mut self) -> u8 {
        if self.pos < self.data.len() {
            self.pos += 1;
            self.data[self.pos - 1]
        } else {
            self.mix() as u8
        }
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.u64() % n
        }
    }
}

fn time(g: &mut Gen) -> Timestamp {
    Timestamp {
        sec: g.u64() as i64,
        nsec: g.below(1_000_000_000) as u32,
    }
}

/// A name: mostly short (so that some collide and are deduplicated, and some are ".", ".." or contain '/' or NUL
/// and are dropped), sometimes with a counter appended so that thousands of them stay distinct.
fn name(g: &mut Gen, counter: usize) -> Vec<u8> {
    let len = 1 + g.below(6) as usize;
    let mut name: Vec<u8> = (0..len).map(|_| g.u8()).collect();
    if g.below(4) != 0 {
        // The counter in base 253, digits as bytes 2..=254 with '/' replaced by 1: never NUL or '/'.
        let mut c = counter;
        loop {
            let digit = (c % 253) as u8 + 2;
            name.push(if digit == b'/' { 1 } else { digit });
            c /= 253;
            if c == 0 {
                break;
            }
        }
    }
    name
}

fn entry(g: &mut Gen, name: Vec<u8>, max_span: u64) -> Entry {
    let kind = match g.below(10) {
        0..=3 => EntryKind::File,
        4..=6 => EntryKind::Dir,
        7 | 8 => EntryKind::Symlink,
        _ => [
            EntryKind::Fifo,
            EntryKind::Socket,
            EntryKind::CharDev,
            EntryKind::BlockDev,
        ][g.below(4) as usize],
    };
    let payload = match kind {
        EntryKind::File => {
            let extents = (0..g.below(3))
                .map(|_| {
                    if g.below(2) == 0 {
                        Extent::Data {
                            id: ChunkId([g.u8(); 32]),
                            len: 1 + g.below(MAX_CHUNK_LEN) as u32,
                        }
                    } else {
                        Extent::Hole {
                            len: 1 + g.below(1 << 40),
                        }
                    }
                })
                .collect();
            Payload::File { extents }
        }
        EntryKind::Dir => {
            // 1 + descendants <= max_span keeps every sum in u64 (see `build`); most subdirectories are small.
            let descendants = match g.below(4) {
                0 => 0,
                1 | 2 => g.below(20),
                _ => g.below(max_span),
            };
            Payload::Dir {
                tree: TreeId([g.u8(); 32]),
                descendants,
            }
        }
        EntryKind::Symlink => {
            // Now and then up to the longest target the format allows, filled cheaply.
            let target = if g.below(64) == 0 {
                vec![g.u8(); 1 + g.below(MAX_SYMLINK_TARGET as u64) as usize]
            } else {
                (0..1 + g.below(16)).map(|_| g.u8()).collect()
            };
            Payload::Symlink { target }
        }
        _ => Payload::Special,
    };
    let size = match &payload {
        Payload::File { extents } => extents.iter().map(Extent::len).sum(),
        _ => g.below(1 << 20),
    };
    let xattrs = match g.below(8) {
        0 => vec![
            (b"user.a".to_vec(), vec![g.u8()]),
            (b"user.b".to_vec(), vec![]),
        ],
        1 => vec![(vec![1 + g.below(255) as u8], vec![g.u8(); 3])],
        _ => vec![],
    };
    Entry {
        name,
        kind,
        // The hardlink flag: on any entry but a directory (SPEC.md, since 2026-11).
        flags: u8::from(kind != EntryKind::Dir && g.below(8) == 0),
        mode: g.below(0o10000) as u32,
        uid: g.u64() as u32,
        gid: g.u64() as u32,
        size,
        mtime: time(g),
        ctime: time(g),
        source_ino: g.u64(),
        rdev: if matches!(kind, EntryKind::CharDev | EntryKind::BlockDev) {
            g.u64()
        } else {
            0
        },
        xattrs,
        payload,
    }
}

fn build(data: &[u8]) -> Vec<Entry> {
    let mut g = Gen::new(data);
    let wanted = match g.below(8) {
        0 => FLAT_MAX_ENTRIES - 1 + g.below(4) as usize,
        1 => FLAT_MAX_ENTRIES + 1 + g.below(8_000) as usize,
        _ => g.below(200) as usize,
    };
    // Descendant counts: in one directory out of four, up to what keeps the sums in u64 (every entry's
    // 1 + descendants at most u64::MAX / (wanted + 1)); otherwise small.
    let max_span = if g.below(4) == 0 {
        u64::MAX / (wanted as u64 + 1)
    } else {
        1000
    };
    // Invalid and duplicate names are dropped, and more are drawn so that the directory usually has exactly
    // `wanted` entries (4,096 and 4,097 are the flat/paged boundary); the attempts are bounded all the same.
    let mut names: Vec<Vec<u8>> = Vec::with_capacity(wanted);
    let mut counter = 0;
    while names.len() < wanted && counter < 2 * wanted {
        let n = name(&mut g, counter);
        counter += 1;
        if valid_name(&n) {
            names.push(n);
        }
        if names.len() == wanted {
            names.sort_unstable();
            names.dedup();
        }
    }
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|n| entry(&mut g, n, max_span))
        .collect()
}

/// The writer's page cut rule (SPEC.md), restated: whether a page ends after this entry, the page holding `len`
/// entries with it.
fn cut_after(e: &Entry, len: usize) -> bool {
    let h = blake3::hash(&e.name);
    let low = u32::from_le_bytes(h.as_bytes()[..4].try_into().unwrap());
    len >= PAGE_MAX || (len >= PAGE_MIN && low & 1023 == 0)
}

/// Numbers to probe inside entry i's subtree span `dfs ..= dfs + descendants`.
fn probes(dfs: u64, descendants: u64, salt: u64) -> [u64; 4] {
    [
        dfs,
        dfs + descendants,
        dfs + descendants / 2,
        dfs + salt % (descendants + 1).max(1),
    ]
}

fuzz_target!(|data: &[u8]| {
    let entries = build(data);
    let n = entries.len();
    // The model: relative DFS numbers by brute force, in u128, and positions by name.
    let mut dfs = Vec::with_capacity(n);
    let mut next: u128 = 1;
    for e in &entries {
        dfs.push(u64::try_from(next).expect("generator bound on descendants"));
        next += 1 + u128::from(e.descendants());
    }
    let total = u64::try_from(next - 1).unwrap();
    // Names are distinct and sorted, so entry i is at position i; and `name + [1]` is the immediate successor of
    // `name` among valid names (only `name + [0]`, invalid, lies between), so it is in the directory only if it
    // is the next entry's name.
    let absent = |i: usize| {
        let mut a = entries[i].name.clone();
        a.push(1);
        (entries.get(i + 1).is_none_or(|next| next.name != a)).then_some(a)
    };
    let subdirs = entries.iter().filter(|e| e.kind == EntryKind::Dir).count();
    let salt = data
        .iter()
        .fold(0u64, |a, &b| a.rotate_left(7) ^ u64::from(b));

    let encoded = encode_directory(&entries);
    let paged = n > FLAT_MAX_ENTRIES;
    assert_eq!(is_tree_index(&encoded.root), paged);
    assert_eq!(encoded.pages.is_empty(), !paged);

    if !paged {
        let tree = Tree::decode(&encoded.root).expect("a flat directory decodes");
        assert_eq!(tree.entries, entries);
        assert_eq!(tree.dfs_offsets, dfs);
        assert_eq!(tree.descendants, total);
        assert_eq!(tree.subdirs as usize, subdirs);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(tree.find(&e.name), Some(i));
            for rel in probes(dfs[i], e.descendants(), salt ^ i as u64) {
                assert_eq!(tree.entry_spanning(rel), Some(i), "dfs {rel}");
            }
            if let Some(absent) = absent(i) {
                assert_eq!(tree.find(&absent), None);
            }
        }
        assert_eq!(tree.entry_spanning(0), None);
        assert_eq!(tree.entry_spanning(total + 1), None);
        return;
    }

    let index = TreeIndex::decode(&encoded.root).expect("a tree index decodes");
    assert_eq!(index.pages.len(), encoded.pages.len());
    assert_eq!(index.entries, n as u64);
    assert_eq!(index.descendants, total);
    assert_eq!(index.subdirs as usize, subdirs);
    let mut pages = Vec::with_capacity(encoded.pages.len());
    let mut page_of = Vec::with_capacity(n); // entry -> (page, index within the page)
    for (k, bytes) in encoded.pages.iter().enumerate() {
        assert!(!is_tree_index(bytes));
        assert_eq!(TreeId::of(bytes), index.pages[k].tree);
        let page = Tree::decode(bytes).expect("a page decodes");
        index
            .check_page(k, &page)
            .expect("check_page accepts the writer's page");
        let last = k + 1 == encoded.pages.len();
        let len = page.entries.len();
        assert!(len <= PAGE_MAX && (len >= PAGE_MIN || last));
        for (li, e) in page.entries.iter().enumerate() {
            let i = page_of.len();
            assert_eq!(*e, entries[i], "pages concatenated are the directory");
            // A page ends exactly at its first cut point; only the last page may end without one.
            if li + 1 < len {
                assert!(
                    !cut_after(e, li + 1),
                    "page {k} runs past a cut point at entry {li}"
                );
            } else if !last {
                assert!(cut_after(e, li + 1), "page {k} ends without a cut point");
            }
            page_of.push((k, li));
        }
        assert_eq!(index.pages[k].first_position, (page_of.len() - len) as u64);
        pages.push(page);
    }
    assert_eq!(page_of.len(), n);

    for (i, e) in entries.iter().enumerate() {
        let (k, li) = page_of[i];
        let (p, page) = (&index.pages[k], &pages[k]);
        assert_eq!(index.page_for_position(i as u64), Some(k));
        assert_eq!(p.first_position + li as u64, i as u64);
        assert_eq!(index.page_for_name(&e.name), Some(k));
        assert_eq!(page.find(&e.name), Some(li));
        // The page's own numbering is relative to the page: its first entry is 1, the directory's p.first_dfs.
        assert_eq!(page.dfs_offsets[li] + p.first_dfs - 1, dfs[i]);
        for rel in probes(dfs[i], e.descendants(), salt ^ i as u64) {
            assert_eq!(index.page_for_dfs(rel), Some(k), "dfs {rel}");
            assert_eq!(
                page.entry_spanning(rel - p.first_dfs + 1),
                Some(li),
                "dfs {rel}"
            );
        }
        // A name that is not in the directory: the page it would be in, and not found there.
        if let Some(absent) = absent(i) {
            let brute = index.pages.iter().rposition(|p| p.first_name <= absent);
            assert_eq!(index.page_for_name(&absent), brute);
            assert_eq!(brute, Some(k)); // it sorts right after e, before the next entry
            assert_eq!(pages[k].find(&absent), None);
        }
    }
    assert_eq!(index.page_for_position(n as u64), None);
    assert_eq!(index.page_for_dfs(0), None);
    assert_eq!(index.page_for_dfs(total + 1), None);
    // Names before the directory's first: none of its pages could hold them.
    let first = &index.pages[0].first_name;
    assert_eq!(index.page_for_name(&first[..first.len() - 1]), None);
    assert_eq!(index.page_for_name(b""), None);
});
