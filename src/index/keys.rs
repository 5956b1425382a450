//! Byte layout of the index's keys and values (documented in `index`).

use super::{BlobLocation, CatalogEntry};
use crate::format::manifest::Manifest;
use crate::format::pack::{Compression, PackEntry, HEADER_LEN, SEALED_BLOB_OVERHEAD};
use crate::format::{BlobId, PackId, SnapshotId};

pub const VERSION: &[u8] = b"V";
pub const NEXT_ORDINAL: &[u8] = b"N";
const LOCATION_LEN: usize = 32 + 8 + 4 + 4 + 1;

pub fn blob(id: BlobId) -> [u8; 34] {
    let mut k = [0u8; 34];
    k[0] = b'B';
    k[1] = id.kind as u8;
    k[2..].copy_from_slice(&id.hash);
    k
}

pub fn decode_blob_key(k: &[u8]) -> Option<BlobId> {
    if k.len() != 34 || k[0] != b'B' {
        return None;
    }
    Some(BlobId {
        kind: crate::format::BlobKind::from_u8(k[1])?,
        hash: k[2..].try_into().ok()?,
    })
}

pub fn pack(id: PackId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'P';
    k[1..].copy_from_slice(&id.0);
    k
}

pub fn snapshot_id(id: SnapshotId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'I';
    k[1..].copy_from_slice(&id.0);
    k
}

pub fn ordinal(ordinal: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'O';
    k[1..].copy_from_slice(&ordinal.to_be_bytes());
    k
}

pub fn catalog_prefix(account: Option<&str>) -> Vec<u8> {
    let mut k = vec![b'S'];
    if let Some(a) = account {
        k.extend_from_slice(a.as_bytes());
        k.push(0);
    }
    k
}

pub fn catalog(m: &Manifest) -> Vec<u8> {
    let mut k = catalog_prefix(Some(&m.account));
    k.extend_from_slice(&((m.time.sec as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&m.time.nsec.to_be_bytes());
    k.extend_from_slice(&m.ordinal.to_be_bytes());
    k
}

pub fn encode_location(pack: PackId, e: &PackEntry) -> [u8; LOCATION_LEN] {
    let mut v = [0u8; LOCATION_LEN];
    v[..32].copy_from_slice(&pack.0);
    v[32..40].copy_from_slice(&e.offset.to_le_bytes());
    v[40..44].copy_from_slice(&e.stored_len.to_le_bytes());
    v[44..48].copy_from_slice(&e.raw_len.to_le_bytes());
    v[48] = e.compression as u8;
    v
}

pub fn decode_location(v: &[u8]) -> Option<BlobLocation> {
    if v.len() != LOCATION_LEN {
        return None;
    }
    let compression = match v[48] {
        0 => Compression::Raw,
        1 => Compression::Zstd,
        _ => return None,
    };
    let loc = BlobLocation {
        pack: PackId(v[..32].try_into().ok()?),
        offset: u64_le(&v[32..40])?,
        stored_len: u32_le(&v[40..44])?,
        raw_len: u32_le(&v[44..48])?,
        compression,
    };
    // Every location is copied from a pack trailer entry, which the trailer's decoder bounds the same way: stored
    // bytes after the pack header, ending without overflow, and a raw blob is its plaintext, sealed or not (so
    // `raw_len` is bounded by bytes that exist). The chunk bound on `raw_len` needs the key's kind: see `Footer::decode_trailer`.
    let in_pack = loc.offset >= HEADER_LEN as u64
        && loc.offset.checked_add(u64::from(loc.stored_len)).is_some();
    // A sealed raw blob (an encrypted repository) is its plaintext and its seal.
    let raw_ok = loc.compression != Compression::Raw
        || u64::from(loc.stored_len) == u64::from(loc.raw_len)
        || u64::from(loc.stored_len) == u64::from(loc.raw_len) + u64::from(SEALED_BLOB_OVERHEAD);
    (in_pack && raw_ok).then_some(loc)
}

/// A catalog value: `id || manifest file` when the file is the plaintext manifest, else (a repository encrypted
/// at rest, whose file is a sealed envelope) `id || BLAKE3(plaintext) || envelope || plaintext`: the index is
/// this machine's and holds plaintext, and keeps the envelope so that a lost manifest file is rewritten with
/// the same bytes, and so the same id.
pub fn catalog_value(id: SnapshotId, stored: &[u8], manifest: &Manifest) -> Vec<u8> {
    let mut value = Vec::with_capacity(32 + 32 + 2 * stored.len());
    value.extend_from_slice(&id.0);
    if !crate::format::sealed::is_sealed(stored) {
        value.extend_from_slice(stored);
        return value;
    }
    let plain = manifest.encode();
    value.extend_from_slice(blake3::hash(&plain).as_bytes());
    value.extend_from_slice(stored);
    value.extend_from_slice(&plain);
    value
}

pub fn decode_catalog(v: &[u8]) -> Option<CatalogEntry> {
    let id = SnapshotId(v.get(..32)?.try_into().ok()?);
    let rest = v.get(32..)?;
    if rest.starts_with(&crate::format::magic::MANIFEST) {
        // The value is the manifest file itself: its hash must still be its id.
        if SnapshotId::of(rest) != id {
            return None;
        }
        return Some(CatalogEntry {
            id,
            manifest: Manifest::decode(rest).ok()?,
            sealed: None,
        });
    }
    // checksum (32) || envelope (plaintext + 64 bytes) || plaintext: the lengths follow from the total.
    let plain_len = rest.len().checked_sub(32 + SEAL_OVERHEAD)? / 2;
    let (sum, rest) = rest.split_first_chunk::<32>()?;
    let (sealed, plain) = rest.split_at_checked(plain_len + SEAL_OVERHEAD)?;
    if plain.len() != plain_len
        || SnapshotId::of(sealed) != id
        || blake3::hash(plain).as_bytes() != sum
    {
        return None;
    }
    Some(CatalogEntry {
        id,
        manifest: Manifest::decode(plain).ok()?,
        sealed: Some(sealed.to_vec()),
    })
}

/// What an envelope adds to its plaintext: header and salt before, the tag after.
const SEAL_OVERHEAD: usize = crate::format::sealed::SEALED_AT + crate::crypto::TAG_LEN;

pub fn u32_le(v: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(v.try_into().ok()?))
}

pub fn u64_le(v: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod mutation_tests {
    //! The index's key and value decoders under the mutations of `format::mutation_tests`.

    use super::*;
    use crate::format::mutation_tests::{manifests, run_all, same, Accepted, Outcome};
    use crate::format::{BlobKind, ChunkId};

    fn check_blob_key(b: &[u8]) -> Outcome {
        match decode_blob_key(b) {
            Some(id) => same(b, &blob(id)),
            None => Ok(Accepted::No),
        }
    }

    fn check_location(b: &[u8]) -> Outcome {
        let Some(loc) = decode_location(b) else {
            return Ok(Accepted::No);
        };
        if loc.offset < HEADER_LEN as u64
            || loc.offset.checked_add(u64::from(loc.stored_len)).is_none()
            || (loc.compression == Compression::Raw
                && loc.stored_len != loc.raw_len
                && u64::from(loc.stored_len) != u64::from(loc.raw_len) + 48)
        {
            return Err(format!("accepted a location no pack trailer has: {loc:?}"));
        }
        let entry = PackEntry {
            id: BlobId::chunk(ChunkId([0; 32])),
            compression: loc.compression,
            offset: loc.offset,
            stored_len: loc.stored_len,
            raw_len: loc.raw_len,
        };
        same(b, &encode_location(loc.pack, &entry))
    }

    fn check_catalog(b: &[u8]) -> Outcome {
        let Some(e) = decode_catalog(b) else {
            return Ok(Accepted::No);
        };
        let stored = e.manifest_file();
        same(b, &catalog_value(e.id, &stored, &e.manifest))?;
        // The catalog key of an accepted manifest is computable (no overflow on the ordinal or time).
        let _ = catalog(&e.manifest);
        Ok(Accepted::Yes)
    }

    /// The value with its leading snapshot id recomputed, so that a mutation reaches the manifest decoder.
    fn check_catalog_resealed(b: &[u8]) -> Outcome {
        let mut b = b.to_vec();
        if b.len() >= 32 {
            let id = SnapshotId::of(&b[32..]);
            b[..32].copy_from_slice(&id.0);
        }
        check_catalog(&b)
    }

    fn check_u64(b: &[u8]) -> Outcome {
        match u64_le(b) {
            Some(v) => same(b, &v.to_le_bytes()),
            None => Ok(Accepted::No),
        }
    }

    fn check_u32(b: &[u8]) -> Outcome {
        match u32_le(b) {
            Some(v) => same(b, &v.to_le_bytes()),
            None => Ok(Accepted::No),
        }
    }

    #[test]
    fn index_keys_and_values() {
        let keys: Vec<Vec<u8>> = [BlobKind::Chunk, BlobKind::Tree, BlobKind::Links]
            .into_iter()
            .map(|kind| {
                blob(BlobId {
                    kind,
                    hash: [kind as u8 * 17; 32],
                })
                .to_vec()
            })
            .collect();
        run_all("index blob key", &keys, &check_blob_key);

        let location = |compression, offset, stored_len, raw_len| {
            let entry = PackEntry {
                id: BlobId::chunk(ChunkId([1; 32])),
                compression,
                offset,
                stored_len,
                raw_len,
            };
            encode_location(PackId([2; 32]), &entry).to_vec()
        };
        let locations = [
            location(Compression::Zstd, 16, 1000, 4 << 20),
            location(Compression::Raw, 1 << 30, 77, 77),
        ];
        run_all("index blob location", &locations, &check_location);

        let catalog_values: Vec<Vec<u8>> = manifests()
            .iter()
            .map(|m| {
                let bytes = m.encode();
                let mut v = SnapshotId::of(&bytes).0.to_vec();
                v.extend_from_slice(&bytes);
                v
            })
            .collect();
        run_all("index catalog value", &catalog_values, &check_catalog);
        run_all(
            "index catalog value (id resealed)",
            &catalog_values,
            &check_catalog_resealed,
        );

        run_all(
            "index u64 value",
            &[1u64.to_le_bytes().to_vec()],
            &check_u64,
        );
        run_all(
            "index u32 value",
            &[crate::format::magic::INDEX_VERSION.to_le_bytes().to_vec()],
            &check_u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::sealed::{self, SealedKind};

    #[test]
    fn sealed_manifests_keep_their_envelope_and_plaintext_in_the_catalog() {
        let manifest = crate::format::mutation_tests::manifests().remove(0);
        let plain = manifest.encode();
        // An envelope of the right length; the index never opens it, it only keeps it.
        let ciphertext = vec![0xa5; plain.len() + crate::crypto::TAG_LEN];
        let envelope = sealed::encode(SealedKind::Manifest, &[1; 32], &ciphertext);
        let id = SnapshotId::of(&envelope);
        let value = catalog_value(id, &envelope, &manifest);
        let entry = decode_catalog(&value).unwrap();
        assert_eq!(entry.manifest, manifest);
        assert_eq!(entry.sealed.as_deref(), Some(envelope.as_slice()));
        for i in [0, 31, 32, 63, 64, value.len() / 2, value.len() - 1] {
            let mut bad = value.clone();
            bad[i] ^= 1;
            assert!(decode_catalog(&bad).is_none(), "byte {i}");
        }
        assert!(decode_catalog(&value[..value.len() - 1]).is_none());
        // A plaintext manifest file keeps the old layout, byte for byte.
        let plain_id = SnapshotId::of(&plain);
        let mut old = plain_id.0.to_vec();
        old.extend_from_slice(&plain);
        assert_eq!(catalog_value(plain_id, &plain, &manifest), old);
        assert_eq!(decode_catalog(&old).unwrap().sealed, None);
    }
}
