//! The `backupfs` binary's subcommands, one file each with its arguments and its `run` (main.rs parses and
//! dispatches), and what they share: the mount helper, the output of listings and reports.

pub mod backup;
pub mod check;
pub mod copy;
pub mod helper;
pub mod init;
pub mod key;
pub mod lag;
pub mod mount;
pub mod output;
pub mod prune;
