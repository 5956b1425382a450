//! `Manifest::decode` on arbitrary bytes: never panics, and a manifest it accepts re-encodes to the same bytes
//! (so its id, the BLAKE3 of the file, is that of the re-encoding), with the invariants SPEC.md gives.
#![no_main]

use backupfs_fuzz::format::manifest::{valid_account, Manifest, MAX_ORDINAL};
use backupfs_fuzz::format::tree::EntryKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data) {
        let again = m.encode();
        assert_eq!(again, data, "manifest does not round-trip");
        assert_eq!(Manifest::id_of(&again), Manifest::id_of(data));
        assert!((1..=MAX_ORDINAL).contains(&m.ordinal));
        assert!(m.time.nsec < 1_000_000_000);
        assert!(valid_account(&m.account));
        assert!(m.root.kind == EntryKind::Dir && m.root.name.is_empty());
    }
});
