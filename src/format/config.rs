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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub repo_id: [u8; 32],
    pub chunk_min: u32,
    pub chunk_avg: u32,
    pub chunk_max: u32,
    pub zstd_level: i32,
    pub pack_target: u32,
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
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(CONFIG_LEN);
        w.bytes(&magic::CONFIG);
        w.u32(magic::CONFIG_VERSION);
        w.bytes(&self.repo_id);
        w.u32(self.chunk_min);
        w.u32(self.chunk_avg);
        w.u32(self.chunk_max);
        w.u32(self.zstd_level as u32);
        w.u32(self.pack_target);
        debug_assert_eq!(w.buf.len(), CHECKSUM_AT);
        let sum = blake3::hash(&w.buf);
        w.bytes(sum.as_bytes());
        w.buf
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "config");
        r.header(magic::CONFIG, magic::CONFIG_VERSION)?;
        let repo_id = r.array::<32>()?;
        let cfg = Self {
            repo_id,
            chunk_min: r.u32()?,
            chunk_avg: r.u32()?,
            chunk_max: r.u32()?,
            zstd_level: r.u32()? as i32,
            pack_target: r.u32()?,
        };
        let sum = r.array::<32>()?;
        r.finish()?;
        if blake3::hash(&bytes[..CHECKSUM_AT]).as_bytes() != &sum {
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
}
