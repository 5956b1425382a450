//! Inode numbers, computed from the repository rather than allocated.
//!
//! ```text
//!  63            36 35                              0
//! +----------------+---------------------------------+
//! | ordinal (28)   | DFS number within snapshot (36) |
//! +----------------+---------------------------------+
//! ```
//! Ordinal 0 is the synthetic region: 1 is the mount root (FUSE's root id), 2 is `latest`. A snapshot's root
//! directory has DFS number 0. Both parts come from the repository (the manifest's ordinal, the trees'
//! descendant counts), so any number resolves after a restart with no prior lookup, and the same path of the
//! same snapshot always has the same number.

pub const ROOT: u64 = 1;
pub const LATEST: u64 = 2;
pub const DFS_BITS: u32 = 36;
pub const MAX_DFS: u64 = (1 << DFS_BITS) - 1;
pub const MAX_ORDINAL: u64 = (1 << (64 - DFS_BITS)) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ino {
    Root,
    Latest,
    Entry { ordinal: u64, dfs: u64 },
    Invalid,
}

pub fn decode(ino: u64) -> Ino {
    match (ino >> DFS_BITS, ino & MAX_DFS) {
        (0, 1) => Ino::Root,
        (0, 2) => Ino::Latest,
        (0, _) => Ino::Invalid,
        (ordinal, dfs) => Ino::Entry { ordinal, dfs },
    }
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
