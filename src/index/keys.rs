//! Byte layout of the index's keys and values (documented in `index`).

use super::{BlobLocation, CatalogEntry};
use crate::format::manifest::Manifest;
use crate::format::pack::{Compression, PackEntry, HEADER_LEN};
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
    // bytes after the pack header, ending without overflow, and a raw blob is its plaintext (so `raw_len` is
    // bounded by bytes that exist). The chunk bound on `raw_len` needs the key's kind: see `Footer::decode_trailer`.
    let in_pack = loc.offset >= HEADER_LEN as u64
        && loc.offset.checked_add(u64::from(loc.stored_len)).is_some();
    let raw_ok = loc.compression != Compression::Raw || loc.stored_len == loc.raw_len;
    (in_pack && raw_ok).then_some(loc)
}

pub fn decode_catalog(v: &[u8]) -> Option<CatalogEntry> {
    let id = SnapshotId(v.get(..32)?.try_into().ok()?);
    let bytes = v.get(32..)?;
    // The value is the manifest file itself: its hash must still be its id.
    if SnapshotId::of(bytes) != id {
        return None;
    }
    Some(CatalogEntry {
        id,
        manifest: Manifest::decode(bytes).ok()?,
    })
}

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
            || (loc.compression == Compression::Raw && loc.stored_len != loc.raw_len)
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
        let mut encoded = e.id.0.to_vec();
        encoded.extend_from_slice(&e.manifest.encode());
        same(b, &encoded)?;
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
