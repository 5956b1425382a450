//! SQLite databases in WAL mode among an account's files. While an application has one open, committed rows
//! may live only in `<db>-wal`: the main file copied alone loses them, and the two copied one after the other
//! can be torn. Such a database is stored through SQLite's online backup instead (the `sqlite3` program's
//! `.backup`, run as the file's owner so that no `-shm` or `-wal` file of root's is left in the account), and its
//! `-wal` and `-shm` files are not stored: the copy holds every committed row and opens on its own.

use super::child::{self, RunAs};
use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The longest an online backup may take before it is given up (the file is then stored as it is).
const DEADLINE: Duration = Duration::from_secs(3600);

/// The first 16 bytes of every SQLite 3 database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Whether `path` is an SQLite database in WAL mode whose `-wal` file exists (an application may have it
/// open). Header bytes 18 and 19 (read and write versions) are 2 in WAL mode.
pub fn in_wal_use(path: &Path, meta: &Metadata) -> bool {
    if meta.len() < 100 || !sibling(path, "-wal").exists() {
        return false;
    }
    let mut header = [0u8; 20];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    read.is_ok() && header[..16] == MAGIC[..] && header[18] == 2 && header[19] == 2
}

/// `<path><suffix>`: the database's `-wal` or `-shm` file.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A consistent copy of a database in a private temporary directory, removed when this is dropped.
pub struct OnlineCopy {
    dir: PathBuf,
    pub file: PathBuf,
}

impl Drop for OnlineCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies the database at `path` with SQLite's online backup, as the file's owner.
pub fn online_backup(path: &Path, meta: &Metadata) -> Result<OnlineCopy, String> {
    static N: AtomicU64 = AtomicU64::new(0);
    let owner = RunAs::by_uid(meta.uid()).unwrap_or_else(|_| RunAs {
        name: meta.uid().to_string(),
        uid: meta.uid(),
        gid: meta.gid(),
        home: PathBuf::from("/"),
    });
    let dir = std::env::temp_dir().join(format!(
        "backupfs-sqlite-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = OnlineCopy {
        file: dir.join("copy.db"),
        dir,
    };
    std::os::unix::fs::chown(&copy.dir, Some(owner.uid), Some(owner.gid))
        .map_err(|e| format!("{}: {e}", copy.dir.display()))?;
    let args = [
        "-init".into(),
        "/dev/null".into(),
        "-bail".into(),
        "-cmd".into(),
        ".timeout 10000".into(),
        path.as_os_str().to_owned(),
        format!(".backup '{}'", copy.file.display()).into(),
    ];
    let mut running =
        child::spawn("sqlite3", &args, &owner, DEADLINE).map_err(|e| e.to_string())?;
    if let Some(mut out) = running.stdout.take() {
        let _ = io::copy(&mut out, &mut io::sink());
    }
    let done = running.finish().map_err(|e| e.to_string())?;
    if !done.success() {
        let err = done
            .stderr_tail
            .trim()
            .lines()
            .last()
            .unwrap_or("")
            .to_owned();
        return Err(format!(
            "sqlite3 .backup: {}: {err}",
            done.describe(DEADLINE)
        ));
    }
    Ok(copy)
}
