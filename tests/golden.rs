//! Backward compatibility: the repositories in fixtures/golden*/ were each written once by an old build and are
//! never regenerated. Every build must mount them with the same contents and the same inode numbers.

mod common;

use common::*;
use std::process::Command;

/// Mounts a copy of fixtures/NAME/repo and compares each day's snapshot with the describe output and the whole
/// mount with the inode listing that the build which wrote the fixture saw.
fn assert_mounts_as_recorded(name: &str, days: &[&str]) {
    let golden = fixtures().join(name);
    let t = TempDir::new(name);
    // A copy, so that nothing a test run does can touch the fixture.
    let repo = t.join("repo");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(golden.join("repo"))
        .arg(&repo)
        .status()
        .unwrap()
        .success());
    let m = Mount::new(&repo, "golden", &t.join("mnt"));
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
