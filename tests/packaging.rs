//! Packaging and operations: the Debian package installed for real and mounted through mount(8) and an fstab,
//! the systemd units (`systemd-analyze verify`), the sd_notify readiness of `backupfs mount`, `mount --daemon`,
//! the mount helper's options and errors, the configuration file, the generated man pages and completions, and
//! the help texts (snapshots in tests/snapshots/help/; `UPDATE_SNAPSHOTS=1` rewrites them).
//!
//! Debian packages used (installed if missing): systemd (systemd-analyze), man-db (verify checks that each unit's
//! Documentation= page exists). Already present on Debian: dpkg, mount, util-linux (flock); build-deb.sh also
//! uses dpkg-shlibdeps (dpkg-dev) and strip (binutils) when they are there.

mod common;

use common::*;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const HELPER: &str = "mount.fuse.backupfs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Asserts that `out` is a refusal: exit `code` and a stderr that says `needle`.
fn refused(out: &Output, code: i32, needle: &str, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    assert!(stderr.contains(needle), "{what}: {stderr}");
}

fn run(cmd: &mut Command) -> Output {
    output_within(cmd.stdin(Stdio::null()), Duration::from_secs(120))
}

/// A demo repository: a generated tree backed up as account alice (and bob), in `t`.
fn demo_repo(t: &TempDir) -> (PathBuf, PathBuf) {
    let (src, repo) = backed_up_tree(&t, "packaging", "alice", Some("2026-11-20T03:00:00Z"));
    backup(&repo, "bob", &src, Some("2026-11-20T04:00:00Z"));
    (repo, src)
}

/// The mount's latest snapshot has exactly the source's contents.
fn assert_serves(mnt: &Path, src: &Path) {
    let names: Vec<String> = std::fs::read_dir(mnt)
        .unwrap_or_else(|e| panic!("listing {}: {e}", mnt.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"latest".to_string()) && names.len() == 2,
        "{names:?}"
    );
    let latest = std::fs::canonicalize(mnt.join("latest")).unwrap();
    assert_same_tree(&describe(src), &describe(&latest));
}

/// How many mounts sit on `path`.
fn mount_count(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(&*p))
        .count()
}

/// Unmounts (lazily, repeatedly) whatever is still mounted on the path when dropped. Declare it after the
/// TempDir holding the path, so that it runs first.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for _ in 0..4 {
            if !is_mounted(&self.0) {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A directory with `mount.fuse.backupfs` linked to the binary under test (the name makes it the helper).
fn helper_link(t: &TempDir) -> PathBuf {
    let link = t.join(HELPER);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_backupfs"), &link).unwrap();
    link
}

fn helper(link: &Path) -> Command {
    let mut c = Command::new(link);
    c.env_remove("BACKUPFS_CONFIG")
        .env_remove("NOTIFY_SOCKET")
        .env("TZ", "UTC");
    c
}

// ---------------------------------------------------------------------------------------------------------------
// The Debian package, installed on this machine.

const INSTALLED_MARKER: &str = "/var/tmp/backupfs-packaging-test.installed";

/// Serialises the tests that install the package, across processes (two test runs at once).
fn machine_lock() -> std::fs::File {
    let f = std::fs::File::create("/tmp/backupfs-packaging-test.lock").unwrap();
    // SAFETY: flock on a descriptor this function owns; released when the file is closed.
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) }, 0);
    f
}

fn package_installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "backupfs"])
        .output()
        .is_ok_and(|o| text(&o.stdout).contains("install ok installed"))
}

/// dpkg, waiting while another dpkg or apt holds the lock.
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let locked = text(&out.stderr).contains("lock");
        if out.status.success() || !locked || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Purges the package when dropped, whatever the test did.
struct Installed;

impl Installed {
    fn new(deb: &Path) -> Self {
        assert!(
            !package_installed() || Path::new(INSTALLED_MARKER).exists(),
            "a backupfs package is installed on this machine and not by this test: remove it first (dpkg -P backupfs)"
        );
        std::fs::write(INSTALLED_MARKER, b"").unwrap();
        let guard = Installed;
        ok(dpkg(&["-i", deb.to_str().unwrap()]), "dpkg -i");
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let out = dpkg(&["-P", "backupfs"]);
        if out.status.success() {
            let _ = std::fs::remove_file(INSTALLED_MARKER);
        } else {
            eprintln!("dpkg -P backupfs: {}", text(&out.stderr));
        }
    }
}

fn build_deb(out: &Path) -> PathBuf {
    let built = ok(
        run(Command::new(root().join("packaging/build-deb.sh"))
            .args([
                "--binary",
                env!("CARGO_BIN_EXE_backupfs"),
                "--compress",
                "gzip",
            ])
            .arg("--out")
            .arg(out)),
        "packaging/build-deb.sh",
    );
    let deb = PathBuf::from(text(&built.stdout).trim());
    assert!(deb.is_file(), "build-deb.sh printed {deb:?}");
    deb
}

/// Verifies units by path with systemd-analyze (it needs their ExecStart= binaries and Documentation= pages
/// installed, so this runs with the package installed).
fn verify_units(dir: &Path, units: &[&str]) {
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| format!("./{u}")))
        .current_dir(dir));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify {units:?}: {}\n{}",
        out.status,
        text(&out.stderr)
    );
}

#[test]
fn debian_package_installs_and_mounts_through_mount_and_fstab() {
    ensure_packages(&["systemd", "man-db"]);
    let _lock = machine_lock();
    let t = TempDir::new("deb");
    let deb = build_deb(&t.join("out"));

    let listing = text(
        &ok(
            run(Command::new("dpkg-deb").arg("-c").arg(&deb)),
            "dpkg-deb -c",
        )
        .stdout,
    );
    for path in [
        "./usr/bin/backupfs",
        "./sbin/mount.fuse.backupfs -> /usr/bin/backupfs",
        "./lib/systemd/system/backupfs-mount@.service",
        "./lib/systemd/system/backupfs-backup@.service",
        "./lib/systemd/system/backupfs-backup@.timer",
        "./lib/systemd/system/backupfs-copy@.service",
        "./usr/share/man/man1/backupfs.1.gz",
        "./usr/share/man/man1/backupfs-mount.1.gz",
        "./usr/share/man/man8/mount.fuse.backupfs.8.gz",
        "./usr/share/bash-completion/completions/backupfs",
        "./usr/share/zsh/vendor-completions/_backupfs",
        "./usr/share/fish/vendor_completions.d/backupfs.fish",
        "./etc/backupfs/config.toml",
        "./usr/share/doc/backupfs/copyright",
        "./usr/share/doc/backupfs/examples/home-alice-admin-backup.mount",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }
    let info = text(
        &ok(
            run(Command::new("dpkg-deb").arg("-I").arg(&deb)),
            "dpkg-deb -I",
        )
        .stdout,
    );
    assert!(
        info.contains("Depends: ") && info.contains("fuse3"),
        "{info}"
    );

    let (repo, src) = demo_repo(&t);
    let _installed = Installed::new(&deb);
    assert_eq!(
        std::fs::canonicalize("/sbin/mount.fuse.backupfs").unwrap(),
        Path::new("/usr/bin/backupfs")
    );
    for page in ["backupfs", "backupfs-prune", "mount.fuse.backupfs"] {
        ok(
            run(Command::new("man").args(["-w", page])),
            &format!("man -w {page}"),
        );
    }
    // The installed units are the ones in packaging/systemd, and they verify (so do the examples).
    for u in [
        "backupfs-mount@.service",
        "backupfs-backup@.service",
        "backupfs-backup@.timer",
        "backupfs-copy@.service",
    ] {
        assert_eq!(
            std::fs::read(Path::new("/lib/systemd/system").join(u)).unwrap(),
            std::fs::read(root().join("packaging/systemd").join(u)).unwrap(),
            "{u}"
        );
    }
    verify_units(
        &root().join("packaging/systemd"),
        &[
            "backupfs-mount@alice.service",
            "backupfs-backup@alice.service",
            "backupfs-backup@alice.timer",
            "backupfs-copy@offsite.service",
            "home-alice-admin-backup.mount",
            "home-alice-admin-backup.automount",
        ],
    );
    // The commented configuration template is a valid (empty) configuration.
    ok(
        run(Command::new("/usr/bin/backupfs")
            .args([
                "--config",
                "/etc/backupfs/config.toml",
                "snapshots",
                "--repo",
            ])
            .arg(&repo)),
        "backupfs with the packaged config",
    );

    // mount -t fuse.backupfs: returns once the mount lists; the source shows as the repository.
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(mnt.clone());
    let out = run(Command::new("mount")
        .args(["-t", "fuse.backupfs"])
        .arg(&repo)
        .arg(&mnt)
        .args(["-o", "account=alice,allow_other"]));
    ok(out, "mount -t fuse.backupfs");
    assert!(is_mounted(&mnt), "mount returned before the mount existed");
    assert_serves(&mnt, &src);
    let findmnt = text(
        &ok(
            run(Command::new("findmnt")
                .args(["-n", "-o", "SOURCE,FSTYPE,OPTIONS"])
                .arg(&mnt)),
            "findmnt",
        )
        .stdout,
    );
    assert!(
        findmnt.starts_with(&format!("{} fuse.backupfs ro,", repo.display())),
        "{findmnt}"
    );
    assert!(findmnt.contains("allow_other"), "{findmnt}");
    // A second mount of the same repository there is refused (FUSE mounts would stack).
    let again = run(Command::new("mount")
        .args(["-t", "fuse.backupfs"])
        .arg(&repo)
        .arg(&mnt)
        .args(["-o", "account=alice"]));
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already mounted"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(mount_count(&mnt), 1);
    ok(run(Command::new("umount").arg(&mnt)), "umount");
    assert!(!is_mounted(&mnt));

    // Failures are named and non-zero.
    let bad = run(Command::new("mount")
        .args(["-t", "fuse.backupfs"])
        .arg(t.join("no-repo"))
        .arg(&mnt));
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("no-repo"),
        "{}",
        text(&bad.stderr)
    );
    let bad = run(Command::new("mount")
        .args(["-t", "fuse.backupfs", "-o", "acount=alice"])
        .arg(&repo)
        .arg(&mnt));
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("acount=alice"),
        "{}",
        text(&bad.stderr)
    );
    assert!(!is_mounted(&mnt));

    // An fstab: `mount MOUNTPOINT` with systemd's and mount(8)'s options, and `mount -a` (noauto skipped;
    // an entry already mounted is not mounted again).
    let mnt2 = t.join("mnt2");
    std::fs::create_dir(&mnt2).unwrap();
    let _unmount2 = Unmount(mnt2.clone());
    let fstab = t.join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# test fstab\n\
             {repo} {mnt} fuse.backupfs account=alice,noauto,x-systemd.automount,x-systemd.idle-timeout=1h,_netdev,nofail,ro 0 0\n\
             {repo} {mnt2} fuse.backupfs defaults,account=bob,allow_other,threads=2,nofail 0 0\n",
            repo = repo.display(),
            mnt = mnt.display(),
            mnt2 = mnt2.display()
        ),
    )
    .unwrap();
    ok(
        run(Command::new("mount").arg("-T").arg(&fstab).arg(&mnt)),
        "mount -T fstab MOUNTPOINT",
    );
    assert!(is_mounted(&mnt));
    assert_serves(&mnt, &src);
    for _ in 0..2 {
        ok(
            run(Command::new("mount").arg("-T").arg(&fstab).arg("-a")),
            "mount -T fstab -a",
        );
        assert_eq!(mount_count(&mnt), 1, "mount -a mounted the noauto entry");
        assert_eq!(
            mount_count(&mnt2),
            1,
            "mount -a: {} mounts",
            mount_count(&mnt2)
        );
    }
    assert_serves(&mnt2, &src);
    ok(run(Command::new("umount").arg(&mnt)), "umount");
    ok(run(Command::new("umount").arg(&mnt2)), "umount");
    assert!(!is_mounted(&mnt) && !is_mounted(&mnt2));
}

// ---------------------------------------------------------------------------------------------------------------
// Readiness: sd_notify, --daemon, the helper.

/// A `backupfs mount` child that is stopped (SIGTERM) and reaped when dropped.
struct Daemon(Option<Child>);

impl Daemon {
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.0.take().unwrap();
        // SAFETY: signalling the child this guard spawned.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        wait_timeout(&mut c, Duration::from_secs(20))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.stop();
        }
    }
}

/// Starts `backupfs mount` with NOTIFY_SOCKET=`socket_name` and returns the first notification and whether the
/// mount listed, and listed right, at the moment it arrived.
fn notified_mount(socket: &UnixDatagram, socket_name: &str, repo: &Path, mnt: &Path, src: &Path) {
    let child = bin()
        .args(["mount", "--account", "alice", "--repo"])
        .arg(repo)
        .arg(mnt)
        .env("NOTIFY_SOCKET", socket_name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(Some(child));
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("no notification within 30 s");
    // Before anything else: the mount must already be there and list.
    let mounted = is_mounted(mnt);
    let listed = std::fs::read_dir(mnt).map(|d| d.count()).unwrap_or(0);
    assert_eq!(&buf[..n], b"READY=1");
    assert!(mounted, "READY=1 arrived before the mount existed");
    assert_eq!(listed, 2, "READY=1 arrived before the mount listed");
    assert_serves(mnt, src);
    assert!(
        daemon.0.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    let status = daemon.stop();
    assert!(status.success(), "SIGTERM: {status}");
    assert!(!is_mounted(mnt), "still mounted after SIGTERM");
}

#[test]
fn ready_is_notified_only_once_the_mount_lists() {
    let t = TempDir::new("notify");
    let (repo, src) = demo_repo(&t);
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(mnt.clone());

    let path = t.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    notified_mount(&socket, path.to_str().unwrap(), &repo, &mnt, &src);

    // The abstract namespace, as systemd may use.
    use std::os::linux::net::SocketAddrExt;
    let name = format!("backupfs-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    notified_mount(&socket, &format!("@{name}"), &repo, &mnt, &src);
}

#[test]
fn daemon_mode_returns_once_mounted_and_reports_failures() {
    let t = TempDir::new("daemon");
    let (repo, src) = demo_repo(&t);
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(mnt.clone());
    let log = t.join("daemon.log");

    // output() waits for stdout and stderr to close: the daemon must let go of them.
    let out = run(bin()
        .args(["mount", "--daemon", "--account", "alice", "--log-file"])
        .arg(&log)
        .arg("--repo")
        .arg(&repo)
        .arg(&mnt));
    ok(out, "mount --daemon");
    assert!(
        is_mounted(&mnt),
        "--daemon returned before the mount existed"
    );
    assert_serves(&mnt, &src);
    assert!(log.exists());
    ok(run(Command::new("umount").arg(&mnt)), "umount");
    assert!(!is_mounted(&mnt));

    // Errors found by the daemon reach the caller: one line naming the object, exit 1.
    let not_repo = t.join("src");
    let out = run(bin()
        .args(["mount", "--daemon", "--repo"])
        .arg(&not_repo)
        .arg(&mnt));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("not a backupfs repository") && err.contains(&*not_repo.to_string_lossy()),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!is_mounted(&mnt));
}

#[test]
fn mount_helper_options_and_errors() {
    let t = TempDir::new("helper");
    let (repo, src) = demo_repo(&t);
    let link = helper_link(&t);
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(mnt.clone());
    let usage = |args: &[&str], needle: &str| {
        let out = run(helper(&link).arg(&repo).arg(&mnt).args(args));
        refused(&out, 1, needle, &format!("{args:?}"));
        assert!(!is_mounted(&mnt));
    };
    usage(&["-o", "rw,bogus"], "\"bogus\"");
    usage(&["-o", "threads=0"], "threads=0");
    usage(&["-o", "account=alice", "-t", "fuse.sshfs"], "fuse.sshfs");
    usage(
        &["-o", "config=/nonexistent/backupfs.toml"],
        "/nonexistent/backupfs.toml",
    );
    usage(&["--bogus"], "--bogus");

    // -f: everything checked, nothing mounted.
    let out = run(helper(&link)
        .arg(&repo)
        .arg(&mnt)
        .args(["-f", "-o", "account=alice"]));
    ok(out, "-f");
    assert!(!is_mounted(&mnt));

    // Mount failures: exit 32 (mount(8)'s "mount failure"), the path named.
    for (source, target, needle) in [
        (t.join("no-repo"), mnt.clone(), "no-repo"),
        (repo.clone(), t.join("no-mnt"), "no-mnt"),
        (src.clone(), mnt.clone(), "not a backupfs repository"),
    ] {
        let out = run(helper(&link).arg(&source).arg(&target));
        assert_eq!(out.status.code(), Some(32), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
        assert!(!is_mounted(&mnt));
    }

    // What mount(8) passes, with -s for an unknown option, and the generic options it may pass through.
    let out = run(helper(&link).arg(&repo).arg(&mnt).args([
        "-s",
        "-n",
        "-o",
        "rw,account=alice,threads=2,nofail,_netdev,nosuid,nodev,noatime,whatever=1",
        "-t",
        "fuse.backupfs",
    ]));
    ok(out.clone(), "helper -s");
    assert!(
        text(&out.stderr).contains("whatever=1"),
        "{}",
        text(&out.stderr)
    );
    assert!(is_mounted(&mnt));
    assert_serves(&mnt, &src);
    ok(run(Command::new("umount").arg(&mnt)), "umount");

    // An account with no snapshots yet mounts (its snapshots appear after its first backup).
    let out = run(helper(&link)
        .arg(&repo)
        .arg(&mnt)
        .args(["-o", "ro,account=carol"]));
    ok(out, "helper, account without snapshots");
    assert!(is_mounted(&mnt));
    backup(&repo, "carol", &src, Some("2026-11-21T03:00:00Z"));
    wait_until("carol's first snapshot", Duration::from_secs(10), || {
        std::fs::read_dir(&mnt).is_ok_and(|d| d.count() == 2)
    });
    ok(run(Command::new("umount").arg(&mnt)), "umount");
}

// ---------------------------------------------------------------------------------------------------------------
// The configuration file.

#[test]
fn config_file_supplies_repository_accounts_mount_and_retention() {
    let t = TempDir::new("config");
    let src = t.join("src");
    gen_tree(&src, "config");
    let repo = t.join("repo");
    init_repo(&repo);
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = Unmount(mnt.clone());
    let config = t.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\n\n[mount]\nthreads = 2\n\n[retention]\nkeep_last = 1\n\n\
             [accounts.alice]\nsource = \"{}\"\nmountpoint = \"{}\"\n",
            repo.display(),
            src.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| {
        let mut c = bin();
        c.arg("--config").arg(&config).args(args);
        c
    };
    // backup: repository and source from the file.
    for day in ["2026-11-18", "2026-11-19", "2026-11-20"] {
        let time = format!("{day}T03:00:00Z");
        ok(
            run(&mut with_config(&[
                "backup",
                "--account",
                "alice",
                "--time",
                &time,
            ])),
            "backup from the config",
        );
    }
    // The number of snapshots listed by `cmd snapshots --json extra...`.
    let count = |cmd: &mut Command, extra: &[&std::ffi::OsStr]| -> usize {
        let out = ok(
            run(cmd.args(["snapshots", "--json"]).args(extra)),
            "snapshots",
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(&mut with_config(&[]), &[]), 3);
    // BACKUPFS_CONFIG names the file as --config does.
    assert_eq!(count(bin().env("BACKUPFS_CONFIG", &config), &[]), 3);

    // prune: flags replace the file's policy; without flags the file's keep_last = 1 applies.
    ok(
        run(&mut with_config(&[
            "prune",
            "--account",
            "alice",
            "--keep-last",
            "2",
        ])),
        "prune --keep-last 2",
    );
    assert_eq!(count(&mut with_config(&[]), &[]), 2);
    ok(
        run(&mut with_config(&["prune", "--account", "alice"])),
        "prune from the config",
    );
    assert_eq!(count(&mut with_config(&[]), &[]), 1);

    // --repo overrides the file's repository.
    let other = t.join("other-repo");
    init_repo(&other);
    assert_eq!(
        count(
            &mut with_config(&[]),
            &["--repo".as_ref(), other.as_os_str()]
        ),
        0
    );
    assert_eq!(count(with_config(&[]).env("BACKUPFS_REPO", &other), &[]), 0);

    // mount: the mount point from the account's table.
    let socket_path = t.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let child = with_config(&["mount", "--account", "alice"])
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = Daemon(Some(child));
    let mut buf = [0u8; 64];
    socket
        .recv(&mut buf)
        .expect("READY=1 from the configured mount");
    assert!(is_mounted(&mnt));
    assert_serves(&mnt, &src);
    assert!(daemon.stop().success());

    // Errors name the file, the key and where it is; a missing required value is a usage error.
    let bad = t.join("bad.toml");
    std::fs::write(
        &bad,
        "repository = \"/srv/x\"\n[retention]\nkeep_dayly = 30\n",
    )
    .unwrap();
    let out = run(bin().arg("--config").arg(&bad).args(["snapshots"]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&*bad.to_string_lossy())
            && err.contains("keep_dayly")
            && err.contains("line 3"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    std::fs::write(&bad, "[retention]\nkeep_within = \"soon\"\n").unwrap();
    let out = run(bin().arg("--config").arg(&bad).args(["snapshots"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("keep_within"),
        "{}",
        text(&out.stderr)
    );
    let missing = t.join("missing.toml");
    let out = run(bin().arg("--config").arg(&missing).args(["snapshots"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&*missing.to_string_lossy()),
        "{}",
        text(&out.stderr)
    );
    let empty = t.join("empty.toml");
    std::fs::write(&empty, "# nothing\n").unwrap();
    for (args, needle) in [
        (&["snapshots"][..], "no repository"),
        (
            &["backup", "--account", "alice", "--repo", "/x"][..],
            "no SOURCE",
        ),
        (
            &["mount", "--account", "alice", "--repo", "/x"][..],
            "no MOUNTPOINT",
        ),
    ] {
        let out = run(bin().arg("--config").arg(&empty).args(args));
        refused(&out, 2, needle, &format!("{args:?}"));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Generated documentation and help texts.

#[test]
fn man_pages_and_completions_are_generated() {
    let t = TempDir::new("generate");
    let man = t.join("man");
    ok(
        run(bin().arg("generate").arg("man").arg(&man)),
        "generate man",
    );
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "backupfs-backup.1",
            "backupfs-check.1",
            "backupfs-copy.1",
            "backupfs-init.1",
            "backupfs-key-show.1",
            "backupfs-key.1",
            "backupfs-lag.1",
            "backupfs-mount.1",
            "backupfs-prune.1",
            "backupfs-repair-config.1",
            "backupfs-repair-index.1",
            "backupfs-repair.1",
            "backupfs-snapshots.1",
            "backupfs.1",
            "mount.fuse.backupfs.8",
        ]
    );
    for p in &pages {
        let roff = std::fs::read_to_string(man.join(p)).unwrap();
        assert!(roff.contains(".TH ") && roff.contains(".SH NAME"), "{p}");
    }
    let helper = std::fs::read_to_string(man.join("mount.fuse.backupfs.8")).unwrap();
    for needle in ["account=NAME", "allow_other", "EXIT STATUS", "fstab"] {
        assert!(
            helper.contains(needle),
            "mount.fuse.backupfs.8 lacks {needle}"
        );
    }
    // man renders them without complaint.
    if Command::new("man").arg("--version").output().is_ok() {
        for p in ["backupfs.1", "mount.fuse.backupfs.8"] {
            let out = ok(
                run(Command::new("man")
                    .arg("-l")
                    .arg(man.join(p))
                    .env("MANWIDTH", "100")),
                "man -l",
            );
            assert!(out.stderr.is_empty(), "{p}: {}", text(&out.stderr));
            assert!(text(&out.stdout).contains("SYNOPSIS"), "{p}");
        }
    }

    let comp = t.join("completions");
    ok(
        run(bin().arg("generate").arg("completions").arg(&comp)),
        "generate completions",
    );
    for f in ["backupfs.bash", "_backupfs", "backupfs.fish"] {
        let s = std::fs::read_to_string(comp.join(f)).unwrap();
        for sub in ["backup", "prune", "mount", "repo", "config", "keep-daily"] {
            assert!(s.contains(sub), "{f} lacks {sub}");
        }
        assert!(
            !s.contains("generate"),
            "{f} offers the internal generate command"
        );
    }
    ok(
        run(Command::new("bash")
            .arg("-n")
            .arg(comp.join("backupfs.bash"))),
        "bash -n",
    );
    // The bash completion works: it offers the subcommands.
    let script = format!(
        "source {}; COMP_WORDS=(backupfs pr); COMP_CWORD=1; COMP_LINE='backupfs pr'; COMP_POINT=11; \
         _backupfs backupfs pr backupfs; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        comp.join("backupfs.bash").display()
    );
    let out = ok(
        run(Command::new("bash").args(["-c", &script])),
        "bash completion",
    );
    assert_eq!(text(&out.stdout).trim(), "prune");
}

/// Compares `actual` with tests/snapshots/help/NAME.txt, or writes it there when UPDATE_SNAPSHOTS=1.
fn snapshot(name: &str, actual: &str, failures: &mut Vec<String>) {
    // clap pads some empty lines of long help; stored files have no trailing blanks.
    let actual: String = actual
        .lines()
        .map(|l| format!("{}\n", l.trim_end()))
        .collect();
    let actual = actual.as_str();
    let path = root()
        .join("tests/snapshots/help")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        failures.push(format!(
            "{}: differs from line {} on:\n  expected: {:?}\n  actual:   {:?}",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("(end)"),
            actual.lines().nth(first).unwrap_or("(end)")
        ));
    }
}

#[test]
fn help_texts_match_snapshots() {
    let help = |args: &[&str]| {
        let out = ok(
            run(bin().env_remove("BACKUPFS_CONFIG").args(args).arg("--help")),
            &format!("{args:?} --help"),
        );
        text(&out.stdout)
    };
    let mut failures = Vec::new();
    let top = help(&[]);
    snapshot("backupfs", &top, &mut failures);
    // Every subcommand the top-level help lists, so that a new one cannot go without its snapshot.
    let commands: Vec<String> = top
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 7, "{commands:?}");
    for c in &commands {
        snapshot(&format!("backupfs-{c}"), &help(&[c]), &mut failures);
    }
    snapshot(
        "backupfs-repair-index",
        &help(&["repair", "index"]),
        &mut failures,
    );
    snapshot("backupfs-key-show", &help(&["key", "show"]), &mut failures);
    let t = TempDir::new("helphelper");
    let out = ok(run(helper(&helper_link(&t)).arg("--help")), "helper --help");
    snapshot(HELPER, &text(&out.stdout), &mut failures);
    assert!(
        failures.is_empty(),
        "help texts changed (UPDATE_SNAPSHOTS=1 cargo test --test packaging help_texts rewrites them):\n{}",
        failures.join("\n")
    );
}
