//! The library view without FUSE: path resolution, inode numbers resolved with no prior lookup, verified reads.

mod common;

use backupfs::format::tree::Extent;
use backupfs::format::ChunkId;
use backupfs::repo::{CacheSizes, Repository};
use backupfs::vfs::{inode, MountRoot, Scope, Vfs, VfsError};
use common::*;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

fn open_vfs(repo: &Path) -> Vfs {
    let repo = Arc::new(Repository::open_dir(repo, CacheSizes::default()).unwrap());
    Vfs::new(
        repo,
        Scope::Account("default".into()),
        MountRoot {
            uid: 0,
            gid: 0,
            perm: 0o755,
        },
    )
    .unwrap()
}

fn lookup_path(vfs: &Vfs, path: &str) -> u64 {
    let mut ino = inode::ROOT;
    for part in path.split('/') {
        ino = vfs
            .lookup(ino, part.as_bytes())
            .unwrap_or_else(|e| panic!("{path}: {part}: {e}"))
            .ino;
    }
    ino
}

#[test]
fn resolves_reads_and_renumbers_identically_in_a_fresh_view() {
    let t = TempDir::new("vfs");
    let (src, repo) = backed_up_tree(&t, "8", "default", Some("2026-11-20T03:00:00Z"));

    let vfs = open_vfs(&repo);
    let php = "2026-11-20/www/index.php";
    let ino = lookup_path(&vfs, php);
    let file = vfs.open(ino).unwrap();
    let want = std::fs::read(src.join("www/index.php")).unwrap();
    assert_eq!(vfs.read(&file, 0, 1 << 20).unwrap(), want);
    assert_eq!(vfs.read(&file, 3, 5).unwrap(), want[3..8]);
    assert_eq!(vfs.read(&file, want.len() as u64 + 10, 5).unwrap(), b"");

    // A sparse file over 4 GiB: reads across the hole and past 4 GiB match the source.
    let big = lookup_path(&vfs, "2026-11-20/sparse/big.img");
    let big_file = vfs.open(big).unwrap();
    let src_big = std::fs::File::open(src.join("sparse/big.img")).unwrap();
    for offset in [0u64, 1 << 20, (4 << 30) - 7, (5 << 30) + 100] {
        let mut want = vec![0u8; 4096];
        let n = std::os::unix::fs::FileExt::read_at(&src_big, &mut want, offset).unwrap();
        want.truncate(n);
        assert_eq!(
            vfs.read(&big_file, offset, 4096).unwrap(),
            want,
            "offset {offset}"
        );
    }

    // A fresh view (as after a daemon restart) resolves the same numbers with no lookup first.
    let fresh = open_vfs(&repo);
    let attr = fresh.getattr(ino).unwrap();
    assert_eq!(attr.size, want.len() as u64);
    assert_eq!(fresh.path_of(ino), php);
    let parent = fresh.parent(ino).unwrap();
    assert_eq!(fresh.path_of(parent), "2026-11-20/www");
    assert_eq!(fresh.lookup(ino, b"..").unwrap().ino, parent);
    assert_eq!(fresh.lookup(ino, b".").unwrap().ino, ino);

    // Every entry of the listing resolves to the entry a lookup by name gives.
    let dir = lookup_path(&fresh, "2026-11-20/www");
    let mut items = Vec::new();
    fresh
        .readdir(dir, 0, &mut |item| {
            items.push((item.name, item.ino));
            false
        })
        .unwrap();
    assert!(items.len() > 3);
    for (name, ino) in &items[2..] {
        assert_eq!(fresh.lookup(dir, name).unwrap().ino, *ino);
        assert_eq!(fresh.getattr(*ino).unwrap().ino, *ino);
    }
    let names: Vec<_> = std::fs::read_dir(src.join("www"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert_eq!(items.len() - 2, names.len());

    // Unknown numbers and names are "not found", not damage.
    assert!(matches!(
        fresh.getattr(inode::encode(999, 0).unwrap()),
        Err(VfsError::NotFound)
    ));
    assert!(matches!(
        fresh.getattr(inode::encode(1, 1 << 30).unwrap()),
        Err(VfsError::NotFound)
    ));
    assert!(matches!(
        fresh.lookup(dir, b"nope"),
        Err(VfsError::NotFound)
    ));
}

#[test]
fn a_read_in_the_second_half_of_a_chunk_loads_the_chunks_within_the_window_ahead() {
    let t = TempDir::new("prefetch");
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(11, 12 << 20)).unwrap();
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "default", &src, Some("2026-11-20T03:00:00Z"));
    let vfs = open_vfs(&repo);
    let file = vfs.open(lookup_path(&vfs, "2026-11-20/big.bin")).unwrap();
    let chunks: Vec<(ChunkId, u64)> = file
        .extents()
        .iter()
        .map(|e| match e {
            Extent::Data { id, len } => (*id, *len as u64),
            Extent::Hole { .. } => panic!("noise has no holes"),
        })
        .collect();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let ready = |k: usize| vfs.repo().chunk_is_cached_or_loading(chunks[k].0);
    // The first half of a chunk is not taken as a sequential read; the second half is.
    vfs.read(&file, 0, 1000).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !ready(1),
        "prefetched after a read at the start of the first chunk"
    );
    let half = chunks[0].1 / 2;
    vfs.read(&file, half, (chunks[0].1 - half) as usize)
        .unwrap();
    // Chunks starting within the window after chunk 0 are loaded, the first one beyond it is not.
    let mut starts = vec![0];
    for (_, len) in &chunks {
        starts.push(starts.last().unwrap() + len);
    }
    let window_end = starts[1] + backupfs::vfs::PREFETCH_BYTES;
    let beyond = starts.iter().position(|&s| s >= window_end).unwrap();
    assert!(
        beyond >= 3 && beyond < chunks.len(),
        "chunk starts {starts:?}"
    );
    wait_until(
        "the chunks within the window prefetched",
        std::time::Duration::from_secs(10),
        || (1..beyond).all(ready),
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(!ready(beyond), "prefetched beyond the window");
    let want = std::fs::read(src.join("big.bin")).unwrap();
    let second = chunks[1].1 as usize;
    let got = vfs.read(&file, chunks[0].1, second).unwrap();
    assert_eq!(
        got,
        want[chunks[0].1 as usize..chunks[0].1 as usize + second]
    );
}
