//! A whole pack file from arbitrary bytes, read as `read_pack_trailer` (src/repo/packs.rs) reads one: the
//! 16-byte header (`check_header`), the 56-byte footer (`Footer::decode` with the file's length), then the
//! trailer the footer points at (`Footer::decode_trailer`). Never panics; what is accepted round-trips:
//!
//! - header: cannot be re-encoded by design (a writer picks a random nonce, which a reader ignores), so we assert
//!   what acceptance means instead: bytes 0..12 are the magic and version, any nonce.
//! - footer: `Footer::encode` gives back the 56 bytes exactly, and the trailer it describes lies between the
//!   header and the footer (SPEC.md: `trailer_offset + 52 * entry_count + 56` is the file size).
//! - trailer: `encode_trailer` gives back the trailer bytes exactly, and every entry satisfies the bounds the
//!   module documents (data area, raw length of raw blobs, chunk length).
//!
//! The footer holds the BLAKE3 of the trailer, which a fuzzer never guesses; so the trailer is also decoded with
//! a footer carrying the right checksum (`Footer::new`, as `PackBuilder::finish` writes it), which reaches the
//! per-entry validation. Entries so accepted also have their stored bytes passed through `decompress` (what
//! reading a blob does next), for raw lengths up to 1 MiB: `decompress` may legitimately produce up to `raw_len`
//! (4 GiB) bytes from a small zstd frame, which would only measure the machine.
#![no_main]

use backupfs_fuzz::format::magic;
use backupfs_fuzz::format::pack::{
    check_header, decompress, encode_trailer, Compression, Footer, PackEntry, ENTRY_LEN,
    FOOTER_LEN, HEADER_LEN, MAX_CHUNK_LEN,
};
use backupfs_fuzz::format::BlobKind;
use libfuzzer_sys::fuzz_target;

const DECOMPRESS_LIMIT: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // read_pack_trailer refuses a file too short for a header and a footer before reading either.
    if data.len() < HEADER_LEN + FOOTER_LEN {
        return;
    }
    let size = data.len() as u64;
    if let Ok(version) = check_header(&data[..HEADER_LEN]) {
        assert_eq!(&data[..8], &magic::PACK_HEADER);
        assert_eq!(&data[8..12], &version.to_le_bytes());
        assert!(version == magic::PACK_VERSION || version == magic::PACK_VERSION_SEALED);
    }
    // read_pack_trailer stops at a bad header; the footer and trailer are decoded regardless here (they do not
    // depend on the header), so that the fuzzer need not find the header to exercise them. A sealed trailer
    // (version 2) is opened by the AEAD before any entry is decoded: fuzzing it would fuzz the cipher.
    let footer_bytes = &data[data.len() - FOOTER_LEN..];
    let Ok(footer) = Footer::decode(footer_bytes, size, magic::PACK_VERSION) else {
        return;
    };
    assert_eq!(
        footer.encode().as_slice(),
        footer_bytes,
        "footer does not round-trip"
    );
    assert!(footer.trailer_offset >= HEADER_LEN as u64);
    let trailer_len = u64::from(footer.entry_count) * ENTRY_LEN as u64;
    assert_eq!(
        footer.trailer_offset + trailer_len + FOOTER_LEN as u64,
        size
    );
    let start = footer.trailer_offset as usize;
    let trailer = &data[start..data.len() - FOOTER_LEN];
    if let Ok(entries) = footer.decode_trailer(trailer) {
        check_entries(data, &footer, trailer, &entries);
    }
    // The same trailer behind a footer with the right checksum.
    let sealed = Footer::new(footer.trailer_offset, footer.entry_count, trailer);
    if let Ok(entries) = sealed.decode_trailer(trailer) {
        check_entries(data, &sealed, trailer, &entries);
    }
});

fn check_entries(data: &[u8], footer: &Footer, trailer: &[u8], entries: &[PackEntry]) {
    assert_eq!(entries.len(), footer.entry_count as usize);
    assert_eq!(
        encode_trailer(entries),
        trailer,
        "trailer does not round-trip"
    );
    for e in entries {
        let end = e.offset + u64::from(e.stored_len);
        assert!(e.offset >= HEADER_LEN as u64 && end <= footer.trailer_offset);
        if e.compression == Compression::Raw {
            assert_eq!(e.stored_len, e.raw_len);
        }
        if e.id.kind == BlobKind::Chunk {
            assert!(u64::from(e.raw_len) <= MAX_CHUNK_LEN);
        }
        if e.raw_len <= DECOMPRESS_LIMIT {
            let stored = &data[e.offset as usize..end as usize];
            if let Ok(plain) = decompress(stored, e.compression, e.raw_len) {
                assert_eq!(plain.len(), e.raw_len as usize);
                if e.compression == Compression::Raw {
                    assert_eq!(plain, stored);
                }
            }
        }
    }
}
