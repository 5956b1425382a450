//! The foundation end to end: back up the fixture tree, mount it through the kernel, and compare everything.

mod common;

use common::*;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn mounted_snapshot_equals_source_and_cp_a_restores_it() {
    let t = TempDir::new("roundtrip");
    let (src, repo) = backed_up_tree(&t, "1", "alice", Some("2026-11-20T03:00:00Z"));
    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let expected = describe(&src);
    assert_same_tree(&expected, &describe(&m.path.join("2026-11-20")));
    assert_same_tree(
        &expected,
        &describe(&std::fs::canonicalize(m.path.join("latest")).unwrap()),
    );

    let restored = t.join("restored");
    fs::create_dir(&restored).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(m.path.join("latest/."))
        .arg(&restored)
        .status()
        .unwrap();
    assert!(status.success());
    assert_same_tree(&expected, &describe(&restored));
}

#[test]
fn inode_numbers_survive_remount_and_follow_hardlinks() {
    let t = TempDir::new("inodes");
    let (src, repo) = backed_up_tree(&t, "2", "default", Some("2026-11-20T03:00:00Z"));
    let mnt = t.join("mnt");
    let mut m = Mount::new(&repo, "default", &mnt);
    let before = inode_map(&mnt.join("2026-11-20"));
    assert!(m.stop().success(), "daemon did not exit cleanly on SIGTERM");
    let m = Mount::new(&repo, "default", &mnt);
    let after = inode_map(&m.path.join("2026-11-20"));
    assert_eq!(before, after, "inode numbers changed across a remount");

    // Paths share an inode exactly when they are hardlinks in the source, with the right link count.
    let source = inode_map(&src);
    let group_of = |map: &[(std::path::PathBuf, u64, u64)]| {
        let mut groups: HashMap<u64, Vec<std::path::PathBuf>> = HashMap::new();
        for (p, ino, _) in map {
            groups.entry(*ino).or_default().push(p.clone());
        }
        let mut g: Vec<Vec<_>> = groups.into_values().filter(|v| v.len() > 1).collect();
        g.iter_mut().for_each(|v| v.sort());
        g.sort();
        g
    };
    let linked = group_of(&source);
    assert!(!linked.is_empty(), "the fixture has hardlinks");
    assert_eq!(linked, group_of(&after));
    for (path, _, nlink) in after
        .iter()
        .filter(|(p, ..)| linked.iter().any(|g| g.contains(p)))
    {
        let group = linked.iter().find(|g| g.contains(path)).unwrap();
        assert_eq!(*nlink, group.len() as u64, "{}", path.display());
    }
}

fn assert_erofs(what: &str, r: std::io::Result<()>) {
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}"),
        Ok(()) => panic!("{what} succeeded on a read-only mount"),
    }
}

#[test]
fn every_write_fails_with_erofs() {
    let t = TempDir::new("erofs");
    let (_, repo) = backed_up_tree(&t, "3", "default", None);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let snap = m.path.join("latest");
    let file = snap.join("www/index.php");
    assert!(file.exists());
    assert_erofs("create", fs::File::create(snap.join("new.txt")).map(drop));
    assert_erofs(
        "open for writing",
        fs::OpenOptions::new().write(true).open(&file).map(drop),
    );
    assert_erofs("mkdir", fs::create_dir(snap.join("newdir")));
    assert_erofs("rename", fs::rename(&file, snap.join("www/moved.php")));
    assert_erofs("unlink", fs::remove_file(&file));
    assert_erofs("rmdir", fs::remove_dir(snap.join("emptydir")));
    assert_erofs(
        "chmod",
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o777)),
    );
    assert_erofs(
        "symlink",
        std::os::unix::fs::symlink("x", snap.join("link")),
    );
    assert_erofs("hardlink", fs::hard_link(&file, snap.join("www/hard.php")));
    assert_erofs("mkdir at root", fs::create_dir(m.path.join("2099-01-01")));
    let c = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    // SAFETY: valid C strings and a 1-byte value.
    let rc = unsafe { libc::setxattr(c.as_ptr(), c"user.x".as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EROFS),
        "setxattr"
    );
}

#[test]
fn dated_names_latest_and_contents_across_daily_backups() {
    let t = TempDir::new("daily");
    let src = t.join("src");
    gen_tree(&src, "4");
    let repo = t.join("repo");
    init_repo(&repo);
    let times = [
        "2026-11-18T03:00:00Z",
        "2026-11-19T03:00:00Z",
        "2026-11-19T15:30:05Z",
        "2026-11-20T03:00:00Z",
    ];
    let mut expected = Vec::new();
    for (day, time) in times.iter().enumerate() {
        if day > 0 {
            mutate(&src, "4", day as u32);
        }
        let summary = backup(&repo, "alice", &src, Some(time));
        assert_eq!(summary["warnings"], 0);
        expected.push(describe(&src));
    }
    // Incremental: the last backup read only what changed.
    let last = backup(&repo, "alice", &src, Some("2026-11-21T03:00:00Z"));
    assert_eq!(
        last["bytes_read"], 0,
        "a no-change backup read file contents"
    );
    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let mut names: Vec<String> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "2026-11-18",
            "2026-11-19",
            "2026-11-19_153005",
            "2026-11-20",
            "2026-11-21",
            "latest"
        ]
    );
    assert_eq!(
        fs::read_link(m.path.join("latest")).unwrap().to_str(),
        Some("2026-11-21")
    );
    for (name, want) in [
        "2026-11-18",
        "2026-11-19",
        "2026-11-19_153005",
        "2026-11-20",
    ]
    .iter()
    .zip(&expected)
    {
        assert_same_tree(want, &describe(&m.path.join(name)));
    }
}

#[test]
fn names_follow_the_mounts_time_zone() {
    let t = TempDir::new("tz");
    let (_, repo) = backed_up_tree(&t, "5", "default", Some("2026-11-20T20:00:00Z"));
    // POSIX TZ "XST-9" is UTC+9: 20:00 UTC is already the 21st there.
    let m = Mount::with(&repo, "default", &t.join("mnt"), &[], &[("TZ", "XST-9")]);
    assert_eq!(
        fs::read_link(m.path.join("latest")).unwrap().to_str(),
        Some("2026-11-21")
    );
}

#[test]
fn a_snapshot_taken_during_a_mount_appears_within_five_seconds() {
    let t = TempDir::new("live");
    let (src, repo) = backed_up_tree(&t, "6", "default", Some("2026-11-19T03:00:00Z"));
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_eq!(
        fs::read_link(m.path.join("latest")).unwrap().to_str(),
        Some("2026-11-19")
    );
    mutate(&src, "6", 1);
    backup(&repo, "default", &src, Some("2026-11-20T03:00:00Z"));
    let started = std::time::Instant::now();
    while !m.path.join("2026-11-20").exists() {
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "new snapshot not visible after 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    while fs::read_link(m.path.join("latest")).unwrap().to_str() != Some("2026-11-20") {
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "latest did not move within 5 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_same_tree(
        &describe(&src),
        &describe(&std::fs::canonicalize(m.path.join("latest")).unwrap()),
    );
    // The mount held no lock that kept the backup from running beside it (it just did), and a stat of the
    // snapshot root is cheap and stable.
    assert_eq!(
        fs::metadata(m.path.join("2026-11-20")).unwrap().ino(),
        fs::metadata(m.path.join("latest/")).unwrap().ino()
    );
}

#[test]
fn a_mount_without_account_shows_every_account_and_one_account_mounts_show_only_theirs() {
    let t = TempDir::new("accounts");
    let (alice, bob) = (t.join("alice"), t.join("bob"));
    gen_tree(&alice, "9");
    gen_tree(&bob, "10");
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "alice", &alice, Some("2026-11-20T03:00:00Z"));
    backup(&repo, "bob", &bob, Some("2026-11-19T03:00:00Z"));
    backup(&repo, "bob", &bob, Some("2026-11-20T03:00:00Z"));

    let mnt = t.join("all");
    fs::create_dir(&mnt).unwrap();
    let mut child = bin()
        .arg("mount")
        .arg("--repo")
        .arg(&repo)
        .arg(&mnt)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !is_mounted(&mnt) {
        assert!(
            started.elapsed().as_secs() < 20,
            "all-accounts mount did not come up"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let list = |p: &std::path::Path| {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let result = std::panic::catch_unwind(|| {
        assert_eq!(list(&mnt), ["alice", "bob"]);
        assert_eq!(
            list(&mnt.join("bob")),
            ["2026-11-19", "2026-11-20", "latest"]
        );
        assert_eq!(
            fs::read_link(mnt.join("alice/latest")).unwrap().to_str(),
            Some("2026-11-20")
        );
        assert_same_tree(&describe(&alice), &describe(&mnt.join("alice/2026-11-20")));
        assert_same_tree(&describe(&bob), &describe(&mnt.join("bob/2026-11-20")));
        let (a, b) = (
            fs::metadata(mnt.join("alice")).unwrap().ino(),
            fs::metadata(mnt.join("bob")).unwrap().ino(),
        );
        assert_ne!(a, b);
    });
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    result.unwrap();

    // A one-account mount shows nothing of the other account.
    let m = Mount::new(&repo, "alice", &t.join("alice-mnt"));
    assert_eq!(list(&m.path), ["2026-11-20", "latest"]);
    assert!(!m.path.join("bob").exists());
}

#[test]
fn an_account_without_snapshots_mounts_as_an_empty_directory() {
    let t = TempDir::new("empty");
    let repo = t.join("repo");
    init_repo(&repo);
    let m = Mount::new(&repo, "newcomer", &t.join("mnt"));
    assert_eq!(fs::read_dir(&m.path).unwrap().count(), 0);
    assert!(!m.path.join("latest").exists());
}

#[test]
fn sigterm_while_busy_detaches_and_exits_once_the_last_file_closes() {
    let t = TempDir::new("busy");
    let (src, repo) = backed_up_tree(&t, "11", "default", None);
    let mut m = Mount::new(&repo, "default", &t.join("mnt"));
    let file = fs::File::open(m.path.join("latest/www/index.php")).unwrap();
    // SAFETY: signalling the daemon this test started.
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    let started = std::time::Instant::now();
    while is_mounted(&m.path) {
        assert!(
            started.elapsed().as_secs() < 10,
            "busy mount was not detached after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The open file keeps working until it is closed; then the daemon exits by itself.
    let mut got = String::new();
    std::io::Read::read_to_string(&mut &file, &mut got).unwrap();
    assert_eq!(got.as_bytes(), fs::read(src.join("www/index.php")).unwrap());
    drop(file);
    assert!(
        m.stop().success(),
        "daemon did not exit cleanly after the last file closed"
    );
}

/// Whether the first page of `path` is in the page cache (mincore of a mapping, which reads nothing).
fn first_page_cached(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    // SAFETY: a fresh read-only mapping of one page of an open file, unmapped before returning; mincore writes
    // one byte into `vec`.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let map = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED, "mmap {}", path.display());
        let mut vec = [0u8; 1];
        assert_eq!(libc::mincore(map, page, vec.as_mut_ptr()), 0);
        libc::munmap(map, page);
        vec[0] & 1 == 1
    }
}

#[test]
fn reading_a_small_file_whole_stores_the_next_ones_in_the_page_cache() {
    let t = TempDir::new("store-ahead");
    let src = t.join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20u64 {
        fs::write(src.join(format!("d/f{i:02}")), noise(100 + i, 5000)).unwrap();
    }
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "default", &src, Some("2026-11-20T03:00:00Z"));
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let d = m.path.join("2026-11-20/d");
    // As cp does: list the directory (the kernel learns the files' inodes), then read file by file.
    assert_eq!(fs::read_dir(&d).unwrap().count(), 20);
    assert!(!first_page_cached(&d.join("f01")), "cached before any read");
    assert_eq!(fs::read(d.join("f00")).unwrap(), noise(100, 5000));
    wait_until(
        "the next files stored in the page cache",
        Duration::from_secs(5),
        || (1..=3).all(|i| first_page_cached(&d.join(format!("f{i:02}")))),
    );
    assert!(
        !first_page_cached(&d.join("f15")),
        "stored far beyond what was read"
    );
    for i in 1..=3u64 {
        assert_eq!(
            fs::read(d.join(format!("f{i:02}"))).unwrap(),
            noise(100 + i, 5000)
        );
    }
}

#[test]
fn a_stopped_mount_leaves_no_files_behind() {
    let t = TempDir::new("no-leftovers");
    let (src, repo) = backed_up_tree(&t, "9", "default", Some("2026-11-20T03:00:00Z"));
    let mut m = Mount::new(&repo, "default", &t.join("mnt"));
    // Files read through it start its background threads, which hold the repository until the process exits.
    assert_same_tree(&describe(&src), &describe(&m.path.join("2026-11-20")));
    let prefix = format!("backupfs-index-{}-", m.pid());
    let private_dirs = || {
        fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .count()
    };
    assert_eq!(private_dirs(), 1, "the running mount's index directory");
    assert!(m.stop().success());
    assert_eq!(private_dirs(), 0, "the mount's index directory outlived it");
}

/// Hard links of symlinks and FIFOs are one inode with two names, as in the source: `cp -a` of the source keeps
/// them, so a restore from the mount must too. They used to come back as separate inodes with one link each.
#[test]
fn hard_links_of_symlinks_and_fifos_are_one_inode() {
    let t = TempDir::new("speciallinks");
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    std::os::unix::fs::symlink("target-of-link", src.join("l1")).unwrap();
    std::fs::hard_link(src.join("l1"), src.join("l2")).unwrap();
    let fifo = std::ffi::CString::new(src.join("p1").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    std::fs::hard_link(src.join("p1"), src.join("p2")).unwrap();
    assert_eq!(
        std::fs::symlink_metadata(src.join("l2")).unwrap().nlink(),
        2
    );
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "default", &src, None);

    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let copy = t.join("copy");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(m.path.join("latest/"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    for root in [m.path.join("latest"), copy] {
        for (a, b) in [("l1", "l2"), ("p1", "p2")] {
            let (ma, mb) = (
                std::fs::symlink_metadata(root.join(a)).unwrap(),
                std::fs::symlink_metadata(root.join(b)).unwrap(),
            );
            assert_eq!(ma.ino(), mb.ino(), "{}: {a} and {b}", root.display());
            assert_eq!((ma.nlink(), mb.nlink()), (2, 2), "{}: {a}", root.display());
        }
        assert_eq!(
            std::fs::read_link(root.join("l2")).unwrap(),
            std::path::Path::new("target-of-link")
        );
    }
}

/// Mount points that would go wrong are refused before mounting, with one line naming them: a directory with
/// files in it (the mount would hide them), one where the repository is mounted already (FUSE mounts stack),
/// and a thread count the daemon cannot start (it used to leave a dead mount behind).
#[test]
fn bad_mount_points_and_thread_counts_are_refused_before_mounting() {
    let t = TempDir::new("badpoint");
    let (_src, repo) = backed_up_tree(&t, "bp", "default", None);
    let refused = |args: &[&str], point: &std::path::Path, code: i32, needle: &str| {
        // Bounded: a mount that is not refused would serve in the foreground for ever.
        let out = output_within(
            bin()
                .args(["mount", "--repo"])
                .arg(&repo)
                .args(args)
                .arg(point),
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let full = t.join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep.txt"), b"mine").unwrap();
    refused(&[], &full, 1, "not empty");
    assert!(!is_mounted(&full));
    assert_eq!(fs::read(full.join("keep.txt")).unwrap(), b"mine");

    let empty = t.join("empty");
    fs::create_dir(&empty).unwrap();
    refused(&["--threads", "100000"], &empty, 2, "100000");
    assert!(!is_mounted(&empty));

    let m = Mount::new(&repo, "default", &t.join("mnt"));
    refused(&["--account", "default"], &m.path, 1, "already mounted");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = m.path.to_string_lossy();
    let stacked = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*target))
        .count();
    assert_eq!(stacked, 1, "{mounts}");
    assert!(fs::read_dir(m.path.join("latest")).unwrap().count() > 0);
}

/// Under a small address-space limit the daemon used to abort inside RocksDB with no line, leaving a dead
/// mount. It now refuses before mounting, naming the limit and what it needs.
#[test]
fn a_small_address_space_limit_is_refused_before_mounting() {
    let t = TempDir::new("ulimit");
    let (_src, repo) = backed_up_tree(&t, "ul", "default", None);
    let point = t.join("mnt");
    fs::create_dir(&point).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 400000 && exec \"$0\" mount --repo \"$1\" --account default \"$2\"")
        .arg(env!("CARGO_BIN_EXE_backupfs"))
        .arg(&repo)
        .arg(&point)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ulimit -v"), "{stderr}");
    assert!(!is_mounted(&point));
}
