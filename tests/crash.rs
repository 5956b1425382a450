//! A backup killed with SIGKILL at any moment leaves earlier snapshots intact, and the next backup succeeds.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn kill_9_during_backup_loses_nothing() {
    let t = TempDir::new("crash");
    let (src, repo) = backed_up_tree(&t, "7", "default", Some("2026-11-19T03:00:00Z"));
    let first = describe(&src);
    mutate(&src, "7", 1);
    // Enough new data that the backup is still running when killed.
    let big: Vec<u8> = (0..48u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();
    for delay_ms in [5, 40, 120, 300, 700] {
        run_and_kill(
            bin()
                .arg("backup")
                .arg("--repo")
                .arg(&repo)
                .args(["--time", "2026-11-20T03:00:00Z", "--json"])
                .arg(&src),
            Duration::from_millis(delay_ms),
        );
    }
    let summary = backup(&repo, "default", &src, Some("2026-11-21T03:00:00Z"));
    assert_eq!(summary["warnings"], 0);
    let leftovers = std::fs::read_dir(repo.join("tmp")).unwrap().count();
    assert_eq!(
        leftovers, 0,
        "temporary files of killed backups were not cleaned up"
    );
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&first, &describe(&m.path.join("2026-11-19")));
    assert_same_tree(&describe(&src), &describe(&m.path.join("2026-11-21")));
}
