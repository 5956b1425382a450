//! `Config::decode` on arbitrary bytes: never panics, and a config it accepts re-encodes to the same 96 bytes.
//!
//! The config ends with the BLAKE3 of its first 64 bytes, which a fuzzer never guesses, so each input is also
//! tried "sealed": its first 64 bytes with the right checksum appended. That reaches the field validation (chunk
//! sizes, zstd level, pack target) behind the checksum.
#![no_main]

use backupfs_fuzz::format::config::{Config, CONFIG_LEN};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(cfg) = Config::decode(bytes) {
        assert_eq!(bytes.len(), CONFIG_LEN);
        assert_eq!(cfg.encode(), bytes, "config does not round-trip");
        // What validation promises the rest of the program.
        assert!(
            64 <= cfg.chunk_min && cfg.chunk_min <= cfg.chunk_avg && cfg.chunk_avg <= cfg.chunk_max
        );
        assert!(cfg.chunk_avg.is_power_of_two() && cfg.chunk_max <= 16 * 1024 * 1024);
        assert!((1..=22).contains(&cfg.zstd_level) && cfg.pack_target > 0);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 64 {
        let mut sealed = data[..64].to_vec();
        sealed.extend_from_slice(blake3::hash(&data[..64]).as_bytes());
        check(&sealed);
    }
});
