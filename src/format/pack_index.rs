//! Pack index objects (`indexes/<id>`): copies of the trailers of some packs, so that a machine attaching to a
//! repository in object storage reads one object per backup (or one per prune, which consolidates them) instead
//! of one per pack. Derivable data: the packs' own trailers stay the authority, and `repair index` reads those.
//! SPEC.md is authoritative for the layout:
//!
//! ```text
//! magic "BKFSPIDX" | version u32 = 1 | pack_count u32 | pack*
//! pack = pack id (32) | pack size u64 | entry_count u32 | entry_count pack trailer entries (52 bytes each)
//! ```
//! The object's id (its name) is the BLAKE3 of the whole object; readers check it.

use super::codec::{Reader, Writer};
use super::magic;
use super::pack::{
    decode_entry, encode_trailer, PackEntry, ENTRY_LEN, FOOTER_LEN, HEADER_LEN,
    SEALED_TRAILER_OVERHEAD,
};
use super::{FormatError, PackId};

/// One pack as an index object lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    /// The pack file's size: a reader uses the entries only for a listed pack of exactly this size.
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

impl IndexedPack {
    /// Where the pack's data area ends (its trailer's offset), from its size and entry count, and whether its
    /// trailer is sealed (packs of an encrypted repository).
    fn data_end(size: u64, entries: u64, sealed: bool) -> Option<u64> {
        let overhead = if sealed { SEALED_TRAILER_OVERHEAD } else { 0 };
        size.checked_sub(FOOTER_LEN as u64 + overhead)?
            .checked_sub(entries.checked_mul(ENTRY_LEN as u64)?)
            .filter(|&end| end >= HEADER_LEN as u64)
    }
}

pub fn encode(packs: &[IndexedPack]) -> Vec<u8> {
    let entries: usize = packs.iter().map(|p| p.entries.len()).sum();
    let mut w = Writer::with_capacity(16 + packs.len() * 44 + entries * ENTRY_LEN);
    w.bytes(&magic::PACK_INDEX);
    w.u32(magic::PACK_INDEX_VERSION);
    w.u32(count(packs.len()));
    for p in packs {
        w.bytes(&p.id.0);
        w.u64(p.size);
        w.u32(count(p.entries.len()));
        w.bytes(&encode_trailer(&p.entries));
    }
    w.buf
}

/// Counts fit u32: a pack holds at most a few thousand blobs, and an index object at most every pack there is,
/// which the writers cap at `MAX_PACKS`.
fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The most packs one index object lists; a consolidating prune writes several objects beyond it.
pub const MAX_PACKS: usize = 100_000;

/// Decodes an object's plaintext; `sealed_packs`: the packs it lists have sealed trailers (an encrypted
/// repository's object, opened from its envelope), which moves where their data areas end.
pub fn decode(bytes: &[u8], sealed_packs: bool) -> Result<Vec<IndexedPack>, FormatError> {
    let mut r = Reader::new(bytes, "pack index");
    r.header(magic::PACK_INDEX, magic::PACK_INDEX_VERSION)?;
    let pack_count = r.u32()?;
    // Each pack takes at least 44 bytes: a count beyond what the object holds is a lie, not an allocation.
    if u64::from(pack_count) * 44 > r.remaining() as u64 {
        return Err(r.invalid("pack count larger than the object"));
    }
    let mut packs = Vec::with_capacity(pack_count as usize);
    for _ in 0..pack_count {
        let id = PackId(r.array()?);
        let size_at = r.offset();
        let size = r.u64()?;
        let n = r.u32()?;
        let data_end = IndexedPack::data_end(size, u64::from(n), sealed_packs)
            .ok_or_else(|| r.invalid_at(size_at, "pack size too small for its entries"))?;
        if u64::from(n) * ENTRY_LEN as u64 > r.remaining() as u64 {
            return Err(r.invalid("entry count larger than the object"));
        }
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            entries.push(decode_entry(r.take(ENTRY_LEN)?, data_end, sealed_packs)?);
        }
        packs.push(IndexedPack { id, size, entries });
    }
    r.finish()?;
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::{Compression, PackBuilder};
    use crate::format::BlobId;

    fn sample() -> Vec<IndexedPack> {
        let mut b = PackBuilder::new(crate::format::magic::PACK_VERSION);
        b.add(
            BlobId::chunk(crate::format::ChunkId::of(b"x")),
            b"x",
            Compression::Raw,
            1,
        );
        let (id, bytes, entries) = b.finish(&|t| t);
        vec![IndexedPack {
            id,
            size: bytes.len() as u64,
            entries,
        }]
    }

    #[test]
    fn round_trip() {
        let packs = sample();
        assert_eq!(decode(&encode(&packs), false).unwrap(), packs);
        assert_eq!(decode(&encode(&[]), false).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_and_lie_is_an_error() {
        let bytes = encode(&sample());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n], false).is_err(), "truncated at {n}");
        }
        let mut lie = bytes.clone();
        lie[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&lie, false).is_err());
        let mut small = bytes.clone();
        small[48..56].copy_from_slice(&10u64.to_le_bytes());
        assert!(decode(&small, false).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode(&trailing, false).is_err());
    }
}
