//! Replicas: a second repository (another directory, another bucket, another provider) that is the same
//! repository as the primary, object for object. SPEC.md ("Replicas") is authoritative.
//!
//! A replica is made by `init --like` (the primary's config, byte for byte: the same id, chunking and key) and
//! filled by `copy`, which moves packs and manifests unchanged, so a mount of the replica shows the same names,
//! inode numbers and generations as one of the primary. `lag` measures how far a replica is behind.

pub mod copy;
pub mod lag;
pub mod repair;

pub use copy::{copy, CopyOptions, CopyReport};
pub use lag::{lag, AccountLag};
pub use repair::{repair_from, RepairFromReport};

use crate::repo::{RepoError, Repository};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(
        "{replica} is not a replica of {primary}: its config differs (another repository, or other chunking \
         or encryption); make one with `backupfs init {replica} --like {primary}`"
    )]
    NotAReplica { primary: String, replica: String },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

/// Per account, the time of the replica's oldest snapshot. A primary's snapshot older than that is not wanted
/// there: the replica's own prune forgot it (retention is independent), and copying it again would only have
/// the next prune forget it again.
pub fn horizons(
    replica_snapshots: &[crate::index::CatalogEntry],
) -> std::collections::HashMap<String, crate::format::tree::Timestamp> {
    let mut oldest = std::collections::HashMap::new();
    for s in replica_snapshots {
        let t = oldest
            .entry(s.manifest.account.clone())
            .or_insert(s.manifest.time);
        *t = (*t).min(s.manifest.time);
    }
    oldest
}

/// Whether the replica wants `s`: it lacks it, and it is not older than what the replica keeps.
pub fn wanted_by_replica(
    s: &crate::index::CatalogEntry,
    there: &std::collections::HashSet<crate::format::SnapshotId>,
    horizons: &std::collections::HashMap<String, crate::format::tree::Timestamp>,
) -> bool {
    !there.contains(&s.id)
        && horizons
            .get(&s.manifest.account)
            .is_none_or(|&h| s.manifest.time >= h)
}

/// Refuses two repositories whose configs differ: copying between them would make objects the replica's
/// readers could not use.
pub fn same_repository(primary: &Repository, replica: &Repository) -> Result<(), ReplicaError> {
    if primary.config() == replica.config() {
        return Ok(());
    }
    Err(ReplicaError::NotAReplica {
        primary: primary.location().to_string(),
        replica: replica.location().to_string(),
    })
}
