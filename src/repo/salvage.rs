//! Salvaging a pack whose header, trailer or footer is damaged: its blobs may all still be intact, and a
//! repair that dropped them would make readable data unreadable. The format is in SPEC.md (authoritative).
//!
//! Where a blob might be comes from two places: what the old index said about the pack, and trailer entries
//! found by scanning back from every place a footer could be (the end of the file, and before any footer
//! magic, for bytes appended after it). Nothing found is trusted: a candidate is kept only if its bytes
//! decode to a plaintext whose id is its id.
//!
//! A sealed trailer (an encrypted repository) cannot be scanned entry by entry: at each place a footer could
//! be, the footer is decoded and the trailer it points to opened whole, which recovers a pack whose header or
//! blobs are damaged, or that has bytes appended, but not one whose footer or trailer is.

use super::RepoError;
use crate::backend::{Backend, Object};
use crate::format::magic::PACK_FOOTER;
use crate::format::pack::{decode_entry, Footer, PackEntry, ENTRY_LEN, FOOTER_LEN, HEADER_LEN};
use crate::format::{BlobId, PackId};
use std::collections::BTreeMap;

/// The blobs of a damaged pack that verified, with their stored bytes, and the candidates that did not.
#[derive(Debug, Default)]
pub struct Salvaged {
    pub intact: Vec<(PackEntry, Vec<u8>)>,
    pub failed: Vec<BlobId>,
}

/// Reads the whole pack and keeps every candidate blob that verifies; `known` is what the old index said.
pub fn salvage_pack(
    backend: &dyn Backend,
    codec: &super::BlobCodec,
    pack: PackId,
    known: &[PackEntry],
) -> Result<Salvaged, RepoError> {
    let bytes = backend.read_all(Object::Pack(pack))?;
    let mut candidates: BTreeMap<BlobId, Vec<PackEntry>> = BTreeMap::new();
    let found = if codec.is_encrypted() {
        open_trailers(codec, pack, &bytes)
    } else {
        scan_trailers(&bytes)
    };
    for e in known.iter().copied().chain(found) {
        let places = candidates.entry(e.id).or_default();
        if !places.contains(&e) {
            places.push(e);
        }
    }
    let mut out = Salvaged::default();
    for (id, places) in candidates {
        match places.into_iter().find_map(|e| verified(codec, &bytes, e)) {
            Some(found) => out.intact.push(found),
            None => out.failed.push(id),
        }
    }
    Ok(out)
}

/// The entry and its stored bytes if they decode to the plaintext its id names.
fn verified(codec: &super::BlobCodec, pack: &[u8], e: PackEntry) -> Option<(PackEntry, Vec<u8>)> {
    let start = usize::try_from(e.offset).ok()?;
    let stored = pack.get(start..start.checked_add(e.stored_len as usize)?)?;
    codec.decode(e.id, stored, e.compression, e.raw_len)?;
    Some((e, stored.to_vec()))
}

/// Where a footer could start: before the end of the file, and before each footer magic.
fn footer_starts(pack: &[u8]) -> Vec<usize> {
    let mut starts = vec![pack.len().saturating_sub(FOOTER_LEN)];
    let magic_at = pack
        .windows(PACK_FOOTER.len())
        .enumerate()
        .filter(|(_, w)| *w == PACK_FOOTER)
        .map(|(i, _)| i);
    starts.extend(magic_at.filter_map(|i| (i + PACK_FOOTER.len()).checked_sub(FOOTER_LEN)));
    starts
}

/// The entries of each sealed trailer that a footer candidate points to and that opens.
fn open_trailers(codec: &super::BlobCodec, pack: PackId, bytes: &[u8]) -> Vec<PackEntry> {
    let mut found = Vec::new();
    for start in footer_starts(bytes) {
        let Some(footer_bytes) = bytes.get(start..start + FOOTER_LEN) else {
            continue;
        };
        let version = codec.pack_version();
        let Ok(footer) = Footer::decode(footer_bytes, (start + FOOTER_LEN) as u64, version) else {
            continue;
        };
        let (Ok(at), Ok(len)) = (
            usize::try_from(footer.trailer_offset),
            usize::try_from(footer.trailer_len),
        ) else {
            continue;
        };
        let Some(stored) = bytes.get(at..at.saturating_add(len)) else {
            continue;
        };
        let entries = codec
            .open_trailer(pack, version, stored.to_vec())
            .ok()
            .and_then(|plain| footer.decode_entries(&plain).ok());
        found.extend(entries.unwrap_or_default());
    }
    found
}

/// Trailer entries read backwards from each place a trailer could end, while they parse.
fn scan_trailers(pack: &[u8]) -> Vec<PackEntry> {
    let mut found = Vec::new();
    for end in footer_starts(pack) {
        let mut at = end;
        while at >= HEADER_LEN + ENTRY_LEN {
            // The trailer starts at or before this entry: its blob must end before it.
            match decode_entry(&pack[at - ENTRY_LEN..at], (at - ENTRY_LEN) as u64, false) {
                Ok(e) => found.push(e),
                Err(_) => break,
            }
            at -= ENTRY_LEN;
        }
    }
    found
}
