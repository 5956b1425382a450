//! Content ids: 32-byte BLAKE3 digests, each kind of object with its own newtype so that a tree id can never be
//! passed where a chunk id is expected.

use std::fmt;

/// Length of every id in bytes (BLAKE3's default output).
pub const ID_LEN: usize = 32;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; ID_LEN]);

        impl $name {
            /// The id of `data`: its BLAKE3 digest.
            pub fn of(data: &[u8]) -> Self {
                Self(*blake3::hash(data).as_bytes())
            }

            /// Lower-case hex, as used in file names and messages.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                parse_hex(s).map(Self)
            }

            /// The first 8 hex digits, for logs and listings.
            pub fn short(&self) -> String {
                hex(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

id_type!(
    /// A chunk of file content: BLAKE3 of the chunk's plaintext.
    ChunkId
);
id_type!(
    /// A directory: BLAKE3 of the encoded tree blob (see `tree`).
    TreeId
);
id_type!(
    /// A snapshot's hardlink table: BLAKE3 of the encoded table (see `links`).
    LinksId
);
id_type!(
    /// A snapshot: BLAKE3 of its whole manifest file.
    SnapshotId
);
id_type!(
    /// A pack file: BLAKE3 of the whole pack file.
    PackId
);
id_type!(
    /// A pack index object (`indexes/<id>`): BLAKE3 of the whole object.
    PackIndexId
);

/// What a blob in a pack holds; part of the blob's key, so equal bytes of different kinds never alias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobKind {
    Chunk = 1,
    Tree = 2,
    Links = 3,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Chunk),
            2 => Some(Self::Tree),
            3 => Some(Self::Links),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Chunk => "chunk",
            Self::Tree => "tree",
            Self::Links => "links",
        }
    }
}

/// A blob's full key: its kind and the digest of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId {
    pub kind: BlobKind,
    pub hash: [u8; ID_LEN],
}

impl BlobId {
    pub fn chunk(id: ChunkId) -> Self {
        Self {
            kind: BlobKind::Chunk,
            hash: id.0,
        }
    }
    pub fn tree(id: TreeId) -> Self {
        Self {
            kind: BlobKind::Tree,
            hash: id.0,
        }
    }
    pub fn links(id: LinksId) -> Self {
        Self {
            kind: BlobKind::Links,
            hash: id.0,
        }
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.name(), hex(&self.hash))
    }
}

impl fmt::Debug for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), hex(&self.hash[..4]))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn parse_hex(s: &str) -> Option<[u8; ID_LEN]> {
    let bytes = s.as_bytes();
    if bytes.len() != ID_LEN * 2 {
        return None;
    }
    let mut out = [0u8; ID_LEN];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }
}
