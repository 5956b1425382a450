//! Snapshot manifests: one small immutable file per snapshot, `snapshots/<snapshot id>`.
//!
//! ```text
//! manifest = magic "BKFSSNAP" | version u32 (1)
//!            ordinal u64          repository-wide number, unique, never reused while the snapshot exists
//!            time_sec i64 | time_nsec u32   UTC time of the snapshot (backup start, or --time)
//!            account_len u16 | account      [A-Za-z0-9_-][A-Za-z0-9._-]{0,63}
//!            hostname_len u16 | hostname
//!            source_len u32 | source path bytes
//!            root entry           a tree entry (see `tree`) with an empty name: the source directory itself
//!            has_links u8 (0|1) | [links id 32 if 1]
//!            files u64 | dirs u64 | symlinks u64 | specials u64 | file_bytes u64
//!            added_blobs u64 | added_bytes u64   what this backup stored that the repository lacked
//! ```
//! Version 2 (a snapshot with parts: files, mail, database dumps) appends
//! ```text
//!            part_count u16 (1 ..= 4096) | part*
//!            part = kind u8 (1 files, 2 mail, 3 mariadb dump, 4 postgresql dump) | status u8 (0 ok, 1 failed)
//!                   name_len u16 | name (UTF-8; the database's name, empty for files and mail)
//!                   bytes u64 (what the part stored, before deduplication) | duration_ms u64
//! ```
//! and its root entry is then a directory whose tree holds `files`, `mails`, `mysql` and `postgresql` as
//! configured. SPEC.md is authoritative for the bytes.
//!
//! The snapshot id is the BLAKE3 of the whole file, so the file name authenticates the content.
//!
//! The ordinal is at least 1 and below 2^28: the mount's inode numbers are `ordinal << 36 | dfs` (SPEC.md), so a
//! larger ordinal could not be shown, and a reader refuses it rather than let `ordinal + 1` or the shift overflow.

use super::codec::{Reader, Writer};
use super::tree::{Entry, EntryKind, Timestamp};
use super::{magic, FormatError, LinksId, SnapshotId};

/// Offset of the ordinal field.
const ORDINAL_AT: usize = 12;
/// The largest ordinal the format allows: inode numbers are `ordinal << 36 | dfs` in a u64.
pub const MAX_ORDINAL: u64 = (1 << 28) - 1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub file_bytes: u64,
    pub added_blobs: u64,
    pub added_bytes: u64,
}

/// The most parts a manifest may list: a reader refuses more rather than allocate for a damaged count.
pub const MAX_PARTS: usize = 4096;

/// What a part of a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartKind {
    /// The account's files, under `files/`.
    Files = 1,
    /// The account's Maildir tree, under `mails/`.
    Mail = 2,
    /// A MariaDB (or MySQL) database's dump, `mysql/<name>.sql`.
    MariaDb = 3,
    /// A PostgreSQL database's dump, `postgresql/<name>.sql`.
    PostgreSql = 4,
}

impl PartKind {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Files,
            2 => Self::Mail,
            3 => Self::MariaDb,
            4 => Self::PostgreSql,
            _ => return None,
        })
    }

    /// The name used in `--json` and messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Mail => "mail",
            Self::MariaDb => "mariadb",
            Self::PostgreSql => "postgresql",
        }
    }
}

/// One part of a snapshot with parts, as the backup recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub kind: PartKind,
    /// The part could not be stored whole (a database dump that failed: its `.FAILED` note is in the tree).
    pub failed: bool,
    /// The database's name; empty for files and mail.
    pub name: String,
    /// Bytes the part read (a dump's length), before deduplication.
    pub bytes: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub ordinal: u64,
    pub time: Timestamp,
    pub account: String,
    pub hostname: String,
    pub source: Vec<u8>,
    pub root: Entry,
    pub links: Option<LinksId>,
    pub stats: Stats,
    /// Empty for a flat snapshot (version 1: the root is the source directory); else the parts of a snapshot
    /// whose root holds `files/`, `mails/`, `mysql/`, `postgresql/` (version 2).
    pub parts: Vec<Part>,
}

pub fn valid_account(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0] != b'.'
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(256);
        w.bytes(&magic::MANIFEST);
        w.u32(if self.parts.is_empty() {
            magic::MANIFEST_VERSION
        } else {
            magic::MANIFEST_VERSION_PARTS
        });
        w.u64(self.ordinal);
        w.i64(self.time.sec);
        w.u32(self.time.nsec);
        w.bytes16(self.account.as_bytes());
        w.bytes16(self.hostname.as_bytes());
        w.bytes32(&self.source);
        self.root.encode(&mut w);
        match self.links {
            Some(id) => {
                w.u8(1);
                w.bytes(&id.0);
            }
            None => w.u8(0),
        }
        let s = &self.stats;
        for v in [
            s.files,
            s.dirs,
            s.symlinks,
            s.specials,
            s.file_bytes,
            s.added_blobs,
            s.added_bytes,
        ] {
            w.u64(v);
        }
        if !self.parts.is_empty() {
            // At most MAX_PARTS (4096), which the writers' plans and the decoder both keep to.
            w.u16(u16::try_from(self.parts.len()).unwrap_or(u16::MAX));
            for p in &self.parts {
                w.u8(p.kind as u8);
                w.u8(p.failed as u8);
                w.bytes16(p.name.as_bytes());
                w.u64(p.bytes);
                w.u64(p.duration_ms);
            }
        }
        w.buf
    }

    /// Whether the root holds parts (`files/`, ...) rather than the source directory itself.
    pub fn has_parts(&self) -> bool {
        !self.parts.is_empty()
    }

    pub fn id_of(bytes: &[u8]) -> SnapshotId {
        SnapshotId::of(bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut r = Reader::new(bytes, "manifest");
        let version = r.header_any(
            magic::MANIFEST,
            &[magic::MANIFEST_VERSION, magic::MANIFEST_VERSION_PARTS],
        )?;
        debug_assert_eq!(r.offset(), ORDINAL_AT);
        let ordinal = r.u64()?;
        if !(1..=MAX_ORDINAL).contains(&ordinal) {
            return Err(r.invalid_at(
                ORDINAL_AT,
                format!("ordinal {ordinal} is outside 1..={MAX_ORDINAL}"),
            ));
        }
        let time_at = r.offset();
        let time = Timestamp {
            sec: r.i64()?,
            nsec: r.u32()?,
        };
        if time.nsec >= 1_000_000_000 {
            return Err(r.invalid_at(time_at + 8, "nanoseconds out of range"));
        }
        let account_at = r.offset();
        let account = std::str::from_utf8(r.bytes16()?)
            .ok()
            .filter(|a| valid_account(a))
            .ok_or_else(|| r.invalid_at(account_at, "invalid account name"))?
            .to_owned();
        // Written from a Rust String by every writer: a hostname that is not UTF-8 is damage, and reading it
        // lossily would make the decoded manifest differ from its bytes.
        let hostname_at = r.offset();
        let hostname = std::str::from_utf8(r.bytes16()?)
            .map_err(|_| r.invalid_at(hostname_at, "hostname is not UTF-8"))?
            .to_owned();
        let source = r.bytes32()?.to_vec();
        let root_at = r.offset();
        let root = Entry::decode(&mut r)?;
        if root.kind != EntryKind::Dir || !root.name.is_empty() {
            return Err(r.invalid_at(root_at, "root entry is not an unnamed directory"));
        }
        let links = match r.u8()? {
            0 => None,
            1 => Some(LinksId(r.array()?)),
            _ => return Err(r.invalid("invalid links flag")),
        };
        let stats = Stats {
            files: r.u64()?,
            dirs: r.u64()?,
            symlinks: r.u64()?,
            specials: r.u64()?,
            file_bytes: r.u64()?,
            added_blobs: r.u64()?,
            added_bytes: r.u64()?,
        };
        let parts = if version == magic::MANIFEST_VERSION_PARTS {
            decode_parts(&mut r)?
        } else {
            Vec::new()
        };
        r.finish()?;
        Ok(Self {
            ordinal,
            time,
            account,
            hostname,
            source,
            root,
            links,
            stats,
            parts,
        })
    }
}

fn decode_parts(r: &mut Reader) -> Result<Vec<Part>, FormatError> {
    let count_at = r.offset();
    let count = r.u16()? as usize;
    if !(1..=MAX_PARTS).contains(&count) {
        return Err(r.invalid_at(
            count_at,
            format!("part count {count} is outside 1..={MAX_PARTS}"),
        ));
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.offset();
        let kind =
            PartKind::from_u8(r.u8()?).ok_or_else(|| r.invalid_at(at, "unknown part kind"))?;
        let failed = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(r.invalid_at(at + 1, "invalid part status")),
        };
        let name_at = r.offset();
        let name = std::str::from_utf8(r.bytes16()?)
            .map_err(|_| r.invalid_at(name_at, "part name is not UTF-8"))?
            .to_owned();
        parts.push(Part {
            kind,
            failed,
            name,
            bytes: r.u64()?,
            duration_ms: r.u64()?,
        });
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::Payload;
    use crate::format::TreeId;

    #[test]
    fn round_trip() {
        let root = Entry {
            name: vec![],
            kind: EntryKind::Dir,
            flags: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 4096,
            mtime: Timestamp { sec: 1, nsec: 2 },
            ctime: Timestamp { sec: 3, nsec: 4 },
            source_ino: 2,
            rdev: 0,
            xattrs: vec![],
            payload: Payload::Dir {
                tree: TreeId([9; 32]),
                descendants: 12,
            },
        };
        let m = Manifest {
            ordinal: 7,
            time: Timestamp {
                sec: 1_790_000_000,
                nsec: 5,
            },
            account: "alice".into(),
            hostname: "h".into(),
            source: b"/home/alice".to_vec(),
            root,
            links: Some(LinksId([3; 32])),
            stats: Stats {
                files: 1,
                ..Default::default()
            },
            parts: vec![],
        };
        let bytes = m.encode();
        assert_eq!(
            bytes[8..12],
            1u32.to_le_bytes(),
            "a flat snapshot stays version 1"
        );
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for n in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..n]).is_err());
        }
        let with_parts = Manifest {
            parts: vec![
                Part {
                    kind: PartKind::Files,
                    failed: false,
                    name: String::new(),
                    bytes: 10,
                    duration_ms: 1,
                },
                Part {
                    kind: PartKind::MariaDb,
                    failed: true,
                    name: "alice_wp".into(),
                    bytes: 0,
                    duration_ms: 30_000,
                },
            ],
            ..m.clone()
        };
        let bytes = with_parts.encode();
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(Manifest::decode(&bytes).unwrap(), with_parts);
        for n in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..n]).is_err());
        }
        assert!(!valid_account("../x") && !valid_account("") && valid_account("alice_01"));
    }
}
