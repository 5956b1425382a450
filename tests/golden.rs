//! Backward compatibility: the repositories in fixtures/golden*/ were each written once by an old build and are
//! never regenerated. Every build must mount them with the same contents and the same inode numbers.

mod common;

use common::*;
use std::process::Command;

/// Mounts a copy of fixtures/NAME/repo and compares each day's snapshot with the describe output and the whole
/// mount with the inode listing that the build which wrote the fixture saw.
fn assert_mounts_as_recorded(name: &str, days: &[&str]) {
    assert_mounts_with(name, days, &[], |_| {});
}

/// As `assert_mounts_as_recorded`, with extra mount arguments and a change to the copy before mounting.
fn assert_mounts_with(
    name: &str,
    days: &[&str],
    extra: &[&str],
    prepare: impl Fn(&std::path::Path),
) {
    let golden = fixtures().join(name);
    let t = TempDir::new(name);
    // A copy, so that nothing a test run does can touch the fixture.
    let repo = cp_a(&golden.join("repo"), &t.join("repo"));
    prepare(&repo);
    let state = t.join("state");
    // A key file as its owner keeps it: git records no mode, and a key others may read is refused.
    let key = t.join("key");
    if golden.join("key").exists() {
        std::fs::copy(golden.join("key"), &key).unwrap();
        let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&key, private).unwrap();
    }
    let extra: Vec<&str> = (extra.iter().copied())
        .map(|a| match a {
            "STATE" => state.to_str().unwrap(),
            "KEY" => key.to_str().unwrap(),
            _ => a,
        })
        .collect();
    let m = Mount::with(&repo, "golden", &t.join("mnt"), &extra, &[]);
    for day in days {
        let want = std::fs::read_to_string(golden.join(format!("describe-{day}.txt"))).unwrap();
        assert_same_tree(&want, &describe(&m.path.join(day)));
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -printf '%i %n %p\\n' | LC_ALL=C sort -k3")
        .current_dir(&m.path)
        .output()
        .unwrap();
    // Bytes, not text: the fixture's names include newlines and bytes that are not UTF-8.
    let want = std::fs::read(golden.join("inodes.txt")).unwrap();
    assert!(
        want == out.stdout,
        "{name}: inode numbers or link counts changed"
    );
}

#[test]
fn the_golden_repository_still_mounts_identically() {
    assert_mounts_as_recorded("golden", &["2026-11-17", "2026-11-18", "2026-11-19"]);
}

/// fixtures/golden-paged/ (fixtures/make_golden_paged.sh, run once): a 6,000-entry Maildir written as a tree
/// index with pages.
#[test]
fn the_golden_paged_directory_still_mounts_identically() {
    assert_mounts_as_recorded("golden-paged", &["2026-11-21"]);
}

/// fixtures/golden-indexed/ (fixtures/make_golden_indexed.sh, run once): pack index objects and no RocksDB index.
/// A fresh state directory attaches to it with every pack's footer blanked, so the pack index objects are the
/// only description of the packs it can use.
#[test]
fn the_golden_pack_indexes_attach_a_new_machine_identically() {
    assert_mounts_with(
        "golden-indexed",
        &["2026-11-25", "2026-11-26"],
        &["--state-dir", "STATE"],
        |repo| {
            for pack in packs_by_size(repo) {
                let len = std::fs::metadata(&pack).unwrap().len();
                let f = std::fs::OpenOptions::new().write(true).open(&pack).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 56], len - 56).unwrap();
            }
        },
    );
}

/// fixtures/golden-encrypted/ (fixtures/make_golden_encrypted.sh, run once): a repository encrypted at rest, a flat
/// snapshot and one with parts (mail), opened with the key file committed beside it, by a new machine.
#[test]
fn the_golden_encrypted_repository_still_mounts_identically() {
    let args = ["--key-file", "KEY", "--state-dir", "STATE"];
    assert_mounts_with(
        "golden-encrypted",
        &["2026-11-30", "2026-12-01"],
        &args,
        |_| {},
    );
}

/// fixtures/golden-encrypted-gcm/ (fixtures/make_golden_encrypted.sh aes-256-gcm, run once): the same with
/// AES-256-GCM (scheme 2).
#[test]
fn the_golden_encrypted_gcm_repository_still_mounts_identically() {
    let args = ["--key-file", "KEY", "--state-dir", "STATE"];
    assert_mounts_with(
        "golden-encrypted-gcm",
        &["2026-11-30", "2026-12-01"],
        &args,
        |_| {},
    );
}

/// fixtures/golden-parts/ (fixtures/make_golden_parts.sh, run once): manifest version 2, a snapshot with parts
/// (files/, mails/, a PostgreSQL dump and a failure note) beside an older flat snapshot of the same account.
#[test]
fn the_golden_snapshot_with_parts_still_mounts_identically() {
    assert_mounts_as_recorded("golden-parts", &["2026-11-28", "2026-11-29"]);
}
