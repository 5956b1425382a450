//! A snapshot with parts: the root holds `files/` (the account's files), `mails/` (its Maildir tree),
//! `mysql/<db>.sql` and `postgresql/<db>.sql` (one dump per database), each only if configured. Accounts with
//! neither databases nor mail keep the flat layout, the source directory itself at the root.
//!
//! Entries are numbered depth first in name order, as the mount numbers them: the root's children sort as
//! `files` < `mails` < `mysql` < `postgresql`, so the parts are built in that order by one walker.

use super::child::RunAs;
use super::dump::{self, Engine, Server};
use super::walk::Walker;
use super::BackupError;
use crate::format::manifest::{Part, PartKind};
use crate::format::tree::{Entry, EntryKind, Extent, Payload, Timestamp};
use crate::format::TreeId;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What an account's snapshot holds besides its files.
#[derive(Clone, Debug)]
pub struct PartsPlan {
    /// The account's OS user: dumps run as it, and the synthesized files belong to it.
    pub user: RunAs,
    pub databases: Vec<Server>,
    /// The Maildir root: `<domain>/<mailbox>/{cur,new,tmp}`.
    pub mail: Option<PathBuf>,
}

/// The previous snapshot's trees of the parts walked as directories.
#[derive(Clone, Copy, Debug, Default)]
pub struct PreviousParts {
    pub files: Option<TreeId>,
    pub mails: Option<TreeId>,
}

/// One database's dump as `--json` reports it.
#[derive(Clone, Debug)]
pub struct DumpReport {
    pub engine: Engine,
    pub name: String,
    /// None: a trusted dump; else why it failed.
    pub failure: Option<String>,
    pub bytes: u64,
    pub duration: std::time::Duration,
}

impl DumpReport {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "engine": self.engine.label(),
            "name": self.name,
            "status": if self.failure.is_some() { "failed" } else { "ok" },
            "error": self.failure,
            "bytes": self.bytes,
            "duration_s": self.duration.as_secs_f64(),
        })
    }
}

pub struct PartsOutcome {
    pub tree: TreeId,
    pub descendants: u64,
    pub parts: Vec<Part>,
    pub dumps: Vec<DumpReport>,
}

/// Builds every part with `walker` and stores the root tree that holds them.
pub fn walk_parts(
    walker: &mut Walker,
    plan: &PartsPlan,
    source: &Path,
    source_meta: &std::fs::Metadata,
    previous: PreviousParts,
    time: Timestamp,
) -> Result<PartsOutcome, BackupError> {
    let mut root = Vec::new();
    let mut parts = Vec::new();
    let mut dumps = Vec::new();

    let started = Instant::now();
    walker.number_entry();
    let prev = previous.files.and_then(|t| walker.previous_dir(source, t));
    let (tree, descendants) = walker.walk_dir(source, prev)?;
    let files = dir_entry(source, source_meta, b"files", tree, descendants);
    walker.count(&files);
    parts.push(part(
        PartKind::Files,
        "",
        false,
        walker.stats.file_bytes,
        started,
    ));
    root.push(files);

    if let Some(mail) = &plan.mail {
        let started = Instant::now();
        let bytes_before = walker.stats.file_bytes;
        let ok = walk_mail(walker, mail, previous.mails, &mut root)?;
        let bytes = walker.stats.file_bytes - bytes_before;
        parts.push(part(PartKind::Mail, "", !ok, bytes, started));
    }
    for engine in [Engine::MariaDb, Engine::PostgreSql] {
        let servers: Vec<&Server> = plan
            .databases
            .iter()
            .filter(|s| s.engine == engine)
            .collect();
        if !servers.is_empty() {
            root.push(dump_dir(
                walker, plan, engine, &servers, time, &mut parts, &mut dumps,
            )?);
        }
    }
    let descendants = root.iter().map(subtree_size).sum();
    let tree = walker.store_directory(&root)?;
    Ok(PartsOutcome {
        tree,
        descendants,
        parts,
        dumps,
    })
}

fn part(kind: PartKind, name: &str, failed: bool, bytes: u64, started: Instant) -> Part {
    Part {
        kind,
        failed,
        name: name.to_owned(),
        bytes,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// An entry and its descendants, as the DFS numbering counts them.
fn subtree_size(e: &Entry) -> u64 {
    match e.payload {
        Payload::Dir { descendants, .. } => 1 + descendants,
        _ => 1,
    }
}

/// An entry named `name` for the directory at `path` (a walk's root), with its metadata and extended
/// attributes, over `tree`.
pub(super) fn dir_entry(
    path: &Path,
    meta: &std::fs::Metadata,
    name: &[u8],
    tree: TreeId,
    descendants: u64,
) -> Entry {
    Entry {
        name: name.to_vec(),
        kind: EntryKind::Dir,
        flags: 0,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.len(),
        mtime: super::source::mtime(meta),
        ctime: super::source::ctime(meta),
        source_ino: meta.ino(),
        rdev: 0,
        xattrs: super::source::xattrs(path).unwrap_or_default(),
        payload: Payload::Dir { tree, descendants },
    }
}

/// An entry the backup makes up (the dump directories and files): the account's, private, at `time`.
fn synthesized(
    name: Vec<u8>,
    kind: EntryKind,
    user: &RunAs,
    time: Timestamp,
    payload: Payload,
) -> Entry {
    let (mode, size) = match &payload {
        Payload::File { extents } => (0o600, extents.iter().map(Extent::len).sum()),
        _ => (0o700, 0),
    };
    Entry {
        name,
        kind,
        flags: 0,
        mode,
        uid: user.uid,
        gid: user.gid,
        size,
        mtime: time,
        ctime: time,
        source_ino: 0,
        rdev: 0,
        xattrs: Vec::new(),
        payload,
    }
}

/// Walks the Maildir root into `mails/`; false (with a warning) if it cannot be read at all.
fn walk_mail(
    walker: &mut Walker,
    mail: &Path,
    previous: Option<TreeId>,
    root: &mut Vec<Entry>,
) -> Result<bool, BackupError> {
    let meta = match std::fs::metadata(mail) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => {
            walker.warn(mail, "mail: not a directory, no mail in this snapshot");
            return Ok(false);
        }
        Err(e) => {
            walker.warn(mail, format_args!("mail: {e}, no mail in this snapshot"));
            return Ok(false);
        }
    };
    let saved = (walker.root_dev, std::mem::take(&mut walker.excludes));
    walker.root_dev = meta.dev();
    walker.maildir = true;
    let dfs = walker.number_entry();
    let prev = previous.and_then(|t| walker.previous_dir(mail, t));
    let walked = walker.walk_dir(mail, prev);
    walker.maildir = false;
    (walker.root_dev, walker.excludes) = saved;
    match walked {
        Ok((tree, descendants)) => {
            let entry = dir_entry(mail, &meta, b"mails", tree, descendants);
            walker.count(&entry);
            root.push(entry);
            Ok(true)
        }
        Err(BackupError::Io { path, source }) => {
            walker.renumber_from(dfs);
            walker.warn(
                &path,
                format_args!("mail: {source}, no mail in this snapshot"),
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// `mysql/` or `postgresql/`: one dump (or failure note) per database of every server of `engine`.
fn dump_dir(
    walker: &mut Walker,
    plan: &PartsPlan,
    engine: Engine,
    servers: &[&Server],
    time: Timestamp,
    parts: &mut Vec<Part>,
    dumps: &mut Vec<DumpReport>,
) -> Result<Entry, BackupError> {
    // The directory's own number comes before its files'.
    walker.number_entry();
    let mut files: Vec<Entry> = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let names = match dump::database_names(server, &plan.user) {
            Ok(names) => names,
            Err(reason) => {
                files.push(discovery_failed(walker, plan, server, i, &reason)?);
                parts.push(part(kind_of(engine), "", true, 0, Instant::now()));
                continue;
            }
        };
        for db in names {
            let file = format!("{db}.sql");
            let failed = format!("{file}.FAILED");
            let taken = |f: &Entry| f.name == file.as_bytes() || f.name == failed.as_bytes();
            if !dump::valid_name(&db) || files.iter().any(taken) {
                warn(
                    walker,
                    engine,
                    &server.socket,
                    &format!(
                        "database {db:?}: name unusable as a file name or dumped already, skipped"
                    ),
                );
                continue;
            }
            let (entry, report) = dump_one(walker, plan, server, &db)?;
            parts.push(Part {
                kind: kind_of(engine),
                failed: report.failure.is_some(),
                name: db.clone(),
                bytes: report.bytes,
                duration_ms: report.duration.as_millis() as u64,
            });
            dumps.push(report);
            files.push(entry);
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    for f in &files {
        walker.number_entry();
        walker.count(f);
    }
    let tree = walker.store_directory(&files)?;
    let dir = synthesized(
        engine.dir().as_bytes().to_vec(),
        EntryKind::Dir,
        &plan.user,
        time,
        Payload::Dir {
            tree,
            descendants: files.len() as u64,
        },
    );
    walker.count(&dir);
    Ok(dir)
}

/// `DISCOVERY.FAILED` (`DISCOVERY-<n>.FAILED` for the n-th server of the engine): the server could not list
/// the account's databases, so none of them was dumped.
fn discovery_failed(
    walker: &mut Walker,
    plan: &PartsPlan,
    server: &Server,
    nth: usize,
    reason: &str,
) -> Result<Entry, BackupError> {
    let what = format!("listing the databases as {}: {reason}", plan.user.name);
    warn(walker, server.engine, &server.socket, &what);
    let note = dump::failure_note(server.engine, "(discovery)", &rfc3339_now(), &what, "");
    let extents = walker.store_bytes(note)?;
    let name = match nth {
        0 => "DISCOVERY.FAILED".to_owned(),
        _ => format!("DISCOVERY-{}.FAILED", nth + 1),
    };
    let payload = Payload::File { extents };
    Ok(synthesized(
        name.into_bytes(),
        EntryKind::File,
        &plan.user,
        super::now(),
        payload,
    ))
}

fn kind_of(engine: Engine) -> PartKind {
    match engine {
        Engine::MariaDb => PartKind::MariaDb,
        Engine::PostgreSql => PartKind::PostgreSql,
    }
}

fn warn(walker: &mut Walker, engine: Engine, socket: &Path, what: &str) {
    let msg = format!("{} at {}: {what}", engine.label(), socket.display());
    tracing::warn!("{msg}");
    walker.warnings.push(msg);
}

fn rfc3339_now() -> String {
    crate::vfs::naming::rfc3339_utc(super::now())
}

/// Dumps one database into `<db>.sql`, or leaves `<db>.sql.FAILED` with a warning naming it.
fn dump_one(
    walker: &mut Walker,
    plan: &PartsPlan,
    server: &Server,
    db: &str,
) -> Result<(Entry, DumpReport), BackupError> {
    let started = Instant::now();
    let engine = server.engine;
    let inconsistent = dump::inconsistent_tables(server, &plan.user, db);
    if !inconsistent.is_empty() {
        let what = format!(
            "database {db}: tables without transactions are dumped without a consistent snapshot: {}",
            inconsistent.join(", ")
        );
        warn(walker, engine, &server.socket, &what);
    }
    let mut stored: Option<(Vec<Extent>, u64)> = None;
    let failure = dump::run_dump(server, &plan.user, db, |stream| {
        Ok::<_, BackupError>(walker.store_stream(stream)?.map(|(extents, n)| {
            stored = Some((extents, n));
            n
        }))
    })?;
    let end = super::now();
    let bytes = stored.as_ref().map_or(0, |(_, n)| *n);
    let report = |failure: Option<String>| DumpReport {
        engine,
        name: db.to_owned(),
        failure,
        bytes,
        duration: started.elapsed(),
    };
    match (failure, stored) {
        (None, Some((extents, _))) => {
            let entry = synthesized(
                format!("{db}.sql").into_bytes(),
                EntryKind::File,
                &plan.user,
                end,
                Payload::File { extents },
            );
            Ok((entry, report(None)))
        }
        (failure, _) => {
            let (reason, stderr) = failure.unwrap_or_else(|| ("no output".into(), String::new()));
            warn(
                walker,
                engine,
                &server.socket,
                &format!("database {db}: dump failed: {reason}"),
            );
            let note = dump::failure_note(
                engine,
                db,
                &crate::vfs::naming::rfc3339_utc(end),
                &reason,
                &stderr,
            );
            let extents = walker.store_bytes(note)?;
            let entry = synthesized(
                format!("{db}.sql.FAILED").into_bytes(),
                EntryKind::File,
                &plan.user,
                end,
                Payload::File { extents },
            );
            Ok((entry, report(Some(reason))))
        }
    }
}
