#![doc = include_str!("SPEC.md")]
// A length, count or offset read from disk is never narrowed with `as`: decoders use checked conversions (or
// widen). The encoders that narrow an in-memory length to its field say why it fits where they do it.
#![deny(clippy::cast_possible_truncation)]

pub mod codec;
pub mod config;
pub mod ids;
pub mod links;
pub mod magic;
pub mod manifest;
#[cfg(test)]
pub(crate) mod mutation_tests;
pub mod pack;
pub mod pack_index;
pub mod sealed;
pub mod tree;
pub mod tree_index;

pub use ids::{BlobId, BlobKind, ChunkId, LinksId, PackId, PackIndexId, SnapshotId, TreeId};

/// A repository object whose bytes are not a valid encoding. Carries the object kind and byte offset; the layer
/// above adds the object's id or path.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{object}: truncated at byte {offset} ({needed} more bytes needed)")]
    Truncated {
        object: &'static str,
        offset: usize,
        needed: usize,
    },
    #[error("{object}: bad magic {found:02x?}")]
    BadMagic {
        object: &'static str,
        found: [u8; 8],
    },
    #[error(
        "{object}: format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedVersion {
        object: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{object}: {what} at byte {offset}")]
    Invalid {
        object: &'static str,
        offset: usize,
        what: String,
    },
    #[error("{object}: checksum mismatch")]
    Checksum { object: &'static str },
}
