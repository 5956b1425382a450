//! Where log lines go. Normally stderr; a daemon that has detached from its caller's terminal switches to syslog
//! (`LOG_DAEMON`, ident `backupfs`, the event's level as the priority), which systemd's journal also collects.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

static SYSLOG: AtomicBool = AtomicBool::new(false);

/// The `tracing_subscriber` writer: stderr until `to_syslog` is called, syslog after.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

/// From now on, log lines go to syslog.
pub fn to_syslog() {
    // SAFETY: the ident is a static NUL-terminated string, as openlog requires (it keeps the pointer).
    unsafe { libc::openlog(c"backupfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    SYSLOG.store(true, Ordering::SeqCst);
}

pub enum Line {
    Stderr(std::io::Stderr),
    Syslog { priority: libc::c_int, buf: Vec<u8> },
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Line::Stderr(s) => s.write(b),
            Line::Syslog { buf, .. } => {
                buf.extend_from_slice(b);
                Ok(b.len())
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Line::Stderr(s) => s.flush(),
            Line::Syslog { .. } => Ok(()),
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if let Line::Syslog { priority, buf } = self {
            let text = String::from_utf8_lossy(buf);
            let text = text.trim_end().replace('\0', " ");
            if let Ok(c) = std::ffi::CString::new(text) {
                // SAFETY: both strings are NUL-terminated; the format consumes exactly one string argument.
                unsafe { libc::syslog(*priority, c"%s".as_ptr(), c.as_ptr()) };
            }
        }
    }
}

fn line(level: Level) -> Line {
    if !SYSLOG.load(Ordering::Relaxed) {
        return Line::Stderr(std::io::stderr());
    }
    let priority = match level {
        Level::ERROR => libc::LOG_ERR,
        Level::WARN => libc::LOG_WARNING,
        Level::INFO => libc::LOG_INFO,
        _ => libc::LOG_DEBUG,
    };
    Line::Syslog {
        priority,
        buf: Vec::new(),
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        line(Level::INFO)
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        line(*meta.level())
    }
}
