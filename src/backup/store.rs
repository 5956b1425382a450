//! The write side of a backup: deduplicates blobs, compresses them on worker threads and fills packs.
//!
//! The walking thread hashes (it needs the ids to build trees) and hands only blobs the repository lacks to the
//! workers through a bounded channel, which bounds memory to a few chunks per worker. Chunks and metadata (trees,
//! link tables) go to separate packs, so that the small, hot metadata is not scattered among large data packs.

use crate::backend::Object;
use crate::format::pack::PackBuilder;
use crate::format::{BlobId, BlobKind};
use crate::repo::{NewPack, RepoError, Repository};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

struct Job {
    id: BlobId,
    data: Vec<u8>,
}

/// State shared by the walker and the workers.
pub struct Shared<'r> {
    repo: &'r Repository,
    packers: [Mutex<PackBuilder>; 2],
    written: Mutex<Vec<NewPack>>,
    error: Mutex<Option<RepoError>>,
    pub added_blobs: AtomicU64,
    pub added_bytes: AtomicU64,
}

impl<'r> Shared<'r> {
    pub fn new(repo: &'r Repository) -> Self {
        Self {
            repo,
            packers: [(); 2].map(|()| Mutex::new(repo.codec().new_pack())),
            written: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            added_blobs: AtomicU64::new(0),
            added_bytes: AtomicU64::new(0),
        }
    }

    fn packer(&self, kind: BlobKind) -> &Mutex<PackBuilder> {
        &self.packers[(kind != BlobKind::Chunk) as usize]
    }

    fn fail(&self, e: RepoError) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(e);
    }

    pub fn failed(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn store(&self, job: Job) -> Result<(), RepoError> {
        let (stored, compression) = self.repo.codec().encode(job.id, &job.data)?;
        let full = {
            let mut packer = self
                .packer(job.id.kind)
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            packer.add(job.id, &stored, compression, job.data.len() as u32);
            if packer.data_len() >= self.repo.config().pack_target as usize {
                Some(std::mem::replace(
                    &mut *packer,
                    self.repo.codec().new_pack(),
                ))
            } else {
                None
            }
        };
        self.added_blobs.fetch_add(1, Ordering::Relaxed);
        self.added_bytes
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        match full {
            Some(pack) => self.write_pack(pack),
            None => Ok(()),
        }
    }

    fn write_pack(&self, pack: PackBuilder) -> Result<(), RepoError> {
        let (id, bytes, entries) = self.repo.codec().finish_pack(pack)?;
        self.repo.backend().write_new(Object::Pack(id), &bytes)?;
        self.repo.remember_metadata(&bytes, &entries);
        let size = bytes.len() as u64;
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(NewPack { id, size, entries });
        Ok(())
    }

    fn worker(&self, jobs: Receiver<Job>) {
        for job in jobs {
            // After a failure, keep draining so the walker never blocks on a full channel.
            if self.failed() {
                continue;
            }
            if let Err(e) = self.store(job) {
                self.fail(e);
            }
        }
    }

    /// Writes the partly filled packs and returns every pack written, or the first error any worker hit.
    pub fn finish(&self) -> Result<Vec<NewPack>, RepoError> {
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        for packer in &self.packers {
            let mut packer = packer.lock().unwrap_or_else(|p| p.into_inner());
            let pack = std::mem::replace(&mut *packer, self.repo.codec().new_pack());
            drop(packer);
            if !pack.is_empty() {
                self.write_pack(pack)?;
            }
        }
        Ok(std::mem::take(
            &mut *self.written.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// The walker's handle: dedup decisions happen here, compression on the workers.
pub struct BlobSink<'s, 'r> {
    shared: &'s Shared<'r>,
    seen: HashSet<BlobId>,
    /// Blobs the snapshot references that were already in the repository: the commit checks that a concurrent
    /// prune has not dropped them from the index.
    pub existing: HashSet<BlobId>,
    tx: Sender<Job>,
}

impl<'s, 'r> BlobSink<'s, 'r> {
    /// Starts `workers` threads in `scope`; dropping the sink lets them finish.
    pub fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        shared: &'s Shared<'r>,
        workers: usize,
    ) -> Self
    where
        's: 'scope,
    {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(workers * 2);
        for _ in 0..workers {
            let rx = rx.clone();
            scope.spawn(move || shared.worker(rx));
        }
        Self {
            shared,
            seen: HashSet::new(),
            existing: HashSet::new(),
            tx,
        }
    }

    /// Stores `data` under `id` unless the repository or this backup already has it.
    pub fn put(&mut self, id: BlobId, data: Vec<u8>) -> Result<(), RepoError> {
        if self.seen.contains(&id) {
            return Ok(());
        }
        self.seen.insert(id);
        if self.shared.repo.usable_blob(id)? {
            self.existing.insert(id);
            return Ok(());
        }
        // A send fails only if every worker died, which `finish` then reports.
        let _ = self.tx.send(Job { id, data });
        Ok(())
    }

    pub fn failed(&self) -> bool {
        self.shared.failed()
    }

    /// Whether an unchanged file's blob may be referenced without reading the file again.
    pub fn can_reuse(&self, id: BlobId) -> Result<bool, RepoError> {
        Ok(self.seen.contains(&id) || self.shared.repo.usable_blob(id)?)
    }

    /// Records a blob the snapshot reuses without storing it (an unchanged file's chunks).
    pub fn reuse(&mut self, id: BlobId) {
        if self.seen.insert(id) {
            self.existing.insert(id);
        }
    }
}

/// Progress counters read by the progress display.
#[derive(Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes_read: AtomicU64,
}
