//! `repair index`: rebuilds the RocksDB index from the packs' trailers and the manifests, without making any
//! readable data unreadable.
//!
//! Before the rebuild, what only the old index still knows is put back into the backend: a manifest file that is
//! missing or damaged is rewritten from the index's copy when that copy still hashes to the snapshot id, and
//! the blobs of a pack whose header, trailer or footer is damaged are salvaged (`repo::salvage_pack`) into a
//! new pack. The damaged pack itself is left in place, unindexed, for whoever wants to look at it.
//!
//! The new index is built beside the old one and swapped in with two renames under the index lock and the
//! prune lock, so backups wait for it and prunes are excluded. Mounts notice the new index at their next refresh
//! and reopen it. A structural check of the result then names whatever could not be kept.

mod config;

pub use config::{repair_config, ConfigRepair};

use crate::backend::{BackendError, Object};
use crate::check::check;
use crate::format::manifest::Manifest;
use crate::format::pack::PackEntry;
use crate::format::sealed::SealedKind;
use crate::format::{PackId, SnapshotId};
use crate::index::{CatalogEntry, IndexWriter};
use crate::repo::{
    read_manifest, read_pack_trailer, reconcile, salvage_pack, RepoError, Repository,
};
use crate::vfs::naming;
use std::collections::HashMap;

/// What the repair did and what it could not keep.
#[derive(Debug, Default)]
pub struct RepairReport {
    pub packs: usize,
    pub snapshots: usize,
    /// What was put back or worked around, one line each.
    pub repaired: Vec<String>,
    /// Packs the rebuilt index leaves out (unreadable; their verified blobs are in `repaired`'s new packs).
    pub skipped: Vec<String>,
    /// The check of the rebuilt index: damage that remains, one line per damaged object.
    pub damage: Vec<String>,
}

pub fn rebuild_index(repo: &Repository) -> Result<RepairReport, RepoError> {
    let _prune = repo.prune_lock()?;
    let state = repo.state();
    let (live, fresh, old) = (state.index(), state.index_rebuild(), state.index_old());
    let io = |p: &std::path::Path| {
        let p = p.to_path_buf();
        move |e| RepoError::from(BackendError::io(p, e))
    };
    for dir in [&fresh, &old] {
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(io(dir))?;
        }
    }
    // Holding the live index's lock keeps backups from committing into the index being replaced.
    let held = repo.index_writer()?;
    let mut report = RepairReport::default();
    restore_manifests(repo, &mut report)?;
    salvage_packs(repo, &mut report)?;
    let rebuilt = {
        let writer = IndexWriter::create(&fresh, &state.index_rebuild_lock())?;
        let rebuilt = reconcile(repo, &writer, false)?;
        renumber(repo, &writer, &rebuilt.conflicts, &mut report)?;
        rebuilt
    };
    drop(held);
    if live.exists() {
        crate::backend::crash::before_change(&"index moved aside");
        std::fs::rename(&live, &old).map_err(io(&live))?;
    }
    crate::backend::crash::before_change(&"rebuilt index moved into place");
    std::fs::rename(&fresh, &live).map_err(io(&fresh))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    let _ = std::fs::remove_file(state.index_rebuild_lock());
    (report.packs, report.snapshots) = (rebuilt.packs, rebuilt.snapshots);
    report.skipped = rebuilt.skipped_packs;
    // A manifest that neither the backend nor the old index has intact is a snapshot lost.
    report.damage.extend(rebuilt.skipped_manifests);
    repo.reopen_index()?;
    report.damage.extend(check(repo, 0.0)?.damage);
    Ok(report)
}

/// Rewrites each manifest file that is missing or damaged from the old index's copy, if that copy is intact.
fn restore_manifests(repo: &Repository, report: &mut RepairReport) -> Result<(), RepoError> {
    // An index that cannot be read at all (replaced by an empty one) knows nothing to restore.
    let known = repo.snapshots(None).unwrap_or_default();
    // A snapshot an interrupted prune was forgetting stays forgotten.
    let forgetting = repo.forgetting().unwrap_or_default();
    for entry in known.into_iter().filter(|e| !forgetting.contains(&e.id)) {
        let Err(problem) = read_manifest(repo, entry.id) else {
            continue;
        };
        let bytes = entry.manifest_file();
        let what = describe(&entry);
        if SnapshotId::of(&bytes) != entry.id {
            report.damage.push(format!(
                "{what}: manifest unreadable ({problem}) and the index's copy does not match its id"
            ));
            continue;
        }
        match repo.backend().remove(Object::Manifest(entry.id)) {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        repo.backend()
            .write_new(Object::Manifest(entry.id), &bytes)?;
        report.repaired.push(format!(
            "{what}: manifest was unreadable ({problem}); rewritten from the index"
        ));
    }
    Ok(())
}

fn describe(s: &CatalogEntry) -> String {
    format!(
        "snapshot {} ({} {})",
        s.id,
        s.manifest.account,
        naming::rfc3339_utc(s.manifest.time)
    )
}

/// Gives each snapshot whose ordinal another one has a new ordinal: a new manifest, same content otherwise,
/// written before the old one is removed (a crash in between leaves both, and the next repair renumbers again).
fn renumber(
    repo: &Repository,
    writer: &IndexWriter,
    conflicts: &[(SnapshotId, Manifest)],
    report: &mut RepairReport,
) -> Result<(), RepoError> {
    for (old_id, manifest) in conflicts {
        let mut manifest = manifest.clone();
        let taken = manifest.ordinal;
        manifest.ordinal = writer.next_ordinal()?;
        let bytes = (repo.codec()).seal_object(SealedKind::Manifest, manifest.encode())?;
        let id = SnapshotId::of(&bytes);
        match repo.backend().write_new(Object::Manifest(id), &bytes) {
            Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut batch = rocksdb::WriteBatch::default();
        IndexWriter::add_snapshot(&mut batch, id, &manifest, &bytes);
        IndexWriter::set_next_ordinal(&mut batch, manifest.ordinal + 1);
        writer.write(batch)?;
        repo.backend().remove(Object::Manifest(*old_id))?;
        report.repaired.push(format!(
            "snapshot {old_id}: its ordinal {taken} belonged to another snapshot; now snapshot {id} with \
             ordinal {}",
            manifest.ordinal
        ));
    }
    Ok(())
}

/// Copies the verified blobs of every pack whose trailer cannot be read into a new pack.
fn salvage_packs(repo: &Repository, report: &mut RepairReport) -> Result<(), RepoError> {
    let mut old_index: Option<HashMap<PackId, Vec<PackEntry>>> = None;
    for pack in repo.backend().list_packs()? {
        let Err(problem) = read_pack_trailer(repo, pack) else {
            continue;
        };
        let by_pack = old_index.get_or_insert_with(|| entries_by_pack(repo));
        let known = by_pack.get(&pack).map(Vec::as_slice).unwrap_or_default();
        let salvaged = match salvage_pack(repo.backend(), repo.codec(), pack, known) {
            Ok(salvaged) => salvaged,
            Err(e) => {
                // Not even readable whole (a FIFO, an I/O error): nothing to salvage; the check names the loss.
                report
                    .repaired
                    .push(format!("pack {pack}: {problem}; not salvaged: {e}"));
                continue;
            }
        };
        let mut builder = repo.codec().new_pack();
        for (e, stored) in &salvaged.intact {
            builder.add(e.id, stored, e.compression, e.raw_len);
        }
        let kept = salvaged.intact.len();
        let into = if builder.is_empty() {
            String::new()
        } else {
            let (id, bytes, _) = repo.codec().finish_pack(builder)?;
            repo.backend().write_new(Object::Pack(id), &bytes)?;
            format!(" into pack {id}")
        };
        // Candidates that do not verify may be noise of the trailer scan: the check afterwards names the blobs
        // a snapshot actually lost.
        let failed = salvaged.failed.len();
        report.repaired.push(format!(
            "pack {pack}: {problem}; salvaged {kept} blobs that verify{into} ({failed} candidates did not); \
             the damaged file is left unindexed"
        ));
    }
    Ok(())
}

/// The old index's blob locations grouped by pack (empty if the old index cannot be read).
fn entries_by_pack(repo: &Repository) -> HashMap<PackId, Vec<PackEntry>> {
    let mut out: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for (id, loc) in repo.indexed_blobs().unwrap_or_default() {
        out.entry(loc.pack).or_default().push(PackEntry {
            id,
            compression: loc.compression,
            offset: loc.offset,
            stored_len: loc.stored_len,
            raw_len: loc.raw_len,
        });
    }
    out
}
