//! Background mounts (`backupfs mount --daemon`, `mount.fuse.backupfs`): the process forks while it still has a
//! single thread; the parent then only waits on a pipe, and exits 0 once the child writes that the mount is
//! ready (it has listed the mount's root through the kernel), or non-zero with the child's error message, or with
//! the child's exit status if it died without a word. So `mount` returns exactly when the mount is usable.
//!
//! The child becomes a session leader in `/` with stdin and stdout on /dev/null. Its stderr stays the caller's
//! until the mount is ready, so that start-up warnings reach whoever ran `mount`; then the log moves to the file
//! given (`log=`/`--log-file`), stays on stderr when that is systemd's journal (`$JOURNAL_STREAM`), or goes to
//! syslog, and stderr is closed for the caller (a caller reading it to its end is not kept waiting).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where the daemon's log goes once the mount is ready.
enum LogTarget {
    File(File),
    /// stderr is the journal: keep it.
    Journal,
    Syslog,
}

/// The child's end of the report to the waiting parent. Clones share it; the first report wins.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Mutex<Option<(File, LogTarget)>>>,
}

/// Forks. The parent never returns: it waits for the child's report and exits, 0 when the mount is ready and
/// `fail_code` otherwise (after printing `backupfs: error: ...`). The child returns the handle to report with.
///
/// Must be called before the process starts any thread (fork copies only the calling thread). `log_file` is
/// opened (appending) before forking, so that a bad path fails at once.
pub fn fork_and_wait(log_file: Option<&Path>, fail_code: i32) -> std::io::Result<Daemon> {
    let log = match log_file {
        Some(p) => LogTarget::File(
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o640)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)
                .map_err(|e| with_path(e, "log file", p))?,
        ),
        None if stderr_is_journal() => LogTarget::Journal,
        None => LogTarget::Syslog,
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (reader, writer) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single thread, so the child is a complete copy of the process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid > 0 {
        drop(writer);
        parent(reader, pid, fail_code);
    }
    drop(reader);
    // SAFETY: plain system calls on this process; /dev/null is opened and its descriptor owned below.
    unsafe {
        libc::setsid();
        let _ = libc::chdir(c"/".as_ptr());
    }
    let null = dev_null()?;
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    Ok(Daemon {
        inner: Arc::new(Mutex::new(Some((writer, log)))),
    })
}

impl Daemon {
    /// Tells the parent the mount is ready, then moves the log off the caller's stderr.
    pub fn ready(&self) {
        self.report("READY\n");
    }

    /// Reports `message` to the parent as the reason the mount failed (then moves the log, as `ready` does).
    /// Returns false if the parent is already gone (the mount was ready before): the caller should log the
    /// error instead.
    pub fn failed(&self, message: &str) -> bool {
        self.report(&format!("ERROR {message}\n"))
    }

    fn report(&self, report: &str) -> bool {
        let taken = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((mut pipe, log)) = taken else {
            return false;
        };
        let _ = pipe.write_all(report.as_bytes());
        drop(pipe);
        // The caller has its answer: nothing more may reach its stderr, which it may be reading to the end.
        let target: Option<OwnedFd> = match log {
            LogTarget::File(f) => Some(f.into()),
            LogTarget::Journal => None,
            LogTarget::Syslog => {
                crate::ops::log::to_syslog();
                dev_null().ok()
            }
        };
        if let Some(fd) = target {
            // SAFETY: dup2 onto stderr, which this process owns; `fd` itself is closed when dropped.
            unsafe { libc::dup2(fd.as_raw_fd(), 2) };
        }
        true
    }
}

fn parent(mut reader: File, pid: libc::pid_t, fail_code: i32) -> ! {
    let mut report = String::new();
    let _ = reader.read_to_string(&mut report);
    if report.starts_with("READY") {
        std::process::exit(0);
    }
    if let Some(message) = report.strip_prefix("ERROR ") {
        eprintln!("backupfs: error: {}", message.trim_end());
        std::process::exit(fail_code);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; status is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let how = if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status}")
    };
    eprintln!(
        "backupfs: error: the mount daemon (pid {pid}) ended before the mount was ready ({how})"
    );
    std::process::exit(fail_code);
}

fn dev_null() -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")?;
    Ok(f.into())
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a unit whose stderr is the journal (e.g. `mount` run for a
/// `.mount` unit); the log may then stay on stderr.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    // SAFETY: fd 2 is only inspected, through a borrowed File that is not closed (ManuallyDrop).
    let stderr = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(2) });
    stderr
        .metadata()
        .is_ok_and(|m| dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()))
}

fn with_path(e: std::io::Error, what: &str, p: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}
