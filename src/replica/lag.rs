//! `lag`: how far a replica is behind its primary, per account, for monitoring.
//!
//! The figure that matters for a recovery point objective is how long a snapshot committed at the primary has
//! been waiting for the replica: the age of the oldest snapshot the replica lacks (0 when it lacks none), not
//! counting those older than the replica's oldest of the account (its own prune forgot them).

use super::{same_repository, ReplicaError};
use crate::format::tree::Timestamp;
use crate::format::SnapshotId;
use crate::repo::Repository;
use std::collections::{BTreeMap, HashSet};

/// One account's replication state. Times are the snapshots' own (UTC); ages are against `now`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountLag {
    pub account: String,
    pub primary_newest: Option<Timestamp>,
    pub replica_newest: Option<Timestamp>,
    /// Snapshots the primary has and the replica lacks.
    pub missing: usize,
    /// The time of the oldest of them.
    pub oldest_missing: Option<Timestamp>,
    /// Seconds the oldest missing snapshot has waited (0 when none is missing): the account's lag.
    pub lag_s: i64,
}

/// Every account of the primary (or the one asked for), in name order.
pub fn lag(
    primary: &Repository,
    replica: &Repository,
    account: Option<&str>,
    now: i64,
) -> Result<Vec<AccountLag>, ReplicaError> {
    same_repository(primary, replica)?;
    primary.refresh()?;
    let forgetting = primary.forgetting()?;
    let there = replica.snapshots(account)?;
    let replicated: HashSet<SnapshotId> = there.iter().map(|s| s.id).collect();
    let horizons = super::horizons(&there);
    let mut out: BTreeMap<String, AccountLag> = BTreeMap::new();
    for s in primary.snapshots(account)? {
        if forgetting.contains(&s.id) {
            continue;
        }
        let m = &s.manifest;
        let entry = out.entry(m.account.clone()).or_insert_with(|| AccountLag {
            account: m.account.clone(),
            primary_newest: None,
            replica_newest: None,
            missing: 0,
            oldest_missing: None,
            lag_s: 0,
        });
        entry.primary_newest = entry.primary_newest.max(Some(m.time));
        if super::wanted_by_replica(&s, &replicated, &horizons) {
            entry.missing += 1;
            entry.oldest_missing = Some(entry.oldest_missing.map_or(m.time, |t| t.min(m.time)));
        }
    }
    for s in &there {
        if let Some(entry) = out.get_mut(&s.manifest.account) {
            entry.replica_newest = entry.replica_newest.max(Some(s.manifest.time));
        }
    }
    for entry in out.values_mut() {
        entry.lag_s = entry.oldest_missing.map_or(0, |t| (now - t.sec).max(0));
    }
    Ok(out.into_values().collect())
}
