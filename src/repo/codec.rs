//! How a repository names blobs and turns their plaintext into stored bytes and back: the one place every writer
//! and reader goes through, so that a repository encrypted at rest (keyed ids, sealed blobs: `crate::crypto`)
//! changes this module and not the dozen places that name, store or verify a blob. SPEC.md is authoritative for
//! the bytes ("Blobs").

use crate::format::pack::{compress, decompress, Compression};
use crate::format::{BlobId, ChunkId, LinksId, TreeId};

/// A repository's blob naming and storage: BLAKE3 ids of the plaintext, zstd at the config's level.
#[derive(Clone, Debug)]
pub struct BlobCodec {
    zstd_level: i32,
}

impl BlobCodec {
    pub fn new(config: &crate::format::config::Config) -> Self {
        Self {
            zstd_level: config.zstd_level,
        }
    }

    /// The 32-byte id of a blob's plaintext.
    pub fn hash(&self, plain: &[u8]) -> [u8; 32] {
        *blake3::hash(plain).as_bytes()
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

    /// The stored form of blob `id` and how it is compressed.
    pub fn encode(&self, _id: BlobId, plain: &[u8]) -> (Vec<u8>, Compression) {
        compress(plain, self.zstd_level)
    }

    /// The plaintext of blob `id` from its stored form, only if it verifies.
    pub fn decode(
        &self,
        id: BlobId,
        stored: &[u8],
        compression: Compression,
        raw_len: u32,
    ) -> Option<Vec<u8>> {
        let plain = decompress(stored, compression, raw_len).ok()?;
        self.verifies(id, &plain).then_some(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_returns_only_what_verifies() {
        let codec = BlobCodec { zstd_level: 3 };
        let plain = vec![b'a'; 10_000];
        let id = BlobId::chunk(codec.chunk_id(&plain));
        let (stored, compression) = codec.encode(id, &plain);
        assert_eq!(compression, Compression::Zstd);
        let len = plain.len() as u32;
        assert_eq!(codec.decode(id, &stored, compression, len), Some(plain));
        let other = BlobId::chunk(codec.chunk_id(b"other"));
        assert_eq!(codec.decode(other, &stored, compression, len), None);
        assert_eq!(codec.decode(id, &stored[1..], compression, len), None);
    }
}
