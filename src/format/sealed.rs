//! The envelope of a whole object of a repository encrypted at rest: snapshot manifests and pack index objects
//! are stored as `BKFSSEAL` envelopes whose plaintext is the object's unencrypted encoding, byte for byte. SPEC.md
//! is authoritative for the layout:
//!
//! ```text
//!      0    8 magic "BKFSSEAL"
//!      8    4 version u32 = 1
//!     12    1 kind u8: 1 snapshot manifest, 2 pack index object
//!     13    3 reserved, zero
//!     16   32 salt: random, the object's own key is derived from it (src/crypto.rs)
//!     48    n ChaCha20-Poly1305 ciphertext of the plaintext object, part 0, associated data = bytes 0..16
//!   48+n   16 Poly1305 tag
//! ```
//! The object's name stays the BLAKE3 of its whole stored bytes, so a copy is verified without the key. This
//! module only lays the bytes out; sealing and opening are the repository codec's (`repo::BlobCodec`).

use super::codec::{Reader, Writer};
use super::{magic, FormatError};

const S_MAGIC: usize = 0;
const S_VERSION: usize = S_MAGIC + 8;
const S_KIND: usize = S_VERSION + 4;
const S_RESERVED: usize = S_KIND + 1;
/// The bytes the associated data covers: magic, version, kind and reserved.
pub const HEADER_LEN: usize = S_RESERVED + 3;
const S_SALT: usize = HEADER_LEN;
/// Where the ciphertext starts.
pub const SEALED_AT: usize = S_SALT + 32;
const _: () = assert!(HEADER_LEN == 16 && SEALED_AT == 48);

/// What an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SealedKind {
    Manifest = 1,
    PackIndex = 2,
}

impl SealedKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Manifest),
            2 => Some(Self::PackIndex),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Manifest => "snapshot manifest",
            Self::PackIndex => "pack index",
        }
    }
}

/// An envelope's parts, borrowed from its bytes.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Bytes 0..16: the associated data of the seal.
    pub header: &'a [u8; HEADER_LEN],
    pub salt: [u8; 32],
    /// Ciphertext and tag.
    pub sealed: &'a [u8],
}

/// The header (and associated data) of an envelope of `kind`.
pub fn header(kind: SealedKind) -> [u8; HEADER_LEN] {
    let mut w = Writer::with_capacity(HEADER_LEN);
    w.bytes(&magic::SEALED);
    w.u32(magic::SEALED_VERSION);
    w.u8(kind as u8);
    w.bytes(&[0; 3]);
    let mut out = [0u8; HEADER_LEN];
    out.copy_from_slice(&w.buf);
    out
}

/// Whether `bytes` start like an envelope (to tell a sealed object from a plaintext one in errors).
pub fn is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(&magic::SEALED)
}

pub fn encode(kind: SealedKind, salt: &[u8; 32], sealed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEALED_AT + sealed.len());
    out.extend_from_slice(&header(kind));
    out.extend_from_slice(salt);
    out.extend_from_slice(sealed);
    out
}

/// Splits an envelope that must hold a `kind`; the seal itself is checked when it is opened.
pub fn decode(bytes: &[u8], kind: SealedKind) -> Result<Envelope<'_>, FormatError> {
    let mut r = Reader::new(bytes, kind.name());
    r.header(magic::SEALED, magic::SEALED_VERSION)?;
    let found = r.u8()?;
    if SealedKind::from_u8(found) != Some(kind) {
        return Err(r.invalid_at(S_KIND, format!("sealed object of kind {found}")));
    }
    if r.array::<3>()? != [0; 3] {
        return Err(r.invalid_at(S_RESERVED, "reserved field is not zero"));
    }
    let salt = r.array::<32>()?;
    let sealed = r.take(r.remaining())?;
    let header = bytes
        .first_chunk::<HEADER_LEN>()
        .ok_or_else(|| r.invalid_at(0, "shorter than its header"))?;
    Ok(Envelope {
        header,
        salt,
        sealed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_refuse_other_kinds_and_truncation() {
        let bytes = encode(SealedKind::Manifest, &[7; 32], b"ciphertext and tag");
        assert!(is_sealed(&bytes));
        let e = decode(&bytes, SealedKind::Manifest).unwrap();
        assert_eq!(e.header, &header(SealedKind::Manifest));
        assert_eq!(e.salt, [7; 32]);
        assert_eq!(e.sealed, b"ciphertext and tag");
        let err = decode(&bytes, SealedKind::PackIndex).unwrap_err();
        assert!(err.to_string().contains("sealed object of kind 1"), "{err}");
        for n in 0..SEALED_AT {
            assert!(decode(&bytes[..n], SealedKind::Manifest).is_err(), "{n}");
        }
        let mut reserved = bytes.clone();
        reserved[S_RESERVED + 1] = 1;
        assert!(decode(&reserved, SealedKind::Manifest).is_err());
        assert!(!is_sealed(b"BKFSSNAP"));
    }
}
