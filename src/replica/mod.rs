//! Replicas: a second repository (another directory, another bucket, another provider) that is the same
//! repository as the primary, object for object. SPEC.md ("Replicas") is authoritative.
//!
//! A replica is made by `init --like` (the primary's config, byte for byte: the same id, chunking and key) and
//! filled by `copy`, which moves packs and manifests unchanged, so a mount of the replica shows the same names,
//! inode numbers and generations as one of the primary. `lag` measures how far a replica is behind.

pub mod copy;
pub mod lag;

pub use copy::{copy, CopyOptions, CopyReport};
pub use lag::{lag, AccountLag};

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
