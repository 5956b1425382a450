//! Backward compatibility: the repository in fixtures/golden/ was written once by the first format-v1 build and
//! is never regenerated. Every build must mount it with the same contents and the same inode numbers.

mod common;

use common::*;
use std::process::Command;

#[test]
fn the_golden_repository_still_mounts_identically() {
    let golden = fixtures().join("golden");
    let t = TempDir::new("golden");
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
    for day in ["2026-11-17", "2026-11-18", "2026-11-19"] {
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
    assert!(want == out.stdout, "inode numbers or link counts changed");
}
