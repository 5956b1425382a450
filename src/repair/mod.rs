//! `repair index`: rebuilds the RocksDB index from the packs' trailers and the manifests alone.
//!
//! The new index is built beside the old one and swapped in with two renames under the index lock and the
//! prune lock, so backups wait for it and prunes are excluded. Mounts notice the new index at their next refresh
//! and reopen it.

use crate::backend::BackendError;
use crate::index::IndexWriter;
use crate::repo::{reconcile, Reconciled, RepoError, Repository};

pub fn rebuild_index(repo: &Repository) -> Result<Reconciled, RepoError> {
    let _prune = repo.prune_lock()?;
    let root = repo.root();
    let (live, fresh, old) = (
        root.join("index"),
        root.join("index.rebuild"),
        root.join("index.old"),
    );
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
    let held = repo.index_writer();
    let rebuilt = {
        let writer = IndexWriter::create(&fresh, &root.join("locks/index.rebuild.lock"))?;
        reconcile(repo.backend(), &writer)?
    };
    drop(held);
    if live.exists() {
        std::fs::rename(&live, &old).map_err(io(&live))?;
    }
    std::fs::rename(&fresh, &live).map_err(io(&fresh))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    let _ = std::fs::remove_file(root.join("locks/index.rebuild.lock"));
    Ok(rebuilt)
}
