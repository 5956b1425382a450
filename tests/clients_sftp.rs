//! The mount through OpenSSH, as a hosting customer uses it: `sftp` into their home, browse `admin/backup`,
//! download from a snapshot, fail to write into it; `ssh` to restore a file with `cp -a`; and a directory of
//! 100,000 entries listed over SFTP without the daemon's memory growing with it.
//!
//! Each test starts its own sshd on 127.0.0.1 (a free port, its own host key and authorized key) and its own
//! user; both are gone when the test ends, however it ends.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SSH_LIMIT: Duration = Duration::from_secs(300);

/// A test-owned OpenSSH server letting one user in with a generated key; SIGTERMed and reaped when dropped.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    user: String,
}

impl Sshd {
    fn start(user: &TestUser, dir: &Path) -> Self {
        ensure_packages(&["openssh-server", "openssh-client"]);
        // sshd's fixed privilege-separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        fs::set_permissions("/run/sshd", fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir).unwrap();
        for key in ["host_key", "user_key"] {
            let _ = fs::remove_file(dir.join(key));
            let ok = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join(key))
                .status()
                .unwrap();
            assert!(ok.success(), "ssh-keygen");
        }
        fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).unwrap();
        // useradd leaves the password field locked ("!"), which sshd without PAM takes as a locked account.
        let ok = Command::new("usermod")
            .args(["-p", "*", &user.name])
            .status()
            .unwrap();
        assert!(ok.success(), "usermod");
        let d = dir.display();
        fs::write(
            dir.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AllowUsers {}\nSubsystem sftp internal-sftp\n",
                user.name
            ),
        )
        .unwrap();
        // The port was free a moment ago; if someone took it meanwhile, sshd exits and we try another.
        for _ in 0..5 {
            let port = free_port();
            let log = dir.join("sshd.log");
            let child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(dir.join("sshd_config"))
                .args(["-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn sshd");
            let mut sshd = Self {
                child,
                port,
                dir: dir.to_path_buf(),
                user: user.name.clone(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if sshd.child.try_wait().unwrap().is_some() {
                    break;
                }
                if fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("Server listening")
                {
                    return sshd;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "sshd on port {port} did not start:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            drop(sshd);
        }
        panic!("sshd did not start");
    }

    fn client_options(&self, c: &mut Command) {
        c.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-i"])
        .arg(self.dir.join("user_key"))
        .stdin(Stdio::null());
    }

    /// `sftp -b` with these commands, one per line; sftp stops at the first that fails and exits non-zero.
    fn sftp_command(&self, commands: &str) -> Command {
        let batch = self.dir.join("batch");
        fs::write(&batch, commands).unwrap();
        let mut c = Command::new("sftp");
        c.arg("-b").arg(&batch).args(["-P", &self.port.to_string()]);
        self.client_options(&mut c);
        c.arg(format!("{}@127.0.0.1", self.user));
        c
    }

    fn sftp(&self, commands: &str) -> Output {
        output_within(&mut self.sftp_command(commands), SSH_LIMIT)
    }

    fn sftp_ok(&self, commands: &str) -> String {
        let out = self.sftp(commands);
        assert!(
            out.status.success(),
            "sftp batch failed: {}\n{commands}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The names an `ls -1 DIR` batch prints.
    fn sftp_ls(&self, dir: &str) -> Vec<String> {
        listed_names(&self.sftp_ok(&format!("ls -1 {dir}\n")))
    }

    fn ssh(&self, command: &str) -> Output {
        let mut c = Command::new("ssh");
        c.args(["-p", &self.port.to_string()]);
        self.client_options(&mut c);
        output_within(
            c.arg(format!("{}@127.0.0.1", self.user)).arg(command),
            SSH_LIMIT,
        )
    }
}

/// sftp echoes each command as `sftp> ...`; the names follow, prefixed with the listed directory.
fn listed_names(out: &str) -> Vec<String> {
    let mut names: Vec<String> = out
        .lines()
        .filter(|l| !l.starts_with("sftp>"))
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The processes whose parent is `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so count from the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The listener leaves the sessions it forked running; end them too (a session can outlive its client
        // while it waits on the mount).
        let mut sessions = Vec::new();
        let mut stack = vec![self.child.id()];
        while let Some(p) = stack.pop() {
            for c in children(p) {
                sessions.push(c);
                stack.push(c);
            }
        }
        for pid in std::iter::once(self.child.id()).chain(sessions) {
            // SAFETY: signalling the sshd this guard started and the session processes it forked.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

/// The usual place of a user's backups: ~/admin/backup, the mount point owned by the user.
fn mount_in_home(repo: &Path, account: &str, user: &TestUser, extra: &[&str]) -> Mount {
    let admin = user.home.join("admin");
    let mountpoint = admin.join("backup");
    fs::create_dir_all(&mountpoint).unwrap();
    for dir in [&admin, &mountpoint] {
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
    }
    let args: Vec<&str> = ["--allow-other"].iter().chain(extra).copied().collect();
    Mount::with(repo, account, &mountpoint, &args, &[])
}

/// The fixture tree as a user's home backup: everything owned by the user (symlinks themselves, not targets).
fn users_tree(src: &Path, seed: &str, user: &TestUser) {
    gen_tree(src, seed);
    let ok = Command::new("chown")
        .args(["-R", "-h", &format!("{}:{}", user.uid, user.gid)])
        .arg(src)
        .status()
        .unwrap();
    assert!(ok.success(), "chown -R");
}

#[test]
fn sftp_browses_the_snapshots_downloads_files_and_cannot_write() {
    let user = TestUser::new();
    let t = TempDir::new("sftp");
    let src = t.join("src");
    users_tree(&src, "21", &user);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, &user.name, &src, Some("2026-11-19T03:00:00Z"));
    mutate(&src, "21", 1);
    backup(&repo, &user.name, &src, Some("2026-11-20T03:00:00Z"));
    let m = mount_in_home(&repo, &user.name, &user, &[]);
    let sshd = Sshd::start(&user, &t.join("sshd"));

    assert_eq!(
        sshd.sftp_ls("admin/backup"),
        ["2026-11-19", "2026-11-20", "latest"]
    );
    let mut top: Vec<String> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(sshd.sftp_ls("admin/backup/latest"), top, "latest over sftp");

    // Downloads through `latest`, from nested directories, of text, compressible and random data.
    let plugin_file = fs::read_dir(src.join("www/wp-content/plugins"))
        .unwrap()
        .map(|e| e.unwrap().path().join("assets/js/vendor.min.js"))
        .next()
        .unwrap();
    let mail = fs::read_dir(src.join("mail/Maildir/cur"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let wanted: Vec<PathBuf> = [
        src.join("www/page.php"),
        src.join("www/index.php"),
        src.join("db/dump.sql"),
        src.join("bin/blob.bin"),
        plugin_file,
        mail,
    ]
    .into_iter()
    .map(|p| p.strip_prefix(&src).unwrap().to_path_buf())
    .collect();
    let downloads = t.join("downloads");
    fs::create_dir(&downloads).unwrap();
    let mut batch = String::from("cd admin/backup/latest\n");
    for (i, rel) in wanted.iter().enumerate() {
        batch += &format!(
            "get \"{}\" \"{}/{i}\"\n",
            rel.display(),
            downloads.display()
        );
    }
    sshd.sftp_ok(&batch);
    for (i, rel) in wanted.iter().enumerate() {
        let got = fs::read(downloads.join(i.to_string())).unwrap();
        assert!(
            got == fs::read(src.join(rel)).unwrap(),
            "{} differs from the source",
            rel.display()
        );
    }
    // And from a dated directory, the day-0 version.
    let day0 = t.join("day0");
    gen_tree(&day0, "21");
    sshd.sftp_ok(&format!(
        "get admin/backup/2026-11-19/db/dump.sql {}/day0.sql\n",
        downloads.display()
    ));
    assert!(
        fs::read(downloads.join("day0.sql")).unwrap()
            == fs::read(day0.join("db/dump.sql")).unwrap()
    );

    // Writes are refused, wherever they are tried, and leave nothing behind.
    let local = downloads.join("0");
    for (what, batch, path) in [
        (
            "put into a snapshot",
            format!("put {} admin/backup/latest/www/new.php\n", local.display()),
            "latest/www/new.php",
        ),
        (
            "put over a file",
            format!("put {} admin/backup/latest/www/page.php\n", local.display()),
            "",
        ),
        (
            "mkdir in a snapshot",
            "mkdir admin/backup/latest/www/newdir\n".into(),
            "latest/www/newdir",
        ),
        (
            "mkdir at the root",
            "mkdir admin/backup/2099-01-01\n".into(),
            "2099-01-01",
        ),
        (
            "rm in a snapshot",
            "rm admin/backup/latest/www/index.php\n".into(),
            "",
        ),
        (
            "rename in a snapshot",
            "rename admin/backup/latest/www/index.php admin/backup/latest/x.php\n".into(),
            "latest/x.php",
        ),
    ] {
        let out = sshd.sftp(&batch);
        assert!(
            !out.status.success(),
            "{what} succeeded over sftp: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        if !path.is_empty() {
            assert!(!m.path.join(path).exists(), "{what} left {path}");
        }
    }
    assert!(
        fs::read(m.path.join("latest/www/page.php")).unwrap()
            == fs::read(src.join("www/page.php")).unwrap()
    );
    assert!(m.path.join("latest/www/index.php").exists());
}

#[test]
fn ssh_cp_a_restores_a_file_with_its_mode_and_mtime() {
    let user = TestUser::new();
    let t = TempDir::new("ssh-cp");
    let src = t.join("src");
    users_tree(&src, "22", &user);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, &user.name, &src, Some("2026-11-20T03:00:00Z"));
    let _m = mount_in_home(&repo, &user.name, &user, &[]);
    let sshd = Sshd::start(&user, &t.join("sshd"));

    // The customer's live site, where the page has since been damaged.
    let www = user.home.join("www");
    fs::create_dir(&www).unwrap();
    fs::write(www.join("page.php"), "defaced").unwrap();
    Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid, user.gid))
        .arg(&www)
        .status()
        .unwrap();

    let out = sshd.ssh("cp -a admin/backup/latest/www/page.php www/page.php");
    assert!(
        out.status.success(),
        "ssh cp -a: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (want, got) = (src.join("www/page.php"), www.join("page.php"));
    let (w, g) = (fs::metadata(&want).unwrap(), fs::metadata(&got).unwrap());
    assert!(
        fs::read(&got).unwrap() == fs::read(&want).unwrap(),
        "restored content"
    );
    assert_eq!(g.mode(), w.mode(), "restored mode");
    assert_eq!(
        (g.mtime(), g.mtime_nsec()),
        (w.mtime(), w.mtime_nsec()),
        "restored mtime"
    );
    assert_eq!((g.uid(), g.gid()), (user.uid, user.gid), "restored owner");
}

/// `n` empty files named f0000000... in `dir`, quickly.
fn many_files(dir: &Path, n: usize) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        fs::File::create(dir.join(format!("f{i:07}"))).unwrap();
    }
}

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after "(comm)".
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// `ls -1 DIR` over sftp; if it does not finish within LISTING_LIMIT, kills it and fails saying what the daemon
/// was doing meanwhile.
fn list_or_explain(sshd: &Sshd, dir: &str, daemon: u32) -> Vec<String> {
    let out_path = sshd.dir.join("listing.out");
    let mut child = sshd
        .sftp_command(&format!("ls -1 {dir}\n"))
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (started, cpu_before) = (Instant::now(), cpu_seconds(daemon));
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "sftp ls {dir}: {status}");
            return listed_names(&fs::read_to_string(&out_path).unwrap());
        }
        if started.elapsed() > LISTING_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            let listed = fs::read_to_string(&out_path)
                .unwrap_or_default()
                .lines()
                .count();
            panic!(
                "listing {dir} over sftp did not finish within {LISTING_LIMIT:?} ({listed} lines printed); \
                 meanwhile the daemon used {:.0} s of CPU, VmHWM {} kB",
                cpu_seconds(daemon) - cpu_before,
                proc_status_kb(daemon, "VmHWM")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const TREE_CACHE_MIB: u64 = 4;

/// A listing of 100,000 names takes 4 to 17 s on the 2-core dev machine, loaded or not.
const LISTING_LIMIT: Duration = Duration::from_secs(180);

#[test]
fn sftp_lists_a_directory_of_100000_entries_in_memory_independent_of_its_size() {
    let user = TestUser::new();
    let t = TempDir::new("sftp-big");
    let src = t.join("src");
    many_files(&src.join("d10k"), 10_000);
    many_files(&src.join("d100k"), 100_000);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, &user.name, &src, Some("2026-11-20T03:00:00Z"));
    // A small tree cache, so that a daemon holding a whole directory (or more pages than its budget) shows.
    let m = mount_in_home(
        &repo,
        &user.name,
        &user,
        &["--tree-cache", &TREE_CACHE_MIB.to_string()],
    );
    let sshd = Sshd::start(&user, &t.join("sshd"));

    let pid = m.pid();
    let rss_start = proc_status_kb(pid, "VmRSS");
    let mut peaks = Vec::new();
    // d100k twice: a second listing must not add to the first (no per-listing or per-lookup state piles up).
    for (dir, n) in [("d10k", 10_000), ("d100k", 100_000), ("d100k", 100_000)] {
        let started = Instant::now();
        let names = list_or_explain(&sshd, &format!("admin/backup/latest/{dir}"), pid);
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(names.len(), n, "entries listed in {dir}");
        assert_eq!(names.first().map(String::as_str), Some("f0000000"));
        assert_eq!(names.last(), Some(&format!("f{:07}", n - 1)));
        let (rss, hwm) = (proc_status_kb(pid, "VmRSS"), proc_status_kb(pid, "VmHWM"));
        eprintln!(
            "listing {n} entries over sftp: {secs:.1} s; daemon VmRSS {rss} kB, VmHWM {hwm} kB"
        );
        peaks.push(hwm);
    }
    // Large directories are paged (format::tree_index) and pages pass through the tree cache: listing ten
    // times more entries may fill the cache, but adds nothing beyond it. A whole decoded directory costs ~300
    // bytes an entry, 26 MB more for 100,000 than for 10,000.
    let (peak10k, peak100k, again) = (peaks[0], peaks[1], peaks[2]);
    eprintln!("daemon VmRSS at start {rss_start} kB; peak after 10k {peak10k} kB, after 100k {peak100k} kB, again {again} kB");
    // Beyond the cache: allocator fragmentation and buffers sized once (measured: 100,000 entries +6 MB over
    // 10,000 with a 4 MiB cache, 300,000 entries +0.6 MB more).
    let bound = (TREE_CACHE_MIB + 6) * 1024;
    assert!(
        peak100k.saturating_sub(peak10k) <= bound,
        "listing 100,000 entries grew VmHWM by more than {bound} kB over listing 10,000: {peak10k} kB, then {peak100k} kB"
    );
    assert!(
        again <= peak100k + 4 * 1024,
        "a second listing grew the daemon: {peak100k} kB then {again} kB"
    );
}
