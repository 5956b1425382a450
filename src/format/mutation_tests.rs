//! Deterministic mutation tests of every decoder of the format (issue 12: no input of any kind may panic).
//!
//! For each object kind, valid encodings are built with the real encoders and then mutated: single-bit flips,
//! truncations, appended bytes, and splices that overwrite a 2-, 4- or 8-byte little-endian field with values a
//! length, count, offset or ordinal check must survive (0, 1, max, max - 1, values near the buffer's length and
//! near what remains after the field). Small objects get every flip, every truncation and a splice at every byte
//! offset (the formats' fields are not aligned, so every offset is a superset of the aligned ones); large ones a
//! seeded sample. Each decode runs under `catch_unwind`; a panic fails the test naming the object kind, the
//! mutation and the seed. Whenever a decoder accepts the mutated bytes, encoding what it returned must give back
//! exactly those bytes: a decoder that accepts two encodings of one value (or drops a byte) accepts something the
//! format does not allow.
//!
//! The PRNG is a xorshift64* written here: the project has no dev-dependencies on purpose.

#![allow(clippy::cast_possible_truncation)] // test data: small, known lengths

use super::codec::Writer;
use super::config::{Config, CONFIG_LEN};
use super::links::{Link, LinkTable};
use super::manifest::{Manifest, Part, PartKind, Stats, MAX_ORDINAL};
use super::pack::{
    check_header, decompress, encode_trailer, Compression, Footer, PackBuilder, PackEntry,
    ENTRY_LEN, FOOTER_LEN, HEADER_LEN, MAX_CHUNK_LEN,
};
use super::tree::{Entry, EntryKind, Extent, Payload, Timestamp, Tree, FLAG_HARDLINK};
use super::tree_index::{encode_directory, PageRef, TreeIndex};
use super::{magic, BlobId, BlobKind, ChunkId, LinksId, TreeId};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Objects up to this many bytes get every bit flip and a splice at every byte offset.
const EXHAUSTIVE_LEN: usize = 2048;
/// Objects up to this many bytes get every truncation length.
const ALL_TRUNCATIONS_LEN: usize = 16 * 1024;
/// Flips and truncations sampled from a larger object.
const SAMPLE: usize = 2000;
/// Splice positions sampled per field width from a larger object.
const SPLICE_SAMPLE: usize = 100;

/// xorshift64*: deterministic and good enough to pick positions.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that small seeds do not start in a run of zero bits (and never at 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One mutation of a valid encoding, printable so that a failure can be reproduced.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mutation {
    Flip { byte: usize, bit: u8 },
    Truncate { len: usize },
    Append { what: &'static str, len: usize },
    Splice { at: usize, width: usize, value: u64 },
}

impl fmt::Display for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mutation::Flip { byte, bit } => write!(f, "flip bit {bit} of byte {byte}"),
            Mutation::Truncate { len } => write!(f, "truncate to {len} bytes"),
            Mutation::Append { what, len } => write!(f, "append {len} bytes ({what})"),
            Mutation::Splice { at, width, value } => {
                write!(
                    f,
                    "overwrite the u{} at byte {at} with {value:#x}",
                    width * 8
                )
            }
        }
    }
}

/// Calls `f` with every mutation of `valid` (see the module documentation) and the mutated bytes.
pub(crate) fn for_each_mutation(valid: &[u8], seed: u64, mut f: impl FnMut(Mutation, &[u8])) {
    let mut rng = Rng::new(seed);
    let len = valid.len();
    let mut buf = valid.to_vec();

    // Single-bit flips.
    let mut flip = |buf: &mut Vec<u8>, byte: usize, bit: u8| {
        buf[byte] ^= 1 << bit;
        f(Mutation::Flip { byte, bit }, buf);
        buf[byte] ^= 1 << bit;
    };
    if len <= EXHAUSTIVE_LEN {
        for byte in 0..len {
            for bit in 0..8 {
                flip(&mut buf, byte, bit);
            }
        }
    } else {
        for _ in 0..SAMPLE {
            let (byte, bit) = (rng.below(len), rng.below(8) as u8);
            flip(&mut buf, byte, bit);
        }
    }

    // Truncations.
    if len <= ALL_TRUNCATIONS_LEN {
        for n in 0..len {
            f(Mutation::Truncate { len: n }, &valid[..n]);
        }
    } else {
        let edges = (0..256).chain(len - 256..len);
        let sampled: Vec<usize> = (0..SAMPLE).map(|_| rng.below(len)).collect();
        for n in edges.chain(sampled) {
            f(Mutation::Truncate { len: n }, &valid[..n]);
        }
    }

    // Appended bytes.
    let random = rng.bytes(64);
    let appends: [(&'static str, &[u8]); 7] = [
        ("zero", &[0u8][..]),
        ("one", &[1u8][..]),
        ("0xff", &[0xffu8][..]),
        ("zeros", &[0u8; 8][..]),
        ("0xff", &[0xffu8; 8][..]),
        ("random", random.as_slice()),
        ("the object again", valid),
    ];
    for (what, tail) in appends {
        let mut longer = valid.to_vec();
        longer.extend_from_slice(tail);
        f(
            Mutation::Append {
                what,
                len: tail.len(),
            },
            &longer,
        );
    }

    // Length-field splices.
    for width in [2usize, 4, 8] {
        if len < width {
            continue;
        }
        let positions: Vec<usize> = if len <= EXHAUSTIVE_LEN {
            (0..=len - width).collect()
        } else {
            (0..SPLICE_SAMPLE)
                .map(|_| rng.below(len - width + 1))
                .collect()
        };
        let max = if width == 8 {
            u64::MAX
        } else {
            (1u64 << (width * 8)) - 1
        };
        for at in positions {
            let rest = (len - at - width) as u64;
            let mut values = vec![
                0,
                1,
                2,
                max,
                max - 1,
                max / 2 + 1,
                len as u64,
                len as u64 - 1,
                len as u64 + 1,
                rest,
                rest + 1,
                rest.saturating_sub(1),
                // Counts of records of the formats' sizes that would (almost) fit what remains.
                rest / 9,
                rest / 20,
                rest / 47,
                rest / 52,
                rest / 64,
                rest / 64 + 1,
            ];
            for v in &mut values {
                *v &= max;
            }
            values.sort_unstable();
            values.dedup();
            let saved = buf[at..at + width].to_vec();
            for value in values {
                buf[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
                f(Mutation::Splice { at, width, value }, &buf);
            }
            buf[at..at + width].copy_from_slice(&saved);
        }
    }
}

/// What a check of one input concluded: the decoder refused it, or accepted it consistently.
pub(crate) type Outcome = Result<Accepted, String>;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Accepted {
    Yes,
    No,
}

/// Runs `check` on `valid` (which it must accept) and on every mutation of it, each under `catch_unwind`.
/// Fails naming the object kind, mutation and seed of every panic and every wrong acceptance. Returns the number
/// of mutations run.
pub(crate) fn run(kind: &str, seed: u64, valid: &[u8], check: &dyn Fn(&[u8]) -> Outcome) -> usize {
    match catch_unwind(AssertUnwindSafe(|| check(valid))) {
        Ok(Ok(Accepted::Yes)) => {}
        other => panic!("{kind}: the valid encoding is not accepted: {other:?}"),
    }
    let mut failures = Vec::new();
    let mut count = 0;
    for_each_mutation(valid, seed, |m, bytes| {
        count += 1;
        match catch_unwind(AssertUnwindSafe(|| check(bytes))) {
            Ok(Ok(_)) => {}
            Ok(Err(wrong)) => failures.push(format!("{kind}, {m}, seed {seed:#x}: {wrong}")),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("?");
                failures.push(format!("{kind}, {m}, seed {seed:#x}: PANIC {msg}"));
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{} of {count} mutations failed:\n{}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    count
}

/// Ok when the re-encoding is the input, else where they differ.
pub(crate) fn same(input: &[u8], encoded: &[u8]) -> Outcome {
    if input == encoded {
        return Ok(Accepted::Yes);
    }
    let at = input
        .iter()
        .zip(encoded)
        .position(|(a, b)| a != b)
        .unwrap_or(input.len().min(encoded.len()));
    Err(format!(
        "accepted, but re-encodes differently ({} bytes in, {} out, first difference at byte {at})",
        input.len(),
        encoded.len()
    ))
}

/// A seed per object kind, so that each kind's sample is independent and a failure names what to rerun.
pub(crate) fn seed_of(kind: &str) -> u64 {
    let h = blake3::hash(kind.as_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap())
}

/// Runs every mutation of every valid encoding of one kind and reports the count.
pub(crate) fn run_all(kind: &str, valid: &[Vec<u8>], check: &dyn Fn(&[u8]) -> Outcome) {
    let started = std::time::Instant::now();
    let seed = seed_of(kind);
    let mut total = 0;
    for (i, v) in valid.iter().enumerate() {
        total += run(&format!("{kind} #{i}"), seed ^ i as u64, v, check);
    }
    eprintln!(
        "mutations: {kind}: {} encodings, {total} mutations, {:?}",
        valid.len(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Valid objects.

fn ts(sec: i64, nsec: u32) -> Timestamp {
    Timestamp { sec, nsec }
}

fn entry(name: &[u8], kind: EntryKind, payload: Payload) -> Entry {
    let size = match &payload {
        Payload::File { extents } => extents.iter().map(Extent::len).sum(),
        Payload::Symlink { target } => target.len() as u64,
        _ => 4096,
    };
    Entry {
        name: name.to_vec(),
        kind,
        flags: 0,
        mode: 0o644,
        uid: 1000,
        gid: 100,
        size,
        mtime: ts(1_700_000_000, 123),
        ctime: ts(-5, 999_999_999),
        source_ino: 42,
        rdev: 0,
        xattrs: Vec::new(),
        payload,
    }
}

/// One entry of every kind and flag, with xattrs, holes, an empty file and names that are not UTF-8.
fn every_kind() -> Vec<Entry> {
    let data = |b: u8, len: u32| Extent::Data {
        id: ChunkId([b; 32]),
        len,
    };
    let mut file = entry(
        b"a-file",
        EntryKind::File,
        Payload::File {
            extents: vec![
                data(1, 10),
                Extent::Hole { len: 1 << 33 },
                data(2, MAX_CHUNK_LEN as u32),
            ],
        },
    );
    file.xattrs = vec![
        (
            b"security.selinux".to_vec(),
            b"unconfined_u:object_r".to_vec(),
        ),
        (b"user.a".to_vec(), vec![0, 1, 2]),
        (b"user.empty".to_vec(), Vec::new()),
    ];
    let mut hardlinked = entry(
        b"b-hardlinked",
        EntryKind::File,
        Payload::File {
            extents: vec![data(3, 1)],
        },
    );
    hardlinked.flags = FLAG_HARDLINK;
    let empty = entry(
        b"c-empty",
        EntryKind::File,
        Payload::File {
            extents: Vec::new(),
        },
    );
    let sparse = entry(
        b"d-sparse",
        EntryKind::File,
        Payload::File {
            extents: vec![Extent::Hole { len: u64::MAX / 2 }],
        },
    );
    let mut dir = entry(
        b"e-dir",
        EntryKind::Dir,
        Payload::Dir {
            tree: TreeId([4; 32]),
            descendants: 17,
        },
    );
    dir.mode = 0o1777;
    let link = entry(
        b"f-link",
        EntryKind::Symlink,
        Payload::Symlink {
            target: b"../\xff\xfe/target".to_vec(),
        },
    );
    let mut fifo = entry(b"g-fifo", EntryKind::Fifo, Payload::Special);
    fifo.flags = FLAG_HARDLINK;
    let socket = entry(b"h-socket", EntryKind::Socket, Payload::Special);
    let mut chr = entry(b"i-chr", EntryKind::CharDev, Payload::Special);
    chr.rdev = 0x0103;
    let mut blk = entry(b"j-blk", EntryKind::BlockDev, Payload::Special);
    blk.rdev = 0x0801;
    blk.xattrs = vec![(b"trusted.x".to_vec(), vec![0xaa; 40])];
    let odd_name = entry(b"k-\xff\x80 non-utf8", EntryKind::Fifo, Payload::Special);
    vec![
        file, hardlinked, empty, sparse, dir, link, fifo, socket, chr, blk, odd_name,
    ]
}

/// A directory of `n` entries: mostly fifos, every tenth a directory, every seventh a small file.
fn directory(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let name = format!("m{i:06}");
            if i % 10 == 0 {
                entry(
                    name.as_bytes(),
                    EntryKind::Dir,
                    Payload::Dir {
                        tree: TreeId([7; 32]),
                        descendants: 3,
                    },
                )
            } else if i % 7 == 0 {
                entry(
                    name.as_bytes(),
                    EntryKind::File,
                    Payload::File {
                        extents: vec![Extent::Data {
                            id: ChunkId([i as u8; 32]),
                            len: 100,
                        }],
                    },
                )
            } else {
                entry(name.as_bytes(), EntryKind::Fifo, Payload::Special)
            }
        })
        .collect()
}

fn root_entry() -> Entry {
    let mut root = entry(
        b"",
        EntryKind::Dir,
        Payload::Dir {
            tree: TreeId([9; 32]),
            descendants: 12,
        },
    );
    root.mode = 0o755;
    root.xattrs = vec![(b"user.backup".to_vec(), b"yes".to_vec())];
    root
}

pub(crate) fn manifests() -> Vec<Manifest> {
    let full = Manifest {
        ordinal: 7,
        time: ts(1_790_000_000, 5),
        account: "alice".into(),
        hostname: "h\u{f4}te.example".into(),
        source: b"/home/alice/\xff".to_vec(),
        root: root_entry(),
        links: Some(LinksId([3; 32])),
        stats: Stats {
            files: 1,
            dirs: 2,
            symlinks: 3,
            specials: 4,
            file_bytes: 5 << 40,
            added_blobs: 6,
            added_bytes: 7,
        },
        parts: Vec::new(),
    };
    let with_parts = Manifest {
        parts: vec![
            Part {
                kind: PartKind::Files,
                failed: false,
                name: String::new(),
                bytes: 5 << 40,
                duration_ms: 9,
            },
            Part {
                kind: PartKind::PostgreSql,
                failed: true,
                name: "alice_shop".into(),
                bytes: 3,
                duration_ms: 1 << 40,
            },
        ],
        ..full.clone()
    };
    let mut bare_root = root_entry();
    bare_root.xattrs.clear();
    let minimal = Manifest {
        ordinal: MAX_ORDINAL,
        time: ts(-1, 0),
        account: "a".into(),
        hostname: String::new(),
        source: Vec::new(),
        root: bare_root,
        links: None,
        stats: Stats::default(),
        parts: Vec::new(),
    };
    vec![full, with_parts, minimal]
}

/// Packs with every blob kind and both compressions, and an empty one; the nonce is fixed for determinism.
fn packs() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(1);
    let mut b = PackBuilder::new(magic::PACK_VERSION);
    let add = |b: &mut PackBuilder, id: BlobId, raw: &[u8]| {
        let (stored, c) = super::pack::compress(raw, 3);
        b.add(id, &stored, c, raw.len() as u32);
    };
    let compressible = vec![b'a'; 10_000];
    add(
        &mut b,
        BlobId::chunk(ChunkId::of(&compressible)),
        &compressible,
    );
    let incompressible = rng.bytes(3000);
    add(
        &mut b,
        BlobId::chunk(ChunkId::of(&incompressible)),
        &incompressible,
    );
    let tree = Tree::encode(&every_kind());
    add(&mut b, BlobId::tree(TreeId::of(&tree)), &tree);
    let links = links_tables().pop().unwrap().encode();
    add(&mut b, BlobId::links(LinksId::of(&links)), &links);
    let full = b.finish(&|t| t).1;
    let empty = PackBuilder::new(magic::PACK_VERSION).finish(&|t| t).1;
    [full, empty]
        .into_iter()
        .map(|mut p| {
            p[12..16].copy_from_slice(&0x5eed_u32.to_le_bytes());
            p
        })
        .collect()
}

fn links_tables() -> Vec<LinkTable> {
    vec![
        LinkTable::default(),
        LinkTable {
            links: vec![
                Link {
                    source_ino: 5,
                    dfs: 1,
                    nlink: 2,
                },
                Link {
                    source_ino: 6,
                    dfs: 1 << 35,
                    nlink: u32::MAX,
                },
                Link {
                    source_ino: u64::MAX,
                    dfs: 0,
                    nlink: 3,
                },
            ],
        },
    ]
}

// ---------------------------------------------------------------------------------------------------------------
// Checks: decode, and when the decoder accepts, re-encode and exercise what callers compute from the value.

fn check_config(b: &[u8]) -> Outcome {
    let Ok(cfg) = Config::decode(b) else {
        return Ok(Accepted::No);
    };
    if u64::from(cfg.chunk_max) > MAX_CHUNK_LEN || cfg.chunk_min > cfg.chunk_max {
        return Err(format!("accepted chunk sizes out of range: {cfg:?}"));
    }
    same(b, &cfg.encode())
}

/// The config with its checksum recomputed, so that a mutation reaches the field checks behind it.
fn check_config_resealed(b: &[u8]) -> Outcome {
    let mut b = b.to_vec();
    // Version 1 ends with the checksum of bytes 0..64, version 2 (encrypted) with that of bytes 0..84.
    let at = if b.len() >= super::config::CONFIG_V2_LEN {
        84
    } else {
        64
    };
    if b.len() >= CONFIG_LEN {
        let sum = blake3::hash(&b[..at]);
        b[at..at + 32].copy_from_slice(sum.as_bytes());
    }
    check_config(&b)
}

/// The header has no decoded value (the nonce is free): what is true of an accepted one is its length, magic and
/// version.
fn check_pack_header(b: &[u8]) -> Outcome {
    let Ok(version) = check_header(b) else {
        return Ok(Accepted::No);
    };
    if version != magic::PACK_VERSION && version != magic::PACK_VERSION_SEALED {
        return Err(format!("accepted pack version {version}"));
    }
    let mut expected = Writer::default();
    expected.bytes(&magic::PACK_HEADER);
    expected.u32(version);
    if b.len() != HEADER_LEN || b[..12] != expected.buf[..] {
        return Err("accepted a header that is not 16 bytes of magic, version and nonce".into());
    }
    Ok(Accepted::Yes)
}

/// A footer, decoded as the end of a pack of `file_len` bytes and of other sizes around the edge cases.
fn check_pack_footer(b: &[u8], file_len: u64) -> Outcome {
    for len in [0, 1, 55, 56, 72, u64::MAX, file_len - 1, file_len + 1] {
        if let Ok(f) = Footer::decode(b, len, magic::PACK_VERSION) {
            let end = f.trailer_offset + u64::from(f.entry_count) * ENTRY_LEN as u64;
            if end.checked_add(FOOTER_LEN as u64) != Some(len) {
                return Err(format!(
                    "accepted for a {len}-byte pack: trailer ends at {end}"
                ));
            }
            same(b, &f.encode())?;
        }
    }
    let Ok(f) = Footer::decode(b, file_len, magic::PACK_VERSION) else {
        return Ok(Accepted::No);
    };
    if f.trailer_offset < HEADER_LEN as u64 {
        return Err("trailer inside the header".into());
    }
    same(b, &f.encode())
}

/// A trailer decoded with a footer whose checksum matches it (the trailer's checksum would refuse every
/// mutation before a field is read otherwise), with the original entry count and with the count its length
/// suggests; also with the original footer, which must refuse any change. Every accepted entry's stored bytes
/// are then cut out of the pack and decompressed, as a reader would (once per distinct location and lengths:
/// most mutations change only an id).
fn check_pack_trailer(
    b: &[u8],
    pack: &[u8],
    original: &Footer,
    decompressed: &RefCell<HashSet<(u64, u32, u32, u8)>>,
) -> Outcome {
    let mut accepted = Accepted::No;
    let footers = [
        Footer::new(original.trailer_offset, original.entry_count, b),
        Footer::new(original.trailer_offset, (b.len() / ENTRY_LEN) as u32, b),
    ];
    for footer in footers.iter().chain([original]) {
        let Ok(entries) = footer.decode_trailer(b) else {
            continue;
        };
        accepted = Accepted::Yes;
        same(b, &encode_trailer(&entries))?;
        for e in &entries {
            check_entry_bounds(e, footer.trailer_offset)?;
            let key = (e.offset, e.stored_len, e.raw_len, e.compression as u8);
            if !decompressed.borrow_mut().insert(key) {
                continue;
            }
            let start = e.offset as usize;
            let stored = &pack[start..start + e.stored_len as usize];
            if let Ok(plain) = decompress(stored, e.compression, e.raw_len) {
                if plain.len() as u64 != u64::from(e.raw_len) {
                    return Err("decompressed to the wrong length".into());
                }
            }
        }
    }
    Ok(accepted)
}

fn check_entry_bounds(e: &PackEntry, trailer_offset: u64) -> Result<(), String> {
    let end = e.offset.checked_add(u64::from(e.stored_len));
    if e.offset < HEADER_LEN as u64 || end.is_none_or(|end| end > trailer_offset) {
        return Err(format!("accepted a blob outside the data area: {e:?}"));
    }
    if e.id.kind == BlobKind::Chunk && u64::from(e.raw_len) > MAX_CHUNK_LEN {
        return Err(format!("accepted a chunk longer than the maximum: {e:?}"));
    }
    if e.compression == Compression::Raw && e.stored_len != e.raw_len {
        return Err(format!("accepted a raw blob whose lengths differ: {e:?}"));
    }
    Ok(())
}

/// A whole pack read as `repo::packs::read_pack_trailer` and a blob reader do: header, footer, trailer, each
/// blob's stored bytes decompressed and verified against its id.
fn check_whole_pack(b: &[u8]) -> Outcome {
    if b.len() < HEADER_LEN + FOOTER_LEN || check_header(&b[..HEADER_LEN]).is_err() {
        return Ok(Accepted::No);
    }
    let footer_at = b.len() - FOOTER_LEN;
    let Ok(footer) = Footer::decode(&b[footer_at..], b.len() as u64, magic::PACK_VERSION) else {
        return Ok(Accepted::No);
    };
    let trailer_at = usize::try_from(footer.trailer_offset).map_err(|e| e.to_string())?;
    let trailer = b
        .get(trailer_at..footer_at)
        .ok_or("accepted a footer whose trailer is not in the pack")?;
    let Ok(entries) = footer.decode_trailer(trailer) else {
        return Ok(Accepted::No);
    };
    same(trailer, &encode_trailer(&entries))?;
    same(&b[footer_at..], &footer.encode())?;
    for e in &entries {
        check_entry_bounds(e, footer.trailer_offset)?;
        let start = e.offset as usize;
        let stored = &b[start..start + e.stored_len as usize];
        let Ok(plain) = decompress(stored, e.compression, e.raw_len) else {
            return Ok(Accepted::No);
        };
        if blake3::hash(&plain).as_bytes() != &e.id.hash {
            return Ok(Accepted::No);
        }
    }
    Ok(Accepted::Yes)
}

fn check_tree(b: &[u8]) -> Outcome {
    let Ok(tree) = Tree::decode(b) else {
        return Ok(Accepted::No);
    };
    // What the mount computes from a tree must not overflow or index out of bounds either.
    let total = tree.descendants;
    for rel in [
        0,
        1,
        2,
        total,
        total.saturating_add(1),
        u64::MAX / 2,
        u64::MAX,
    ] {
        if let Some(i) = tree.entry_spanning(rel) {
            if tree.dfs_offsets[i] > rel {
                return Err(format!("entry {i} does not span {rel}"));
            }
        }
    }
    for e in tree.entries.iter().take(3) {
        tree.find(&e.name)
            .ok_or("an entry is not found by its name")?;
    }
    let _ = tree.heap_size();
    same(b, &Tree::encode(&tree.entries))
}

/// A tree index, checked against the pages it was encoded with as far as they still line up.
fn check_tree_index(b: &[u8], pages: &[Tree]) -> Outcome {
    let Ok(index) = TreeIndex::decode(b) else {
        return Ok(Accepted::No);
    };
    let n = index.pages.len();
    for (i, page) in pages.iter().enumerate().take(n) {
        let _ = index.check_page(i, page);
    }
    for p in &index.pages {
        if index.page_for_name(&p.first_name).is_none() {
            return Err("a page's first name finds no page".into());
        }
    }
    for probe in [
        0,
        1,
        index.entries,
        index.descendants,
        u64::MAX / 2,
        u64::MAX,
    ] {
        if index.page_for_position(probe).is_some_and(|i| i >= n)
            || index.page_for_dfs(probe).is_some_and(|i| i >= n)
        {
            return Err(format!("probe {probe} found a page out of range"));
        }
    }
    let _ = index.heap_size();
    same(b, &index.encode())
}

fn check_links(b: &[u8]) -> Outcome {
    let Ok(table) = LinkTable::decode(b) else {
        return Ok(Accepted::No);
    };
    for probe in [0, 5, 6, u64::MAX] {
        let _ = table.get(probe);
    }
    same(b, &table.encode())
}

pub(crate) fn check_manifest(b: &[u8]) -> Outcome {
    let Ok(m) = Manifest::decode(b) else {
        return Ok(Accepted::No);
    };
    // Callers compute `ordinal + 1` and `ordinal << 36`.
    if !(1..=MAX_ORDINAL).contains(&m.ordinal) || (m.ordinal << 36) >> 36 != m.ordinal {
        return Err(format!("accepted ordinal {}", m.ordinal));
    }
    same(b, &m.encode())
}

// ---------------------------------------------------------------------------------------------------------------
// The tests, one per object kind so that they run in parallel.

#[test]
fn config() {
    let mut other = Config::new([0xa5; 32]);
    (other.chunk_min, other.chunk_avg, other.chunk_max) = (64, 64, MAX_CHUNK_LEN as u32);
    (other.zstd_level, other.pack_target) = (22, 1);
    let encrypted = Config {
        encryption: Some(super::config::Encryption {
            scheme: super::config::SCHEME_CHACHA20_POLY1305,
            key_check: [3; 16],
        }),
        ..Config::new([8; 32])
    };
    let gcm = Config {
        encryption: Some(super::config::Encryption {
            scheme: super::config::SCHEME_AES_256_GCM,
            key_check: [2; 16],
        }),
        ..Config::new([6; 32])
    };
    let valid: Vec<Vec<u8>> = [Config::new([7; 32]), other, encrypted, gcm]
        .iter()
        .map(Config::encode)
        .collect();
    run_all("config", &valid, &check_config);
    run_all("config (checksum resealed)", &valid, &check_config_resealed);
}

#[test]
fn pack_header() {
    let valid: Vec<Vec<u8>> = packs().iter().map(|p| p[..HEADER_LEN].to_vec()).collect();
    run_all("pack header", &valid, &check_pack_header);
}

#[test]
fn pack_footer() {
    for (i, pack) in packs().iter().enumerate() {
        let footer = pack[pack.len() - FOOTER_LEN..].to_vec();
        let len = pack.len() as u64;
        run_all(&format!("pack footer #{i}"), &[footer], &|b| {
            check_pack_footer(b, len)
        });
    }
}

#[test]
fn pack_trailer() {
    for (i, pack) in packs().iter().enumerate() {
        let footer_at = pack.len() - FOOTER_LEN;
        let footer =
            Footer::decode(&pack[footer_at..], pack.len() as u64, magic::PACK_VERSION).unwrap();
        let trailer = pack[footer.trailer_offset as usize..footer_at].to_vec();
        let decompressed = RefCell::new(HashSet::new());
        run_all(&format!("pack trailer #{i}"), &[trailer], &|b| {
            check_pack_trailer(b, pack, &footer, &decompressed)
        });
    }
}

#[test]
fn whole_pack() {
    run_all("whole pack", &packs(), &check_whole_pack);
}

#[test]
fn tree() {
    let mut long_names = directory(3);
    long_names[2].name = vec![b'x'; 255];
    let valid = vec![
        Tree::encode(&[]),
        Tree::encode(&every_kind()),
        Tree::encode(&long_names),
        Tree::encode(&directory(200)),
    ];
    run_all("tree", &valid, &check_tree);
}

#[test]
fn tree_index() {
    let entries = directory(5_000);
    let encoded = encode_directory(&entries);
    assert!(!encoded.pages.is_empty(), "5,000 entries are paged");
    let pages: Vec<Tree> = encoded
        .pages
        .iter()
        .map(|p| Tree::decode(p).unwrap())
        .collect();
    // A small index written by hand: one page of one entry.
    let one = Tree::encode(&directory(1));
    let single = TreeIndex {
        pages: vec![PageRef {
            tree: TreeId::of(&one),
            entries: 1,
            span: 4,
            first_name: b"m000000".to_vec(),
            first_position: 0,
            first_dfs: 1,
        }],
        entries: 1,
        descendants: 4,
        subdirs: 1,
    }
    .encode();
    run_all("tree index", &[encoded.root.clone(), single], &|b| {
        check_tree_index(b, &pages)
    });
    // The pages are ordinary trees (of up to 4,096 entries, ~300 KiB: the "tree" test covers their decoder, so
    // only the smallest page is mutated here, sampled).
    let smallest = encoded.pages.iter().min_by_key(|p| p.len()).unwrap();
    run_all(
        "tree index page",
        std::slice::from_ref(smallest),
        &check_tree,
    );
}

#[test]
fn links() {
    let valid: Vec<Vec<u8>> = links_tables().iter().map(LinkTable::encode).collect();
    run_all("links", &valid, &check_links);
}

#[test]
fn manifest() {
    let valid: Vec<Vec<u8>> = manifests().iter().map(Manifest::encode).collect();
    run_all("manifest", &valid, &check_manifest);
}

#[test]
fn the_harness_finds_a_planted_panic() {
    // A decoder that trusts a length field: the harness must report it, not crash.
    let trusting = |b: &[u8]| -> Outcome {
        let n = b.first().copied().unwrap_or(0) as usize;
        Ok(if b[1..1 + n].is_empty() {
            Accepted::No
        } else {
            Accepted::Yes
        })
    };
    let failed = catch_unwind(|| run("planted", 1, &[2, 0, 0], &trusting));
    let msg = failed.expect_err("the planted panic is found");
    let msg = msg.downcast_ref::<String>().unwrap();
    assert!(msg.contains("planted, ") && msg.contains("PANIC"), "{msg}");
}

/// An envelope is accepted only as the writer lays it out: what decodes re-encodes to the same bytes, and the
/// kind asked for is the kind found. (Whether the seal opens is the AEAD's business, tested in `repo::codec`.)
fn check_envelope(b: &[u8]) -> Outcome {
    use super::sealed::{self, SealedKind};
    let mut accepted = Accepted::No;
    for kind in [SealedKind::Manifest, SealedKind::PackIndex] {
        if let Ok(e) = sealed::decode(b, kind) {
            if e.header != &sealed::header(kind) {
                return Err(format!("accepted the header of another kind as {kind:?}"));
            }
            accepted = same(b, &sealed::encode(kind, &e.salt, e.sealed))?;
        }
    }
    Ok(accepted)
}

#[test]
fn sealed_envelope() {
    use super::sealed::{encode, SealedKind};
    let valid = vec![
        encode(SealedKind::Manifest, &[7; 32], &[0xa5; 80]),
        encode(SealedKind::PackIndex, &[1; 32], &[]),
    ];
    run_all("sealed envelope", &valid, &check_envelope);
}
