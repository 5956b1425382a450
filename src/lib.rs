//! backupfs: a deduplicating backup repository whose snapshots are browsed as an ordinary read-only filesystem.
//!
//! Layers, bottom up; each depends only on the ones above it in this list:
//! - `format`: the bytes of every on-disk object (spec in `format/SPEC.md`). Pure functions, no I/O.
//! - `crypto`: keys, key files and per-unit authenticated encryption for repositories encrypted at rest. Which
//!   bytes are sealed is `repo::BlobCodec`'s business alone (blobs, pack trailers, manifest and pack index
//!   envelopes); `repo::key` finds and checks the key when a repository is opened. Nothing below `repo` knows
//!   whether a repository is encrypted, except the byte layouts of `format`.
//! - `backend`: where immutable objects (packs, manifests, pack indexes, config) are stored: a local directory or
//!   an S3 bucket, chosen from the repository's `Location` and injected into `Repository`. Objects are written
//!   once, whole, under a new name; nothing above this layer knows which store it talks to.
//! - `index`: the RocksDB index of blob locations and the snapshot catalog, derivable from the backend's objects.
//! - `repo`: the `Repository` handle that owns backend, index and caches, returns only verified blobs (named,
//!   stored and verified in one place, `BlobCodec`), and commits snapshots in a crash-safe order. Its `StateDir` holds every local path (index, locks, caches): the
//!   repository directory itself, or a per-machine state directory that follows a store several machines share
//!   (synced from listings; ordinals assigned under a commit lease made of PUT, LIST and DELETE).
//! - `backup`: the backup command (walk, chunk, store, commit). An account with databases or mail gets a snapshot
//!   with parts (`backup::parts`): the files, the Maildir and one dump per database, each dump streamed from a
//!   program run as the account's own user (`backup::child`), so that the database server's authentication, not
//!   backupfs, keeps accounts apart; below the root it is ordinary trees, so nothing above `backup` changes.
//! - `prune`, `check`, `repair`: retention and garbage collection, verification, index rebuild. The locking
//!   scheme that lets them run beside backups and mounts is in `prune` and in the format spec.
//! - `vfs`: the browsable view of snapshots (names, inode numbers, lookups, reads), testable without FUSE.
//! - `fuse`: the thin fuser adapter over `vfs`.
//! - `ops`: what operations need around a mount: the config file, daemonizing with readiness, sd_notify, logs.
//!
//! Design decisions that later work relies on:
//! - Inode numbers are computed, never allocated: a snapshot's ordinal in the high bits and the entry's
//!   depth-first number in the low bits, the latter derivable from the trees' descendant counts. Any inode can
//!   thus be resolved after a restart without a prior lookup (NFS file handles), and no table grows with use.
//! - Readers never lock. The index is opened as a RocksDB secondary by readers; writers hold a lock file only for
//!   the short commit. A mount therefore never blocks a backup or a prune, and vice versa.
//! - No reader holds a directory whole. Directories of more than a few thousand entries are written as a tree
//!   index over pages with name-defined boundaries (`format::tree_index`); `repo::Directory` loads one page at a
//!   time through the byte-budgeted tree cache, so a mount's memory is set by its cache sizes, not by the largest
//!   directory someone lists, and a file added to a huge Maildir rewrites one page.
//! - Everything that is not the index is immutable and content-addressed, so caching is always safe and
//!   verification is a hash comparison.
//! - A repository is a set of immutable objects in a store plus a per-machine cache that can always be rebuilt
//!   from them: replication copies objects, encryption seals them, and neither touches the state directory's
//!   design. Correctness never depends on conditional writes, only on read-after-write listings (SPEC.md).

pub mod backend;
pub mod backup;
pub mod cache;
pub mod check;
pub mod crypto;
pub mod format;
pub mod fuse;
pub mod index;
pub mod ops;
pub mod prune;
pub mod repair;
pub mod replica;
pub mod repo;
pub mod vfs;
