//! Inode numbers, computed from the repository rather than allocated.
//!
//! ```text
//!  63            36 35                              0
//! +----------------+---------------------------------+
//! | ordinal (28)   | DFS number within snapshot (36) |
//! +----------------+---------------------------------+
//! ```
//! Ordinal 0 is the synthetic region: 1 is the mount root (FUSE's root id), 2 is `latest` of a one-account
//! mount. A mount of all accounts gives each account's directory an even number >= 4 derived from a BLAKE3 hash
//! of its name (`account_slot`), and the account's `latest` that number plus one. A snapshot's root directory
//! has DFS number 0. Both parts come from the repository (the manifest's ordinal, the trees'
//! descendant counts), so any number resolves after a restart with no prior lookup, and the same path of the
//! same snapshot always has the same number.

pub const ROOT: u64 = 1;
pub const LATEST: u64 = 2;
pub const DFS_BITS: u32 = 36;
pub const MAX_DFS: u64 = (1 << DFS_BITS) - 1;
pub const MAX_ORDINAL: u64 = crate::format::manifest::MAX_ORDINAL;
const _: () = assert!(MAX_ORDINAL == (1 << (64 - DFS_BITS)) - 1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ino {
    Root,
    Latest,
    /// An account's directory (even) or its `latest` (odd), in a mount of all accounts.
    Account(u64),
    Entry {
        ordinal: u64,
        dfs: u64,
    },
    Invalid,
}

pub fn decode(ino: u64) -> Ino {
    match (ino >> DFS_BITS, ino & MAX_DFS) {
        (0, 1) => Ino::Root,
        (0, 2) => Ino::Latest,
        (0, n) if n >= 4 => Ino::Account(n),
        (0, _) => Ino::Invalid,
        (ordinal, dfs) => Ino::Entry { ordinal, dfs },
    }
}

/// Slots for account directories: 2^34 - 2 of them, so that `4 + 2 * slot + 1` stays below 2^36.
const ACCOUNT_SLOTS: u64 = (1 << 34) - 2;

/// The inode number of an account's directory: `4 + 2 * (hash(name) + probe mod slots)`. Callers probe from 0
/// upwards, in account-name order, past numbers already taken by another account (a hash collision).
pub fn account_dir(name: &str, probe: u64) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    4 + 2 * (u64::from_le_bytes(b).wrapping_add(probe) % ACCOUNT_SLOTS)
}

/// None when the snapshot is too large for the layout (2^36 entries) or the ordinal too high.
pub fn encode(ordinal: u64, dfs: u64) -> Option<u64> {
    (ordinal >= 1 && ordinal <= MAX_ORDINAL && dfs <= MAX_DFS)
        .then_some((ordinal << DFS_BITS) | dfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips() {
        assert_eq!(decode(ROOT), Ino::Root);
        assert_eq!(decode(LATEST), Ino::Latest);
        assert_eq!(decode(3), Ino::Invalid);
        let a = account_dir("alice", 0);
        assert!(a >= 4 && a % 2 == 0 && a < 1 << DFS_BITS);
        assert_eq!(decode(a), Ino::Account(a));
        assert_eq!(decode(a + 1), Ino::Account(a + 1));
        assert_ne!(account_dir("alice", 1), a);
        let ino = encode(5, 77).unwrap();
        assert_eq!(
            decode(ino),
            Ino::Entry {
                ordinal: 5,
                dfs: 77
            }
        );
        assert_eq!(
            decode(encode(MAX_ORDINAL, MAX_DFS).unwrap()),
            Ino::Entry {
                ordinal: MAX_ORDINAL,
                dfs: MAX_DFS
            }
        );
        assert_eq!(encode(0, 1), None);
        assert_eq!(encode(1, MAX_DFS + 1), None);
    }
}
