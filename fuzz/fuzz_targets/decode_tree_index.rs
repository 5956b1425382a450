//! `TreeIndex::decode` on arbitrary bytes: never panics, and an index it accepts re-encodes to the same bytes.
//! The derived page positions and DFS numbers (not stored) are checked against a brute-force recomputation, and
//! `page_for_name`, `page_for_position` and `page_for_dfs` against linear scans of the pages.
#![no_main]

use backupfs_fuzz::format::tree::valid_name;
use backupfs_fuzz::format::tree_index::{is_tree_index, TreeIndex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = TreeIndex::decode(data) else {
        return;
    };
    assert!(is_tree_index(data));
    assert_eq!(index.encode(), data, "tree index does not round-trip");
    assert!(!index.pages.is_empty());
    let (mut position, mut dfs): (u128, u128) = (0, 1);
    for (k, p) in index.pages.iter().enumerate() {
        assert!(p.entries >= 1 && p.span >= u64::from(p.entries) && valid_name(&p.first_name));
        if k > 0 {
            assert!(index.pages[k - 1].first_name < p.first_name);
        }
        assert_eq!(u128::from(p.first_position), position);
        assert_eq!(u128::from(p.first_dfs), dfs);
        position += u128::from(p.entries);
        dfs += u128::from(p.span);
        // Each page's first and last entry, DFS number and name, lead back to it.
        assert_eq!(index.page_for_position(p.first_position), Some(k));
        let last_position = p.first_position + u64::from(p.entries) - 1;
        assert_eq!(index.page_for_position(last_position), Some(k));
        assert_eq!(index.page_for_dfs(p.first_dfs), Some(k));
        assert_eq!(index.page_for_dfs(p.first_dfs + p.span - 1), Some(k));
        assert_eq!(index.page_for_name(&p.first_name), Some(k));
        let mut longer = p.first_name.clone();
        longer.push(0xff);
        assert_eq!(
            index.page_for_name(&longer),
            brute_page_for_name(&index, &longer)
        );
        let shorter = &p.first_name[..p.first_name.len() - 1];
        assert_eq!(
            index.page_for_name(shorter),
            brute_page_for_name(&index, shorter)
        );
    }
    assert_eq!(u128::from(index.entries), position);
    assert_eq!(u128::from(index.descendants), dfs - 1);
    assert!(u64::from(index.subdirs) <= index.entries);
    assert_eq!(index.page_for_position(index.entries), None);
    assert_eq!(index.page_for_dfs(0), None);
    if let Some(past) = index.descendants.checked_add(1) {
        assert_eq!(index.page_for_dfs(past), None);
    }
    let _ = index.heap_size();
});

fn brute_page_for_name(index: &TreeIndex, name: &[u8]) -> Option<usize> {
    index
        .pages
        .iter()
        .rposition(|p| p.first_name.as_slice() <= name)
}
