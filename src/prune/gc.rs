//! Step 5 of prune: deleting and rewriting packs, judged by which of their blobs the index still points to.

use super::PruneReport;
use crate::backend::{BackendError, Object};
use crate::format::pack::PackEntry;
use crate::format::pack_index::IndexedPack;
use crate::format::PackId;
use crate::index::IndexWriter;
use crate::repo::{read_pack_trailer, RepoError, Repository};
use rocksdb::WriteBatch;

/// A pack's blobs split by whether the index still points at this copy.
struct PackUse {
    live: Vec<PackEntry>,
    live_bytes: u64,
    dead_bytes: u64,
}

fn pack_use(
    index: &IndexWriter,
    entries: Vec<PackEntry>,
    pack: PackId,
) -> Result<PackUse, RepoError> {
    let mut usage = PackUse {
        live: Vec::new(),
        live_bytes: 0,
        dead_bytes: 0,
    };
    for e in entries {
        let here = index
            .blob(e.id)?
            .is_some_and(|loc| loc.pack == pack && loc.offset == e.offset);
        if here {
            usage.live_bytes += e.stored_len as u64;
            usage.live.push(e);
        } else {
            usage.dead_bytes += e.stored_len as u64;
        }
    }
    Ok(usage)
}

pub fn collect_packs(
    repo: &Repository,
    threshold: f64,
    report: &mut PruneReport,
) -> Result<(), RepoError> {
    let index = repo.index_writer()?;
    for pack in index.packs()? {
        let size = match repo.backend().size(Object::Pack(pack)) {
            Ok(size) => size,
            Err(BackendError::NotFound { .. }) => {
                // Deleted by a prune that died before forgetting it.
                let mut batch = WriteBatch::default();
                IndexWriter::remove_pack(&mut batch, pack);
                index.write(batch)?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let usage = pack_use(&index, read_pack_trailer(repo, pack)?, pack)?;
        let total = usage.live_bytes + usage.dead_bytes;
        if usage.live.is_empty() {
            delete_pack(repo, &index, pack)?;
            report.packs_deleted += 1;
            report.bytes_reclaimed += size;
        } else if total > 0 && usage.dead_bytes as f64 >= threshold * total as f64 {
            let written = rewrite_pack(repo, &index, pack, &usage.live)?.size;
            delete_pack(repo, &index, pack)?;
            report.packs_rewritten += 1;
            report.bytes_reclaimed += size.saturating_sub(written);
        }
    }
    Ok(())
}

/// The file first, then the index's record of it: a crash in between leaves a record `collect_packs` clears.
fn delete_pack(repo: &Repository, index: &IndexWriter, pack: PackId) -> Result<(), RepoError> {
    match repo.backend().remove(Object::Pack(pack)) {
        Ok(()) | Err(BackendError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut batch = WriteBatch::default();
    IndexWriter::remove_pack(&mut batch, pack);
    Ok(index.write(batch)?)
}

/// Copies a pack's live blobs, each verified, into a new pack and points the index at it. Returns the new pack
/// as a pack index lists it.
pub(super) fn rewrite_pack(
    repo: &Repository,
    index: &IndexWriter,
    pack: PackId,
    live: &[PackEntry],
) -> Result<IndexedPack, RepoError> {
    let mut builder = repo.codec().new_pack();
    for e in live {
        let mut stored = vec![0u8; e.stored_len as usize];
        repo.backend()
            .read_at(Object::Pack(pack), e.offset, &mut stored)?;
        let intact = (repo.codec())
            .decode(e.id, &stored, e.compression, e.raw_len)
            .is_some();
        if !intact {
            // Copying damage would hide it; leave the pack alone and let `check` report it.
            return Err(RepoError::BlobCorrupt { id: e.id, pack });
        }
        builder.add(e.id, &stored, e.compression, e.raw_len);
    }
    let (new_id, bytes, entries) = repo.codec().finish_pack(builder)?;
    repo.backend().write_new(Object::Pack(new_id), &bytes)?;
    let mut batch = WriteBatch::default();
    IndexWriter::add_pack(&mut batch, new_id, &entries);
    index.write(batch)?;
    Ok(IndexedPack {
        id: new_id,
        size: bytes.len() as u64,
        entries,
    })
}
