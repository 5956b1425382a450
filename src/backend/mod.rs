//! Where packs, manifests and the config live. A small interface so that an object store can replace the local
//! directory: every object is written once, whole, under its final name, and never modified.

pub mod crash;
pub(crate) mod local;

pub use local::LocalBackend;

use crate::format::{PackId, SnapshotId};
use std::path::PathBuf;

/// The immutable objects of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Object {
    Config,
    Pack(PackId),
    Manifest(SnapshotId),
}

impl Object {
    /// Path relative to the repository root; also the object key in a future object store.
    pub fn key(&self) -> String {
        match self {
            Object::Config => "config".into(),
            Object::Pack(id) => {
                let hex = id.to_hex();
                format!("packs/{}/{hex}.pack", &hex[..2])
            }
            Object::Manifest(id) => format!("snapshots/{}", id.to_hex()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{path}: not found")]
    NotFound { path: PathBuf },
    #[error("{path}: already exists")]
    AlreadyExists { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BackendError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound { path },
            std::io::ErrorKind::AlreadyExists => Self::AlreadyExists { path },
            _ => Self::Io { path, source },
        }
    }
}

pub trait Backend: Send + Sync {
    /// Fills `buf` from `offset` of the object; short objects are an error.
    fn read_at(&self, obj: Object, offset: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    fn read_all(&self, obj: Object) -> Result<Vec<u8>, BackendError>;
    fn size(&self, obj: Object) -> Result<u64, BackendError>;
    /// Makes `bytes` durable under the object's name, all or nothing. Fails with `AlreadyExists` if the name
    /// exists, so that two writers can never replace each other's objects.
    fn write_new(&self, obj: Object, bytes: &[u8]) -> Result<(), BackendError>;
    fn list_packs(&self) -> Result<Vec<PackId>, BackendError>;
    fn list_manifests(&self) -> Result<Vec<SnapshotId>, BackendError>;
    /// Deletes an object (prune only). The deletion is durable when this returns.
    fn remove(&self, obj: Object) -> Result<(), BackendError>;
    /// Removes what crashed writers left behind (temporary files no live process holds).
    fn clean_leftovers(&self) -> Result<usize, BackendError>;
}
