//! How a repository names blobs and turns their plaintext into stored bytes and back: the one place every writer
//! and reader goes through, so that a repository encrypted at rest (keyed ids, sealed blobs: `crate::crypto`)
//! changes this module and not the dozen places that name, store or verify a blob. SPEC.md is authoritative for
//! the bytes ("Blobs").
//!
//! With keys (a repository encrypted at rest), a blob's id is the keyed BLAKE3 of its
//! plaintext and its stored form is `salt (32) || ChaCha20-Poly1305(key of the salt, part 0, aad = kind || id,
//! compressed or raw bytes)`: self-contained, so that prune, salvage and replication copy it verbatim, and bound
//! to its id, so that a blob moved under another id fails to open.

use super::RepoError;
use crate::crypto::{CryptoError, Keys, KEY_LEN};
use crate::format::pack::{compress, decompress, Compression, PackBuilder, PackEntry};
use crate::format::sealed::{self, SealedKind};
use crate::format::{magic, BlobId, ChunkId, FormatError, LinksId, PackId, TreeId};
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

    /// What sealing adds to a blob's stored bytes: 0, or its salt and tag.
    pub fn seal_overhead(&self) -> usize {
        if self.keys.is_some() {
            crate::format::pack::SEALED_BLOB_OVERHEAD as usize
        } else {
            0
        }
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

    /// The compressed (or raw) bytes inside a blob's stored form, opened in place if sealed; None if it does not
    /// open. The caller still verifies the plaintext.
    pub fn unseal_in_place<'a>(&self, id: BlobId, stored: &'a mut [u8]) -> Option<&'a [u8]> {
        let Some(keys) = &self.keys else {
            return Some(stored);
        };
        let (salt, sealed) = stored.split_first_chunk_mut::<KEY_LEN>()?;
        let packed = keys.object(salt).open_in_place(0, &aad(id), sealed)?;
        Some(packed)
    }

    /// Opens a sealed blob's stored form in place, leaving its compressed or raw bytes at the front of `stored`;
    /// returns their length (None if it does not open). Without keys, the bytes are already there.
    pub fn unseal_to_front(&self, id: BlobId, stored: &mut [u8]) -> Option<usize> {
        let Some(keys) = &self.keys else {
            return Some(stored.len());
        };
        let salt: [u8; KEY_LEN] = *stored.first_chunk::<KEY_LEN>()?;
        keys.object(&salt)
            .open_to_front(0, &aad(id), stored, KEY_LEN)
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

impl BlobCodec {
    /// The version of the packs this repository writes and reads.
    pub fn pack_version(&self) -> u32 {
        if self.keys.is_some() {
            magic::PACK_VERSION_SEALED
        } else {
            magic::PACK_VERSION
        }
    }

    pub fn new_pack(&self) -> PackBuilder {
        PackBuilder::new(self.pack_version())
    }

    /// Closes a pack: its trailer sealed if encrypted. Returns its id, bytes and entries.
    pub fn finish_pack(
        &self,
        pack: PackBuilder,
    ) -> Result<(PackId, Vec<u8>, Vec<PackEntry>), CryptoError> {
        let Some(keys) = &self.keys else {
            return Ok(pack.finish(&|t| t));
        };
        let salt = crate::crypto::random()?;
        let seal = |trailer: Vec<u8>| {
            let mut stored = salt.to_vec();
            stored.extend_from_slice(&keys.object(&salt).seal(0, &TRAILER_AAD, trailer));
            stored
        };
        Ok(pack.finish(&seal))
    }

    /// A pack trailer's entries from its stored bytes (verified against the footer already) in a pack of
    /// `version`: a pack of the other kind (plaintext in an encrypted repository, or the reverse) is refused.
    pub fn open_trailer(
        &self,
        pack: PackId,
        version: u32,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, RepoError> {
        self.expect_pack_version(pack, version)?;
        let Some(keys) = &self.keys else {
            return Ok(stored);
        };
        let what = || format!("pack {pack}: trailer");
        let (salt, sealed) = stored
            .split_first_chunk::<KEY_LEN>()
            .ok_or_else(|| CryptoError::Unauthentic { what: what() })?;
        Ok(keys
            .object(salt)
            .open(0, &TRAILER_AAD, sealed.to_vec(), what)?)
    }

    /// Refuses a pack of the version the repository does not write.
    pub fn expect_pack_version(&self, pack: PackId, version: u32) -> Result<(), RepoError> {
        if version == self.pack_version() {
            return Ok(());
        }
        Err(RepoError::Format {
            object: format!("pack {pack}"),
            source: FormatError::Invalid {
                object: "pack header",
                offset: 8,
                what: self.wrong_kind(version == magic::PACK_VERSION_SEALED),
            },
        })
    }

    fn wrong_kind(&self, found_sealed: bool) -> String {
        if found_sealed {
            "an encrypted object in a repository that is not encrypted".into()
        } else {
            "a plaintext object in a repository encrypted at rest".into()
        }
    }

    /// The stored bytes of a whole object (a manifest, a pack index object): its plaintext, or its envelope.
    pub fn seal_object(&self, kind: SealedKind, plain: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        let Some(keys) = &self.keys else {
            return Ok(plain);
        };
        let salt = crate::crypto::random()?;
        let header = sealed::header(kind);
        let ciphertext = keys.object(&salt).seal(0, &header, plain);
        Ok(sealed::encode(kind, &salt, &ciphertext))
    }

    /// The plaintext of a whole object from its stored bytes; `object` names it in errors.
    pub fn open_object(
        &self,
        kind: SealedKind,
        stored: Vec<u8>,
        object: &str,
    ) -> Result<Vec<u8>, RepoError> {
        let format = |source| RepoError::Format {
            object: object.to_string(),
            source,
        };
        let plain_refused = |found_sealed| {
            format(FormatError::Invalid {
                object: kind.name(),
                offset: 0,
                what: self.wrong_kind(found_sealed),
            })
        };
        let Some(keys) = &self.keys else {
            if sealed::is_sealed(&stored) {
                return Err(plain_refused(true));
            }
            return Ok(stored);
        };
        if !sealed::is_sealed(&stored) {
            return Err(plain_refused(false));
        }
        let envelope = sealed::decode(&stored, kind).map_err(format)?;
        Ok(keys.object(&envelope.salt).open(
            0,
            envelope.header,
            envelope.sealed.to_vec(),
            || object.to_string(),
        )?)
    }
}

/// What a sealed pack trailer is bound to: the header of a sealed pack, without its nonce.
const TRAILER_AAD: [u8; 12] = *b"BKFSPACK\x02\0\0\0";

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
        let keys =
            crate::crypto::MasterKey::from_bytes([3; 32]).derive(crate::crypto::Cipher::Aes256Gcm);
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

    #[test]
    fn sealed_packs_and_objects_open_only_in_an_encrypted_repository_and_unchanged() {
        use crate::format::pack::{check_header, Footer, FOOTER_LEN, HEADER_LEN};
        let codec = sealing();
        let plain_blob = b"secret name.txt".repeat(10);
        let id = BlobId::tree(codec.tree_id(&plain_blob));
        let (stored, compression) = codec.encode(id, &plain_blob).unwrap();
        let mut pack = codec.new_pack();
        pack.add(id, &stored, compression, plain_blob.len() as u32);
        let (pack_id, bytes, entries) = codec.finish_pack(pack).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        assert!(
            !bytes.windows(32).any(|w| w == id.hash),
            "the trailer shows the id"
        );
        let version = check_header(&bytes[..HEADER_LEN]).unwrap();
        assert_eq!(version, magic::PACK_VERSION_SEALED);
        let footer_at = bytes.len() - FOOTER_LEN;
        let footer = Footer::decode(&bytes[footer_at..], bytes.len() as u64, version).unwrap();
        let trailer = bytes[footer.trailer_offset as usize..footer_at].to_vec();
        footer.verify_trailer(&trailer).unwrap();
        let opened = codec
            .open_trailer(pack_id, version, trailer.clone())
            .unwrap();
        assert_eq!(footer.decode_entries(&opened).unwrap(), entries);
        let mut bad = trailer.clone();
        bad[40] ^= 1;
        let err = codec.open_trailer(pack_id, version, bad).unwrap_err();
        assert!(
            err.to_string().contains("trailer: authentication failed"),
            "{err}"
        );
        let err = plain().open_trailer(pack_id, version, trailer).unwrap_err();
        assert!(
            err.to_string()
                .contains("an encrypted object in a repository that is not"),
            "{err}"
        );
        assert!(codec
            .expect_pack_version(pack_id, magic::PACK_VERSION)
            .is_err());

        let manifest = b"BKFSSNAP account alice".to_vec();
        let sealed = codec
            .seal_object(SealedKind::Manifest, manifest.clone())
            .unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"alice"));
        let what = "snapshot x";
        let opened = codec
            .open_object(SealedKind::Manifest, sealed.clone(), what)
            .unwrap();
        assert_eq!(opened, manifest);
        for i in [0, 13, 16, 47, 48, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[i] ^= 0x10;
            assert!(
                codec.open_object(SealedKind::Manifest, bad, what).is_err(),
                "byte {i}"
            );
        }
        assert!(codec
            .open_object(SealedKind::PackIndex, sealed.clone(), what)
            .is_err());
        let err = codec
            .open_object(SealedKind::Manifest, manifest.clone(), what)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("a plaintext object in a repository encrypted"),
            "{err}"
        );
        assert!(plain()
            .open_object(SealedKind::Manifest, sealed, what)
            .is_err());
        assert_eq!(
            plain()
                .open_object(SealedKind::Manifest, manifest.clone(), what)
                .unwrap(),
            manifest
        );
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
