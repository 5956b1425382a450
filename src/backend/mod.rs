//! Where packs, manifests and the config live: a local directory or an S3 bucket, behind one small interface.
//! Every object is written once, whole, under its final name, and never modified. `open` picks the backend from
//! the repository's location; nothing above this module knows which one it talks to.

pub mod crash;
pub(crate) mod local;
pub mod location;
pub mod s3;

pub use local::LocalBackend;
pub use location::{Location, LocationError};
pub use s3::{S3Backend, S3Settings};

use crate::format::{PackId, PackIndexId, SnapshotId};
use std::path::PathBuf;

/// The immutable objects of a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Object {
    Config,
    Pack(PackId),
    Manifest(SnapshotId),
    /// A writer's lease on committing (see `repo::lease`): random name, tiny, deleted when released.
    Lease([u8; 16]),
    /// The mark that a prune found this pack unreferenced, dated by the store (see `prune::shared`).
    Condemned(PackId),
    /// Copies of some packs' trailers (`format::pack_index`), named by content.
    PackIndex(PackIndexId),
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
            Object::Lease(name) => format!("leases/{}", lease_hex(name)),
            Object::Condemned(id) => format!("condemned/{}", id.to_hex()),
            Object::PackIndex(id) => format!("indexes/{}", id.to_hex()),
        }
    }
}

pub fn lease_hex(name: &[u8; 16]) -> String {
    name.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kinds of objects that are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Packs,
    Snapshots,
    Leases,
    Condemned,
    Indexes,
}

impl Dir {
    pub fn name(self) -> &'static str {
        match self {
            Dir::Packs => "packs",
            Dir::Snapshots => "snapshots",
            Dir::Leases => "leases",
            Dir::Condemned => "condemned",
            Dir::Indexes => "indexes",
        }
    }
}

/// One listed object: its name below the listed directory (`ab/ab...pack`, a snapshot id, a lease name), size
/// and modification time by the store's clock.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: String,
    pub size: u64,
    pub modified: i64,
}

/// A listing and the store's clock when it was taken: ages are measured on one clock, the store's, so that
/// machines with wrong clocks cannot make a young object look old.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub entries: Vec<Listed>,
    pub now: i64,
}

/// Requests made to a remote store (all zero for a local directory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub get: u64,
    pub put: u64,
    pub head: u64,
    pub delete: u64,
    pub list: u64,
    pub retries: u64,
    pub bytes_down: u64,
    pub bytes_up: u64,
}

impl RequestStats {
    pub fn requests(&self) -> u64 {
        self.get + self.put + self.head + self.delete + self.list
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests(), "get": self.get, "put": self.put, "head": self.head,
            "delete": self.delete, "list": self.list, "retries": self.retries,
            "bytes_down": self.bytes_down, "bytes_up": self.bytes_up,
        })
    }
}

pub(crate) fn local_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Opens the backend a location names. S3 settings are ignored for a local directory.
pub fn open(location: &Location, s3: &S3Settings) -> Result<Box<dyn Backend>, BackendError> {
    Ok(match location {
        Location::Local(path) => Box::new(LocalBackend::new(path)),
        Location::S3(l) => Box::new(S3Backend::new(l, s3)?),
    })
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
    /// A remote store's failure: the object's location and key, and what went wrong (never a signed URL).
    #[error("{object}: {what}")]
    Store { object: String, what: String },
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
    /// Objects of one kind with sizes and modification times, and the store's clock.
    fn list_aged(&self, dir: Dir) -> Result<Listing, BackendError>;
    /// Requests made so far.
    fn stats(&self) -> RequestStats {
        RequestStats::default()
    }
    /// The location, for messages.
    fn describe(&self) -> String;
    /// Bytes that cost about as much to read as one more request: neighbouring blobs closer than this are
    /// worth fetching in one read. 0: requests are cheap (a local file), read blobs one by one.
    fn coalesce_gap(&self) -> u64 {
        0
    }
    /// Whether the location holds nothing at all (init refuses anything else).
    fn is_empty(&self) -> Result<bool, BackendError>;
}
