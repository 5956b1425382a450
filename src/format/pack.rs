//! Pack files: immutable containers of compressed blobs with a self-describing trailer.
//!
//! ```text
//! header (16 bytes)
//!      0    8 magic "BKFSPACK"
//!      8    4 version u32 (1)
//!     12    4 nonce: random, so that every pack written is a new object, even with the same blobs
//! blobs: stored bytes back to back from offset 16, each zstd frame or raw plaintext
//! trailer: entry_count entries of 52 bytes, sorted by nothing (write order)
//!      0    1 blob kind (1 chunk, 2 tree, 3 links)
//!      1    1 compression (0 raw, 1 zstd)
//!      2    2 reserved, zero
//!      4    4 stored_len u32  bytes in the pack
//!      8    4 raw_len u32     bytes of plaintext
//!     12    8 offset u64      from the start of the file
//!     20   32 BLAKE3 of the plaintext
//! footer (56 bytes, the last bytes of the file)
//!      0    4 entry_count u32
//!      4    4 reserved, zero
//!      8    8 trailer_offset u64
//!     16   32 BLAKE3 of the trailer entries
//!     48    8 magic "BKFSPEND"
//! ```
//! A pack of a repository encrypted at rest is version 2: its blobs are sealed (by `repo::BlobCodec`), and the
//! trailer is stored sealed, as `salt (32) || ChaCha20-Poly1305(trailer entries) || tag (16)`, with the footer's
//! checksum and length covering those stored bytes ([`SEALED_TRAILER_OVERHEAD`] more than the entries).
//!
//! The pack id is the BLAKE3 of the whole file. Thanks to the nonce, a backup that repeats the pack of a killed
//! backup (same blobs, same order) still writes a new file instead of colliding with an orphan that a
//! concurrent prune may be deleting. The trailer alone is enough to rebuild the index entries of every
//! blob in the pack; its checksum catches a torn or damaged trailer.
//!
//! Bounds a reader enforces on every trailer entry before anything is allocated from it (each is a property of
//! every pack a writer of format v1 produces, so no valid pack is refused):
//! - `offset >= 16` and `offset + stored_len <= trailer_offset` (computed without overflow): the stored bytes lie
//!   in the data area, so `stored_len` is bounded by the pack's size;
//! - reserved fields are zero; a raw blob has `raw_len == stored_len` (it is its plaintext), or in a sealed pack
//!   `raw_len + 48 == stored_len` (its plaintext, salt and tag);
//! - a chunk's `raw_len` is at most [`MAX_CHUNK_LEN`] (16 MiB): chunks are cut by FastCDC with `chunk_max`, which
//!   the config limits to 16 MiB, and SPEC.md gives extents 1..16 MiB. Trees and hardlink tables have no format
//!   bound beyond the u32 field (a flat tree of a huge directory written by an old writer may be hundreds of MiB),
//!   so [`decompress`] allocates for them only as plaintext actually comes out of the zstd frame.

use super::codec::{Reader, Writer};
pub use super::tree::MAX_CHUNK_LEN;
use super::{magic, BlobId, BlobKind, FormatError, PackId};
use std::io::Read;

pub const HEADER_LEN: usize = 16;

const E_KIND: usize = 0;
const E_COMPRESSION: usize = E_KIND + 1;
const E_STORED_LEN: usize = E_COMPRESSION + 1 + 2;
const E_RAW_LEN: usize = E_STORED_LEN + 4;
const E_OFFSET: usize = E_RAW_LEN + 4;
const E_HASH: usize = E_OFFSET + 8;
pub const ENTRY_LEN: usize = E_HASH + 32;
const _: () = assert!(ENTRY_LEN == 52);

const F_COUNT: usize = 0;
const F_RESERVED: usize = F_COUNT + 4;
const F_TRAILER_OFFSET: usize = F_RESERVED + 4;
const F_CHECKSUM: usize = F_TRAILER_OFFSET + 8;
const F_MAGIC: usize = F_CHECKSUM + 32;
pub const FOOTER_LEN: usize = F_MAGIC + 8;
const _: () = assert!(FOOTER_LEN == 56);

/// How a blob's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    Raw = 0,
    Zstd = 1,
}

/// Where one blob lives inside a pack, as listed in the trailer and copied into the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: BlobId,
    pub compression: Compression,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
}

/// Compresses `raw` with zstd, keeping it raw when compression does not shrink it (already compressed media).
pub fn compress(raw: &[u8], level: i32) -> (Vec<u8>, Compression) {
    match zstd::bulk::compress(raw, level) {
        Ok(z) if z.len() < raw.len() => (z, Compression::Zstd),
        _ => (raw.to_vec(), Compression::Raw),
    }
}

/// Inverse of `compress`; the caller verifies the plaintext against the blob id.
///
/// Allocates up front at most `min(raw_len, MAX_CHUNK_LEN)` bytes: beyond a chunk's maximum, the buffer grows only
/// as the zstd frame actually produces plaintext, so a lying `raw_len` (up to 4 GiB) costs nothing but the bytes
/// the frame really decodes to, and decoding stops one byte past `raw_len`.
pub fn decompress(
    stored: &[u8],
    compression: Compression,
    raw_len: u32,
) -> Result<Vec<u8>, FormatError> {
    let wrong_length = || FormatError::Invalid {
        object: "blob",
        offset: 0,
        what: format!("plaintext is not raw_len ({raw_len}) bytes"),
    };
    let zstd_error = |e: std::io::Error| FormatError::Invalid {
        object: "blob",
        offset: 0,
        what: format!("zstd: {e}"),
    };
    match compression {
        Compression::Raw if stored.len() as u64 == u64::from(raw_len) => Ok(stored.to_vec()),
        Compression::Raw => Err(wrong_length()),
        Compression::Zstd => {
            let up_front = u64::from(raw_len).min(MAX_CHUNK_LEN);
            let mut out =
                Vec::with_capacity(usize::try_from(up_front).map_err(|_| wrong_length())?);
            zstd::stream::read::Decoder::with_buffer(stored)
                .map_err(zstd_error)?
                .take(u64::from(raw_len) + 1)
                .read_to_end(&mut out)
                .map_err(zstd_error)?;
            if out.len() as u64 != u64::from(raw_len) {
                return Err(wrong_length());
            }
            Ok(out)
        }
    }
}

/// What a sealed trailer adds to its entries: the salt before them and the tag after.
pub const SEALED_TRAILER_OVERHEAD: u64 = 32 + 16;
/// What sealing adds to a blob's stored bytes (its salt and tag): a sealed raw blob is this much longer than its
/// plaintext.
pub const SEALED_BLOB_OVERHEAD: u32 = 32 + 16;

/// The stored length of a trailer of `entries` entries in a pack of `version`; None for an unknown version.
fn stored_trailer_len(version: u32, entries: u32) -> Option<u64> {
    // At most 2^32 * 52 + 48 bytes: no overflow.
    let plain = u64::from(entries) * ENTRY_LEN as u64;
    match version {
        magic::PACK_VERSION => Some(plain),
        magic::PACK_VERSION_SEALED => Some(plain + SEALED_TRAILER_OVERHEAD),
        _ => None,
    }
}

/// The trailer's bytes as stored, from its entries: unchanged (version 1) or sealed by the repository's codec.
pub type TrailerSeal<'a> = &'a dyn Fn(Vec<u8>) -> Vec<u8>;

/// Accumulates blobs into one pack in memory; packs are tens of MiB, and a whole object is what an object store
/// uploads anyway.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack of `version` (`magic::PACK_VERSION`, or `PACK_VERSION_SEALED` for an encrypted repository).
    pub fn new(version: u32) -> Self {
        let mut w = Writer::with_capacity(HEADER_LEN);
        w.bytes(&magic::PACK_HEADER);
        w.u32(version);
        w.u32(nonce());
        Self {
            buf: w.buf,
            entries: Vec::new(),
        }
    }

    #[allow(
        clippy::cast_possible_truncation,
        reason = "the caller's raw_len is a u32 and a stored blob is never larger than its plaintext"
    )]
    pub fn add(&mut self, id: BlobId, stored: &[u8], compression: Compression, raw_len: u32) {
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(stored);
        self.entries.push(PackEntry {
            id,
            compression,
            offset,
            stored_len: stored.len() as u32,
            raw_len,
        });
    }

    /// Bytes of blob data so far (what `pack_target` is compared with).
    pub fn data_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends trailer (as `seal` stores it) and footer; returns the pack's id, its bytes, and its entries.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a pack closes at pack_target (a u32) bytes of blobs, so it holds fewer than 2^32"
    )]
    pub fn finish(self, seal: TrailerSeal<'_>) -> (PackId, Vec<u8>, Vec<PackEntry>) {
        let Self { mut buf, entries } = self;
        let trailer_offset = buf.len() as u64;
        let trailer = seal(encode_trailer(&entries));
        let footer = Footer::new(trailer_offset, entries.len() as u32, &trailer);
        buf.extend_from_slice(&trailer);
        buf.extend_from_slice(&footer.encode());
        (PackId::of(&buf), buf, entries)
    }
}

/// Four unpredictable bytes; uniqueness is what matters, so time, process and a counter mixed by BLAKE3 do.
fn nonce() -> u32 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = blake3::Hasher::new();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let b = h.finalize();
    u32::from_le_bytes([
        b.as_bytes()[0],
        b.as_bytes()[1],
        b.as_bytes()[2],
        b.as_bytes()[3],
    ])
}

/// The trailer entries, as `Footer::decode_trailer` reads them back.
pub fn encode_trailer(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        w.u8(e.id.kind as u8);
        w.u8(e.compression as u8);
        w.u16(0);
        w.u32(e.stored_len);
        w.u32(e.raw_len);
        w.u64(e.offset);
        w.bytes(&e.id.hash);
    }
    w.buf
}

/// Checks a pack's 16-byte header (exactly its first [`HEADER_LEN`] bytes); returns its version.
pub fn check_header(bytes: &[u8]) -> Result<u32, FormatError> {
    let mut r = Reader::new(bytes, "pack header");
    let version = r.header_any(
        magic::PACK_HEADER,
        &[magic::PACK_VERSION, magic::PACK_VERSION_SEALED],
    )?;
    r.u32()?; // the nonce: any value
    r.finish()?;
    Ok(version)
}

/// The parsed footer: where the trailer starts, how many entries it has, how long it is stored and its checksum.
pub struct Footer {
    pub trailer_offset: u64,
    pub entry_count: u32,
    /// Bytes of the trailer as stored (sealed or not).
    pub trailer_len: u64,
    /// Whether the pack is sealed (version 2): its trailer and its blobs.
    pub sealed: bool,
    checksum: [u8; 32],
}

impl Footer {
    /// The footer of a pack whose trailer (`entry_count` entries, stored as `trailer`) starts at `trailer_offset`.
    pub fn new(trailer_offset: u64, entry_count: u32, trailer: &[u8]) -> Self {
        Self {
            trailer_offset,
            entry_count,
            trailer_len: trailer.len() as u64,
            sealed: trailer.len() as u64 != u64::from(entry_count) * ENTRY_LEN as u64,
            checksum: *blake3::hash(trailer).as_bytes(),
        }
    }

    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut w = Writer::with_capacity(FOOTER_LEN);
        w.u32(self.entry_count);
        w.u32(0);
        w.u64(self.trailer_offset);
        w.bytes(&self.checksum);
        w.bytes(&magic::PACK_FOOTER);
        let mut out = [0u8; FOOTER_LEN];
        out.copy_from_slice(&w.buf);
        out
    }

    /// Decodes the last [`FOOTER_LEN`] bytes of a pack of `file_len` bytes and `version` (its header's), and
    /// checks that the trailer it describes lies between the header and the footer.
    pub fn decode(bytes: &[u8], file_len: u64, version: u32) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "pack footer");
        let entry_count = r.u32()?;
        if r.u32()? != 0 {
            return Err(r.invalid_at(F_RESERVED, "reserved field is not zero"));
        }
        let trailer_offset = r.u64()?;
        let checksum = r.array::<32>()?;
        if r.array::<8>()? != magic::PACK_FOOTER {
            return Err(r.invalid_at(F_MAGIC, "no end magic"));
        }
        r.finish()?;
        let trailer_len =
            stored_trailer_len(version, entry_count).ok_or(FormatError::UnsupportedVersion {
                object: "pack",
                found: version,
                supported: magic::PACK_VERSION_SEALED,
            })?;
        let trailer_end = trailer_offset.checked_add(trailer_len);
        let footer_start = file_len.checked_sub(FOOTER_LEN as u64);
        if trailer_offset < HEADER_LEN as u64
            || footer_start.is_none()
            || trailer_end != footer_start
        {
            return Err(r.invalid_at(
                F_TRAILER_OFFSET,
                format!(
                    "trailer of {entry_count} entries at {trailer_offset} does not end at the footer \
                     of a {file_len}-byte pack"
                ),
            ));
        }
        Ok(Self {
            trailer_offset,
            entry_count,
            trailer_len,
            sealed: version == magic::PACK_VERSION_SEALED,
            checksum,
        })
    }

    /// Checks the trailer's stored bytes (exactly `trailer_len` of them) against the footer's checksum.
    pub fn verify_trailer(&self, stored: &[u8]) -> Result<(), FormatError> {
        if stored.len() as u64 != self.trailer_len {
            return Err(FormatError::Invalid {
                object: "pack trailer",
                offset: 0,
                what: format!(
                    "{} bytes where the footer says {}",
                    stored.len(),
                    self.trailer_len
                ),
            });
        }
        if blake3::hash(stored).as_bytes() != &self.checksum {
            return Err(FormatError::Checksum {
                object: "pack trailer",
            });
        }
        Ok(())
    }

    /// Decodes and verifies the trailer of a version 1 pack (`bytes` is exactly the trailer).
    pub fn decode_trailer(&self, bytes: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
        self.verify_trailer(bytes)?;
        self.decode_entries(bytes)
    }

    /// Decodes the trailer's entries from its plaintext (of a verified, and if sealed opened, trailer).
    pub fn decode_entries(&self, bytes: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
        let expected = u64::from(self.entry_count) * ENTRY_LEN as u64;
        if bytes.len() as u64 != expected {
            return Err(FormatError::Invalid {
                object: "pack trailer",
                offset: 0,
                what: format!(
                    "{} bytes for {} entries of {ENTRY_LEN}",
                    bytes.len(),
                    self.entry_count
                ),
            });
        }
        let mut r = Reader::new(bytes, "pack trailer");
        // Bounded by the trailer's length, checked above.
        let mut entries = Vec::with_capacity(bytes.len() / ENTRY_LEN);
        for _ in 0..self.entry_count {
            entries.push(read_entry(&mut r, self.trailer_offset, self.sealed)?);
        }
        r.finish()?;
        Ok(entries)
    }
}

/// One trailer entry, checked against the bounds every writer keeps; `data_end` is where the data area ends
/// (the trailer's offset), `sealed` whether the pack's blobs are. Also what a salvage scan of a damaged pack
/// tries at each place an entry could be.
pub fn decode_entry(bytes: &[u8], data_end: u64, sealed: bool) -> Result<PackEntry, FormatError> {
    let mut r = Reader::new(bytes, "pack trailer entry");
    let entry = read_entry(&mut r, data_end, sealed)?;
    r.finish()?;
    Ok(entry)
}

fn read_entry(r: &mut Reader<'_>, data_end: u64, sealed: bool) -> Result<PackEntry, FormatError> {
    let at = r.offset();
    let kind =
        BlobKind::from_u8(r.u8()?).ok_or_else(|| r.invalid_at(at + E_KIND, "unknown blob kind"))?;
    let compression = match r.u8()? {
        0 => Compression::Raw,
        1 => Compression::Zstd,
        _ => return Err(r.invalid_at(at + E_COMPRESSION, "unknown compression")),
    };
    if r.u16()? != 0 {
        return Err(r.invalid_at(at + E_COMPRESSION + 1, "reserved field is not zero"));
    }
    let stored_len = r.u32()?;
    let raw_len = r.u32()?;
    let offset = r.u64()?;
    let hash = r.array::<32>()?;
    let end = offset.checked_add(u64::from(stored_len));
    if offset < HEADER_LEN as u64 || end.is_none_or(|end| end > data_end) {
        return Err(r.invalid_at(
            at + E_OFFSET,
            format!(
                "blob of {stored_len} bytes at {offset} is outside the pack's data area \
                     ({HEADER_LEN}..{})",
                data_end
            ),
        ));
    }
    let overhead = if sealed { SEALED_BLOB_OVERHEAD } else { 0 };
    if compression == Compression::Raw
        && u64::from(stored_len) != u64::from(raw_len) + u64::from(overhead)
    {
        return Err(r.invalid_at(
            at + E_RAW_LEN,
            format!("raw blob of {stored_len} bytes has raw_len {raw_len}"),
        ));
    }
    if kind == BlobKind::Chunk && u64::from(raw_len) > MAX_CHUNK_LEN {
        return Err(r.invalid_at(
            at + E_RAW_LEN,
            format!("chunk raw_len {raw_len} exceeds the maximum chunk length {MAX_CHUNK_LEN}"),
        ));
    }
    Ok(PackEntry {
        id: BlobId { kind, hash },
        compression,
        offset,
        stored_len,
        raw_len,
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use crate::format::ChunkId;

    #[test]
    fn builder_trailer_round_trip() {
        let mut b = PackBuilder::new(magic::PACK_VERSION);
        let data = vec![b'a'; 10_000];
        let (stored, c) = compress(&data, 3);
        assert_eq!(c, Compression::Zstd);
        let id = BlobId::chunk(ChunkId::of(&data));
        b.add(id, &stored, c, data.len() as u32);
        let (pack_id, bytes, entries) = b.finish(&|t| t);
        assert_eq!(pack_id, PackId::of(&bytes));
        assert_eq!(check_header(&bytes[..HEADER_LEN]).unwrap(), 1);
        let len = bytes.len() as u64;
        let footer = Footer::decode(&bytes[bytes.len() - FOOTER_LEN..], len, 1).unwrap();
        let t = footer.trailer_offset as usize;
        let parsed = footer
            .decode_trailer(&bytes[t..bytes.len() - FOOTER_LEN])
            .unwrap();
        assert_eq!(parsed, entries);
        let e = parsed[0];
        let stored = &bytes[e.offset as usize..(e.offset + e.stored_len as u64) as usize];
        assert_eq!(decompress(stored, e.compression, e.raw_len).unwrap(), data);
    }

    #[test]
    fn incompressible_is_stored_raw() {
        let data: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let (stored, c) = compress(&data, 3);
        if c == Compression::Raw {
            assert_eq!(stored, data);
        }
    }
}
