//! Retention and garbage collection: what is kept stays byte-identical, what is forgotten is reclaimed.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

/// Bytes of all pack files (not directories, which `du` would count).
fn repo_bytes(repo: &Path) -> u64 {
    let mut total = 0;
    for dir in fs::read_dir(repo.join("packs")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn prune(repo: &Path, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(bin()
        .arg("prune")
        .arg("--repo")
        .arg(repo)
        .arg("--json")
        .args(args));
    assert_eq!(code, 0, "prune failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Six nightly backups of a tree that also gets a fresh 2 MB incompressible file every day.
fn six_days(t: &TempDir, seed: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<String>) {
    let src = t.join("src");
    gen_tree(&src, seed);
    let repo = t.join("repo");
    init_repo(&repo);
    let mut described = Vec::new();
    for day in 0..6u32 {
        if day > 0 {
            mutate(&src, seed, day);
        }
        fs::write(src.join("daily.bin"), noise(day as u64 + 1, 2_000_000)).unwrap();
        backup(
            &repo,
            "default",
            &src,
            Some(&format!("2026-11-1{day}T03:00:00Z")),
        );
        described.push(describe(&src));
    }
    (src, repo, described)
}

#[test]
fn keep_daily_keeps_the_newest_days_and_reclaims_the_rest() {
    let t = TempDir::new("prune");
    let (_src, repo, described) = six_days(&t, "p1");
    let before = repo_bytes(&repo);
    let dry = prune(&repo, &["--keep-daily", "3", "--dry-run"]);
    assert_eq!(dry["forgotten"].as_array().unwrap().len(), 3);
    assert_eq!(
        repo_bytes(&repo),
        before,
        "--dry-run changed the repository"
    );
    let r = prune(&repo, &["--keep-daily", "3"]);
    assert_eq!(r["kept"], 3);
    // Each forgotten day took at least its own 2 MB daily.bin with it (stored raw: incompressible).
    let reclaimed = r["bytes_reclaimed"].as_u64().unwrap();
    assert!(
        reclaimed >= 3 * 2_000_000,
        "reclaimed only {reclaimed} bytes"
    );
    assert_eq!(
        before - repo_bytes(&repo),
        reclaimed,
        "reported and actual reclaimed bytes differ"
    );
    check_clean(&repo);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let mut names: Vec<String> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["2026-11-13", "2026-11-14", "2026-11-15", "latest"]);
    for (day, want) in described.iter().enumerate().skip(3) {
        assert_same_tree(want, &describe(&m.path.join(format!("2026-11-1{day}"))));
    }
}

#[test]
fn a_second_prune_is_refused_until_the_holder_dies() {
    let t = TempDir::new("prunelock");
    let (_src, repo, _) = six_days(&t, "p2");
    // Another process holds the lock, as a running prune would.
    let script = "import fcntl, sys, time\nf = open(sys.argv[1], 'w')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)";
    let mut holder = Command::new("python3")
        .args(["-c", script])
        .arg(repo.join("locks/prune.lock"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Only once the holder says so does it hold the lock.
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let (code, _, err) = run(bin()
        .arg("prune")
        .arg("--repo")
        .arg(&repo)
        .args(["--keep-daily", "3"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("prune.lock") && err.contains("held by another prune"),
        "{err}"
    );
    let (code, _, err) = run(bin().arg("repair").arg("index").arg("--repo").arg(&repo));
    assert_eq!(code, 1, "repair ran beside a prune: {err}");
    holder.kill().unwrap(); // SIGKILL: the holder cannot clean up, flock releases anyway
    holder.wait().unwrap();
    prune(&repo, &["--keep-daily", "3"]);
    check_clean(&repo);
}

#[test]
fn a_rebuilt_index_gives_identical_mounts_and_checks() {
    let t = TempDir::new("repair");
    let (_src, repo, _) = six_days(&t, "p3");
    prune(&repo, &["--keep-daily", "4"]);
    let mnt = t.join("mnt");
    let mut m = Mount::new(&repo, "default", &mnt);
    let (inodes, tree) = (
        inode_map(&mnt),
        describe(&mnt.join("latest/.").canonicalize().unwrap()),
    );
    m.stop();
    fs::remove_dir_all(repo.join("index")).unwrap();
    let (code, out, err) = run(bin().arg("repair").arg("index").arg("--repo").arg(&repo));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 snapshots"), "{out}");
    check_clean(&repo);
    let m = Mount::new(&repo, "default", &mnt);
    assert_eq!(inodes, inode_map(&m.path));
    assert_same_tree(
        &tree,
        &describe(&m.path.join("latest/.").canonicalize().unwrap()),
    );
}

#[test]
fn prune_beside_a_live_mount_and_a_running_backup_loses_nothing() {
    let t = TempDir::new("pruneconc");
    let (src, repo, described) = six_days(&t, "p4");
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    // A file of a snapshot about to be pruned, held open across the prune.
    let doomed = m.path.join("2026-11-10/daily.bin");
    let mut open_file = fs::File::open(&doomed).unwrap();
    // A backup with plenty of new data runs while the prune runs.
    mutate(&src, "p4", 6);
    fs::write(src.join("big.bin"), noise(99, 40 << 20)).unwrap();
    let backup_child = bin()
        .arg("backup")
        .arg("--repo")
        .arg(&repo)
        .args(["--time", "2026-11-16T03:00:00Z", "--json"])
        .arg(&src)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let r = prune(&repo, &["--keep-daily", "2"]);
    let out = backup_child.wait_with_output().unwrap();
    assert!(out.status.success(), "backup beside prune failed");
    let want_new = describe(&src);
    check_clean(&repo);
    let listed = |p: &Path| {
        fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    while listed(&m.path).contains(&"2026-11-10".to_string()) {
        assert!(
            started.elapsed().as_secs() < 5,
            "pruned snapshot still shown after 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The held-open file: correct bytes, EIO (its packs are gone) or ESTALE (its snapshot is gone: the kernel
    // opens files without telling the daemon, which learns of the file at its first read), never wrong bytes.
    let mut got = Vec::new();
    match std::io::Read::read_to_end(&mut open_file, &mut got) {
        Ok(_) => assert_eq!(got.len(), 2_000_000),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EIO | libc::ESTALE)),
            "reading a file of a pruned snapshot: {e}"
        ),
    }
    while fs::read_link(m.path.join("latest"))
        .map(|l| l.to_string_lossy().into_owned())
        .ok()
        .as_deref()
        != Some("2026-11-16")
    {
        assert!(
            started.elapsed().as_secs() < 10,
            "latest did not move to the new snapshot"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_same_tree(&want_new, &describe(&m.path.join("2026-11-16")));
    assert_same_tree(&described[5], &describe(&m.path.join("2026-11-15")));
    let _ = r;
}

/// A pruned snapshot's directory disappears from a live mount for lookups by name too. The kernel keeps
/// snapshot directories in its dentry cache for an hour; the mount used to leave them there, and `ls` of the
/// pruned name showed an empty directory, as if the backup were empty.
#[test]
fn a_pruned_snapshot_is_gone_for_lookups_by_name_on_a_live_mount() {
    let t = TempDir::new("prunelookup");
    let (src, repo) = backed_up_tree(&t, "pl", "default", Some("2026-01-01T03:00:00Z"));
    backup(&repo, "default", &src, Some("2026-01-02T03:00:00Z"));
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let old = m.path.join("2026-01-01");
    // Looked up, listed and stat'ed: now in the kernel's caches.
    assert!(fs::read_dir(&old).unwrap().count() > 0);
    fs::metadata(&old).unwrap();

    prune(&repo, &["--keep-last", "1"]);
    wait_until(
        "the mount drops 2026-01-01 from its root listing",
        std::time::Duration::from_secs(20),
        || {
            !fs::read_dir(&m.path)
                .unwrap()
                .any(|e| e.unwrap().file_name() == "2026-01-01")
        },
    );
    let err = fs::metadata(&old).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    assert_eq!(
        fs::read_dir(&old).unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    assert!(fs::read_dir(m.path.join("2026-01-02")).unwrap().count() > 0);
}
