//! `LinkTable::decode` on arbitrary bytes: never panics, and a table it accepts re-encodes to the same bytes and
//! is what SPEC.md says (strictly ascending source_ino, nlink >= 2, `get` finds every entry).
#![no_main]

use backupfs_fuzz::format::links::LinkTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = LinkTable::decode(data) {
        assert_eq!(table.encode(), data, "links table does not round-trip");
        for (i, l) in table.links.iter().enumerate() {
            assert!(l.nlink >= 2);
            if i > 0 {
                assert!(table.links[i - 1].source_ino < l.source_ino);
            }
            assert_eq!(table.get(l.source_ino), Some(*l));
        }
    }
});
