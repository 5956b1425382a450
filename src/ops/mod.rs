//! Operations: what running backupfs as a system service needs beyond the filesystem itself.
//!
//! - `config`: the TOML configuration file (`/etc/backupfs/config.toml`) that supplies the repository, each
//!   account's source and mount point, mount settings and the retention policy, so that units and crontabs carry
//!   no long command lines. Command-line flags and environment variables override it.
//! - `daemon`: `mount --daemon` and the `mount.fuse.backupfs` helper: fork before any thread exists, and let the
//!   parent return only when the child reports the mount usable (or exit non-zero with the child's error).
//! - `notify`: the systemd readiness notification (`READY=1` on `$NOTIFY_SOCKET`), without a library.
//! - `log`: a log writer that can move from stderr to syslog once a daemon has detached from its terminal.

pub mod config;
pub mod daemon;
pub mod log;
pub mod notify;
