//! Following a store that other machines write: a state directory's index is brought up to date from the
//! store's listings, at open and then at most once per sync interval (mounts), shared by every process of the
//! machine through a stamp file, so that a machine with a hundred account mounts lists the bucket once per
//! interval, not a hundred times.

use super::packs::reconcile;
use super::{RepoError, Repository};
use crate::format::SnapshotId;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

impl Repository {
    /// Lists the store and adds what is new to this machine's index (and drops what other machines' prunes
    /// removed). `force`: now, whatever the stamp says. Does nothing for state kept inside a local repository,
    /// whose writers all commit to that index themselves.
    pub fn sync(&self, force: bool) -> Result<(), RepoError> {
        if !self.state.follows_store() || (!force && self.synced_within(self.sync_interval)) {
            return Ok(());
        }
        // A periodic sync lists only the manifests while they are what the index has (one request per 1,000
        // snapshots and interval); packs are listed when a snapshot came or went.
        if !force && self.catalog_matches_store()? {
            self.touch_stamp();
            return Ok(());
        }
        let index = self.index_writer()?;
        // Another process of this machine may have synced while this one waited for the lock.
        if !force && self.synced_within(self.sync_interval) {
            return Ok(());
        }
        let done = reconcile(self, &index, true)?;
        for what in done.skipped_packs.iter().chain(&done.skipped_manifests) {
            tracing::warn!("skipped while following the store: {what}");
        }
        for (id, m) in &done.conflicts {
            tracing::warn!(
                "snapshot {id} not shown: its ordinal {} belongs to another snapshot; run `backupfs repair index`",
                m.ordinal
            );
        }
        if done.packs + done.snapshots + done.vanished_packs + done.vanished_snapshots > 0 {
            tracing::info!(
                "synced from {}: {} new packs, {} new snapshots, {} packs and {} snapshots gone",
                self.backend().describe(),
                done.packs,
                done.snapshots,
                done.vanished_packs,
                done.vanished_snapshots
            );
        }
        self.touch_stamp();
        drop(index);
        let _ = self.index().catch_up();
        Ok(())
    }

    fn catalog_matches_store(&self) -> Result<bool, RepoError> {
        let listed: HashSet<SnapshotId> = self.backend.list_manifests()?.into_iter().collect();
        let known: HashSet<SnapshotId> = self.snapshots(None)?.iter().map(|e| e.id).collect();
        Ok(listed == known)
    }

    fn touch_stamp(&self) {
        let stamp = self.state.sync_stamp();
        if let Err(e) = std::fs::write(&stamp, b"") {
            tracing::warn!("{}: {e}", stamp.display());
        }
    }

    fn synced_within(&self, interval: Duration) -> bool {
        let modified = std::fs::metadata(self.state.sync_stamp()).and_then(|m| m.modified());
        modified.is_ok_and(|t| {
            SystemTime::now()
                .duration_since(t)
                .is_ok_and(|age| age < interval)
        })
    }
}
