//! The repository `config` file: identity and the parameters every writer must use.
//!
//! ```text
//! offset size field
//!      0    8 magic "BKFSCONF"
//!      8    4 version u32 (1)
//!     12   32 repository id (random)
//!     44    4 chunk_min u32   content-defined chunking: minimum chunk size in bytes
//!     48    4 chunk_avg u32   average (a power of two)
//!     52    4 chunk_max u32   maximum
//!     56    4 zstd_level i32
//!     60    4 pack_target u32 a pack is closed once its blobs reach this many bytes
//!     64   32 BLAKE3 of bytes 0..64
//!     96      end
//! ```
//! Version 2, a repository encrypted at rest (`init --encrypt`), keeps bytes 0..64 and adds:
//! ```text
//!     64    4 scheme u32      keyed BLAKE3 ids and 1: ChaCha20-Poly1305, 2: AES-256-GCM (`crate::crypto`)
//!     68   16 key check value what the right key derives (a wrong key is named as such, not as damage)
//!     84   32 BLAKE3 of bytes 0..84
//!    116      end
//! ```

use super::codec::{Reader, Writer};
use super::tree::MAX_CHUNK_LEN;
use super::{magic, FormatError};

const ID_AT: usize = 12;
const CHUNK_MIN_AT: usize = ID_AT + 32;
const CHUNK_AVG_AT: usize = CHUNK_MIN_AT + 4;
const CHUNK_MAX_AT: usize = CHUNK_AVG_AT + 4;
const ZSTD_LEVEL_AT: usize = CHUNK_MAX_AT + 4;
const PACK_TARGET_AT: usize = ZSTD_LEVEL_AT + 4;
const CHECKSUM_AT: usize = PACK_TARGET_AT + 4;
pub const CONFIG_LEN: usize = CHECKSUM_AT + 32;
const _: () = assert!(CHECKSUM_AT == 64 && CONFIG_LEN == 96);
const SCHEME_AT: usize = PACK_TARGET_AT + 4;
const KEY_CHECK_AT: usize = SCHEME_AT + 4;
const CHECKSUM_V2_AT: usize = KEY_CHECK_AT + 16;
/// The length of a version 2 (encrypted) config.
pub const CONFIG_V2_LEN: usize = CHECKSUM_V2_AT + 32;
const _: () = assert!(CHECKSUM_V2_AT == 84 && CONFIG_V2_LEN == 116);

/// Encryption schemes: keyed BLAKE3 ids and sealing with ChaCha20-Poly1305 (1) or AES-256-GCM (2)
/// (`crate::crypto::Cipher`).
pub const SCHEME_CHACHA20_POLY1305: u32 = 1;
pub const SCHEME_AES_256_GCM: u32 = 2;

/// How a repository is encrypted at rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encryption {
    /// `SCHEME_CHACHA20_POLY1305` or `SCHEME_AES_256_GCM`.
    pub scheme: u32,
    /// What the repository's key derives (`crypto::Keys::check`).
    pub key_check: [u8; 16],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub repo_id: [u8; 32],
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    pub zstd_level: i32,
    pub pack_target: u32,
    /// None: not encrypted (version 1).
    pub encryption: Option<Encryption>,
}

impl Config {
    /// Parameters of a new repository: 1 MiB average chunks (good dedup of database dumps and mail without a huge
    /// index), zstd level 3 (fast enough to keep up with two cores), packs of 32 MiB (few files, cheap to rewrite).
    pub fn new(repo_id: [u8; 32]) -> Self {
        Self {
            repo_id,
            chunk_min: 256 * 1024,
            chunk_avg: 1024 * 1024,
            chunk_max: 4 * 1024 * 1024,
            zstd_level: 3,
            pack_target: 32 * 1024 * 1024,
            encryption: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(CONFIG_V2_LEN);
        w.bytes(&magic::CONFIG);
        w.u32(match self.encryption {
            None => magic::CONFIG_VERSION,
            Some(_) => magic::CONFIG_VERSION_ENCRYPTED,
        });
        w.bytes(&self.repo_id);
        w.u32(self.chunk_min);
        w.u32(self.chunk_avg);
        w.u32(self.chunk_max);
        w.u32(self.zstd_level as u32);
        w.u32(self.pack_target);
        if let Some(e) = &self.encryption {
            w.u32(e.scheme);
            w.bytes(&e.key_check);
        }
        let sum = blake3::hash(&w.buf);
        w.bytes(sum.as_bytes());
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "config");
        let version = r.header_any(
            magic::CONFIG,
            &[magic::CONFIG_VERSION, magic::CONFIG_VERSION_ENCRYPTED],
        )?;
        let repo_id = r.array::<32>()?;
        let mut cfg = Self {
            repo_id,
            chunk_min: r.u32()?,
            chunk_avg: r.u32()?,
            chunk_max: r.u32()?,
            zstd_level: r.u32()? as i32,
            pack_target: r.u32()?,
            encryption: None,
        };
        if version == magic::CONFIG_VERSION_ENCRYPTED {
            let scheme = r.u32()?;
            if scheme != SCHEME_CHACHA20_POLY1305 && scheme != SCHEME_AES_256_GCM {
                return Err(r.invalid_at(SCHEME_AT, "unknown encryption scheme"));
            }
            cfg.encryption = Some(Encryption {
                scheme,
                key_check: r.array::<16>()?,
            });
        }
        let checksum_at = r.offset();
        let sum = r.array::<32>()?;
        r.finish()?;
        if blake3::hash(&bytes[..checksum_at]).as_bytes() != &sum {
            return Err(FormatError::Checksum { object: "config" });
        }
        cfg.validate(&r)?;
        Ok(cfg)
    }

    fn validate(&self, r: &Reader<'_>) -> Result<(), FormatError> {
        let ordered = 64 <= self.chunk_min
            && self.chunk_min <= self.chunk_avg
            && self.chunk_avg <= self.chunk_max;
        if !ordered
            || !self.chunk_avg.is_power_of_two()
            || u64::from(self.chunk_max) > MAX_CHUNK_LEN
        {
            return Err(r.invalid("chunk sizes out of range"));
        }
        if !(1..=22).contains(&self.zstd_level) || self.pack_target == 0 {
            return Err(r.invalid("zstd level or pack target out of range"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let cfg = Config::new([7; 32]);
        let mut bytes = cfg.encode();
        assert_eq!(bytes.len(), CONFIG_LEN);
        assert_eq!(Config::decode(&bytes).unwrap(), cfg);
        bytes[CHUNK_AVG_AT] ^= 1;
        assert!(matches!(
            Config::decode(&bytes),
            Err(FormatError::Checksum { .. })
        ));
        bytes[8] = 9;
        assert!(matches!(
            Config::decode(&bytes),
            Err(FormatError::UnsupportedVersion { found: 9, .. })
        ));
    }

    #[test]
    fn an_encrypted_config_is_version_2_and_checked_whole() {
        let cfg = Config {
            encryption: Some(Encryption {
                scheme: SCHEME_AES_256_GCM,
                key_check: [4; 16],
            }),
            ..Config::new([7; 32])
        };
        let bytes = cfg.encode();
        assert_eq!(bytes.len(), CONFIG_V2_LEN);
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(Config::decode(&bytes).unwrap(), cfg);
        for n in 0..bytes.len() {
            assert!(Config::decode(&bytes[..n]).is_err(), "truncated to {n}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Config::decode(&bad).is_err(), "byte {i} flipped");
        }
        // Version 1 is what an unencrypted repository keeps writing, byte for byte.
        assert_eq!(Config::new([7; 32]).encode().len(), CONFIG_LEN);
    }
}
