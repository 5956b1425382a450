//! Byte layout of the index's keys and values (documented in `index`).

use super::{BlobLocation, CatalogEntry};
use crate::format::manifest::Manifest;
use crate::format::pack::{Compression, PackEntry};
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
    Some(BlobLocation {
        pack: PackId(v[..32].try_into().ok()?),
        offset: u64_le(&v[32..40])?,
        stored_len: u32_le(&v[40..44])?,
        raw_len: u32_le(&v[44..48])?,
        compression,
    })
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
