//! Making a snapshot visible: the only moment a backup holds the index lock.
//!
//! Order is what makes a crash at any point harmless: (1) the backup's packs are already durable; (2) their blobs
//! enter the index; (3) the manifest is written atomically; (4) the catalog entry makes it visible. A crash after
//! (3) leaves a manifest the next writer's `reconcile` adds; a crash before leaves only unreferenced packs.
//!
//! Before (3), every blob the snapshot reuses from the repository is checked in the index under the lock: a
//! prune that ran during the backup may have removed it as dead. Its pack still exists (prune deletes packs only
//! after every backup that started before it removed index entries has finished), so the entry is restored.

use super::packs::reconcile;
use super::{RepoError, Repository};
use crate::backend::BackendError;
use crate::backend::Object;
use crate::format::manifest::Manifest;
use crate::format::pack::PackEntry;
use crate::format::pack_index::{self, IndexedPack};
use crate::format::sealed::SealedKind;
use crate::format::{BlobId, PackId, PackIndexId, SnapshotId};
use crate::index::BlobLocation;
use crate::index::IndexWriter;
use rocksdb::WriteBatch;
use std::collections::HashSet;

/// A pack this process wrote and made durable.
#[derive(Debug)]
pub struct NewPack {
    pub id: PackId,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

/// Commits a snapshot whose packs are durable; assigns its ordinal. Returns its id and final manifest.
pub fn commit_snapshot(
    repo: &Repository,
    packs: &[NewPack],
    reused: &HashSet<BlobId>,
    mut manifest: Manifest,
) -> Result<(SnapshotId, Manifest), RepoError> {
    let index = repo.index_writer()?;
    let mut batch = WriteBatch::default();
    for p in packs {
        IndexWriter::add_pack(&mut batch, p.id, &p.entries);
    }
    index.write(batch)?;
    publish_pack_index(repo, packs)?;
    // Other machines' snapshots must be in this index before the ordinal is chosen: under the lease, the
    // listing below shows every manifest committed before.
    let lease = repo.commit_lease()?;
    let recovered = reconcile(repo, &index, repo.state().follows_store())?;
    for what in recovered
        .skipped_packs
        .iter()
        .chain(&recovered.skipped_manifests)
    {
        tracing::warn!("skipped while reconciling the index: {what}");
    }
    for (id, m) in &recovered.conflicts {
        tracing::warn!(
            "snapshot {id} not added: its ordinal {} belongs to another snapshot; run `backupfs repair index`",
            m.ordinal
        );
    }
    restore_reused(repo, &index, reused)?;
    manifest.ordinal = index.next_ordinal()?;
    let bytes = (repo.codec()).seal_object(SealedKind::Manifest, manifest.encode())?;
    let id = SnapshotId::of(&bytes);
    if let Some(lease) = &lease {
        lease.still_held()?;
    }
    repo.backend().write_new(Object::Manifest(id), &bytes)?;
    drop(lease);
    let mut batch = WriteBatch::default();
    IndexWriter::add_snapshot(&mut batch, id, &manifest, &bytes);
    IndexWriter::set_next_ordinal(&mut batch, manifest.ordinal + 1);
    index.write(batch)?;
    Ok((id, manifest))
}

/// Writes the trailers of this backup's packs as one pack index object, before the manifest that needs them:
/// a machine attaching later reads it instead of every pack (see `format::pack_index`).
pub fn publish_pack_index(repo: &Repository, packs: &[NewPack]) -> Result<(), RepoError> {
    if packs.is_empty() {
        return Ok(());
    }
    let listed: Vec<IndexedPack> = (packs.iter())
        .map(|p| IndexedPack {
            id: p.id,
            size: p.size,
            entries: p.entries.clone(),
        })
        .collect();
    let bytes = (repo.codec()).seal_object(SealedKind::PackIndex, pack_index::encode(&listed))?;
    let id = PackIndexId::of(&bytes);
    match repo.backend().write_new(Object::PackIndex(id), &bytes) {
        Ok(()) | Err(BackendError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Puts back index entries of reused blobs that a concurrent prune removed.
fn restore_reused(
    repo: &Repository,
    index: &IndexWriter,
    reused: &HashSet<BlobId>,
) -> Result<(), RepoError> {
    let mut missing: Vec<BlobId> = Vec::new();
    for id in reused {
        if index.blob(*id)?.is_none() {
            missing.push(*id);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(
        "{} reused blobs were pruned during the backup; restoring their index entries",
        missing.len()
    );
    let mut batch = WriteBatch::default();
    for id in missing {
        let loc = find_blob(repo, id)?.ok_or(RepoError::BlobMissing { id })?;
        IndexWriter::put_blob(&mut batch, id, &loc);
    }
    Ok(index.write(batch)?)
}

/// Where a blob still is: this backup's view of the index if its pack still exists, else any pack's trailer.
fn find_blob(repo: &Repository, id: BlobId) -> Result<Option<BlobLocation>, RepoError> {
    if let Some(loc) = repo.locate(id)? {
        match repo.backend().size(Object::Pack(loc.pack)) {
            Ok(_) => return Ok(Some(loc)),
            Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for pack in repo.backend().list_packs()? {
        let Ok(entries) = super::read_pack_trailer(repo, pack) else {
            continue;
        };
        if let Some(e) = entries.iter().find(|e| e.id == id) {
            let loc = BlobLocation {
                pack,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                compression: e.compression,
            };
            return Ok(Some(loc));
        }
    }
    Ok(None)
}
