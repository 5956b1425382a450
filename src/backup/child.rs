//! Programs a backup runs for an account (database dumps, SQLite's online backup): as the account's own user,
//! in a process group of their own, with a clean environment, a deadline, and the end of their stderr kept for
//! the note a failure leaves in the snapshot.
//!
//! Running as the account is the isolation: the database server's own authentication (PostgreSQL peer,
//! MariaDB unix_socket) then decides what the program may read, exactly as it does for the account's shell.
//! Nothing secret is passed: no password on a command line or in the environment.

use std::ffi::{CStr, CString, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// How much of a program's stderr is kept: enough for the server's error, short enough for a note.
const STDERR_TAIL: usize = 2048;

/// The OS user a program runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl RunAs {
    /// The user named `name` in the password database (NSS, so LDAP users too).
    pub fn by_name(name: &str) -> io::Result<RunAs> {
        let c = CString::new(name).map_err(|_| io::Error::other("user name holds a NUL byte"))?;
        lookup(|pwd, buf, len, result| {
            // SAFETY: every pointer is valid for the call: `c` is NUL-terminated, `pwd` and `result` point to
            // live locals of `lookup`, and `buf` is valid for `len` bytes.
            unsafe { libc::getpwnam_r(c.as_ptr(), pwd, buf, len, result) }
        })?
        .ok_or_else(|| io::Error::other(format!("no user named {name:?}")))
    }

    /// The user with id `uid`.
    pub fn by_uid(uid: u32) -> io::Result<RunAs> {
        lookup(|pwd, buf, len, result| {
            // SAFETY: as in `by_name`.
            unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) }
        })?
        .ok_or_else(|| io::Error::other(format!("no user with id {uid}")))
    }
}

/// Runs a `getpw*_r` lookup with a buffer that grows until the entry fits.
fn lookup(
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
) -> io::Result<Option<RunAs>> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: `passwd` is a plain C struct for which all-zero bytes are a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if result.is_null() {
            return Ok(None);
        }
        // SAFETY: on success `pw_name` and `pw_dir` point to NUL-terminated strings inside `buf`, alive here.
        let (name, dir) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
        return Ok(Some(RunAs {
            name: name.to_string_lossy().into_owned(),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: PathBuf::from(OsString::from_vec(dir.to_bytes().to_vec())),
        }));
    }
}

/// A program started for an account; its stdout is read by the caller.
pub struct Running {
    child: Child,
    pub stdout: Option<ChildStdout>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    stop_watchdog: Option<mpsc::Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
    timed_out: Arc<AtomicBool>,
    finished: bool,
}

/// How a program ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Killed by the deadline.
    pub timed_out: bool,
    /// The last bytes it wrote to stderr, as text.
    pub stderr_tail: String,
}

impl Finished {
    /// Exit code 0, no signal, no deadline.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// "exit status 2", "killed by signal 9", "timed out after ... (process group killed)".
    pub fn describe(&self, deadline: Duration) -> String {
        if self.timed_out {
            format!(
                "timed out after {} s (process group killed)",
                deadline.as_secs()
            )
        } else if let Some(code) = self.status.code() {
            format!("exit status {code}")
        } else if let Some(sig) = self.status.signal() {
            format!("killed by signal {sig}")
        } else {
            format!("{}", self.status)
        }
    }
}

/// Starts `program args` as `user`, from `/`, with only PATH, HOME, USER, LOGNAME and LC_ALL set, stdin closed,
/// in a new process group that is killed whole `deadline` after the start.
pub fn spawn(
    program: &str,
    args: &[OsString],
    user: &RunAs,
    deadline: Duration,
) -> io::Result<Running> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &user.home)
        .env("USER", &user.name)
        .env("LOGNAME", &user.name)
        .env("LC_ALL", "C.UTF-8")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // std drops the supplementary groups (setgroups(0)) when it changes the user as root: the program has the
    // account's uid and primary group only.
    if user.uid != current_uid() {
        cmd.uid(user.uid).gid(user.gid);
    }
    // The program runs as the account, which may inspect its own processes: it must not inherit a descriptor
    // of backupfs's (a repository file, or one backupfs itself inherited without close-on-exec). And it must not
    // outlive a backup killed with SIGKILL: a dump waiting on a lock would otherwise hold its snapshot (and its
    // locks) until the lock came free.
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and makes only async-signal-safe system
    // calls. Marking descriptors close-on-exec (not closing them) leaves std's own exec-error pipe working.
    // std changes the user before this runs, and a change of credentials would reset the death signal.
    unsafe {
        cmd.pre_exec(move || {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent
            {
                return Err(io::Error::other(
                    "backupfs ended before the program started",
                ));
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting {program}: {e}")))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut tail = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            tail
        })
    });
    let timed_out = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = mpsc::channel::<()>();
    let pgid = child.id() as libc::pid_t;
    let flag = timed_out.clone();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(deadline) {
            flag.store(true, Ordering::SeqCst);
            kill_group(pgid);
        }
    });
    Ok(Running {
        child,
        stdout,
        stderr,
        stop_watchdog: Some(stop),
        watchdog: Some(watchdog),
        timed_out,
        finished: false,
    })
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: killpg only sends a signal; the group is the child's own (process_group(0) made it its leader),
    // and the child is not reaped before the watchdog is stopped, so the id cannot have been reused.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

impl Running {
    /// Waits for the program (its stdout should have been read to the end, or dropped), then stops the
    /// watchdog and collects the end of stderr.
    pub fn finish(mut self) -> io::Result<Finished> {
        self.stdout = None;
        // Wait for the exit without reaping: the watchdog may still signal the group until it is stopped, and
        // an unreaped process keeps its id, so that signal can reach nothing else.
        wait_exited(self.child.id())?;
        self.stop_watchdog_thread();
        let status = self.child.wait()?;
        self.finished = true;
        let tail = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let start = tail.len().saturating_sub(STDERR_TAIL);
        Ok(Finished {
            status,
            timed_out: self.timed_out.load(Ordering::SeqCst),
            stderr_tail: String::from_utf8_lossy(&tail[start..]).into_owned(),
        })
    }

    /// Ends the program now (the caller gives up on it: the backup itself failed).
    pub fn abort(mut self) {
        self.stop_watchdog_thread();
        kill_group(self.child.id() as libc::pid_t);
        self.stdout = None;
        let _ = self.child.wait();
        self.finished = true;
    }

    /// Dropping the sender wakes the watchdog, which then exits without killing anything.
    fn stop_watchdog_thread(&mut self) {
        self.stop_watchdog = None;
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

/// Blocks until process `pid` (a child) has exited, leaving it to be reaped.
fn wait_exited(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is a plain C struct; all-zero bytes are a valid value for waitid to overwrite.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a live local; WNOWAIT leaves the child waitable for `Child::wait`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.stop_watchdog_thread();
            kill_group(self.child.id() as libc::pid_t);
            let _ = self.child.wait();
        }
    }
}
