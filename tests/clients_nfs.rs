//! NFS re-export of the mount: first the file handles an NFS server hands out (`name_to_handle_at`, reopened with
//! `open_by_handle_at` after the kernel forgot the inodes or the daemon restarted), then a real NFS server
//! (nfs-ganesha, userspace, NFSv4 on 127.0.0.1) re-exporting the mount, read with libnfs's `nfs-ls`/`nfs-cat`.
//!
//! The trap these tests avoid (shared/recipes/README.md): a daemon without export support still reopens an old
//! handle once the path has been looked up again. So every handle is opened before any path below the mount
//! root is touched again, on a fresh mount or right after the caches were dropped.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DAY0: &str = "2026-11-19";
const DAY1: &str = "2026-11-20";

// --- file handles ------------------------------------------------------------------------------------------------

/// `struct file_handle` with room for the largest handle (MAX_HANDLE_SZ).
#[repr(C)]
#[derive(Clone)]
struct Handle {
    bytes: u32,
    kind: i32,
    data: [u8; 128],
}

impl Handle {
    /// FUSE's handle (fs/fuse/inode.c, fuse_encode_fh): node id high and low 32 bits, then the generation.
    fn node_id(&self) -> u64 {
        let word = |i: usize| u32::from_ne_bytes(self.data[4 * i..4 * i + 4].try_into().unwrap());
        (word(0) as u64) << 32 | word(1) as u64
    }

    fn with_words(&self, node_id: u64, generation_xor: u32) -> Self {
        let mut h = self.clone();
        h.data[0..4].copy_from_slice(&((node_id >> 32) as u32).to_ne_bytes());
        h.data[4..8].copy_from_slice(&(node_id as u32).to_ne_bytes());
        let g = u32::from_ne_bytes(h.data[8..12].try_into().unwrap()) ^ generation_xor;
        h.data[8..12].copy_from_slice(&g.to_ne_bytes());
        h
    }
}

fn name_to_handle(path: &Path) -> Handle {
    let mut h = Handle {
        bytes: 128,
        kind: 0,
        data: [0; 128],
    };
    let mut mount_id = 0;
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `h` is a file_handle header followed by 128 bytes, as handle_bytes says; the path is a C string.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut h as *mut Handle).cast(),
            &mut mount_id,
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "name_to_handle_at {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    h
}

fn open_by_handle(mount_root: &Path, h: &Handle, flags: i32) -> std::io::Result<OwnedFd> {
    let root = fs::File::open(mount_root)?;
    let mut h = h.clone();
    // SAFETY: a valid directory fd and a handle as name_to_handle_at filled it (or altered in its data only).
    let fd =
        unsafe { libc::open_by_handle_at(root.as_raw_fd(), (&mut h as *mut Handle).cast(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What a handle must show again: a file's bytes or a directory's sorted names.
#[derive(Debug, PartialEq)]
enum Content {
    File(Vec<u8>),
    Dir(Vec<Vec<u8>>),
}

fn sorted_names(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    names.sort();
    names
}

fn content_of_source(p: &Path) -> Content {
    if p.is_dir() {
        Content::Dir(sorted_names(p))
    } else {
        Content::File(fs::read(p).unwrap())
    }
}

fn content_of_fd(fd: &OwnedFd, is_dir: bool) -> Content {
    if is_dir {
        // The magic link leads to the opened dentry itself: no lookup by name.
        Content::Dir(sorted_names(Path::new(&format!(
            "/proc/self/fd/{}",
            fd.as_raw_fd()
        ))))
    } else {
        let mut data = Vec::new();
        fs::File::from(fd.try_clone().unwrap())
            .read_to_end(&mut data)
            .unwrap();
        Content::File(data)
    }
}

/// Two snapshots of the fixture (day 0 and day 1), with the sources kept to compare against.
struct Fixture {
    _t: TempDir,
    repo: PathBuf,
    mountpoint: PathBuf,
    sources: BTreeMap<&'static str, PathBuf>,
}

fn fixture(label: &str, seed: &str) -> Fixture {
    let t = TempDir::new(label);
    let repo = t.join("repo");
    init_repo(&repo);
    let (day0, day1) = (t.join("day0"), t.join("day1"));
    gen_tree(&day0, seed);
    gen_tree(&day1, seed);
    mutate(&day1, seed, 1);
    backup(&repo, "alice", &day0, Some(&format!("{DAY0}T03:00:00Z")));
    backup(&repo, "alice", &day1, Some(&format!("{DAY1}T03:00:00Z")));
    Fixture {
        mountpoint: t.join("mnt"),
        repo,
        sources: BTreeMap::from([(DAY0, day0), (DAY1, day1)]),
        _t: t,
    }
}

/// The deepest directory below `rel` in the source, by path length (the fixture's plugin views are 7 deep).
fn deepest_dir(src: &Path, rel: &str) -> String {
    let mut best = rel.to_string();
    let mut stack = vec![rel.to_string()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(src.join(&d)).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                let p = format!("{d}/{}", e.file_name().to_str().unwrap());
                if p.matches('/').count() > best.matches('/').count() {
                    best = p.clone();
                }
                stack.push(p);
            }
        }
    }
    best
}

fn first_file(src: &Path, dir: &str) -> String {
    let mut files: Vec<String> = fs::read_dir(src.join(dir))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| format!("{dir}/{}", e.file_name().to_str().unwrap()))
        .collect();
    files.sort();
    files
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no file in {dir}"))
}

/// Paths (below the mount root, after `prefix`) of nested files and directories of both snapshots, with what
/// their sources hold.
fn nested_targets(f: &Fixture, prefix: &str) -> Vec<(String, Content)> {
    let mut out = Vec::new();
    for (snap, src) in &f.sources {
        let deep = deepest_dir(src, "www/wp-content/plugins");
        let mut rels = vec![
            String::new(), // the snapshot's root directory
            "www".to_string(),
            deep.clone(),
            first_file(src, &deep),
            "mail/Maildir/cur".to_string(), // 0700, owned by 1001
            first_file(src, "mail/Maildir/cur"),
            "db/dump.sql".to_string(),
            "hardlinks/triple/a.dat".to_string(),
        ];
        if *snap == DAY1 {
            // Added by the day-1 mutation: a directory of the second snapshot only.
            rels.push(deepest_dir(src, "www/wp-content/uploads"));
        }
        for rel in rels {
            let mount_rel = if rel.is_empty() {
                format!("{prefix}{snap}")
            } else {
                format!("{prefix}{snap}/{rel}")
            };
            out.push((mount_rel, content_of_source(&src.join(&rel))));
        }
    }
    out
}

struct Taken {
    mount_rel: String,
    expected: Content,
    handle: Handle,
    ino: u64,
}

fn take_handles(m: &Mount, targets: Vec<(String, Content)>) -> Vec<Taken> {
    targets
        .into_iter()
        .map(|(mount_rel, expected)| {
            let path = m.path.join(&mount_rel);
            let handle = name_to_handle(&path);
            let ino = fs::symlink_metadata(&path).unwrap().ino();
            assert_eq!(
                handle.node_id(),
                ino,
                "{mount_rel}: not FUSE's handle layout"
            );
            Taken {
                mount_rel,
                expected,
                handle,
                ino,
            }
        })
        .collect()
}

/// Opens every handle first (no path lookups in between), then checks each shows its source's content.
fn reopen_all(m: &Mount, taken: &[Taken], after: &str) {
    let opened: Vec<std::io::Result<OwnedFd>> = taken
        .iter()
        .map(|t| open_by_handle(&m.path, &t.handle, libc::O_RDONLY | libc::O_CLOEXEC))
        .collect();
    let mut failures = Vec::new();
    for (t, fd) in taken.iter().zip(opened) {
        match fd {
            Err(e) => failures.push(format!(
                "{}: open_by_handle_at after {after}: {e}",
                t.mount_rel
            )),
            Ok(fd) => {
                let st = fs::File::from(fd.try_clone().unwrap()).metadata().unwrap();
                assert_eq!(
                    st.ino(),
                    t.ino,
                    "{}: inode number after {after}",
                    t.mount_rel
                );
                if content_of_fd(&fd, st.is_dir()) != t.expected {
                    failures.push(format!("{}: content differs after {after}", t.mount_rel));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\ndaemon log:\n{}",
        failures.join("\n"),
        m.log_text()
    );
}

/// Handles that name nothing (a generation that was never issued, a snapshot that does not exist) are
/// refused with ESTALE: the reopening above really went through the handles.
fn stale_handles_are_refused(m: &Mount, t: &Taken) {
    for (what, h) in [
        (
            "another generation",
            t.handle.with_words(t.handle.node_id(), 0x5a5a_0000),
        ),
        (
            "an ordinal never used",
            t.handle.with_words((999u64 << 36) | 5, 0),
        ),
    ] {
        match open_by_handle(&m.path, &h, libc::O_RDONLY) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{what}: {e}"),
            Ok(_) => panic!("a handle with {what} opened {}", t.mount_rel),
        }
    }
}

fn drop_caches() {
    // Dentries and inodes: the kernel forgets every unused FUSE inode (and sends FORGET to the daemon).
    let _ = Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", "2").expect("echo 2 > /proc/sys/vm/drop_caches");
}

#[test]
fn file_handles_reopen_after_the_daemon_restarts() {
    let f = fixture("fh-restart", "31");
    let mut m = Mount::new(&f.repo, "alice", &f.mountpoint);
    let taken = take_handles(&m, nested_targets(&f, ""));
    assert!(m.stop().success(), "daemon did not exit cleanly on SIGTERM");

    // A new daemon, and a kernel that never saw these inodes: only the handles lead to them.
    let m = Mount::new(&f.repo, "alice", &f.mountpoint);
    reopen_all(&m, &taken, "a daemon restart");
    stale_handles_are_refused(
        &m,
        taken
            .iter()
            .find(|t| t.mount_rel.ends_with("dump.sql"))
            .unwrap(),
    );
}

/// Failover: handles taken on a mount of the primary open on a mount of its replica (`init --like`, `copy`) at
/// the same place, since a copy keeps inode numbers and generations.
#[test]
fn file_handles_taken_on_the_primary_open_on_its_replica() {
    let f = fixture("fh-replica", "35");
    let mut m = Mount::new(&f.repo, "alice", &f.mountpoint);
    let taken = take_handles(&m, nested_targets(&f, ""));
    assert!(m.stop().success(), "daemon did not exit cleanly on SIGTERM");
    let replica = f.repo.with_file_name("replica");
    let ok = |c: &mut std::process::Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(bin().arg("init").arg("--like").arg(&f.repo).arg(&replica));
    ok(bin()
        .arg("copy")
        .arg("--repo")
        .arg(&f.repo)
        .arg("--to")
        .arg(&replica));
    std::fs::remove_dir_all(&f.repo).unwrap();

    let m = Mount::new(&replica, "alice", &f.mountpoint);
    reopen_all(&m, &taken, "failover to the replica");
    stale_handles_are_refused(&m, &taken[0]);
}

#[test]
fn file_handles_reopen_after_the_kernel_drops_its_caches() {
    let f = fixture("fh-drop", "32");
    let m = Mount::new(&f.repo, "alice", &f.mountpoint);
    let taken = take_handles(&m, nested_targets(&f, ""));
    drop_caches();
    reopen_all(&m, &taken, "drop_caches");
    // And once more, now that the first reopening populated the caches again.
    drop_caches();
    reopen_all(&m, &taken, "a second drop_caches");
    stale_handles_are_refused(&m, &taken[0]);
}

/// The mount of every account (no `--account`): account directories sit between the root and the snapshots, and
/// their handles, and those below them, survive a restart too (with drop_caches on the new mount for good measure).
#[test]
fn file_handles_of_a_mount_of_every_account_reopen_after_a_restart() {
    let f = fixture("fh-all", "34");
    // A second account, so that the account directories are more than a formality.
    backup(
        &f.repo,
        "bob",
        &f.sources[DAY1],
        Some("2026-11-21T03:00:00Z"),
    );
    let mut m = mount_args(&f.repo, &[], &f.mountpoint);
    let mut targets = nested_targets(&f, "alice/");
    let names = |v: &[&str]| Content::Dir(v.iter().map(|n| n.as_bytes().to_vec()).collect());
    targets.push(("alice".into(), names(&[DAY0, DAY1, "latest"])));
    targets.push(("bob".into(), names(&["2026-11-21", "latest"])));
    targets.push((
        "bob/2026-11-21/db/dump.sql".into(),
        content_of_source(&f.sources[DAY1].join("db/dump.sql")),
    ));
    let taken = take_handles(&m, targets);
    assert!(m.stop().success(), "daemon did not exit cleanly on SIGTERM");

    let m = mount_args(&f.repo, &[], &f.mountpoint);
    reopen_all(&m, &taken, "a restart of a mount of every account");
    drop_caches();
    reopen_all(&m, &taken, "that restart and drop_caches");
    stale_handles_are_refused(&m, taken.last().unwrap());
}

// --- NFS re-export through nfs-ganesha ---------------------------------------------------------------------------

/// A test-owned nfs-ganesha exporting one directory read-only over NFSv4 on 127.0.0.1, with its own config, log,
/// pid file and recovery directory; SIGTERMed (then killed) and reaped when dropped.
struct Ganesha {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Ganesha {
    fn start(export: &Path, dir: &Path) -> Self {
        ensure_packages(&["nfs-ganesha", "nfs-ganesha-vfs", "libnfs-utils"]);
        fs::create_dir_all(dir.join("recov")).unwrap();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.join("ganesha.conf");
            fs::write(
                &conf,
                format!(
                    "NFS_CORE_PARAM {{ Bind_Addr = 127.0.0.1; NFS_Port = {port}; Protocols = 4; \
                     Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}\n\
                     NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = \"{recov}\"; \
                     Only_Numeric_Owners = true; }}\n\
                     EXPORT {{ Export_Id = 1; Path = \"{export}\"; Pseudo = \"/e\"; Access_Type = RO; \
                     Squash = No_Root_Squash; SecType = sys; Protocols = 4; Transports = TCP; \
                     FSAL {{ Name = VFS; }} }}\n",
                    recov = dir.join("recov").display(),
                    export = export.display(),
                ),
            )
            .unwrap();
            let log = dir.join(format!("ganesha-{port}.log"));
            let child = Command::new("ganesha.nfsd")
                .arg("-F")
                .arg("-L")
                .arg(&log)
                .arg("-f")
                .arg(&conf)
                .arg("-p")
                .arg(dir.join("ganesha.pid"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ganesha.nfsd");
            let mut g = Self {
                child: Some(child),
                port,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if g.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                    break;
                }
                if g.log_text().contains("NFS SERVER INITIALIZED") {
                    return g;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("ganesha on port {port} did not start:\n{}", g.log_text());
            g.stop();
        }
        panic!("nfs-ganesha did not start");
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("nfs://127.0.0.1/e/{path}?version=4&nfsport={}", self.port)
    }

    /// A file's bytes read over NFS with `nfs-cat`.
    fn cat(&self, path: &str) -> Result<Vec<u8>, String> {
        let out = output_within(
            Command::new("nfs-cat").arg(self.url(path)),
            Duration::from_secs(120),
        );
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "nfs-cat {path}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// A directory listed over NFS with `nfs-ls`: name -> (mode string, uid, gid, size).
    fn ls(&self, path: &str) -> Result<BTreeMap<String, (String, u32, u32, u64)>, String> {
        let out = output_within(
            Command::new("nfs-ls").arg(self.url(path)),
            Duration::from_secs(120),
        );
        if !out.status.success() {
            return Err(format!(
                "nfs-ls {path}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
        Ok(text
            .lines()
            .map(|l| {
                // "-rw-r--r--  1     0     0         4821 wp-config.php"
                let f: Vec<&str> = l.split_whitespace().collect();
                let name = f[5..].join(" ");
                (
                    name,
                    (
                        f[0].to_string(),
                        f[2].parse().unwrap(),
                        f[3].parse().unwrap(),
                        f[4].parse().unwrap(),
                    ),
                )
            })
            .collect())
    }

    /// SIGTERM, then SIGKILL after 20 s; waits for the process in both cases.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the ganesha this guard started.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.stop();
    }
}

fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        _ => '-',
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// Reads nested files and listings of both snapshots (and through `latest`) over NFS and compares them with the
/// sources: bytes, and for listings every name with its type, permission bits, owner and file size.
fn check_over_nfs(g: &Ganesha, f: &Fixture, when: &str) {
    let mut failures = Vec::new();
    for (snap, src) in &f.sources {
        let deep = deepest_dir(src, "www/wp-content/plugins");
        for rel in [
            first_file(src, &deep),
            "www/page.php".into(),
            "db/dump.sql".into(),
            "hardlinks/triple/b.dat".into(),
        ] {
            match g.cat(&format!("{snap}/{rel}")) {
                Ok(bytes) if bytes == fs::read(src.join(&rel)).unwrap() => {}
                Ok(_) => failures.push(format!("{snap}/{rel}: different bytes over NFS {when}")),
                Err(e) => failures.push(format!("{e} ({when})")),
            }
        }
        for rel in [deep.as_str(), "mail/Maildir/cur", "hardlinks/triple"] {
            let want: BTreeMap<String, (String, u32, u32, u64)> = fs::read_dir(src.join(rel))
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    let md = e.metadata().unwrap();
                    let name = e.file_name().into_string().unwrap();
                    (
                        name,
                        (mode_string(md.mode()), md.uid(), md.gid(), md.size()),
                    )
                })
                .collect();
            match g.ls(&format!("{snap}/{rel}")) {
                Ok(got) if got == want => {}
                Ok(got) => failures.push(format!(
                    "{snap}/{rel}: listing over NFS {when}: {got:?}, want {want:?}"
                )),
                Err(e) => failures.push(format!("{e} ({when})")),
            }
        }
    }
    let latest = &f.sources[DAY1];
    match g.cat("latest/www/index.php") {
        Ok(bytes) if bytes == fs::read(latest.join("www/index.php")).unwrap() => {}
        other => failures.push(format!(
            "latest/www/index.php over NFS {when}: {:?}",
            other.map(|b| b.len())
        )),
    }
    assert!(
        failures.is_empty(),
        "{}\nganesha log:\n{}",
        failures.join("\n"),
        g.log_text()
    );
}

#[test]
fn nfs_reexport_serves_nested_files_after_drop_caches_and_a_daemon_restart() {
    let f = fixture("nfs", "33");
    let dir = f._t.join("ganesha");
    let mut m = Mount::new(&f.repo, "alice", &f.mountpoint);
    {
        let g = Ganesha::start(&m.path, &dir);
        check_over_nfs(&g, &f, "at first");
        drop_caches();
        check_over_nfs(&g, &f, "after drop_caches");
        // ganesha holds the mount root open: it goes first, or the FUSE mount cannot be unmounted.
    }
    assert!(m.stop().success(), "daemon did not exit cleanly on SIGTERM");
    let m = Mount::new(&f.repo, "alice", &f.mountpoint);
    let g = Ganesha::start(&m.path, &dir);
    check_over_nfs(&g, &f, "after the FUSE daemon restarted");
    drop_caches();
    check_over_nfs(&g, &f, "after the restart and drop_caches");
}
