//! A repository in a local directory.
//!
//! Objects are written as `tmp/<pid>-<n>.tmp` while locked with flock, fsynced, renamed into place with
//! `renameat2(RENAME_NOREPLACE)` and the directory fsynced: a crash leaves either the whole object or a temporary
//! file, and a temporary file whose flock can be taken belongs to a dead writer and may be removed.

use super::{Backend, BackendError, Dir, Listed, Listing, Object};
use crate::format::{PackId, SnapshotId};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Open pack files kept for reads; a mount reads the same few packs over and over.
const OPEN_FILES: usize = 128;

pub struct LocalBackend {
    root: PathBuf,
    open: Mutex<HashMap<Object, Arc<File>>>,
    tmp_counter: AtomicU64,
}

impl LocalBackend {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            open: Mutex::new(HashMap::new()),
            tmp_counter: AtomicU64::new(0),
        }
    }

    /// Creates the directory layout of a new repository.
    pub fn create_layout(root: &Path) -> Result<(), BackendError> {
        for dir in ["packs", "snapshots", "tmp", "locks"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| BackendError::io(&p, e))?;
        }
        Ok(())
    }

    fn path(&self, obj: Object) -> PathBuf {
        self.root.join(obj.key())
    }

    fn file(&self, obj: Object) -> Result<Arc<File>, BackendError> {
        if let Some(f) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&obj)
        {
            return Ok(f.clone());
        }
        let f = Arc::new(open_regular(&self.path(obj))?);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= OPEN_FILES {
            open.clear();
        }
        open.insert(obj, f.clone());
        Ok(f)
    }

    fn write_temp(&self, bytes: &[u8]) -> Result<(PathBuf, File), BackendError> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}-{n}.tmp", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| BackendError::io(&tmp, e))?;
        let written = flock(&f, libc::LOCK_EX)
            .and_then(|_| f.write_all(bytes))
            .and_then(|_| f.sync_all());
        if let Err(e) = written {
            // On a full disk the partial file would keep the space until the next backup cleans up.
            let _ = fs::remove_file(&tmp);
            return Err(BackendError::io(&tmp, e));
        }
        Ok((tmp, f))
    }

    fn list_dir(&self, dir: &Path) -> Result<Vec<String>, BackendError> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(BackendError::io(dir, e)),
        };
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| BackendError::io(dir, e))?;
            names.push(ent.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }
}

impl Backend for LocalBackend {
    fn read_at(&self, obj: Object, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        let f = self.file(obj)?;
        f.read_exact_at(buf, offset)
            .map_err(|e| BackendError::io(self.path(obj), e))
    }

    fn read_all(&self, obj: Object) -> Result<Vec<u8>, BackendError> {
        let path = self.path(obj);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut open_regular(&path)?, &mut bytes)
            .map_err(|e| BackendError::io(&path, e))?;
        Ok(bytes)
    }

    fn size(&self, obj: Object) -> Result<u64, BackendError> {
        let f = self.file(obj)?;
        Ok(f.metadata()
            .map_err(|e| BackendError::io(self.path(obj), e))?
            .len())
    }

    fn write_new(&self, obj: Object, bytes: &[u8]) -> Result<(), BackendError> {
        let dest = self.path(obj);
        let dir = dest.parent().expect("object keys have a directory");
        fs::create_dir_all(dir).map_err(|e| BackendError::io(dir, e))?;
        let (tmp, _locked) = self.write_temp(bytes)?;
        super::crash::before_change(&format_args!("rename into {}", dest.display()));
        if let Err(e) = rename_noreplace(&tmp, &dest) {
            let _ = fs::remove_file(&tmp);
            return Err(BackendError::io(&dest, e));
        }
        fsync_dir(dir).map_err(|e| BackendError::io(dir, e))
    }

    fn remove(&self, obj: Object) -> Result<(), BackendError> {
        let path = self.path(obj);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&obj);
        super::crash::before_change(&format_args!("delete {}", path.display()));
        fs::remove_file(&path).map_err(|e| BackendError::io(&path, e))?;
        let dir = path.parent().expect("object keys have a directory");
        fsync_dir(dir).map_err(|e| BackendError::io(dir, e))
    }

    fn list_packs(&self) -> Result<Vec<PackId>, BackendError> {
        let mut ids = Vec::new();
        for sub in self.list_dir(&self.root.join("packs"))? {
            for name in self.list_dir(&self.root.join("packs").join(&sub))? {
                if let Some(id) = name.strip_suffix(".pack").and_then(PackId::from_hex) {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    fn list_manifests(&self) -> Result<Vec<SnapshotId>, BackendError> {
        let names = self.list_dir(&self.root.join("snapshots"))?;
        Ok(names
            .iter()
            .filter_map(|n| SnapshotId::from_hex(n))
            .collect())
    }

    fn list_aged(&self, dir: Dir) -> Result<Listing, BackendError> {
        let top = self.root.join(dir.name());
        let names: Vec<String> = match dir {
            Dir::Packs => {
                let mut names = Vec::new();
                for sub in self.list_dir(&top)? {
                    for name in self.list_dir(&top.join(&sub))? {
                        names.push(format!("{sub}/{name}"));
                    }
                }
                names
            }
            Dir::Snapshots | Dir::Leases | Dir::Condemned | Dir::Indexes => self.list_dir(&top)?,
        };
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            // Gone since the listing (a prune): not listed, as a store's listing would not list it.
            let Ok(meta) = fs::symlink_metadata(top.join(&name)) else {
                continue;
            };
            use std::os::unix::fs::MetadataExt;
            entries.push(Listed {
                name,
                size: meta.len(),
                modified: meta.mtime(),
            });
        }
        Ok(Listing {
            entries,
            now: super::local_now(),
        })
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self.list_dir(&self.root)?.is_empty())
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn clean_leftovers(&self) -> Result<usize, BackendError> {
        let dir = self.root.join("tmp");
        let mut removed = 0;
        for name in self.list_dir(&dir)? {
            let path = dir.join(&name);
            // Anything but a regular file is not a writer's temporary file (and a FIFO must not hang us).
            let Ok(f) = open_regular(&path) else { continue };
            // Held by a live writer: not ours to touch.
            if flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_err() {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Opens an object for reading, refusing anything but a regular file: opening a FIFO put where an object
/// belongs would otherwise block forever (O_NONBLOCK makes the open return; the type check refuses it).
fn open_regular(path: &Path) -> Result<File, BackendError> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| BackendError::io(path, e))?;
    match f.metadata() {
        Ok(m) if m.is_file() => Ok(f),
        Ok(_) => Err(BackendError::io(
            path,
            std::io::Error::other("not a regular file"),
        )),
        Err(e) => Err(BackendError::io(path, e)),
    }
}

pub(crate) fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a valid, owned descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; renameat2 does not retain them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
