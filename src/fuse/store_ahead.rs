//! Storing the next small files into the kernel's page cache before they are read.
//!
//! `cp -a` and `rsync` of a tree of small files wait for one round trip per request, and on a small machine a
//! round trip costs more than the file's bytes (the profile of cp -a of 46,121 files: 4.3 requests a file,
//! ~60 µs each for READ). Files are visited in the snapshot's depth-first order, which is the order of their
//! inode numbers, so once a small file has been read whole, the next small files are likely to be read next: a
//! background thread reads them (verified, as every read) and hands them to the kernel with NOTIFY_STORE. The
//! copy's READ then finds the page cache filled, and the decoding moves to an idle core.
//!
//! Never on a FUSE worker thread: a store waits for page locks that an in-flight READ of the same file may hold
//! until a worker answers it. Misses cost nothing but the work: a file the kernel has forgotten gets ENOENT.

use crate::cache::LruCache;
use crate::vfs::Vfs;
use fuser::{INodeNo, Notifier};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Files up to this size are stored ahead (whole): larger ones are read sequentially and prefetched by chunk.
pub(super) const MAX_FILE: u64 = 256 << 10;
/// How many entries past a file are looked at.
const AHEAD: u64 = 8;
/// Hints waiting for the thread; more are dropped.
const QUEUE: usize = 16;

/// Starts the thread; hints are the inode numbers of small files just read whole.
pub(super) fn start(vfs: Arc<Vfs>, notifier: Notifier) -> SyncSender<u64> {
    let (tx, rx) = sync_channel(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("store-ahead".into())
        .spawn(move || work(&vfs, &notifier, &rx));
    if let Err(e) = spawned {
        tracing::warn!("starting the store-ahead thread: {e}");
    }
    tx
}

fn work(vfs: &Vfs, notifier: &Notifier, hints: &Receiver<u64>) {
    // Files stored lately, so that overlapping hints store each once.
    let stored: LruCache<u64, ()> = LruCache::new(4096);
    let coalesce = vfs.repo().coalesces_reads();
    // Twice as far where reads are batched, refilled once half is used (as `vfs::prefetch` does).
    let ahead = if coalesce { 2 * AHEAD } else { AHEAD };
    while let Ok(hint) = hints.recv() {
        let next = vfs.small_files_after(hint, ahead, MAX_FILE);
        let fresh: Vec<_> = (next.iter().copied())
            .filter(|(ino, _)| !stored.contains(ino))
            .collect();
        if coalesce && fresh.len() * 2 < next.len() {
            continue;
        }
        let files: Vec<_> = (fresh.into_iter())
            .filter_map(|(ino, size)| Some((vfs.open(ino).ok()?, size)))
            .collect();
        // Small files written together sit side by side in a pack: on object storage their chunks come in one
        // ranged read instead of a request each.
        if coalesce {
            let ids: Vec<_> = files.iter().flat_map(|(f, _)| f.chunk_ids()).collect();
            vfs.repo().load_chunks(&ids);
        }
        for (file, size) in files {
            stored.insert(file.ino, (), 1);
            if let Ok(data) = vfs.read(&file, 0, size as usize) {
                let _ = notifier.store(INodeNo(file.ino), 0, &data);
            }
        }
    }
}
