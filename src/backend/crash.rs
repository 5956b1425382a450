//! Deterministic crash injection, for the tests that prove every crash point harmless: with
//! `BACKUPFS_TEST_CRASH_AT=N` in the environment, the process kills itself with SIGKILL (as `kill -9` would)
//! right before its Nth durable change: an object renamed into place or deleted, an index batch written, an
//! index directory swapped. Random kills find windows by luck; counting changes visits each one.
//!
//! Without the variable a change point costs one load of an initialised `OnceLock`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

const VARIABLE: &str = "BACKUPFS_TEST_CRASH_AT";

static LIMIT: OnceLock<Option<u64>> = OnceLock::new();
static CHANGES: AtomicU64 = AtomicU64::new(0);

/// Called right before each durable change; `what` names it in the line printed before the kill.
pub fn before_change(what: &dyn std::fmt::Display) {
    let limit = LIMIT.get_or_init(|| std::env::var(VARIABLE).ok()?.parse().ok());
    let Some(limit) = *limit else {
        return;
    };
    let n = CHANGES.fetch_add(1, Ordering::SeqCst) + 1;
    if n == limit {
        eprintln!("backupfs: {VARIABLE}={limit}: killed before change {n}: {what}");
        // SAFETY: signalling this very process; SIGKILL cannot be caught, so nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
