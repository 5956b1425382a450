//! The fuzz targets' view of backupfs: only the pure decoders of `src/format/`, mounted from the main crate's
//! sources rather than depending on the crate (which links RocksDB). The module is mounted at the crate root
//! under its own name, so its `super::` and `crate::format::` paths resolve as they do in backupfs; its
//! `#[cfg(test)]` modules are not compiled here.

#[path = "../../src/format/mod.rs"]
pub mod format;
