//! Shared test support: temporary directories, the fixture generator, the CLI, and mounts that always unmount.
#![allow(dead_code)]

pub mod databases;
pub mod fault_proxy;
pub mod garage;
pub mod s3repo;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A directory removed (after unmounting anything below it) when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("backupfs-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_backupfs"));
    c.env_remove("BACKUPFS_REPO")
        .env("TZ", "UTC")
        .stdin(Stdio::null());
    c
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn gen_tree(out: &Path, seed: &str) {
    run_ok(
        Command::new("python3")
            .arg(fixtures().join("gen_tree.py"))
            .args(["create"])
            .arg(out)
            .args(["--seed", seed, "--scale", "tiny"]),
    );
}

pub fn mutate(out: &Path, seed: &str, day: u32) {
    run_ok(
        Command::new("python3")
            .arg(fixtures().join("gen_tree.py"))
            .arg("mutate")
            .arg(out)
            .args(["--seed", seed, "--scale", "tiny", "--day", &day.to_string()]),
    );
}

/// The fixture generator's deterministic description of a tree (types, modes, owners, times, contents, xattrs,
/// hardlink groups), one line per entry.
pub fn describe(tree: &Path) -> String {
    String::from_utf8(
        run_ok(
            Command::new("python3")
                .arg(fixtures().join("gen_tree.py"))
                .arg("describe")
                .arg(tree),
        )
        .stdout,
    )
    .unwrap()
}

/// Asserts two descriptions are equal, printing the first differing lines if not.
pub fn assert_same_tree(expected: &str, actual: &str) {
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("-{a}\n+{b}"))
            .collect();
        panic!(
            "trees differ ({} vs {} lines):\n{}",
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// The start most tests share: a gen_tree tree from `seed` at `t/src`, backed up once as `account` (at `time`)
/// into a new repository at `t/repo`. Returns (source, repository).
pub fn backed_up_tree(
    t: &TempDir,
    seed: &str,
    account: &str,
    time: Option<&str>,
) -> (PathBuf, PathBuf) {
    let src = t.join("src");
    gen_tree(&src, seed);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, account, &src, time);
    (src, repo)
}

pub fn init_repo(repo: &Path) {
    run_ok(bin().arg("init").arg(repo));
}

/// Runs a backup and returns its JSON summary.
pub fn backup(repo: &Path, account: &str, source: &Path, time: Option<&str>) -> serde_json::Value {
    let mut cmd = bin();
    cmd.arg("backup")
        .arg("--repo")
        .arg(repo)
        .args(["--account", account, "--json"]);
    if let Some(t) = time {
        cmd.args(["--time", t]);
    }
    let out = run_ok(cmd.arg(source));
    serde_json::from_slice(&out.stdout).expect("backup --json prints JSON")
}

/// `backupfs --config CONFIG backup --account ACCOUNT --json EXTRA...`: its summary and exit code, which must be
/// 0 or 3 (warnings); anything else fails the test with the backup's stderr.
pub fn backup_with_config(
    config: &Path,
    account: &str,
    extra: &[&str],
) -> (serde_json::Value, i32) {
    let out = bin()
        .arg("--config")
        .arg(config)
        .args(["backup", "--account", account, "--json"])
        .args(extra)
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "backup exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), code)
}

pub fn is_mounted(mountpoint: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let target = mountpoint.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&*target))
}

/// A running `backupfs mount`; unmounts and reaps the daemon when dropped, whatever the test did.
pub struct Mount {
    pub path: PathBuf,
    /// The daemon's stderr (its log).
    pub log: PathBuf,
    child: Option<Child>,
}

impl Mount {
    pub fn new(repo: &Path, account: &str, mountpoint: &Path) -> Self {
        Self::with(repo, account, mountpoint, &[], &[])
    }

    pub fn with(
        repo: &Path,
        account: &str,
        mountpoint: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut args = vec!["--account", account];
        args.extend_from_slice(extra);
        Self::spawn(repo, &args, mountpoint, env)
    }

    /// `backupfs mount --repo REPO ARGS MOUNTPOINT`, waited for until the mount lists.
    fn spawn(repo: &Path, args: &[&str], mountpoint: &Path, env: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension("log");
        let child = bin()
            .arg("mount")
            .arg("--repo")
            .arg(repo)
            .args(args)
            .arg(mountpoint)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn backupfs mount");
        let mut m = Self {
            path: mountpoint.to_path_buf(),
            log,
            child: Some(child),
        };
        m.wait_ready();
        m
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("backupfs mount exited early: {status}\n{log}");
            }
            if is_mounted(&self.path) && std::fs::read_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mount at {} did not come up", self.path.display());
    }

    /// The directory `latest` points to in `dir` (the mount root, or an account's directory): the fixture
    /// describer does not follow the symlink itself.
    pub fn latest_in(&self, dir: &str) -> PathBuf {
        let listing = self.path.join(dir);
        listing.join(std::fs::read_link(listing.join("latest")).unwrap())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Stops the daemon with SIGTERM, as systemd would, and waits for a clean exit and the mount to be gone.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("mount still running");
        // SAFETY: signalling the child this guard spawned.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        assert!(!is_mounted(&self.path), "still mounted after SIGTERM");
        status
    }
}

/// Waits for `child` up to `limit`, then kills it.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the child this guard spawned.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            wait_timeout(&mut child, Duration::from_secs(10));
        }
        if is_mounted(&self.path) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Every path below `root` (not following symlinks) with its (st_ino, st_nlink), sorted.
pub fn inode_map(root: &Path) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.push((
                p.strip_prefix(root).unwrap().to_path_buf(),
                m.ino(),
                m.nlink(),
            ));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------------------------
// Real clients (tests/clients_*.rs): packages, unprivileged users, mounts of every account, daemon memory.

/// Installs the Debian packages of `packages` that are missing (servers and clients the client tests drive).
/// Serialised within a test binary; apt's own lock (waited for) serialises it against anyone else.
pub fn ensure_packages(packages: &[&str]) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let installed = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    };
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return;
    }
    eprintln!("installing {missing:?}");
    run_ok(Command::new("apt-get").args(["-qq", "-o", "DPkg::Lock::Timeout=600", "update"]));
    run_ok(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "-y",
                "-qq",
                "-o",
                "DPkg::Lock::Timeout=600",
                "install",
                "--no-install-recommends",
            ])
            .args(&missing),
    );
}

/// A real unprivileged user with a home directory, created for one test and removed (`userdel -r`) when
/// dropped. Declare it before any mount below its home, so that the mount is dropped (unmounted) first.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl TestUser {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        // Unique across concurrent tests and test binaries; well under useradd's 32 characters.
        let name = format!(
            "bfst{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("userdel").args(["-r", "-f", &name]).output();
        run_ok(Command::new("useradd").args(["-m", "-U", "-s", "/bin/sh", &name]));
        let user = Self {
            uid: id_of(&name, "-u"),
            gid: id_of(&name, "-g"),
            home: PathBuf::from("/home").join(&name),
            name,
        };
        // Debian's useradd makes 0755 homes; said here so that no test depends on a site's HOME_MODE.
        std::fs::set_permissions(
            &user.home,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        user
    }

    /// `program` run as this user (real and effective ids, the user's groups), with the user's HOME, from `/`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            &self.uid.to_string(),
            "--regid",
            &self.gid.to_string(),
            "--init-groups",
        ])
        .arg(program)
        .env("HOME", &self.home)
        .env("USER", &self.name)
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(Stdio::null());
        c
    }

    /// Runs `program args` as this user and returns its output, whatever its status.
    pub fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("spawn setpriv")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Never let `userdel -r` walk into a mount that is still there (it would only fail, but say so).
        let home = self.home.to_string_lossy().into_owned();
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let below = format!("{home}/");
        let busy = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| m == home || m.starts_with(&below));
        let args: &[&str] = if busy { &["-f"] } else { &["-r", "-f"] };
        let out = Command::new("userdel").args(args).arg(&self.name).output();
        if busy {
            eprintln!(
                "user {}: home kept, something is still mounted below it",
                self.name
            );
        }
        if let Ok(o) = out {
            let err = String::from_utf8_lossy(&o.stderr);
            if !o.status.success() && !err.contains("mail spool") {
                eprintln!("userdel {}: {err}", self.name);
            }
        }
    }
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = run_ok(Command::new("id").args([flag, user]));
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// `backupfs mount` with exactly these arguments before the mount point (`--repo` is added; no `--account` unless
/// `args` has one), guarded like `Mount::new`.
pub fn mount_args(repo: &Path, args: &[&str], mountpoint: &Path) -> Mount {
    Mount::spawn(repo, args, mountpoint, &[])
}

/// A field of /proc/PID/status in kB (VmRSS, VmHWM, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for servers the tests start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `cond` holds, or panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `cmd` to completion like `Command::output`, but kills it and panics if it takes longer than `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let dir = TempDir::new("output");
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = cmd
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let started = Instant::now();
    let status = wait_timeout(&mut child, limit);
    assert!(
        started.elapsed() < limit,
        "{cmd:?} did not finish within {limit:?}: killed"
    );
    Output {
        status,
        stdout: std::fs::read(&out).unwrap(),
        stderr: std::fs::read(&err).unwrap(),
    }
}

/// Incompressible bytes (xorshift), different for every seed.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Starts `cmd` (output discarded) and SIGKILLs it after `delay` (it may have finished by then).
pub fn run_and_kill(cmd: &mut Command, delay: Duration) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

/// `cp -a FROM TO`, as a user restores (or a test copies a repository); fails the test on any error.
pub fn cp_a(from: &Path, to: &Path) -> PathBuf {
    let out = output_within(
        Command::new("cp").arg("-a").arg(from).arg(to),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    to.to_path_buf()
}

/// Every pack file of a repository, largest first (a small tree's data pack comes first, its metadata pack
/// last).
pub fn packs_by_size(repo: &Path) -> Vec<PathBuf> {
    let mut packs = Vec::new();
    for sub in std::fs::read_dir(repo.join("packs")).unwrap() {
        for p in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            packs.push(p.unwrap().path());
        }
    }
    packs.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    packs
}

/// Asserts that `check --read-data` finds no damage.
pub fn check_clean(repo: &Path) {
    let out = bin()
        .arg("check")
        .arg("--repo")
        .arg(repo)
        .arg("--read-data")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "check found damage:\n{stdout}{stderr}"
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// A tmpfs of `size` (mount's syntax: 16m) at `at`, created if missing.
    pub fn new(at: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs at {}", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
