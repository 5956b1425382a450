//! Directories too large for one tree blob: written as a tree index with pages, and listed, looked up,
//! numbered, checked and pruned exactly like small ones.

mod common;

use backupfs::format::tree::Payload;
use backupfs::repo::{CacheSizes, Directory, Repository};
use backupfs::vfs::{inode, MountRoot, Scope, Vfs};
use common::*;
use std::collections::HashMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const ENTRIES: usize = 9_000;

/// `big/` with ENTRIES entries: files (some with content), subdirectories with files of their own, symlinks,
/// and a file hardlinked from outside, so that DFS numbers and link counts cross page boundaries.
fn big_tree(src: &Path) {
    let big = src.join("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..ENTRIES {
        let p = big.join(format!("e{i:05}"));
        match i % 500 {
            7 => {
                fs::create_dir(&p).unwrap();
                fs::write(p.join("inner-a"), format!("inner {i}")).unwrap();
                fs::write(p.join("inner-b"), b"").unwrap();
            }
            13 => std::os::unix::fs::symlink(format!("e{:05}", i - 1), &p).unwrap(),
            n => fs::write(
                &p,
                if n % 50 == 0 {
                    format!("content of {i}\n")
                } else {
                    String::new()
                },
            )
            .unwrap(),
        }
    }
    fs::create_dir(src.join("zz")).unwrap();
    fs::hard_link(big.join("e04000"), src.join("zz/link-to-e04000")).unwrap();
}

/// What the mount must number each path: its depth-first pre-order number (entries in name-byte order, the
/// snapshot root 0), the first path's number for every path of a hardlinked file.
fn expected_dfs(src: &Path) -> HashMap<PathBuf, u64> {
    fn walk(
        dir: &Path,
        rel: &Path,
        next: &mut u64,
        first: &mut HashMap<u64, u64>,
        out: &mut HashMap<PathBuf, u64>,
    ) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let (path, rel) = (dir.join(&name), rel.join(&name));
            let meta = fs::symlink_metadata(&path).unwrap();
            let dfs = *next;
            *next += 1;
            let shown = if meta.is_file() && meta.nlink() > 1 {
                *first.entry(meta.ino()).or_insert(dfs)
            } else {
                dfs
            };
            out.insert(rel.clone(), shown);
            if meta.is_dir() {
                walk(&path, &rel, next, first, out);
            }
        }
    }
    let mut out = HashMap::new();
    walk(src, Path::new(""), &mut 1, &mut HashMap::new(), &mut out);
    out
}

fn big_directory(repo: &Repository) -> Directory {
    let snaps = repo.snapshots(None).unwrap();
    let Payload::Dir { tree, .. } = snaps.last().unwrap().manifest.root.payload else {
        panic!("snapshot root is not a directory")
    };
    let root = repo.directory(tree).unwrap();
    let big = root
        .find(repo, b"big")
        .unwrap()
        .expect("big/ in the snapshot");
    let Payload::Dir { tree, .. } = big.payload else {
        panic!("big is not a directory")
    };
    repo.directory(tree).unwrap()
}

/// `big_tree` at `t/src`, backed up once into a new repository at `t/repo`: (source, repository, the backup's
/// JSON summary).
fn big_tree_backed_up(t: &TempDir) -> (PathBuf, PathBuf, serde_json::Value) {
    let src = t.join("src");
    big_tree(&src);
    let repo = t.join("repo");
    init_repo(&repo);
    let summary = backup(&repo, "default", &src, Some("2026-11-20T03:00:00Z"));
    (src, repo, summary)
}

#[test]
fn a_paged_directory_mounts_numbers_and_resolves_like_a_flat_one() {
    let t = TempDir::new("large-dirs");
    let (src, repo, _) = big_tree_backed_up(&t);

    let library = Arc::new(Repository::open_dir(&repo, CacheSizes::default()).unwrap());
    let big = big_directory(&library);
    assert!(
        big.pages().len() >= 3,
        "big/ is written in {} pages",
        big.pages().len()
    );
    assert_eq!(big.len(), ENTRIES as u64);
    assert_eq!(big.subdirs(), (ENTRIES / 500) as u32);

    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let snap = m.path.join("2026-11-20");
    assert_same_tree(&describe(&src), &describe(&snap));
    let listed: Vec<_> = fs::read_dir(snap.join("big"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(listed.len(), ENTRIES);
    assert_eq!(
        listed, sorted,
        "readdir returns the entries in name order, across pages"
    );

    // Every inode number is the DFS number the source's order gives, hardlinks included; directories count
    // their subdirectories.
    let expected = expected_dfs(&src);
    let map = inode_map(&snap);
    assert_eq!(map.len(), expected.len());
    for (path, ino, nlink) in &map {
        assert_eq!(
            ino & ((1 << 36) - 1),
            expected[path],
            "{}: inode {ino:#x}",
            path.display()
        );
        if path.as_os_str() == "big" {
            assert_eq!(*nlink, 2 + (ENTRIES / 500) as u64);
        }
    }
    let link = map
        .iter()
        .find(|(p, ..)| p.ends_with("link-to-e04000"))
        .unwrap();
    assert_eq!(
        link.2, 2,
        "a hardlink into a paged directory keeps its link count"
    );

    // A fresh view resolves every inode number with no lookup first (what NFS file handles need).
    let vfs = Vfs::new(
        library,
        Scope::Account("default".into()),
        MountRoot {
            uid: 0,
            gid: 0,
            perm: 0o755,
        },
    )
    .unwrap();
    for (path, ino, _) in map.iter().step_by(7) {
        let attr = vfs
            .getattr(*ino)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(attr.ino, *ino);
        if !path.ends_with("link-to-e04000") && !path.ends_with("e04000") {
            assert_eq!(vfs.path_of(*ino), format!("2026-11-20/{}", path.display()));
        }
    }
    let ordinal = map[0].1 >> 36;
    let past_the_end = inode::encode(ordinal, expected.len() as u64 + 1).unwrap();
    assert!(
        vfs.getattr(past_the_end).is_err(),
        "a DFS number past the snapshot's last entry"
    );
}

#[test]
fn a_file_added_to_a_huge_directory_rewrites_one_page_and_prune_keeps_it_whole() {
    let t = TempDir::new("large-dirs-incr");
    let (src, repo, first) = big_tree_backed_up(&t);
    fs::write(src.join("big/e04500-new"), b"new file\n").unwrap();
    let second = backup(&repo, "default", &src, Some("2026-11-21T03:00:00Z"));

    // The new file's chunk, one page, big/'s index and the root tree: not all of big/ (flat, its one tree alone
    // is most of what the first backup stored).
    let blobs = second["blobs_added"].as_u64().unwrap();
    let (bytes, all_bytes) = (
        second["bytes_added"].as_u64().unwrap(),
        first["bytes_added"].as_u64().unwrap(),
    );
    eprintln!("first backup stored {all_bytes} bytes; adding one file stored {blobs} blobs, {bytes} bytes");
    assert!(blobs <= 5, "one added file stored {blobs} blobs");
    assert!(
        bytes * 2 < all_bytes,
        "one added file stored {bytes} bytes of {all_bytes}"
    );

    let status = bin()
        .args(["prune", "--keep-last", "1", "--repo"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    check_clean(&repo);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(
        &describe(&src),
        &describe(&fs::canonicalize(m.path.join("latest")).unwrap()),
    );
    let new = fs::read(m.path.join("latest/big/e04500-new")).unwrap();
    assert_eq!(new, b"new file\n");
}
