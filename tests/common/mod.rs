//! Shared test support: temporary directories, the fixture generator, the CLI, and mounts that always unmount.
#![allow(dead_code)]

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
        std::fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension("log");
        let child = bin()
            .arg("mount")
            .arg("--repo")
            .arg(repo)
            .args(["--account", account])
            .args(extra)
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

fn wait_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
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
