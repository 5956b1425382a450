//! Fault injection: backups and prunes killed with SIGKILL at random moments, round after round. After each
//! round `check --read-data` must pass and every retained snapshot must equal its source byte for byte.
//! BACKUPFS_CRASH_ROUNDS sets the number of rounds (default 6; a soak run uses hundreds).

mod common;

use backupfs::format::tree::Timestamp;
use backupfs::vfs::naming::rfc3339_utc;
use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Midnight UTC, `back` days before today: every round's snapshot day then lies in the past however many rounds a
/// soak runs (a backup refuses a time more than a day ahead).
fn days_ago(back: u64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    (now / 86_400 - back as i64) * 86_400
}

fn day_time(first_day: i64, day: u64, hour: u64) -> String {
    rfc3339_utc(Timestamp {
        sec: first_day + (day * 24 + hour) as i64 * 3600,
        nsec: 0,
    })
}

/// Rounds of mutations of one generated tree before a soak starts from a fresh one.
const MUTATION_DAYS: u64 = 50;

/// Starts `backupfs args` and SIGKILLs it after `delay_ms` (it may have finished by then).
fn backupfs_killed_after(args: &[&str], delay_ms: u64) {
    run_and_kill(bin().args(args), Duration::from_millis(delay_ms));
}

fn run_ok(args: &[&str]) {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_and_compare(
    repo: &std::path::Path,
    mnt: &std::path::Path,
    expected: &HashMap<String, String>,
    round: u64,
) {
    eprintln!("round {round}: check --read-data, then every snapshot through the mount");
    check_clean(repo);
    let m = Mount::new(repo, "default", mnt);
    for e in std::fs::read_dir(&m.path).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name == "latest" {
            continue;
        }
        let want = expected
            .get(&name[..10])
            .unwrap_or_else(|| panic!("round {round}: unexpected snapshot {name}"));
        assert_same_tree(want, &describe(&m.path.join(&name)));
    }
}

#[test]
fn sigkill_during_backups_and_prunes_never_loses_a_retained_byte() {
    let rounds: u64 = std::env::var("BACKUPFS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let t = TempDir::new("faults");
    let (src, repo, mnt) = (t.join("src"), t.join("repo"), t.join("mnt"));
    gen_tree(&src, "f");
    init_repo(&repo);
    let (r, s) = (repo.to_str().unwrap(), src.to_str().unwrap());
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let first_day = days_ago(rounds + 2);
    run_ok(&[
        "backup",
        "--repo",
        r,
        "--time",
        &day_time(first_day, 0, 3),
        s,
    ]);
    expected.insert(day_time(first_day, 0, 3)[..10].to_string(), describe(&src));
    for round in 1..=rounds {
        // gen_tree's tiny tree runs out of files to change after about 60 days of mutations: a long soak starts
        // from a fresh tree every MUTATION_DAYS rounds (what was backed up before stays in `expected`).
        let (generation, day) = ((round - 1) / MUTATION_DAYS, (round - 1) % MUTATION_DAYS + 1);
        let seed = match generation {
            0 => "f".to_string(),
            g => format!("f{g}"),
        };
        if generation > 0 && day == 1 {
            std::fs::remove_dir_all(&src).unwrap();
            gen_tree(&src, &seed);
        }
        mutate(&src, &seed, day as u32);
        std::fs::write(src.join("big.bin"), noise(round, 6_000_000)).unwrap();
        expected.insert(
            day_time(first_day, round, 3)[..10].to_string(),
            describe(&src),
        );
        backupfs_killed_after(
            &[
                "backup",
                "--repo",
                r,
                "--time",
                &day_time(first_day, round, 3),
                s,
            ],
            rng.below(400),
        );
        backupfs_killed_after(&["prune", "--repo", r, "--keep-daily", "3"], rng.below(300));
        check_and_compare(&repo, &mnt, &expected, round);
        // The next run recovers by itself: a complete backup and prune after the crashes.
        if round % 2 == 0 {
            run_ok(&[
                "backup",
                "--repo",
                r,
                "--time",
                &day_time(first_day, round, 4),
                s,
            ]);
            run_ok(&["prune", "--repo", r, "--keep-daily", "3"]);
        }
    }
    run_ok(&[
        "backup",
        "--repo",
        r,
        "--time",
        &day_time(first_day, rounds, 5),
        s,
    ]);
    run_ok(&["prune", "--repo", r, "--keep-daily", "3"]);
    check_and_compare(&repo, &mnt, &expected, rounds + 1);
    let leftovers = std::fs::read_dir(repo.join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "temporary files left after recovery");
}

#[test]
fn a_full_disk_fails_backup_and_prune_cleanly() {
    let t = TempDir::new("diskfull");
    let fs_dir = t.join("small");
    std::fs::create_dir(&fs_dir).unwrap();
    assert!(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&fs_dir)
        .status()
        .unwrap()
        .success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(fs_dir.clone());
    let (src, repo) = (t.join("src"), fs_dir.join("repo"));
    gen_tree(&src, "d");
    init_repo(&repo);
    backup(&repo, "default", &src, Some("2026-11-01T03:00:00Z"));
    let first = describe(&src);
    std::fs::write(src.join("huge.bin"), noise(7, 40_000_000)).unwrap();
    let out = bin()
        .arg("backup")
        .arg("--repo")
        .arg(&repo)
        .args(["--time", "2026-11-02T03:00:00Z"])
        .arg(&src)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("No space left on device") && err.contains(repo.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    check_clean(&repo);
    // Prune with the disk full: it may fail, but must leave the repository consistent.
    std::fs::remove_file(src.join("huge.bin")).unwrap();
    let _ = bin()
        .arg("prune")
        .arg("--repo")
        .arg(&repo)
        .args(["--keep-last", "1"])
        .output()
        .unwrap();
    check_clean(&repo);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&first, &describe(&m.path.join("2026-11-01")));
}
