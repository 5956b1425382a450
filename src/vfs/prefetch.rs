//! Sequential prefetch: while the kernel takes one chunk of a file, the next ones are decoded on other cores.
//!
//! A chunk read is a pack read, zstd decompression and a BLAKE3 check, about a millisecond per MiB on one core;
//! the kernel's readahead asks for the next chunk only once it reaches it, so without prefetch a sequential read
//! runs at one core's decoding speed however many cores are idle. The prefetched chunks land in the chunk
//! cache (single-flight: a read that arrives while one is loading waits for it instead of decoding it again),
//! so memory stays within the cache's budget. Failures are left to the read that needs the chunk, which
//! reports them. On object storage a window's chunks go as one batch, which the repository fetches with as few
//! ranged reads as their places in the packs allow (`Repository::load_chunks`).

use crate::format::ChunkId;
use crate::repo::Repository;
use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

/// Chunks queued beyond what the workers are decoding; more are dropped (the read will load them itself). Room
/// for a whole prefetch window (`read::PREFETCH_BYTES`) of small chunks: a sequential read asks for one at once.
const QUEUE: usize = 32;

pub(super) struct Prefetcher {
    repo: Arc<Repository>,
    /// Started with the first request, so that commands which never read files start no threads.
    queue: OnceLock<SyncSender<Vec<ChunkId>>>,
    /// What is in the queue: every read in a chunk's second half asks for the whole window again, and a chunk
    /// waiting its turn is neither cached nor loading yet.
    queued: Arc<Mutex<HashSet<ChunkId>>>,
}

impl Prefetcher {
    pub(super) fn new(repo: Arc<Repository>) -> Self {
        Self {
            repo,
            queue: OnceLock::new(),
            queued: Arc::default(),
        }
    }

    /// Asks for `ids` (a prefetch window, in file order) to be loaded in the background, except those cached,
    /// loading or queued already: as one batch where the store rewards fewer, larger reads, else one by one so
    /// that several cores decode.
    pub(super) fn request(&self, ids: &[ChunkId]) {
        let coalesce = self.repo.coalesces_reads();
        let fresh: Vec<ChunkId> = (ids.iter().copied())
            .filter(|id| {
                !self.repo.chunk_is_cached_or_loading(*id) && !lock(&self.queued).contains(id)
            })
            .collect();
        // Batches refill the window once half of it is used: a chunk at a time would be a request each.
        if fresh.is_empty() || coalesce && fresh.len() * 2 < ids.len() {
            return;
        }
        lock(&self.queued).extend(fresh.iter().copied());
        let batches = if coalesce {
            vec![fresh]
        } else {
            fresh.into_iter().map(|id| vec![id]).collect()
        };
        let queue = self.queue.get_or_init(|| self.start());
        for batch in batches {
            if let Err(e) = queue.try_send(batch) {
                let (std::sync::mpsc::TrySendError::Full(b)
                | std::sync::mpsc::TrySendError::Disconnected(b)) = e;
                let mut queued = lock(&self.queued);
                for id in b {
                    queued.remove(&id);
                }
            }
        }
    }

    fn start(&self) -> SyncSender<Vec<ChunkId>> {
        let (tx, rx) = sync_channel(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        for i in 0..workers {
            let (repo, rx, queued) = (self.repo.clone(), rx.clone(), self.queued.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("prefetch-{i}"))
                .spawn(move || work(&repo, &rx, &queued));
            if let Err(e) = spawned {
                tracing::warn!("starting a prefetch thread: {e}");
            }
        }
        tx
    }
}

/// Loads requested chunks until the Prefetcher (and with it the sender) is dropped.
fn work(
    repo: &Repository,
    requests: &Mutex<Receiver<Vec<ChunkId>>>,
    queued: &Mutex<HashSet<ChunkId>>,
) {
    loop {
        let next = lock(requests).recv();
        let Ok(batch) = next else { return };
        {
            let mut queued = lock(queued);
            for id in &batch {
                queued.remove(id);
            }
        }
        repo.load_chunks(&batch);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
