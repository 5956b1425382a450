//! Parts of the `backupfs` binary that are not its argument definitions and dispatch (main.rs).

pub mod backup;
pub mod helper;
pub mod mount;
pub mod output;
