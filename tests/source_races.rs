//! The source changing under a backup, and trees that lie: a backup stores one version of a file or says it
//! could not, and `check` verifies everything the mount relies on.

mod common;

use backupfs::backend::Object;
use backupfs::format::pack::compress;
use backupfs::format::tree::{Payload, Tree};
use backupfs::format::{BlobId, TreeId};
use backupfs::repo::{commit_snapshot, CacheSizes, Directory, NewPack, Repository};
use common::*;
use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};

const VERSION_LEN: usize = 24 << 20;

/// Whether a file read back is one whole version: every byte the same.
fn one_version(bytes: &[u8]) -> bool {
    bytes.len() == VERSION_LEN && bytes.iter().all(|b| *b == bytes[0])
}

/// A file rewritten in place, over and over, while a backup reads it: the backup used to store a mix of
/// versions with exit 0. It now reads again until one read saw no change, and after three attempts stores what
/// it read with a warning naming the file (exit 3). Once the writer stops, the next backup stores one version.
#[test]
fn a_file_rewritten_while_read_is_stored_whole_or_named_in_a_warning() {
    let t = TempDir::new("rewrite");
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    let path = src.join("busy.db");
    std::fs::write(&path, vec![b'a'; VERSION_LEN]).unwrap();
    let repo = t.join("repo");
    init_repo(&repo);

    let stop = AtomicBool::new(false);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for version in (b'b'..=b'z').cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let block = vec![version; 1 << 20];
                for i in 0..VERSION_LEN / block.len() {
                    f.write_all_at(&block, (i * block.len()) as u64).unwrap();
                }
            }
        });
        let out = bin()
            .args(["backup", "--json", "--repo"])
            .arg(&repo)
            .arg(&src)
            .output()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        out
    });
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let stored = std::fs::read(m.latest_in("").join("busy.db")).unwrap();
    match out.status.code() {
        Some(3) => assert!(
            summary["warning_messages"].to_string().contains("busy.db"),
            "{summary}"
        ),
        Some(0) => assert!(one_version(&stored), "exit 0 but a mix of versions stored"),
        other => panic!("{other:?}: {}", String::from_utf8_lossy(&out.stderr)),
    }
    drop(m);

    let quiet = backup(&repo, "default", &src, None);
    assert_eq!(quiet["warnings"], 0, "{quiet}");
    let m = Mount::new(&repo, "default", &t.join("mnt2"));
    let stored = std::fs::read(m.latest_in("").join("busy.db")).unwrap();
    assert!(one_version(&stored));
    assert_eq!(stored, std::fs::read(&path).unwrap());
}

/// Commits a copy of the newest snapshot whose root tree says its first subdirectory has one descendant more
/// than it has: the mount would then number (and show) entries in the wrong directories.
fn commit_lying_snapshot(repo_path: &std::path::Path) {
    let repo = Repository::open_dir(repo_path, CacheSizes::default()).unwrap();
    let newest = repo.snapshots(None).unwrap().pop().unwrap();
    let Payload::Dir { tree, .. } = newest.manifest.root.payload else {
        panic!("root is a directory")
    };
    let Directory::Flat(root) = repo.directory(tree).unwrap() else {
        panic!("a small root is not paged")
    };
    let mut entries = root.entries.clone();
    let dir = entries
        .iter_mut()
        .find_map(|e| match &mut e.payload {
            Payload::Dir { descendants, .. } => Some(descendants),
            _ => None,
        })
        .unwrap();
    *dir += 1;
    let bytes = Tree::encode(&entries);
    let lying = TreeId::of(&bytes);
    let mut pack = repo.codec().new_pack();
    let (stored, compression) = compress(&bytes, 3);
    pack.add(
        BlobId::tree(lying),
        &stored,
        compression,
        bytes.len() as u32,
    );
    let (id, pack_bytes, pack_entries) = repo.codec().finish_pack(pack).unwrap();
    repo.backend()
        .write_new(Object::Pack(id), &pack_bytes)
        .unwrap();
    let mut manifest = newest.manifest.clone();
    // The root entry itself agrees with the lying tree: only the inner claim is wrong.
    manifest.root.payload = Payload::Dir {
        tree: lying,
        descendants: Tree::decode(&bytes).unwrap().descendants,
    };
    manifest.time.sec += 86_400;
    let reused: HashSet<BlobId> = HashSet::new();
    let packs = [NewPack {
        id,
        size: pack_bytes.len() as u64,
        entries: pack_entries,
    }];
    commit_snapshot(&repo, &packs, &reused, manifest).unwrap();
}

/// A crafted tree entry with a wrong descendant count used to pass `check`, and the mount then showed one
/// directory's files in another.
#[test]
fn check_finds_a_wrong_descendant_count() {
    let t = TempDir::new("descendants");
    let (_src, repo) = backed_up_tree(&t, "desc", "default", None);
    commit_lying_snapshot(&repo);
    let out = bin().args(["check", "--repo"]).arg(&repo).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("descendants"), "{stdout}");
}
