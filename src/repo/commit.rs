//! Making a snapshot visible: the only moment a backup holds the index lock.
//!
//! Order is what makes a crash at any point harmless: (1) the backup's packs are already durable; (2) their blobs
//! enter the index; (3) the manifest is written atomically; (4) the catalog entry makes it visible. A crash after
//! (3) leaves a manifest the next writer's `reconcile` adds; a crash before leaves only unreferenced packs.

use super::packs::reconcile;
use super::{RepoError, Repository};
use crate::backend::Object;
use crate::format::manifest::Manifest;
use crate::format::pack::PackEntry;
use crate::format::{PackId, SnapshotId};
use crate::index::IndexWriter;
use rocksdb::WriteBatch;

/// A pack this process wrote and made durable.
#[derive(Debug)]
pub struct NewPack {
    pub id: PackId,
    pub entries: Vec<PackEntry>,
}

/// Commits a snapshot whose packs are durable; assigns its ordinal. Returns its id and final manifest.
pub fn commit_snapshot(
    repo: &Repository,
    packs: &[NewPack],
    mut manifest: Manifest,
) -> Result<(SnapshotId, Manifest), RepoError> {
    let index = repo.index_writer()?;
    let mut batch = WriteBatch::default();
    for p in packs {
        IndexWriter::add_pack(&mut batch, p.id, &p.entries);
    }
    index.write(batch)?;
    let recovered = reconcile(repo.backend(), &index)?;
    for what in &recovered.skipped {
        tracing::warn!("skipped while reconciling the index: {what}");
    }
    manifest.ordinal = index.next_ordinal()?;
    let bytes = manifest.encode();
    let id = SnapshotId::of(&bytes);
    repo.backend().write_new(Object::Manifest(id), &bytes)?;
    let mut batch = WriteBatch::default();
    IndexWriter::add_snapshot(&mut batch, id, &manifest, &bytes);
    IndexWriter::set_next_ordinal(&mut batch, manifest.ordinal + 1);
    index.write(batch)?;
    Ok((id, manifest))
}
