//! Bringing the index up to date with what the backend holds: the recovery step after a crash, and the whole of
//! an index rebuild.

use super::{RepoError, Repository};
use crate::backend::{Backend, BackendError, Dir, Object};
use crate::format::manifest::Manifest;
use crate::format::pack::{check_header, Footer, PackEntry, FOOTER_LEN, HEADER_LEN};
use crate::format::pack_index;
use crate::format::sealed::SealedKind;
use crate::format::PackIndexId;
use crate::format::{BlobId, FormatError, PackId, SnapshotId};
use crate::index::IndexWriter;
use rocksdb::WriteBatch;
use std::collections::{HashMap, HashSet};

/// Reads a pack's header, footer and trailer (not its blobs) and returns the blobs it holds.
pub fn read_pack_trailer(repo: &Repository, pack: PackId) -> Result<Vec<PackEntry>, RepoError> {
    let obj = Object::Pack(pack);
    let size = repo.backend().size(obj)?;
    pack_entries(repo, pack, size, &|offset, buf| {
        Ok(repo.backend().read_at(obj, offset, buf)?)
    })
}

/// The blobs a pack holds, from its bytes (a pack read whole, as a copy to a replica reads it).
pub fn pack_entries_in(
    repo: &Repository,
    pack: PackId,
    bytes: &[u8],
) -> Result<Vec<PackEntry>, RepoError> {
    pack_entries(repo, pack, bytes.len() as u64, &|offset, buf| {
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let part = (bytes.get(at..at.saturating_add(buf.len()))).ok_or(RepoError::Format {
            object: format!("pack {pack}"),
            source: FormatError::Truncated {
                object: "pack",
                offset: at,
                needed: buf.len(),
            },
        })?;
        buf.copy_from_slice(part);
        Ok(())
    })
}

/// Fills a buffer with a pack's bytes from an offset: from the store, or from a pack already in memory.
type ReadAt<'a> = &'a dyn Fn(u64, &mut [u8]) -> Result<(), RepoError>;

/// Header, footer and trailer of a pack of `size` bytes, each read with `read_at`, checked and decoded.
fn pack_entries(
    repo: &Repository,
    pack: PackId,
    size: u64,
    read_at: ReadAt<'_>,
) -> Result<Vec<PackEntry>, RepoError> {
    let format = |source: FormatError| RepoError::Format {
        object: format!("pack {pack}"),
        source,
    };
    if size < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(format(FormatError::Truncated {
            object: "pack",
            offset: size as usize,
            needed: HEADER_LEN + FOOTER_LEN,
        }));
    }
    let mut header = [0u8; HEADER_LEN];
    read_at(0, &mut header)?;
    let version = check_header(&header).map_err(format)?;
    repo.codec().expect_pack_version(pack, version)?;
    let mut footer = [0u8; FOOTER_LEN];
    read_at(size - FOOTER_LEN as u64, &mut footer)?;
    let footer = Footer::decode(&footer, size, version).map_err(format)?;
    // Bounded by the pack's size, which the footer's decoder checked it against.
    let stored_len = usize::try_from(footer.trailer_len).map_err(|_| {
        format(FormatError::Invalid {
            object: "pack footer",
            offset: 0,
            what: "trailer larger than memory".into(),
        })
    })?;
    let mut trailer = vec![0u8; stored_len];
    read_at(footer.trailer_offset, &mut trailer)?;
    footer.verify_trailer(&trailer).map_err(format)?;
    let plain = repo.codec().open_trailer(pack, version, trailer)?;
    footer.decode_entries(&plain).map_err(format)
}

/// What `reconcile` added to the index, and what it had to skip.
#[derive(Debug, Default)]
pub struct Reconciled {
    pub packs: usize,
    pub snapshots: usize,
    /// Packs and manifests that could not be read, one line each naming the object.
    pub skipped_packs: Vec<String>,
    pub skipped_manifests: Vec<String>,
    /// Intact manifests whose ordinal another snapshot already has (a second writer, or a merged copy of the
    /// repository): never added, since the mount's inode numbers and names would mix the two. `repair index`
    /// gives them new ordinals.
    pub conflicts: Vec<(SnapshotId, Manifest)>,
    /// With `follow_deletions`: packs and snapshots the index knew that the store no longer lists (another
    /// machine's prune), dropped from the index.
    pub vanished_packs: usize,
    pub vanished_snapshots: usize,
}

/// Adds to the index every pack and every manifest that the backend has and the index lacks. Packs go first, so
/// a snapshot never enters the catalog before the blobs it needs are findable. With `follow_deletions` (an index
/// that caches a store other machines prune), what the store no longer lists leaves the index afterwards;
/// without it, a missing object is damage for `check` to report.
pub fn reconcile(
    repo: &Repository,
    index: &IndexWriter,
    follow_deletions: bool,
) -> Result<Reconciled, RepoError> {
    let backend = repo.backend();
    let mut done = Reconciled::default();
    // Names only (a directory read, no stat per pack on a local disk); sizes are listed when a pack is new.
    let listed_packs = backend.list_packs()?;
    let mut unindexed: HashMap<PackId, u64> = HashMap::new();
    for &pack in &listed_packs {
        if !index.has_pack(pack)? {
            unindexed.insert(pack, 0);
        }
    }
    if !unindexed.is_empty() {
        for (pack, size) in pack_sizes(backend)? {
            if let Some(s) = unindexed.get_mut(&pack) {
                *s = size;
            }
        }
        done.packs += from_pack_indexes(repo, index, &mut unindexed)?;
    }
    for &pack in unindexed.keys() {
        match read_pack_trailer(repo, pack) {
            Ok(entries) => {
                let mut batch = WriteBatch::default();
                IndexWriter::add_pack(&mut batch, pack, &entries);
                index.write(batch)?;
                done.packs += 1;
            }
            Err(e) => done.skipped_packs.push(e.to_string()),
        }
    }
    let listed_manifests = backend.list_manifests()?;
    let mut next = index.next_ordinal()?;
    let mut taken: HashMap<u64, SnapshotId> = (index.snapshots()?.into_iter())
        .map(|e| (e.manifest.ordinal, e.id))
        .collect();
    for &id in &listed_manifests {
        if index.has_snapshot(id)? {
            continue;
        }
        match read_manifest(repo, id) {
            Ok((manifest, _)) if taken.get(&manifest.ordinal).is_some_and(|o| *o != id) => {
                done.conflicts.push((id, manifest));
            }
            Ok((manifest, bytes)) => {
                let mut batch = WriteBatch::default();
                IndexWriter::add_snapshot(&mut batch, id, &manifest, &bytes);
                next = next.max(manifest.ordinal + 1);
                IndexWriter::set_next_ordinal(&mut batch, next);
                index.write(batch)?;
                taken.insert(manifest.ordinal, id);
                done.snapshots += 1;
            }
            Err(e) => done.skipped_manifests.push(e.to_string()),
        }
    }
    if follow_deletions {
        let present: HashSet<PackId> = listed_packs.into_iter().collect();
        forget_vanished(repo, index, &present, &listed_manifests, &mut done)?;
    }
    Ok(done)
}

/// Drops from the index the packs and snapshots that the store's listings no longer hold. A blob whose entry
/// pointed into a vanished pack may have another copy in a present one (a prune's rewrite, two machines that
/// stored the same blob): the entry is pointed there, from the pack index objects, so that what another
/// machine's prune kept stays readable here.
fn forget_vanished(
    repo: &Repository,
    index: &IndexWriter,
    packs: &HashSet<PackId>,
    listed_manifests: &[SnapshotId],
    done: &mut Reconciled,
) -> Result<(), RepoError> {
    let manifests: HashSet<SnapshotId> = listed_manifests.iter().copied().collect();
    let mut batch = WriteBatch::default();
    for entry in index.snapshots()? {
        if !manifests.contains(&entry.id) {
            IndexWriter::remove_snapshot(&mut batch, entry.id, &entry.manifest);
            done.vanished_snapshots += 1;
        }
    }
    let vanished: HashSet<PackId> = (index.packs()?.into_iter())
        .filter(|p| !packs.contains(p))
        .collect();
    let mut orphaned: HashSet<BlobId> = HashSet::new();
    if !vanished.is_empty() {
        for p in &vanished {
            IndexWriter::remove_pack(&mut batch, *p);
        }
        for (id, loc) in index.blobs()? {
            if vanished.contains(&loc.pack) {
                IndexWriter::remove_blob(&mut batch, id);
                orphaned.insert(id);
            }
        }
        done.vanished_packs = vanished.len();
    }
    if done.vanished_packs + done.vanished_snapshots > 0 {
        index.write(batch)?;
    }
    if !orphaned.is_empty() {
        repoint(repo, index, &pack_sizes(repo.backend())?, orphaned)?;
    }
    Ok(())
}

/// Points each orphaned blob at a copy in a present pack, as the pack index objects describe them; blobs with
/// no other copy (the dead ones a prune deleted) stay absent.
fn repoint(
    repo: &Repository,
    index: &IndexWriter,
    packs: &HashMap<PackId, u64>,
    mut orphaned: HashSet<BlobId>,
) -> Result<(), RepoError> {
    for l in repo.backend().list_aged(Dir::Indexes)?.entries {
        let Some(id) = PackIndexId::from_hex(&l.name) else {
            continue;
        };
        let described = match read_pack_index(repo, id) {
            Ok(Some(described)) => described,
            Ok(None) => continue,
            Err(RepoError::Backend(e)) => return Err(e.into()),
            Err(_) => continue,
        };
        let mut batch = WriteBatch::default();
        for p in described
            .iter()
            .filter(|p| packs.get(&p.id) == Some(&p.size))
        {
            for e in p.entries.iter().filter(|e| orphaned.remove(&e.id)) {
                IndexWriter::add_pack_entry(&mut batch, p.id, e);
            }
        }
        index.write(batch)?;
        if orphaned.is_empty() {
            break;
        }
    }
    Ok(())
}

/// Every listed pack's size (one listing with sizes: a stat per pack on a local disk).
fn pack_sizes(backend: &dyn Backend) -> Result<HashMap<PackId, u64>, RepoError> {
    Ok((backend.list_aged(Dir::Packs)?.entries.iter())
        .filter_map(|l| Some((pack_from_listed(&l.name)?, l.size)))
        .collect())
}

/// `ab/ab...pack` as listed -> the pack id.
fn pack_from_listed(name: &str) -> Option<PackId> {
    let (_, file) = name.split_once('/')?;
    PackId::from_hex(file.strip_suffix(".pack")?)
}

/// Adds the unindexed packs that pack index objects not read before describe (for a listed pack of the same
/// size), removing them from `unindexed`; returns how many. An object that does not verify is skipped: the
/// packs it would have covered are read one by one instead.
fn from_pack_indexes(
    repo: &Repository,
    index: &IndexWriter,
    unindexed: &mut HashMap<PackId, u64>,
) -> Result<usize, RepoError> {
    let mut added = 0;
    for l in repo.backend().list_aged(Dir::Indexes)?.entries {
        let Some(id) = PackIndexId::from_hex(&l.name) else {
            continue;
        };
        if index.has_read_pack_index(id)? {
            continue;
        }
        let decoded = match read_pack_index(repo, id) {
            Ok(Some(packs)) => Ok(packs),
            // Consolidated away by a prune since the listing.
            Ok(None) => continue,
            Err(RepoError::Backend(e)) => return Err(e.into()),
            Err(e) => Err(e),
        };
        let mut batch = WriteBatch::default();
        match decoded {
            Ok(packs) => {
                for p in packs {
                    if unindexed.get(&p.id) == Some(&p.size) {
                        IndexWriter::add_pack(&mut batch, p.id, &p.entries);
                        unindexed.remove(&p.id);
                        added += 1;
                    }
                }
            }
            Err(e) => tracing::warn!("{e}; reading its packs instead"),
        }
        IndexWriter::mark_pack_index_read(&mut batch, id);
        index.write(batch)?;
        if unindexed.is_empty() {
            break;
        }
    }
    Ok(added)
}

/// Reads a pack index object, checks that its bytes still hash to its name, and decodes it (opened from its
/// envelope if encrypted). None: gone since the listing.
fn read_pack_index(
    repo: &Repository,
    id: PackIndexId,
) -> Result<Option<Vec<pack_index::IndexedPack>>, RepoError> {
    let object = format!("pack index {id}");
    let format = |source| RepoError::Format {
        object: object.clone(),
        source,
    };
    let bytes = match repo.backend().read_all(Object::PackIndex(id)) {
        Ok(bytes) => bytes,
        Err(BackendError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if PackIndexId::of(&bytes) != id {
        return Err(format(FormatError::Checksum {
            object: "pack index",
        }));
    }
    let plain = (repo.codec()).open_object(SealedKind::PackIndex, bytes, &object)?;
    let packs = pack_index::decode(&plain, repo.codec().is_encrypted()).map_err(format)?;
    Ok(Some(packs))
}

/// Reads a manifest, checks that its bytes still hash to its name, and decodes it (opened from its envelope if
/// encrypted). Returns the manifest and the file's bytes.
pub fn read_manifest(repo: &Repository, id: SnapshotId) -> Result<(Manifest, Vec<u8>), RepoError> {
    let bytes = repo.backend().read_all(Object::Manifest(id))?;
    let object = format!("snapshot {id}");
    if SnapshotId::of(&bytes) != id {
        return Err(RepoError::Format {
            object,
            source: FormatError::Checksum { object: "manifest" },
        });
    }
    let plain = (repo.codec()).open_object(SealedKind::Manifest, bytes.clone(), &object)?;
    let manifest =
        Manifest::decode(&plain).map_err(|source| RepoError::Format { object, source })?;
    Ok((manifest, bytes))
}
