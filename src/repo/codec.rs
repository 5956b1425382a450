//! How a repository names blobs and turns their plaintext into stored bytes and back: the one place every writer
//! and reader goes through, so that a repository encrypted at rest (keyed ids, sealed blobs: `crate::crypto`)
//! changes this module and not the dozen places that name, store or verify a blob. SPEC.md is authoritative for
//! the bytes ("Blobs").
//!
//! With keys (issue 15, not yet reachable: no config asks for it), a blob's id is the keyed BLAKE3 of its
//! plaintext and its stored form is `salt (32) || ChaCha20-Poly1305(key of the salt, part 0, aad = kind || id,
//! compressed or raw bytes)`: self-contained, so that prune, salvage and replication copy it verbatim, and bound
//! to its id, so that a blob moved under another id fails to open.

use crate::crypto::{CryptoError, Keys, KEY_LEN};
use crate::format::pack::{compress, decompress, Compression};
use crate::format::{BlobId, ChunkId, LinksId, TreeId};
use std::sync::Arc;

/// A repository's blob naming and storage: BLAKE3 ids of the plaintext, zstd at the config's level; with keys,
/// keyed ids and sealed blobs.
#[derive(Clone, Debug)]
pub struct BlobCodec {
    zstd_level: i32,
    keys: Option<Arc<Keys>>,
}

impl BlobCodec {
    pub fn new(config: &crate::format::config::Config) -> Self {
        Self {
            zstd_level: config.zstd_level,
            keys: None,
        }
    }

    /// The codec of a repository encrypted with `keys`.
    pub fn encrypted(config: &crate::format::config::Config, keys: Keys) -> Self {
        Self {
            zstd_level: config.zstd_level,
            keys: Some(Arc::new(keys)),
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// FastCDC's gear seed: 0 (the crate's own table) unless encrypted.
    pub fn chunker_seed(&self) -> u64 {
        self.keys.as_ref().map_or(0, |k| k.chunker_seed)
    }

    /// The 32-byte id of a blob's plaintext.
    pub fn hash(&self, plain: &[u8]) -> [u8; 32] {
        match &self.keys {
            Some(keys) => keys.blob_id(plain),
            None => *blake3::hash(plain).as_bytes(),
        }
    }

    pub fn chunk_id(&self, plain: &[u8]) -> ChunkId {
        ChunkId(self.hash(plain))
    }

    pub fn tree_id(&self, plain: &[u8]) -> TreeId {
        TreeId(self.hash(plain))
    }

    pub fn links_id(&self, plain: &[u8]) -> LinksId {
        LinksId(self.hash(plain))
    }

    /// Whether `plain` is the plaintext `id` names: readers check this before using any byte.
    pub fn verifies(&self, id: BlobId, plain: &[u8]) -> bool {
        self.hash(plain) == id.hash
    }

    /// The stored form of blob `id` and how its plaintext is compressed (inside the seal, if encrypted).
    pub fn encode(&self, id: BlobId, plain: &[u8]) -> Result<(Vec<u8>, Compression), CryptoError> {
        let (packed, compression) = compress(plain, self.zstd_level);
        let Some(keys) = &self.keys else {
            return Ok((packed, compression));
        };
        // Without the system's random numbers there is no salt: a fixed one would reuse nonces.
        let salt = crate::crypto::random()?;
        let sealed = keys.object(&salt).seal(0, &aad(id), packed);
        let mut stored = Vec::with_capacity(KEY_LEN + sealed.len());
        stored.extend_from_slice(&salt);
        stored.extend_from_slice(&sealed);
        Ok((stored, compression))
    }

    /// The plaintext of blob `id` from its stored form, only if it verifies.
    pub fn decode(
        &self,
        id: BlobId,
        stored: &[u8],
        compression: Compression,
        raw_len: u32,
    ) -> Option<Vec<u8>> {
        let plain = match &self.keys {
            None => decompress(stored, compression, raw_len).ok()?,
            Some(keys) => {
                let (salt, sealed) = stored.split_first_chunk::<KEY_LEN>()?;
                let what = || format!("blob {}", crate::format::ids::hex(&id.hash));
                let packed = keys
                    .object(salt)
                    .open(0, &aad(id), sealed.to_vec(), what)
                    .ok()?;
                decompress(&packed, compression, raw_len).ok()?
            }
        };
        self.verifies(id, &plain).then_some(plain)
    }
}

/// What a sealed blob is bound to: its kind and id.
fn aad(id: BlobId) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = id.kind as u8;
    a[1..].copy_from_slice(&id.hash);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> BlobCodec {
        BlobCodec {
            zstd_level: 3,
            keys: None,
        }
    }

    fn sealing() -> BlobCodec {
        let keys = crate::crypto::MasterKey::from_bytes([3; 32]).derive();
        BlobCodec {
            zstd_level: 3,
            keys: Some(Arc::new(keys)),
        }
    }

    #[test]
    fn sealed_blobs_open_only_whole_and_under_their_id() {
        let codec = sealing();
        let plain = b"Kunde 1, refunded; ".repeat(100);
        let id = BlobId::chunk(codec.chunk_id(&plain));
        assert_ne!(id.hash, *blake3::hash(&plain).as_bytes(), "ids are keyed");
        let (stored, compression) = codec.encode(id, &plain).unwrap();
        assert_eq!(compression, Compression::Zstd);
        let len = plain.len() as u32;
        assert!(
            !stored.windows(5).any(|w| w == b"Kunde"),
            "the plaintext shows through"
        );
        assert_eq!(
            codec.decode(id, &stored, compression, len),
            Some(plain.clone())
        );
        // A second encoding of the same blob is other bytes (another salt), and opens the same.
        let (again, _) = codec.encode(id, &plain).unwrap();
        assert_ne!(again, stored);
        assert_eq!(
            codec.decode(id, &again, compression, len),
            Some(plain.clone())
        );
        for i in [0, 31, 32, stored.len() / 2, stored.len() - 1] {
            let mut bad = stored.clone();
            bad[i] ^= 0x40;
            assert_eq!(codec.decode(id, &bad, compression, len), None, "byte {i}");
        }
        let tree = BlobId::tree(TreeId(id.hash));
        assert_eq!(
            codec.decode(tree, &stored, compression, len),
            None,
            "moved to another kind"
        );
        assert_eq!(plain_codec_reads(&stored, id, compression, len), None);
        assert_eq!(codec.decode(id, &stored[..40], compression, len), None);
        assert_eq!(stored.len(), codec.encode(id, &plain).unwrap().0.len());
        assert!(stored.len() >= KEY_LEN + crate::crypto::TAG_LEN);
    }

    fn plain_codec_reads(stored: &[u8], id: BlobId, c: Compression, len: u32) -> Option<Vec<u8>> {
        plain().decode(id, stored, c, len)
    }

    #[test]
    fn decode_returns_only_what_verifies() {
        let codec = plain();
        let plain = vec![b'a'; 10_000];
        let id = BlobId::chunk(codec.chunk_id(&plain));
        let (stored, compression) = codec.encode(id, &plain).unwrap();
        assert_eq!(compression, Compression::Zstd);
        let len = plain.len() as u32;
        assert_eq!(codec.decode(id, &stored, compression, len), Some(plain));
        let other = BlobId::chunk(codec.chunk_id(b"other"));
        assert_eq!(codec.decode(other, &stored, compression, len), None);
        assert_eq!(codec.decode(id, &stored[1..], compression, len), None);
    }
}
