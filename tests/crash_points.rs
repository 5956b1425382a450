//! Every crash point, deterministically: a backup, a prune and an index repair are killed (SIGKILL, through
//! `BACKUPFS_TEST_CRASH_AT=N`) right before their 1st, 2nd, ... durable change, each time on a fresh copy of
//! the same repository. After each kill `check --read-data` finds no damage, the command run again completes,
//! and the mount shows byte for byte what was backed up. The random kills of crash.rs find the windows between
//! changes that these do not: the two are complementary.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh copy of `repo` at `to`.
fn copy_repo(repo: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let status = Command::new("cp")
        .arg("-a")
        .arg(repo)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `args` against `repo` killed before change `n`; true if it was killed, false if it finished first.
fn killed_at(repo: &Path, args: &[&str], n: u32) -> bool {
    let out = bin()
        .args(args)
        .arg("--repo")
        .arg(repo)
        .env("BACKUPFS_TEST_CRASH_AT", n.to_string())
        .output()
        .unwrap();
    if out.status.signal() == Some(libc::SIGKILL) {
        return true;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{args:?} at {n}: {}: {stderr}",
        out.status
    );
    false
}

/// Runs the crash loop: for each n, a fresh copy of `base`, `command` killed at n, a check that finds no damage
/// (unless `check_killed` is false: a repair killed between its renames leaves no index, which the next repair
/// rebuilds), then `after` on that copy. Returns how many crash points were visited.
fn every_crash_point(
    t: &TempDir,
    base: &Path,
    command: &[&str],
    check_killed: bool,
    after: impl Fn(&Path),
) -> u32 {
    let work: PathBuf = t.join("work");
    let mut n = 1;
    while {
        copy_repo(base, &work);
        killed_at(&work, command, n)
    } {
        if check_killed {
            check_clean(&work);
        }
        after(&work);
        n += 1;
    }
    n - 1
}

#[test]
fn a_backup_killed_at_every_change_loses_nothing() {
    let t = TempDir::new("points-backup");
    let (src, repo) = backed_up_tree(&t, "pb", "default", Some("2026-11-19T03:00:00Z"));
    let first = describe(&src);
    mutate(&src, "pb", 1);
    let second = describe(&src);
    let time = ["--time", "2026-11-20T03:00:00Z"];
    let command = ["backup", time[0], time[1], src.to_str().unwrap()];
    let points = every_crash_point(&t, &repo, &command, true, |work| {
        backup(work, "default", &src, Some(time[1]));
        check_clean(work);
        let m = Mount::new(work, "default", &t.join("mnt"));
        assert_same_tree(&first, &describe(&m.path.join("2026-11-19")));
        assert_same_tree(&second, &describe(&m.path.join("2026-11-20")));
    });
    assert!(points >= 4, "only {points} crash points");
    eprintln!("backup: {points} crash points, each survived");
}

#[test]
fn a_prune_killed_at_every_change_loses_nothing_it_keeps() {
    let t = TempDir::new("points-prune");
    let (src, repo) = backed_up_tree(&t, "pp", "default", Some("2026-11-18T03:00:00Z"));
    for day in 1..=2 {
        mutate(&src, "pp", day);
        backup(
            &repo,
            "default",
            &src,
            Some(&format!("2026-11-{}T03:00:00Z", 18 + day)),
        );
    }
    let kept = describe(&src);
    let command = ["prune", "--keep-last", "1", "--repack-threshold", "0%"];
    let points = every_crash_point(&t, &repo, &command, true, |work| {
        assert!(!killed_at(work, &command, 0));
        check_clean(work);
        let m = Mount::new(work, "default", &t.join("mnt"));
        let days: Vec<_> = std::fs::read_dir(&m.path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(days.len(), 2, "{days:?}");
        assert_same_tree(&kept, &describe(&m.path.join("2026-11-20")));
    });
    assert!(points >= 4, "only {points} crash points");
    eprintln!("prune: {points} crash points, each survived");
}

#[test]
fn an_index_repair_killed_at_every_change_loses_nothing() {
    let t = TempDir::new("points-repair");
    let (src, repo) = backed_up_tree(&t, "pr", "default", None);
    let command = ["repair", "index"];
    let points = every_crash_point(&t, &repo, &command, false, |work| {
        assert!(!killed_at(work, &command, 0));
        check_clean(work);
        let m = Mount::new(work, "default", &t.join("mnt"));
        assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    });
    assert!(points >= 3, "only {points} crash points");
    eprintln!("repair index: {points} crash points, each survived");
}
