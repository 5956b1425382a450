//! A bounded on-disk cache of blobs read from a remote store, so that a mount does not fetch the same bytes over
//! the network again after they left the in-memory caches (or after a restart). Holds the stored (compressed)
//! bytes under `<dir>/<2 hex>/<kind><64 hex>`; a blob read from here is verified against its id like any other,
//! so a damaged or foreign file costs a refetch, never a wrong byte.
//!
//! Eviction is least recently used by this process's clock, seeded from the files' modification times at start;
//! the directory may be shared by the mounts of one machine (each keeps the total under its own budget; files
//! another mount evicted are simply misses).

use crate::format::BlobId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct DiskCache {
    dir: PathBuf,
    budget: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Size and last use of every cached file.
    entries: HashMap<String, (u64, u64)>,
    total: u64,
    clock: u64,
}

impl DiskCache {
    /// Opens (creating) the cache at `dir` with a budget in bytes, and indexes what a previous run left.
    pub fn open(dir: &Path, budget: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        for sub in std::fs::read_dir(dir)?.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let Ok(meta) = f.metadata() else { continue };
                let name = format!(
                    "{}/{}",
                    sub.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                found.push((
                    meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                    name,
                    meta.len(),
                ));
            }
        }
        found.sort();
        let mut state = State::default();
        for (_, name, size) in found {
            state.clock += 1;
            state.total += size;
            state.entries.insert(name, (size, state.clock));
        }
        let cache = Self {
            dir: dir.to_path_buf(),
            budget,
            state: Mutex::new(state),
        };
        cache.evict();
        Ok(cache)
    }

    fn name(id: BlobId) -> String {
        let hex: String = id.hash.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}/{}{hex}", &hex[..2], id.kind as u8)
    }

    /// The stored bytes of `id` if cached with exactly `len` bytes.
    pub fn get(&self, id: BlobId, len: usize) -> Option<Vec<u8>> {
        let name = Self::name(id);
        let bytes = std::fs::read(self.dir.join(&name)).ok()?;
        if bytes.len() != len {
            self.forget(&name);
            return None;
        }
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.clock += 1;
        let tick = s.clock;
        if let Some(e) = s.entries.get_mut(&name) {
            e.1 = tick;
        }
        Some(bytes)
    }

    /// Stores a verified blob's stored bytes. Failures (a full disk) only cost the cache.
    pub fn put(&self, id: BlobId, stored: &[u8]) {
        if stored.len() as u64 > self.budget / 8 {
            return;
        }
        let name = Self::name(id);
        let path = self.dir.join(&name);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, stored))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.clock += 1;
            let tick = s.clock;
            if let Some((old, _)) = s.entries.insert(name, (stored.len() as u64, tick)) {
                s.total -= old;
            }
            s.total += stored.len() as u64;
        }
        self.evict();
    }

    pub fn contains(&self, id: BlobId) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.entries.contains_key(&Self::name(id))
    }

    /// Drops a cached blob that failed verification.
    pub fn remove(&self, id: BlobId) {
        self.forget(&Self::name(id));
    }

    fn forget(&self, name: &str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((size, _)) = s.entries.remove(name) {
            s.total -= size;
        }
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Removes the least recently used files until the total is at most 90% of the budget.
    fn evict(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.total <= self.budget {
            return;
        }
        let mut by_age: Vec<(u64, String, u64)> = s
            .entries
            .iter()
            .map(|(n, (size, tick))| (*tick, n.clone(), *size))
            .collect();
        by_age.sort_unstable();
        let target = self.budget / 10 * 9;
        for (_, name, size) in by_age {
            if s.total <= target {
                break;
            }
            s.entries.remove(&name);
            s.total -= size;
            let _ = std::fs::remove_file(self.dir.join(&name));
        }
    }

    pub fn bytes(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}
