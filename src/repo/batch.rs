//! Loading several chunks with few store requests: on a store where a request costs more than reading a few
//! hundred KiB extra (object storage), chunks that lie close together in one pack are fetched with one ranged
//! read, then split, decoded and verified one by one exactly as single reads are. A sequential read's prefetch
//! window of 4 MiB is then a request or two instead of one per chunk.

use super::{RepoError, Repository};
use crate::backend::Object;
use crate::format::{BlobId, ChunkId, PackId};
use crate::index::BlobLocation;
use std::collections::HashMap;
use std::sync::Arc;

/// The most bytes one coalesced read asks for.
const MAX_RUN: u64 = 16 << 20;

impl Repository {
    /// Keeps the trees and hardlink tables of a pack this process just wrote in the on-disk cache (if there is
    /// one): the next backup compares against them, and reading them back from the store would cost a request
    /// each (151 GETs for the first incremental backup of the benchmark's small tree before this).
    pub fn remember_metadata(&self, pack: &[u8], entries: &[crate::format::pack::PackEntry]) {
        let Some(disk) = &self.disk else { return };
        for e in entries
            .iter()
            .filter(|e| e.id.kind != crate::format::BlobKind::Chunk)
        {
            let (Ok(at), Ok(len)) = (usize::try_from(e.offset), usize::try_from(e.stored_len))
            else {
                continue;
            };
            if let Some(stored) = pack.get(at..at.saturating_add(len)) {
                disk.put(e.id, stored);
            }
        }
    }

    /// Whether `load_chunks` coalesces (else callers may as well load chunks one by one, in parallel).
    pub fn coalesces_reads(&self) -> bool {
        self.backend.coalesce_gap() > 0
    }

    /// Brings `ids` into the chunk cache; failures are left to the reads that need the chunks.
    pub fn load_chunks(&self, ids: &[ChunkId]) {
        let gap = self.backend.coalesce_gap();
        let mut by_pack: HashMap<PackId, Vec<(ChunkId, BlobLocation)>> = HashMap::new();
        for &id in ids {
            if self.chunk_is_cached_or_loading(id)
                || self
                    .disk
                    .as_ref()
                    .is_some_and(|d| d.contains(BlobId::chunk(id)))
            {
                let _ = self.chunk(id);
                continue;
            }
            match self.locate(BlobId::chunk(id)) {
                Ok(Some(loc)) if gap > 0 => by_pack.entry(loc.pack).or_default().push((id, loc)),
                _ => {
                    let _ = self.chunk(id);
                }
            }
        }
        for (pack, mut blobs) in by_pack {
            blobs.sort_by_key(|(_, loc)| loc.offset);
            for run in runs(&blobs, gap) {
                if run.len() == 1 {
                    let _ = self.chunk(run[0].0);
                    continue;
                }
                // Claimed in the single-flight table first: a read that wants one of these chunks meanwhile
                // waits for this fetch instead of making its own.
                let claimed = self.claim(run);
                match self.load_run(pack, &claimed) {
                    Ok(loaded) => self.release(&claimed, &loaded, None),
                    // The store failed: the readers waiting for these chunks fail with it, not after another
                    // timeout of their own.
                    Err(e @ RepoError::Backend(crate::backend::BackendError::Store { .. })) => {
                        self.release(&claimed, &HashMap::new(), Some(e.to_string()))
                    }
                    // A pack gone (rewritten by a prune) and the like: each reader reads for itself.
                    Err(_) => self.release(&claimed, &HashMap::new(), None),
                }
            }
        }
    }

    /// The chunks of `run` that no other thread is loading, now marked as loading by this one.
    fn claim(&self, run: &[(ChunkId, BlobLocation)]) -> Vec<(ChunkId, BlobLocation)> {
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        let mut claimed = Vec::new();
        for &(id, loc) in run {
            if !self.chunks.contains(&id) && !loading.contains_key(&id) {
                loading.insert(id, Arc::new(std::sync::OnceLock::new()));
                claimed.push((id, loc));
            }
        }
        claimed
    }

    /// Hands the loaded chunks to the waiting readers (and the cache); a chunk not loaded makes its readers
    /// read it themselves.
    fn release(
        &self,
        claimed: &[(ChunkId, BlobLocation)],
        loaded: &HashMap<ChunkId, Arc<Vec<u8>>>,
        failure: Option<String>,
    ) {
        let mut loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        for (id, _) in claimed {
            let outcome = match (loaded.get(id), &failure) {
                (Some(d), _) => {
                    for old in self.chunks.insert(*id, d.clone(), d.capacity()) {
                        self.spare.give_back(old);
                    }
                    Some(Ok(d.clone()))
                }
                (None, Some(f)) => Some(Err(f.clone())),
                (None, None) => None,
            };
            if let Some(slot) = loading.remove(id) {
                let _ = slot.set(outcome);
            }
        }
    }

    /// One ranged read for a run of chunks, each then verified; returns those that verified.
    fn load_run(
        &self,
        pack: PackId,
        run: &[(ChunkId, BlobLocation)],
    ) -> Result<HashMap<ChunkId, Arc<Vec<u8>>>, RepoError> {
        let mut loaded = HashMap::new();
        let Some(first) = run.first() else {
            return Ok(loaded);
        };
        let start = first.1.offset;
        let end = run
            .iter()
            .map(|(_, l)| l.offset + u64::from(l.stored_len))
            .max()
            .unwrap_or(start);
        let mut buf = vec![0u8; (end - start) as usize];
        self.backend.read_at(Object::Pack(pack), start, &mut buf)?;
        for (id, loc) in run {
            let at = (loc.offset - start) as usize;
            let stored = &buf[at..at + loc.stored_len as usize];
            let blob = BlobId::chunk(*id);
            let plain = self
                .codec
                .decode(blob, stored, loc.compression, loc.raw_len);
            let Some(plain) = plain else {
                continue; // the single read that follows reports it
            };
            if let Some(d) = &self.disk {
                d.put(BlobId::chunk(*id), stored);
            }
            loaded.insert(*id, Arc::new(plain));
        }
        Ok(loaded)
    }
}

/// Splits blobs sorted by offset into runs whose gaps are at most `gap` bytes and whose span is at most
/// `MAX_RUN`.
fn runs(blobs: &[(ChunkId, BlobLocation)], gap: u64) -> Vec<&[(ChunkId, BlobLocation)]> {
    let mut out = Vec::new();
    let mut first = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let prev = &blobs[i - 1].1;
            let (run_start, next) = (blobs[first].1.offset, &blobs[i].1);
            let prev_end = prev.offset + u64::from(prev.stored_len);
            next.offset.saturating_sub(prev_end) > gap
                || next.offset + u64::from(next.stored_len) - run_start > MAX_RUN
                || next.offset < prev_end
        };
        if split {
            out.push(&blobs[first..i]);
            first = i;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Compression;

    fn at(offset: u64, len: u32) -> (ChunkId, BlobLocation) {
        let loc = BlobLocation {
            pack: PackId([0; 32]),
            offset,
            stored_len: len,
            raw_len: len,
            compression: Compression::Raw,
        };
        (ChunkId::of(&offset.to_le_bytes()), loc)
    }

    #[test]
    fn runs_split_at_gaps_and_size() {
        let blobs = [at(16, 100), at(116, 100), at(300, 100), at(10_000, 10)];
        let r = runs(&blobs, 100);
        assert_eq!(r.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![3, 1]);
        let big = [at(0, 10 << 20), at(10 << 20, 10 << 20)];
        assert_eq!(runs(&big, 1 << 20).len(), 2);
        assert_eq!(runs(&[], 10).len(), 0);
    }
}
