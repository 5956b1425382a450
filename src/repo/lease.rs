//! The commit lease: how writers on several machines take turns at the moments that must not overlap (a
//! backup assigning its snapshot ordinal, a prune deleting packs), using only PUT, LIST and DELETE, so that it
//! works on stores that ignore `If-None-Match` (Garage, `rclone serve s3`) as on those that honour it.
//!
//! A writer PUTs `leases/<machine id 8 bytes><random 8 bytes>` and lists `leases/`. It holds the lease if no
//! other live lease is listed; otherwise it deletes its own and tries again after a random pause. Two writers
//! that overlap both see each other and both back off, so at most one proceeds: this needs only a listing that
//! shows every PUT that returned before it (read-after-write, which AWS S3, Ceph, MinIO and Garage's quorum give).
//!
//! A lease is live for `LEASE_TTL` by the store's clock (its LastModified against the listing's Date), so a
//! crashed writer blocks others for at most that long, and never forever. A lease from this machine other than
//! one's own is dead at once: a writer holds the machine's index lock (flock) all the while it holds the lease,
//! so no other process of this machine can hold one. A holder checks, before its one write that must not
//! overlap, that less than half the TTL has passed since it acquired the lease.
//!
//! Only state directories that follow a shared store use leases; the writers of a local repository are on one
//! machine and take turns with the index lock alone.

use super::{random_bytes, RepoError, Repository};
use crate::backend::{lease_hex, BackendError, Dir, Object};
use std::time::{Duration, Instant};

/// A lease older than this (store clock) is a dead writer's.
pub const LEASE_TTL: Duration = Duration::from_secs(120);

/// `LEASE_TTL`, or for tests of a dead holder the seconds in `BACKUPFS_TEST_LEASE_TTL_S` (every process of such
/// a test sets the same value: a holder and a waiter must agree on it).
fn ttl() -> Duration {
    static TTL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TTL.get_or_init(|| {
        (std::env::var("BACKUPFS_TEST_LEASE_TTL_S").ok())
            .and_then(|v| v.parse().ok())
            .map_or(LEASE_TTL, Duration::from_secs)
    })
}
/// Give up waiting for other writers' leases after this.
const WAIT_AT_MOST: Duration = Duration::from_secs(15 * 60);

pub struct Lease<'a> {
    repo: &'a Repository,
    name: [u8; 16],
    acquired: Instant,
}

impl Repository {
    /// Takes the commit lease if this state directory follows a shared store (None otherwise). The caller must
    /// hold the index lock (`index_writer`).
    pub fn commit_lease(&self) -> Result<Option<Lease<'_>>, RepoError> {
        if !self.state.follows_store() {
            return Ok(None);
        }
        let machine = self.state.machine_id()?;
        let started = Instant::now();
        let mut round = 0u32;
        loop {
            let mut name = random_bytes::<16>()?;
            name[..8].copy_from_slice(&machine[..8]);
            let acquired = Instant::now();
            self.backend
                .write_new(Object::Lease(name), b"backupfs commit lease\n")?;
            let lease = Lease {
                repo: self,
                name,
                acquired,
            };
            let others = self.live_leases_but(&name, &machine)?;
            if others == 0 {
                return Ok(Some(lease));
            }
            drop(lease);
            if started.elapsed() > WAIT_AT_MOST {
                return Err(RepoError::LeaseBusy {
                    location: self.backend.describe(),
                    waited: started.elapsed().as_secs(),
                });
            }
            round += 1;
            tracing::debug!(
                "{others} other writers hold the commit lease; waiting (round {round})"
            );
            std::thread::sleep(pause(round));
        }
    }

    /// Live leases other than `own`; dead ones (expired, or another process's of this machine) are deleted.
    fn live_leases_but(&self, own: &[u8; 16], machine: &[u8; 16]) -> Result<usize, RepoError> {
        let listing = self.backend.list_aged(Dir::Leases)?;
        let own_hex = lease_hex(own);
        let machine_hex = lease_hex(machine)[..16].to_string();
        let mut live = 0;
        for l in &listing.entries {
            if l.name == own_hex {
                continue;
            }
            let Some(name) = parse_lease_name(&l.name) else {
                continue;
            };
            let expired = listing.now - l.modified > ttl().as_secs() as i64;
            if expired || l.name.starts_with(&machine_hex) {
                // Dead whether or not it can be deleted: credentials that may add but not delete (a copy to a
                // replica) leave their leases for a machine with more rights, or their expiry, to sweep.
                if let Err(e) = self.backend.remove(Object::Lease(name)) {
                    if !matches!(e, BackendError::NotFound { .. }) {
                        tracing::debug!(
                            "{e}; the dead lease stays until another writer deletes it"
                        );
                    }
                }
                continue;
            }
            live += 1;
        }
        Ok(live)
    }
}

impl Lease<'_> {
    /// For long holders (a prune deleting thousands of packs): once a quarter of the TTL has passed, takes a
    /// fresh lease object of this machine before deleting the old one, so that others always list one of ours
    /// that is young. Fails like `still_held` if the lease may already have expired.
    pub fn renew_if_due(&mut self) -> Result<(), RepoError> {
        self.still_held()?;
        if self.acquired.elapsed() < ttl() / 4 {
            return Ok(());
        }
        let mut name = random_bytes::<16>()?;
        name[..8].copy_from_slice(&self.name[..8]);
        let renewed = Instant::now();
        self.repo
            .backend
            .write_new(Object::Lease(name), b"backupfs commit lease\n")?;
        let old = std::mem::replace(&mut self.name, name);
        self.acquired = renewed;
        match self.repo.backend.remove(Object::Lease(old)) {
            Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Fails if the lease may have expired in others' eyes: the caller must not make its write then.
    pub fn still_held(&self) -> Result<(), RepoError> {
        if self.acquired.elapsed() < ttl() / 2 {
            return Ok(());
        }
        Err(RepoError::LeaseLost {
            location: self.repo.backend.describe(),
            held: self.acquired.elapsed().as_secs(),
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.repo.backend.remove(Object::Lease(self.name)) {
            // Expires by itself after the TTL.
            tracing::warn!("releasing the commit lease: {e}");
        }
    }
}

fn parse_lease_name(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut name = [0u8; 16];
    for (i, b) in name.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(name)
}

/// 50 ms to 3.2 s, randomised so that two writers who collided do not collide again.
fn pause(round: u32) -> Duration {
    let cap = 50u64 << round.min(6);
    let r = random_bytes::<2>().map_or(0, u16::from_le_bytes) as u64;
    Duration::from_millis(cap / 2 + r % (cap / 2 + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names() {
        let n = [0xabu8; 16];
        assert_eq!(parse_lease_name(&lease_hex(&n)), Some(n));
        assert_eq!(parse_lease_name("xyz"), None);
        assert_eq!(parse_lease_name(&"g".repeat(32)), None);
    }
}
