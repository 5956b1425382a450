//! Reachability: every blob a set of snapshots references, found by walking their trees once each.

use super::{RepoError, Repository};
use crate::format::tree::{Extent, Payload};
use crate::format::{BlobId, TreeId};
use crate::index::CatalogEntry;
use std::collections::HashSet;

/// Adds to `live` the trees, chunks and hardlink tables that `snapshots` reference. Trees already in `live`
/// are not walked again, so calling it repeatedly with more snapshots costs only what is new.
pub fn mark_live(
    repo: &Repository,
    snapshots: &[CatalogEntry],
    live: &mut HashSet<BlobId>,
) -> Result<(), RepoError> {
    let mut pending: Vec<TreeId> = Vec::new();
    for s in snapshots {
        if let Some(links) = s.manifest.links {
            live.insert(BlobId::links(links));
        }
        if let Payload::Dir { tree, .. } = s.manifest.root.payload {
            pending.push(tree);
        }
    }
    while let Some(id) = pending.pop() {
        if !live.insert(BlobId::tree(id)) {
            continue;
        }
        let dir = repo.directory(id)?;
        // A paged directory's entries are reached through its pages, which are tree blobs themselves.
        pending.extend(dir.pages().iter().map(|p| p.tree));
        let super::Directory::Flat(tree) = dir else {
            continue;
        };
        for e in &tree.entries {
            match &e.payload {
                Payload::Dir { tree, .. } => pending.push(*tree),
                Payload::File { extents } => {
                    for x in extents {
                        if let Extent::Data { id, .. } = x {
                            live.insert(BlobId::chunk(*id));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
