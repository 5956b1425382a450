//! `Tree::decode` on arbitrary bytes: never panics, and a tree it accepts re-encodes to the same bytes. The
//! derived numbers (DFS offsets, descendants, subdirs) are checked against a brute-force recomputation, and the
//! lookups (`find`, `entry_spanning`) against the entry list.
#![no_main]

use backupfs_fuzz::format::tree::{valid_name, EntryKind, Tree};
use backupfs_fuzz::format::tree_index::is_tree_index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(tree) = Tree::decode(data) else {
        return;
    };
    assert!(!is_tree_index(data));
    assert_eq!(
        Tree::encode(&tree.entries),
        data,
        "tree does not round-trip"
    );
    assert_eq!(tree.dfs_offsets.len(), tree.entries.len());
    // Brute force, in u128 so that the model itself cannot overflow.
    let mut next: u128 = 1;
    for (i, e) in tree.entries.iter().enumerate() {
        assert!(valid_name(&e.name));
        if i > 0 {
            assert!(tree.entries[i - 1].name < e.name);
        }
        assert_eq!(u128::from(tree.dfs_offsets[i]), next);
        next += 1 + u128::from(e.descendants());
        assert_eq!(tree.find(&e.name), Some(i));
        let d = tree.dfs_offsets[i];
        assert_eq!(tree.entry_spanning(d), Some(i));
        assert_eq!(tree.entry_spanning(d + e.descendants()), Some(i));
        assert_eq!(tree.entry_spanning(d + e.descendants() / 2), Some(i));
    }
    assert_eq!(u128::from(tree.descendants), next - 1);
    let subdirs = tree
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Dir)
        .count();
    assert_eq!(tree.subdirs as usize, subdirs);
    assert_eq!(tree.entry_spanning(0), None);
    if let Some(past) = tree.descendants.checked_add(1) {
        assert_eq!(tree.entry_spanning(past), None);
    }
    let _ = tree.heap_size();
});
