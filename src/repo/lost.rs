//! What this process has reason to believe is gone: packs the index points into that the backend no longer
//! has, and blobs whose bytes failed verification. A writer treats their blobs as absent, so a backup stores
//! them again from the source instead of referencing data that cannot be read; the new copy's index entry then
//! serves every older snapshot that shares the blob too.
//!
//! In memory only: the knowledge is cheap to rebuild (one listing of the packs) and a stale entry costs only a
//! blob stored twice.

use crate::format::{BlobId, PackId};
use std::collections::HashSet;
use std::sync::RwLock;

#[derive(Default)]
pub struct Lost {
    packs: RwLock<HashSet<PackId>>,
    blobs: RwLock<HashSet<BlobId>>,
}

impl Lost {
    pub fn add_pack(&self, pack: PackId) {
        self.packs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pack);
    }

    pub fn add_blob(&self, id: BlobId) {
        self.blobs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
    }

    pub fn covers(&self, id: BlobId, pack: PackId) -> bool {
        let lost_pack = (self.packs.read().unwrap_or_else(|p| p.into_inner())).contains(&pack);
        lost_pack || (self.blobs.read().unwrap_or_else(|p| p.into_inner())).contains(&id)
    }
}
