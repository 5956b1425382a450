//! The RocksDB index: what must be found fast, all of it derivable from packs and manifests.
//!
//! Keys (big-endian where order matters, values little-endian like the rest of the format):
//! ```text
//! "V"                                     -> index layout version u32
//! "N"                                     -> next snapshot ordinal u64
//! "B" kind u8 | hash 32                   -> pack id 32 | offset u64 | stored_len u32 | raw_len u32 | compression u8
//! "P" pack id 32                          -> blob count u32
//! "S" account | 0x00 | time u64 BE | nsec u32 BE | ordinal u64 BE  -> snapshot id 32 | manifest bytes
//! "O" ordinal u64 BE                      -> the "S" key of that snapshot
//! "I" snapshot id 32                      -> ordinal u64 LE
//! ```
//! `time` is the UTC second biased by 2^63 so that byte order is time order, pre-1970 included.
//!
//! Concurrency: RocksDB admits one read-write process. Readers (mounts, listings, a backup's dedup lookups) open
//! it as a *secondary* instance, which takes no lock and follows the primary with `catch_up`. Writers take
//! `locks/index.lock` (flock, blocking), open the primary only for the few milliseconds of their commit, and
//! close it again, so a long backup never keeps another writer or a mount waiting.

mod keys;

use crate::backend::local::flock;
use crate::format::manifest::Manifest;
use crate::format::pack::{Compression, PackEntry};
use crate::format::{magic, BlobId, PackId, SnapshotId};
use rocksdb::{IteratorMode, Options, WriteBatch, WriteOptions, DB};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {source}")]
    Db {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("index {path}: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("index lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where a blob's stored bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub compression: Compression,
}

/// One snapshot as listed by the catalog.
#[derive(Clone, Debug)]
pub struct CatalogEntry {
    pub id: SnapshotId,
    pub manifest: Manifest,
    /// The manifest file when it is a sealed envelope (an encrypted repository); else it is `manifest.encode()`.
    pub sealed: Option<Vec<u8>>,
}

impl CatalogEntry {
    /// The manifest file's bytes as the index keeps them (the caller checks they still hash to `id`).
    pub fn manifest_file(&self) -> Vec<u8> {
        self.sealed
            .clone()
            .unwrap_or_else(|| self.manifest.encode())
    }
}

/// A read-only view of the index that follows the writers.
pub struct IndexReader {
    db: DB,
    path: PathBuf,
    secondary_dir: PathBuf,
}

impl Drop for IndexReader {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.secondary_dir);
    }
}

fn db_err(path: &Path) -> impl Fn(rocksdb::Error) -> IndexError + '_ {
    move |source| IndexError::Db {
        path: path.to_path_buf(),
        source,
    }
}

fn base_options() -> Options {
    let mut opts = Options::default();
    opts.set_log_level(rocksdb::LogLevel::Warn);
    opts.set_keep_log_file_num(2);
    opts.set_max_log_file_size(1 << 20);
    opts
}

impl IndexReader {
    /// Removes the secondary instance's directory now, for a process about to exit without dropping the reader.
    pub fn remove_secondary_dir(&self) {
        let _ = std::fs::remove_dir_all(&self.secondary_dir);
    }

    pub fn open(path: &Path) -> Result<Self, IndexError> {
        if !path.join("CURRENT").exists() {
            return Err(IndexError::Corrupt {
                path: path.into(),
                what: "missing (no CURRENT file)".into(),
            });
        }
        let secondary_dir = secondary_dir();
        let mut opts = base_options();
        // Secondaries must keep every table file open: the primary may delete compacted ones at any time.
        opts.set_max_open_files(-1);
        let db = DB::open_as_secondary(&opts, path, &secondary_dir).map_err(db_err(path))?;
        let reader = Self {
            db,
            path: path.into(),
            secondary_dir,
        };
        reader.check_version()?;
        Ok(reader)
    }

    /// Sees what writers committed since the last call.
    pub fn catch_up(&self) -> Result<(), IndexError> {
        self.db
            .try_catch_up_with_primary()
            .map_err(db_err(&self.path))
    }

    fn check_version(&self) -> Result<(), IndexError> {
        let v = self
            .db
            .get_pinned(keys::VERSION)
            .map_err(db_err(&self.path))?;
        let what = match v.as_deref().map(keys::u32_le) {
            Some(Some(magic::INDEX_VERSION)) => return Ok(()),
            Some(Some(v)) => format!("index layout version {v} is not supported"),
            Some(None) => "its layout version key is damaged".into(),
            None => "it has no layout version key (damaged, or not an index)".into(),
        };
        Err(IndexError::Corrupt {
            path: self.path.clone(),
            what,
        })
    }

    pub fn blob(&self, id: BlobId) -> Result<Option<BlobLocation>, IndexError> {
        let v = self
            .db
            .get_pinned(keys::blob(id))
            .map_err(db_err(&self.path))?;
        match v {
            None => Ok(None),
            Some(v) => keys::decode_location(&v)
                .map(Some)
                .ok_or_else(|| IndexError::Corrupt {
                    path: self.path.clone(),
                    what: format!("bad entry for {id}"),
                }),
        }
    }

    pub fn blobs(&self) -> Result<Vec<(BlobId, BlobLocation)>, IndexError> {
        all_blobs(&self.db, &self.path)
    }

    /// Packs the index knows, from their "P" keys.
    pub fn packs(&self) -> Result<Vec<PackId>, IndexError> {
        all_packs(&self.db, &self.path)
    }

    /// Snapshots a prune marked for forgetting and has not finished forgetting (it was interrupted).
    pub fn forgetting(&self) -> Result<HashSet<SnapshotId>, IndexError> {
        let mut out = HashSet::new();
        for item in (self.db).iterator(IteratorMode::From(b"F", rocksdb::Direction::Forward)) {
            let (k, _) = item.map_err(db_err(&self.path))?;
            if k.first() != Some(&b'F') {
                break;
            }
            let id = k[1..].try_into().map_err(|_| IndexError::Corrupt {
                path: self.path.clone(),
                what: format!("bad forgetting key of {} bytes", k.len()),
            })?;
            out.insert(SnapshotId(id));
        }
        Ok(out)
    }

    /// The account's snapshots in time order, or every snapshot when `account` is None.
    pub fn snapshots(&self, account: Option<&str>) -> Result<Vec<CatalogEntry>, IndexError> {
        let prefix = keys::catalog_prefix(account);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(&prefix, rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(db_err(&self.path))?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(keys::decode_catalog(&v).ok_or_else(|| IndexError::Corrupt {
                path: self.path.clone(),
                what: format!("bad catalog entry {}", String::from_utf8_lossy(&k)),
            })?);
        }
        if account.is_none() {
            out.sort_by_key(|e| {
                (
                    e.manifest.time.sec,
                    e.manifest.time.nsec,
                    e.manifest.ordinal,
                )
            });
        }
        Ok(out)
    }
}

/// Every blob entry of the index, in key order.
/// "F" snapshot id: a prune has marked the snapshot and may have deleted its manifest already.
/// "X" + pack index object id: that object was read into this index (its packs need not be read again).
fn pack_index_key(id: crate::format::PackIndexId) -> [u8; 33] {
    let mut k = [b'X'; 33];
    k[1..].copy_from_slice(&id.0);
    k
}

fn forgetting_key(id: SnapshotId) -> [u8; 33] {
    let mut k = [b'F'; 33];
    k[1..].copy_from_slice(&id.0);
    k
}

fn all_packs(db: &DB, path: &Path) -> Result<Vec<PackId>, IndexError> {
    let mut out = Vec::new();
    for item in db.iterator(IteratorMode::From(b"P", rocksdb::Direction::Forward)) {
        let (k, _) = item.map_err(db_err(path))?;
        if k.first() != Some(&b'P') {
            break;
        }
        let id = k[1..].try_into().map_err(|_| IndexError::Corrupt {
            path: path.into(),
            what: format!("bad pack key of {} bytes", k.len()),
        })?;
        out.push(PackId(id));
    }
    Ok(out)
}

fn all_blobs(db: &DB, path: &Path) -> Result<Vec<(BlobId, BlobLocation)>, IndexError> {
    let mut out = Vec::new();
    for item in db.iterator(IteratorMode::From(b"B", rocksdb::Direction::Forward)) {
        let (k, v) = item.map_err(db_err(path))?;
        if k.first() != Some(&b'B') {
            break;
        }
        let entry = keys::decode_blob_key(&k).zip(keys::decode_location(&v));
        let corrupt = || IndexError::Corrupt {
            path: path.into(),
            what: "bad blob entry".into(),
        };
        out.push(entry.ok_or_else(corrupt)?);
    }
    Ok(out)
}

/// A fresh directory for a secondary instance's own files. Directories of processes that are gone are removed
/// on the way: a mount daemon ends without dropping its reader, and a killed process never does.
fn secondary_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("backupfs-index-"))
                .and_then(|r| r.split('-').next());
            if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let n = N.fetch_add(1, Ordering::Relaxed);
    tmp.join(format!("backupfs-index-{}-{n}", std::process::id()))
}

impl Drop for IndexWriter {
    /// Flushes the memtable before the lock is released: otherwise every reader that opens the index replays the
    /// write-ahead log (5 MB after a 1.5 GB first backup: 60-70 ms of mount start-up instead of 7-9 ms).
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::warn!("index {}: flushing on close: {e}", self.path.display());
        }
    }
}

/// The read-write index, held under the repository's index lock for one commit.
pub struct IndexWriter {
    db: DB,
    path: PathBuf,
    _lock: File,
}

impl IndexWriter {
    /// Creates the index of a new repository.
    pub fn create(path: &Path, lock_path: &Path) -> Result<Self, IndexError> {
        let w = Self::open_inner(path, lock_path, true)?;
        let mut batch = WriteBatch::default();
        batch.put(keys::VERSION, magic::INDEX_VERSION.to_le_bytes());
        batch.put(keys::NEXT_ORDINAL, 1u64.to_le_bytes());
        w.write(batch)?;
        Ok(w)
    }

    /// Waits for the index lock, then opens the primary.
    pub fn open(path: &Path, lock_path: &Path) -> Result<Self, IndexError> {
        Self::open_inner(path, lock_path, false)
    }

    fn open_inner(path: &Path, lock_path: &Path, create: bool) -> Result<Self, IndexError> {
        let lock_err = |source| IndexError::Lock {
            path: lock_path.into(),
            source,
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path)
            .map_err(lock_err)?;
        flock(&lock, libc::LOCK_EX).map_err(lock_err)?;
        let mut opts = base_options();
        opts.create_if_missing(create);
        opts.set_max_open_files(256);
        let db = DB::open(&opts, path).map_err(db_err(path))?;
        Ok(Self {
            db,
            path: path.into(),
            _lock: lock,
        })
    }

    pub fn next_ordinal(&self) -> Result<u64, IndexError> {
        let v = self
            .db
            .get_pinned(keys::NEXT_ORDINAL)
            .map_err(db_err(&self.path))?;
        // Bounded by what a manifest may hold: a damaged value must not make the next commit overflow or write
        // a manifest every reader refuses.
        v.as_deref()
            .and_then(keys::u64_le)
            .filter(|n| (1..=crate::format::manifest::MAX_ORDINAL).contains(n))
            .ok_or_else(|| IndexError::Corrupt {
                path: self.path.clone(),
                what: "next ordinal missing or beyond the format's maximum".into(),
            })
    }

    /// Points one blob's entry at its copy in `pack` (without touching the pack's own record).
    pub fn add_pack_entry(batch: &mut WriteBatch, pack: PackId, e: &PackEntry) {
        batch.put(keys::blob(e.id), keys::encode_location(pack, e));
    }

    pub fn add_pack(batch: &mut WriteBatch, pack: PackId, entries: &[PackEntry]) {
        for e in entries {
            batch.put(keys::blob(e.id), keys::encode_location(pack, e));
        }
        batch.put(keys::pack(pack), (entries.len() as u32).to_le_bytes());
    }

    pub fn add_snapshot(
        batch: &mut WriteBatch,
        id: SnapshotId,
        manifest: &Manifest,
        manifest_bytes: &[u8],
    ) {
        let key = keys::catalog(manifest);
        batch.put(&key, keys::catalog_value(id, manifest_bytes, manifest));
        batch.put(keys::ordinal(manifest.ordinal), key);
        batch.put(keys::snapshot_id(id), manifest.ordinal.to_le_bytes());
    }

    pub fn has_snapshot(&self, id: SnapshotId) -> Result<bool, IndexError> {
        Ok(self
            .db
            .get_pinned(keys::snapshot_id(id))
            .map_err(db_err(&self.path))?
            .is_some())
    }

    pub fn has_read_pack_index(&self, id: crate::format::PackIndexId) -> Result<bool, IndexError> {
        Ok(self
            .db
            .get_pinned(pack_index_key(id))
            .map_err(db_err(&self.path))?
            .is_some())
    }

    pub fn mark_pack_index_read(batch: &mut WriteBatch, id: crate::format::PackIndexId) {
        batch.put(pack_index_key(id), b"");
    }

    pub fn has_pack(&self, id: PackId) -> Result<bool, IndexError> {
        Ok(self
            .db
            .get_pinned(keys::pack(id))
            .map_err(db_err(&self.path))?
            .is_some())
    }

    pub fn remove_snapshot(batch: &mut WriteBatch, id: SnapshotId, manifest: &Manifest) {
        batch.delete(keys::catalog(manifest));
        batch.delete(keys::ordinal(manifest.ordinal));
        batch.delete(keys::snapshot_id(id));
        batch.delete(forgetting_key(id));
    }

    /// Records that a prune is about to delete this snapshot's manifest (see SPEC.md, "Retention").
    pub fn mark_forgetting(batch: &mut WriteBatch, id: SnapshotId) {
        batch.put(forgetting_key(id), []);
    }

    pub fn remove_blob(batch: &mut WriteBatch, id: BlobId) {
        batch.delete(keys::blob(id));
    }

    pub fn put_blob(batch: &mut WriteBatch, id: BlobId, loc: &BlobLocation) {
        let entry = PackEntry {
            id,
            compression: loc.compression,
            offset: loc.offset,
            stored_len: loc.stored_len,
            raw_len: loc.raw_len,
        };
        batch.put(keys::blob(id), keys::encode_location(loc.pack, &entry));
    }

    pub fn remove_pack(batch: &mut WriteBatch, id: PackId) {
        batch.delete(keys::pack(id));
    }

    pub fn blob(&self, id: BlobId) -> Result<Option<BlobLocation>, IndexError> {
        let v = self
            .db
            .get_pinned(keys::blob(id))
            .map_err(db_err(&self.path))?;
        Ok(v.as_deref().and_then(keys::decode_location))
    }

    pub fn blobs(&self) -> Result<Vec<(BlobId, BlobLocation)>, IndexError> {
        all_blobs(&self.db, &self.path)
    }

    /// Packs the index knows, from their "P" keys.
    pub fn packs(&self) -> Result<Vec<PackId>, IndexError> {
        all_packs(&self.db, &self.path)
    }

    /// The catalog as the writer sees it (every account, time order).
    pub fn snapshots(&self) -> Result<Vec<CatalogEntry>, IndexError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator(IteratorMode::From(b"S", rocksdb::Direction::Forward))
        {
            let (k, v) = item.map_err(db_err(&self.path))?;
            if k.first() != Some(&b'S') {
                break;
            }
            let corrupt = || IndexError::Corrupt {
                path: self.path.clone(),
                what: "bad catalog entry".into(),
            };
            out.push(keys::decode_catalog(&v).ok_or_else(corrupt)?);
        }
        out.sort_by_key(|e| {
            (
                e.manifest.time.sec,
                e.manifest.time.nsec,
                e.manifest.ordinal,
            )
        });
        Ok(out)
    }

    pub fn set_next_ordinal(batch: &mut WriteBatch, next: u64) {
        batch.put(keys::NEXT_ORDINAL, next.to_le_bytes());
    }

    /// Applies a batch durably (WAL fsync) and atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<(), IndexError> {
        crate::backend::crash::before_change(&format_args!(
            "index batch into {}",
            self.path.display()
        ));
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(db_err(&self.path))
    }
}
