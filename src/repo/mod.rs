//! The `Repository` handle: one per process, owning the backend, the index reader and the caches. Commands and
//! the filesystem reach the data only through it, and every blob it returns has been checked against its id.

mod batch;
mod codec;
mod commit;
mod dir;
mod disk_cache;
mod key;
mod lease;
mod locks;
mod lost;
mod packs;
mod reach;
mod salvage;
mod spare;
mod state;
mod sync;

pub use codec::BlobCodec;
pub use commit::{commit_snapshot, publish_pack_index, NewPack};
pub use dir::{Directory, EntryRef};
pub use disk_cache::DiskCache;
pub use key::{create_key, default_key_file, key_file_of, load_key, KeyError};
pub use locks::{BackupMarker, ExclusiveLock};
pub use packs::{pack_entries_in, read_manifest, read_pack_trailer, reconcile, Reconciled};
pub use reach::mark_live;
pub use salvage::{salvage_pack, Salvaged};
use spare::{decompress_into, SpareBuffers};
pub use state::StateDir;

use crate::backend::{Backend, BackendError, LocalBackend, Location, Object, S3Settings};
use crate::cache::LruCache;
use crate::format::config::Config;
use crate::format::links::LinkTable;
use crate::format::pack::Compression;
use crate::format::tree::Tree;
use crate::format::tree_index::{is_tree_index, TreeIndex};
use crate::format::{BlobId, ChunkId, FormatError, LinksId, PackId, TreeId};
use crate::index::{CatalogEntry, IndexError, IndexReader, IndexWriter};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock, RwLockReadGuard};

thread_local! {
    /// Each thread's buffer for compressed bytes on their way to decompression: a fresh megabyte per chunk read
    /// costs page faults and zeroing that showed as a third of the mount's CPU time in reads.
    static STORED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// How a single-flight load ended, for the readers that waited for it: the chunk, or the store's failure (they
/// fail at once with it rather than wait the store's timeout a second time), or None when each should read for
/// itself (the leader's error concerned that copy, e.g. a blob that failed verification).
type Loaded = Option<Result<Arc<Vec<u8>>, String>>;

/// A scratch buffer grown past this (a rare huge tree blob) is freed after use rather than kept per thread.
const MAX_SCRATCH: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("{path}: not a backupfs repository (no config file)")]
    NotARepository { path: PathBuf },
    #[error("{path}: already exists and is not empty")]
    AlreadyExists { path: PathBuf },
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{object}: {source}")]
    Format { object: String, source: FormatError },
    #[error("{id}: not in the index")]
    BlobMissing { id: BlobId },
    #[error("{id} in pack {pack}: content does not match its id")]
    BlobCorrupt { id: BlobId, pack: PackId },
    #[error("tree index {id}: {what}")]
    TreeIndex { id: TreeId, what: String },
    #[error(
        "state directory {} holds the index of {recorded}, not of {location} (a replica has the same repository \
         id as its primary): give each its own --state-dir; if the repository itself moved, remove {}/location",
        state.display(),
        state.display()
    )]
    StateOfAnother {
        state: PathBuf,
        recorded: String,
        location: String,
    },
    #[error("{replica} is not a replica of this repository (its config differs)")]
    NotAReplica { replica: String },
    #[error("{path} is held by another prune or index repair")]
    Locked { path: PathBuf },
    #[error(
        "{source}; the index is only a cache of the packs and manifests: rebuild it with `backupfs repair index \
         --repo {}`",
        repo.display()
    )]
    IndexUnusable { repo: PathBuf, source: IndexError },
    #[error(
        "{}/config: {source}; restore it with `backupfs repair config --repo {}`",
        path.display(),
        path.display()
    )]
    ConfigDamaged { path: PathBuf, source: FormatError },
    #[error("{location}: other writers held the commit lease for {waited} s; try again later")]
    LeaseBusy { location: String, waited: u64 },
    #[error("{location}: held the commit lease for {held} s, long enough for others to think it dead; nothing was committed")]
    LeaseLost { location: String, held: u64 },
}

/// How to open a repository: everything but its location. Resolved once from flags, environment and config.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The per-machine state directory; None: inside a local repository, or the default for an object store.
    pub state_dir: Option<PathBuf>,
    pub caches: CacheSizes,
    pub s3: S3Settings,
    /// How often a state directory that follows a shared store lists it for new snapshots (mounts).
    pub sync_interval: std::time::Duration,
    /// The on-disk blob cache of a repository in object storage: its directory (default: `cache/` in the state
    /// directory) and budget in bytes (0: none). A local repository has none.
    pub cache_dir: Option<PathBuf>,
    pub cache_bytes: u64,
    /// A replica to read blobs from when this store's copy is missing or damaged (read-repair), and how to
    /// reach its store.
    pub replica: Option<(Location, S3Settings)>,
    /// The key file of an encrypted repository, when given (`--key-file`, `BACKUPFS_KEY_FILE`, `key_file`);
    /// None: the default for the repository's id (`default_key_file`).
    pub key_file: Option<PathBuf>,
}

/// The default on-disk cache budget of a repository in object storage.
pub const DEFAULT_DISK_CACHE_BYTES: u64 = 1 << 30;

fn open_disk_cache(location: &Location, state: &StateDir, opts: &OpenOptions) -> Option<DiskCache> {
    if matches!(location, Location::Local(_)) || opts.cache_bytes == 0 {
        return None;
    }
    let dir = opts
        .cache_dir
        .clone()
        .unwrap_or_else(|| state.root().join("cache"));
    match DiskCache::open(&dir, opts.cache_bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{}: {e}; reading without an on-disk cache", dir.display());
            None
        }
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            state_dir: None,
            caches: CacheSizes::default(),
            s3: S3Settings::default(),
            sync_interval: std::time::Duration::from_secs(30),
            cache_dir: None,
            cache_bytes: DEFAULT_DISK_CACHE_BYTES,
            replica: None,
            key_file: None,
        }
    }
}

/// Fills a buffer from the kernel's random source (repository ids, lease names, pack nonces' peers).
pub fn random_bytes<const N: usize>() -> Result<[u8; N], BackendError> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| BackendError::io("/dev/urandom", e))?;
    Ok(bytes)
}

/// Reads and decodes the config, the one object every open needs.
pub fn read_config(backend: &dyn Backend, location: &Location) -> Result<Config, RepoError> {
    let bytes = match backend.read_all(Object::Config) {
        Err(BackendError::NotFound { .. }) => {
            return Err(RepoError::NotARepository {
                path: location.to_string().into(),
            })
        }
        other => other?,
    };
    Config::decode(&bytes).map_err(|source| RepoError::ConfigDamaged {
        path: location.to_string().into(),
        source,
    })
}

/// The state directory: the one asked for, else inside a local repository that is not encrypted, else the
/// default for the id. An encrypted repository's directory holds only what its store would: its plaintext
/// index lives apart, as a bucket's does.
fn resolve_state(
    location: &Location,
    opts: &OpenOptions,
    config: &Config,
) -> Result<StateDir, RepoError> {
    Ok(match (&opts.state_dir, location) {
        (Some(dir), _) => StateDir::separate_for(dir, &state_key(location))?,
        (None, Location::Local(path)) if config.encryption.is_none() => {
            StateDir::inside_repository(path)
        }
        (None, _) => {
            let at = state_key(location);
            StateDir::separate_for(&StateDir::default_for(&config.repo_id, &at), &at)?
        }
    })
}

/// The store of a replica, once its config shows it is the same repository (another's blobs would only fail
/// verification, but a mistake in the location should be told at once).
fn open_replica(
    at: &Location,
    s3: &S3Settings,
    config: &Config,
) -> Result<Box<dyn Backend>, RepoError> {
    let backend = crate::backend::open(at, s3)?;
    if &read_config(backend.as_ref(), at)? != config {
        return Err(RepoError::NotAReplica {
            replica: at.to_string(),
        });
    }
    Ok(backend)
}

/// How a state directory names the location it follows: a local directory by its canonical path (however it
/// was spelled on the command line), a bucket by its URL.
fn state_key(location: &Location) -> String {
    match location {
        Location::Local(path) => std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        Location::S3(_) => location.to_string(),
    }
}

/// Byte budgets of the in-memory caches; together with the open packs they bound a mount's memory.
#[derive(Clone, Copy, Debug)]
pub struct CacheSizes {
    pub trees: usize,
    pub chunks: usize,
}

impl Default for CacheSizes {
    /// Enough for sequential reads (the kernel's page cache holds file data; this only spares re-decoding a
    /// chunk across the several FUSE reads it spans) and for the trees of a deep walk, within ~100 MiB of RSS.
    fn default() -> Self {
        Self {
            trees: 16 << 20,
            chunks: 32 << 20,
        }
    }
}

pub struct Repository {
    location: Location,
    state: StateDir,
    config: Config,
    codec: BlobCodec,
    backend: Box<dyn Backend>,
    sync_interval: std::time::Duration,
    /// Replaced as a whole when it cannot follow the writers any more (after an index repair).
    index: RwLock<IndexReader>,
    trees: LruCache<TreeId, Directory>,
    /// Directories too large for `trees` (hundreds of thousands of entries): the two used last. In the LRU they
    /// would evict every small tree, including the ones each path resolution needs, and be evicted in turn.
    large_trees: std::sync::Mutex<Vec<(TreeId, Directory)>>,
    tree_budget: usize,
    chunks: LruCache<ChunkId, Arc<Vec<u8>>>,
    /// Chunks being loaded right now, for `chunk`'s single flight.
    loading: std::sync::Mutex<std::collections::HashMap<ChunkId, Arc<OnceLock<Loaded>>>>,
    /// Chunks whose load the store failed lately, with the failure: the kernel reads a page again on its own
    /// after a failed readahead, and that retry should not wait out the store's timeout a second time.
    failed: std::sync::Mutex<std::collections::HashMap<ChunkId, (std::time::Instant, String)>>,
    links: LruCache<LinksId, Arc<LinkTable>>,
    /// Buffers of evicted chunks, for the next chunk loads.
    spare: SpareBuffers,
    lost: lost::Lost,
    /// Verified blobs of a remote store kept on disk (mounts of object storage).
    disk: Option<DiskCache>,
    /// A replica (`init --like`, filled by `copy`) that blobs failing at this store are read from.
    replica: Option<Box<dyn Backend>>,
}

impl Repository {
    /// Creates an empty repository with `config` at `location`: a directory that is missing or empty, or a
    /// bucket prefix that holds nothing. An encrypted one's key must be kept already (`create_key`).
    pub fn init(location: &Location, opts: &OpenOptions, config: &Config) -> Result<(), RepoError> {
        let backend = crate::backend::open(location, &opts.s3)?;
        let taken = || RepoError::AlreadyExists {
            path: location.to_string().into(),
        };
        if let Location::Local(path) = location {
            if std::fs::read_dir(path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
            {
                return Err(taken());
            }
            std::fs::create_dir_all(path).map_err(|e| BackendError::io(path, e))?;
            LocalBackend::create_layout(path)?;
        } else if !backend.is_empty()? {
            return Err(taken());
        }
        if let (Location::Local(path), None) = (location, &config.encryption) {
            let state = StateDir::inside_repository(path);
            IndexWriter::create(&state.index(), &state.index_lock())?;
        }
        // The config comes last: a location without it is not a repository, so a failed init is not half a one.
        let bytes = config.encode();
        match backend.write_new(Object::Config, &bytes) {
            Err(BackendError::AlreadyExists { .. }) => return Err(taken()),
            other => other?,
        }
        // A store that ignores If-None-Match lets a second init replace the config: reading it back tells the
        // loser, which then stops before writing anything else.
        if backend.read_all(Object::Config)? != bytes {
            return Err(taken());
        }
        Ok(())
    }

    /// Replaces a missing or unopenable index by an empty one, so that `repair index` can open the repository.
    pub fn create_empty_index(location: &Location, opts: &OpenOptions) -> Result<(), RepoError> {
        let backend = crate::backend::open(location, &opts.s3)?;
        let config = read_config(backend.as_ref(), location)?;
        let state = resolve_state(location, opts, &config)?;
        let index = state.index();
        if index.exists() {
            let aside = state.index_damaged();
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::rename(&index, &aside).map_err(|e| BackendError::io(&index, e))?;
        }
        IndexWriter::create(&index, &state.index_lock())?;
        Ok(())
    }

    pub fn open(location: &Location, opts: &OpenOptions) -> Result<Self, RepoError> {
        let backend = crate::backend::open(location, &opts.s3)?;
        Self::open_with(location, backend, opts)
    }

    /// Opens a local repository directory with its state inside it (tests, tools).
    pub fn open_dir(path: &std::path::Path, caches: CacheSizes) -> Result<Self, RepoError> {
        let opts = OpenOptions {
            caches,
            ..OpenOptions::default()
        };
        Self::open(&Location::Local(path.to_path_buf()), &opts)
    }

    /// Opens a repository over a given backend (tests inject fault-injecting ones).
    pub fn open_with(
        location: &Location,
        backend: Box<dyn Backend>,
        opts: &OpenOptions,
    ) -> Result<Self, RepoError> {
        let config = read_config(backend.as_ref(), location)?;
        let codec = key::codec_for(location, &config, opts.key_file.as_deref())?;
        let replica = match &opts.replica {
            Some((at, s3)) => Some(open_replica(at, s3, &config)?),
            None => None,
        };
        let state = resolve_state(location, opts, &config)?;
        if state.follows_store() && !state.index().exists() {
            // A machine new to this repository: an empty index, filled by the sync below.
            state.create_index()?;
        }
        let index = match IndexReader::open(&state.index()) {
            Ok(index) => index,
            Err(source @ IndexError::Lock { .. }) => return Err(RepoError::Index(source)),
            // A state directory's index is only this machine's cache of the store: start it again.
            Err(e) if state.follows_store() => {
                tracing::warn!(
                    "{}: {e}; rebuilding this machine's index from the store",
                    state.index().display()
                );
                state.set_index_aside()?;
                state.create_index()?;
                IndexReader::open(&state.index())?
            }
            Err(source) => {
                return Err(RepoError::IndexUnusable {
                    repo: location.to_string().into(),
                    source,
                })
            }
        };
        let caches = opts.caches;
        let repo = Self {
            location: location.clone(),
            state,
            codec,
            config,
            backend,
            sync_interval: opts.sync_interval,
            index: RwLock::new(index),
            trees: LruCache::new(caches.trees),
            large_trees: std::sync::Mutex::new(Vec::new()),
            tree_budget: caches.trees,
            chunks: LruCache::new(caches.chunks),
            loading: std::sync::Mutex::new(std::collections::HashMap::new()),
            failed: std::sync::Mutex::new(std::collections::HashMap::new()),
            links: LruCache::new(1 << 20),
            spare: SpareBuffers::new(caches.chunks / 4),
            lost: lost::Lost::default(),
            disk: None,
            replica,
        };
        repo.sync(true)?;
        let mut repo = repo;
        repo.disk = open_disk_cache(&repo.location, &repo.state, opts);
        Ok(repo)
    }

    pub fn location(&self) -> &Location {
        &self.location
    }
    pub fn state(&self) -> &StateDir {
        &self.state
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// How this repository names and stores blobs.
    pub fn codec(&self) -> &BlobCodec {
        &self.codec
    }
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Takes the index lock and opens the index for writing (see `index` for why this is short-lived).
    pub fn index_writer(&self) -> Result<IndexWriter, RepoError> {
        Ok(IndexWriter::open(
            &self.state.index(),
            &self.state.index_lock(),
        )?)
    }

    fn index(&self) -> RwLockReadGuard<'_, IndexReader> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sees snapshots and blobs that other processes committed since this handle was opened (and, for a state
    /// directory that follows a shared store, that other machines stored, at most every sync interval). An
    /// index that was rebuilt meanwhile (a new directory) is reopened.
    pub fn refresh(&self) -> Result<(), RepoError> {
        self.sync(false)?;
        if self.index().catch_up().is_ok() {
            return Ok(());
        }
        self.reopen_index()
    }

    /// Opens the index anew: for the process that just replaced it (an index repair).
    pub fn reopen_index(&self) -> Result<(), RepoError> {
        let fresh = IndexReader::open(&self.state.index())?;
        *self.index.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Removes the files this process keeps for itself (the index reader's secondary directory in $TMPDIR):
    /// for a mount about to exit while background threads still hold the handle, so that it is never dropped.
    pub fn remove_private_files(&self) {
        self.index().remove_secondary_dir();
    }

    /// Where the index says a blob is (None if it does not know it).
    pub fn locate(&self, id: BlobId) -> Result<Option<crate::index::BlobLocation>, RepoError> {
        Ok(self.index().blob(id)?)
    }

    pub fn indexed_blobs(&self) -> Result<Vec<(BlobId, crate::index::BlobLocation)>, RepoError> {
        Ok(self.index().blobs()?)
    }

    pub fn snapshots(&self, account: Option<&str>) -> Result<Vec<CatalogEntry>, RepoError> {
        Ok(self.index().snapshots(account)?)
    }

    /// Snapshots an interrupted prune was forgetting (their manifests may be gone already: not damage).
    pub fn forgetting(
        &self,
    ) -> Result<std::collections::HashSet<crate::format::SnapshotId>, RepoError> {
        Ok(self.index().forgetting()?)
    }

    /// Whether a writer may reference `id` without storing it: indexed, and neither in a pack known to be
    /// missing nor known to fail verification.
    pub fn usable_blob(&self, id: BlobId) -> Result<bool, RepoError> {
        Ok(self
            .locate(id)?
            .is_some_and(|loc| !self.lost.covers(id, loc.pack)))
    }

    /// Lists the backend's packs and returns those the index's blob entries point into that are missing; their
    /// blobs count as absent for `usable_blob` from now on. A missing pack that no blob entry points into was
    /// deleted by a prune that died before forgetting it: not lost, and the next prune clears its record.
    pub fn find_missing_packs(&self) -> Result<Vec<PackId>, RepoError> {
        use std::collections::HashSet;
        let present: HashSet<PackId> = self.backend.list_packs()?.into_iter().collect();
        let absent: HashSet<PackId> = (self.index().packs()?.into_iter())
            .filter(|p| !present.contains(p))
            .collect();
        if absent.is_empty() {
            return Ok(Vec::new());
        }
        let missing: Vec<PackId> = (self.index().blobs()?.into_iter())
            .map(|(_, loc)| loc.pack)
            .filter(|p| absent.contains(p))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for p in &missing {
            self.lost.add_pack(*p);
        }
        Ok(missing)
    }

    /// Reads, decompresses and verifies one blob. A blob the index does not know may have been committed since
    /// the last refresh, and a pack that is gone may have been rewritten by a prune: either way the read is
    /// retried once after a refresh.
    pub fn read_blob(&self, id: BlobId) -> Result<Vec<u8>, RepoError> {
        match self.read_blob_once(id) {
            Err(RepoError::BlobMissing { .. })
            | Err(RepoError::Backend(BackendError::NotFound { .. })) => {
                self.refresh()?;
                self.read_blob_once(id)
            }
            other => other,
        }
    }

    fn read_blob_once(&self, id: BlobId) -> Result<Vec<u8>, RepoError> {
        let store = self.backend.as_ref();
        let result = match self.read_blob_from(id, self.disk.as_ref(), store) {
            // A damaged cache file: forgotten by `fetch`; the store's copy decides.
            Err(RepoError::BlobCorrupt { .. }) if self.disk.is_some() => {
                self.read_blob_from(id, None, store)
            }
            other => other,
        };
        match (result, &self.replica) {
            (Err(e @ (RepoError::BlobCorrupt { .. } | RepoError::Backend(_))), Some(replica)) => {
                self.read_repaired(id, e, replica.as_ref())
            }
            (other, _) => other,
        }
    }

    /// Read-repair: a blob the primary failed to give whole is read from the replica, which holds the same
    /// packs under the same names, and verified like any other; the primary's failure stands if that fails too.
    fn read_repaired(
        &self,
        id: BlobId,
        failure: RepoError,
        replica: &dyn Backend,
    ) -> Result<Vec<u8>, RepoError> {
        // A store that is slow or down is not damage: only objects that are missing or wrong are repaired.
        if let RepoError::Backend(ref e) = failure {
            if !matches!(e, BackendError::NotFound { .. }) {
                return Err(failure);
            }
        }
        match self.read_blob_from(id, None, replica) {
            Ok(plain) => {
                tracing::warn!("{failure}; served from the replica {}", replica.describe());
                Ok(plain)
            }
            Err(again) => {
                tracing::warn!(
                    "{failure}; the replica {} could not help: {again}",
                    replica.describe()
                );
                Err(failure)
            }
        }
    }

    /// Fills `buf` with a blob's stored bytes from the disk cache or the store; true if from the cache.
    fn fetch(
        &self,
        id: BlobId,
        loc: &crate::index::BlobLocation,
        disk: Option<&DiskCache>,
        store: &dyn Backend,
        buf: &mut [u8],
    ) -> Result<bool, RepoError> {
        if let Some(bytes) = disk.and_then(|d| d.get(id, buf.len())) {
            buf.copy_from_slice(&bytes);
            return Ok(true);
        }
        store.read_at(Object::Pack(loc.pack), loc.offset, buf)?;
        Ok(false)
    }

    fn read_blob_from(
        &self,
        id: BlobId,
        disk: Option<&DiskCache>,
        store: &dyn Backend,
    ) -> Result<Vec<u8>, RepoError> {
        let loc = self.locate(id)?.ok_or(RepoError::BlobMissing { id })?;
        let corrupt = || {
            self.lost.add_blob(id);
            RepoError::BlobCorrupt { id, pack: loc.pack }
        };
        // A damaged index value must not make a chunk read allocate gigabytes.
        if id.kind == crate::format::BlobKind::Chunk
            && u64::from(loc.raw_len) > crate::format::tree::MAX_CHUNK_LEN
        {
            return Err(corrupt());
        }
        let (stored_len, raw_len) = (loc.stored_len as usize, loc.raw_len as usize);
        // Room for a sealed raw blob, which is read and opened in the buffer it is returned in.
        let mut plain = self.spare.take(raw_len.max(stored_len));
        let mut cached = false;
        let mut to_remember: Option<Vec<u8>> = None;
        match loc.compression {
            // Read straight into the buffer that is returned (and cached), and if sealed opened there, the
            // plaintext moved to its front in the same pass: no copy.
            Compression::Raw if stored_len == raw_len + self.codec.seal_overhead() => {
                // A reused buffer's bytes are initialised already: only growth needs zeroing.
                plain.truncate(stored_len);
                plain.resize(stored_len, 0);
                cached = self.fetch(id, &loc, disk, store, &mut plain)?;
                if disk.is_some() && !cached && self.codec.is_encrypted() {
                    to_remember = Some(plain.clone());
                }
                match self.codec.unseal_to_front(id, &mut plain) {
                    Some(n) if n == raw_len => plain.truncate(raw_len),
                    _ => return Err(corrupt()),
                }
            }
            Compression::Raw => return Err(corrupt()),
            // Compressed: the stored bytes go through a scratch buffer, where a seal is opened in place.
            compression => STORED.with(|scratch| {
                let mut stored = scratch.borrow_mut();
                if stored.len() < stored_len {
                    stored.resize(stored_len, 0);
                }
                let stored_bytes = &mut stored[..stored_len];
                cached = self.fetch(id, &loc, disk, store, stored_bytes)?;
                if disk.is_some() && !cached {
                    to_remember = Some(stored_bytes.to_vec());
                }
                let written = match self.codec.unseal_in_place(id, stored_bytes) {
                    Some(packed) if compression == Compression::Zstd => {
                        decompress_into(packed, &mut plain).map_err(|_| ())
                    }
                    _ => Err(()),
                };
                if stored.capacity() > MAX_SCRATCH {
                    *stored = Vec::new();
                }
                match written {
                    Ok(n) if n == raw_len => Ok(()),
                    _ => Err(corrupt()),
                }
            })?,
        }
        if !self.codec.verifies(id, &plain) {
            if cached {
                if let Some(d) = disk {
                    d.remove(id);
                }
            }
            return Err(corrupt());
        }
        if let (Some(d), false) = (disk, cached) {
            d.put(id, to_remember.as_deref().unwrap_or(&plain));
        }
        Ok(plain)
    }

    /// A directory's tree blob: a whole tree, or the index of a paged directory (whose pages load on demand).
    pub fn directory(&self, id: TreeId) -> Result<Directory, RepoError> {
        if let Some(d) = self.trees.get(&id) {
            return Ok(d);
        }
        if let Some(d) = self.large_tree(id) {
            return Ok(d);
        }
        let bytes = self.read_blob(BlobId::tree(id))?;
        let format_error = |source| RepoError::Format {
            object: format!("tree {id}"),
            source,
        };
        let (dir, size) = if is_tree_index(&bytes) {
            let index = Arc::new(TreeIndex::decode(&bytes).map_err(format_error)?);
            let size = index.heap_size();
            (Directory::Paged { id, index }, size)
        } else {
            let tree = Arc::new(Tree::decode(&bytes).map_err(format_error)?);
            let size = tree.heap_size();
            (Directory::Flat(tree), size)
        };
        if size > self.tree_budget / 4 {
            // Only flat trees of old or foreign writers get here: written trees are paged long before.
            let mut large = self.large_trees.lock().unwrap_or_else(|p| p.into_inner());
            large.insert(0, (id, dir.clone()));
            large.truncate(2);
        } else {
            self.trees.insert(id, dir.clone(), size);
        }
        Ok(dir)
    }

    fn large_tree(&self, id: TreeId) -> Option<Directory> {
        let mut large = self.large_trees.lock().unwrap_or_else(|p| p.into_inner());
        let i = large.iter().position(|(k, _)| *k == id)?;
        let hit = large.remove(i);
        large.insert(0, hit.clone());
        Some(hit.1)
    }

    /// The chunk cache's budget in bytes.
    pub fn chunk_cache_bytes(&self) -> usize {
        self.chunks.capacity()
    }

    /// Whether `chunk(id)` would not start a load: it is cached, or another thread is loading it.
    pub fn chunk_is_cached_or_loading(&self, id: ChunkId) -> bool {
        self.chunks.contains(&id)
            || (self.loading.lock().unwrap_or_else(|p| p.into_inner())).contains_key(&id)
    }

    /// A verified chunk. Loads are single-flight: the kernel's readahead sends several reads inside one chunk
    /// to different FUSE threads at once, and without this each of them decoded and hashed the same chunk.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>, RepoError> {
        if let Some(c) = self.chunks.get(&id) {
            return Ok(c);
        }
        if let Some(failure) = self.failed_lately(id) {
            return Err(RepoError::Backend(BackendError::Store {
                object: format!("chunk {id}"),
                what: failure,
            }));
        }
        let (slot, leader) = {
            let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
            match loading.get(&id) {
                Some(slot) => (slot.clone(), false),
                None => {
                    let slot = Arc::new(OnceLock::new());
                    loading.insert(id, slot.clone());
                    (slot, true)
                }
            }
        };
        if !leader {
            return match slot.wait() {
                Some(Ok(data)) => Ok(data.clone()),
                Some(Err(failure)) => Err(RepoError::Backend(BackendError::Store {
                    object: format!("chunk {id}"),
                    what: failure.clone(),
                })),
                None => self.read_blob(BlobId::chunk(id)).map(Arc::new),
            };
        }
        let result = self.read_blob(BlobId::chunk(id)).map(Arc::new);
        if let Ok(data) = &result {
            for old in self.chunks.insert(id, data.clone(), data.capacity()) {
                self.spare.give_back(old);
            }
        }
        let _ = slot.set(match &result {
            Ok(data) => Some(Ok(data.clone())),
            Err(e @ RepoError::Backend(BackendError::Store { .. })) => {
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                failed.insert(id, (std::time::Instant::now(), e.to_string()));
                Some(Err(e.to_string()))
            }
            Err(_) => None,
        });
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        result
    }

    /// The store's failure for `id` if one came in the last few seconds (old ones are dropped on the way).
    fn failed_lately(&self, id: ChunkId) -> Option<String> {
        const REMEMBER: std::time::Duration = std::time::Duration::from_secs(5);
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_empty() {
            return None;
        }
        failed.retain(|_, (at, _)| at.elapsed() < REMEMBER);
        failed.get(&id).map(|(_, why)| why.clone())
    }

    pub fn link_table(&self, id: LinksId) -> Result<Arc<LinkTable>, RepoError> {
        if let Some(t) = self.links.get(&id) {
            return Ok(t);
        }
        let bytes = self.read_blob(BlobId::links(id))?;
        let table = Arc::new(
            LinkTable::decode(&bytes).map_err(|source| RepoError::Format {
                object: format!("links {id}"),
                source,
            })?,
        );
        self.links.insert(id, table.clone(), table.links.len() * 24);
        Ok(table)
    }
}
