//! Real users through `--allow-other`: each reads and restores their own files, is refused another's private
//! ones (the kernel checks the recorded owners and modes), root sees everything; and the recipe of a user's own
//! backup view at ~/admin/backup that nobody else can enter.
//!
//! The users are real accounts made by `useradd` for the test and removed afterwards; commands run as them
//! through `setpriv`.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime};

const SNAPSHOT_TIME: &str = "2026-11-20T03:00:00Z";
const SNAPSHOT_NAME: &str = "2026-11-20";

/// What a user's home holds in these tests: a public page, a 0600 file and a 0700 directory, all theirs.
const HOME_FILES: [(&str, u32); 3] = [
    ("page.php", 0o644),
    ("secret.txt", 0o600),
    ("private/diary.txt", 0o600),
];

fn content(user: &TestUser, rel: &str) -> Vec<u8> {
    format!("{rel} of {}\n", user.name).repeat(50).into_bytes()
}

/// An mtime with nanoseconds, different for every entry, so that a restore that drops them is caught.
fn mtime(i: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::new(1_790_000_000 + 86_400 * i as u64, 123_456_789 + i)
}

fn set_meta(path: &Path, mode: u32, user: &TestUser, i: u32) {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    fs::File::open(path)
        .unwrap()
        .set_modified(mtime(i))
        .unwrap();
}

/// `root`: a home-like tree of `user` (0755 directory of theirs) with `HOME_FILES` and the 0700 `private/`.
fn home_tree(root: &Path, user: &TestUser) {
    fs::create_dir_all(root.join("private")).unwrap();
    for (i, (rel, mode)) in HOME_FILES.iter().enumerate() {
        let p = root.join(rel);
        fs::write(&p, content(user, rel)).unwrap();
        set_meta(&p, *mode, user, i as u32);
    }
    // Directories last: writing into them changes their mtime.
    set_meta(&root.join("private"), 0o700, user, 10);
    set_meta(root, 0o755, user, 11);
}

fn stdout_of(what: &str, out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The command failed because the kernel refused it (EACCES), not for any other reason.
fn assert_denied(what: &str, out: Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Permission denied"),
        "{what}: expected EACCES, got {} with stdout {:?} stderr {err:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

fn cat(user: &TestUser, path: &Path) -> Output {
    user.run("cat", &[path.as_os_str()])
}

fn ls(user: &TestUser, path: &Path) -> Output {
    user.run("ls", &[OsStr::new("-1"), path.as_os_str()])
}

fn names(listing: &[u8]) -> Vec<String> {
    let mut v: Vec<String> = String::from_utf8_lossy(listing)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// `user` reads their whole home tree under `home` in the mount, lists `private/`, and restores the tree with
/// `cp -a` into their real home: same bytes, modes and nanosecond mtimes, owned by them.
fn reads_and_restores_own_tree(user: &TestUser, home: &Path, source: &Path) {
    for (rel, _) in HOME_FILES {
        let got = stdout_of(
            &format!("{} cat {rel}", user.name),
            cat(user, &home.join(rel)),
        );
        assert_eq!(got, content(user, rel), "{rel} as read by its owner");
    }
    assert_eq!(
        names(&stdout_of(
            "ls own private/",
            ls(user, &home.join("private"))
        )),
        ["diary.txt"]
    );

    let restored = user.home.join("restored");
    stdout_of(
        "cp -a as the user",
        user.run(
            "cp",
            &[OsStr::new("-a"), home.as_os_str(), restored.as_os_str()],
        ),
    );
    for rel in ["", "private", "page.php", "secret.txt", "private/diary.txt"] {
        let (want, got) = (source.join(rel), restored.join(rel));
        let (w, g) = (
            fs::symlink_metadata(&want).unwrap(),
            fs::symlink_metadata(&got).unwrap(),
        );
        assert_eq!(g.mode(), w.mode(), "mode of restored {rel:?}");
        assert_eq!(
            (g.mtime(), g.mtime_nsec()),
            (w.mtime(), w.mtime_nsec()),
            "mtime of restored {rel:?}"
        );
        assert_eq!(
            (g.uid(), g.gid()),
            (user.uid, user.gid),
            "owner of restored {rel:?}"
        );
        if w.is_file() {
            assert_eq!(fs::read(&got).unwrap(), fs::read(&want).unwrap(), "{rel}");
        }
    }
}

/// `user` is refused `other`'s 0600 file and 0700 directory (and what is inside it), by the kernel.
fn is_refused_the_private_parts(user: &TestUser, other_home: &Path) {
    let who = &user.name;
    assert_denied(
        &format!("{who} cat another's 0600 file"),
        cat(user, &other_home.join("secret.txt")),
    );
    assert_denied(
        &format!("{who} ls another's 0700 dir"),
        ls(user, &other_home.join("private")),
    );
    assert_denied(
        &format!("{who} cat inside another's 0700 dir"),
        cat(user, &other_home.join("private/diary.txt")),
    );
    // The public page is public: the refusals above come from the modes, not from a mount that lets nobody in.
    stdout_of(
        &format!("{who} cat another's 0644 file"),
        cat(user, &other_home.join("page.php")),
    );
}

fn root_reads_everything(home: &Path, owner: &TestUser) {
    for (rel, _) in HOME_FILES {
        assert_eq!(
            fs::read(home.join(rel)).unwrap(),
            content(owner, rel),
            "root reading {rel}"
        );
    }
}

#[test]
fn users_read_and_restore_their_own_files_and_are_refused_each_others() {
    let (a, b) = (TestUser::new(), TestUser::new());
    let t = TempDir::new("perm-users");
    let src = t.join("src");
    home_tree(&src.join("a"), &a);
    home_tree(&src.join("b"), &b);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "site", &src, Some(SNAPSHOT_TIME));

    let m = Mount::with(&repo, "site", &t.join("mnt"), &["--allow-other"], &[]);
    let snap = m.path.join("latest");
    reads_and_restores_own_tree(&a, &snap.join("a"), &src.join("a"));
    is_refused_the_private_parts(&a, &snap.join("b"));
    is_refused_the_private_parts(&b, &snap.join("a"));
    root_reads_everything(&snap.join("a"), &a);
    root_reads_everything(&snap.join("b"), &b);
}

/// The recipe for a user's own view: root mounts the user's account with `--allow-other` on a mount point in the
/// user's home that the user owns with mode 0700. The user browses it; nobody else gets in, even where the
/// recorded modes are public, and even though the home directory itself is 0755.
#[test]
fn an_accounts_mount_in_the_users_home_is_theirs_alone() {
    let (owner, other) = (TestUser::new(), TestUser::new());
    let t = TempDir::new("perm-recipe");
    let src = t.join("src");
    home_tree(&src, &owner);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, &owner.name, &src, Some(SNAPSHOT_TIME));

    let admin = owner.home.join("admin");
    let mountpoint = admin.join("backup");
    fs::create_dir_all(&mountpoint).unwrap();
    for (dir, mode) in [(&admin, 0o755), (&mountpoint, 0o700)] {
        std::os::unix::fs::chown(dir, Some(owner.uid), Some(owner.gid)).unwrap();
        fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
    }
    let m = Mount::with(&repo, &owner.name, &mountpoint, &["--allow-other"], &[]);

    let root = fs::metadata(&m.path).unwrap();
    assert_eq!(
        (root.uid(), root.gid()),
        (owner.uid, owner.gid),
        "owner of the mount root"
    );
    assert_eq!(
        names(&stdout_of("the user lists the mount", ls(&owner, &m.path))),
        [SNAPSHOT_NAME, "latest"]
    );
    let page = m.path.join("latest/page.php");
    assert_eq!(
        stdout_of("the user reads a file", cat(&owner, &page)),
        content(&owner, "page.php")
    );

    assert_denied("another user lists the mount", ls(&other, &m.path));
    assert_denied(
        "another user reads a 0644 file through the mount",
        cat(&other, &page),
    );
    assert!(
        root.mode() & 0o077 == 0,
        "the mount root is {:o} although the mount point is 0700",
        root.mode() & 0o7777
    );
}

/// A mount of every account (no `--account`), shared with `--allow-other`: each user reaches their account's
/// files and restores from them, and is refused another account's private files.
#[test]
fn a_shared_mount_of_every_account_keeps_private_files_private() {
    let (a, b) = (TestUser::new(), TestUser::new());
    let t = TempDir::new("perm-shared");
    let repo = t.join("repo");
    init_repo(&repo);
    for (account, user) in [("alice", &a), ("bob", &b)] {
        let src = t.join(account);
        home_tree(&src, user);
        backup(&repo, account, &src, Some(SNAPSHOT_TIME));
    }

    let m = mount_args(&repo, &["--allow-other"], &t.join("mnt"));
    assert_eq!(
        names(&stdout_of("a user lists the shared root", ls(&a, &m.path))),
        ["alice", "bob"]
    );
    assert_eq!(
        names(&stdout_of(
            "a user lists an account",
            ls(&a, &m.path.join("alice"))
        )),
        [SNAPSHOT_NAME, "latest"]
    );
    // `latest/.`: through the symlink, also for `cp -a`, which copies a symlink operand as a symlink.
    let (alice, bob) = (m.path.join("alice/latest/."), m.path.join("bob/latest/."));
    reads_and_restores_own_tree(&a, &alice, &t.join("alice"));
    is_refused_the_private_parts(&a, &bob);
    is_refused_the_private_parts(&b, &alice);
    root_reads_everything(&alice, &a);
    root_reads_everything(&bob, &b);
}

/// The xattr form of a POSIX access ACL (what `setfacl` writes): u32 version 2, then little-endian (u16 tag,
/// u16 permission bits, u32 id) entries sorted by tag then id.
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

fn set_access_acl(path: &Path, acl: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = c"system.posix_acl_access";
    // SAFETY: both strings are NUL-terminated and the value pointer and length describe `acl`.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            name.as_ptr(),
            acl.as_ptr().cast(),
            acl.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr ACL on {path:?}: {}",
        std::io::Error::last_os_error()
    );
}

/// ACLs recorded in a snapshot are enforced as on the source, not just the mode bits they fold into: a user the
/// ACL shuts out of a world-readable file is refused it, and a user the ACL lets into an otherwise private file
/// reads it. (With the mode bits alone the first reads and the second is refused.)
#[test]
fn posix_acls_recorded_in_a_snapshot_are_enforced() {
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const NO_ID: u32 = u32::MAX;
    let (owner, shut_out, let_in) = (TestUser::new(), TestUser::new(), TestUser::new());
    let t = TempDir::new("perm-acl");
    let src = t.join("src");
    home_tree(&src, &owner);
    let (public, private) = (src.join("not-for-one.txt"), src.join("for-one-more.txt"));
    for (i, path) in [&public, &private].into_iter().enumerate() {
        fs::write(path, format!("{path:?}\n")).unwrap();
        set_meta(path, 0o644, &owner, 20 + i as u32);
    }
    // `public` is world-readable but not for `shut_out`; `private` is the owner's and `let_in`'s alone.
    let acls = [
        (&public, (0, shut_out.uid), 4, 4),
        (&private, (4, let_in.uid), 0, 0),
    ];
    for (path, (named_perm, named_uid), group_perm, other_perm) in acls {
        let entries = [
            (USER_OBJ, 6, NO_ID),
            (USER, named_perm, named_uid),
            (GROUP_OBJ, group_perm, NO_ID),
            (MASK, 4, NO_ID),
            (OTHER, other_perm, NO_ID),
        ];
        set_access_acl(path, &acl_xattr(&entries));
    }
    set_meta(&src, 0o755, &owner, 11);
    // The source kernel enforces them: the checks below mean the same through the mount.
    assert_denied("ACL-refused user on the source", cat(&shut_out, &public));
    stdout_of("ACL-admitted user on the source", cat(&let_in, &private));
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "site", &src, Some(SNAPSHOT_TIME));

    let m = Mount::with(&repo, "site", &t.join("mnt"), &["--allow-other"], &[]);
    let snap = m.path.join("latest");
    let (public, private) = (snap.join("not-for-one.txt"), snap.join("for-one-more.txt"));
    assert_eq!(fs::metadata(&public).unwrap().mode() & 0o777, 0o644);
    assert_eq!(fs::metadata(&private).unwrap().mode() & 0o777, 0o640);
    assert_denied("the user the ACL shuts out", cat(&shut_out, &public));
    stdout_of("others read the world-readable file", cat(&let_in, &public));
    assert_eq!(
        stdout_of("the user the ACL lets in", cat(&let_in, &private)),
        fs::read(src.join("for-one-more.txt")).unwrap()
    );
    assert_denied("a user the ACL does not name", cat(&shut_out, &private));
    root_reads_everything(&snap, &owner);
}
