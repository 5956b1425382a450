//! `copy`: makes a replica hold every snapshot of the primary (or of one account) that it lacks, moving only
//! what is missing, in an order that keeps the replica whole at every moment:
//!
//! 1. per snapshot (oldest first), the blobs it references are found by walking its trees at the primary;
//! 2. the primary's packs holding blobs the replica lacks are read whole, verified (their bytes hash to their
//!    name) and written to the replica under the same name; a pack index object describing them follows;
//! 3. under the replica's commit lease (no prune of the replica deletes a pack meanwhile), every blob of the
//!    snapshot is checked to be in a pack the replica lists, and only then is the manifest written, byte for
//!    byte as at the primary.
//!
//! A copy killed at any moment leaves at most packs no manifest references yet; the next copy finds them in
//! the replica's listing and sends them no second time. Nothing is ever deleted at the replica.

use super::{same_repository, ReplicaError};
use crate::backend::{BackendError, Object};
use crate::format::{BlobId, FormatError, PackId, SnapshotId};
use crate::index::{CatalogEntry, IndexWriter};
use crate::repo::{mark_live, pack_entries_in, publish_pack_index, NewPack, RepoError, Repository};
use rocksdb::WriteBatch;
use std::collections::{BTreeSet, HashSet};

#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Only this account's snapshots.
    pub account: Option<String>,
}

/// What a copy did: every count is of objects written to the replica by this run.
#[derive(Debug, Default)]
pub struct CopyReport {
    /// Snapshots copied, with their manifests' accounts and times, oldest first.
    pub copied: Vec<CatalogEntry>,
    /// Snapshots the replica had already, or had pruned (older than its oldest of that account).
    pub present: usize,
    pub packs_sent: u64,
    /// Bytes of packs, pack index objects and manifests written.
    pub bytes_sent: u64,
    /// Packs, pack index objects and manifests written.
    pub objects_sent: u64,
    /// Snapshots that could not be copied, one line each naming the snapshot and why.
    pub failed: Vec<String>,
}

/// Copies to `replica` the snapshots of `primary` it lacks.
pub fn copy(
    primary: &Repository,
    replica: &Repository,
    opts: &CopyOptions,
) -> Result<CopyReport, ReplicaError> {
    same_repository(primary, replica)?;
    primary.refresh()?;
    let mut report = CopyReport::default();
    let at_replica = replica.snapshots(None)?;
    let there: HashSet<SnapshotId> = at_replica.iter().map(|s| s.id).collect();
    let horizons = super::horizons(&at_replica);
    let forgetting = primary.forgetting()?;
    let mut wanted = primary.snapshots(opts.account.as_deref())?;
    wanted.retain(|s| !forgetting.contains(&s.id));
    let before = wanted.len();
    wanted.retain(|s| super::wanted_by_replica(s, &there, &horizons));
    report.present = before - wanted.len();
    wanted.sort_by_key(|s| s.manifest.ordinal);
    for snapshot in wanted {
        let outcome = match copy_snapshot(primary, replica, &snapshot, &mut report) {
            // A pack the primary's prune rewrote meanwhile: its blobs are in a new pack by now.
            Err(RepoError::Backend(BackendError::NotFound { .. })) => {
                primary.refresh()?;
                copy_snapshot(primary, replica, &snapshot, &mut report)
            }
            other => other,
        };
        match outcome {
            Ok(()) => report.copied.push(snapshot),
            Err(e) => report.failed.push(format!(
                "snapshot {} ({} {}): {e}",
                snapshot.id,
                snapshot.manifest.account,
                crate::vfs::naming::rfc3339_utc(snapshot.manifest.time)
            )),
        }
    }
    Ok(report)
}

/// Sends one snapshot's missing packs, then its manifest.
fn copy_snapshot(
    primary: &Repository,
    replica: &Repository,
    snapshot: &CatalogEntry,
    report: &mut CopyReport,
) -> Result<(), RepoError> {
    let mut blobs = HashSet::new();
    mark_live(primary, std::slice::from_ref(snapshot), &mut blobs)?;
    let mut packs = BTreeSet::new();
    for &id in &blobs {
        if !replica.usable_blob(id)? {
            let at = primary.locate(id)?.ok_or(RepoError::BlobMissing { id })?;
            packs.insert(at.pack);
        }
    }
    let mut sent = Vec::with_capacity(packs.len());
    for pack in packs {
        sent.push(send_pack(primary, replica, pack, report)?);
    }
    if !sent.is_empty() {
        publish_pack_index(replica, &sent)?;
        report.objects_sent += 1;
    }
    commit_copy(primary, replica, snapshot, &blobs, &sent, report)
}

/// Reads a pack whole at the primary and writes it, verified, under the same name at the replica.
fn send_pack(
    primary: &Repository,
    replica: &Repository,
    pack: PackId,
    report: &mut CopyReport,
) -> Result<NewPack, RepoError> {
    let bytes = primary.backend().read_all(Object::Pack(pack))?;
    if PackId::of(&bytes) != pack {
        // Never copy damage: the replica keeps its own good copy, or none.
        return Err(RepoError::Format {
            object: format!("pack {pack} at {}", primary.location()),
            source: FormatError::Checksum { object: "pack" },
        });
    }
    let entries = pack_entries_in(primary, pack, &bytes)?;
    match replica.backend().write_new(Object::Pack(pack), &bytes) {
        Ok(()) => {
            report.packs_sent += 1;
            report.objects_sent += 1;
            report.bytes_sent += bytes.len() as u64;
        }
        // Sent by a copy that died before its manifest, or by another copy running now: the same bytes.
        Err(BackendError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(NewPack {
        id: pack,
        size: bytes.len() as u64,
        entries,
    })
}

/// Indexes the sent packs at the replica and, under its commit lease, writes the manifest once every blob of
/// the snapshot is in a pack the replica lists.
fn commit_copy(
    primary: &Repository,
    replica: &Repository,
    snapshot: &CatalogEntry,
    blobs: &HashSet<BlobId>,
    sent: &[NewPack],
    report: &mut CopyReport,
) -> Result<(), RepoError> {
    let index = replica.index_writer()?;
    let mut batch = WriteBatch::default();
    for p in sent {
        IndexWriter::add_pack(&mut batch, p.id, &p.entries);
    }
    index.write(batch)?;
    let lease = replica.commit_lease()?;
    let listed: HashSet<PackId> = replica.backend().list_packs()?.into_iter().collect();
    for &id in blobs {
        let at = index.blob(id)?.ok_or(RepoError::BlobMissing { id })?;
        if !listed.contains(&at.pack) {
            return Err(RepoError::BlobMissing { id });
        }
    }
    let taken = (index.snapshots()?.into_iter())
        .find(|s| s.manifest.ordinal == snapshot.manifest.ordinal && s.id != snapshot.id);
    if let Some(other) = taken {
        return Err(RepoError::Format {
            object: format!("snapshot {}", snapshot.id),
            source: FormatError::Invalid {
                object: "manifest",
                offset: 0,
                what: format!(
                    "its ordinal {} belongs to snapshot {} at the replica (was it backed up to directly?)",
                    snapshot.manifest.ordinal, other.id
                ),
            },
        });
    }
    let bytes = manifest_bytes(primary, snapshot)?;
    if let Some(lease) = &lease {
        lease.still_held()?;
    }
    match (replica.backend()).write_new(Object::Manifest(snapshot.id), &bytes) {
        Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    drop(lease);
    report.objects_sent += 1;
    report.bytes_sent += bytes.len() as u64;
    let mut batch = WriteBatch::default();
    IndexWriter::add_snapshot(&mut batch, snapshot.id, &snapshot.manifest, &bytes);
    let next = index.next_ordinal()?.max(snapshot.manifest.ordinal + 1);
    IndexWriter::set_next_ordinal(&mut batch, next);
    index.write(batch)?;
    drop(index);
    // The next snapshot's dedup lookups read the replica's index through its reader, which must see these.
    replica.refresh()
}

/// The manifest file as the primary stores it; if that is unreadable, the primary index's copy, which hashes
/// to the same id (the replica then repairs what the primary lost).
fn manifest_bytes(primary: &Repository, snapshot: &CatalogEntry) -> Result<Vec<u8>, RepoError> {
    let id = snapshot.id;
    match primary.backend().read_all(Object::Manifest(id)) {
        Ok(bytes) if SnapshotId::of(&bytes) == id => return Ok(bytes),
        Ok(_) | Err(BackendError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let kept = snapshot.manifest_file();
    if SnapshotId::of(&kept) == id {
        return Ok(kept);
    }
    Err(RepoError::Format {
        object: format!("snapshot {id}"),
        source: FormatError::Checksum { object: "manifest" },
    })
}
