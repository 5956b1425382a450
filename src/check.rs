//! `check`: verifies the repository's structure and, optionally, its data, and names every damaged object with
//! the snapshots and paths it affects. Read-only: it repairs nothing and takes no lock.
//!
//! Structure: every catalog snapshot has its manifest; every tree, chunk and hardlink table it references is
//! indexed, in a pack that exists, at a place the pack's trailer agrees with; every tree decodes. Leftovers
//! (packs the index does not know, temporary files) are listed but are not damage: the next backup indexes the
//! packs and the next prune reclaims what nothing references. With `--read-data`, every referenced blob is read
//! and its BLAKE3 compared with its id; `--read-data-subset N%` reads a deterministic N% of them.

use crate::backend::BackendError;
use crate::format::tree::{Extent, Payload};
use crate::format::{BlobId, PackId, SnapshotId, TreeId};
use crate::index::{BlobLocation, CatalogEntry};
use crate::repo::{read_manifest, read_pack_trailer, Directory, RepoError, Repository};
use crate::vfs::naming;
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Debug, Default)]
pub struct CheckReport {
    pub snapshots: usize,
    pub blobs_checked: u64,
    pub blobs_read: u64,
    /// Damage: one line per damaged object, with what it affects.
    pub damage: Vec<String>,
    /// Harmless leftovers of interrupted writers.
    pub leftovers: Vec<String>,
}

/// How much content to read and verify: a fraction of referenced blobs in 0.0..=1.0.
pub fn check(repo: &Repository, read_fraction: f64) -> Result<CheckReport, RepoError> {
    repo.refresh()?;
    let snapshots = repo.snapshots(None)?;
    let mut report = CheckReport {
        snapshots: snapshots.len(),
        ..Default::default()
    };
    let mut pack_cache: HashMap<PackId, Option<Vec<crate::format::pack::PackEntry>>> =
        HashMap::new();
    let mut bad: HashMap<BlobId, String> = HashMap::new();
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut paged: Vec<(BlobId, Directory)> = Vec::new();
    let mut claims = Claims::default();
    check_ordinals(&snapshots, &mut report);
    let forgetting = repo.forgetting()?;
    for s in &snapshots {
        let gone = |e: &RepoError| matches!(e, RepoError::Backend(BackendError::NotFound { .. }));
        match read_manifest(repo, s.id) {
            Err(e) if gone(&e) && forgetting.contains(&s.id) => report.leftovers.push(format!(
                "snapshot {} ({}): being forgotten by an interrupted prune (the next prune finishes)",
                s.id,
                describe(s)
            )),
            Err(e) => report.damage.push(format!(
                "snapshot {} ({}): manifest: {e}",
                s.id,
                describe(s)
            )),
            Ok(_) => {}
        }
        let mut pending: Vec<BlobId> = Vec::new();
        if let Payload::Dir { tree, descendants } = s.manifest.root.payload {
            claims.dirs.insert((tree, descendants, None));
        }
        if let Some(l) = s.manifest.links {
            pending.push(BlobId::links(l));
        }
        if let Payload::Dir { tree, .. } = s.manifest.root.payload {
            pending.push(BlobId::tree(tree));
        }
        while let Some(id) = pending.pop() {
            if !seen.insert(id) {
                continue;
            }
            report.blobs_checked += 1;
            if let Err(what) = check_blob(repo, id, read_fraction, &mut pack_cache, &mut report) {
                bad.insert(id, what);
                continue;
            }
            if id.kind == crate::format::BlobKind::Tree {
                match repo.directory(TreeId(id.hash)) {
                    Ok(Directory::Flat(tree)) => {
                        claims.record(TreeId(id.hash), &tree);
                        pending.extend(children(&tree));
                    }
                    Ok(dir) => {
                        pending.extend(dir.pages().iter().map(|p| BlobId::tree(p.tree)));
                        paged.push((id, dir));
                    }
                    Err(e) => {
                        bad.insert(id, e.to_string());
                    }
                }
            }
        }
    }
    // Whether each page agrees with its index entry; pages that are damaged themselves are reported as such.
    for (id, dir) in paged {
        if dir
            .pages()
            .iter()
            .any(|p| bad.contains_key(&BlobId::tree(p.tree)))
        {
            continue;
        }
        if let Err(e) = dir.check_pages(repo) {
            bad.insert(id, e.to_string());
        }
    }
    claims.verify(repo, &mut bad);
    report_damage(repo, &snapshots, &bad, &mut report)?;
    find_leftovers(repo, &snapshots, &mut report)?;
    Ok(report)
}

/// Ordinals are unique by construction; two snapshots sharing one (a second writer, a merged copy) would show
/// one's files under the other's name in the mount.
fn check_ordinals(snapshots: &[CatalogEntry], report: &mut CheckReport) {
    let mut owner: HashMap<u64, &CatalogEntry> = HashMap::new();
    for s in snapshots {
        if let Some(first) = owner.insert(s.manifest.ordinal, s) {
            report.damage.push(format!(
                "snapshot {} ({}): ordinal {} also belongs to snapshot {} ({}); run `backupfs repair index`",
                s.id,
                describe(s),
                s.manifest.ordinal,
                first.id,
                describe(first)
            ));
        }
    }
}

/// What trees say about what they reference, checked once everything is loaded: the mount numbers entries
/// from descendant counts and reads files by extent lengths, so a wrong one shows files in the wrong place.
#[derive(Default)]
struct Claims {
    /// (directory's tree, its declared descendants, the tree that declares it; None for a snapshot root).
    dirs: HashSet<(TreeId, u64, Option<TreeId>)>,
    /// (chunk, its length as an extent declares it, the tree that declares it).
    chunks: HashSet<(BlobId, u32, TreeId)>,
}

impl Claims {
    fn record(&mut self, id: TreeId, tree: &crate::format::tree::Tree) {
        for e in &tree.entries {
            match &e.payload {
                Payload::Dir { tree, descendants } => {
                    self.dirs.insert((*tree, *descendants, Some(id)));
                }
                Payload::File { extents } => {
                    for x in extents {
                        if let Extent::Data { id: chunk, len } = x {
                            self.chunks.insert((BlobId::chunk(*chunk), *len, id));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Marks the declaring tree damaged for each claim its target contradicts (targets already damaged are
    /// reported as such).
    fn verify(&self, repo: &Repository, bad: &mut HashMap<BlobId, String>) {
        let mut wrong: Vec<(BlobId, String)> = Vec::new();
        for &(tree, declared, parent) in &self.dirs {
            let Ok(dir) = repo.directory(tree) else {
                continue;
            };
            if dir.descendants() != declared {
                let by = parent.map_or("the snapshot's root entry".into(), |p| format!("tree {p}"));
                let what = format!(
                    "{by} says directory tree {tree} has {declared} descendants; it has {}",
                    dir.descendants()
                );
                wrong.push((parent.map_or(BlobId::tree(tree), BlobId::tree), what));
            }
        }
        for &(chunk, len, tree) in &self.chunks {
            let Ok(Some(loc)) = repo.locate(chunk) else {
                continue;
            };
            if loc.raw_len != len {
                let what = format!(
                    "an extent says chunk {chunk} is {len} bytes; it is {}",
                    loc.raw_len
                );
                wrong.push((BlobId::tree(tree), what));
            }
        }
        for (id, what) in wrong {
            bad.entry(id).or_insert(what);
        }
    }
}

fn children(tree: &crate::format::tree::Tree) -> Vec<BlobId> {
    let mut out = Vec::new();
    for e in &tree.entries {
        match &e.payload {
            Payload::Dir { tree, .. } => out.push(BlobId::tree(*tree)),
            Payload::File { extents } => out.extend(extents.iter().filter_map(|x| match x {
                Extent::Data { id, .. } => Some(BlobId::chunk(*id)),
                Extent::Hole { .. } => None,
            })),
            _ => {}
        }
    }
    out
}

/// The structural checks of one blob, and its content if it falls in the read sample.
fn check_blob(
    repo: &Repository,
    id: BlobId,
    read_fraction: f64,
    packs: &mut HashMap<PackId, Option<Vec<crate::format::pack::PackEntry>>>,
    report: &mut CheckReport,
) -> Result<(), String> {
    let loc: BlobLocation = repo
        .locate(id)
        .map_err(|e| e.to_string())?
        .ok_or("not in the index")?;
    let trailer = packs
        .entry(loc.pack)
        .or_insert_with(|| read_pack_trailer(repo, loc.pack).ok());
    let Some(entries) = trailer else {
        return Err(format!("its pack {} is missing or unreadable", loc.pack));
    };
    let agrees = entries
        .iter()
        .any(|e| e.id == id && e.offset == loc.offset && e.stored_len == loc.stored_len);
    if !agrees {
        return Err(format!(
            "the index and pack {}'s trailer disagree",
            loc.pack
        ));
    }
    let sample = u16::from_le_bytes([id.hash[0], id.hash[1]]) as f64 / 65536.0;
    if sample < read_fraction || read_fraction >= 1.0 {
        report.blobs_read += 1;
        repo.read_blob(id).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn describe(s: &CatalogEntry) -> String {
    format!(
        "{} {}",
        s.manifest.account,
        naming::rfc3339_utc(s.manifest.time)
    )
}

/// Names each damaged blob with the snapshots and paths that reference it.
fn report_damage(
    repo: &Repository,
    snapshots: &[CatalogEntry],
    bad: &HashMap<BlobId, String>,
    report: &mut CheckReport,
) -> Result<(), RepoError> {
    if bad.is_empty() {
        return Ok(());
    }
    let mut affected: HashMap<BlobId, BTreeSet<String>> = HashMap::new();
    for s in snapshots {
        if let Payload::Dir { tree, .. } = s.manifest.root.payload {
            find_paths(repo, tree, &describe(s), bad, &mut affected, 0);
        }
        if let Some(l) = s
            .manifest
            .links
            .map(BlobId::links)
            .filter(|l| bad.contains_key(l))
        {
            affected
                .entry(l)
                .or_default()
                .insert(format!("{} (hardlink table)", describe(s)));
        }
    }
    for (id, what) in bad {
        let paths: Vec<String> = affected
            .get(id)
            .map(|p| p.iter().take(20).cloned().collect())
            .unwrap_or_default();
        report
            .damage
            .push(format!("{id}: {what}; affects: {}", paths.join(", ")));
    }
    report.damage.sort();
    Ok(())
}

fn find_paths(
    repo: &Repository,
    tree: TreeId,
    prefix: &str,
    bad: &HashMap<BlobId, String>,
    affected: &mut HashMap<BlobId, BTreeSet<String>>,
    depth: usize,
) {
    let dir = repo.directory(tree).ok();
    let pages = dir.iter().flat_map(|d| d.pages().iter().map(|p| p.tree));
    let blobs = std::iter::once(tree).chain(pages);
    let damaged: Vec<BlobId> = blobs
        .map(BlobId::tree)
        .filter(|b| bad.contains_key(b))
        .collect();
    for b in &damaged {
        affected.entry(*b).or_default().insert(format!("{prefix}/"));
    }
    let Some(dir) = dir.filter(|_| damaged.is_empty()) else {
        return;
    };
    for e in dir.entries_from(repo, 0).map_while(Result::ok) {
        let path = format!("{prefix}/{}", String::from_utf8_lossy(&e.name));
        match &e.payload {
            Payload::Dir { tree, .. } if depth < 4096 => {
                find_paths(repo, *tree, &path, bad, affected, depth + 1)
            }
            Payload::File { extents } => {
                for x in extents {
                    if let Extent::Data { id, .. } = x {
                        if bad.contains_key(&BlobId::chunk(*id)) {
                            affected
                                .entry(BlobId::chunk(*id))
                                .or_default()
                                .insert(path.clone());
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn find_leftovers(
    repo: &Repository,
    snapshots: &[CatalogEntry],
    report: &mut CheckReport,
) -> Result<(), RepoError> {
    let indexed: HashSet<PackId> = repo
        .indexed_blobs()?
        .into_iter()
        .map(|(_, l)| l.pack)
        .collect();
    for pack in repo.backend().list_packs()? {
        if !indexed.contains(&pack) {
            report
                .leftovers
                .push(format!("pack {pack}: no indexed blob points to it"));
        }
    }
    let catalog: HashMap<SnapshotId, u64> = (snapshots.iter())
        .map(|s| (s.id, s.manifest.ordinal))
        .collect();
    let ordinals: HashSet<u64> = catalog.values().copied().collect();
    for id in repo.backend().list_manifests()? {
        if catalog.contains_key(&id) {
            continue;
        }
        match read_manifest(repo, id) {
            Ok((m, _)) if ordinals.contains(&m.ordinal) => report.damage.push(format!(
                "snapshot {id}: its ordinal {} belongs to another snapshot, so it cannot be shown; run \
                 `backupfs repair index`",
                m.ordinal
            )),
            Ok(_) => report.leftovers.push(format!(
                "snapshot {id}: not in the index yet (the next backup adds it)"
            )),
            Err(e) => report.damage.push(format!("snapshot {id}: {e}")),
        }
    }
    // Temporary files exist only in a local directory: a store's PUT leaves none.
    let Some(root) = repo.location().local_path() else {
        return Ok(());
    };
    let tmp = root.join("tmp");
    for e in std::fs::read_dir(&tmp)
        .map_err(|e| BackendError::io(&tmp, e))?
        .flatten()
    {
        report
            .leftovers
            .push(format!("{}: temporary file", e.path().display()));
    }
    Ok(())
}
