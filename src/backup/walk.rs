//! Walking the source tree depth first, in the order the tree format numbers entries.
//!
//! Each directory's entries are sorted by name bytes and visited in that order, so a running counter gives every
//! entry exactly the DFS number the mount will compute from the trees. Against the previous snapshot's tree of
//! the same directory, a file whose size, mtime, ctime and inode are unchanged keeps its extents and xattrs
//! without being opened: an unchanged directory costs one lstat per entry.

use super::exclude::Excludes;
use super::hardlinks::Hardlinks;
use super::source::{self, SegmentReader};
use super::sqlite;
use super::store::{BlobSink, Counters};
use super::BackupError;
use crate::format::links::LinkTable;
use crate::format::manifest::Stats;
use crate::format::tree::{Entry, EntryKind, Extent, Payload, Tree, FLAG_HARDLINK};
use crate::format::tree_index::encode_directory_with;
use crate::format::{BlobId, TreeId};
use crate::repo::{Directory, Repository};
use std::collections::HashMap;
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

/// Why an entry could not be backed up: `Skip` drops just that entry with a warning, `Fatal` ends the backup.
enum EntryError {
    Skip(io::Error),
    Fatal(BackupError),
}

impl From<io::Error> for EntryError {
    fn from(e: io::Error) -> Self {
        EntryError::Skip(e)
    }
}

impl From<crate::repo::RepoError> for EntryError {
    fn from(e: crate::repo::RepoError) -> Self {
        EntryError::Fatal(e.into())
    }
}

/// The previous tree of a directory by source inode, built on the first name it lacks (Maildir only).
struct Renames<'p> {
    dir: Option<&'p Directory>,
    by_inode: Option<HashMap<u64, Entry>>,
}

impl Renames<'_> {
    /// The previous entry of a Maildir message renamed since (a flag change renames `ID:2,` to `ID:2,S`): same
    /// directory, inode, size and mtime. A rename changes the ctime, so only Maildir trees, whose messages are
    /// never rewritten in place, trust the match without reading the message again.
    fn message(&mut self, repo: &Repository, meta: &Metadata) -> Option<Entry> {
        let dir = self.dir?;
        let by_inode = self.by_inode.get_or_insert_with(|| {
            dir.entries_from(repo, 0)
                .filter_map(Result::ok)
                .filter(|e| e.kind == EntryKind::File)
                .map(|e| (e.source_ino, Entry::clone(&e)))
                .collect()
        });
        by_inode
            .get(&meta.ino())
            .filter(|p| p.size == meta.len() && p.mtime == source::mtime(meta))
            .cloned()
    }
}

/// Chunk sizes (min, average, max) for database dumps. A night's changes are rows scattered through a dump, and
/// every chunk holding one is new. Measured with benches/dump_night.sh (232 MB of dumps; bytes added by a night
/// of changes among the newest rows / anywhere): 1 MiB average (the files') 11.2 / 85.9 MB, 64 KiB 3.4 / 69.9,
/// 32 KiB 2.6 / 50.8, 16 KiB 2.3 / 33.5. Each chunk costs the dump's tree entry 37 bytes, rewritten every night:
/// 32 KiB keeps that at 1.2 MB per GB of dump. Readers do not depend on how a stream was cut (SPEC.md).
const DUMP_CHUNKING: (usize, usize, usize) = (8 << 10, 32 << 10, 128 << 10);

/// How many times a file that changes while it is read is read again before it is stored with a warning.
const READ_ATTEMPTS: u32 = 3;

/// Whether two status snapshots of one file describe the same content: any write changes mtime and ctime.
fn same_version(before: &Metadata, after: &Metadata) -> bool {
    before.ino() == after.ino()
        && before.dev() == after.dev()
        && before.len() == after.len()
        && source::mtime(before) == source::mtime(after)
        && source::ctime(before) == source::ctime(after)
}

pub struct Walker<'w, 's, 'r> {
    pub repo: &'r Repository,
    pub sink: BlobSink<'s, 'r>,
    pub counters: &'w Counters,
    pub root_dev: u64,
    pub stats: Stats,
    pub warnings: Vec<String>,
    next_dfs: u64,
    /// Directories (device, inode) never backed up: the repository's, when it lies inside the source, and the
    /// account's own mount point of its backups.
    pub never: Vec<(u64, u64)>,
    /// The account's exclude patterns, matched against `rel`; empty for mail.
    pub excludes: Excludes,
    /// The path of the entry being built, relative to the walk's root.
    rel: Vec<u8>,
    /// A Maildir tree: a message renamed (its flags changed) keeps its content without being read again.
    pub maildir: bool,
    /// Siblings of an SQLite database stored through its online backup (`-wal`, `-shm`): not stored as files.
    skip: std::collections::HashSet<std::path::PathBuf>,
    /// Hardlinked inodes seen so far.
    links: Hardlinks,
}

impl<'w, 's, 'r> Walker<'w, 's, 'r> {
    pub fn new(
        repo: &'r Repository,
        sink: BlobSink<'s, 'r>,
        counters: &'w Counters,
        root_dev: u64,
    ) -> Self {
        let stats = Stats::default();
        Self {
            repo,
            sink,
            counters,
            root_dev,
            stats,
            warnings: Vec::new(),
            next_dfs: 1,
            never: Vec::new(),
            excludes: Excludes::default(),
            rel: Vec::new(),
            maildir: false,
            skip: Default::default(),
            links: Hardlinks::default(),
        }
    }

    pub fn warn(&mut self, path: &Path, what: impl std::fmt::Display) {
        let msg = format!("{}: {what}", path.display());
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    /// Backs up the directory at `path`; returns its tree id and number of descendants.
    pub fn walk_dir(
        &mut self,
        path: &Path,
        prev: Option<Directory>,
    ) -> Result<(TreeId, u64), BackupError> {
        let first_dfs = self.next_dfs;
        let mut names: Vec<_> = std::fs::read_dir(path)
            .map_err(|source| BackupError::Io {
                path: path.into(),
                source,
            })?
            .filter_map(|e| match e {
                Ok(e) => Some(e.file_name()),
                Err(err) => {
                    self.warn(path, format_args!("reading directory: {err}"));
                    None
                }
            })
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut entries = Vec::with_capacity(names.len());
        let mut renames = Renames {
            dir: prev.as_ref(),
            by_inode: None,
        };
        for name in names {
            if self.sink.failed() {
                break;
            }
            let child = path.join(&name);
            if self.skip.remove(&child) {
                continue;
            }
            // An unreadable previous tree only costs re-reading the files, as if they had changed.
            let prev_entry = prev
                .as_ref()
                .and_then(|d| d.find(self.repo, name.as_bytes()).ok().flatten());
            let rel_len = self.rel.len();
            if rel_len > 0 {
                self.rel.push(b'/');
            }
            self.rel.extend_from_slice(name.as_bytes());
            let built = self.entry(&child, name.as_bytes(), prev_entry.as_deref(), &mut renames);
            self.rel.truncate(rel_len);
            if let Some(entry) = built? {
                entries.push(entry);
            }
        }
        let id = self.store_directory(&entries)?;
        Ok((id, self.next_dfs - first_dfs))
    }

    /// Stores a directory's entries (sorted by name) as its tree, paged if large; returns the tree's id.
    pub fn store_directory(&mut self, entries: &[Entry]) -> Result<TreeId, BackupError> {
        let codec = self.repo.codec();
        let encoded = encode_directory_with(entries, &|bytes| codec.tree_id(bytes));
        for page in encoded.pages {
            self.sink.put(BlobId::tree(codec.tree_id(&page)), page)?;
        }
        let id = codec.tree_id(&encoded.root);
        self.sink.put(BlobId::tree(id), encoded.root)?;
        Ok(id)
    }

    /// Builds one entry, or None (with a warning) if it vanished or could not be read.
    fn entry(
        &mut self,
        path: &Path,
        name: &[u8],
        prev: Option<&Entry>,
        renames: &mut Renames,
    ) -> Result<Option<Entry>, BackupError> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                self.warn(path, format_args!("vanished or unreadable: {e}"));
                return Ok(None);
            }
        };
        if self.never.contains(&(meta.dev(), meta.ino())) {
            tracing::info!(
                "{}: the repository or the account's backups, not backed up",
                path.display()
            );
            return Ok(None);
        }
        if self.excludes.excludes(&self.rel, meta.is_dir()) {
            tracing::debug!("{}: excluded", path.display());
            return Ok(None);
        }
        let kind = source::kind_of(&meta);
        let renamed;
        let prev = match prev {
            None if self.maildir && kind == EntryKind::File => {
                renamed = renames.message(self.repo, &meta);
                renamed.as_ref()
            }
            p => p,
        };
        let unchanged = prev.filter(|p| {
            p.kind == kind
                && p.source_ino == meta.ino()
                && (p.ctime == source::ctime(&meta) || p.name != name)
                && p.mtime == source::mtime(&meta)
                && p.size == meta.len()
        });
        let xattrs = match unchanged {
            Some(p) => p.xattrs.clone(),
            None => source::xattrs(path).unwrap_or_else(|e| {
                self.warn(path, format_args!("extended attributes: {e}"));
                Vec::new()
            }),
        };
        let dfs = self.next_dfs;
        self.next_dfs += 1;
        let mut entry = Entry {
            name: name.to_vec(),
            kind,
            flags: 0,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len(),
            mtime: source::mtime(&meta),
            ctime: source::ctime(&meta),
            source_ino: meta.ino(),
            rdev: if matches!(kind, EntryKind::CharDev | EntryKind::BlockDev) {
                meta.rdev()
            } else {
                0
            },
            xattrs,
            payload: Payload::Special,
        };
        let payload = match kind {
            EntryKind::File => self.file_payload(path, &meta, dfs, unchanged, &mut entry),
            EntryKind::Dir => self.dir_payload(path, &meta, prev),
            EntryKind::Symlink => std::fs::read_link(path)
                .map(|t| Payload::Symlink {
                    target: t.as_os_str().as_bytes().to_vec(),
                })
                .map_err(EntryError::Skip),
            _ => Ok(Payload::Special),
        };
        match payload {
            Ok(p) => entry.payload = p,
            Err(EntryError::Fatal(e)) => return Err(e),
            Err(EntryError::Skip(e)) => {
                // Nothing below this entry was numbered (directories fail before reading children).
                self.next_dfs = dfs;
                self.warn(path, format_args!("skipped: {e}"));
                return Ok(None);
            }
        }
        if !matches!(kind, EntryKind::File | EntryKind::Dir) && self.links.joins(&meta) {
            // Hard links of symlinks, FIFOs, sockets and devices are kept as files' are: `cp -a` keeps them.
            entry.flags |= FLAG_HARDLINK;
            if self.links.another_path(&meta).is_none() {
                self.links.first_path(&meta, dfs, Vec::new());
            }
        }
        self.count(&entry);
        Ok(Some(entry))
    }

    pub fn count(&mut self, e: &Entry) {
        match e.kind {
            EntryKind::File => {
                self.stats.files += 1;
                self.stats.file_bytes += e.size;
                self.counters.files.fetch_add(1, Ordering::Relaxed);
            }
            EntryKind::Dir => self.stats.dirs += 1,
            EntryKind::Symlink => self.stats.symlinks += 1,
            _ => self.stats.specials += 1,
        }
    }

    /// The previous snapshot's tree of a directory. A damaged one only costs reading the files again, as if
    /// they had changed; the writer then stores the tree again rather than reuse the damaged copy.
    pub fn previous_dir(&mut self, path: &Path, tree: TreeId) -> Option<Directory> {
        match self.repo.directory(tree) {
            Ok(dir) => Some(dir),
            Err(e) => {
                self.warn(
                    path,
                    format_args!("the previous snapshot's tree is damaged, stored again: {e}"),
                );
                None
            }
        }
    }

    fn dir_payload(
        &mut self,
        path: &Path,
        meta: &Metadata,
        prev: Option<&Entry>,
    ) -> Result<Payload, EntryError> {
        if meta.dev() != self.root_dev {
            // Another filesystem mounted here: keep the mount point, not its contents.
            let bytes = Tree::encode(&[]);
            let tree = self.repo.codec().tree_id(&bytes);
            self.sink.put(BlobId::tree(tree), bytes)?;
            return Ok(Payload::Dir {
                tree,
                descendants: 0,
            });
        }
        let prev_tree = match prev.map(|p| &p.payload) {
            Some(Payload::Dir { tree, .. }) => self.previous_dir(path, *tree),
            _ => None,
        };
        match self.walk_dir(path, prev_tree) {
            Ok((tree, descendants)) => Ok(Payload::Dir { tree, descendants }),
            Err(BackupError::Io { source, .. }) => Err(EntryError::Skip(source)),
            Err(e) => Err(EntryError::Fatal(e)),
        }
    }

    fn file_payload(
        &mut self,
        path: &Path,
        meta: &Metadata,
        dfs: u64,
        unchanged: Option<&Entry>,
        entry: &mut Entry,
    ) -> Result<Payload, EntryError> {
        let linked = self.links.joins(meta);
        if linked {
            entry.flags |= FLAG_HARDLINK;
            if let Some(extents) = self.links.another_path(meta) {
                return Ok(Payload::File { extents });
            }
        }
        if sqlite::in_wal_use(path, meta) {
            match self.sqlite_copy(path, meta, entry) {
                Ok(extents) => return Ok(Payload::File { extents }),
                Err(EntryError::Skip(e)) => self.warn(
                    path,
                    format_args!(
                        "SQLite database in WAL mode stored as it is, possibly without its newest rows: {e}"
                    ),
                ),
                Err(fatal) => return Err(fatal),
            }
        }
        let reusable = match unchanged.map(|p| &p.payload) {
            Some(Payload::File { extents }) if self.all_usable(extents)? => Some(extents),
            _ => None,
        };
        let extents = match reusable {
            Some(extents) => {
                for x in extents {
                    if let Extent::Data { id, .. } = x {
                        self.sink.reuse(BlobId::chunk(*id));
                    }
                }
                extents.clone()
            }
            _ => self.read_consistent(path, meta, entry)?,
        };
        if linked {
            self.links.first_path(meta, dfs, extents.clone());
        }
        Ok(Payload::File { extents })
    }

    /// Stores an SQLite database in WAL mode through its online backup (see `sqlite`); its `-wal` and `-shm`
    /// files are then left out. Never the unchanged shortcut: new rows may be in the `-wal` file only.
    fn sqlite_copy(
        &mut self,
        path: &Path,
        meta: &Metadata,
        entry: &mut Entry,
    ) -> Result<Vec<Extent>, EntryError> {
        let copy = sqlite::online_backup(path, meta).map_err(io::Error::other)?;
        let copy_meta = std::fs::metadata(&copy.file)?;
        let (extents, size, _) = self.read_file(&copy.file, &copy_meta)?;
        entry.size = size;
        self.skip.insert(sqlite::sibling(path, "-wal"));
        self.skip.insert(sqlite::sibling(path, "-shm"));
        Ok(extents)
    }

    /// Whether every chunk of an unchanged file can be referenced: one in a lost pack means reading it again.
    fn all_usable(&self, extents: &[Extent]) -> Result<bool, EntryError> {
        for x in extents {
            if let Extent::Data { id, .. } = x {
                if !self.sink.can_reuse(BlobId::chunk(*id))? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Reads a file until one read saw no change to it, at most `READ_ATTEMPTS` times: a file rewritten in
    /// place while it is read would otherwise be stored as a mix of its versions. The entry takes the size and
    /// times of the version stored; after the last attempt the mix is stored with a warning and the times from
    /// before it, so that the next backup sees a change and reads the file again.
    fn read_consistent(
        &mut self,
        path: &Path,
        meta: &Metadata,
        entry: &mut Entry,
    ) -> Result<Vec<Extent>, EntryError> {
        let mut before = meta.clone();
        let mut attempt = 1;
        loop {
            let (extents, size, after) = self.read_file(path, &before)?;
            let stable = same_version(&before, &after);
            if stable || attempt == READ_ATTEMPTS {
                if !stable {
                    self.warn(
                        path,
                        format_args!(
                            "changed while being read, {READ_ATTEMPTS} times: stored as last read, possibly a mix of versions"
                        ),
                    );
                }
                entry.size = size;
                entry.mode = before.mode() & 0o7777;
                entry.mtime = source::mtime(&before);
                entry.ctime = source::ctime(&before);
                return Ok(extents);
            }
            tracing::info!(
                "{}: changed while being read; reading it again",
                path.display()
            );
            attempt += 1;
            before = after;
        }
    }

    /// Chunks a file's data segments; holes become hole extents. Returns the extents, the size they cover and
    /// the file's status after the read.
    fn read_file(
        &mut self,
        path: &Path,
        meta: &Metadata,
    ) -> Result<(Vec<Extent>, u64, Metadata), EntryError> {
        let file = source::open_file(path)?;
        let opened = file.metadata()?;
        if !opened.is_file() || opened.ino() != meta.ino() || opened.dev() != meta.dev() {
            // Replaced since the lstat: the next attempt reads what is there now.
            return Ok((Vec::new(), 0, opened));
        }
        let size = meta.len();
        let mut extents = Vec::new();
        let mut pos = 0u64;
        for (offset, len) in source::data_segments(&file, size)? {
            if offset > pos {
                extents.push(Extent::Hole { len: offset - pos });
            }
            let reader = SegmentReader {
                file: &file,
                offset,
                remaining: len,
            };
            let read = self.chunk_into(reader, self.file_chunking(), &mut extents)?;
            pos = offset + read;
            if read < len {
                // Shrank while read: the status after the read differs, and the caller reads it again.
                return Ok((extents, pos, file.metadata()?));
            }
        }
        if size > pos {
            extents.push(Extent::Hole { len: size - pos });
        }
        Ok((extents, size, file.metadata()?))
    }

    /// Cuts `reader` into content-defined chunks, stores each and appends its extent; returns the bytes read.
    /// Memory stays at about one largest chunk whatever the length of the stream.
    fn chunk_into(
        &mut self,
        reader: impl io::Read,
        (min, avg, max): (usize, usize, usize),
        extents: &mut Vec<Extent>,
    ) -> Result<u64, EntryError> {
        let mut read = 0u64;
        // Seed 0 is the crate's own gear table (`StreamCDC::new`); an encrypted repository's key seeds it.
        let seed = self.repo.codec().chunker_seed();
        let level = fastcdc::v2020::Normalization::Level1;
        for chunk in
            fastcdc::v2020::StreamCDC::with_level_and_seed(reader, min, avg, max, level, seed)
        {
            let chunk = chunk.map_err(|e| io::Error::other(format!("reading: {e}")))?;
            let id = self.repo.codec().chunk_id(&chunk.data);
            let n = chunk.data.len() as u64;
            extents.push(Extent::Data { id, len: n as u32 });
            self.sink.put(BlobId::chunk(id), chunk.data)?;
            self.counters.bytes_read.fetch_add(n, Ordering::Relaxed);
            read += n;
        }
        Ok(read)
    }

    /// The repository's chunk sizes (min, average, max), which every writer uses for files so that the same
    /// file written by two machines deduplicates.
    fn file_chunking(&self) -> (usize, usize, usize) {
        let cfg = self.repo.config();
        (
            cfg.chunk_min as usize,
            cfg.chunk_avg as usize,
            cfg.chunk_max as usize,
        )
    }

    /// Stores a stream that is not a file of the source (a database dump): its extents and length, or the
    /// error reading it (`Ok(Err)`: the stream failed, the backup goes on); `Err` only if the repository failed.
    pub fn store_stream(
        &mut self,
        reader: impl io::Read,
    ) -> Result<io::Result<(Vec<Extent>, u64)>, BackupError> {
        let mut extents = Vec::new();
        match self.chunk_into(reader, DUMP_CHUNKING, &mut extents) {
            Ok(n) => Ok(Ok((extents, n))),
            Err(EntryError::Skip(e)) => Ok(Err(e)),
            Err(EntryError::Fatal(e)) => Err(e),
        }
    }

    /// Stores a small synthesized file's contents (a failure note) as one chunk.
    pub fn store_bytes(&mut self, data: Vec<u8>) -> Result<Vec<Extent>, BackupError> {
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let id = self.repo.codec().chunk_id(&data);
        let len = data.len() as u32;
        self.sink.put(BlobId::chunk(id), data)?;
        Ok(vec![Extent::Data { id, len }])
    }

    /// Takes back the numbers given from `dfs` on (a part that could not be walked at all).
    pub fn renumber_from(&mut self, dfs: u64) {
        self.next_dfs = dfs;
    }

    /// Gives the next DFS number to an entry the caller builds itself (the parts of a snapshot).
    pub fn number_entry(&mut self) -> u64 {
        let dfs = self.next_dfs;
        self.next_dfs += 1;
        dfs
    }

    /// The hardlink table of the snapshot: only inodes that appear under two or more paths.
    pub fn link_table(&self) -> LinkTable {
        self.links.table()
    }
}
