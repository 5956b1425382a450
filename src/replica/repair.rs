//! `check --read-data --repair-from REPLICA`: every pack and manifest the primary lacks or holds damaged is
//! rewritten from the replica's copy, which is verified first (its bytes hash to its name). Only whole objects
//! are ever written, so nothing the replica could not vouch for reaches the primary.

use crate::backend::{Backend, BackendError, Object};
use crate::format::{PackId, SnapshotId};
use crate::repo::{read_manifest, RepoError, Repository};
use std::collections::{BTreeSet, HashSet};

/// What `repair_from` rewrote at the primary, and what the replica could not supply.
#[derive(Debug, Default)]
pub struct RepairFromReport {
    pub rewritten: Vec<String>,
    pub unrepaired: Vec<String>,
}

/// Rewrites the primary's missing or damaged packs and manifests from `replica` (a store whose config matched).
pub fn repair_from(
    primary: &Repository,
    replica: &dyn Backend,
) -> Result<RepairFromReport, RepoError> {
    let mut report = RepairFromReport::default();
    let listed: HashSet<PackId> = primary.backend().list_packs()?.into_iter().collect();
    let indexed: BTreeSet<PackId> = (primary.indexed_blobs()?.into_iter())
        .map(|(_, at)| at.pack)
        .collect();
    for pack in indexed {
        let problem = if !listed.contains(&pack) {
            "missing"
        } else {
            match primary.backend().read_all(Object::Pack(pack)) {
                Ok(bytes) if PackId::of(&bytes) == pack => continue,
                Ok(_) => "damaged",
                Err(BackendError::NotFound { .. }) => "missing",
                Err(e) => return Err(e.into()),
            }
        };
        let what = format!("pack {pack} ({problem})");
        restore(
            primary,
            replica,
            Object::Pack(pack),
            &what,
            &mut report,
            |b| PackId::of(b) == pack,
        )?;
    }
    for s in primary.snapshots(None)? {
        let problem = match read_manifest(primary, s.id) {
            Ok(_) => continue,
            Err(RepoError::Backend(BackendError::NotFound { .. })) => "missing",
            Err(RepoError::Backend(e)) => return Err(e.into()),
            Err(_) => "damaged",
        };
        let what = format!("snapshot {} manifest ({problem})", s.id);
        restore(
            primary,
            replica,
            Object::Manifest(s.id),
            &what,
            &mut report,
            |b| SnapshotId::of(b) == s.id,
        )?;
    }
    Ok(report)
}

/// Replaces one object of the primary by the replica's copy if that copy verifies.
fn restore(
    primary: &Repository,
    replica: &dyn Backend,
    obj: Object,
    what: &str,
    report: &mut RepairFromReport,
    verifies: impl Fn(&[u8]) -> bool,
) -> Result<(), RepoError> {
    let copy = match replica.read_all(obj) {
        Ok(bytes) if verifies(&bytes) => bytes,
        Ok(_) => {
            report
                .unrepaired
                .push(format!("{what}: the replica's copy is damaged too"));
            return Ok(());
        }
        Err(BackendError::NotFound { .. }) => {
            report
                .unrepaired
                .push(format!("{what}: the replica has no copy"));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    match primary.backend().remove(obj) {
        Ok(()) | Err(BackendError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    primary.backend().write_new(obj, &copy)?;
    report
        .rewritten
        .push(format!("{what}: rewritten from {}", replica.describe()));
    Ok(())
}
