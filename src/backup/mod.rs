//! The backup command: walk a source directory into a new snapshot of an account.
//!
//! The walk runs on the calling thread (stat, read, chunk, hash) while worker threads compress and pack; the
//! snapshot becomes visible only through `repo::commit_snapshot`, after every pack is durable.

pub mod child;
pub mod dump;
pub mod exclude;
mod hardlinks;
pub mod parts;
mod progress;
mod source;
mod sqlite;
mod store;
mod walk;

use crate::format::manifest::{valid_account, Manifest};
use crate::format::tree::{Entry, Payload, Timestamp};
use crate::format::{BlobId, LinksId, SnapshotId};
use crate::repo::{commit_snapshot, RepoError, Repository};
pub use exclude::Excludes;
pub use parts::{DumpReport, PartsPlan};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: source does not exist")]
    SourceMissing { path: PathBuf },
    #[error("{path}: source is not a directory")]
    SourceNotDirectory { path: PathBuf },
    #[error("invalid account name {0:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidAccount(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Repo(#[from] RepoError),
}

pub struct BackupOptions {
    pub account: String,
    pub source: PathBuf,
    /// Snapshot time; now if None.
    pub time: Option<Timestamp>,
    pub progress: bool,
    /// The account's and the command line's exclude patterns, for its files.
    pub excludes: Excludes,
    /// Directories never backed up (the account's own mount point of its backups), if they exist.
    pub never: Vec<PathBuf>,
    /// Mail and databases: a snapshot with parts (`files/`, `mails/`, `mysql/`, `postgresql/`).
    pub parts: Option<PartsPlan>,
}

#[derive(Debug)]
pub struct BackupSummary {
    pub snapshot: SnapshotId,
    pub manifest: Manifest,
    pub bytes_read: u64,
    pub duration: std::time::Duration,
    pub warnings: Vec<String>,
    /// Every database dumped, in order.
    pub dumps: Vec<DumpReport>,
}

impl BackupSummary {
    pub fn to_json(&self) -> serde_json::Value {
        let s = &self.manifest.stats;
        serde_json::json!({
            "snapshot": self.snapshot.to_hex(),
            "ordinal": self.manifest.ordinal,
            "account": self.manifest.account,
            "time": crate::vfs::naming::rfc3339_utc(self.manifest.time),
            "files": s.files,
            "dirs": s.dirs,
            "symlinks": s.symlinks,
            "specials": s.specials,
            "file_bytes": s.file_bytes,
            "bytes_read": self.bytes_read,
            "bytes_added": s.added_bytes,
            "blobs_added": s.added_blobs,
            "duration_s": self.duration.as_secs_f64(),
            "warnings": self.warnings.len(),
            "warning_messages": self.warnings,
            "layout": if self.manifest.has_parts() { "parts" } else { "flat" },
            "databases": self.dumps.iter().map(DumpReport::to_json).collect::<Vec<_>>(),
            "peak_rss_kib": peak_rss_kib(),
        })
    }
}

/// The most memory this process has held (its peak resident set, KiB): `backup --json` reports it, so that
/// what streaming a large dump costs is measured where it runs.
pub fn peak_rss_kib() -> u64 {
    // SAFETY: rusage is a plain C struct; all-zero bytes are valid, and getrusage only writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a live local.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
        usage.ru_maxrss.max(0) as u64
    } else {
        0
    }
}

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

pub fn backup(repo: &Repository, opts: &BackupOptions) -> Result<BackupSummary, BackupError> {
    let started = Instant::now();
    if !valid_account(&opts.account) {
        return Err(BackupError::InvalidAccount(opts.account.clone()));
    }
    let source = std::fs::canonicalize(&opts.source).map_err(|_| BackupError::SourceMissing {
        path: opts.source.clone(),
    })?;
    let root_meta = std::fs::metadata(&source).map_err(|source_err| BackupError::Io {
        path: source.clone(),
        source: source_err,
    })?;
    if !root_meta.is_dir() {
        return Err(BackupError::SourceNotDirectory { path: source });
    }
    if let Ok(n) = repo.backend().clean_leftovers() {
        if n > 0 {
            tracing::info!("removed {n} temporary files left by interrupted writers");
        }
    }
    // Held for the whole run: a prune waits for it before deleting packs this backup may still reference.
    let _marker = repo.backup_marker()?;
    let missing_packs = repo.find_missing_packs()?;
    let time = opts.time.unwrap_or_else(now);
    let previous = previous_snapshot(repo, &opts.account, &source)?;
    let estimate = previous.as_ref().map(|p| p.file_bytes);
    let counters = store::Counters::default();
    let shared = store::Shared::new(repo);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let never: Vec<(u64, u64)> = (repo.location().local_path().into_iter())
        .chain(opts.never.iter().map(PathBuf::as_path))
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();

    let walked = std::thread::scope(|scope| {
        let _display = opts
            .progress
            .then(|| progress::Display::start(scope, &counters, estimate));
        let sink = store::BlobSink::start(scope, &shared, workers);
        let mut walker = walk::Walker::new(repo, sink, &counters, root_meta.dev());
        walker.never = never;
        walker.excludes = opts.excludes.clone();
        let prev = previous.map(|p| p.trees).unwrap_or_default();
        let result = match &opts.parts {
            None => {
                let prev_tree = prev
                    .files
                    .and_then(|tree| walker.previous_dir(&source, tree));
                walker
                    .walk_dir(&source, prev_tree)
                    .map(|(tree, descendants)| (tree, descendants, Vec::new(), Vec::new()))
            }
            Some(plan) => parts::walk_parts(&mut walker, plan, &source, &root_meta, prev, time)
                .map(|o| (o.tree, o.descendants, o.parts, o.dumps)),
        };
        result.and_then(|(tree, descendants, parts, dumps)| {
            let links = walker.link_table();
            let links_id =
                (!links.links.is_empty()).then(|| repo.codec().links_id(&links.encode()));
            if let Some(id) = links_id {
                walker.sink.put(BlobId::links(id), links.encode())?;
            }
            Ok(Walked {
                tree,
                descendants,
                links: links_id,
                stats: std::mem::take(&mut walker.stats),
                warnings: std::mem::take(&mut walker.warnings),
                existing: std::mem::take(&mut walker.sink.existing),
                parts,
                dumps,
            })
        })
        // Leaving the scope drops the sink and joins the workers: only then is every blob in a packer.
    });
    let packs = shared.finish();
    let walked = walked?;
    let mut warnings: Vec<String> = missing_packs.iter().map(missing_pack_warning).collect();
    warnings.extend(walked.warnings);
    let packs = packs?;
    let mut stats = walked.stats;
    stats.dirs += 1;
    stats.added_blobs = shared.added_blobs.load(Ordering::Relaxed);
    stats.added_bytes = shared.added_bytes.load(Ordering::Relaxed);
    let manifest = Manifest {
        ordinal: 0,
        time,
        account: opts.account.clone(),
        hostname: hostname(),
        source: source.as_os_str().as_bytes().to_vec(),
        root: root_entry(&source, &root_meta, walked.tree, walked.descendants),
        links: walked.links,
        stats,
        parts: walked.parts,
    };
    let (snapshot, manifest) = commit_snapshot(repo, &packs, &walked.existing, manifest)?;
    Ok(BackupSummary {
        snapshot,
        manifest,
        bytes_read: counters.bytes_read.load(Ordering::Relaxed),
        duration: started.elapsed(),
        warnings,
        dumps: walked.dumps,
    })
}

/// What the walk of a backup produced, for its manifest.
struct Walked {
    tree: crate::format::TreeId,
    descendants: u64,
    links: Option<LinksId>,
    stats: crate::format::manifest::Stats,
    warnings: Vec<String>,
    existing: std::collections::HashSet<BlobId>,
    parts: Vec<crate::format::manifest::Part>,
    dumps: Vec<DumpReport>,
}

fn missing_pack_warning(pack: &crate::format::PackId) -> String {
    let msg = format!(
        "pack {pack} is missing from the repository: its blobs were stored again where the source still has \
         them; `backupfs check` names what older snapshots lost"
    );
    tracing::warn!("{msg}");
    msg
}

/// The account's newest snapshot of the same source: the trees a new backup compares against.
struct Previous {
    trees: parts::PreviousParts,
    /// Its file bytes, for the progress display's estimate.
    file_bytes: u64,
}

fn previous_snapshot(
    repo: &Repository,
    account: &str,
    source: &Path,
) -> Result<Option<Previous>, RepoError> {
    let snaps = repo.snapshots(Some(account))?;
    let Some(prev) = snaps
        .iter()
        .rev()
        .find(|s| s.manifest.source == source.as_os_str().as_bytes())
    else {
        return Ok(None);
    };
    let Payload::Dir { tree, .. } = prev.manifest.root.payload else {
        return Ok(None);
    };
    let trees = if prev.manifest.has_parts() {
        // A damaged root only costs reading everything again, as a damaged tree does anywhere.
        let sub = |name: &[u8]| {
            let dir = repo.directory(tree).ok()?;
            match dir.find(repo, name).ok()??.payload {
                Payload::Dir { tree, .. } => Some(tree),
                _ => None,
            }
        };
        parts::PreviousParts {
            files: sub(b"files"),
            mails: sub(b"mails"),
        }
    } else {
        parts::PreviousParts {
            files: Some(tree),
            mails: None,
        }
    };
    Ok(Some(Previous {
        trees,
        file_bytes: prev.manifest.stats.file_bytes,
    }))
}

/// The manifest's root entry: the source directory's metadata, named "" (SPEC.md), over `tree`.
fn root_entry(
    path: &Path,
    meta: &std::fs::Metadata,
    tree: crate::format::TreeId,
    descendants: u64,
) -> Entry {
    parts::dir_entry(path, meta, b"", tree, descendants)
}
