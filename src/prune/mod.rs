//! `prune`: forget the snapshots a retention policy does not keep, and reclaim the space only they used.
//!
//! Safe beside backups and mounts, and after a crash at any point:
//! 1. Under `locks/prune.lock` (one prune or repair at a time), decide per account what to forget.
//! 2. Mark the snapshots to forget in the index ("F" keys), then delete their manifests, so that no later
//!    `reconcile` can bring them back.
//! 3. Under the index lock: drop their catalog entries (mounts stop showing them within one refresh), mark
//!    everything the remaining snapshots reference, and remove every other blob from the index. From then on
//!    no new backup can deduplicate against a dead blob.
//! 4. Wait for backups that were running at step 3: they may have looked up a dead blob before it was removed
//!    (their commit restores such entries; see `repo::commit`).
//! 5. Under the index lock: delete packs no index entry points to, and rewrite packs whose dead share passes
//!    the threshold (live blobs copied and verified into new packs, index updated, old pack deleted).
//!
//! A crash leaves only work undone: dead blobs still in packs (the next prune deletes them), or a pack both
//! rewritten and not yet deleted. Every blob a catalog snapshot references stays findable and intact.

mod gc;
pub mod policy;
mod shared;

use crate::backend::{BackendError, Object};
use crate::format::manifest::Manifest;
use crate::format::SnapshotId;
use crate::index::{CatalogEntry, IndexWriter};
use crate::repo::{mark_live, RepoError, Repository};
use policy::Policy;
use rocksdb::WriteBatch;
use std::collections::{BTreeMap, HashSet};

pub struct PruneOptions {
    pub account: Option<String>,
    pub policy: Policy,
    pub dry_run: bool,
    /// Rewrite a pack once this fraction of its bytes is dead (0.0..=1.0).
    pub repack_threshold: f64,
    /// For a store several machines write: seconds (store clock) a pack must have been unreferenced, and
    /// existed, before it is deleted. None: `DEFAULT_GRACE_S`. A local repository reclaims at once.
    pub grace_s: Option<i64>,
}

/// The grace period of a shared store: longer than any backup runs, so that a backup never loses a blob it
/// deduplicated against.
pub const DEFAULT_GRACE_S: i64 = 24 * 3600;

#[derive(Debug, Default)]
pub struct PruneReport {
    pub forgotten: Vec<(SnapshotId, Manifest)>,
    pub kept: usize,
    pub dead_blobs: u64,
    pub dead_bytes: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub bytes_reclaimed: u64,
    pub waited_for_backups: usize,
    /// Packs marked for deletion by a later prune (shared stores only).
    pub packs_condemned: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("no retention policy given: refusing to forget every snapshot (use --keep-daily 30, for example)")]
    NoPolicy,
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Splits the catalog into what the policy keeps and what it forgets, per account.
fn plan(snapshots: &[CatalogEntry], opts: &PruneOptions) -> (Vec<CatalogEntry>, Vec<CatalogEntry>) {
    let mut by_account: BTreeMap<&str, Vec<&CatalogEntry>> = BTreeMap::new();
    for s in snapshots {
        by_account.entry(&s.manifest.account).or_default().push(s);
    }
    let (mut keep, mut forget) = (Vec::new(), Vec::new());
    for (account, snaps) in by_account {
        let in_scope = opts.account.as_deref().is_none_or(|a| a == account);
        let times: Vec<_> = snaps.iter().map(|s| s.manifest.time).collect();
        let kept = if in_scope {
            policy::keep(&times, &opts.policy)
        } else {
            (0..snaps.len()).collect()
        };
        for (i, s) in snaps.into_iter().enumerate() {
            if kept.contains(&i) {
                keep.push(s.clone())
            } else {
                forget.push(s.clone())
            }
        }
    }
    (keep, forget)
}

pub fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneReport, PruneError> {
    if opts.policy.is_empty() {
        return Err(PruneError::NoPolicy);
    }
    let _lock = repo.prune_lock()?;
    repo.refresh()?;
    let (keep, forget) = plan(&repo.snapshots(None)?, opts);
    let mut report = PruneReport {
        kept: keep.len(),
        ..Default::default()
    };
    report.forgotten = forget.iter().map(|s| (s.id, s.manifest.clone())).collect();
    // Most of the marking happens before any lock is taken; the commit below only tops it up.
    let mut live = HashSet::new();
    mark_live(repo, &keep, &mut live)?;
    if opts.dry_run {
        for (id, loc) in repo.indexed_blobs()? {
            if !live.contains(&id) {
                report.dead_blobs += 1;
                report.dead_bytes += loc.stored_len as u64;
            }
        }
        return Ok(report);
    }
    // Recorded before any manifest goes, so that a prune killed in between leaves snapshots that `check` and
    // `repair` know are being forgotten, not damaged.
    let mut batch = WriteBatch::default();
    for s in &forget {
        IndexWriter::mark_forgetting(&mut batch, s.id);
    }
    repo.index_writer()?.write(batch).map_err(RepoError::from)?;
    for s in &forget {
        match repo.backend().remove(Object::Manifest(s.id)) {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(RepoError::from(e).into()),
        }
    }
    if repo.state().follows_store() {
        shared::forget(repo, &forget)?;
        let grace = opts.grace_s.unwrap_or(DEFAULT_GRACE_S);
        shared::collect_packs(repo, live, opts.repack_threshold, grace, &mut report)?;
        return Ok(report);
    }
    let running = forget_and_drop_dead(repo, &forget, live, &mut report)?;
    report.waited_for_backups = running.len();
    if !running.is_empty() {
        tracing::info!(
            "waiting for {} running backups before deleting packs",
            running.len()
        );
    }
    repo.wait_for_backups(&running);
    gc::collect_packs(repo, opts.repack_threshold, &mut report)?;
    Ok(report)
}

/// Step 3: under the index lock, drops the forgotten snapshots from the catalog and every blob that no remaining
/// snapshot references from the index. Returns the markers of backups running at that moment.
fn forget_and_drop_dead(
    repo: &Repository,
    forget: &[CatalogEntry],
    mut live: HashSet<crate::format::BlobId>,
    report: &mut PruneReport,
) -> Result<Vec<std::path::PathBuf>, RepoError> {
    let index = repo.index_writer()?;
    let mut batch = WriteBatch::default();
    for s in forget {
        IndexWriter::remove_snapshot(&mut batch, s.id, &s.manifest);
    }
    index.write(batch)?;
    // Snapshots committed since the plan are live too.
    let forgotten: HashSet<SnapshotId> = forget.iter().map(|s| s.id).collect();
    let current: Vec<CatalogEntry> = index
        .snapshots()?
        .into_iter()
        .filter(|s| !forgotten.contains(&s.id))
        .collect();
    mark_live(repo, &current, &mut live)?;
    let mut batch = WriteBatch::default();
    for (id, loc) in index.blobs()? {
        if !live.contains(&id) {
            IndexWriter::remove_blob(&mut batch, id);
            report.dead_blobs += 1;
            report.dead_bytes += loc.stored_len as u64;
        }
    }
    index.write(batch)?;
    repo.running_backups()
}
