//! Writes a few valid objects of each kind to `corpus/<target>/seed-*`, so that a short fuzzing run starts from
//! inputs that get past the magic numbers and checksums instead of having to discover them: some built here with
//! the format's encoders, and the real objects of the golden repositories (`../fixtures/golden*/repo`: config,
//! manifests, small packs, and the tree, tree index and hardlink table blobs inside the packs). Reads the
//! fixtures, never writes them.
//!
//! ```sh
//! cargo run --example seed_corpus    # from fuzz/; stable toolchain is fine
//! ```

use backupfs_fuzz::format::config::Config;
use backupfs_fuzz::format::links::{Link, LinkTable};
use backupfs_fuzz::format::magic;
use backupfs_fuzz::format::manifest::{Manifest, Part, PartKind, Stats};
use backupfs_fuzz::format::pack::{
    compress, decompress, Compression, Footer, PackBuilder, FOOTER_LEN, HEADER_LEN,
};
use backupfs_fuzz::format::tree::{Entry, EntryKind, Extent, Payload, Timestamp, Tree};
use backupfs_fuzz::format::tree_index::{encode_directory, is_tree_index};
use backupfs_fuzz::format::{BlobId, BlobKind, ChunkId, LinksId, TreeId};
use std::path::{Path, PathBuf};

/// Seeds larger than these are left out: they would only slow the fuzzer down (and raise libFuzzer's -max_len).
const MAX_PACK_SEED: usize = 128 * 1024;
const MAX_BLOB_SEED: usize = 64 * 1024;
/// At most this many blobs of one kind from each golden repository.
const MAX_PER_KIND: usize = 16;

fn entry(name: &[u8], payload: Payload) -> Entry {
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
        name: name.to_vec(),
        kind,
        flags: 0,
        mode: 0o644,
        uid: 1000,
        gid: 1000,
        size,
        mtime: Timestamp {
            sec: 1_790_000_000,
            nsec: 5,
        },
        ctime: Timestamp {
            sec: -1,
            nsec: 999_999_999,
        },
        source_ino: 42,
        rdev: 0,
        xattrs: vec![(b"user.a".to_vec(), vec![1, 2, 3])],
        payload,
    }
}

fn sample_tree() -> Vec<Entry> {
    let mut file = entry(
        b"a",
        Payload::File {
            extents: vec![
                Extent::Data {
                    id: ChunkId([1; 32]),
                    len: 10,
                },
                Extent::Hole { len: 1 << 33 },
            ],
        },
    );
    file.flags = 1; // hardlinked: on a regular file, accepted by every reader of format v1
    vec![
        file,
        entry(
            b"b",
            Payload::Dir {
                tree: TreeId([2; 32]),
                descendants: 5,
            },
        ),
        entry(
            b"c",
            Payload::Symlink {
                target: b"../x".to_vec(),
            },
        ),
        entry(b"d", Payload::Special),
    ]
}

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");

    write(&dir, "decode_config", "new", &Config::new([7; 32]).encode());
    for (name, scheme) in [("encrypted", 1), ("encrypted-gcm", 2)] {
        let encrypted = Config {
            encryption: Some(backupfs_fuzz::format::config::Encryption {
                scheme,
                key_check: [3; 16],
            }),
            ..Config::new([8; 32])
        };
        write(&dir, "decode_config", name, &encrypted.encode());
    }

    let mut pack = PackBuilder::new(magic::PACK_VERSION);
    let chunk = vec![b'a'; 3000];
    let (stored, c) = compress(&chunk, 3);
    pack.add(
        BlobId::chunk(ChunkId::of(&chunk)),
        &stored,
        c,
        chunk.len() as u32,
    );
    let tree = Tree::encode(&sample_tree());
    pack.add(
        BlobId::tree(TreeId::of(&tree)),
        &tree,
        Compression::Raw,
        tree.len() as u32,
    );
    write(&dir, "decode_pack_tail", "two-blobs", &pack.finish(&|t| t).1);
    write(
        &dir,
        "decode_pack_tail",
        "empty",
        &PackBuilder::new(magic::PACK_VERSION).finish(&|t| t).1,
    );

    write(&dir, "decode_tree", "sample", &tree);
    write(&dir, "decode_tree", "empty", &Tree::encode(&[]));

    let big: Vec<Entry> = (0..5000u32)
        .map(|i| {
            let name = format!("m{i:07}");
            match i % 10 {
                0 => entry(
                    name.as_bytes(),
                    Payload::Dir {
                        tree: TreeId([3; 32]),
                        descendants: 3,
                    },
                ),
                _ => entry(name.as_bytes(), Payload::Special),
            }
        })
        .collect();
    write(
        &dir,
        "decode_tree_index",
        "5000",
        &encode_directory(&big).root,
    );

    let links = LinkTable {
        links: vec![
            Link {
                source_ino: 5,
                dfs: 1,
                nlink: 2,
            },
            Link {
                source_ino: 9,
                dfs: 7,
                nlink: 3,
            },
        ],
    };
    write(&dir, "decode_links", "two", &links.encode());

    let manifest = Manifest {
        ordinal: 7,
        time: Timestamp {
            sec: 1_790_000_000,
            nsec: 5,
        },
        account: "alice".into(),
        hostname: "host".into(),
        source: b"/home/alice".to_vec(),
        root: entry(
            b"",
            Payload::Dir {
                tree: TreeId([9; 32]),
                descendants: 12,
            },
        ),
        links: Some(LinksId([3; 32])),
        stats: Stats {
            files: 1,
            ..Default::default()
        },
        parts: Vec::new(),
    };
    write(&dir, "decode_manifest", "links", &manifest.encode());
    let with_parts = Manifest {
        parts: vec![
            Part {
                kind: PartKind::Files,
                failed: false,
                name: String::new(),
                bytes: 1,
                duration_ms: 2,
            },
            Part {
                kind: PartKind::MariaDb,
                failed: true,
                name: "alice_wp".into(),
                bytes: 3,
                duration_ms: 4,
            },
        ],
        ..manifest.clone()
    };
    write(&dir, "decode_manifest", "parts", &with_parts.encode());
    let manifest = Manifest {
        links: None,
        ..manifest
    };
    write(&dir, "decode_manifest", "no-links", &manifest.encode());

    // paged_directory: the first 8 bytes (as a u64, mod 8) choose the size: 0 around 4,096, 1 paged, else small.
    for (name, mode) in [("boundary", 0u8), ("paged", 1), ("small", 2)] {
        let mut input = vec![mode, 0, 0, 0, 0, 0, 0, 0];
        input.extend_from_slice(b"some names from the input");
        write(&dir, "paged_directory", name, &input);
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for repo in ["golden", "golden-paged"] {
        let mut taken = [0usize; 3];
        let repo_dir = fixtures.join(repo).join("repo");
        if let Ok(bytes) = std::fs::read(repo_dir.join("config")) {
            write(&dir, "decode_config", &format!("{repo}-config"), &bytes);
        }
        for path in files(&repo_dir.join("snapshots")) {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy()[..8].to_string();
            write(&dir, "decode_manifest", &format!("{repo}-{name}"), &bytes);
        }
        for path in files(&repo_dir.join("packs")) {
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy()[..8].to_string();
            if bytes.len() <= MAX_PACK_SEED {
                write(&dir, "decode_pack_tail", &format!("{repo}-{name}"), &bytes);
            }
            for (kind, plain) in blobs(&bytes) {
                let (target, slot) = match kind {
                    BlobKind::Chunk => continue,
                    BlobKind::Tree if is_tree_index(&plain) => ("decode_tree_index", 0),
                    BlobKind::Tree => ("decode_tree", 1),
                    BlobKind::Links => ("decode_links", 2),
                };
                if plain.len() <= MAX_BLOB_SEED && taken[slot] < MAX_PER_KIND {
                    taken[slot] += 1;
                    let id = TreeId::of(&plain).short();
                    write(&dir, target, &format!("{repo}-{id}"), &plain);
                }
            }
        }
    }
    println!("seeds written under {}", dir.display());
}

/// The files under `dir`, recursively, in a stable order; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The plaintext of every blob of a pack file (as the repository reads them: header, footer, trailer, then each
/// blob's stored bytes decompressed); nothing if the pack does not decode.
fn blobs(pack: &[u8]) -> Vec<(BlobKind, Vec<u8>)> {
    if pack.len() < HEADER_LEN + FOOTER_LEN {
        return Vec::new();
    }
    let Ok(footer) = Footer::decode(
        &pack[pack.len() - FOOTER_LEN..],
        pack.len() as u64,
        magic::PACK_VERSION,
    ) else {
        return Vec::new();
    };
    let trailer = &pack[footer.trailer_offset as usize..pack.len() - FOOTER_LEN];
    let Ok(entries) = footer.decode_trailer(trailer) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|e| {
            let stored = &pack[e.offset as usize..(e.offset + u64::from(e.stored_len)) as usize];
            let plain = decompress(stored, e.compression, e.raw_len).ok()?;
            Some((e.id.kind, plain))
        })
        .collect()
}
