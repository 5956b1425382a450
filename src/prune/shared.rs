//! Steps 3 to 5 of prune for a store that several machines write (a state directory that follows it).
//!
//! Backups and mounts on other machines cannot be waited for, so space is reclaimed in two prunes, dated by the
//! store's clock:
//! - A pack that no catalog snapshot references, and that is itself older than the grace period (a younger one
//!   may belong to a backup still running elsewhere), is *condemned*: `condemned/<pack id>` is written. A
//!   rewritten pack (its live blobs copied to a new pack) is condemned too, instead of being deleted.
//! - A later prune deletes a condemned pack once its mark is older than the grace period and the pack is still
//!   unreferenced; a pack referenced again meanwhile (a backup deduplicated against it) is pardoned: its mark is
//!   removed.
//!
//! All of step 5 happens under the commit lease, after a sync: a backup commits either before (its snapshot is
//! then marked live here) or after (its own sync then sees the deleted pack gone, and it fails rather than
//! reference it). The index keeps every blob entry of every pack present, exactly as a machine attaching
//! afresh would build it; liveness is the set of blobs the catalog's snapshots reference.

use super::PruneReport;
use crate::backend::{BackendError, Dir, Object};
use crate::format::pack::PackEntry;
use crate::format::pack_index::{self, IndexedPack};
use crate::format::sealed::SealedKind;
use crate::format::{BlobId, PackId, PackIndexId};
use crate::index::{CatalogEntry, IndexWriter};
use crate::repo::{mark_live, read_pack_trailer, reconcile, RepoError, Repository};
use rocksdb::WriteBatch;
use std::collections::{HashMap, HashSet};

/// Step 3 for a shared store: the forgotten snapshots leave the catalog; blob entries stay (see the module).
pub fn forget(repo: &Repository, forget: &[CatalogEntry]) -> Result<(), RepoError> {
    let index = repo.index_writer()?;
    let mut batch = WriteBatch::default();
    for s in forget {
        IndexWriter::remove_snapshot(&mut batch, s.id, &s.manifest);
    }
    Ok(index.write(batch)?)
}

/// Step 5 for a shared store. `live` holds what the kept snapshots reference; snapshots committed since (on any
/// machine) are added under the lease.
pub fn collect_packs(
    repo: &Repository,
    mut live: HashSet<BlobId>,
    threshold: f64,
    grace_s: i64,
    report: &mut PruneReport,
) -> Result<(), RepoError> {
    let index = repo.index_writer()?;
    let Some(mut lease) = repo.commit_lease()? else {
        return Ok(());
    };
    reconcile(repo, &index, true)?;
    repo.refresh()?;
    mark_live(repo, &index.snapshots()?, &mut live)?;
    let packs = repo.backend().list_aged(Dir::Packs)?;
    let marks = repo.backend().list_aged(Dir::Condemned)?;
    let mut survivors: Vec<IndexedPack> = Vec::new();
    let marked: HashMap<PackId, i64> = (marks.entries.iter())
        .filter_map(|m| Some((PackId::from_hex(&m.name)?, marks.now - m.modified)))
        .collect();
    for listed in &packs.entries {
        let Some(pack) = pack_id(&listed.name) else {
            continue;
        };
        let pack_age = packs.now - listed.modified;
        if pack_age < grace_s {
            continue; // possibly a backup's, still running elsewhere; its own pack index covers it
        }
        lease.renew_if_due()?;
        let entries = match read_pack_trailer(repo, pack) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("prune leaves {pack} alone: {e}");
                continue;
            }
        };
        let (here, dead_bytes) = live_here(&index, &live, pack, &entries)?;
        let mark = marked.get(&pack).copied();
        if here.is_empty() {
            match mark {
                Some(age) if age >= grace_s => {
                    delete(repo, &index, pack, &entries)?;
                    report.packs_deleted += 1;
                    report.bytes_reclaimed += listed.size;
                }
                Some(_) => {}
                None => {
                    repo.backend().write_new(Object::Condemned(pack), b"")?;
                    report.packs_condemned += 1;
                }
            }
            continue;
        }
        if mark.is_some() {
            remove_if_present(repo, Object::Condemned(pack))?;
        }
        survivors.push(IndexedPack {
            id: pack,
            size: listed.size,
            entries: entries.clone(),
        });
        let total: u64 = dead_bytes + here.iter().map(|e| e.stored_len as u64).sum::<u64>();
        if total > 0 && dead_bytes as f64 >= threshold * total as f64 && dead_bytes > 0 {
            survivors.pop();
            survivors.push(super::gc::rewrite_pack(repo, &index, pack, &here)?);
            repo.backend().write_new(Object::Condemned(pack), b"")?;
            report.packs_rewritten += 1;
            report.packs_condemned += 1;
        }
    }
    lease.renew_if_due()?;
    consolidate_pack_indexes(repo, &survivors, grace_s)
}

/// Replaces the pack index objects older than the grace period by one listing every pack that prune kept from
/// that age: those objects list only packs at least as old (a backup writes its packs before its index object),
/// so the new one covers all they still describe. Younger objects stay for the backups they describe.
fn consolidate_pack_indexes(
    repo: &Repository,
    survivors: &[IndexedPack],
    grace_s: i64,
) -> Result<(), RepoError> {
    let listing = repo.backend().list_aged(Dir::Indexes)?;
    let old: Vec<PackIndexId> = (listing.entries.iter())
        .filter(|l| listing.now - l.modified >= grace_s)
        .filter_map(|l| PackIndexId::from_hex(&l.name))
        .collect();
    if old.len() <= 1 {
        return Ok(());
    }
    let mut written = HashSet::new();
    for part in survivors.chunks(pack_index::MAX_PACKS) {
        let bytes = (repo.codec()).seal_object(SealedKind::PackIndex, pack_index::encode(part))?;
        let id = PackIndexId::of(&bytes);
        match repo.backend().write_new(Object::PackIndex(id), &bytes) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        written.insert(id);
    }
    for id in old.into_iter().filter(|id| !written.contains(id)) {
        remove_if_present(repo, Object::PackIndex(id))?;
    }
    Ok(())
}

/// The pack's entries that a live blob's index entry points to (an absent entry is pointed here again), and the
/// bytes of the others.
fn live_here(
    index: &IndexWriter,
    live: &HashSet<BlobId>,
    pack: PackId,
    entries: &[PackEntry],
) -> Result<(Vec<PackEntry>, u64), RepoError> {
    let (mut here, mut dead) = (Vec::new(), 0u64);
    let mut restore = WriteBatch::default();
    for e in entries {
        let at = index.blob(e.id)?;
        let points_here = at
            .as_ref()
            .is_none_or(|l| l.pack == pack && l.offset == e.offset);
        if live.contains(&e.id) && points_here {
            if at.is_none() {
                IndexWriter::add_pack(&mut restore, pack, std::slice::from_ref(e));
            }
            here.push(e.clone());
        } else {
            dead += e.stored_len as u64;
        }
    }
    index.write(restore)?;
    Ok((here, dead))
}

/// The pack first, then the index entries that point into it, then its mark: a crash in between leaves a mark
/// without a pack (removed by the next prune) or entries a sync drops.
fn delete(
    repo: &Repository,
    index: &IndexWriter,
    pack: PackId,
    entries: &[PackEntry],
) -> Result<(), RepoError> {
    remove_if_present(repo, Object::Pack(pack))?;
    let mut batch = WriteBatch::default();
    IndexWriter::remove_pack(&mut batch, pack);
    for e in entries {
        if index.blob(e.id)?.is_some_and(|l| l.pack == pack) {
            IndexWriter::remove_blob(&mut batch, e.id);
        }
    }
    index.write(batch)?;
    remove_if_present(repo, Object::Condemned(pack))
}

fn remove_if_present(repo: &Repository, obj: Object) -> Result<(), RepoError> {
    match repo.backend().remove(obj) {
        Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pack_id(listed_name: &str) -> Option<PackId> {
    let (_, file) = listed_name.split_once('/')?;
    PackId::from_hex(file.strip_suffix(".pack")?)
}
