//! Every magic number and format version of the repository, in one place.
//!
//! Each magic is eight ASCII bytes: `BKFS` (backupfs) followed by a four-letter tag naming the object. ASCII makes
//! them readable in a hexdump, and none of them can be confused with a zstd frame (`28 b5 2f fd`), which is what a
//! compressed blob starts with. A reader checks the magic first and the version second, and refuses a version it
//! does not know instead of guessing.

/// The repository's `config` file.
pub const CONFIG: [u8; 8] = *b"BKFSCONF";
/// First bytes of every pack file.
pub const PACK_HEADER: [u8; 8] = *b"BKFSPACK";
/// Last bytes of every pack file: a pack whose end is not this was not written completely.
pub const PACK_FOOTER: [u8; 8] = *b"BKFSPEND";
/// First bytes of a tree blob's plaintext.
pub const TREE: [u8; 8] = *b"BKFSTREE";
/// First bytes of a tree index blob's plaintext (a large directory's pages); shares the tree blob kind, so the
/// magic is what tells the two apart.
pub const TREE_INDEX: [u8; 8] = *b"BKFSTIDX";
/// First bytes of a hardlink table blob's plaintext.
pub const LINKS: [u8; 8] = *b"BKFSLINK";
/// First bytes of a snapshot manifest.
pub const MANIFEST: [u8; 8] = *b"BKFSSNAP";
/// First bytes of a pack index object: the trailers of packs, so that a new machine need not read each pack.
pub const PACK_INDEX: [u8; 8] = *b"BKFSPIDX";
/// First bytes of an envelope: a whole object (a manifest, a pack index object) of a repository encrypted at
/// rest, sealed.
pub const SEALED: [u8; 8] = *b"BKFSSEAL";

/// Format version of the repository as a whole (config) and of every object kind. All are 1 in format v1; they
/// are separate so that one object kind can evolve without touching the others.
pub const CONFIG_VERSION: u32 = 1;
/// The config of a repository encrypted at rest: version 1's fields, the scheme and the key check value.
pub const CONFIG_VERSION_ENCRYPTED: u32 = 2;
pub const PACK_VERSION: u32 = 1;
/// A pack of a repository encrypted at rest: its blobs are sealed, and so is its trailer.
pub const PACK_VERSION_SEALED: u32 = 2;
pub const TREE_VERSION: u32 = 1;
pub const TREE_INDEX_VERSION: u32 = 1;
pub const LINKS_VERSION: u32 = 1;
pub const MANIFEST_VERSION: u32 = 1;
/// A manifest of an account whose snapshot has parts (files, mail, database dumps): version 1's fields, then
/// the parts. Flat snapshots are still written as version 1, byte for byte as before.
pub const MANIFEST_VERSION_PARTS: u32 = 2;
pub const PACK_INDEX_VERSION: u32 = 1;
pub const SEALED_VERSION: u32 = 1;
/// Version of the RocksDB index's key layout, stored under the index's `V` key.
pub const INDEX_VERSION: u32 = 1;
