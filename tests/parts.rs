//! Snapshots with parts, without database servers: mail (Maildir renames), excludes, the account's own mount
//! point, SQLite in WAL mode, and flat snapshots next to snapshots with parts in one mount.
//! The database dumps are in tests/databases.rs.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A configuration file in `t` for account `account` with these extra lines in its section.
fn config(t: &TempDir, repo: &Path, account: &str, source: &Path, extra: &str) -> PathBuf {
    let path = t.join("config.toml");
    let text =
        format!("repository = {repo:?}\n[accounts.{account}]\nsource = {source:?}\n{extra}\n");
    std::fs::write(&path, text).unwrap();
    path
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The bytes of every regular file below `dir`.
fn file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                file_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// A Maildir of two mailboxes with Dovecot's control files.
fn maildir(root: &Path) {
    for mailbox in ["example.com/alice", "example.org/info"] {
        let b = root.join(mailbox);
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(b.join(sub)).unwrap();
        }
        for i in 0..20u64 {
            let body = noise(i, 20_000 + i as usize * 1000);
            write(&b.join(format!("cur/17000000{i:02}.M{i}P1.host:2,")), &body);
        }
        write(
            &b.join("new/1700000099.M99P1.host"),
            b"Subject: new\n\nunread\n",
        );
        write(
            &b.join("dovecot-uidlist"),
            b"3 V1700000000 N22 G0123\n1 1700000000.M0P1.host\n",
        );
        write(&b.join("dovecot-keywords"), b"0 $Forwarded\n");
    }
}

#[test]
fn maildir_flag_change_costs_no_data_and_no_read() {
    let t = TempDir::new("parts-mail");
    let (src, mail, repo) = (t.join("home"), t.join("vmail"), t.join("repo"));
    write(&src.join("www/index.html"), b"<p>hello</p>\n");
    maildir(&mail);
    init_repo(&repo);
    let cfg = config(&t, &repo, "alice", &src, &format!("mail = {mail:?}"));
    let (first, _) = backup_with_config(&cfg, "alice", &[]);
    assert_eq!(first["layout"], "parts");

    // A client marks a message seen: Dovecot renames it (same inode, size and mtime; a new ctime).
    let cur = mail.join("example.com/alice/cur");
    std::fs::rename(
        cur.join("1700000003.M3P1.host:2,"),
        cur.join("1700000003.M3P1.host:2,S"),
    )
    .unwrap();
    let (second, _) = backup_with_config(&cfg, "alice", &[]);
    assert_eq!(
        second["bytes_read"], 0,
        "a renamed message is read again: {second}"
    );
    let added = second["bytes_added"].as_u64().unwrap();
    assert!(added < 4096, "a rename stored {added} bytes: {second}");

    // The manifest records the parts; `snapshots --json` shows them.
    let out = bin()
        .arg("snapshots")
        .arg("--repo")
        .arg(&repo)
        .arg("--json")
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[1]["layout"], "parts");
    let kinds: Vec<&str> = (listed[1]["parts"].as_array().unwrap().iter())
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["files", "mail"]);

    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let latest = m.latest_in("");
    let names: Vec<String> = std::fs::read_dir(&latest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["files", "mails"]);
    let restored = t.join("restored");
    let out = Command::new("cp")
        .arg("-a")
        .arg(latest.join("mails/example.com/alice/."))
        .arg(&restored)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The restored mailbox equals the source: control files, flags in names, times, modes.
    assert_same_tree(
        &describe(&mail.join("example.com/alice")),
        &describe(&restored),
    );
    assert!(restored.join("cur/1700000003.M3P1.host:2,S").exists());
    assert!(restored.join("dovecot-uidlist").exists());
}

#[test]
fn excludes_and_the_accounts_own_mount_point() {
    let t = TempDir::new("parts-exclude");
    let (src, repo) = (t.join("home"), t.join("repo"));
    write(&src.join("www/index.html"), b"kept\n");
    write(&src.join("www/cache/page.html"), b"cached\n");
    write(&src.join("app/cache/deep/x"), b"cached\n");
    write(&src.join("notes.tmp"), b"scratch\n");
    write(&src.join("big.iso"), b"iso\n");
    std::fs::create_dir_all(src.join("admin/backup")).unwrap();
    write(&src.join("admin/keep"), b"kept\n");
    init_repo(&repo);
    let extra = format!(
        "mountpoint = {:?}\nexclude = [\"**/cache/**\", \"*.tmp\"]",
        src.join("admin/backup")
    );
    let cfg = config(&t, &repo, "alice", &src, &extra);
    // The mount point is served while the backup runs, as it is on the platform.
    let first = {
        let _m = Mount::new(&repo, "alice", &src.join("admin/backup"));
        backup_with_config(&cfg, "alice", &["--exclude", "/big.iso"]).0
    };
    assert_eq!(first["layout"], "flat");
    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let latest = m.latest_in("");
    for kept in ["www/index.html", "admin/keep", "www/cache", "app/cache"] {
        assert!(latest.join(kept).exists(), "{kept} missing");
    }
    for gone in [
        "www/cache/page.html",
        "app/cache/deep",
        "notes.tmp",
        "big.iso",
        "admin/backup",
    ] {
        assert!(!latest.join(gone).exists(), "{gone} was backed up");
    }

    // A pattern that cannot be used: a usage error naming it, nothing written.
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["backup", "--account", "alice", "--exclude", "a//b"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("exclude pattern \"a//b\""), "{err}");
}

#[test]
fn flat_snapshots_and_snapshots_with_parts_in_one_mount() {
    let t = TempDir::new("parts-mixed");
    let (src, mail, repo) = (t.join("home"), t.join("vmail"), t.join("repo"));
    gen_tree(&src, "mixed");
    maildir(&mail);
    init_repo(&repo);
    let flat = backup(&repo, "alice", &src, Some("2026-11-20T02:00:00Z"));
    assert_eq!(flat["layout"], "flat");
    let cfg = config(&t, &repo, "alice", &src, &format!("mail = {mail:?}"));
    let (parts, _) = backup_with_config(&cfg, "alice", &["--time", "2026-11-21T02:00:00Z"]);
    assert_eq!(parts["layout"], "parts");
    // The files were compared with the flat snapshot's tree: only mail was read.
    let mail_bytes = file_bytes(&mail);
    assert_eq!(parts["bytes_read"].as_u64().unwrap(), mail_bytes, "{parts}");

    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let day1 = m.path.join("2026-11-20");
    let day2 = m.path.join("2026-11-21");
    assert_same_tree(&describe(&src), &describe(&day1));
    assert_same_tree(&describe(&src), &describe(&day2.join("files")));
    assert_same_tree(&describe(&mail), &describe(&day2.join("mails")));
    check_clean(&repo);
}

/// An application keeps an SQLite database open in WAL mode, its newest rows only in `-wal`.
#[test]
fn sqlite_in_wal_mode_is_stored_whole() {
    ensure_packages(&["sqlite3", "python3"]);
    let user = TestUser::new();
    let t = TempDir::new("parts-sqlite");
    let repo = t.join("repo");
    let db = user.home.join("app/data.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::os::unix::fs::chown(db.parent().unwrap(), Some(user.uid), Some(user.gid)).unwrap();
    // The writer holds the database open (no checkpoint) until its stdin closes.
    let script = format!(
        "import sqlite3, sys\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('PRAGMA journal_mode=WAL'); c.execute('PRAGMA wal_autocheckpoint=0')\n\
         c.execute('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)')\n\
         for i in range(5000): c.execute('INSERT INTO t (v) VALUES (?)', ('row %d' % i,))\n\
         print('ready', flush=True)\n\
         sys.stdin.read()\n"
    );
    let mut app = user
        .command("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(app.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    assert!(Path::new(&format!("{}-wal", db.display())).exists());

    init_repo(&repo);
    let json = backup(&repo, "alice", &user.home, None);
    drop(app.stdin.take());
    app.wait().unwrap();
    assert_eq!(json["warnings"], 0, "{json}");
    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let stored = m.latest_in("").join("app");
    assert!(!stored.join("data.db-wal").exists() && !stored.join("data.db-shm").exists());
    let copy = t.join("restored.db");
    std::fs::copy(stored.join("data.db"), &copy).unwrap();
    let out = Command::new("sqlite3")
        .arg(&copy)
        .arg("SELECT count(*), max(v) FROM t")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5000|row 999");
    // Nothing of root's was left beside the database, nothing in the temporary directory.
    for f in std::fs::read_dir(db.parent().unwrap()).unwrap() {
        let meta = f.unwrap().metadata().unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), user.uid);
    }
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("backupfs-sqlite-")
        })
        .count();
    assert_eq!(leftovers, 0);
}

/// Files and mail on two filesystems whose hardlinked inodes have the same numbers: the snapshot's hardlink
/// table is keyed by inode number, so mail's group must not be joined to the files' (it would show the files'
/// content under the mail's names).
#[test]
fn hardlinks_of_mail_on_another_filesystem_keep_their_own_content() {
    use std::os::unix::fs::MetadataExt;
    let t = TempDir::new("parts-links");
    let home = Tmpfs::new(t.join("home"), "16m");
    let vmail = Tmpfs::new(t.join("vmail"), "16m");
    for (root, text) in [(&home.0, "home's"), (&vmail.0, "mail's")] {
        std::fs::create_dir(root.join("d")).unwrap();
        write(&root.join("d/a"), format!("{text} content\n").as_bytes());
        std::fs::hard_link(root.join("d/a"), root.join("d/b")).unwrap();
    }
    let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(home.0.join("d/a")),
        ino(vmail.0.join("d/a")),
        "two fresh tmpfs no longer number inodes alike: this test proves nothing"
    );
    let repo = t.join("repo");
    init_repo(&repo);
    let cfg = config(
        &t,
        &repo,
        "alice",
        &home.0,
        &format!("mail = {:?}", vmail.0),
    );
    backup_with_config(&cfg, "alice", &[]);
    let m = Mount::new(&repo, "alice", &t.join("mnt"));
    let latest = m.latest_in("");
    for (part, text) in [("files", "home's"), ("mails", "mail's")] {
        for name in ["a", "b"] {
            let got = std::fs::read_to_string(latest.join(format!("{part}/d/{name}"))).unwrap();
            assert_eq!(got, format!("{text} content\n"), "{part}/d/{name}");
        }
    }
    let (files_a, mails_a) = (latest.join("files/d/a"), latest.join("mails/d/a"));
    assert_ne!(ino(files_a.clone()), ino(mails_a));
    assert_eq!(ino(files_a), ino(latest.join("files/d/b")));
    drop(m);
}
